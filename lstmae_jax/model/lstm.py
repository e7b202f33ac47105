"""A scan-based LSTM layer with the input projection hoisted out of the recurrence.

Shape letters used in names throughout `lstm.py` and `models.py`:

    B  batch (windows)           T  time steps (flows per window)
    F  input features            H  hidden units of one LSTM layer
    L  latent size (last encoder H)
    C  classes                   K  ensemble members

Gates are fused: one ``4H``-wide matmul per step in the order **i, f, g, o** (input,
forget, cell candidate, output), the order of Flax's ``OptimizedLSTMCell`` and of Keras'
``LSTM`` (which calls ``g`` "c"). With ``z = x @ w_ih + h @ w_hh + bias``:

    i = sigmoid(z_i)   f = sigmoid(z_f)   g = tanh(z_g)   o = sigmoid(z_o)
    c' = f * c + i * g                    h' = o * tanh(c')

Parameter layout (the same as ``OptimizedLSTMCell`` and Keras, so conversion is a copy):

    w_ih  F x 4H   = OptimizedLSTMCell.dense_i.kernel  = Keras kernel
    w_hh  H x 4H   = OptimizedLSTMCell.dense_h.kernel  = Keras recurrent_kernel
    bias  4H       = OptimizedLSTMCell.dense_h.bias    = Keras bias  (one bias per gate)

Initialisation follows Keras (the paper's reference is a Keras model): ``w_ih``
glorot-uniform, ``w_hh`` orthogonal, ``bias`` zeros except the forget gate, which starts
at ``FORGET_BIAS = 1.0`` (Keras ``unit_forget_bias=True``; Jozefowicz et al. 2015), so that
early in training the cell keeps its memory. Flax's cell starts the forget bias at 0.
Parameters are stored in float32 (``PARAM_DTYPE``).

The carry is ``(c_BxH, h_BxH)``, the order Flax's cells use, so a carry can be passed
between this layer and ``nnx.RNN(OptimizedLSTMCell)``.

Why hoist: ``x @ w_ih`` does not depend on the recurrence, so it is one ``BT x F @ F x 4H``
matmul before ``lax.scan`` instead of T small ones inside it; only ``h @ w_hh`` stays in
the loop. With a repeated input (the autoencoder decoder's RepeatVector) the projection is
computed once for ``B x F`` and reused at every step (`LSTM.repeat`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

Carry = tuple[jax.Array, jax.Array]  # (c_BxH, h_BxH)

PARAM_DTYPE = jnp.float32  # the stored parameters
FORGET_BIAS = 1.0  # initial forget-gate bias (Keras `unit_forget_bias=True`)


def _matmul(spec: str, a: jax.Array, b: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """`einsum` with operands in `dtype` and a float32 result.

    Not `preferred_element_type=float32`: XLA:CPU has no BF16 x BF16 = F32 dot, and the
    code must run on CPU; on GPU the bf16 dot accumulates in float32 internally anyway.
    """
    return jnp.einsum(spec, a.astype(dtype), b.astype(dtype)).astype(jnp.float32)


def _gates(z_Bx4H: jax.Array, c_BxH: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One cell update from the pre-activations: (acts_Bx4H = [i, f, g, o] activated, c', h')."""
    i, f, g, o = jnp.split(z_Bx4H, 4, axis=-1)
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c_BxH = f * c_BxH + i * g
    h_BxH = o * jnp.tanh(c_BxH)
    return jnp.concatenate([i, f, g, o], axis=-1), c_BxH, h_BxH


def _forward(
    w_hh_Hx4H: jax.Array,
    w_in: jax.Array | None,
    bias_4H: jax.Array,
    u: jax.Array,
    carry: Carry,
    length: int,
    compute_dtype: jnp.dtype,
    unroll: int,
    emit: str,
):
    """The recurrence over one of three input forms (see `_lstm_scan`).

    Returns ``(carry, h_TxBxH, residuals)``. ``emit`` says what the scan stacks over
    time: "none" (only the last state is wanted: no T x B x H buffer), "h", or
    "residuals" (h and what `_fused_bwd` needs: activated gates acts_TxBx4H and cell
    states c_TxBxH).
    """
    w_hh_Hx4H = w_hh_Hx4H.astype(compute_dtype)  # cast once, not per step
    repeated = u.ndim == 2
    if w_in is not None:
        w_in = w_in.astype(compute_dtype)

    def step(carry: Carry, u_t: jax.Array | None):
        c_BxH, h_BxH = carry
        xp_Bx4H = u if repeated else u_t
        if w_in is not None:  # u_t is x_t_BxF: project inside the step
            xp_Bx4H = _matmul("bf,fg->bg", u_t, w_in, compute_dtype) + bias_4H
        z_Bx4H = xp_Bx4H + _matmul("bh,hg->bg", h_BxH, w_hh_Hx4H, compute_dtype)
        acts_Bx4H, c_BxH, h_BxH = _gates(z_Bx4H, c_BxH)
        out = {"none": None, "h": h_BxH, "residuals": (h_BxH, acts_Bx4H, c_BxH)}[emit]
        return (c_BxH, h_BxH), out

    xs = None if repeated else u
    carry, ys = jax.lax.scan(step, carry, xs, length=length, unroll=unroll)
    if emit == "residuals":
        h_TxBxH, acts_TxBx4H, c_TxBxH = ys
        return carry, h_TxBxH, (acts_TxBx4H, c_TxBxH)
    return carry, ys, None


