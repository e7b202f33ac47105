"""The scan LSTM against Flax's own `OptimizedLSTMCell` driven by `nnx.RNN`.

Tolerance 1e-5 (float32): both compute the same formula, but the order of additions
differs (here `(x @ w_ih + bias) + h @ w_hh`, Flax `x @ w_ih + (h @ w_hh + bias)`) and the
hoisted matmul is one large GEMM rather than T small ones, so results differ by a few
float32 ulps (~1e-7 relative) that grow slightly through T steps and the backward pass.
1e-5 is ~100x that and still far below any real bug (a wrong gate order or bias is O(0.1)).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lstmae_jax.model.lstm import LSTM

B, T, F, H = 3, 7, 5, 8
TOL = 1e-5


def _cell() -> nnx.OptimizedLSTMCell:
    # A non-zero bias so a misplaced bias (or gate order) would show.
    cell = nnx.OptimizedLSTMCell(F, H, rngs=nnx.Rngs(1))
    cell.dense_h.bias[...] = 0.3 * jax.random.normal(jax.random.key(2), (4 * H,))
    return cell


def _x() -> jax.Array:
    return jax.random.normal(jax.random.key(3), (B, T, F))


def _close(a, b, tol=TOL):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def test_param_layout_matches_keras_count():
    layer = LSTM(F, H, rngs=nnx.Rngs(0))
    assert layer.w_ih.shape == (F, 4 * H)
    assert layer.w_hh.shape == (H, 4 * H)
    assert layer.bias.shape == (4 * H,)
    n = sum(p.size for p in jax.tree.leaves(nnx.state(layer, nnx.Param)))
    assert n == 4 * (F + H + 1) * H
    # Forget gate (second block) starts at 1, the other gates at 0.
    _close(layer.bias[...][H : 2 * H], jnp.ones(H))
    _close(layer.bias[...][:H], jnp.zeros(H))
    _close(layer.bias[...][2 * H :], jnp.zeros(2 * H))


@pytest.mark.device_check
@pytest.mark.parametrize("hoist", [True, False])
def test_forward_matches_flax_rnn(hoist):
    cell = _cell()
    rnn = nnx.RNN(cell, return_carry=True)
    layer = LSTM.from_optimized_cell(cell, hoist=hoist)
    (c_ref, h_ref), y_ref = rnn(_x())
    (c, h), y = layer(_x())
    assert y.shape == (B, T, H)
    _close(y, y_ref)
    _close(c, c_ref)
    _close(h, h_ref)
    # Last-state mode returns h_T.
    _, h_last = layer(_x(), return_sequences=False)
    assert h_last.shape == (B, H)
    _close(h_last, y_ref[:, -1])


@pytest.mark.parametrize("hoist", [True, False])
def test_given_carry_matches_flax_rnn(hoist):
    cell = _cell()
    layer = LSTM.from_optimized_cell(cell, hoist=hoist)
    k1, k2 = jax.random.split(jax.random.key(4))
    carry = (jax.random.normal(k1, (B, H)), jax.random.normal(k2, (B, H)))
    y_ref = nnx.RNN(cell)(_x(), initial_carry=carry)
    _, y = layer(_x(), carry)
    _close(y, y_ref)


@pytest.mark.device_check
@pytest.mark.parametrize("hoist", [True, False])
@pytest.mark.parametrize("fused_backward", [False, True])
def test_gradients_match_flax_rnn(hoist, fused_backward):
    cell = _cell()
    layer = LSTM.from_optimized_cell(cell, hoist=hoist, fused_backward=fused_backward)
    w_BxTxH = jax.random.normal(jax.random.key(5), (B, T, H))

    # A loss using every output step and the final cell state.
    def loss_ref(cell, x):
        (c, _), y = nnx.RNN(cell, return_carry=True)(x)
        return jnp.sum(y * w_BxTxH) + jnp.sum(c**2)

    def loss(layer, x):
        (c, _), y = layer(x)
        return jnp.sum(y * w_BxTxH) + jnp.sum(c**2)

    g_cell, gx_ref = nnx.grad(loss_ref, argnums=(0, 1))(cell, _x())
    g_layer, gx = nnx.grad(loss, argnums=(0, 1))(layer, _x())
    _close(gx, gx_ref)
    _close(g_layer["w_ih"][...], g_cell["dense_i"]["kernel"][...])
    _close(g_layer["w_hh"][...], g_cell["dense_h"]["kernel"][...])
    _close(g_layer["bias"][...], g_cell["dense_h"]["bias"][...])
    assert float(jnp.abs(gx).max()) > 0


def test_repeat_equals_feeding_repeated_input():
    layer = LSTM(F, H, rngs=nnx.Rngs(0))
    z_BxF = jax.random.normal(jax.random.key(6), (B, F))
    x_BxTxF = jnp.repeat(z_BxF[:, None, :], T, axis=1)
    carry_ref, y_ref = layer(x_BxTxF)
    carry, y = layer.repeat(z_BxF, T)
    _close(y, y_ref)
    _close(carry[0], carry_ref[0])
    _, h = layer.repeat(z_BxF, T, return_sequences=False)
    _close(h, y_ref[:, -1])
    # Gradients agree too (w.r.t. the repeated input: T contributions summed).
    g_ref = jax.grad(lambda z: jnp.sum(layer(jnp.repeat(z[:, None], T, 1))[1] ** 2))(z_BxF)
    g = jax.grad(lambda z: jnp.sum(layer.repeat(z, T)[1] ** 2))(z_BxF)
    _close(g, g_ref)


@pytest.mark.parametrize("unroll", [2, 3, T])
def test_unroll_is_identical(unroll):
    base = LSTM(F, H, rngs=nnx.Rngs(0))
    unrolled = LSTM(F, H, rngs=nnx.Rngs(0), unroll=unroll)
    _close(unrolled(_x())[1], base(_x())[1])
    z_BxF = _x()[:, 0]
    _close(unrolled.repeat(z_BxF, T)[1], base.repeat(z_BxF, T)[1])


@pytest.mark.parametrize("t", [1, 10])
def test_shapes_finite_and_jit(t):
    layer = LSTM(F, H, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(7), (B, t, F))

    @nnx.jit
    def run(layer, x):
        return layer(x)[1], layer(x, return_sequences=False)[1], layer.repeat(x[:, 0], t)[1]

    y, h, yr = run(layer, x)
    assert y.shape == (B, t, H) and h.shape == (B, H) and yr.shape == (B, t, H)
    for a in (y, h, yr):
        assert bool(jnp.all(jnp.isfinite(a)))
    _close(y, layer(x)[1])


def test_bfloat16_compute_keeps_float32_state():
    layer = LSTM(F, H, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
    (c, h), y = layer(_x())
    assert y.dtype == jnp.bfloat16
    assert c.dtype == h.dtype == jnp.float32
    # bf16 has ~3 significant digits: a loose bound, only to catch gross errors.
    ref = LSTM(F, H, rngs=nnx.Rngs(0))(_x())[1]
    _close(y.astype(jnp.float32), ref, tol=5e-2)


def test_from_optimized_cell_rejects_non_float32_params():
    # Shapes only: XLA:CPU has no bfloat16 orthogonal initialiser.
    cell = nnx.eval_shape(
        lambda: nnx.OptimizedLSTMCell(F, H, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(1))
    )
    with pytest.raises(ValueError):
        LSTM.from_optimized_cell(cell)


def test_rejects_wrong_shapes():
    layer = LSTM(F, H, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError):
        layer(jnp.zeros((B, T, F + 1)))
    with pytest.raises(ValueError):
        layer.repeat(jnp.zeros((B, T, F)), T)


# ------------------------------------------------------------ the fused backward pass


def _fused_pair(hoist: bool, dtype=None) -> tuple[LSTM, LSTM]:
    """The same layer twice: lax.scan's own gradients, and `lstm._fused_bwd`."""
    cell = _cell()
    plain = LSTM.from_optimized_cell(cell, hoist=hoist)
    fused = LSTM.from_optimized_cell(cell, hoist=hoist, fused_backward=True)
    plain.dtype = fused.dtype = dtype
    return plain, fused


