"""The reconstruction scores of one stage-1 network, and the Gaussian fits behind them.

The error vector of a window is its per-feature mean absolute reconstruction error,
``err_F = mean_t |xhat_tF - x_tF|`` (scaled units). Reconstruction scores
(``--score``, and ``REPRESENTATION:SCORE`` members of ``--members``):

* ``mae``: the reference paper's mean absolute error, ``score = mean_F err_F``; the
  contribution of feature f is ``err_f / F``.
* ``sse``: the sum of squared per-feature errors, ``score = sum_F err_F^2`` (at T = 1
  the squared Euclidean reconstruction error, PCA's score); contribution ``err_f^2``.
  Nothing is fitted.
* ``zscore``: per-feature error standardisation: a Gaussian with a *diagonal*
  covariance fitted to the error vectors of benign training windows, ``score = sum_f
  ((err_f - mu_f) / sigma_f)^2``; the contribution of feature f is its squared z-score.
* ``mahalanobis``: the same with a full covariance, Ledoit-Wolf shrunk (Malhotra et al.
  2016, "LSTM-based Encoder-Decoder for Multi-sensor Anomaly Detection"); ``score =
  (err - mu)^T P (err - mu)``, the squared Mahalanobis distance, with contributions
  ``(err - mu)_f (P (err - mu))_f``.

Both Gaussian models flag windows whose error *pattern* is unusual, not only large
errors. The same full-covariance Gaussian, fitted on the scaled benign flows themselves,
is the ``rarity`` member of ``detector``. Contributions always sum to the score. The
scores are pure ``jnp`` functions: they run inside a jitted batch and inside the
``jax.export`` artifact alike; ``detector`` combines them with the other members.

Shape letters: B windows, T steps, F features, K networks, N rows fitted on.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SCORES = ("mae", "sse", "zscore", "mahalanobis")
GAUSSIAN = ("zscore", "mahalanobis")  # scored by (err - mu)^T P (err - mu)


def errors(x_KxBxTxF: jnp.ndarray, xhat_KxBxTxF: jnp.ndarray) -> jnp.ndarray:
    """err_KxBxF: each network's per-feature mean absolute error over the window's T steps
    (network k reconstructs its own representation x_k of the windows)."""
    return jnp.mean(jnp.abs(xhat_KxBxTxF - x_KxBxTxF), axis=2)


def quadratic(d_BxF: jnp.ndarray, precision_FxF: jnp.ndarray) -> jnp.ndarray:
    """contrib_BxF = d_f (P d)_f, summing to the quadratic form d^T P d. Full float32
    precision: the precision matrix can hold large entries that cancel, and a
    reduced-precision matmul (TF32 on some GPUs) would move the score."""
    pd_BxF = jnp.einsum("bf,fg->bg", d_BxF, precision_FxF, precision=jax.lax.Precision.HIGHEST)
    return d_BxF * pd_BxF


def score(
    err_BxF: jnp.ndarray,
    kind: str,
    mean_F: jnp.ndarray | None = None,
    precision_FxF: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(score_B, contrib_BxF) of one network's error vectors; ``mean_F`` and
    ``precision_FxF``: a Gaussian kind's fitted values (``fit_gaussian``)."""
    if kind == "mae":
        contrib_BxF = err_BxF / err_BxF.shape[-1]
    elif kind == "sse":
        contrib_BxF = err_BxF**2
    elif kind in GAUSSIAN:
        contrib_BxF = quadratic(err_BxF - mean_F, precision_FxF)
    else:
        raise ValueError(f"score must be one of {SCORES}, got {kind!r}")
    return contrib_BxF.sum(axis=-1), contrib_BxF


def describe(kind: str) -> str:
    return {
        "mae": "mean absolute reconstruction error",
        "sse": "sum of squared per-feature reconstruction errors",
        "zscore": "sum of squared per-feature z-scores of the reconstruction error"
        " (diagonal Gaussian on benign training windows)",
        "mahalanobis": "squared Mahalanobis distance of the reconstruction error vector"
        " (Gaussian on benign training windows, Ledoit-Wolf shrinkage)",
    }[kind]


# ------------------------------------------------------------------------- fitting


def ledoit_wolf(z_NxF: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean_F, covariance_FxF, shrinkage): the Ledoit-Wolf (2004) shrinkage estimate.

    The sample covariance is pulled towards ``(trace / F) * I`` by the intensity that
    minimises the expected Frobenius loss, estimated from the data alone (no tuning).
    """
    z = np.asarray(z_NxF, np.float64)
    n, f = z.shape
    mu = z.mean(axis=0)
    zc = z - mu
    s = zc.T @ zc / n
    m = np.trace(s) / f
    target = m * np.eye(f)
    d2 = np.sum((s - target) ** 2)
    # Mean squared distance of the rank-one terms z z^T from s: the estimator's noise.
    b2 = np.sum((zc**2).T @ (zc**2)) / n**2 - np.sum(s**2) / n
    shrink = 0.0 if d2 <= 0 else float(np.clip(b2 / d2, 0.0, 1.0))
    return mu, shrink * target + (1.0 - shrink) * s, shrink


def fit_gaussian(z_NxF: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean_F, precision_FxF, shrinkage) of benign vectors (error vectors, or scaled
    flows for ``rarity``): ``zscore`` a diagonal Gaussian, ``mahalanobis`` a Ledoit-Wolf
    shrunk full one. A direction with no variance (a constant feature, a perfectly
    reconstructed one) is floored, so the precision stays finite."""
    z = np.asarray(z_NxF, np.float64)
    n, f = z.shape
    if n < 2:
        raise ValueError(f"a Gaussian needs at least 2 benign vectors, got {n}")
    if kind == "mahalanobis":
        mu, cov, shrink = ledoit_wolf(z)
    elif kind == "zscore":
        mu, cov, shrink = z.mean(axis=0), np.diag(z.var(axis=0)), 0.0
    else:
        raise ValueError(f"a Gaussian score is one of {GAUSSIAN}, got {kind!r}")
    cov = cov + 1e-6 * max(np.trace(cov) / f, 1e-12) * np.eye(f)
    return mu, np.linalg.inv(cov), shrink
