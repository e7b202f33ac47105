"""Score flows with a detector artifact, or recalibrate its threshold.

  lstmae-score --model=ARTIFACT_DIR --input=PATH_OR_GLOB --output=ALERTS.parquet|.jsonl
  lstmae-score --model=ARTIFACT_DIR --input=DIR_OR_CSV --output=ALERTS.jsonl --follow
  lstmae-score --model=ARTIFACT_DIR --calibrate=BENIGN_PATH --target_fpr=0.01 \\
      --output_model=NEW_DIR

The same as ``python -m lstmae_jax score`` and ``python launch/score.py``. Inputs: CSV,
CSV.gz or Parquet flows in any CICFlowMeter naming style, cleaned with the artifact's
policy. ``--follow`` keeps reading a growing CSV, or new files in a directory, until
Ctrl-C or SIGTERM, which stop it cleanly. The summary (alerts per predicted class, per
true label when labelled, flows/s) is printed in a few lines and written whole to
``<output>.summary.json``.
A batch run puts the output and its summary in place only when complete (a failed write
leaves an earlier output as it was); ``--follow`` appends to a ``.jsonl`` output. An
output that is an input, or that a later run would read back, is refused.

Imports no training code: jax, numpy, pyarrow, absl and of the project deploy/ (artifact,
stream, output, recalibrate), ingest/ (reader, rawparse, clean, schema), data.dataset and
data.windows (the scaler's arrays, the window cut), detect.anomaly and detect.metrics (the
error model's arrays, the threshold rule), atomic, console and cli.entry;
tests/deploy/test_stream.py runs it with flax, optax and orbax unimportable and checks
that exact list.
"""

import json
import os
import sys

import jax
from absl import flags, logging

from lstmae_jax import console
from lstmae_jax.cli import entry
from lstmae_jax.deploy import artifact, output, recalibrate, stream

flags.DEFINE_string("model", None, "Artifact directory written by lstmae-export.")
flags.DEFINE_string("input", None, "Flows to score: a file, a directory or a glob.")
flags.DEFINE_string("output", None, "Alerts file: .parquet, or .jsonl (one line per window).")
flags.DEFINE_bool("follow", False, "Keep reading a growing CSV or new files in a directory.")
flags.DEFINE_float("poll_seconds", 0.5, "--follow: seconds between looks for new flows.")
flags.DEFINE_string("calibrate", None, "Benign flows to re-choose the threshold on.")
flags.DEFINE_float("target_fpr", 0.01, "--calibrate: false-positive rate on those flows.")
flags.DEFINE_string("output_model", None, "--calibrate: new artifact directory.")
flags.DEFINE_bool(
    "overwrite", False, "--calibrate: replace an existing artifact at --output_model."
)
flags.DEFINE_string("manifest_sha256", None, "Refuse the model unless MANIFEST.json has this hash.")
flags.DEFINE_string(
    "compilation_cache",
    os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "lstmae_jax", "xla"),
    "Folder of XLA's compiled scorers, so the next run of the same model starts without"
    " compiling (2-3 s on a CPU); '' for none. JAX_COMPILATION_CACHE_DIR, when set, wins.",
)
flags.mark_flag_as_required("model")
FLAGS = flags.FLAGS

EXIT_INTERRUPTED = 130


def _score() -> int:
    if not FLAGS.input or not FLAGS.output:
        raise ValueError("--input and --output are required (or --calibrate and --output_model)")
    if not FLAGS.poll_seconds > 0:  # also NaN: a busy loop
        raise ValueError(f"--poll_seconds must be > 0, got {FLAGS.poll_seconds}")
    stop = console.Stop().install()  # SIGINT, SIGTERM; a second one kills
    scorer = artifact.load(FLAGS.model, FLAGS.manifest_sha256)
    stream.check_inputs(FLAGS.input, FLAGS.follow)  # before the output is opened
    stream.check_output(FLAGS.output, FLAGS.input)
    writer = output.AlertWriter(
        FLAGS.output, output.output_schema(scorer.classes), live=FLAGS.follow
    )
    summary, _ = stream.score_files(
        scorer,
        FLAGS.input,
        writer,
        follow=FLAGS.follow,
        poll_seconds=FLAGS.poll_seconds,
        stop=stop,
    )
    # The whole summary is in <output>.summary.json (and at --verbosity=1 here): the
    # terminal gets the few lines a person reads.
    logging.debug("summary:\n%s", json.dumps(summary, indent=1))
    print(stream.render(summary))
    print(f"alerts: {summary['output']}; the whole summary: {summary['output']}.summary.json")
    if stop.signal and not FLAGS.follow:  # a batch run cut short: the output is partial
        logging.warning(
            "stopped by %s: %s holds the windows scored so far", stop.signal, summary["output"]
        )
        return EXIT_INTERRUPTED
    if "files_failed" in summary:  # the others were scored; say so, and fail the run
        for error in summary["files_failed"].values():
            logging.error("not scored: %s", error)
        return 1
    return 0


def _calibrate() -> int:
    if not FLAGS.output_model:
        raise ValueError("--calibrate needs --output_model (a new artifact directory)")
    if FLAGS.input or FLAGS.output or FLAGS.follow:
        raise ValueError(
            "--calibrate writes a new model, it scores nothing: drop --input,"
            " --output and --follow (score with the new model afterwards)"
        )
    scorer = artifact.load(FLAGS.model, FLAGS.manifest_sha256)
    result = recalibrate.calibrate(
        scorer, FLAGS.calibrate, FLAGS.target_fpr, FLAGS.output_model, FLAGS.overwrite
    )
    print(json.dumps(result, indent=1))
    logging.info(
        "threshold %.6g chosen on %d benign windows; wrote %s",
        result["threshold"]["value"], result["windows_used"], FLAGS.output_model,
    )  # fmt: skip
    return 0


def _compilation_cache() -> None:
    if FLAGS.compilation_cache and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(FLAGS.compilation_cache))


def main(argv: list[str]) -> None:
    del argv
    _compilation_cache()
    try:
        code = _calibrate() if FLAGS.calibrate else _score()
    except (ValueError, OSError) as e:  # bad input, an output that cannot be written: one line
        sys.exit(f"error: {e}")
    sys.exit(code)


def run() -> None:
    """The ``lstmae-score`` command."""
    entry.run(main, sys.modules[__name__])
