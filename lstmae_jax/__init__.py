"""lstmae-jax: LSTM-autoencoder intrusion detection on CICFlowMeter flows, in JAX/Flax.

The Python API (``lstmae_jax.api``): ``Detector`` (fit, score, calibrate, export) and
``load`` (an exported artifact). Imported on first use, so ``import lstmae_jax`` stays
light and scoring never loads the training stack.
"""

__version__ = "0.1.0"
__all__ = ["Detector", "Interrupted", "load", "__version__"]


def __getattr__(name: str):
    if name in ("Detector", "load"):
        from lstmae_jax import api

        return getattr(api, name)
    if name == "Interrupted":  # Ctrl-C stopped a fit, its checkpoint saved
        from lstmae_jax.console import Interrupted

        return Interrupted
    raise AttributeError(f"module 'lstmae_jax' has no attribute {name!r}")
