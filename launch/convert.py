"""Convert CICFlowMeter files: python launch/convert.py --input='raw/*.csv' --output=DIR.

The thin entry point of lstmae_jax/cli/convert.py, which pip installs as ``lstmae-convert``
(also ``python -m lstmae_jax convert``); all three take the same flags, --help lists them.
"""

from lstmae_jax.cli import convert

if __name__ == "__main__":
    convert.run()
