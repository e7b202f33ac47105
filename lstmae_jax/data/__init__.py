"""Flows for training: Parquet -> numpy features, labels and time order, splits, the
scaler, windows of consecutive flows, fingerprints of input files. No JAX until the
host-to-device put in ``train``.
"""
