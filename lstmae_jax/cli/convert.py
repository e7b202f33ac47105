"""Convert CICFlowMeter CSV / CSV.gz / Parquet files to canonical Parquet.

    lstmae-convert --input='data/raw/*.csv' --output=data/canonical

The same as ``python -m lstmae_jax convert`` and ``python launch/convert.py``. Writes
``<stem>.parquet`` per input and ``report.json``, prints rows in/out and drops per file;
exits 1 if any file failed (the others are still converted), 130 on Ctrl-C or SIGTERM
(the current file's temporary removed, no partial output).
"""

from __future__ import annotations

import os
import signal
import sys

from absl import app, flags, logging

from lstmae_jax.cli import entry
from lstmae_jax.ingest import clean, convert

_INPUT = flags.DEFINE_list("input", None, "Input files or globs (comma-separated or repeated).")
_OUTPUT = flags.DEFINE_string("output", None, "Output directory for Parquet files + report.json.")
_NONFINITE = flags.DEFINE_enum("nonfinite", "drop", clean.NONFINITE_POLICIES, "inf/NaN cells.")
_NEGATIVE = flags.DEFINE_enum("negative", "clamp", clean.NEGATIVE_POLICIES, "Negative sentinels.")
_ON_BAD_CELL = flags.DEFINE_enum(
    "on_bad_cell", "drop", convert.BAD_CELL_POLICIES, "Unparsable cells / wrong field counts."
)
flags.mark_flags_as_required(["input", "output"])


def _table(reports: list[clean.CleanReport]) -> str:
    lines = [f"{'file':40s} {'rows in':>10s} {'rows out':>10s}  dropped"]
    for r in reports:
        dropped = ", ".join(f"{k}={v}" for k, v in sorted(r.dropped.items())) or "-"
        name = os.path.basename(r.source)  # unique: convert refuses clashing output names
        lines.append(f"{name:40s} {r.rows_in:>10,d} {r.rows_out:>10,d}  {dropped}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    # Both raise KeyboardInterrupt; a shell starts background jobs with SIGINT ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    try:
        reports = convert.convert(
            _INPUT.value,
            _OUTPUT.value,
            nonfinite=_NONFINITE.value,
            negative=_NEGATIVE.value,
            on_bad_cell=_ON_BAD_CELL.value,
        )
    except convert.ConvertError as e:
        print(_table(e.reports))
        for message in e.failures.values():  # each starts with its file's path
            print(f"FAILED {message}", file=sys.stderr)
        sys.exit(1)
    except ValueError as e:  # bad arguments: no matching input, clashing outputs
        sys.exit(f"error: {e}")
    except OSError as e:  # the output folder or report.json cannot be written
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        print("interrupted: no partial output left; see report.json", file=sys.stderr)
        sys.exit(130)
    print(_table(reports))


def run() -> None:
    """The ``lstmae-convert`` command."""
    entry.run(main, sys.modules[__name__])
