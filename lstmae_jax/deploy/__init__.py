"""The shipped detector: the artifact (verify, load, call; jax and numpy only), the
streaming scorer (files and live logs -> alerts), the alert file and its summary, and
recalibration. Imports no flax, optax or orbax.
"""
