"""Models: shapes, parameter counts, the hoisted decoder projection, a golden loss,
stage-2 freezing, and stacked ensembles."""

import operator

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lstmae_jax.model import models
from lstmae_jax.model.models import (
    CNN,
    DNN,
    LSTMAE,
    CNNConfig,
    DNNConfig,
    LatentClassifierConfig,
    LSTMAEConfig,
    Stage2Model,
)

B, F, C = 4, 6, 3


def _x(t: int, seed: int = 0) -> jax.Array:
    # In [0, 1] like min-max scaled flow features.
    return jax.random.uniform(jax.random.key(seed), (B, t, F))


def _finite(a) -> bool:
    return bool(jnp.all(jnp.isfinite(a)))


@nnx.jit
def _run(model, x):
    return model(x)


@pytest.fixture(scope="module")
def ae() -> LSTMAE:
    # Built once: the LSTMAE's parameters do not depend on T, and initialising
    # (compiling the random ops) is most of what these tests would otherwise cost.
    return LSTMAE(LSTMAEConfig(F, 10), rngs=nnx.Rngs(0))


@pytest.mark.device_check
@pytest.mark.parametrize("t", [1, 10])
def test_shapes_and_finite(t, ae):
    x = _x(t)
    xhat = _run(ae, x)
    assert xhat.shape == (B, t, F) and xhat.dtype == jnp.float32 and _finite(xhat)
    s2 = Stage2Model.from_autoencoder(ae, LatentClassifierConfig(64, 2), rngs=nnx.Rngs(1))
    for model, shape in (
        (s2, (B, 2)),
        (DNN(DNNConfig(F, t, C), rngs=nnx.Rngs(0)), (B, C)),
        (models.make_model(CNNConfig(F, t, C), rngs=nnx.Rngs(0)), (B, C)),
    ):
        logits = _run(model, x)
        assert logits.shape == shape and _finite(logits), type(model)


@pytest.mark.device_check
def test_deep_autoencoder_and_bfloat16():
    # One compile covers stacked layers and bfloat16 matmuls (unroll: test_lstm.py).
    cfg = LSTMAEConfig(F, 5, encoder_sizes=(16, 8), decoder_sizes=(8, 16), dtype="bfloat16")
    ae = LSTMAE(cfg, rngs=nnx.Rngs(0))
    z, xhat = nnx.jit(lambda m, x: (m.encode(x), m(x)))(ae, _x(5))
    assert z.shape == (B, 8) and z.dtype == jnp.bfloat16
    assert xhat.shape == (B, 5, F) and xhat.dtype == jnp.float32 and _finite(xhat)


def test_cnn_conv_axis():
    assert CNNConfig(F, 1, C).conv_axis == "features"
    assert CNNConfig(F, 10, C).conv_axis == "time"
    # Per-flow mode convolves over the F features with one input channel.
    cnn = CNN(CNNConfig(F, 1, C), rngs=nnx.Rngs(0))
    assert cnn.convs[0].kernel.shape == (3, 1, 64)
    cnn = CNN(CNNConfig(F, 1, C, conv_over="time", pool="avg"), rngs=nnx.Rngs(0))
    assert cnn.convs[0].kernel.shape == (3, F, 64) and _run(cnn, _x(1)).shape == (B, C)


def _abstract(config):
    # Shapes only: counting parameters needs no initialisation.
    return nnx.eval_shape(lambda: models.make_model(config, rngs=nnx.Rngs(0)))


def test_param_counts_match_keras_reference():
    for f in (F, 78):
        n = models.count_params(_abstract(LSTMAEConfig(f, 10)))
        keras = 4 * (f + 64 + 1) * 64 + 4 * (64 + 32 + 1) * 32 + (32 + 1) * f
        assert n == keras, (f, n, keras)
    dnn = _abstract(DNNConfig(F, 10, C))
    assert models.count_params(dnn) == (60 + 1) * 128 + 129 * 64 + 65 * 32 + 33 * C


def _dot_shapes(jaxpr, in_scan=False, out=None):
    """(operand shapes, inside a scan?) of every dot_general, sub-jaxprs included."""
    out = [] if out is None else out
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            out.append(({tuple(v.aval.shape) for v in eqn.invars}, in_scan))
        for p in eqn.params.values():
            for sub in p if isinstance(p, tuple | list) else (p,):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    _dot_shapes(sub, in_scan or eqn.primitive.name == "scan", out)
    return out


def test_decoder_input_projection_computed_once(ae):
    t, L, Hd = 10, 64, 32
    graphdef, state = nnx.split(ae)
    jaxpr = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x))(state, _x(t)).jaxpr
    dots = _dot_shapes(jaxpr)
    w_ih_dec = (L, 4 * Hd)
    uses = [(shapes, in_scan) for shapes, in_scan in dots if w_ih_dec in shapes]
    # One B x L @ L x 4H product, outside the scan; never a B x T x L operand.
    assert uses == [({(B, L), w_ih_dec}, False)], uses
    # Inside scans only the recurrent h @ w_hh products remain (plus, where the encoder
    # does not hoist its input projection, i.e. on CPU, its per-step x_t @ w_ih).
    expected = {frozenset({(B, 64), (64, 256)}), frozenset({(B, Hd), (Hd, 4 * Hd)})}
    if not ae.encoder.layers[0].hoist:
        expected.add(frozenset({(B, 6), (6, 256)}))
    assert {frozenset(s) for s, in_scan in dots if in_scan} == expected
    # And it equals decoding an explicitly repeated latent.
    z = ae.encode(_x(t))
    _, h = ae.decoder.layers[0](jnp.repeat(z[:, None], t, axis=1))
    np.testing.assert_allclose(_run(ae, _x(t)), ae.decoder.out(h), rtol=1e-5, atol=1e-6)


