"""Batched, jitted scoring of windows with a trained model.

Stage 1 gives, for every window, the per-feature reconstruction error err_WxF (mean
over the window's T flows of |x - xhat|), so a report can say which features made a
window anomalous; the anomaly score is its mean over features (the reference paper's
mean absolute error). Classifiers give logits_WxC.

Batches have one fixed shape (the last is padded), so each function compiles once.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lstmae_jax import windows


def _batched(
    model: nnx.Module,
    fn: Callable[[nnx.Module, jax.Array], jax.Array],
    x_NxF: np.ndarray,
    starts_W: np.ndarray,
    window: int,
    batch_size: int,
) -> np.ndarray:
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
        return np.zeros((0,), np.float32)
    return np.concatenate([np.asarray(o)[:n] for o, n in outs])


def reconstruction_errors(
    model: nnx.Module, x_NxF: np.ndarray, starts_W: np.ndarray, window: int, batch_size: int = 1024
) -> np.ndarray:
    """err_WxF: mean absolute reconstruction error per window and feature.

    An ensemble (``model(x)`` returns K x B x T x F) gives the mean over members, or use
    ``member_errors`` for each member's.
    """
    return member_errors(model, x_NxF, starts_W, window, batch_size).mean(axis=0)


def member_errors(
    model: nnx.Module, x_NxF: np.ndarray, starts_W: np.ndarray, window: int, batch_size: int = 1024
) -> np.ndarray:
    """err_KxWxF for an ensemble of K members (K = 1 for a single LSTM-AE)."""

    def fn(m, x_BxTxF):
        xhat = m(x_BxTxF)
        if xhat.ndim == 3:
            xhat = xhat[None]
        return jnp.swapaxes(jnp.mean(jnp.abs(xhat - x_BxTxF[None]), axis=2), 0, 1)  # B x K x F

    err_WxKxF = _batched(model, fn, x_NxF, starts_W, window, batch_size)
    if err_WxKxF.ndim == 1:  # no windows
        return np.zeros((1, 0, x_NxF.shape[1]), np.float32)
    return np.swapaxes(err_WxKxF, 0, 1)


def logits(
    model: nnx.Module, x_NxF: np.ndarray, starts_W: np.ndarray, window: int, batch_size: int = 1024
) -> np.ndarray:
    """logits_WxC of a classifier."""
    return _batched(model, lambda m, x: m(x), x_NxF, starts_W, window, batch_size)
