"""Models: shapes, parameter counts, the hoisted decoder projection, a golden loss,
and stage-2 freezing."""

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
    LatentClassifier,
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


def _stage2(ae: LSTMAE, config: LatentClassifierConfig) -> Stage2Model:
    # As `train.steps.build_model` builds it: an encoder (here a copy of `ae`'s) + a head.
    return Stage2Model(nnx.clone(ae.encoder), LatentClassifier(config, rngs=nnx.Rngs(1)))


def _count_params(model: nnx.Module) -> int:
    return sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


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
    s2 = _stage2(ae, LatentClassifierConfig(64, 2))
    for model, shape in (
        (s2, (B, 2)),
        (DNN(DNNConfig(F, t, C), rngs=nnx.Rngs(0)), (B, C)),
        (CNN(CNNConfig(F, t, C), rngs=nnx.Rngs(0)), (B, C)),
    ):
        logits = _run(model, x)
        assert logits.shape == shape and _finite(logits), type(model)


@pytest.mark.device_check
def test_deep_autoencoder_and_bfloat16():
    # One compile covers stacked layers and bfloat16 matmuls (unroll: model/test_lstm.py).
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
    # Windows convolve over time with F input channels.
    cnn = CNN(CNNConfig(F, 10, C), rngs=nnx.Rngs(0))
    assert cnn.convs[0].kernel.shape == (3, F, 64) and _run(cnn, _x(10)).shape == (B, C)


def _abstract(model_cls, config):
    # Shapes only: counting parameters needs no initialisation.
    return nnx.eval_shape(lambda: model_cls(config, rngs=nnx.Rngs(0)))


def test_param_counts_match_keras_reference():
    for f in (F, 78):
        n = _count_params(_abstract(LSTMAE, LSTMAEConfig(f, 10)))
        keras = 4 * (f + 64 + 1) * 64 + 4 * (64 + 32 + 1) * 32 + (32 + 1) * f
        assert n == keras, (f, n, keras)
    dnn = _abstract(DNN, DNNConfig(F, 10, C))
    assert _count_params(dnn) == (60 + 1) * 128 + 129 * 64 + 65 * 32 + 33 * C


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


def _s2_loss(model, x, y):
    logits = model(x)
    return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def test_stage2_frozen_encoder(ae):
    s2 = _stage2(ae, LatentClassifierConfig(64, 2, dropout=0.0))
    x, y = _x(10), jnp.array([0, 1, 0, 1])
    # Frozen by filter: encoder gradients are absent, the head's are not.
    diff = nnx.DiffState(0, models.trainable_params(freeze_encoder=True))
    grads = nnx.grad(_s2_loss, argnums=diff)(s2, x, y)
    assert "encoder" not in grads and "head" in grads
    # Fine-tuned: the encoder gets non-zero gradients.
    grads = nnx.grad(_s2_loss, argnums=nnx.DiffState(0, models.trainable_params(False)))(s2, x, y)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["encoder"])) > 0
    # The head filter selects exactly the head's parameters; the rest are the encoder's.
    head = nnx.state(s2, models.HEAD_PARAMS)
    assert sum(p.size for p in jax.tree.leaves(head)) == _count_params(s2.head)
    assert _count_params(s2) - _count_params(s2.head) == _count_params(s2.encoder)