def test_reconstruction_errors():
    x = jnp.zeros((2, 4, 3))
    xhat = x.at[0, :2, 1].set(0.5)  # two of four steps off by 0.5 in feature 1
    sq = models.reconstruction_error(x, xhat)
    ab = models.reconstruction_abs_error(x, xhat)
    assert sq.shape == ab.shape == (2, 3)
    np.testing.assert_allclose(sq[0], [0, 0.125, 0])
    np.testing.assert_allclose(ab[0], [0, 0.25, 0])
    np.testing.assert_allclose(models.anomaly_score(x, xhat), [0.25 / 3, 0], rtol=1e-6)
    assert models.PAPER_MAE_THRESHOLD == 0.1


# The mean squared reconstruction error of the untrained default LSTMAE (F=6, T=10,
# nnx.Rngs(0)) on `_x(10)`. Update only for a deliberate change to initialisation, the
# architecture or the input; any other change to this number is a bug. To update, print
# the value computed below and paste it here.
GOLDEN_MSE = 0.36261633


@pytest.mark.device_check
def test_golden_loss(ae):
    x = _x(10)
    loss = jnp.mean((_run(ae, x) - x) ** 2)
    np.testing.assert_allclose(float(loss), GOLDEN_MSE, rtol=1e-5)


def _s2_loss(model, x, y, freeze=False):
    logits = model(x, freeze_encoder=freeze)
    return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def test_stage2_frozen_encoder(ae):
    s2 = Stage2Model.from_autoencoder(
        ae, LatentClassifierConfig(64, 2, dropout=0.0), rngs=nnx.Rngs(1)
    )
    assert s2.encoder is not ae.encoder  # a copy: fine-tuning leaves the autoencoder alone
    x, y = _x(10), jnp.array([0, 1, 0, 1])
    # Frozen by filter: encoder gradients are absent, the head's are not.
    diff = nnx.DiffState(0, models.trainable_params(freeze_encoder=True))
    grads = nnx.grad(_s2_loss, argnums=diff)(s2, x, y)
    assert "encoder" not in grads and "head" in grads
    # Fine-tuned: the encoder gets non-zero gradients.
    grads = nnx.grad(_s2_loss, argnums=nnx.DiffState(0, models.trainable_params(False)))(s2, x, y)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["encoder"])) > 0
    # Frozen by stop_gradient: encoder gradients exist and are exactly zero.
    grads = nnx.grad(_s2_loss)(s2, x, y, True)
    assert all(not bool(jnp.any(g)) for g in jax.tree.leaves(grads["encoder"]))
    assert any(bool(jnp.any(g)) for g in jax.tree.leaves(grads["head"]))
    # The filters split the parameters into encoder and head, nothing left over.
    n = models.count_params(s2)
    enc, head = nnx.state(s2, models.ENCODER_PARAMS), nnx.state(s2, models.HEAD_PARAMS)
    assert sum(p.size for p in jax.tree.leaves(enc) + jax.tree.leaves(head)) == n
    with pytest.raises(ValueError):
        Stage2Model.from_autoencoder(ae, LatentClassifierConfig(32, 2), rngs=nnx.Rngs(1))


def test_ensemble_stacked_vmap():
    K, t = 3, 10
    cfg = LSTMAEConfig(F, t)
    keys = jax.random.split(jax.random.key(42), K)
    graphdef, state_K = models.init_stacked(cfg, keys)
    assert state_K["encoder"]["layers"][0]["w_ih"].shape == (K, F, 256)

    @jax.jit
    def apply(state_K, x):
        return jax.vmap(lambda s, x: nnx.merge(graphdef, s)(x), in_axes=(0, None))(state_K, x)

    xhat_KxBxTxF = apply(state_K, _x(t))
    assert xhat_KxBxTxF.shape == (K, B, t, F) and _finite(xhat_KxBxTxF)
    # Member k is the model built alone from key k; members differ.
    for k in range(K):
        alone = _run(nnx.merge(graphdef, jax.tree.map(operator.itemgetter(k), state_K)), _x(t))
        np.testing.assert_allclose(xhat_KxBxTxF[k], alone, rtol=1e-5, atol=1e-6)
    first = nnx.state(LSTMAE(cfg, rngs=nnx.Rngs(keys[0])))
    first_K0 = jax.tree.map(operator.itemgetter(0), state_K)
    assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), first, first_K0)))
    assert float(jnp.abs(xhat_KxBxTxF[0] - xhat_KxBxTxF[1]).max()) > 1e-4
