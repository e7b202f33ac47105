"""The jobs behind ``launch/``: training, evaluation, export of the artifact, plots; and
the run directory they share (the workdir layout, loading a run, whether it finished).
"""
