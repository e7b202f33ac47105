"""Export a scorer: python launch/export.py --workdir=DIR --output=DIR.

Writes scorer.jaxexport (jax.export, symbolic batch) and scorer.json (features, window,
scaler, threshold, classes); load it with lstmae_jax.export.load_scorer, no Flax needed.
"""

import json
import sys

from absl import app, flags

from lstmae_jax import export

flags.DEFINE_string("workdir", None, "Experiment directory with a trained stage1/ (and stage2/).")
flags.DEFINE_string("output", None, "Directory for scorer.jaxexport and scorer.json.")
flags.mark_flags_as_required(["workdir", "output"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    try:
        sidecar = export.export_scorer(FLAGS.workdir, FLAGS.output)
    except (FileNotFoundError, ValueError) as e:  # bad input: one clear line, no traceback
        sys.exit(f"error: {e}")
    print(
        json.dumps(
            {k: sidecar[k] for k in ("platforms", "window", "threshold", "classes")}, indent=1
        )
    )


if __name__ == "__main__":
    app.run(main)
