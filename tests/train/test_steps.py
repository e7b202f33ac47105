"""Steps: K steps in one call equal K calls; the fused LSTM backward trains the same."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lstmae_jax import config
from lstmae_jax.data import dataset
from lstmae_jax.ingest import schema
from lstmae_jax.train import steps

F, N = 6, 300


def _setup(cfg):
    model = steps.build_model(cfg, F, 2, nnx.Rngs(cfg.seed))
    tx = steps.optimizer(cfg)
    graphdef, state = steps.init_state(model, tx, nnx.Param)
    x = np.random.default_rng(0).exponential(10.0, (N, F)).astype(np.float32)
    features = schema.FEATURES[1 : 1 + F]
    scalers = [dataset.fit_scaler(x, features, k).arrays() for k in cfg.representations()]
    train_step = steps.make_train_step(graphdef, tx, steps.task_for(cfg, 2), nnx.Param, scalers)
    table = jnp.asarray(x)
    rng = np.random.default_rng(1)
    batches = [
        {
            "starts": rng.integers(0, N - cfg.window, cfg.batch_size).astype(np.int32),
            "label": np.zeros(cfg.batch_size, np.int32),
        }
        for _ in range(4)
    ]
    return state, train_step, table, batches


@pytest.mark.device_check
def test_repeat_step_equals_single_steps():
    # With input noise: the noise key is folded from the step counter, so it must advance.
    cfg = config.smoke(input_noise=0.5)
    state, train_step, table, batches = _setup(cfg)
    single = jax.jit(train_step)
    s1, losses = state, []
    for b in batches:
        s1, m = single(s1, table, b)
        losses.append(m["loss"])
    stacked = jax.tree.map(lambda *a: np.stack(a), *batches)
    s4, m4 = jax.jit(steps.repeat_step(train_step, 4))(state, table, stacked)
    assert int(s4.step) == int(s1.step) == 4
    # Bit-identical on CPU (measured); elsewhere XLA may fuse the scan body otherwise.
    tol = 0 if jax.default_backend() == "cpu" else 1e-6
    np.testing.assert_allclose(np.asarray(m4["loss"]), np.asarray(losses), rtol=tol, atol=0)
    for a, b in zip(jax.tree.leaves(s4.params), jax.tree.leaves(s1.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol * 0.1)


def test_repeat_step_refuses_a_wrong_stack():
    cfg = config.smoke()
    state, train_step, table, batches = _setup(cfg)
    stacked = jax.tree.map(lambda *a: np.stack(a), *batches[:3])
    with pytest.raises(ValueError, match="expected 4 stacked batches"):
        steps.repeat_step(train_step, 4)(state, table, stacked)


@pytest.mark.device_check
def test_fused_backward_trains_like_autodiff():
    # Four Adam steps: the same parameters up to float32 reassociation.
    runs = {}
    for backward in ("autodiff", "fused"):
        state, train_step, table, batches = _setup(config.smoke(lstm_backward=backward))
        step = jax.jit(train_step)
        for b in batches:
            state, m = step(state, table, b)
        runs[backward] = state
    for a, b in zip(
        jax.tree.leaves(runs["fused"].params), jax.tree.leaves(runs["autodiff"].params), strict=True
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_bfloat16_matmuls_train():
    cfg = config.smoke(dtype="bfloat16", members=())
    state, train_step, table, batches = _setup(cfg)
    model = steps.build_model(cfg, F, 2, nnx.Rngs(0))
    assert model.encoder.layers[0].dtype == jnp.bfloat16
    step = jax.jit(train_step)
    for b in batches:
        state, m = step(state, table, b)
    assert np.isfinite(float(m["loss"]))
    # Parameters stay float32.
    assert {a.dtype for a in jax.tree.leaves(state.params)} == {jnp.dtype("float32")}
