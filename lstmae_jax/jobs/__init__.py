"""The jobs behind ``launch/``: training (one run directory per model), evaluation,
export of the artifact, plots.
"""
