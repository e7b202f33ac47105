"""Arrow table in any CICFlowMeter naming style -> canonical, clean Arrow table.

One function, ``canonicalize``, used both by the CSV converter (block by block) and by
the Parquet loader (files that were never converted, such as the shared samples), so a
row is cleaned the same way whichever path it takes. Every change is counted in a
``CleanReport``; nothing is changed silently.

Policies (each one a deliberate choice, see README "Cleaning"):

* Unknown columns are dropped and listed.
* The duplicated ``Fwd Header Length`` is compared with the first copy (mismatches are
  counted) and dropped.
* Non-finite feature values (``Infinity``/``NaN`` in ``Flow Bytes/s``, ``Flow Packets/s``
  when the flow duration is 0): ``nonfinite="drop"`` drops the row (the usual cleaning of
  these datasets), ``"zero"`` writes 0 and keeps the row, which keeps flow sequences
  contiguous.
* Negative values in non-negative kinds (``Init_Win_bytes_*`` = -1 sentinels, -1 clock
  glitches in durations and IATs, and the negative rates derived from those):
  ``negative="clamp"`` writes 0, ``"drop"`` drops the row.
* Rows whose label is the header word itself (header lines repeated inside a file) and
  rows with no label are dropped.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lstmae_jax import schema

NONFINITE_POLICIES = ("drop", "zero")
NEGATIVE_POLICIES = ("clamp", "drop")


@dataclasses.dataclass
class CleanReport:
    """What cleaning did to one file (or one block; ``merge`` adds blocks up)."""

    source: str
    style: str = "unknown"
    rows_in: int = 0
    rows_out: int = 0
    dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    fixed: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    labels: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    unknown_columns: list[str] = dataclasses.field(default_factory=list)
    features: list[str] = dataclasses.field(default_factory=list)
    duplicate_header_mismatches: int = 0

    def merge(self, other: CleanReport) -> None:
        self.rows_in += other.rows_in
        self.rows_out += other.rows_out
        self.dropped.update(other.dropped)
        self.fixed.update(other.fixed)
        self.labels.update(other.labels)
        self.duplicate_header_mismatches += other.duplicate_header_mismatches
        for c in other.unknown_columns:
            if c not in self.unknown_columns:
                self.unknown_columns.append(c)
        if not self.features:
            self.features = list(other.features)
        if self.style == "unknown":
            self.style = other.style

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "style": self.style,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "dropped": dict(sorted(self.dropped.items())),
            "fixed": dict(sorted(self.fixed.items())),
            "labels": dict(self.labels.most_common()),
            "unknown_columns": self.unknown_columns,
            "features": self.features,
            "duplicate_header_mismatches": self.duplicate_header_mismatches,
        }


def _labels(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label codes per row, the normalised label of each code, and header-word codes.

    Normalises each distinct value once (a day file has ~10 distinct labels). Code
    ``len(uniques)`` stands for a missing label.
    """
    enc = pc.dictionary_encode(pc.cast(column, pa.string()))
    if isinstance(enc, pa.ChunkedArray):
        enc = (
            enc.combine_chunks()
            if enc.num_chunks
            else pa.array([], pa.string()).dictionary_encode()
        )
    uniques = enc.dictionary.to_pylist()
    normalized = np.array([schema.normalize_label(u) for u in uniques] + [""], dtype=object)
    is_header = np.array([schema.canonical_name(u) == schema.LABEL for u in uniques] + [False])
    codes = pc.fill_null(enc.indices, len(uniques)).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, normalized, is_header


