"""Write generated flows: lstmae-synth --output=DIR_OR_FILE [--flows=N] [--style=...].

The same as ``python -m lstmae_jax synth`` and ``python launch/synth.py``. A directory
gets ``timeline.parquet``; a ``.csv`` file name writes CSV. ``--style`` picks the
canonical schema (cleaned, as the converter would store it) or an imitation of the raw
CICIDS2017 / CSE-CIC-IDS2018 files. The label counts logged are those generated, before
the canonical style drops the rows with non-finite rates.
"""

import os
import sys

import pyarrow.compute as pc
from absl import flags, logging

from lstmae_jax.cli import entry
from lstmae_jax.ingest import schema
from lstmae_jax.synthetic import timeline

_OUTPUT = flags.DEFINE_string(
    "output", None, "A .parquet or .csv file, or a directory (gets timeline.parquet)."
)
_FLOWS = flags.DEFINE_integer("flows", 200_000, "Number of flows to generate.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed; the same seed gives identical files.")
_STYLE = flags.DEFINE_enum(
    "style", "canonical", timeline.WRITE_STYLES, "Column names and value format written."
)
_ATTACK_FRACTION = flags.DEFINE_float(
    "attack_fraction",
    timeline.DEFAULT_ATTACK_FRACTION,
    "Share of flows in attack episodes (0: benign traffic only, e.g. to calibrate on).",
)
flags.mark_flag_as_required("output")


def main(argv: list[str]) -> None:
    del argv
    path = _OUTPUT.value
    if not path.endswith((".parquet", ".csv")):
        path = os.path.join(path, "timeline.parquet")
    table = timeline.generate(_FLOWS.value, _SEED.value, attack_fraction=_ATTACK_FRACTION.value)
    timeline.write(table, path, style=_STYLE.value)
    logging.info("generated %d flows, wrote %s (%s style)", table.num_rows, path, _STYLE.value)
    counts = pc.value_counts(table.column(schema.LABEL)).to_pylist()
    for c in sorted(counts, key=lambda c: -c["counts"]):
        logging.info("  %-12s %9d", c["values"], c["counts"])


def run() -> None:
    """The ``lstmae-synth`` command."""
    entry.run(main, sys.modules[__name__])
