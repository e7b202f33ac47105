"""What the processes of a ``--share_data`` run tell each other, on the host.

Each process holds only its share of the flows, so the numbers every process must agree
on (classes, row counts, scaler statistics, the error model's fitting windows, the
validation scores the threshold is chosen from) are gathered from all of them with
``multihost_utils.process_allgather`` (over the same channel as the gradients: NCCL,
Gloo, the TPU interconnect). Payloads are bytes, so float64 statistics travel exactly
(a jax array would be float32 without ``jax_enable_x64``). One process: no exchange.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils


def allgather_bytes(data: bytes) -> list[bytes]:
    """Every process's ``data``, in process order."""
    if jax.process_count() == 1:
        return [data]
    size = np.array([len(data)], np.int32)
    sizes = np.asarray(multihost_utils.process_allgather(size)).reshape(-1)
    buf = np.zeros(max(int(sizes.max()), 1), np.uint8)
    buf[: len(data)] = np.frombuffer(data, np.uint8)
    got = np.asarray(multihost_utils.process_allgather(buf))
    return [got[p, : sizes[p]].tobytes() for p in range(len(sizes))]


def allgather_json(obj) -> list:
    """Every process's ``obj`` (JSON-able), in process order."""
    return [json.loads(b) for b in allgather_bytes(json.dumps(obj).encode())]


def allgather_arrays(arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Every process's dict of numpy arrays (any dtype, exact), in process order."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return [
        dict(np.load(io.BytesIO(b), allow_pickle=False)) for b in allgather_bytes(buf.getvalue())
    ]


def concat(axis: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A function joining every process's array along ``axis``, in process order."""

    def gather(x: np.ndarray) -> np.ndarray:
        parts = [d["x"] for d in allgather_arrays({"x": np.asarray(x)})]
        return np.concatenate(parts, axis=axis)

    return gather
