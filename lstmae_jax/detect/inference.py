"""Batched, jitted scoring of windows with a trained model.

Stage 1: ``member_errors`` gives each member's per-feature error err_KxWxF (the input of
the error model's fit), and ``window_scores`` the anomaly score and per-feature
contributions through ``anomaly.score``, the one definition of the score. Classifiers
give logits_WxC.

Batches have one fixed shape (the last is padded), so each function compiles once.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lstmae_jax.data import windows
from lstmae_jax.detect import anomaly


def _batched(
    model: nnx.Module,
    fn: Callable[[nnx.Module, jax.Array], tuple[jax.Array, ...]],
    x_NxF: np.ndarray,
    starts_W: np.ndarray,
    window: int,
    batch_size: int,
    empty: tuple[tuple[int, ...], ...],
) -> tuple[np.ndarray, ...]:
    """``fn`` over batches of windows; returns its outputs concatenated over windows
    (``empty``: their trailing shapes, for the case of no windows)."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def step(state, table_NxF, starts_B):
        m = nnx.merge(graphdef, state)
        x_BxTxF = table_NxF[starts_B[:, None] + jnp.arange(window)]
        return fn(m, x_BxTxF)

    table = jnp.asarray(x_NxF)
    outs = []
    for idx, valid in windows.eval_batches(len(starts_W), batch_size):
        out = step(state, table, jnp.asarray(starts_W[idx], jnp.int32))
        outs.append((out, int(valid.sum())))
    if not outs:
        return tuple(np.zeros((0, *shape), np.float32) for shape in empty)
    return tuple(np.concatenate([np.asarray(o[i])[:n] for o, n in outs]) for i in range(len(empty)))


def member_errors(
    model: nnx.Module, x_NxF: np.ndarray, starts_W: np.ndarray, window: int, batch_size: int = 1024
) -> np.ndarray:
    """err_KxWxF: per-member, per-feature mean absolute error (K = 1 for one LSTM-AE)."""

    def fn(m, x_BxTxF):
        return (jnp.swapaxes(anomaly.errors(x_BxTxF, m(x_BxTxF)), 0, 1),)  # B x K x F

    k = getattr(model, "num_members", 1)
    (err_WxKxF,) = _batched(model, fn, x_NxF, starts_W, window, batch_size, ((k, x_NxF.shape[1]),))
    return np.swapaxes(err_WxKxF, 0, 1)


def window_scores(
    model: nnx.Module,
    error_model: anomaly.ErrorModel,
    x_NxF: np.ndarray,
    starts_W: np.ndarray,
    window: int,
    batch_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """(score_W, contrib_WxF): the stage-1 anomaly score of each window (``anomaly.score``)."""

    def fn(m, x_BxTxF):
        return anomaly.score(x_BxTxF, m(x_BxTxF), error_model)

    return _batched(model, fn, x_NxF, starts_W, window, batch_size, ((), (x_NxF.shape[1],)))


def logits(
    model: nnx.Module, x_NxF: np.ndarray, starts_W: np.ndarray, window: int, batch_size: int = 1024
) -> np.ndarray:
    """logits_WxC of a classifier."""
    (out,) = _batched(model, lambda m, x: (m(x),), x_NxF, starts_W, window, batch_size, ((0,),))
    return out
