"""Parquet -> numpy: feature matrix, labels, time order, splits, scaler.

No JAX here: the data path is numpy/pyarrow until ``sharding.to_global`` moves a batch
to the devices.

Shape letters: N flows (rows), F features, W windows.

Time order is the row order of each file (CICFlowMeter writes flows in the order they
end), and files are concatenated in the order given (a directory: sorted by name). The
2017 timestamps have minute resolution, so sorting by them would scramble flows within a
minute; row order is the finer and more faithful order.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from absl import logging

from lstmae_jax.ingest import clean, schema

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Flows:
    """Cleaned flows of one or more files, in time order, features not yet scaled."""

    x_NxF: np.ndarray  # float32
    label_N: np.ndarray  # int32 codes into ``classes``
    file_N: np.ndarray  # int32 index into ``files``
    classes: tuple[str, ...]  # classes[0] is always "Benign"
    features: tuple[str, ...]
    files: tuple[str, ...]
    reports: tuple[clean.CleanReport, ...]
    # (file, row group, rows kept) of each row group read, in row order: where a share's
    # rows sit in the whole day list (``shares.split_codes``)
    pieces: tuple[tuple[int, int, int], ...] = ()

    def __len__(self) -> int:
        return len(self.label_N)


ALIGN = 64  # bytes: jax.device_put of a numpy array this aligned can alias it on CPU


def aligned_empty(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """``np.empty`` whose data starts on an ``ALIGN``-byte boundary (numpy's large arrays
    come from mmap at page + 16 bytes), so putting it on a CPU device need not copy it."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = np.empty(nbytes + ALIGN, np.uint8)
    skip = -buf.ctypes.data % ALIGN
    return buf[skip : skip + nbytes].view(dtype).reshape(shape)


def as_aligned(x_NxF) -> np.ndarray:
    """``x_NxF`` as a C-contiguous float32 array on an ``ALIGN``-byte boundary: itself
    when it is one, else an aligned copy (what a device put should be given)."""
    x = np.asarray(x_NxF, np.float32)
    if x.ctypes.data % ALIGN == 0 and x.flags.c_contiguous:
        return x
    aligned = aligned_empty(x.shape, np.float32)
    aligned[...] = x
    return aligned


def list_parquet(path: str | Sequence[str]) -> list[str]:
    """Files named by a path, a directory (its ``*.parquet``, sorted), a glob, or a list.

    A comma-separated string is a list, read in the order given: use it to put day files
    in time order (the CIC day files sort alphabetically Friday, Monday, Thursday, ...).
    """
    if isinstance(path, str) and "," in path and not os.path.exists(path):
        path = [p for p in path.split(",") if p]
    if not isinstance(path, str):
        return [f for p in path for f in list_parquet(p)]
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
    elif any(ch in path for ch in "*?["):
        files = sorted(glob.glob(path))
    elif os.path.exists(path):
        files = [path]
    else:
        raise FileNotFoundError(f"no such file or directory: {path}")
    if not files:
        raise FileNotFoundError(f"no .parquet files in {path}")
    if special := [f for f in files if not os.path.isfile(f)]:  # a FIFO would block forever
        raise ValueError(f"not a regular file (a FIFO, a device?): {special[:5]}")
    return files


def _refuse_if_empty(files: list[str], reports: list[clean.CleanReport]) -> None:
    """No rows left: say which reason and column emptied the data, not "0 flows" later."""
    total = clean.CleanReport(source="all")
    for r in reports:
        total.merge(r)
    if total.rows_out:
        return
    if not total.rows_in:
        raise ValueError(
            f"{files}: no rows (for a converted file, the converter's report.json says why)"
        )
    raise ValueError(
        f"{files}: every row was dropped in cleaning: {total.dropped_note()}"
        " (see --nonfinite and --negative)"
    )


BLOCK_FLOWS = 1 << 14  # rows read, cleaned and copied into the table at a time


