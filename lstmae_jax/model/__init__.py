"""The networks: the scan-based LSTM layer, the LSTM autoencoder, its ensemble, the
latent classifier, and the DNN and CNN baselines (Flax NNX).
"""
