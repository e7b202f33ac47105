"""Windows of T consecutive flows, window labels, splits of windows, resumable batch order.

A window is named by the row index of its first flow: window ``s`` is rows
``s .. s+T-1``. Windows never cross a *segment* boundary, where a segment is a maximal
run of rows with the same file and the same split, so no window spans two files or two
splits. T=1 is the per-flow mode, for files whose rows are samples rather than sequences.

Shape letters: N flows, F features, T window length, W windows, B batch.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from lstmae_jax.data import dataset

if TYPE_CHECKING:  # an annotation only: the scorer, which cuts windows, needs no config
    from lstmae_jax.config import Config


def segment_ids(*keys_N: np.ndarray) -> np.ndarray:
    """Segment id per row: a new segment starts wherever any key changes."""
    n = len(keys_N[0])
    change = np.zeros(n, dtype=bool)
    for k in keys_N:
        change[1:] |= k[1:] != k[:-1]
    return np.cumsum(change, dtype=np.int64)


def window_starts(segment_N: np.ndarray, window: int, stride: int = 1) -> np.ndarray:
    """First rows of all windows of length ``window`` that stay inside one segment."""
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    n = len(segment_N)
    bounds = np.r_[0, np.flatnonzero(np.diff(segment_N)) + 1, n]
    starts = [
        np.arange(a, b - window + 1, stride)
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        if b - a >= window
    ]
    return np.concatenate(starts).astype(np.int64) if starts else np.zeros(0, np.int64)


def window_labels(
    label_N: np.ndarray, starts_W: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """(label of the last flow, whether any flow is an attack) per window; label 0 = benign."""
    attack = np.concatenate([[0], np.cumsum(label_N != 0)])
    any_attack = attack[starts_W + window] - attack[starts_W] > 0
    return label_N[starts_W + window - 1], any_attack


def last_attack_label(label_N: np.ndarray, starts_W: np.ndarray, window: int) -> np.ndarray:
    """Label of the last attack flow in each window (0 = no attack flow in it)."""
    index = np.int32 if len(label_N) < 2**31 else np.int64
    last_attack_N = np.where(label_N != 0, np.arange(len(label_N), dtype=index), -1)
    np.maximum.accumulate(last_attack_N, out=last_attack_N)  # the last attack at or before
    last_W = last_attack_N[starts_W + window - 1] if len(label_N) else starts_W
    inside = last_W >= starts_W
    return np.where(inside, label_N[np.where(inside, last_W, 0)], 0).astype(label_N.dtype)


def gather(x_NxF: np.ndarray, starts_B: np.ndarray, window: int) -> np.ndarray:
    """Windows by their first rows: x_BxTxF[b, t] = x_NxF[starts_B[b] + t].

    It only indexes, so it cuts numpy windows on the host and, given a jax array, windows
    on the device inside jit (the table a jax array, ``starts_B`` traced) alike."""
    if window == 1:
        return x_NxF[starts_B][:, None, :]
    return x_NxF[starts_B[:, None] + np.arange(window)]


def of_batch(table_NxF, batch: dict, window: int):
    """A batch's windows: cut on the host already (``batch["x"]``, a ``--share_data`` run)
    or gathered here from the table by their first rows (``batch["starts"]``)."""
    if "x" in batch:
        return batch["x"]
    return gather(table_NxF, batch["starts"], window)


def rows_covered(num_rows: int, starts_W: np.ndarray, window: int) -> np.ndarray:
    """Boolean mask of rows that belong to at least one of the windows."""
    delta = np.zeros(num_rows + 1, dtype=np.int64)
    np.add.at(delta, starts_W, 1)
    np.add.at(delta, starts_W + window, -1)
    return np.cumsum(delta[:-1]) > 0


@dataclasses.dataclass(frozen=True)
class Windowed:
    """Cleaned flows, the windows of each split and the scalers fitted on the training
    rows (everything training needs). The table is not scaled: each model scales the
    windows it is given on the device (``dataset.scale`` under ``jax.numpy``, the function
    the exported scorer runs), so a run with several representations keeps one table."""

    x_NxF: np.ndarray  # float32, cleaned, not scaled
    label_N: np.ndarray  # int32 label code of every flow
    window: int
    starts: dict[str, np.ndarray]  # split -> starts_W
    label: dict[str, np.ndarray]  # split -> label of the window's last flow (int32)
    any_attack: dict[str, np.ndarray]  # split -> bool
    classes: tuple[str, ...]
    features: tuple[str, ...]
    scalers: tuple[dataset.Scaler, ...]  # one per representation; the first is the primary

    @property
    def scaler(self) -> dataset.Scaler:
        """The primary representation's scaler (stage 2 and the classifiers read it)."""
        return self.scalers[0]

    def summary(self) -> dict:
        out = {"window": self.window, "features": len(self.features), "flows": len(self.x_NxF)}
        for s in dataset.SPLITS:
            counts = np.bincount(self.label[s], minlength=len(self.classes))
            out[s] = {
                "windows": int(len(self.starts[s])),
                "attack_windows": int(self.any_attack[s].sum()),
                "labels": {c: int(n) for c, n in zip(self.classes, counts, strict=True) if n},
            }
        return out


