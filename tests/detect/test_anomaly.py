"""Reconstruction scores: definitions, the Ledoit-Wolf fit, contributions, jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.covariance import LedoitWolf

from lstmae_jax.detect import anomaly


def _errors(seed=0, b=64, t=5, f=6):
    """x_KxBxTxF (K = 1), a reconstruction of it, and their error vectors err_BxF."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1, b, t, f)).astype(np.float32)
    xhat = (x + 0.3 * rng.normal(size=x.shape)).astype(np.float32)
    return x, xhat, np.abs(xhat - x).mean(axis=2)[0]


def test_errors_are_mean_absolute_over_time_per_network():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)  # two networks, own inputs
    xhat = rng.normal(size=x.shape).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(anomaly.errors(x, xhat)), np.abs(xhat - x).mean(axis=2), rtol=1e-6
    )


def test_mae_is_the_papers_score():
    x, xhat, err = _errors()
    s_B, c_BxF = map(np.asarray, anomaly.score(jnp.asarray(err), "mae"))
    np.testing.assert_allclose(s_B, np.abs(xhat[0] - x[0]).mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(c_BxF.sum(axis=1), s_B, rtol=1e-5)


def test_sse_is_the_squared_reconstruction_error():
    rng = np.random.default_rng(4)
    x, xhat = rng.normal(size=(1, 6, 1, 5)), rng.normal(size=(1, 6, 1, 5))
    err = anomaly.errors(jnp.asarray(x), jnp.asarray(xhat))[0]
    s, c = anomaly.score(err, "sse")
    # T = 1: the squared Euclidean error, PCA's score; contributions sum to it.
    np.testing.assert_allclose(s, ((x - xhat) ** 2).sum(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(c).sum(axis=1), s, rtol=1e-5)


def test_ledoit_wolf_matches_scikit_learn():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(40, 8)) @ rng.normal(size=(8, 8))  # few rows: real shrinkage
    mu, cov, shrink = anomaly.ledoit_wolf(z)
    ref = LedoitWolf().fit(z)
    np.testing.assert_allclose(mu, ref.location_, rtol=1e-10)
    np.testing.assert_allclose(cov, ref.covariance_, rtol=1e-8, atol=1e-10)
    assert shrink == pytest.approx(ref.shrinkage_, rel=1e-8)
    assert 0.0 < shrink < 1.0


def test_mahalanobis_score_and_contributions():
    _, _, err = _errors(seed=2, b=200)
    mu, prec, shrink = anomaly.fit_gaussian(err, "mahalanobis")
    assert 0.0 <= shrink <= 1.0
    s_B, c_BxF = map(np.asarray, anomaly.score(jnp.asarray(err), "mahalanobis", mu, prec))
    lw_mu, lw_cov, _ = anomaly.ledoit_wolf(err)
    d = err - lw_mu
    ref = np.einsum("bf,fg,bg->b", d, np.linalg.inv(lw_cov), d)
    np.testing.assert_allclose(s_B, ref, rtol=2e-3)
    np.testing.assert_allclose(c_BxF.sum(axis=1), s_B, rtol=1e-4)
    # The benign mean error vector scores 0; any other error pattern scores more.
    s0, _ = anomaly.score(jnp.asarray(mu[None], jnp.float32), "mahalanobis", mu, prec)
    assert float(s0[0]) == pytest.approx(0.0, abs=1e-6)
    assert s_B.min() > 0


def test_zscore_is_the_diagonal_gaussian():
    _, _, err = _errors(seed=6, b=300)
    mu, prec, _ = anomaly.fit_gaussian(err, "zscore")
    s_B, c_BxF = map(np.asarray, anomaly.score(jnp.asarray(err), "zscore", mu, prec))
    z = (err - err.mean(axis=0)) / err.std(axis=0)
    np.testing.assert_allclose(c_BxF, z**2, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(s_B, (z**2).sum(axis=1), rtol=1e-3)
    assert "z-scores" in anomaly.describe("zscore")


def test_mahalanobis_flags_an_error_pattern_the_mean_misses():
    """Two features whose benign errors move together: breaking the pattern at the same
    mean error is invisible to mae and obvious to the Gaussian error model."""
    rng = np.random.default_rng(3)
    a = rng.uniform(0.5, 1.5, size=500)
    benign = np.stack([a, a + 0.01 * rng.normal(size=500)], axis=1)
    mu, prec, _ = anomaly.fit_gaussian(benign, "mahalanobis")
    odd = jnp.array([[0.5, 1.5]], jnp.float32)  # mean error 1.0, typical for benign
    usual = jnp.array([[1.0, 1.0]], jnp.float32)
    assert float(anomaly.score(odd, "mae")[0][0]) == pytest.approx(1.0)
    big = float(anomaly.score(odd, "mahalanobis", mu, prec)[0][0])
    assert big > 100 * float(anomaly.score(usual, "mahalanobis", mu, prec)[0][0])


def test_jit_equals_eager():
    _, _, err = _errors(seed=5)
    mu, prec, _ = anomaly.fit_gaussian(err, "mahalanobis")
    eager = anomaly.score(jnp.asarray(err), "mahalanobis", mu, prec)
    jitted = jax.jit(lambda e, m, p: anomaly.score(e, "mahalanobis", m, p))(err, mu, prec)
    for e, j in zip(eager, jitted, strict=True):
        np.testing.assert_allclose(np.asarray(e), np.asarray(j), rtol=1e-5)


def test_bad_scores_are_refused():
    with pytest.raises(ValueError, match="score must be one of"):
        anomaly.score(jnp.zeros((2, 3)), "l2")
    with pytest.raises(ValueError, match="at least 2 benign vectors"):
        anomaly.fit_gaussian(np.zeros((1, 2)), "mahalanobis")
    with pytest.raises(ValueError, match="a Gaussian score is one of"):
        anomaly.fit_gaussian(np.zeros((5, 2)), "sse")
    # A constant feature keeps the precision finite (floored).
    _, prec, _ = anomaly.fit_gaussian(np.ones((10, 3)), "mahalanobis")
    assert np.isfinite(prec).all()