def _loss_all_outputs(mode: str, return_sequences: bool):
    w_BxTxH = jax.random.normal(jax.random.key(5), (B, T, H))

    def loss(layer, x, carry):
        if mode == "repeat":
            (c, h), y = layer.repeat(x[:, 0], T, carry, return_sequences=return_sequences)
        else:
            (c, h), y = layer(x, carry, return_sequences=return_sequences)
        y_term = jnp.sum(y * w_BxTxH) if return_sequences else jnp.sum(jnp.sin(y))
        return y_term + jnp.sum(c**2) + jnp.sum(h**3)

    return loss


@pytest.mark.device_check
@pytest.mark.parametrize("hoist", [True, False])
@pytest.mark.parametrize("mode", ["sequence", "repeat"])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_fused_backward_matches_scan_gradients(hoist, mode, return_sequences):
    plain, fused = _fused_pair(hoist)
    k1, k2 = jax.random.split(jax.random.key(4))
    carry = (jax.random.normal(k1, (B, H)), jax.random.normal(k2, (B, H)))
    loss = _loss_all_outputs(mode, return_sequences)
    # Values: the forward pass is the same computation.
    _close(loss(fused, _x(), carry), loss(plain, _x(), carry))
    g_ref = nnx.grad(loss, argnums=(0, 1, 2))(plain, _x(), carry)
    g = nnx.grad(loss, argnums=(0, 1, 2))(fused, _x(), carry)
    for name in ("w_ih", "w_hh", "bias"):
        _close(g[0][name][...], g_ref[0][name][...])
        assert float(jnp.abs(g[0][name][...]).max()) > 0
    _close(g[1], g_ref[1])  # the input
    _close(g[2][0], g_ref[2][0])  # the initial carry
    _close(g[2][1], g_ref[2][1])


def test_fused_backward_bfloat16_close_to_float32():
    plain, fused = _fused_pair(True, dtype=jnp.bfloat16)
    loss = _loss_all_outputs("sequence", True)
    carry = plain.initial_carry(B)
    g_ref = nnx.grad(loss)(plain, _x(), carry)
    g = nnx.grad(loss)(fused, _x(), carry)
    # Both run bf16 matmuls (in other orders); they agree to bf16 precision (2^-8).
    for name in ("w_ih", "w_hh", "bias"):
        a, b = np.asarray(g[name][...]), np.asarray(g_ref[name][...])
        assert np.abs(a - b).max() <= 0.03 * np.abs(b).max()


def test_full_unroll_is_identical():
    base = LSTM(F, H, rngs=nnx.Rngs(0))
    full = LSTM(F, H, rngs=nnx.Rngs(0), unroll=T, fused_backward=True)
    _close(full(_x())[1], base(_x())[1])
    g = jax.grad(lambda x: jnp.sum(full(x)[1] ** 2))(_x())
    g_ref = jax.grad(lambda x: jnp.sum(base(x)[1] ** 2))(_x())
    _close(g, g_ref)
