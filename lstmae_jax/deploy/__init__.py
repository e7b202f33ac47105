"""The shipped detector: the artifact (verify, load, call; jax and numpy only) and the
streaming scorer (files and live logs -> alerts, recalibration). Imports no flax,
optax or orbax.
"""
