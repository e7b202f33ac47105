"""The XLA options every jitted function of the project compiles with, and `jit`.

On CPU, jaxlib 0.10 hands every matmul to YNNPACK (a "__ynn_fusion" per dot in the
optimised HLO). For this project's small matmuls (B x 77 @ 77 x 256, B x 64 @ 64 x 256,
ten steps per window) XLA's own dot emitter was faster on the 2-core Intel Xeon the
benchmarks ran on: the exported scorer's model went from 0.885x torch eager to 1.08x and
1.14x at B=512 (`benchmarks/scoring.py`, two runs), and from 0.85x to 0.95x at 4,096
(`benchmarks/throughput.py`); training moved within that machine's noise, and stage 1's
detection did not move (docs/results.md, "Performance"). Scratch runs on an AMD EPYC
found no difference. So on CPU `jit` compiles with YNNPACK's fusion off.

The choice changes matmul rounding (scores move by ~1e-7, relative), not what is
computed. Every jit of the project goes through `jit` (a test finds any other), so every
compiled computation of the project uses the same dot emitter. A user who sets
``--xla_cpu_experimental_ynn_fusion_type`` in ``XLA_FLAGS`` keeps theirs: `options` is
then empty. An XLA without the option (an older jaxlib) gets none either.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp

# DebugOptions field -> value: an empty list of library fusion types, i.e. no dot
# (or other op) is handed to YNNPACK.
CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def options() -> dict[str, Any]:
    """The compiler options for the default backend (cached for the process)."""
    if jax.default_backend() != "cpu":
        return {}
    if any(key in os.environ.get("XLA_FLAGS", "") for key in CPU_OPTIONS):
        return {}  # the user's XLA_FLAGS decide
    try:  # an XLA that does not know a field refuses the compilation
        jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS).lower(jnp.zeros(())).compile()
    except Exception:  # noqa: BLE001 - any refusal means: compile without them
        return {}
    return dict(CPU_OPTIONS)


def jit(fn, **kwargs):
    """`jax.jit` with `options()`; the same keyword arguments."""
    return jax.jit(fn, compiler_options=options() or None, **kwargs)
