"""Evaluate: lstmae-evaluate --workdir=DIR --data=PATH --output=REPORT.json.

The same as ``python -m lstmae_jax evaluate`` and ``python launch/evaluate.py``. Scores
--data with every run trained in --workdir (stage1/, stage2/, dnn/, cnn/) and writes
REPORT.json plus REPORT.md beside it.
"""

import sys

from absl import flags

from lstmae_jax.cli import entry
from lstmae_jax.jobs import evaluate

flags.DEFINE_string("workdir", None, "Experiment directory written by lstmae-train.")
flags.DEFINE_string("data", None, "Parquet file, directory or glob to score.")
flags.DEFINE_string("output", None, "Report path (.json; a .md summary is written beside it).")
flags.DEFINE_enum(
    "split", "test", ["test", "all"], "test: the run's test split; all: every window."
)
flags.DEFINE_bool(
    "plots", True, "PNG curves and histograms beside the report (needs the plots extra)."
)
flags.mark_flags_as_required(["workdir", "data", "output"])
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    del argv
    try:
        report = evaluate.evaluate_job(
            FLAGS.workdir, FLAGS.data, FLAGS.output, FLAGS.split, FLAGS.plots
        )
    except (ValueError, OSError) as e:  # bad input, an unwritable output: one line, no traceback
        sys.exit(f"error: {e}")
    print(evaluate.markdown(report))


def run() -> None:
    """The ``lstmae-evaluate`` command."""
    entry.run(main, sys.modules[__name__])
