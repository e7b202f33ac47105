"""Train a model: python launch/train.py --data=PATH --workdir=DIR [--model=...] [--stage=...].

The thin entry point of lstmae_jax/cli/train.py, which pip installs as ``lstmae-train``
(also ``python -m lstmae_jax train``); all three take the same flags, --help lists them.
"""

from lstmae_jax.cli import train

if __name__ == "__main__":
    train.run()
