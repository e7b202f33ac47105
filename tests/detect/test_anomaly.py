"""The one anomaly score: definitions, Ledoit-Wolf fit, contributions, JSON, jit."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.covariance import LedoitWolf

from lstmae_jax.detect import anomaly


def _windows(seed=0, k=1, b=64, t=5, f=6):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(b, t, f)).astype(np.float32)
    xhat = (x[None] + 0.3 * rng.normal(size=(k, b, t, f))).astype(np.float32)
    return x, xhat


def test_errors_are_mean_absolute_over_time():
    x, xhat = _windows(k=2)
    err = np.asarray(anomaly.errors(x, xhat))
    np.testing.assert_allclose(err, np.abs(xhat - x[None]).mean(axis=2), rtol=1e-6)
    # One autoencoder's B x T x F output is K = 1.
    np.testing.assert_allclose(np.asarray(anomaly.errors(x, xhat[0])), err[:1], rtol=1e-6)


def test_mae_is_the_papers_score():
    x, xhat = _windows()
    em = anomaly.fit(np.zeros((1, 3, 6)), "mae")
    s_B, c_BxF = map(np.asarray, anomaly.score(x, xhat, em))
    np.testing.assert_allclose(s_B, np.abs(xhat[0] - x).mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(c_BxF.sum(axis=1), s_B, rtol=1e-5)


def test_sse_is_the_squared_reconstruction_error():
    rng = np.random.default_rng(4)
    x, xhat = rng.normal(size=(6, 1, 5)), rng.normal(size=(6, 1, 5))
    model = anomaly.fit(np.zeros((1, 3, 5)), "sse")
    assert model.kind == "sse" and not model.mean_KxF  # nothing fitted
    s, c = anomaly.score(jnp.asarray(x), jnp.asarray(xhat), model)
    # T = 1: the squared Euclidean error, PCA's score; contributions sum to it.
    np.testing.assert_allclose(s, ((x - xhat) ** 2).sum(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(c).sum(axis=1), s, rtol=1e-5)
    assert anomaly.ErrorModel.from_json(model.to_json()) == model


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
    x, xhat = _windows(seed=2, b=200)
    err = np.abs(xhat - x[None]).mean(axis=2)
    em = anomaly.fit(err, "mahalanobis")
    assert em.fitted_on == 200 and len(em.shrinkage_K) == 1
    s_B, c_BxF = map(np.asarray, anomaly.score(x, xhat, em))
    mu, cov, _ = anomaly.ledoit_wolf(err[0])
    d = err[0] - mu
    ref = np.einsum("bf,fg,bg->b", d, np.linalg.inv(cov), d)
    np.testing.assert_allclose(s_B, ref, rtol=2e-3)
    np.testing.assert_allclose(c_BxF.sum(axis=1), s_B, rtol=1e-4)
    # The benign mean error vector scores 0; any other error pattern scores more.
    s0, _ = anomaly.score_errors(np.asarray(em.mean_KxF, np.float32)[:, None], em)
    assert float(s0[0]) == pytest.approx(0.0, abs=1e-6)
    assert s_B.min() > 0


def test_zscore_is_the_diagonal_gaussian():
    x, xhat = _windows(seed=6, b=300)
    err = np.abs(xhat - x[None]).mean(axis=2)
    em = anomaly.fit(err, "zscore")
    s_B, c_BxF = map(np.asarray, anomaly.score(x, xhat, em))
    z = (err[0] - err[0].mean(axis=0)) / err[0].std(axis=0)
    np.testing.assert_allclose(c_BxF, z**2, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(s_B, (z**2).sum(axis=1), rtol=1e-3)
    assert "z-scores" in em.describe()


def test_mahalanobis_flags_an_error_pattern_the_mean_misses():
    """Two features whose benign errors move together: breaking the pattern at the same
    mean error is invisible to mae and obvious to the Gaussian error model."""
    rng = np.random.default_rng(3)
    a = rng.uniform(0.5, 1.5, size=500)
    benign = np.stack([a, a + 0.01 * rng.normal(size=500)], axis=1)[None]
    em = anomaly.fit(benign, "mahalanobis")
    odd = np.array([[[0.5, 1.5]]], np.float32)  # mean error 1.0, typical for benign
    usual = np.array([[[1.0, 1.0]]], np.float32)
    mae = anomaly.fit(benign, "mae")
    assert float(anomaly.score_errors(odd, mae)[0][0]) == pytest.approx(1.0)
    assert float(anomaly.score_errors(odd, em)[0][0]) > 100 * float(
        anomaly.score_errors(usual, em)[0][0]
    )


def test_ensemble_members_combine_by_mean_or_max():
    x, xhat = _windows(seed=4, k=3, b=100)
    err = np.abs(xhat - x[None]).mean(axis=2)
    em = anomaly.fit(err, "mahalanobis", "mean")
    per = []
    for k in range(3):
        one = anomaly.fit(err[k : k + 1], "mahalanobis")
        per.append(np.asarray(anomaly.score(x, xhat[k : k + 1], one)[0]))
    s_mean, _ = anomaly.score(x, xhat, em)
    np.testing.assert_allclose(np.asarray(s_mean), np.mean(per, axis=0), rtol=1e-4)
    s_max, c_max = anomaly.score(x, xhat, dataclasses.replace(em, combine="max"))
    np.testing.assert_allclose(np.asarray(s_max), np.max(per, axis=0), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(c_max).sum(axis=1), np.asarray(s_max), rtol=1e-4)


def test_json_round_trip_and_jit():
    x, xhat = _windows(seed=5, k=2)
    em = anomaly.fit(np.abs(xhat - x[None]).mean(axis=2), "mahalanobis")
    back = anomaly.ErrorModel.from_json(json.loads(json.dumps(em.to_json())))
    assert back == em
    eager = anomaly.score(x, xhat, em)
    jitted = jax.jit(lambda a, b: anomaly.score(a, b, back))(x, xhat)
    for e, j in zip(eager, jitted, strict=True):
        np.testing.assert_allclose(np.asarray(e), np.asarray(j), rtol=1e-5)


def test_bad_error_models_are_refused():
    with pytest.raises(ValueError, match="score must be one of"):
        anomaly.fit(np.zeros((1, 5, 2)), "l2")
    with pytest.raises(ValueError, match="at least 2 benign windows"):
        anomaly.fit(np.zeros((1, 1, 2)), "mahalanobis")
    em = anomaly.fit(np.random.default_rng(0).normal(size=(1, 20, 3)), "mahalanobis")
    with pytest.raises(ValueError, match="do not match 4 features"):
        dataclasses.replace(em, num_features=4)
    with pytest.raises(ValueError, match="error vectors have 2 features"):
        anomaly.score_errors(np.zeros((1, 4, 2), np.float32), em)
    with pytest.raises(ValueError, match="non-finite"):
        dataclasses.replace(em, mean_KxF=((float("nan"), 0.0, 0.0),))