def canonicalize(
    table: pa.Table,
    *,
    source: str,
    nonfinite: str = "drop",
    negative: str = "clamp",
) -> tuple[pa.Table, CleanReport]:
    """Rename to canonical columns, clean values, and report every change.

    Numeric columns must already be numeric (the converter parses text first). The
    result has the metadata columns present, then the features present (in
    ``schema.FEATURES`` order, float64), then ``label`` (normalised strings).
    """
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")
    if negative not in NEGATIVE_POLICIES:
        raise ValueError(f"negative must be one of {NEGATIVE_POLICIES}, got {negative!r}")
    raw_names = table.column_names
    try:
        names = schema.canonical_names(raw_names)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from e
    report = CleanReport(
        source=source, style=schema.detect_style(raw_names), rows_in=table.num_rows
    )
    report.unknown_columns = [r for r, n in zip(raw_names, names, strict=True) if n is None]
    cols = {n: table.column(i) for i, n in enumerate(names) if n is not None}
    if schema.LABEL not in cols:
        raise ValueError(
            f"{source}: no label column (looked for {schema.LABEL_SPELLINGS}); columns: {raw_names}"
        )

    keep = np.ones(table.num_rows, dtype=bool)
    codes, normalized, header_code = _labels(cols[schema.LABEL])
    is_header = header_code[codes]
    report.dropped["repeated_header"] = int(is_header.sum())
    missing = codes == len(normalized) - 1
    report.dropped["missing_label"] = int(missing.sum())
    keep &= ~is_header & ~missing

    features = [f for f in schema.FEATURES if f in cols]
    report.features = features
    values: dict[str, np.ndarray] = {}
    for f in features:
        col = cols[f]
        if not (
            pa.types.is_integer(col.type)
            or pa.types.is_floating(col.type)
            or pa.types.is_null(col.type)
        ):
            raise ValueError(
                f"{source}: column {raw_names[names.index(f)]!r} ({f}) is {col.type}, expected numbers"
            )
        values[f] = np.array(
            pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64
        )

    if schema.DUPLICATE_FWD_HEADER in cols and "fwd_header_len" in values:
        dup = np.asarray(
            pc.cast(cols[schema.DUPLICATE_FWD_HEADER], pa.float64()).to_numpy(zero_copy_only=False)
        )
        report.duplicate_header_mismatches = int(np.sum((dup != values["fwd_header_len"]) & keep))

    bad_nonfinite = np.zeros(table.num_rows, dtype=bool)
    bad_negative = np.zeros(table.num_rows, dtype=bool)
    for f in features:
        v = values[f]
        nonfin = ~np.isfinite(v)
        if nonfin.any():
            n = int((nonfin & keep).sum())
            if nonfinite == "zero":
                v[nonfin] = 0.0
                if n:
                    report.fixed[f"{f}:nonfinite->0"] += n
            bad_nonfinite |= nonfin
        if schema.KIND[f] in schema.NONNEGATIVE_KINDS:
            neg = v < 0  # NaN compares False
            if neg.any():
                n = int((neg & keep).sum())
                if negative == "clamp":
                    v[neg] = 0.0
                    if n:
                        report.fixed[f"{f}:negative->0"] += n
                bad_negative |= neg
    if nonfinite == "drop":
        report.dropped["nonfinite"] = int((bad_nonfinite & keep).sum())
        keep &= ~bad_nonfinite
    if negative == "drop":
        report.dropped["negative"] = int((bad_negative & keep).sum())
        keep &= ~bad_negative
    report.dropped = collections.Counter({k: v for k, v in report.dropped.items() if v})

    out_cols: dict[str, pa.Array] = {}
    for m in schema.METADATA:
        if m in cols:
            out_cols[m] = pc.cast(cols[m], pa.string()).filter(pa.array(keep))
    for f in features:
        out_cols[f] = pa.array(values[f][keep])
    kept_codes = codes[keep]
    dictionary = pa.array(normalized.tolist(), type=pa.string())
    out_cols[schema.LABEL] = pc.cast(
        pa.DictionaryArray.from_arrays(pa.array(kept_codes, pa.int32()), dictionary), pa.string()
    )
    report.rows_out = int(keep.sum())
    counts = np.bincount(kept_codes, minlength=len(normalized))
    for code in np.flatnonzero(counts):
        report.labels[normalized[code]] += int(counts[code])
    return pa.table(out_cols), report
