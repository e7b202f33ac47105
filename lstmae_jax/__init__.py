"""lstmae-jax: LSTM-autoencoder intrusion detection on CICFlowMeter flows, in JAX/Flax."""

__version__ = "0.1.0"
