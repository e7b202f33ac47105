"""The matmul roofline the benchmarks report against: the reference LSTM-AE's matmul FLOPs
per window, and the machine's best float32 square matmul through XLA.

``throughput.py`` (training and scoring rows) and ``scoring.py`` (the scoring pass's
model) both divide a measured windows/s by ``sgemm_gflops * 1e9 / flops``. No absl flags
here, so either script can import it.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from lstmae_jax import compiler


def matmul_flops_per_window(window: int, f: int, enc: int, dec: int) -> dict:
    """Multiply-add FLOPs (2 per MAC) of the reference model, per window.

    Forward: encoder ``T (F + H1) 4 H1``, decoder input projected once ``H1 4 H2``,
    decoder recurrence ``T H2 4 H2``, output Dense ``T H2 F``. Training: each forward
    matmul costs two more in the backward pass (data and weight gradients), except that
    the encoder's input projection needs no data gradient (nothing upstream of x).
    """
    fwd = 2 * (
        window * (f + enc) * 4 * enc + enc * 4 * dec + window * dec * 4 * dec + window * dec * f
    )
    no_input_grad = 2 * window * f * 4 * enc
    return {"forward": fwd, "train": 3 * fwd - no_input_grad}


def sgemm_gflops(n: int, seconds: float) -> float:
    """GFLOP/s of the best ``n x n @ n x n`` float32 matmul, over three timings of about
    ``seconds`` each, with the project's compiler options and with XLA's defaults (on CPU
    the two use different dot libraries)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    best = 0.0
    for mm in (compiler.jit(lambda a, b: a @ b), jax.jit(lambda a, b: a @ b)):
        jax.block_until_ready(mm(a, b))
        for _ in range(3):
            calls, dt = 1, 0.0
            while dt < seconds:
                calls *= 2
                t0 = time.perf_counter()
                out = None
                for _ in range(calls):
                    out = mm(a, b)
                jax.block_until_ready(out)
                dt = time.perf_counter() - t0
            best = max(best, calls * 2 * n**3 / dt / 1e9)
    return best