def _given_split(split_N: np.ndarray, num_rows: int, split: str) -> np.ndarray:
    """``build``'s ``split_N``, checked: one code per row, each -1, 0, 1 or 2."""
    if split == "random":
        raise ValueError("split='random' splits windows at random; it takes no split_N")
    split_N = np.asarray(split_N)
    if split_N.shape != (num_rows,) or not np.issubdtype(split_N.dtype, np.integer):
        raise ValueError(
            f"split_N must hold one integer split code per flow, shape ({num_rows},);"
            f" got {split_N.dtype} of shape {split_N.shape}"
        )
    if bad := sorted(set(np.unique(split_N).tolist()) - {-1, 0, 1, 2}):
        raise ValueError(
            f"split_N codes are 0 (train), 1 (val), 2 (test) or -1 (no split); got {bad[:5]}"
        )
    return split_N


def build(
    flows: dataset.Flows,
    *,
    window: int,
    stride: int = 1,
    split: str = "temporal",
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    split_N: np.ndarray | None = None,
    train_benign_only: bool = False,
    scalers: Sequence[dataset.Scaler] | None = None,
    scaler_kinds: Sequence[str] = ("standard",),
    scaler_clip: float = 0.0,
    scaler_ports: int = 0,
    segment_N: np.ndarray | None = None,
    fit: Callable[..., dataset.Scaler] | None = None,
) -> Windowed:
    """Splits flows, cuts windows, fits the scalers on training rows (not applied: the
    table stays as loaded, ``Windowed`` says why).

    ``split="temporal"``: rows are split by time (earliest rows train), then windows are
    cut inside each (file, split) segment. ``split="random"``: windows are cut inside
    each file, then split at random stratified by window label (the reference paper's
    protocol; with T > 1 neighbouring windows share flows across splits, which leaks).
    ``split_N`` gives the split of every row instead, for a protocol these names cannot
    say (cross-day: these files train, those test): its code as ``dataset.SPLITS``
    indexes it (0 train, 1 val, 2 test), or -1 for a row in no split; windows are cut
    inside each (file, split) segment as for ``temporal``, and ``split`` and
    ``fractions`` are not used.
    ``train_benign_only`` keeps only training windows with no attack flow (stage 1).
    ``scalers`` reuses fitted scalers (stage 2 must scale as stage 1 did) instead of
    fitting one of each of ``scaler_kinds`` on the training rows (``scaler_ports``: that
    many destination ports as categories, ``dataset.Scaler``).
    ``segment_N`` (with ``split_N``): rows where it changes start a segment too (a
    share's row groups, ``shares.split_codes``). ``fit``: fits the scaler instead of
    ``dataset.fit_scaler`` (same arguments; a shared run merges every process's
    statistics), and then the check that there are training windows is its own (a
    process's share may hold none while the others do).
    """
    n = len(flows)
    given = split_N is not None
    if given:
        split_N = _given_split(split_N, n, split)
    elif split == "temporal":
        split_N = dataset.temporal_split(n, fractions)
    elif split == "per_file":
        split_N = dataset.per_file_split(flows.file_N, fractions)
    if split_N is not None:  # a split per row: windows inside each (file, split) segment
        keys = (flows.file_N, split_N) if segment_N is None else (flows.file_N, split_N, segment_N)
        seg = segment_ids(*keys)
        starts_all = window_starts(seg, window, stride)
        split_W = split_N[starts_all] if len(starts_all) else np.zeros(0, np.int8)
    elif split == "random":
        starts_all = window_starts(segment_ids(flows.file_N), window, stride)
        last_label, _ = window_labels(flows.label_N, starts_all, window)
        split_W = dataset.random_split(last_label, fractions, seed)
    else:
        raise ValueError(f"split must be 'temporal', 'per_file' or 'random', got {split!r}")
    label_all, any_all = window_labels(flows.label_N, starts_all, window)
    starts, label, any_attack = {}, {}, {}
    for code, name in enumerate(dataset.SPLITS):
        keep = split_W == code
        if name == "train" and train_benign_only:
            keep &= ~any_all
        starts[name], label[name], any_attack[name] = (
            starts_all[keep],
            label_all[keep],
            any_all[keep],
        )
    n_train_all = int((split_W == 0).sum())
    if scalers is None and fit is None and len(starts["train"]) == 0 and n_train_all:
        # Every training window was left out for holding an attack flow: say so, or the
        # message below blames the length of the training rows.
        raise ValueError(
            f"no benign training windows: all {n_train_all} training windows hold an attack"
            f" flow ({n} flows, classes {list(flows.classes)}, window={window}); stage 1"
            " learns benign traffic: train on data with benign stretches of at least"
            f" {window} flows"
        )
    if scalers is None and fit is None and len(starts["train"]) == 0:  # given scalers need none
        # Why: say how long the longest stretch of training rows in one file is.
        train_seg = seg[split_N == 0] if split_N is not None else segment_ids(flows.file_N)
        longest = int(np.bincount(train_seg).max()) if len(train_seg) else 0
        how = "split given per row" if given else f"split={split}, fractions={fractions}"
        raise ValueError(
            f"no training windows: {n} flows, window={window} needs {window} consecutive rows"
            f" of one file and the longest training stretch has {longest}; {how},"
            f" train_benign_only={train_benign_only}"
        )
    if scalers is None:
        train_rows = rows_covered(n, starts["train"], window)
        if fit is None:
            fit = functools.partial(dataset.fit_scaler, ports=scaler_ports)
        scalers = tuple(
            fit(flows.x_NxF, flows.features, kind, scaler_clip, rows=train_rows)
            for kind in scaler_kinds
        )
    for scaler in scalers:
        if tuple(scaler.features) != tuple(flows.features):
            raise ValueError(
                f"scaler features {scaler.features} differ from the data's {flows.features}"
            )
    return Windowed(
        x_NxF=flows.x_NxF,
        label_N=flows.label_N,
        window=window,
        starts=starts,
        label=label,
        any_attack=any_attack,
        classes=flows.classes,
        features=flows.features,
        scalers=tuple(scalers),
    )


