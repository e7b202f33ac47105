"""The stage-1 anomaly score, defined once, and its fitted error model.

``score(x, xhat, error_model)`` is the one definition of the number a user calibrates a
threshold on: threshold calibration after training (``stage1``), ``launch/evaluate.py``,
the detection benchmark and the exported scorer all call it. It is a pure ``jnp``
function, so it runs inside a jitted batch and inside the ``jax.export`` artifact alike.

The error vector of a window is its per-feature mean absolute reconstruction error,
``err_F = mean_t |xhat_tF - x_tF|``. Error models (``--score``):

* ``mae``: the reference paper's mean absolute error, ``score = mean_F err_F``; the
  contribution of feature f is ``err_f / F``.
* ``sse``: the sum of squared per-feature errors, ``score = sum_F err_F^2`` (at T = 1
  the squared Euclidean reconstruction error, PCA's score); contribution ``err_f^2``.
  With the quantile scaler every feature is already on one benign scale, so no error
  model is fitted.
* ``zscore``: per-feature error standardisation: a Gaussian with a *diagonal*
  covariance fitted to the error vectors of benign training windows, ``score = sum_f
  ((err_f - mu_f) / sigma_f)^2``; the contribution of feature f is its squared z-score.
* ``mahalanobis``: the same with a full covariance, Ledoit-Wolf shrunk (Malhotra et al.
  2016, "LSTM-based Encoder-Decoder for Multi-sensor Anomaly Detection"); ``score =
  (err - mu)^T P (err - mu)``, the squared Mahalanobis distance, with contributions
  ``(err - mu)_f (P (err - mu))_f``.

Both Gaussian models flag windows whose error *pattern* is unusual, not only large
errors: a burst of near-identical attack flows is often reconstructed too well on some
features. The full covariance also learns how benign errors move together, which helps
while test traffic resembles the training traffic and hurts when it drifts: measure
(``benchmarks/detection.py`` scores every network with every model). Contributions
always sum to the score.

Ensembles: each member has its own fitted model; member scores combine by mean or max,
and so do the contributions (max: those of the member that gave the maximum).

Shape letters: B windows, T steps, F features, K ensemble members.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np

SCORES = ("mae", "sse", "zscore", "mahalanobis")
GAUSSIAN = ("zscore", "mahalanobis")  # scored by (err - mu)^T P (err - mu)
COMBINE = ("mean", "max")


@dataclasses.dataclass(frozen=True)
class ErrorModel:
    """What ``score`` needs besides the window and its reconstruction (JSON, no pickle)."""

    kind: str  # one of SCORES
    combine: str  # one of COMBINE: how the K members' scores combine
    num_features: int  # F
    mean_KxF: tuple[tuple[float, ...], ...] = ()  # Gaussian: mean benign error vector
    precision_KxFxF: tuple[tuple[tuple[float, ...], ...], ...] = ()  # inverse covariance
    shrinkage_K: tuple[float, ...] = ()  # mahalanobis: Ledoit-Wolf intensity per member
    fitted_on: int = 0  # benign windows the model was fitted on

    def __post_init__(self) -> None:
        if self.kind not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.kind!r}")
        if self.combine not in COMBINE:
            raise ValueError(f"ensemble_score must be one of {COMBINE}, got {self.combine!r}")
        if self.kind in GAUSSIAN:
            mu, prec = np.asarray(self.mean_KxF), np.asarray(self.precision_KxFxF)
            f = self.num_features
            if mu.ndim != 2 or mu.shape[1] != f or prec.shape != (len(mu), f, f):
                raise ValueError(
                    f"{self.kind} error model: mean {mu.shape} / precision {prec.shape} "
                    f"do not match {f} features"
                )
            if not (np.isfinite(mu).all() and np.isfinite(prec).all()):
                raise ValueError(f"{self.kind} error model holds non-finite values")

    def to_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, d: dict) -> ErrorModel:
        def tup(v):
            return tuple(tup(x) for x in v) if isinstance(v, list) else v

        return cls(**{k: tup(v) for k, v in d.items()})

    def describe(self) -> str:
        if self.kind == "mae":
            return "mean absolute reconstruction error"
        if self.kind == "sse":
            return "sum of squared per-feature reconstruction errors"
        if self.kind == "zscore":
            return (
                "sum of squared per-feature z-scores of the mean absolute error vector "
                f"(diagonal Gaussian on {self.fitted_on} benign training windows)"
            )
        return (
            "squared Mahalanobis distance of the per-feature mean absolute error vector "
            f"(Gaussian on {self.fitted_on} benign training windows, Ledoit-Wolf shrinkage)"
        )


def errors(x_BxTxF: jnp.ndarray, xhat_KxBxTxF: jnp.ndarray) -> jnp.ndarray:
    """err_KxBxF: per-member, per-feature mean absolute error over the window's T steps.

    ``xhat`` may be B x T x F (one autoencoder): it is treated as K = 1.
    """
    if xhat_KxBxTxF.ndim == 3:
        xhat_KxBxTxF = xhat_KxBxTxF[None]
    return jnp.mean(jnp.abs(xhat_KxBxTxF - x_BxTxF[None]), axis=2)


def score_errors(err_KxBxF: jnp.ndarray, model: ErrorModel) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(score_B, contrib_BxF) from per-member error vectors; contributions sum to the score."""
    if err_KxBxF.shape[-1] != model.num_features:
        raise ValueError(
            f"error vectors have {err_KxBxF.shape[-1]} features, the model {model.num_features}"
        )
    arrays = {k: jnp.asarray(v, jnp.float32) for k, v in gaussian_arrays(model).items()}
    return score_errors_with(err_KxBxF, model.kind, model.combine, **arrays)


