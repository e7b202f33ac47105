"""Detection: the stage-1 anomaly score and its error models, thresholds and metrics,
calibration of a trained stage 1, batched in-process inference over windows.
"""
