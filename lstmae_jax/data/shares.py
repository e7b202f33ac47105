"""Each process's share of the flows (``--share_data``), and what the shares must agree on.

With ``--share_data`` a process loads only its share of the day list: Parquet row groups
dealt out in turn (``plan``, from the footers), so each share holds every day and every
split in proportion, and together they are the whole list. What the model must see as on
one host is computed from all shares:

* the classes: the union of every share's (``union_classes``, ``relabel``);
* the split: the temporal (or per-file) split of the *whole* cleaned list, from every
  share's rows kept per row group (``split_codes``), so a row gets the split it gets on
  one host;
* the scaler: fitted from every share's statistics (``statistics`` then ``merge``): the
  mean and standard deviation exactly (Chan's pairwise update, float64), minimum and
  maximum exactly, quantiles from a sketch of ``SKETCH_POINTS`` quantiles per share and
  column (the quantile of the mixture of the shares' interpolated distributions: within
  about one sketch step, 1/4096, in rank of the one-host quantile; a test bounds it by two).

Windows stay inside one row group (``split_codes``' piece key): a row group boundary is a
segment boundary, so a shared run has window - 1 fewer windows per row group than one
host (9 of 32,768 with the converter's row groups and T=10).

Moving the numbers between processes is the trainer's (``train/shares.py``); this module
is numpy and pyarrow only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pyarrow.parquet as pq

from lstmae_jax.data import dataset
from lstmae_jax.ingest import schema

SKETCH_POINTS = 4097  # quantiles per share and column; 4096 steps: the knots' 128 divide it


def plan(files: Sequence[str], num_shares: int) -> list[list[list[int]]]:
    """``[share][file] -> row groups``: the day list's row groups dealt out in order, each
    to the share with the fewest rows so far (the lowest index on a tie), from the
    footers alone: the shares' rows differ by at most one row group.

    Dealt, not cut into runs: with a temporal split a run at the end of the list would be
    all validation and test rows, leaving its process nothing to train on; dealt, every
    share holds every day's traffic and every split in proportion."""
    groups = []
    for i, f in enumerate(files):
        meta = pq.ParquetFile(f).metadata
        groups += [(i, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
    if (filled := sum(n > 0 for *_, n in groups)) < num_shares:
        raise ValueError(
            f"--share_data over {num_shares} processes: the data has {filled} row groups with"
            f" rows in {list(files)}, fewer than the processes; use fewer processes, or rewrite"
            " the files with smaller row groups (launch/convert.py writes 32,768 rows per group)"
        )
    shares: list[list[list[int]]] = [[[] for _ in files] for _ in range(num_shares)]
    rows = [0] * num_shares
    for i, g, n in groups:  # an empty group goes to share 0 (its schema is read anyway)
        s = min(range(num_shares), key=lambda k: (rows[k], k)) if n else 0
        shares[s][i].append(g)
        rows[s] += n
    return shares


def relabel(flows: dataset.Flows, classes: Sequence[str]) -> dataset.Flows:
    """``flows`` with label codes into ``classes`` (a superset of its own, every share's
    union), recoded in place."""
    lut = np.array([list(classes).index(c) for c in flows.classes], np.int32)
    np.take(lut, flows.label_N, out=flows.label_N)
    return dataclasses.replace(flows, classes=tuple(classes))


def union_classes(per_share: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """The classes of all shares, ordered as ``load_flows`` orders them (Benign first)."""
    names = {c for classes in per_share for c in classes}
    return tuple(sorted(names, key=lambda c: (c != schema.BENIGN, c)))


def summed(summaries: Sequence[dict]) -> dict:
    """Every share's ``Windowed.summary()`` added up: the run's."""
    out = dict(summaries[0], flows=sum(s["flows"] for s in summaries))
    for split in dataset.SPLITS:
        labels: dict[str, int] = {}
        for s in summaries:
            for name, n in s[split]["labels"].items():
                labels[name] = labels.get(name, 0) + n
        out[split] = {
            "windows": sum(s[split]["windows"] for s in summaries),
            "attack_windows": sum(s[split]["attack_windows"] for s in summaries),
            "labels": labels,
        }
    return out


def split_codes(
    split: str,
    fractions: Sequence[float],
    pieces: Sequence[Sequence[tuple[int, int, int]]],
    share: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(split code per row of ``share``, piece per row): the split (0 train, 1 val, 2 test)
    each row gets when one host splits the whole cleaned list, from every share's
    ``Flows.pieces`` (file, row group, rows kept); and the index of the row's piece, the
    segment key that keeps windows inside one row group."""
    if split == "random":
        raise ValueError(
            "--share_data needs --split=temporal or per_file: a random split of windows"
            " needs every window on every process"
        )
    if split not in ("temporal", "per_file"):
        raise ValueError(f"split must be 'temporal' or 'per_file', got {split!r}")
    ordered = sorted((f, g, n, p) for p, mine in enumerate(pieces) for f, g, n in mine)
    file_total: dict[int, int] = {}
    start: dict[tuple[int, int], tuple[int, int]] = {}  # (file, group) -> (in list, in file)
    row = 0
    for f, g, n, _ in ordered:
        start[f, g] = row, file_total.get(f, 0)
        file_total[f] = file_total.get(f, 0) + n
        row += n
    mine = pieces[share]
    codes = np.empty(sum(n for *_, n in mine), np.int8)
    at = 0
    for f, g, n in mine:
        first, total = start[f, g] if split == "temporal" else (start[f, g][1], file_total[f])
        if split == "temporal":
            total = row
        cut1, cut2 = dataset.split_cuts(total, fractions)
        idx = np.arange(first, first + n)
        codes[at : at + n] = np.where(idx < cut1, 0, np.where(idx < cut2, 1, 2))
        at += n
    piece_N = np.repeat(np.arange(len(mine), dtype=np.int32), [n for *_, n in mine])
    return codes, piece_N


# ----------------------------------------------------------------------------- scaler


def statistics(
    x_NxF: np.ndarray, features: Sequence[str], kind: str, rows: np.ndarray | None
) -> dict[str, np.ndarray]:
    """This share's part of the scaler fit (``rows``: its training rows): count, and per
    feature (after ``log1p`` where the scaler takes it) mean, sum of squared deviations,
    min, max and, for the quantile-based scalers, ``SKETCH_POINTS`` quantiles."""
    num_f = x_NxF.shape[1]
    log = dataset.log_mask(features, kind)
    n = dataset._num_rows(x_NxF, rows)
    out = {
        "count": np.array([n], np.float64),
        "mean": np.zeros(num_f),
        "m2": np.zeros(num_f),
        "min": np.full(num_f, np.inf),
        "max": np.full(num_f, -np.inf),
    }
    if kind in ("robust", "quantile"):
        out["sketch"] = np.zeros((num_f, SKETCH_POINTS))
        out["sketch_raw"] = np.zeros((num_f, SKETCH_POINTS))  # before log1p: the knots'
    probs = np.linspace(0.0, 1.0, SKETCH_POINTS)
    for cols in dataset._column_blocks(num_f):
        raw = dataset._columns64(x_NxF, rows, cols)
        x = np.where(log[cols], np.log1p(np.maximum(raw, 0.0)), raw)
        if n:
            mean = x.mean(axis=0)
            out["mean"][cols], out["m2"][cols] = mean, ((x - mean) ** 2).sum(axis=0)
            out["min"][cols], out["max"][cols] = raw.min(axis=0), raw.max(axis=0)
            if "sketch" in out:
                out["sketch"][cols] = np.quantile(x, probs, axis=0).T
                out["sketch_raw"][cols] = np.quantile(raw, probs, axis=0).T
    return out


def _mixture_quantiles(sketch_PxS: np.ndarray, count_P: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Quantiles ``q`` of the mixture of the shares' distributions, each the piecewise-linear
    interpolation of its sketch (weights: row counts). One share: its own quantiles at
    sketch probabilities (``np.quantile``'s linear interpolation between them)."""
    keep = count_P > 0
    sketch_PxS, weight_P = sketch_PxS[keep], count_P[keep] / count_P[keep].sum()
    probs = np.linspace(0.0, 1.0, sketch_PxS.shape[1])
    points = np.unique(sketch_PxS)

    def cdf(v: np.ndarray, side: str) -> np.ndarray:
        """P(X <= v) (side "right") or P(X < v) ("left") of the mixture at points v."""
        total = np.zeros(len(v))
        for s_S, w in zip(sketch_PxS, weight_P, strict=True):
            r = np.searchsorted(s_S, v, side=side)
            lo, hi = np.clip(r - 1, 0, len(s_S) - 1), np.clip(r, 0, len(s_S) - 1)
            width = s_S[hi] - s_S[lo]
            t = np.where(width > 0, (v - s_S[lo]) / np.where(width > 0, width, 1.0), 0.0)
            p = probs[lo] + t * (probs[hi] - probs[lo])
            total += w * np.where(r == 0, 0.0, np.where(r == len(s_S), 1.0, p))
        return total

    at, below = cdf(points, "right"), cdf(points, "left")  # F(u_m), F(u_m^-)
    out = np.empty(len(q))
    for k, qk in enumerate(q):
        m = min(int(np.searchsorted(at, qk - 1e-12, side="left")), len(points) - 1)
        if m == 0 or qk >= below[m]:  # inside the jump at u_m (or below the first point)
            out[k] = points[m]
        else:  # on the linear piece between u_{m-1} and u_m
            span = below[m] - at[m - 1]
            t = (qk - at[m - 1]) / span if span > 0 else 1.0
            out[k] = points[m - 1] + t * (points[m] - points[m - 1])
    return out


def merge(
    stats: Sequence[dict[str, np.ndarray]], features: Sequence[str], kind: str, clip: float
) -> dataset.Scaler:
    """The scaler of all shares' training rows, from each share's ``statistics``."""
    count_P = np.array([s["count"][0] for s in stats])
    n = count_P.sum()
    if n == 0:
        raise ValueError("cannot fit a scaler on zero rows")
    mean_PxF = np.stack([s["mean"] for s in stats])
    mean = (count_P[:, None] * mean_PxF).sum(0) / n
    m2 = sum(s["m2"] for s in stats) + (count_P[:, None] * (mean_PxF - mean) ** 2).sum(0)
    std = np.sqrt(m2 / n)
    lo, hi = np.min([s["min"] for s in stats], 0), np.max([s["max"] for s in stats], 0)
    if kind == "minmax":
        return dataset.scaler_of(features, kind, clip, lo=lo, hi=hi)
    if kind in ("standard", "log"):
        return dataset.scaler_of(features, kind, clip, centre=mean, std=std)

    def quantiles(key: str, q) -> np.ndarray:  # F x len(q)
        q = np.asarray(q, np.float64)
        return np.stack(
            [_mixture_quantiles(np.stack([s[key][j] for s in stats]), count_P, q)
             for j in range(len(features))]
        )  # fmt: skip

    if kind == "robust":
        q25, centre, q75 = quantiles("sketch", [0.25, 0.5, 0.75]).T
        return dataset.scaler_of(features, kind, clip, centre=centre, std=std, q25=q25, q75=q75)
    if kind == "quantile":
        knots_x = quantiles("sketch_raw", np.linspace(0.0, 1.0, dataset.QUANTILE_KNOTS))
        knots_x[:, 0], knots_x[:, -1] = lo, hi  # the ends are the extremes, exactly
        return dataset.scaler_of(features, kind, clip, std=std, knots_x=knots_x, num_rows=int(n))
    raise ValueError(f"scaler must be one of {dataset.SCALERS}, got {kind!r}")
