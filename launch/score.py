"""Score flows with an artifact, or recalibrate it: python launch/score.py --model=DIR ...

The thin entry point of lstmae_jax/cli/score.py, which pip installs as ``lstmae-score``
(also ``python -m lstmae_jax score``); all three take the same flags, --help lists them.
"""

from lstmae_jax.cli import score

if __name__ == "__main__":
    score.run()
