"""Export a detector: python launch/export.py --workdir=DIR --output=DIR.

The thin entry point of lstmae_jax/cli/export.py, which pip installs as ``lstmae-export``
(also ``python -m lstmae_jax export``); all three take the same flags, --help lists them.
"""

from lstmae_jax.cli import export

if __name__ == "__main__":
    export.run()
