"""The jobs' command lines: one module per job, each with its absl flags, ``main(argv)``
and ``run()``. Installed as ``lstmae-<job>``, run as ``python -m lstmae_jax <job>``, and
by ``launch/<job>.py``; all three take the same flags.

Imports nothing, so the scorer's command loads no more than it needs.
"""
