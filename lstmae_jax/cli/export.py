"""Export a detector: lstmae-export --workdir=DIR --output=DIR [--checkpoint=best].

The same as ``python -m lstmae_jax export`` and ``python launch/export.py``. Writes
scorer.jaxexport (jax.export, symbolic batch, CPU and CUDA), scorer.json (the sidecar:
features, window, scaler, error model, threshold, classes, cleaning, training data,
validation metrics, versions) and MANIFEST.json (SHA-256 and size of each file). Score
with lstmae-score, or lstmae_jax.deploy.artifact.load in Python; no Flax needed.
"""

import json
import sys

from absl import flags

from lstmae_jax.cli import entry
from lstmae_jax.jobs import export

flags.DEFINE_string("workdir", None, "Experiment directory with a trained stage1/ (and stage2/).")
flags.DEFINE_string("output", None, "Artifact directory to write.")
flags.DEFINE_string(
    "checkpoint",
    "best",
    "Stage-1 parameters: best, latest, or a step number (the last two refit the error model"
    " and threshold on the run's data).",
)
flags.mark_flags_as_required(["workdir", "output"])
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    del argv
    try:
        sidecar = export.export_scorer(FLAGS.workdir, FLAGS.output, checkpoint=FLAGS.checkpoint)
    except (ValueError, OSError) as e:  # bad input, an unwritable output: one line, no traceback
        sys.exit(f"error: {e}")
    keys = ("platforms", "window", "threshold", "classes", "manifest_sha256")
    print(json.dumps({k: sidecar[k] for k in keys}, indent=1))


def run() -> None:
    """The ``lstmae-export`` command."""
    entry.run(main, sys.modules[__name__])
