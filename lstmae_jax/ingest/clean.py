"""Arrow table in any CICFlowMeter naming style -> canonical, clean Arrow table.

One function, ``canonicalize``, used both by the CSV converter (block by block) and by
the Parquet loader (files that were never converted, such as the shared samples), so a
row is cleaned the same way whichever path it takes. Every change is counted in a
``CleanReport``; nothing is changed silently.

Policies (each one a deliberate choice, see docs/data.md, "Cleaning"):

* Unknown columns are dropped and listed.
* The duplicated ``Fwd Header Length`` is compared with the first copy (mismatches are
  counted) and dropped.
* Non-finite feature values (``Infinity``/``NaN`` in ``Flow Bytes/s``, ``Flow Packets/s``
  when the flow duration is 0): ``nonfinite="drop"`` drops the row (the usual cleaning of
  these datasets), ``"zero"`` writes 0 and keeps the row, which keeps flow sequences
  contiguous.
* Values beyond float32's range (``|x| > 3.4e38``, which training's float32 matrix would
  turn into inf) are non-finite too.
* Negative values in non-negative kinds (``Init_Win_bytes_*`` = -1 sentinels, -1 clock
  glitches in durations and IATs, the negative rates derived from those, and impossible
  negative flag counts or ratios): ``negative="clamp"`` writes 0, ``"drop"`` drops the row.
* Ports, protocols and ICMP codes outside ``schema.RANGES`` drop the row (``out_of_range``).
* Rows whose label is the header word itself (header lines repeated inside a file) and
  rows with no label are dropped.

A row with several problems is dropped once, counted under the first reason in the order
above (non-finite, negative, out of range); ``fixed`` counts cells changed in rows that are
written. Columns of a type that holds no numbers (timestamps, lists, strings: the converter
parses text first) are refused with the column's name.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lstmae_jax.ingest import schema

# The input row number a caller may carry through cleaning (the scorer does: CSV line or
# Parquet row); not a CICFlowMeter column.
ROW = "_row"
NONFINITE_POLICIES = ("drop", "zero")
NEGATIVE_POLICIES = ("clamp", "drop")
DROP_WARN_SHARE = 0.5  # more than this share of a file's rows dropped for one reason: warn
FLOAT32_MAX = float(np.finfo(np.float32).max)


def numeric_type(t: pa.DataType) -> bool:
    """Arrow types read as numbers: integers (any width, uint64 too), floats, all-null."""
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)


def _array_of(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    return col if isinstance(col, pa.Array) else col.combine_chunks()


def _as(col, to: pa.DataType, source: str, name: str, what: str):
    """``pc.cast`` that names the file and column when the type cannot be cast."""
    try:
        return pc.cast(col, to, safe=False)  # uint64 counts above 2**53 round, as floats do
    except pa.ArrowException as e:
        raise ValueError(f"{source}: column {name!r} is {col.type}, expected {what}") from e


@dataclasses.dataclass
class CleanReport:
    """What cleaning did to one file (or one block; ``merge`` adds blocks up)."""

    source: str
    style: str = "unknown"
    rows_in: int = 0
    rows_out: int = 0
    dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    # "reason:feature" -> dropped rows where that feature had that problem (a row counts
    # for each of its bad features): which column made the rows vanish.
    dropped_by: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    fixed: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    labels: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    unknown_columns: list[str] = dataclasses.field(default_factory=list)
    features: list[str] = dataclasses.field(default_factory=list)
    duplicate_header_mismatches: int = 0
    # Inputs with a ``ROW`` column (the scorer's): the ``ROW`` of each dropped row, per
    # reason ("reason", or "reason:feature" naming its first bad feature in schema order),
    # so a caller can say why each of its rows has no result (the Python API). Not in
    # ``to_json``.
    dropped_rows: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=dict)

    def drop_rows(self, reason: str, rows: np.ndarray) -> None:
        if len(rows):
            self.dropped_rows.setdefault(reason, []).append(rows)

    def dropped_note(self) -> str:
        """The main reason rows were dropped, in words, and the column behind most of it
        (``"1491 of 1491 rows (100%) dropped as nonfinite, 1491 of them for column
        'flow_iat_mean'"``); a warning when a share above ``DROP_WARN_SHARE`` is gone."""
        reason, n = self.dropped.most_common(1)[0]
        note = f"{n} of {self.rows_in} rows ({100 * n / max(self.rows_in, 1):.0f}%) dropped as {reason}"
        by_column = {
            k.split(":", 1)[1]: v for k, v in self.dropped_by.items() if k.startswith(f"{reason}:")
        }
        if by_column:
            column = max(by_column, key=by_column.get)
            note += f", {by_column[column]} of them for column {column!r}"
        return note

    def drops_most(self) -> bool:
        """More than ``DROP_WARN_SHARE`` of the rows dropped for one reason: worth a warning."""
        return bool(self.dropped) and max(self.dropped.values()) > DROP_WARN_SHARE * self.rows_in

    def merge(self, other: CleanReport) -> None:
        self.rows_in += other.rows_in
        self.rows_out += other.rows_out
        self.dropped.update(other.dropped)
        self.dropped_by.update(other.dropped_by)
        self.fixed.update(other.fixed)
        self.labels.update(other.labels)
        self.duplicate_header_mismatches += other.duplicate_header_mismatches
        for reason, rows in other.dropped_rows.items():
            self.dropped_rows.setdefault(reason, []).extend(rows)
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
    enc = pc.dictionary_encode(column)
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
    require_label: bool = True,
) -> tuple[pa.Table, CleanReport]:
    """Rename to canonical columns, clean values, and report every change.

    Numeric columns must already be numeric (the converter parses text first). The
    result has the metadata columns present, then the features present (in
    ``schema.FEATURES`` order, float64), then ``label`` (normalised strings; absent for an
    unlabelled input, which the scorer accepts with ``require_label=False``), then ``ROW``
    (the input row number) when the input has it.
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
    labelled = schema.LABEL in cols
    if not labelled and require_label:
        raise ValueError(
            f"{source}: no label column (looked for {schema.LABEL_SPELLINGS}); columns: {raw_names}"
        )

    def raw_name(canonical: str) -> str:
        return raw_names[names.index(canonical)]

    keep = np.ones(table.num_rows, dtype=bool)
    if labelled:
        label = _as(cols[schema.LABEL], pa.string(), source, raw_name(schema.LABEL), "text")
    else:  # one empty label for every row: nothing dropped for it, no label column out
        label = pa.array(np.full(table.num_rows, ""), pa.string())
    codes, normalized, header_code = _labels(label)
    is_header = header_code[codes]
    report.dropped["repeated_header"] = int(is_header.sum())
    missing = codes == len(normalized) - 1
    if not require_label:  # scoring: an empty label cell is an unlabelled flow, kept ("")
        missing[:] = False
    report.dropped["missing_label"] = int(missing.sum())
    rows_N = None  # the input's ROW numbers, to record which rows are dropped
    if ROW in table.column_names:
        rows_N = pc.fill_null(_array_of(table.column(ROW)), -1).to_numpy(zero_copy_only=False)
        report.drop_rows("repeated_header", rows_N[is_header])
        report.drop_rows("missing_label", rows_N[missing & ~is_header])
    keep &= ~is_header & ~missing

    features = [f for f in schema.FEATURES if f in cols]
    report.features = features
    values: dict[str, np.ndarray] = {}
    for f in features:
        col = cols[f]
        if not numeric_type(col.type):
            raise ValueError(
                f"{source}: column {raw_name(f)!r} ({f}) is {col.type}, expected numbers"
            )
        values[f] = np.array(
            _as(col, pa.float64(), source, raw_name(f), "numbers").to_numpy(zero_copy_only=False),
            dtype=np.float64,
        )

    if schema.DUPLICATE_FWD_HEADER in cols and "fwd_header_len" in values:
        dup_col = cols[schema.DUPLICATE_FWD_HEADER]
        dup = _as(dup_col, pa.float64(), source, raw_name(schema.DUPLICATE_FWD_HEADER), "numbers")
        dup = np.asarray(dup.to_numpy(zero_copy_only=False))
        report.duplicate_header_mismatches = int(np.sum((dup != values["fwd_header_len"]) & keep))

    # Masks first, then which rows stay, then the fixes counted on the rows that stay.
    masks: dict[str, dict[str, np.ndarray]] = {}
    bad = {
        r: np.zeros(table.num_rows, dtype=bool) for r in ("nonfinite", "negative", "out_of_range")
    }
    for f in features:
        v, kind = values[f], schema.KIND[f]
        nonfin = ~(np.abs(v) <= FLOAT32_MAX)  # NaN, +-inf, and beyond float32
        neg = (v < 0) & ~nonfin if kind in schema.NONNEGATIVE_KINDS else np.zeros_like(nonfin)
        out = np.zeros_like(nonfin)
        if kind in schema.RANGES:
            lo, hi = schema.RANGES[kind]
            out = ((v < lo) | (v > hi)) & ~nonfin  # the nonfinite policy's
        masks[f] = {"nonfinite": nonfin, "negative": neg, "out_of_range": out}
        for reason, mask in masks[f].items():
            bad[reason] |= mask
    for reason, drop in (
        ("nonfinite", nonfinite == "drop"),
        ("negative", negative == "drop"),
        ("out_of_range", True),
    ):
        if drop:
            dropped_now = bad[reason] & keep
            report.dropped[reason] = int(dropped_now.sum())
            if report.dropped[reason]:  # rare: only then the per-column count
                unnamed = dropped_now.copy()  # rows not yet given their first bad feature
                for f, mask_of in masks.items():
                    if n := int((mask_of[reason] & dropped_now).sum()):
                        report.dropped_by[f"{reason}:{f}"] += n
                    if rows_N is not None and (first := mask_of[reason] & unnamed).any():
                        report.drop_rows(f"{reason}:{f}", rows_N[first])
                        unnamed &= ~first
            keep &= ~bad[reason]
    fixes = (("nonfinite", nonfinite == "zero"), ("negative", negative == "clamp"))
    for f, mask_of in masks.items():
        for reason, fixing in fixes:
            mask = mask_of[reason]
            if fixing and mask.any():
                values[f][mask] = 0.0
                if n := int((mask & keep).sum()):
                    report.fixed[f"{f}:{reason}->0"] += n
    report.dropped = collections.Counter({k: v for k, v in report.dropped.items() if v})

    out_cols: dict[str, pa.Array] = {}
    for m in schema.METADATA:
        if m in cols:
            text = _as(cols[m], pa.string(), source, raw_name(m), "text")
            out_cols[m] = text.filter(pa.array(keep))
    for f in features:
        out_cols[f] = pa.array(values[f][keep])
    kept_codes = codes[keep]
    dictionary = pa.array(normalized.tolist(), type=pa.string())
    out_cols[schema.LABEL] = pc.cast(
        pa.DictionaryArray.from_arrays(pa.array(kept_codes, pa.int32()), dictionary), pa.string()
    )
    if not labelled:
        del out_cols[schema.LABEL]
    if ROW in table.column_names:
        out_cols[ROW] = _array_of(table.column(ROW)).filter(pa.array(keep))
    report.rows_out = int(keep.sum())
    counts = np.bincount(kept_codes, minlength=len(normalized)) if labelled else []
    for code in np.flatnonzero(counts):
        report.labels[normalized[code]] += int(counts[code])
    return pa.table(out_cols), report