def _open(f: str) -> pq.ParquetFile:
    """``f`` opened to stream: without ``pre_buffer=False`` pyarrow keeps every row group
    read so far in a cache, so reading a file would hold all of it."""
    try:
        return pq.ParquetFile(f, pre_buffer=False, buffer_size=1 << 20)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise ValueError(f"{f}: cannot read as Parquet: {e}") from e


def _read_plan(f: str, pf: pq.ParquetFile) -> tuple[list[str] | None, clean.CleanReport]:
    """The raw columns of ``f`` that training reads (features, label, the duplicated
    header; not metadata text), and the cleaning report of its empty table: its style,
    features and unknown columns, and its schema checked before any row is read."""
    raw = pf.schema_arrow.names
    try:
        names = schema.canonical_names(raw)
    except ValueError as e:
        raise ValueError(f"{f}: {e}") from e
    wanted = {*schema.FEATURES, schema.LABEL, schema.DUPLICATE_FWD_HEADER}
    columns = [r for r, n in zip(raw, names, strict=True) if n in wanted]
    if len(set(raw)) < len(raw):  # a name twice: selecting by name is ambiguous, read all
        columns = None
    _, report = clean.canonicalize(pf.schema_arrow.empty_table(), source=f)
    report.unknown_columns = [r for r, n in zip(raw, names, strict=True) if n is None]
    return columns, report


def _blocks(f: str, pf: pq.ParquetFile, columns: list[str] | None, group: int):
    """Row ``group`` of ``f``, ``BLOCK_FLOWS`` rows at a time, as tables of ``columns``
    (one thread: the blocks are small, and each reader thread would keep its own heap)."""
    try:
        for batch in pf.iter_batches(
            batch_size=BLOCK_FLOWS, row_groups=[group], columns=columns, use_threads=False
        ):
            yield pa.Table.from_batches([batch])
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{f}: cannot read as Parquet: {e}") from e