def _fused_impl(w_hh, w_in, bias, u, carry, length, compute_dtype, unroll):
    carry, h_TxBxH, _ = _forward(w_hh, w_in, bias, u, carry, length, compute_dtype, unroll, "h")
    return carry, h_TxBxH


_fused = jax.custom_vjp(_fused_impl, nondiff_argnums=(5, 6, 7))


def _fused_fwd(w_hh, w_in, bias, u, carry, length, compute_dtype, unroll):
    carry_T, h_TxBxH, (acts, c_TxBxH) = _forward(
        w_hh, w_in, bias, u, carry, length, compute_dtype, unroll, "residuals"
    )
    return (carry_T, h_TxBxH), (w_hh, w_in, bias, u, carry, h_TxBxH, acts, c_TxBxH)


def _fused_bwd(length, compute_dtype, unroll, residuals, cotangents):
    """Backward of the recurrence as cuDNN does it: only the dh/dc recurrence (one
    ``dz_t @ w_hh.T`` per step) stays in the reverse scan; the weight, bias and input
    gradients of all steps are then a few large matmuls over ``dz_TxBx4H``."""
    w_hh, w_in, bias, u, (c0_BxH, h0_BxH), h_TxBxH, acts_TxBx4H, c_TxBxH = residuals
    (dc_T, dh_T), dh_TxBxH = cotangents
    dh_TxBxH = dh_TxBxH.at[-1].add(dh_T)  # the final carry's h is also the last output
    c_prev_TxBxH = jnp.concatenate([c0_BxH[None], c_TxBxH[:-1]])
    w_hh_T = w_hh.T.astype(compute_dtype)

    def step(carry: Carry, inputs):
        dc_BxH, dh_rec_BxH = carry  # flowing back from step t+1
        dh_out_BxH, acts_Bx4H, c_BxH, c_prev_BxH = inputs
        i, f, g, o = jnp.split(acts_Bx4H, 4, axis=-1)
        dh_BxH = dh_out_BxH + dh_rec_BxH
        tanh_c = jnp.tanh(c_BxH)
        dc_BxH = dc_BxH + dh_BxH * o * (1 - tanh_c * tanh_c)
        dz_Bx4H = jnp.concatenate(
            [
                dc_BxH * g * i * (1 - i),
                dc_BxH * c_prev_BxH * f * (1 - f),
                dc_BxH * i * (1 - g * g),
                dh_BxH * tanh_c * o * (1 - o),
            ],
            axis=-1,
        )
        dh_prev_BxH = _matmul("bg,gh->bh", dz_Bx4H, w_hh_T, compute_dtype)
        return (dc_BxH * f, dh_prev_BxH), dz_Bx4H

    (dc0_BxH, dh0_BxH), dz_TxBx4H = jax.lax.scan(
        step,
        (dc_T, jnp.zeros_like(h0_BxH)),
        (dh_TxBxH, acts_TxBx4H, c_TxBxH, c_prev_TxBxH),
        reverse=True,
        unroll=unroll,
    )
    h_prev_TxBxH = jnp.concatenate([h0_BxH[None], h_TxBxH[:-1]])
    dw_hh = _matmul("tbh,tbg->hg", h_prev_TxBxH, dz_TxBx4H, compute_dtype)
    if w_in is not None:  # per-step projection: u is x_TxBxF
        dw_in = _matmul("tbf,tbg->fg", u, dz_TxBx4H, compute_dtype).astype(w_in.dtype)
        dbias = jnp.sum(dz_TxBx4H, axis=(0, 1))
        du = _matmul("tbg,fg->tbf", dz_TxBx4H, w_in, compute_dtype)
    else:  # u is the projection itself (bias included), per step or repeated
        dw_in, dbias = None, jnp.zeros_like(bias)
        du = jnp.sum(dz_TxBx4H, axis=0) if u.ndim == 2 else dz_TxBx4H
    return dw_hh.astype(w_hh.dtype), dw_in, dbias, du.astype(u.dtype), (dc0_BxH, dh0_BxH)


