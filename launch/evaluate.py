"""Evaluate: python launch/evaluate.py --workdir=DIR --data=PATH --output=REPORT.json.

Scores --data with every run trained in --workdir (stage1/, stage2/, dnn/, cnn/) and
writes REPORT.json plus REPORT.md beside it.
"""

import sys

from absl import app, flags

from lstmae_jax.jobs import evaluate

flags.DEFINE_string("workdir", None, "Experiment directory written by launch/train.py.")
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


def main(argv):
    del argv
    try:
        report = evaluate.evaluate_job(
            FLAGS.workdir, FLAGS.data, FLAGS.output, FLAGS.split, FLAGS.plots
        )
    except (ValueError, OSError) as e:  # bad input, an unwritable output: one line, no traceback
        sys.exit(f"error: {e}")
    print(evaluate.markdown(report))


if __name__ == "__main__":
    app.run(main)