# ------------------------------------------------------------------------ batch order


@dataclasses.dataclass
class BatchOrder:
    """Deterministic shuffled epochs of fixed-size batches with a resumable position.

    Epoch ``e`` visits ``permutation(seed, e)`` in ``steps_per_epoch`` batches of
    ``batch_size`` item indices; the remainder is dropped so every step has one shape and
    compiles once. The position ``(epoch, step)`` is all the state there is: save it with
    a checkpoint, ``restore`` it, and the next batch is the one that would have come.
    """

    num_items: int
    batch_size: int
    seed: int = 0
    shuffle: bool = True
    epoch: int = 0
    step: int = 0
    # A shared run: each process's own order of its own windows (``stream``: its index,
    # drawn into the shuffle), with the epoch cut to the steps every process can fill.
    stream: int | None = None
    max_steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_items < self.batch_size:
            raise ValueError(
                f"{self.num_items} items cannot fill one batch of {self.batch_size}; "
                "lower the batch size or add data"
            )
        self._perm_epoch = -1
        self._perm = np.zeros(0, np.int64)

    @property
    def steps_per_epoch(self) -> int:
        full = self.num_items // self.batch_size
        return full if self.max_steps_per_epoch is None else min(full, self.max_steps_per_epoch)

    def _permutation(self) -> np.ndarray:
        if self._perm_epoch != self.epoch:
            if self.shuffle:
                key = [self.seed, self.epoch] + ([] if self.stream is None else [self.stream])
                self._perm = np.random.default_rng(key).permutation(self.num_items)
            else:
                self._perm = np.arange(self.num_items)
            self._perm_epoch = self.epoch
        return self._perm

    def next(self) -> np.ndarray:
        """Item indices of the next batch (shape [batch_size]); advances the position."""
        i = self.step * self.batch_size
        idx = self._permutation()[i : i + self.batch_size]
        self.step += 1
        if self.step == self.steps_per_epoch:
            self.epoch, self.step = self.epoch + 1, 0
        return idx

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "step": self.step}

    def restore(self, state: dict[str, int]) -> None:
        epoch, step = int(state["epoch"]), int(state["step"])
        if not 0 <= step < self.steps_per_epoch:
            raise ValueError(f"step {step} outside an epoch of {self.steps_per_epoch} steps")
        self.epoch, self.step = epoch, step


def eval_batches(
    num_items: int, batch_size: int, num_batches: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """All items in order, in fixed-size batches: (indices_B, valid_B); the last is padded.
    ``num_batches``: that many (at least enough for the items), the extra ones all
    padding (the processes of a shared run step together over unequal shares)."""
    needed = -(-num_items // batch_size)
    if num_batches is None:
        num_batches = needed
    elif num_batches < needed:
        raise ValueError(
            f"{num_items} items need {needed} batches of {batch_size}, not {num_batches}"
        )
    for i in range(0, num_batches * batch_size, batch_size):
        idx = np.arange(i, i + batch_size)
        valid = idx < num_items
        yield np.where(valid, idx, 0), valid


# ------------------------------------------------------------------------ from a config


def for_config(
    cfg: Config,
    flows: dataset.Flows,
    *,
    scalers: Sequence[dataset.Scaler] | None = None,
    split_N: np.ndarray | None = None,
    segment_N: np.ndarray | None = None,
    fit: Callable[..., dataset.Scaler] | None = None,
) -> Windowed:
    """Windows, splits and the scalers of ``cfg.representations()`` (``scalers``: reuse
    fitted ones; ``split_N``, ``segment_N``, ``fit``: as ``build`` says)."""
    return build(
        flows,
        window=cfg.window,
        stride=cfg.stride,
        split=cfg.split,
        fractions=cfg.split_fractions,
        seed=cfg.seed,
        train_benign_only=cfg.is_stage1 and cfg.stage1_benign_only,
        scalers=scalers,
        scaler_kinds=cfg.representations(),
        scaler_clip=cfg.input_clip,
        scaler_ports=cfg.port_categories,
        split_N=split_N,
        segment_N=segment_N,
        fit=fit,
    )
