"""The one batched apply over windows: compiled once per (model structure, function, table and
batch shape), the same numbers as the model applied to the windows directly, padding cut."""

import numpy as np
from flax import nnx

from lstmae_jax import config
from lstmae_jax.data import dataset, windows
from lstmae_jax.detect import detector, inference
from lstmae_jax.ingest import schema
from lstmae_jax.train import steps

F, T, B = 5, 3, 8
FEATURES = schema.FEATURES[1 : 1 + F]
# The identity: the model sees the table's values as they are.
IDENTITY = dataset.Scaler(FEATURES, (False,) * F, (0.0,) * F, (1.0,) * F)


def _model(seed=0):
    cfg = config.Config(window=T, encoder_sizes=(8,), decoder_sizes=(8,), members=())
    model = steps.build_model(cfg, F, 2, nnx.Rngs(seed))
    model.eval()
    return model


def _detector(kind):
    return detector.Detector((detector.Member(f"standard:{kind}", 0, 0),), "min", F)


def test_one_compile_serves_every_call_of_one_batch_shape():
    x_NxF = np.random.default_rng(0).normal(size=(200, F)).astype(np.float32)
    det = _detector("mae")
    inference.window_scores(_model(0), det, [IDENTITY], x_NxF, np.arange(10), T, B)
    compiled = inference._jitted()._cache_size()
    # Another model with the same structure, another count of windows (the table's shape
    # is part of the compiled shape: one table per pass).
    inference.window_scores(_model(1), det, [IDENTITY], x_NxF, np.arange(37), T, B)
    inference.window_scores(_model(2), det, [IDENTITY], x_NxF, np.arange(1), T, B)
    assert inference._jitted()._cache_size() == compiled


def test_the_batched_apply_equals_the_model_on_the_windows():
    x_NxF = np.random.default_rng(1).normal(size=(60, F)).astype(np.float32)
    model = _model()
    starts = np.array([0, 5, 17, 40, 57 - T + 1, 3, 9, 11, 30, 31, 32])  # 11: two batches
    err_KxWxF, z_KxWxL, last_RxWxF = inference.fit_parts(model, [IDENTITY], x_NxF, starts, T, B)
    x_WxTxF = windows.gather(x_NxF, starts, T)
    want_WxF = np.abs(np.asarray(model(x_WxTxF)) - x_WxTxF).mean(axis=1)
    np.testing.assert_allclose(err_KxWxF[0], want_WxF, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z_KxWxL[0], np.asarray(model.encode(x_WxTxF)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(last_RxWxF[0], x_WxTxF[:, -1], rtol=1e-6)
    score_W, contrib_WxF, members_WxM = inference.window_scores(
        model, _detector("mae"), [IDENTITY], x_NxF, starts, T, B, members=True
    )
    np.testing.assert_allclose(score_W, want_WxF.mean(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(contrib_WxF.sum(axis=1), score_W, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(members_WxM[:, 0], score_W)


def test_the_windows_are_scaled_on_the_device():
    """A scaler given: the model sees the scaled windows (what the exported scorer does)."""
    rng = np.random.default_rng(3)
    x_NxF = rng.exponential(50.0, size=(40, F)).astype(np.float32)
    scaler = dataset.fit_scaler(x_NxF, FEATURES, "quantile")
    model, starts = _model(), np.arange(20)
    score_W, _ = inference.window_scores(model, _detector("sse"), [scaler], x_NxF, starts, T, B)
    x_WxTxF = scaler.transform(windows.gather(x_NxF, starts, T).reshape(-1, F)).reshape(-1, T, F)
    err = np.abs(np.asarray(model(x_WxTxF)) - x_WxTxF).mean(axis=1)
    np.testing.assert_allclose(score_W, (err**2).sum(axis=1), rtol=1e-4, atol=1e-6)


def test_no_windows_give_empty_outputs_of_the_right_shape():
    x_NxF = np.zeros((10, F), np.float32)
    err, z, last = inference.fit_parts(_model(), [IDENTITY], x_NxF, np.zeros(0, np.int64), T, B)
    assert err.shape == (1, 0, F) and z.shape == (1, 0, 8) and last.shape == (1, 0, F)


def test_grouped_scores_give_each_groups_mean_contribution_without_a_window_table():
    """``group_W``: the same scores, and per group the mean of the per-window contributions
    (padding excluded: 21 windows, batches of 8); an empty group's mean is 0."""
    x_NxF = np.random.default_rng(2).normal(size=(80, F)).astype(np.float32)
    model, det = _model(), _detector("sse")
    starts = np.arange(0, 63, 3)
    group_W = np.array([0, 2] * 10 + [2])
    score_W, contrib_WxF = inference.window_scores(model, det, [IDENTITY], x_NxF, starts, T, B)
    score2_W, mean_GxF = inference.window_scores(
        model, det, [IDENTITY], x_NxF, starts, T, B, group_W=group_W, num_groups=3
    )
    np.testing.assert_array_equal(score2_W, score_W)
    for g in (0, 2):
        np.testing.assert_allclose(mean_GxF[g], contrib_WxF[group_W == g].mean(0), rtol=1e-5)
    np.testing.assert_array_equal(mean_GxF[1], 0.0)