_fused.defvjp(_fused_fwd, _fused_bwd)


def _lstm_scan(
    w_hh_Hx4H: jax.Array,
    carry: Carry,
    u: jax.Array,
    length: int,
    compute_dtype: jnp.dtype,
    unroll: int,
    return_sequences: bool,
    project: tuple[jax.Array, jax.Array] | None = None,
    fused_backward: bool = False,
) -> tuple[Carry, jax.Array | None]:
    """Runs the recurrence over ``u``, one of:

    * ``xp_TxBx4H``: the input projection of every step, hoisted by the caller;
    * ``xp_Bx4H``: one projection repeated at every step (the decoder's RepeatVector);
    * ``x_TxBxF`` with ``project=(w_ih, bias)``: the projection runs inside the step
      (the unhoisted layout; see `LSTM.hoist`).

    Gate and cell arithmetic stays in float32 whatever `compute_dtype` is; only the
    matmuls run in `compute_dtype`. ``fused_backward`` differentiates through
    `_fused_bwd` instead of `lax.scan`'s own transpose (same values, see `LSTM`).
    """
    w_in, bias_4H = project if project is not None else (None, jnp.zeros((), jnp.float32))
    if fused_backward:
        carry, h_TxBxH = _fused(w_hh_Hx4H, w_in, bias_4H, u, carry, length, compute_dtype, unroll)
        return carry, h_TxBxH if return_sequences else None
    emit = "h" if return_sequences else "none"
    carry, h_TxBxH, _ = _forward(
        w_hh_Hx4H, w_in, bias_4H, u, carry, length, compute_dtype, unroll, emit
    )
    return carry, h_TxBxH


