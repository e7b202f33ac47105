"""Write generated flows: python launch/synth.py --output=DIR_OR_FILE [--flows=N] [--style=...].

The thin entry point of lstmae_jax/cli/synth.py, which pip installs as ``lstmae-synth``
(also ``python -m lstmae_jax synth``); all three take the same flags, --help lists them.
"""

from lstmae_jax.cli import synth

if __name__ == "__main__":
    synth.run()