def load_flows(
    path: str | Sequence[str],
    *,
    features: Sequence[str] | None = None,
    nonfinite: str = "drop",
    negative: str = "clamp",
    row_groups: Sequence[Sequence[int] | None] | None = None,
) -> Flows:
    """Loads Parquet files in any CICFlowMeter naming style (converted or raw).

    ``features=None`` uses the canonical features present in *every* file (some real
    samples carry a subset); the features dropped that way are logged. Naming a feature
    that a file lacks is an error that names the file.

    Memory: one float32 N x F table (sized from the Parquet footers' row counts; rows
    that cleaning drops leave its tail untouched, so never resident) plus int32 labels
    and file indices; each file is read, cleaned and copied in ``BLOCK_FLOWS`` rows at a
    time, so no whole-file table or float64 copy exists.

    ``row_groups`` reads only these row groups of each file (None: all of it; ``[]``:
    none): a process's share of the day list (``shares.plan``). Features, the files'
    schemas and ``files``/``file_N`` are still those of every file.
    """
    files = list_parquet(path)
    opened = [_open(f) for f in files]
    plans = [_read_plan(f, pf) for f, pf in zip(files, opened, strict=True)]
    present = [set(report.features) for _, report in plans]
    if features is None:
        common = set.intersection(*present)
        features = [f for f in schema.FEATURES if f in common]
        union = set.union(*present)
        if union - common:
            logging.info("features not in every file, not used: %s", sorted(union - common))
    else:
        unknown = [f for f in features if f not in schema.KIND]
        if unknown:
            raise ValueError(
                f"unknown feature names {unknown}; see lstmae_jax.ingest.schema.FEATURES"
            )
        for f, p in zip(files, present, strict=True):
            missing = [c for c in features if c not in p]
            if missing:
                raise ValueError(f"{f}: lacks requested feature columns {missing}")
    features = list(features)
    if row_groups is None:
        row_groups = [None] * len(files)
    elif len(row_groups) != len(files):
        raise ValueError(f"row_groups names {len(row_groups)} files, the data has {len(files)}")
    capacity = sum(
        pf.metadata.num_rows if g is None else sum(pf.metadata.row_group(i).num_rows for i in g)
        for pf, g in zip(opened, row_groups, strict=True)
    )
    x = aligned_empty((capacity, len(features)), np.float32)
    code_N = np.empty(capacity, np.int32)  # into ``names``, in order of appearance
    file_N = np.empty(capacity, np.int32)
    names: dict[str, int] = {}
    reports, row = [], 0
    pieces = []
    for i, (f, pf, (columns, report)) in enumerate(zip(files, opened, plans, strict=True)):
        groups = range(pf.metadata.num_row_groups) if row_groups[i] is None else row_groups[i]
        for g in groups:
            first = row
            for block in _blocks(f, pf, columns, g):
                table, part = clean.canonicalize(
                    block, source=f, nonfinite=nonfinite, negative=negative
                )
                report.merge(part)
                n = table.num_rows
                if row + n > capacity:
                    raise ValueError(f"{f}: holds more rows than its Parquet footer says")
                for j, name in enumerate(features):
                    x[row : row + n, j] = table.column(name).to_numpy()
                enc = table.column(schema.LABEL).combine_chunks().dictionary_encode()
                local = [names.setdefault(s, len(names)) for s in enc.dictionary.to_pylist()]
                code_N[row : row + n] = np.asarray(local, np.int32)[enc.indices.to_numpy()]
                file_N[row : row + n] = i
                row += n
                pa.default_memory_pool().release_unused()  # the block's pages, back to the OS
            pieces.append((i, int(g), row - first))
        reports.append(report)
        if report.drops_most():
            logging.warning("%s: %s", f, report.dropped_note())
    _refuse_if_empty(files, reports)
    if not features:
        raise ValueError(f"no feature columns common to all of {files}")
    if names and all(n.lstrip("-").isdigit() for n in names):
        raise ValueError(
            f"{files}: labels are numbers {sorted(names)[:5]}; expected CICFlowMeter label names"
            " ('BENIGN', 'DDoS', ...): convert the original files, not label-encoded copies"
        )
    order = sorted(set(names) | {schema.BENIGN}, key=lambda c: (c != schema.BENIGN, c))
    remap = np.array([order.index(n) for n in names], dtype=np.int32)
    label_N = code_N[:row]
    if len(remap):
        np.take(remap, label_N, out=label_N)
    return Flows(
        x_NxF=x[:row],
        label_N=label_N,
        file_N=file_N[:row],
        classes=tuple(order),
        features=tuple(features),
        files=tuple(files),
        reports=tuple(reports),
        pieces=tuple(pieces),
    )


# ----------------------------------------------------------------------------- splits


