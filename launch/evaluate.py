"""Evaluate: python launch/evaluate.py --workdir=DIR --data=PATH --output=REPORT.json.

The thin entry point of lstmae_jax/cli/evaluate.py, which pip installs as ``lstmae-evaluate``
(also ``python -m lstmae_jax evaluate``); all three take the same flags, --help lists them.
"""

from lstmae_jax.cli import evaluate

if __name__ == "__main__":
    evaluate.run()
