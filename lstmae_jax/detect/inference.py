"""The one batched apply of a model over windows: validation, calibration, evaluation and
the benchmarks all go through ``batches``.

A batch is the first rows of its windows (plus labels and a valid mask); the windows are
cut on the device from the flow table (``windows.gather``), which the caller puts there
once. ``_apply`` is jitted once per process (`_jitted`, through `compiler.jit`) with the
model's graph, the function and the window length static, so each (model structure,
function, table and batch shape) compiles once per process, whoever asks; functions are
module-level or frozen dataclasses (equal by value). Batches have one fixed shape (the
last is padded), so a pass over any number of windows compiles once.

The table holds cleaned, unscaled flows: every function scales its windows on the device
(``dataset.scale``, with the scalers' arrays as inputs), as the exported scorer does.
Stage 1: ``fit_parts`` gives what fitting its members reads (each network's error vector
and code, each representation's scaled flow), and ``window_scores`` the stage-1 score
and per-feature contributions through ``detector.outputs`` with the detector's fitted
arrays as inputs: what the exported scorer is called with. Classifiers give
``logits_WxC``; ``latents`` an encoder's code.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lstmae_jax import compiler
from lstmae_jax.data import dataset, windows
from lstmae_jax.detect import anomaly, detector
from lstmae_jax.model import models

# fn(model, x_BxTxF, batch, args) -> a pytree of arrays (per window, leading axis B, or
# per batch, e.g. sums).
BatchFn = Callable[[nnx.Module, jax.Array, dict, Any], Any]


def _apply(graphdef, fn: BatchFn, window: int, state: tuple, table_NxF, batch: dict, args):
    model = nnx.merge(graphdef, *state)
    model.eval()
    return fn(model, windows.of_batch(table_NxF, batch, window), batch, args)


@functools.cache
def _jitted():
    """`_apply` jitted (at first use: `compiler.options` looks at the backend)."""
    return compiler.jit(_apply, static_argnums=(0, 1, 2))


IN_FLIGHT = 8  # batches dispatched ahead of the one being read: the device stays busy,
# and a pass holds a bounded number of outputs, whatever the number of windows


def batches(
    graphdef: nnx.GraphDef,
    state: tuple[nnx.State, ...],
    fn: BatchFn,
    table_NxF: jax.Array,
    starts_W: np.ndarray,
    window: int,
    batch_size: int,
    *,
    label_W: np.ndarray | None = None,
    args: Any = None,
    put: Callable[[dict], dict] = jax.device_put,
    num_batches: int | None = None,
) -> Iterator[tuple[Any, int]]:
    """``fn``'s output for each fixed-size batch of the windows ``starts_W``, in order, with
    the batch's count of real windows (the rest is padding). Batches are dispatched up to
    ``IN_FLIGHT`` ahead of the one yielded. ``put`` moves a host batch (``starts``,
    ``valid``, ``label`` when given) to the devices: the default device, or the trainer's
    mesh (a ``--share_data`` trainer's ``put`` also cuts the windows, ``batch["x"]``).
    ``num_batches``: that many batches, padding after the windows (``eval_batches``)."""
    pending: collections.deque = collections.deque()
    if len(starts_W) == 0 and num_batches:  # padding only: any start, all invalid
        starts_W = np.zeros(1, np.int64)
        label_W = None if label_W is None else np.zeros(1, np.int32)
        num_windows = 0
    else:
        num_windows = len(starts_W)
    for idx, valid in windows.eval_batches(num_windows, batch_size, num_batches):
        batch = {"starts": starts_W[idx].astype(np.int32), "valid": valid.astype(np.float32)}
        if label_W is not None:
            batch["label"] = label_W[idx].astype(np.int32)
        out = _jitted()(graphdef, fn, window, state, table_NxF, put(batch), args)
        pending.append((out, int(valid.sum())))
        if len(pending) > IN_FLIGHT:
            yield pending.popleft()
    yield from pending


def per_window(outs: Iterable[tuple[Any, int]], num_windows: int, empty) -> tuple:
    """Per-window outputs of ``batches`` (a tuple of arrays), padding cut, written batch by
    batch into arrays of ``num_windows`` rows (one host copy). ``empty``: their trailing
    shapes for a pass over no windows (otherwise the first batch gives them)."""
    got, row = None, 0
    for out, n in outs:
        host = jax.device_get(out)
        if got is None:
            got = tuple(np.empty((num_windows, *a.shape[1:]), a.dtype) for a in host)
        for dst, src in zip(got, host, strict=True):
            dst[row : row + n] = src[:n]
        row += n
    if got is None:
        return tuple(np.zeros((0, *shape), np.float32) for shape in empty)
    return got


def on_device(table_NxF) -> jax.Array:
    """A host table on the default device, put from a 64-byte-aligned float32 array so on
    CPU it can alias the host buffer (``jnp.asarray`` always copies); a jax array as it
    is (the trainer's table, already on its mesh: ``sharding.put_table``). The host
    table must not be written to afterwards."""
    if isinstance(table_NxF, jax.Array):
        return table_NxF
    return jax.device_put(dataset.as_aligned(table_NxF))


def _over_model(model, fn, table_NxF, starts_W, window, batch_size, args=None, label_W=None):
    graphdef, state = nnx.split(model)
    table = on_device(table_NxF)
    return batches(graphdef, (state,), fn, table, starts_W, window, batch_size, label_W=label_W,
                   args=args)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class _FitParts:
    """What fitting a stage 1 reads of benign training windows (``args``: the scalers'
    arrays): each network's error vector and code, and each representation's scaled last
    flow of the window."""

    networks: int

    def __call__(self, m, x_BxTxF, batch, scalers):
        xs = [dataset.scale(x_BxTxF, **a, xp=jnp) for a in scalers]
        x_KxBxTxF = jnp.stack(xs[: self.networks])
        z_KxBxL, xhat = models.encode_decode(m, x_KxBxTxF)
        err_KxBxF = anomaly.errors(x_KxBxTxF, xhat)
        last_RxBxF = jnp.stack([x[:, -1] for x in xs])
        return tuple(jnp.swapaxes(a, 0, 1) for a in (err_KxBxF, z_KxBxL, last_RxBxF))


@dataclasses.dataclass(frozen=True)
class _Scores:
    """The stage-1 score (``detector.outputs``) of a detector of this ``spec``; ``args``:
    (the scalers' arrays, the members' arrays)."""

    spec: tuple

    def __call__(self, m, x_BxTxF, batch, args):
        scalers, arrays = args
        out = detector.outputs(
            lambda x: models.encode_decode(m, x), x_BxTxF, scalers, self.spec, arrays
        )
        return out["score_B"], out["contrib_BxF"], out["members_BxM"]


@dataclasses.dataclass(frozen=True)
class _GroupScores(_Scores):
    """The scores, and the contributions summed per group (``batch["label"]``) over the
    batch's real windows: a G x F sum per batch instead of B x F."""

    num_groups: int

    def __call__(self, m, x_BxTxF, batch, args):
        score_B, contrib_BxF, members_BxM = super().__call__(m, x_BxTxF, batch, args)
        real_BxF = contrib_BxF * batch["valid"][:, None]
        return score_B, jax.ops.segment_sum(real_BxF, batch["label"], self.num_groups), members_BxM


def _logits(m, x_BxTxF, batch, scaler):
    return (m(dataset.scale(x_BxTxF, **scaler, xp=jnp)),)


def _latents(m, x_BxTxF, batch, scaler):
    return (m.encode(dataset.scale(x_BxTxF, **scaler, xp=jnp)),)


def _arrays(scalers: Sequence[dataset.Scaler]) -> list[dict]:
    return [sc.arrays(np.float32) for sc in scalers]


def fit_parts(
    model: nnx.Module,
    scalers: Sequence[dataset.Scaler],
    x_NxF,
    starts_W: np.ndarray,
    window: int,
    batch_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(err_KxWxD, z_KxWxL, last_RxWxD) of the windows: each of the K networks' error
    vector and code, and each of the R representations of the window's last flow (D: the
    scaled width, ``Scaler.width``).
    ``x_NxF``: the cleaned table, on the host or already on the device."""
    k = getattr(model, "num_members", 1)
    latent = model.config.latent
    f, r = scalers[0].width, len(scalers)
    outs = _over_model(model, _FitParts(k), x_NxF, starts_W, window, batch_size, _arrays(scalers))
    parts = per_window(outs, len(starts_W), ((k, f), (k, latent), (r, f)))
    return tuple(np.swapaxes(a, 0, 1) for a in parts)


def window_scores(
    model: nnx.Module,
    det: detector.Detector,
    scalers: Sequence[dataset.Scaler],
    x_NxF,
    starts_W: np.ndarray,
    window: int,
    batch_size: int = 1024,
    *,
    group_W: np.ndarray | None = None,
    num_groups: int = 0,
    members: bool = False,
):
    """(score_W, contrib_WxF): the stage-1 score of each window (``detector.outputs``)
    and each feature's contribution to it; with ``members``, also score_WxM, each
    member's own score.

    With ``group_W`` (a group code per window, ``0 <= code < num_groups``) the second
    output is instead ``mean_GxF``, each group's mean contribution (0 for an empty group),
    summed batch by batch on the device: no W x F array is made (evaluation's per-class
    attribution). ``num_groups=1`` with ``group_W`` all zero: the scores, and one mean."""
    if x_NxF.shape[1] != det.num_features:
        raise ValueError(f"windows have {x_NxF.shape[1]} features, the detector {det.num_features}")
    args = (_arrays(scalers), det.arrays())
    num_m = len(det.members)
    if group_W is None:
        outs = _over_model(model, _Scores(det.spec()), x_NxF, starts_W, window, batch_size, args)
        score_W, contrib_WxF, members_WxM = per_window(
            outs, len(starts_W), ((), (x_NxF.shape[1],), (num_m,))
        )
        return (score_W, contrib_WxF, members_WxM) if members else (score_W, contrib_WxF)
    fn = _GroupScores(det.spec(), num_groups)
    outs = _over_model(model, fn, x_NxF, starts_W, window, batch_size, args, group_W)
    score_W = np.zeros(len(starts_W), np.float32)
    members_WxM = np.zeros((len(starts_W), num_m), np.float32)
    sum_GxF = np.zeros((num_groups, x_NxF.shape[1]), np.float64)
    row = 0
    for out, n in outs:
        score_B, sum_part_GxF, members_BxM = jax.device_get(out)
        score_W[row : row + n] = score_B[:n]
        members_WxM[row : row + n] = members_BxM[:n]
        sum_GxF += sum_part_GxF
        row += n
    count_G = np.bincount(np.asarray(group_W), minlength=num_groups)[:, None]
    mean_GxF = (sum_GxF / np.maximum(count_G, 1)).astype(np.float32)
    return (score_W, mean_GxF, members_WxM) if members else (score_W, mean_GxF)


def logits(
    model: nnx.Module,
    scaler: dataset.Scaler,
    x_NxF,
    starts_W: np.ndarray,
    window: int,
    batch_size: int = 1024,
) -> np.ndarray:
    """logits_WxC of a classifier (its windows scaled by ``scaler`` on the device)."""
    outs = _over_model(model, _logits, x_NxF, starts_W, window, batch_size, _arrays([scaler])[0])
    (out,) = per_window(outs, len(starts_W), ((0,),))
    return out


def latents(
    model: nnx.Module,
    scaler: dataset.Scaler,
    x_NxF,
    starts_W: np.ndarray,
    window: int,
    batch_size: int = 1024,
) -> np.ndarray:
    """z_WxL: the encoder's code of each window (one LSTM-AE, or stage 2's encoder), its
    windows scaled by ``scaler`` on the device."""
    outs = _over_model(model, _latents, x_NxF, starts_W, window, batch_size, _arrays([scaler])[0])
    (out,) = per_window(outs, len(starts_W), ((0,),))
    return out