def temporal_split(num_rows: int, fractions: Sequence[float] = (0.6, 0.2, 0.2)) -> np.ndarray:
    """Split code per row (0 train, 1 val, 2 test) by time: earliest rows train."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(
            f"fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    cut1, cut2 = split_cuts(num_rows, fractions)
    split = np.full(num_rows, 2, dtype=np.int8)
    split[:cut2] = 1
    split[:cut1] = 0
    return split


def split_cuts(num_rows: int, fractions: Sequence[float]) -> tuple[int, int]:
    """The first validation row and the first test row of ``temporal_split``."""
    return int(round(fractions[0] * num_rows)), int(round((fractions[0] + fractions[1]) * num_rows))


def per_file_split(file_N: np.ndarray, fractions: Sequence[float] = (0.6, 0.2, 0.2)) -> np.ndarray:
    """``temporal_split`` inside each file: every file (day) gives its earliest rows to
    train, its next rows to validation and its last rows to test, so the validation
    split (where the stage-1 threshold is calibrated) holds benign traffic of every day,
    not only the tail of the last file."""
    split = np.empty(len(file_N), dtype=np.int8)
    for f in np.unique(file_N):
        rows = np.flatnonzero(file_N == f)
        split[rows] = temporal_split(len(rows), fractions)
    return split


def random_split(
    strata_W: np.ndarray, fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0
) -> np.ndarray:
    """Split code per item, stratified by ``strata_W`` (the reference paper's protocol).

    Each class is shuffled and cut in the given proportions (rounded), so every split
    keeps the label mix. With overlapping windows or near-duplicate flows this leaks;
    ``temporal_split`` is the leakage-free protocol.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(
            f"fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    rng = np.random.default_rng(seed)
    split = np.empty(len(strata_W), dtype=np.int8)
    for c in np.unique(strata_W):
        idx = rng.permutation(np.flatnonzero(strata_W == c))
        cut1 = int(round(fractions[0] * len(idx)))
        cut2 = int(round((fractions[0] + fractions[1]) * len(idx)))
        split[idx[:cut1]] = 0
        split[idx[cut1:cut2]] = 1
        split[idx[cut2:]] = 2
    return split


# ----------------------------------------------------------------------------- scaler


@dataclasses.dataclass(frozen=True)
class Scaler:
    """``clip((maybe_log1p(x) - mean) / std)`` per feature, fitted on training rows only.

    ``kind="standard"``: log1p on heavy-tailed kinds (schema.LOG_KINDS), then
    standardisation. ``kind="robust"``: the same log1p, then centred on the median and
    divided by the interquartile range / 1.349 (the standard deviation for Gaussian data;
    the standard deviation where the IQR is 0), so a minority of extreme training rows
    does not set the scale. ``kind="minmax"``: the reference paper's scaling to [0, 1] on
    the training rows (no log; ``mean`` holds the minimum, ``std`` the range), under which
    its fixed 0.1 mean-absolute-error threshold is defined. ``clip`` > 0 bounds the scaled
    values to [-clip, clip], so traffic beyond the training range cannot dominate the
    reconstruction error through one feature. Negative inputs to a log feature are
    clamped to 0 first (the cleaning policy), so scoring raw live flows cannot produce
    NaN there. ``kind="quantile"``: each feature through its benign training distribution,
    ``z = Phi^-1(F_train(x))``, as a piecewise-linear map through ``QUANTILE_KNOTS``
    knots (``knots_x`` the training quantiles, ``knots_z`` their normal scores; tied
    quantiles share the normal score of their mid-probability); values beyond the
    training range continue from the end knots, ``Phi^-1(1 / 2n)`` and ``Phi^-1(1 - 1 /
    2n)`` for n training rows, at the ``standard`` scaler's slope (log1p units divided by
    the training standard deviation), so how far out a value lies is kept while the
    bulk of every feature is on one scale, whatever its units. A feature that is
    constant on the training rows is centred only, as ``standard`` does.
    ``ports`` (``fit_scaler(ports=K)``): the K most frequent destination ports of the
    benign training flows, which become K one-hot columns, and 3 more for other ports
    below 1024, registered (1024-49151) and ephemeral (49152 and up), appended after the
    F features, with the ``dst_port`` column itself set to 0: each common service is a
    category of its own instead of a point on a number line (``width`` = F + K + 3);
    ``fold`` adds those columns' contributions back to ``dst_port``.
    ``transform`` takes numpy or jax.numpy (``xp``): the exported scorer runs the same
    function.
    """

    features: tuple[str, ...]
    log: tuple[bool, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    kind: str = "standard"
    clip: float = 0.0
    knots_x: tuple[tuple[float, ...], ...] = ()  # quantile: F x K training quantiles
    knots_z: tuple[tuple[float, ...], ...] = ()  # quantile: their normal scores
    ports: tuple[float, ...] = ()  # the destination ports that are categories

    @property
    def width(self) -> int:
        """Columns of the scaled windows: F, and the port categories' when there are."""
        return len(self.features) + (len(self.ports) + len(PORT_RANGES) if self.ports else 0)

    def transform(self, x_NxF, xp=np, *, out: np.ndarray | None = None):
        """The scaled values, float32. Under numpy a 2-D table is scaled ``BLOCK_ROWS``
        rows at a time into ``out`` (a new float32 array if None; it may be ``x_NxF``
        itself, scaled in place), so the float64 temporaries are block-sized, not N x F;
        each block is the same float64 math as a whole-table pass, so the values are
        bit-identical to it."""
        if x_NxF.shape[-1] != len(self.features):
            raise ValueError(f"expected {len(self.features)} features, got shape {x_NxF.shape}")
        dtype = np.float32 if xp is not np else np.float64
        arrays = {k: xp.asarray(v) for k, v in self.arrays(dtype).items()}
        if xp is not np or np.ndim(x_NxF) != 2:  # traced (the exported scorer), one row
            return scale(x_NxF, **arrays, xp=xp)
        x_NxF = np.asarray(x_NxF)
        shape = (len(x_NxF), self.width)
        if out is None:
            out = aligned_empty(shape, np.float32)
        elif out.shape != shape or out.dtype != np.float32:
            raise ValueError(f"out must be float32 of shape {shape}, got {out.dtype} {out.shape}")
        for a in range(0, max(len(x_NxF), 1), BLOCK_ROWS):
            out[a : a + BLOCK_ROWS] = scale(x_NxF[a : a + BLOCK_ROWS], **arrays)
        return out

    def arrays(self, dtype=np.float32) -> dict[str, np.ndarray]:
        """The scaler's values as arrays: what ``scale`` takes (and the exported scorer);
        the knots only for the quantile scaler."""
        out = {
            "log_F": np.asarray(self.log, dtype),
            "mean_F": np.asarray(self.mean, dtype),
            "std_F": np.asarray(self.std, dtype),
            "clip": np.asarray(self.clip, dtype),
        }
        if self.knots_x:
            out["knots_x_FxK"] = np.asarray(self.knots_x, dtype)
            out["knots_z_FxK"] = np.asarray(self.knots_z, dtype)
        if self.ports:
            out["ports_P"] = np.asarray(self.ports, dtype)
            out["port_F"] = np.asarray([f == PORT for f in self.features], dtype)
        return out

    def fold(self, contrib_BxD, xp=np):
        """Per-feature contributions of the scaled columns (``width``) -> of the F
        features: the port categories' go to ``dst_port``, the feature a user knows."""
        return fold(contrib_BxD, **{k: xp.asarray(v) for k, v in self.arrays().items()}, xp=xp)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Scaler:
        def tup(v):
            return tuple(tup(x) for x in v) if isinstance(v, list) else v

        return cls(**{k: tup(v) for k, v in d.items()})


SCALERS = ("standard", "log", "robust", "minmax", "quantile")
PORT = "dst_port"  # the feature port categories replace
PORT_RANGES = ((0, 1024), (1024, 49152), (49152, 65536))  # other ports: well-known, ...


def log_mask(features: Sequence[str], kind: str) -> np.ndarray:
    """Per feature, whether scaler ``kind`` takes ``log1p`` of it first: the heavy-tailed
    kinds (``schema.LOG_KINDS``) for standard, robust and quantile; every non-negative
    magnitude (``schema.NONNEGATIVE_KINDS``: flags and ratios too) for ``log``; none for
    minmax. Ports and protocol codes are identifiers, never logged."""
    if kind == "minmax":
        return np.zeros(len(features), bool)
    kinds = schema.NONNEGATIVE_KINDS if kind == "log" else schema.LOG_KINDS
    return np.array([schema.KIND[f] in kinds for f in features], bool)


QUANTILE_KNOTS = 129  # knots of the quantile scaler's piecewise-linear map
# Rows per block of ``Scaler.transform`` under numpy: the quantile map's float64 and int32
# temporaries of a block of 8192 x 77 features stay under ~100 MB.
BLOCK_ROWS = 8192


def scale(
    x_NxF, log_F, mean_F, std_F, clip, knots_x_FxK=None, knots_z_FxK=None, ports_P=None,
    port_F=None, xp=np,
):  # fmt: skip
    """``Scaler.transform`` on arrays: ``clip((log1p(x) where log_F, else x - mean) / std)``
    (no clipping where ``clip`` is 0), or with knots the quantile map (``quantile_map``);
    with ``ports_P`` the port categories appended (``port_categories``); numpy or
    jax.numpy (``xp``), traceable; the arrays may be numpy constants of a traced
    function."""
    log_F, mean_F, std_F, clip = (xp.asarray(a) for a in (log_F, mean_F, std_F, clip))
    if knots_x_FxK is not None:
        knots_x_FxK, knots_z_FxK = xp.asarray(knots_x_FxK), xp.asarray(knots_z_FxK)

    def g(v):  # log1p on heavy-tailed features (log_F), negatives clamped
        return xp.where(log_F > 0, xp.log1p(xp.maximum(v, 0.0)), v)

    if knots_x_FxK is not None:
        z = quantile_map(x_NxF, knots_x_FxK, knots_z_FxK, xp)
        # Beyond the training range the map goes on at the standard scaler's slope, so
        # how far out a value lies is kept (a flood of huge flows stays extreme).
        x, lo, hi = g(x_NxF), g(knots_x_FxK[:, 0]), g(knots_x_FxK[:, -1])
        z = z + (xp.minimum(x - lo, 0.0) + xp.maximum(x - hi, 0.0)) / std_F
    else:
        z = (g(x_NxF) - mean_F) / std_F
    z = xp.where(clip > 0, xp.clip(z, -clip, clip), z)
    if ports_P is not None:
        z = xp.concatenate(
            [z * (1 - xp.asarray(port_F)), port_categories(x_NxF, ports_P, port_F, xp)], axis=-1
        )
    return z.astype(np.float32)


def port_categories(x_NxF, ports_P, port_F, xp=np):
    """x_NxC, C = P + 3: one-hot of the destination port among ``ports_P``, else of its
    range (``PORT_RANGES``); ``port_F`` marks the ``dst_port`` column."""
    port = (x_NxF * port_F).sum(axis=-1)
    known = port[..., None] == ports_P
    other = ~known.any(axis=-1)
    ranges = [other & (port >= lo) & (port < hi) for lo, hi in PORT_RANGES]
    return xp.concatenate([known, xp.stack(ranges, axis=-1)], axis=-1).astype(np.float32)


def fold(contrib_NxD, log_F, port_F=None, xp=np, **_):
    """``Scaler.fold`` on arrays: the columns past F summed into the ``dst_port`` one."""
    f = log_F.shape[-1]
    if port_F is None or contrib_NxD.shape[-1] == f:
        return contrib_NxD
    return contrib_NxD[..., :f] + port_F * contrib_NxD[..., f:].sum(axis=-1, keepdims=True)


def quantile_map(x_NxF, knots_x_FxK, knots_z_FxK, xp=np):
    """Per feature, the piecewise-linear map through (knots_x, knots_z), constant beyond
    the end knots. Knots are non-decreasing; a run of equal knots_x carries one knots_z,
    so a value equal to a tied quantile gets that score. The segment is found by a
    branchless binary search (log2 K gathers, no N x F x K temporary), written with
    ``where`` and a gather so numpy and a traced jax.numpy give the same numbers."""
    k = knots_x_FxK.shape[-1]
    f = xp.arange(knots_x_FxK.shape[0])
    # i = number of knots <= x (an upper bound search), in [0, K].
    lo = xp.zeros(x_NxF.shape, dtype=np.int32)
    hi = xp.full(x_NxF.shape, k, dtype=np.int32)
    for _ in range(int(k).bit_length()):
        mid = (lo + hi) // 2
        below = knots_x_FxK[f, xp.minimum(mid, k - 1)] <= x_NxF
        move = below & (mid < hi)
        lo = xp.where(move, mid + 1, lo)
        hi = xp.where(move, hi, xp.minimum(mid, hi))
    i = xp.clip(lo, 1, k - 1)  # segment [i-1, i], kept inside the knots
    x0, x1 = knots_x_FxK[f, i - 1], knots_x_FxK[f, i]
    z0, z1 = knots_z_FxK[f, i - 1], knots_z_FxK[f, i]
    width = x1 - x0
    t = xp.clip((x_NxF - x0) / xp.where(width > 0, width, 1.0), 0.0, 1.0)
    return z0 + t * (z1 - z0)


def _column_blocks(num_features: int, width: int = 4) -> list[slice]:
    """Column slices of ``width`` (the last one wider rather than one column alone).

    Why not one column at a time: numpy sums a 1-D array pairwise but an axis-0 reduction
    of a C-contiguous n x k array (k >= 2) row by row, so a lone column's mean and std
    would differ from the whole table's in the last bits; blocks of >= 2 columns give the
    whole-table statistics bit for bit (a test checks it) with block-sized temporaries."""
    starts = list(range(0, num_features, width))
    if len(starts) > 1 and num_features - starts[-1] == 1:
        starts.pop()
    ends = starts[1:] + [num_features]
    return [slice(a, b) for a, b in zip(starts, ends, strict=True)]


def _num_rows(x_NxF: np.ndarray, rows: np.ndarray | None) -> int:
    if rows is None:
        return len(x_NxF)
    rows = np.asarray(rows)
    return int(np.count_nonzero(rows)) if rows.dtype == bool else len(rows)


def _columns64(x_NxF: np.ndarray, rows: np.ndarray | None, cols: slice) -> np.ndarray:
    """``x_NxF[rows, cols]`` as a C-contiguous float64 block (all rows for None)."""
    block = x_NxF[:, cols] if rows is None else x_NxF[rows, cols]
    return np.ascontiguousarray(block, dtype=np.float64)


def fit_quantile_knots(
    x_NxF: np.ndarray, knots: int = QUANTILE_KNOTS, rows: np.ndarray | None = None
) -> tuple[list, list]:
    """(knots_x, knots_z), F x ``knots`` each: training quantiles at evenly spaced
    probabilities and their standard-normal scores. The end probabilities are 1/2n and
    1 - 1/2n (n rows), so the map is finite; tied quantiles share the normal score of
    their mean probability. ``rows`` (a mask or indices) picks the training rows; the
    quantiles are taken one column at a time (the same numbers as ``axis=0``)."""
    n = _num_rows(x_NxF, rows)
    probs = np.linspace(0.0, 1.0, knots)
    knots_x, knots_z = [], []
    for j in range(x_NxF.shape[1]):
        row = np.quantile(_columns64(x_NxF, rows, slice(j, j + 1))[:, 0], probs)
        knots_x.append(tuple(row.tolist()))
        knots_z.append(_knot_scores(row, n))
    return knots_x, knots_z


def _knot_scores(knots_x_K: np.ndarray, num_rows: int) -> tuple[float, ...]:
    """The standard-normal scores of knots at evenly spaced probabilities (clipped to
    [1/2n, 1 - 1/2n] for n rows); tied knots share the score of their mean probability."""
    from statistics import NormalDist  # stdlib: no scipy in the scorer's dependencies

    eps = 0.5 / num_rows
    probs = np.linspace(0.0, 1.0, len(knots_x_K))
    _, first, counts = np.unique(knots_x_K, return_index=True, return_counts=True)
    p = np.empty_like(probs)
    for a, c in zip(first, counts, strict=True):
        p[a : a + c] = probs[a : a + c].mean()
    inv = NormalDist().inv_cdf
    return tuple(inv(float(v)) for v in np.clip(p, eps, 1.0 - eps))


def fit_scaler(
    x_NxF: np.ndarray,
    features: Sequence[str],
    kind: str = "standard",
    clip: float = 0.0,
    *,
    rows: np.ndarray | None = None,
    ports: int = 0,
) -> Scaler:
    """Fits the scaler on the rows given (pass training rows only): all of ``x_NxF``, or
    ``rows`` of it (a boolean mask or indices), read a few columns at a time, so no
    N x F copy or float64 temporary is made. ``ports``: that many of the most frequent
    destination ports become categories (``Scaler``), when there is a ``dst_port``."""
    scaler = _fit_scaler(x_NxF, features, kind, clip, rows)
    if ports and PORT in features:
        scaler = dataclasses.replace(scaler, ports=top_ports(x_NxF, features, ports, rows))
    return scaler


def top_ports(x_NxF, features, k: int, rows=None) -> tuple[float, ...]:
    """The ``k`` most frequent ``dst_port`` values of the rows (ties: the lower port)."""
    port = _columns64(x_NxF, rows, slice(features.index(PORT), features.index(PORT) + 1))[:, 0]
    values, counts = np.unique(port, return_counts=True)
    order = np.lexsort((values, -counts))[:k]
    return tuple(float(v) for v in values[order])


def _fit_scaler(x_NxF, features, kind, clip, rows) -> Scaler:
    if _num_rows(x_NxF, rows) == 0:
        raise ValueError("cannot fit a scaler on zero rows")
    if clip < 0 or not np.isfinite(clip):
        raise ValueError(f"scaler clip must be finite and >= 0, got {clip}")
    if clip > 0 and kind == "minmax":
        raise ValueError(
            "input clipping is for the standard, robust and quantile scalers, not minmax"
        )
    num_f = x_NxF.shape[1]
    if kind == "minmax":
        lo, hi = np.empty(num_f), np.empty(num_f)
        for cols in _column_blocks(num_f):
            block = _columns64(x_NxF, rows, cols)
            lo[cols], hi[cols] = block.min(axis=0), block.max(axis=0)
        return scaler_of(features, kind, clip, lo=lo, hi=hi)
    if kind not in ("standard", "log", "robust", "quantile"):
        raise ValueError(f"scaler must be one of {SCALERS}, got {kind!r}")
    log = log_mask(features, kind)
    std, centre, q25, q75 = (np.empty(num_f) for _ in range(4))
    for cols in _column_blocks(num_f):
        x = _columns64(x_NxF, rows, cols)
        x = np.where(log[cols], np.log1p(np.maximum(x, 0.0)), x)
        std[cols] = x.std(axis=0)
        if kind == "robust":
            q25[cols], centre[cols], q75[cols] = np.quantile(x, [0.25, 0.5, 0.75], axis=0)
        elif kind in ("standard", "log"):
            centre[cols] = x.mean(axis=0)
        del x
    if kind == "quantile":  # knots inside the range; log1p and std set the slope beyond it
        knots_x, knots_z = fit_quantile_knots(x_NxF, rows=rows)
        return scaler_of(features, kind, clip, std=std, knots_x=knots_x, knots_z=knots_z)
    return scaler_of(features, kind, clip, centre=centre, std=std, q25=q25, q75=q75)


def scaler_of(
    features: Sequence[str],
    kind: str,
    clip: float,
    *,
    lo=None,
    hi=None,
    centre=None,
    std=None,
    q25=None,
    q75=None,
    knots_x=None,
    knots_z=None,
    num_rows: int = 0,
) -> Scaler:
    """A scaler from its statistics, float64 per feature: ``lo``/``hi`` (minmax), else
    ``std`` (after ``log1p`` where the scaler takes it) and ``centre`` (standard: mean;
    robust: median, with ``q25``/``q75``) or ``knots_x`` (quantile, F x K, before log1p;
    ``knots_z`` computed from ``num_rows`` when not given). What ``fit_scaler`` fits on
    one table, and ``shares.merge`` from every process's share."""
    num_f = len(features)
    if kind == "minmax":
        span = np.where(hi - lo > 1e-12, hi - lo, 1.0)
        return Scaler(
            tuple(features),
            (False,) * num_f,
            tuple(np.asarray(lo).tolist()),
            tuple(span.tolist()),
            kind,
            clip,
        )
    log = tuple(bool(v) for v in log_mask(features, kind))
    if kind == "quantile":
        if knots_z is None:
            knots_z = [_knot_scores(np.asarray(row), num_rows) for row in knots_x]
        return Scaler(
            tuple(features),
            log,
            (0.0,) * num_f,
            tuple(np.where(std > 1e-12, std, 1.0).tolist()),
            kind,
            clip,
            tuple(tuple(np.asarray(row).tolist()) for row in knots_x),
            tuple(tuple(row) for row in knots_z),
        )
    if kind == "robust":
        scale = np.where(q75 - q25 > 1e-12, (q75 - q25) / 1.349, std)
    else:
        scale = std
    scale = np.where(scale > 1e-12, scale, 1.0)  # constant columns: centre only
    return Scaler(
        tuple(features), log, tuple(np.asarray(centre).tolist()), tuple(scale.tolist()), kind, clip
    )
