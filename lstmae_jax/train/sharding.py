"""The 1-D ``data`` mesh, shardings, and the one host -> device function.

Data parallelism the current way (pmap is in maintenance mode): ``jit`` with
``NamedSharding``. Parameters and optimizer state are replicated, the batch axis is
split over the ``data`` axis, and because the loss is a mean over the *global* batch,
XLA inserts the gradient all-reduce that pmap's ``lax.pmean`` made explicit: every
device runs the same program on its slice and the gradients are averaged.

Multi-host: every process holds the whole flow table, draws the same global batch
order, and feeds only its own rows (``process_slice``);
``jax.make_array_from_process_local_data`` assembles the global array. With
``--share_data`` a process holds only its share and feeds its part of each batch cut from
it (``train/loop.py``), through the same ``to_global``. ``make_mesh``
lists each process's devices next to each other, so those rows are one contiguous slice.
"""

from __future__ import annotations

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lstmae_jax.data import dataset
from lstmae_jax.train import peers

AXIS = "data"


def maybe_initialize_distributed(
    enabled: bool, coordinator_address: str = "", num_processes: int = 0, process_id: int = -1
) -> None:
    """Calls ``jax.distributed.initialize`` when asked (auto-detects on TPU/SLURM clusters)."""
    if not enabled:
        return
    kwargs = {}
    if coordinator_address:
        kwargs["coordinator_address"] = coordinator_address
    if num_processes > 0:
        kwargs["num_processes"] = num_processes
    if process_id >= 0:
        kwargs["process_id"] = process_id
    jax.distributed.initialize(**kwargs)
    peers.watch()  # a lost process ends the others at once


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh named ``data`` over ``devices``, by default all devices of all processes
    ordered by (process, id).

    The order puts each process's devices next to each other, so a process's rows of the
    batch are one slice (``process_slice``); nothing promises that device ids alone are
    grouped by host. The gradient all-reduce spans all devices in any order.
    """
    if devices is None:
        devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Split along ``batch_axis`` (1 for K stacked batches, K x B), the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(*([None] * batch_axis), AXIS))


def check_batch_size(global_batch: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if global_batch % n:
        raise ValueError(
            f"global batch size {global_batch} does not split evenly over {n} devices; "
            f"use a multiple of {n}"
        )


def process_slice(global_batch: int, mesh: Mesh) -> slice:
    """This process's rows of a global batch split over ``mesh`` (all of it on one host).

    The rows of the mesh positions that hold this process's devices: what
    ``jax.make_array_from_process_local_data`` expects this process to pass.
    """
    devices = list(mesh.devices.flat)
    mine = [i for i, d in enumerate(devices) if d.process_index == jax.process_index()]
    if not mine:
        raise ValueError(f"process {jax.process_index()} has no device in the mesh")
    if mine != list(range(mine[0], mine[0] + len(mine))):
        raise ValueError(
            f"process {jax.process_index()}'s devices are not next to each other in the mesh"
            f" (positions {mine}); build it with sharding.make_mesh()"
        )
    per = global_batch // len(devices)
    return slice(mine[0] * per, (mine[-1] + 1) * per)


def put_table(x_NxF, mesh: Mesh) -> jax.Array:
    """The scaled flow table on the devices of ``mesh``, replicated, once; a jax array is
    returned as it is. (The default device: ``inference.on_device``.)

    ``jax.device_put`` of a C-contiguous float32 numpy array that starts on a 64-byte
    boundary (``dataset.aligned_empty``, as ``load_flows`` and ``Scaler.transform``
    allocate it) can alias the host buffer on CPU instead of copying it, so a table the
    size of the host memory is held once. Never write to ``x_NxF`` after putting it.
    (``jnp.asarray`` would always copy.)"""
    if isinstance(x_NxF, jax.Array):
        return x_NxF
    return jax.device_put(dataset.as_aligned(x_NxF), replicated(mesh))


def to_global(
    host_batch: dict[str, np.ndarray], mesh: Mesh, batch_axis: int = 0
) -> dict[str, jax.Array]:
    """Moves a process-local host batch to devices, split along the batch axis.

    The only host -> device transfer of the training loop (besides the table, once).
    """
    sharding = batch_sharded(mesh, batch_axis)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in host_batch.items()}


def log_devices(mesh: Mesh) -> None:
    logging.info(
        "process %d/%d, %d local / %d global devices (%s), mesh %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.devices()[0].platform,
        dict(mesh.shape),
    )
