"""Orbax checkpoints, current API, in one module.

A checkpoint holds two items: ``state`` (the train-state pytree: parameters, optimizer
state, the best parameters so far, RNG key, step) and ``meta`` (JSON: config, feature
list, classes, scaler, data-iterator position, early-stopping counters, history). Saving
both together is what makes a resume exact.

Policies: save every ``save_every_steps`` (plus forced saves at epoch ends and on
preemption), keep the latest ``keep`` checkpoints and the one with the best validation
loss. Saves are asynchronous; ``close`` waits for them.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from orbax.checkpoint import checkpoint_managers as cm


class _QuietOrbax(logging.Filter):
    """Drops Orbax's INFO chatter (a dozen lines per save); its warnings still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "orbax" not in record.pathname


_QUIET = _QuietOrbax()


def _quiet_orbax() -> None:
    for handler in absl_logging.get_absl_logger().handlers + [absl_logging.get_absl_handler()]:
        if _QUIET not in handler.filters:
            handler.addFilter(_QUIET)


def _val_loss(metrics: dict) -> float:
    return float(metrics["val_loss"])


class Checkpointer:
    """A thin wrapper around ``ocp.CheckpointManager`` for one training run."""

    def __init__(
        self, directory: str, *, save_every_steps: int, keep: int, async_save: bool = True
    ):
        _quiet_orbax()
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=cm.FixedIntervalPolicy(save_every_steps),
            # reverse=True: sorted by val_loss descending, BestN keeps the tail (lowest).
            preservation_policy=cm.AnyPreservationPolicy(
                [
                    cm.LatestN(keep),
                    cm.BestN(
                        get_metric_fn=_val_loss,
                        reverse=True,
                        n=1,
                        keep_checkpoints_without_metrics=False,
                    ),
                ]
            ),
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def should_save(self, step: int) -> bool:
        """Whether the interval policy saves at ``step`` (cheap; no I/O)."""
        return self._manager.should_save(step)

    def save(
        self, step: int, state: Any, meta: dict, *, metrics: dict | None = None, force: bool = False
    ) -> bool:
        """Saves (asynchronously) if the policy says so or ``force``; True if it did."""
        return self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            metrics=metrics,
            force=force,
        )

    def restore(self, step: int | None, abstract_state: Any) -> tuple[Any, dict]:
        """Restores ``step`` (None: latest) into the shapes and shardings of ``abstract_state``."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], restored["meta"]

    def restore_meta(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
            "meta"
        ]

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def abstract(tree: Any) -> Any:
    """Shapes, dtypes and shardings of a pytree of arrays, for restoring into."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree,
    )