class LSTM(nnx.Module):
    """One LSTM layer over ``x_BxTxF`` (batch-major), scanned over time.

    Args:
      in_features: F.
      hidden: H.
      rngs: parameter initialisation.
      unroll: `lax.scan` unroll factor (a speed knob only; results are identical).
      dtype: matmul operand dtype (None: `PARAM_DTYPE`, float32); gates, cell state and
        the accumulation stay float32, outputs are cast to `dtype`.
      hoist: project the inputs of all steps before the scan (one large matmul), or
        inside each step. None: hoist except on CPU, where XLA runs the per-step form
        faster; accelerators favour the one large matmul. Measured in
        `benchmarks/throughput.py` (variant ``flip_hoist``); see docs/results.md,
        "Performance".
      fused_backward: differentiate through `_fused_bwd` (a custom VJP: the reverse scan
        keeps only the dh/dc recurrence, and the weight gradients of all steps are large
        matmuls after it, as cuDNN does) instead of `lax.scan`'s own transpose. Same
        values (tests/model/test_lstm.py); on CPU it is no faster than autodiff with the
        default full unrolling, so autodiff stays the default (docs/results.md, "Performance").
    """

    def __init__(
        self,
        in_features: int,
        hidden: int,
        *,
        rngs: nnx.Rngs,
        unroll: int = 1,
        dtype: jnp.dtype | None = None,
        hoist: bool | None = None,
        fused_backward: bool = False,
    ):
        self.fused_backward = fused_backward
        self.in_features = in_features
        self.hidden = hidden
        self.unroll = unroll
        self.dtype = dtype
        self.hoist = jax.default_backend() != "cpu" if hoist is None else hoist
        H = hidden
        self.w_ih = nnx.Param(
            nnx.initializers.glorot_uniform()(rngs.params(), (in_features, 4 * H), PARAM_DTYPE)
        )
        self.w_hh = nnx.Param(nnx.initializers.orthogonal()(rngs.params(), (H, 4 * H), PARAM_DTYPE))
        bias_4H = jnp.zeros((4 * H,), PARAM_DTYPE).at[H : 2 * H].set(FORGET_BIAS)
        self.bias = nnx.Param(bias_4H)

    @classmethod
    def from_optimized_cell(
        cls,
        cell: nnx.OptimizedLSTMCell,
        *,
        unroll: int = 1,
        hoist: bool | None = None,
        fused_backward: bool = False,
    ) -> LSTM:
        """An `LSTM` computing what `nnx.RNN(cell)` computes (same gate order and layout).

        Only the default cell activations (sigmoid gates, tanh) and float32 parameters
        (`PARAM_DTYPE`) are representable.
        """
        if cell.gate_fn is not jax.nn.sigmoid or cell.activation_fn is not jnp.tanh:
            raise ValueError("only OptimizedLSTMCell with sigmoid gates and tanh is supported")
        if jnp.dtype(cell.param_dtype) != jnp.dtype(PARAM_DTYPE):
            raise ValueError(f"only float32 parameters are supported, got {cell.param_dtype}")
        layer = cls(
            cell.in_features,
            cell.hidden_features,
            rngs=nnx.Rngs(0),
            unroll=unroll,
            dtype=cell.dtype,
            hoist=hoist,
            fused_backward=fused_backward,
        )
        layer.w_ih[...] = cell.dense_i.kernel[...]
        layer.w_hh[...] = cell.dense_h.kernel[...]
        layer.bias[...] = cell.dense_h.bias[...]
        return layer

    def initial_carry(self, batch_size: int) -> Carry:
        """Zero `(c_BxH, h_BxH)` in float32."""
        zeros_BxH = jnp.zeros((batch_size, self.hidden), jnp.float32)
        return zeros_BxH, zeros_BxH

    def _carry_in(self, carry: Carry | None, batch_size: int) -> Carry:
        if carry is None:
            return self.initial_carry(batch_size)
        c_BxH, h_BxH = carry  # the scan keeps the carry in float32
        return c_BxH.astype(jnp.float32), h_BxH.astype(jnp.float32)

    def _compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(PARAM_DTYPE if self.dtype is None else self.dtype)

    def _finish(
        self, carry: Carry, h_TxBxH: jax.Array | None, return_sequences: bool
    ) -> tuple[Carry, jax.Array]:
        out_dtype = self._compute_dtype()
        if return_sequences:
            return carry, jnp.swapaxes(h_TxBxH, 0, 1).astype(out_dtype)
        return carry, carry[1].astype(out_dtype)

    def __call__(
        self, x_BxTxF: jax.Array, carry: Carry | None = None, *, return_sequences: bool = True
    ) -> tuple[Carry, jax.Array]:
        """Returns `(carry, y_BxTxH)`, or `(carry, h_BxH)` (last step) if not `return_sequences`."""
        if x_BxTxF.ndim != 3 or x_BxTxF.shape[-1] != self.in_features:
            raise ValueError(f"expected B x T x {self.in_features}, got {x_BxTxF.shape}")
        B, T, _ = x_BxTxF.shape
        cd = self._compute_dtype()
        bias_4H = self.bias[...].astype(jnp.float32)
        carry = self._carry_in(carry, B)
        if self.hoist:
            # One (B*T) x F matmul, batch-major (XLA lays a time-major einsum output out
            # slowly), then time-major so the scan slices its leading axis.
            xp_BxTx4H = _matmul("nf,fg->ng", x_BxTxF.reshape(B * T, -1), self.w_ih[...], cd)
            xp_TxBx4H = jnp.swapaxes((xp_BxTx4H + bias_4H).reshape(B, T, -1), 0, 1)
            carry, h_TxBxH = _lstm_scan(
                self.w_hh[...], carry, xp_TxBx4H, T, cd, self.unroll, return_sequences,
                fused_backward=self.fused_backward,
            )  # fmt: skip
        else:
            x_TxBxF = jnp.swapaxes(x_BxTxF, 0, 1)
            carry, h_TxBxH = _lstm_scan(
                self.w_hh[...], carry, x_TxBxF, T, cd, self.unroll, return_sequences,
                project=(self.w_ih[...], bias_4H), fused_backward=self.fused_backward,
            )  # fmt: skip
        return self._finish(carry, h_TxBxH, return_sequences)

    def repeat(
        self,
        z_BxF: jax.Array,
        num_steps: int,
        carry: Carry | None = None,
        *,
        return_sequences: bool = True,
    ) -> tuple[Carry, jax.Array]:
        """As `self(jnp.repeat(z_BxF[:, None], num_steps, 1))`, projecting `z_BxF` only once."""
        if z_BxF.ndim != 2 or z_BxF.shape[-1] != self.in_features:
            raise ValueError(f"expected B x {self.in_features}, got {z_BxF.shape}")
        cd = self._compute_dtype()
        bias_4H = self.bias[...].astype(jnp.float32)
        xp_Bx4H = _matmul("bf,fg->bg", z_BxF, self.w_ih[...], cd) + bias_4H
        carry = self._carry_in(carry, z_BxF.shape[0])
        carry, h_TxBxH = _lstm_scan(
            self.w_hh[...], carry, xp_Bx4H, num_steps, cd, self.unroll, return_sequences,
            fused_backward=self.fused_backward,
        )  # fmt: skip
        return self._finish(carry, h_TxBxH, return_sequences)