def gaussian_arrays(model: ErrorModel) -> dict[str, np.ndarray]:
    """The fitted values of a Gaussian error model as float32 arrays (none for ``mae``):
    what ``score_errors_with`` takes, and what the exported scorer takes as inputs."""
    if model.kind not in GAUSSIAN:
        return {}
    return {
        "mean_KxF": np.asarray(model.mean_KxF, np.float32),
        "precision_KxFxF": np.asarray(model.precision_KxFxF, np.float32),
    }


def score_errors_with(
    err_KxBxF: jnp.ndarray,
    kind: str,
    combine: str,
    mean_KxF: jnp.ndarray | None = None,
    precision_KxFxF: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``score_errors`` with the fitted values as arrays (traced inside the exported scorer)."""
    if kind == "mae":
        contrib_KxBxF = err_KxBxF / err_KxBxF.shape[-1]
    elif kind == "sse":
        contrib_KxBxF = err_KxBxF**2
    else:
        if mean_KxF.shape[0] != err_KxBxF.shape[0]:
            raise ValueError(
                f"{err_KxBxF.shape[0]} ensemble members scored, error model has {mean_KxF.shape[0]}"
            )
        d_KxBxF = err_KxBxF - mean_KxF[:, None, :]
        # Full float32 precision: the precision matrix can hold large entries that cancel,
        # and a reduced-precision matmul (TF32 on some GPUs) would move the score.
        pd_KxBxF = jnp.einsum(
            "kbf,kfg->kbg", d_KxBxF, precision_KxFxF, precision=jax.lax.Precision.HIGHEST
        )
        contrib_KxBxF = d_KxBxF * pd_KxBxF
    member_KxB = contrib_KxBxF.sum(axis=-1)
    if combine == "mean":
        return member_KxB.mean(axis=0), contrib_KxBxF.mean(axis=0)
    best_B = jnp.argmax(member_KxB, axis=0)
    contrib_BxF = jnp.take_along_axis(contrib_KxBxF, best_B[None, :, None], axis=0)[0]
    return member_KxB.max(axis=0), contrib_BxF


def score(
    x_BxTxF: jnp.ndarray, xhat_KxBxTxF: jnp.ndarray, model: ErrorModel
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(score_B, contrib_BxF) of windows (scaled inputs) and their reconstructions."""
    return score_errors(errors(x_BxTxF, xhat_KxBxTxF), model)


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


def fit(err_KxWxF: np.ndarray, kind: str, combine: str = "mean") -> ErrorModel:
    """The error model of ``kind``, fitted on benign windows' error vectors (numpy)."""
    err = np.asarray(err_KxWxF, np.float64)
    if err.ndim != 3:
        raise ValueError(f"expected err_KxWxF, got shape {err.shape}")
    k, w, f = err.shape
    if kind in ("mae", "sse"):  # nothing to fit
        return ErrorModel(kind, combine, f, fitted_on=w)
    if kind not in GAUSSIAN:
        raise ValueError(f"score must be one of {SCORES}, got {kind!r}")
    if w < 2:
        raise ValueError(f"a {kind} error model needs at least 2 benign windows, got {w}")
    means, precs, shrinks = [], [], []
    for member in err:
        if kind == "mahalanobis":
            mu, cov, shrink = ledoit_wolf(member)
        else:
            mu, cov, shrink = member.mean(axis=0), np.diag(member.var(axis=0)), 0.0
        # A feature with no error variance (constant, perfectly reconstructed) keeps the
        # covariance singular even after shrinkage when the trace is 0: floor it.
        cov = cov + 1e-6 * max(np.trace(cov) / f, 1e-12) * np.eye(f)
        means.append(tuple(mu.tolist()))
        precs.append(tuple(tuple(r) for r in np.linalg.inv(cov).tolist()))
        shrinks.append(shrink)
    return ErrorModel(kind, combine, f, tuple(means), tuple(precs), tuple(shrinks), fitted_on=w)
