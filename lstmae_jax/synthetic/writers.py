"""Writes flow tables: the canonical Parquet, or imitations of the raw release files.

``write`` stores a table in the canonical schema (such as ``synthetic.generate`` returns)
either as the converter would (cleaned by ``clean.canonicalize``) or in the raw style of
the CICIDS2017 / CSE-CIC-IDS2018 CSV files (``raw_header``: their column names and order,
label spellings, integer columns, ``Infinity``/``NaN`` text), as CSV or Parquet, through
an atomic rename.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from lstmae_jax import atomic
from lstmae_jax.ingest import clean, convert, schema

# Schema metadata of generated tables: JSON with the arguments and the episodes, set by
# ``synthetic.generate`` and kept (with the cleaning report) by a canonical ``write``.
METADATA_KEY = b"synthetic"
WRITE_STYLES = ("canonical", "cicids2017", "csecicids2018")
FORMATS = ("parquet", "csv")
# The 2017 header has a leading space on every name except the first of each group.
_NO_SPACE_2017 = frozenset({
    "Total Length of Fwd Packets", "Bwd Packet Length Max", "Flow Bytes/s", "Fwd IAT Total",
    "Bwd IAT Total", "Fwd PSH Flags", "Fwd Packets/s", "FIN Flag Count", "Fwd Avg Bytes/Bulk",
    "Bwd Avg Bulk Rate", "Subflow Fwd Packets", "Init_Win_bytes_forward", "Active Mean",
    "Idle Mean",
})  # fmt: skip
_LABELS_2017 = {schema.BENIGN: "BENIGN"} | {
    f"Web Attack - {a}": f"Web Attack \u2013 {a}" for a in ("Brute Force", "XSS", "Sql Injection")
}
_LABELS_2018 = {
    "DoS Hulk": "DoS attacks-Hulk", "DoS GoldenEye": "DoS attacks-GoldenEye",
    "DoS slowloris": "DoS attacks-Slowloris", "DoS Slowhttptest": "DoS attacks-SlowHTTPTest",
    "DDoS": "DDoS attacks-LOIC-HTTP", "FTP-Patator": "FTP-BruteForce",
    "SSH-Patator": "SSH-Bruteforce", "Web Attack - Brute Force": "Brute Force -Web",
    "Web Attack - XSS": "Brute Force -XSS", "Web Attack - Sql Injection": "SQL Injection",
    "Infiltration": "Infilteration",
}  # fmt: skip


def raw_header(style: str) -> list[tuple[str, str]]:
    """(raw name, canonical column) of a release's CSV header, in its order.

    ``cicids2017``: MachineLearningCVE (no identifiers, no Protocol), ``Fwd Header Length``
    twice. ``csecicids2018``: ``Dst Port``, ``Protocol``, ``Timestamp``, then the features.
    """
    if style == "cicids2017":
        cols = []
        for f in schema.FEATURES:
            sp = schema.spelling(f, style)
            if sp is not None and f != "protocol":
                cols.append((sp if sp in _NO_SPACE_2017 else " " + sp, f))
            if f == "bwd_seg_size_avg":
                cols.append((" Fwd Header Length", "fwd_header_len"))
        return [*cols, (" Label", schema.LABEL)]
    if style == "csecicids2018":
        head = [("Dst Port", "dst_port"), ("Protocol", "protocol"), ("Timestamp", "timestamp")]
        rest = [(schema.spelling(f, style), f) for f in schema.FEATURES
                if schema.spelling(f, style) is not None and f not in ("dst_port", "protocol")]  # fmt: skip
        return [*head, *rest, ("Label", schema.LABEL)]
    raise ValueError(f"no raw header for style {style!r}")


def _is_float(name: str) -> bool:
    """Whether the releases store a feature as a real number (the rest are integers)."""
    return name.endswith(("_mean", "_std", "_var", "_s")) or name in (
        "pkt_size_avg", "fwd_seg_size_avg", "bwd_seg_size_avg")  # fmt: skip


def _raw_column(table: pa.Table, raw: str, name: str, style: str, fmt: str) -> pa.Array:
    col = table.column(name).combine_chunks()
    if name == schema.LABEL:
        names = _LABELS_2017 if style == "cicids2017" else _LABELS_2018
        uniq = pc.unique(col)
        mapped = pa.array([names.get(v, v) for v in uniq.to_pylist()], pa.string())
        return mapped.take(pc.index_in(col, uniq))
    if name == "timestamp":  # ISO -> dd/mm/yyyy HH:MM:SS
        part = [pc.utf8_slice_codeunits(col, a, b) for a, b in ((8, 10), (5, 7), (0, 4), (11, 19))]
        date = pc.binary_join_element_wise(*part[:3], "/")
        return pc.binary_join_element_wise(date, part[3], " ")
    v = col.to_numpy(zero_copy_only=False).astype(np.float64)
    if not _is_float(name):
        if not np.array_equal(v, np.rint(v)):  # also catches NaN and inf
            raise ValueError(f"column {name} ({raw!r}) must hold whole numbers to be written")
        return pa.array(v.astype(np.int64))
    if fmt == "parquet" or np.isfinite(v).all():
        return pa.array(v)
    text = pc.cast(pa.array(v), pa.string())  # shortest repr: the round trip is exact
    return pc.replace_substring(pc.replace_substring(text, "inf", "Infinity"), "nan", "NaN")


def write(
    table: pa.Table,
    path: str,
    *,
    style: str = "canonical",
    fmt: str | None = None,
    nonfinite: str = "drop",
    negative: str = "clamp",
) -> str:
    """Writes flows atomically; returns ``path``. ``fmt`` None: ``csv`` if path ends so.

    ``canonical``: the table as the converter would store it (``clean.canonicalize`` with
    the given policies; the episode metadata is kept). ``cicids2017`` / ``csecicids2018``:
    the release's header, integer columns as integers, labels in the release's spelling,
    non-finite rates as ``Infinity``/``NaN`` in CSV (IEEE values in Parquet, where the
    duplicated 2017 column is named ``Fwd Header Length.1`` as in the shared samples).
    CSV text is UTF-8: the 2017 en dash is a character, not the cp1252 byte 0x96.
    """
    fmt = fmt or ("csv" if path.endswith(".csv") else "parquet")
    if style not in WRITE_STYLES or fmt not in FORMATS:
        raise ValueError(f"style must be in {WRITE_STYLES} and fmt in {FORMATS}: {style}, {fmt}")
    if style == "canonical":
        meta = (table.schema.metadata or {}).get(METADATA_KEY)
        out, report = clean.canonicalize(
            table, source="generated", nonfinite=nonfinite, negative=negative
        )
        if meta is not None:
            note = "first_row/last_row count rows of the generated table, before cleaning"
            info = json.loads(meta) | {"clean": report.to_json(), "note": note}
            out = out.replace_schema_metadata({METADATA_KEY: json.dumps(info)})
        header = out.column_names
    else:
        cols = raw_header(style)
        if fmt == "parquet":  # a Parquet schema cannot hold two equal names usefully
            dup = [i for i, (r, _) in enumerate(cols) if r == " Fwd Header Length"][1:]
            cols = [(r + ".1" if i in dup else r, n) for i, (r, n) in enumerate(cols)]
        arrays = [_raw_column(table, r, n, style, fmt) for r, n in cols]
        header = [r for r, _ in cols]
        out = pa.Table.from_arrays(arrays, names=header)

    def write_to(f) -> None:
        if fmt == "parquet":
            # the converter's row groups: a reader's memory is bounded by one of them
            pq.write_table(out, f, compression="zstd", row_group_size=convert.ROW_GROUP_ROWS)
        else:
            f.write((",".join(header) + "\n").encode())  # the releases quote nothing
            options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
            pa_csv.write_csv(out, f, options)

    atomic.write_with(path, write_to)
    return path
