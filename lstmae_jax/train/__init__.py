"""Training: the train state and pure jitted steps, the loop (early stopping, exact
resume, preemption), Orbax checkpoints, the device mesh, the metrics
writer, the workdir lock.
"""
