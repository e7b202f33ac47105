"""The training loop: early stopping, checkpoints, exact resume, preemption.

``fit`` drives the pure steps of ``steps.py`` over a ``windows.Windowed`` dataset: it
dispatches step N before reading step N-1's metrics, validates every epoch, keeps the
best parameters, and saves the state together with the data position so that re-running
resumes exactly where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from lstmae_jax import checkpoint, monitor, sharding, steps, windows
from lstmae_jax.config import Config

# Options that do not change what is trained: a resume may change them (a new
# coordinator after preemption, another process id, more frequent logging; the score and
# threshold, which are fitted after training: re-running recalibrates them).
RESUME_IGNORES = frozenset(
    {
        "distributed", "coordinator_address", "num_processes", "process_id", "eval_batch_size",
        "log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
        "score", "ensemble_score", "threshold", "target_fpr", "threshold_quantile",
        "threshold_value",
    }
)  # fmt: skip


@dataclasses.dataclass
class FitResult:
    model: nnx.Module  # with the best parameters
    history: list[dict]
    best_val_loss: float
    steps: int
    resumed_from: int | None
    preempted: bool
    stopped_early: bool
    ended: str  # how training ended, in words (early stopping, epoch cap, ...)


def class_weights(label_W: np.ndarray, num_classes: int) -> tuple[float, ...]:
    """Inverse-frequency weights, normalised so a balanced set gets all ones."""
    counts = np.bincount(label_W, minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, len(label_W) / (num_classes * np.maximum(counts, 1)), 0.0)
    return tuple(float(v) for v in w)


def fit(
    cfg: Config,
    run_dir: str,
    data: windows.Windowed,
    *,
    labels: dict[str, np.ndarray] | None = None,
    init: Callable[[nnx.Module], None] | None = None,
    meta_extra: dict | None = None,
    max_steps: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> FitResult:
    """Trains on ``data``'s train windows, early-stops on its val windows.

    ``labels`` overrides the per-split targets (binary task, stage 1 ignores them).
    ``init`` edits the fresh model before training (stage 2 loads the encoder).
    Re-running with the same ``run_dir`` resumes from its latest checkpoint.
    ``max_steps`` stops after that many steps in total (tests use it to interrupt).
    ``mesh`` defaults to all devices.

    SIGTERM (preemption) saves a checkpoint and returns with ``preempted=True`` instead
    of raising, so the process can exit cleanly; a caller that would go on to other work
    must check it.
    """
    mesh = sharding.make_mesh() if mesh is None else mesh
    sharding.check_batch_size(cfg.batch_size, mesh)
    sharding.check_batch_size(cfg.eval_batch_size, mesh)
    labels = labels if labels is not None else data.label
    num_classes = 2 if cfg.task == "binary" else len(data.classes)
    weights = class_weights(labels["train"], num_classes) if cfg.class_weights else ()
    task = steps.task_for(cfg, num_classes, weights)

    val_keep = np.ones(len(data.starts["val"]), dtype=bool)
    if task.kind == "reconstruct" and cfg.stage1_benign_only:
        val_keep = ~data.any_attack["val"]  # the score is trained on benign traffic only
    val_starts, val_labels = data.starts["val"][val_keep], labels["val"][val_keep]
    if len(val_starts) == 0:  # early stopping and the best-parameter pick need them
        raise ValueError(
            f"no validation windows{' without attacks' if task.kind == 'reconstruct' else ''}"
            f" (split_fractions={cfg.split_fractions}, window={cfg.window}); give the"
            " validation split more data"
        )

    model = steps.build_model(cfg, len(data.features), num_classes, nnx.Rngs(cfg.seed))
    if init is not None:
        init(model)
    tx = steps.optimizer(cfg)
    graphdef, state = steps.init_state(model, tx, steps.trainable_filter(cfg))
    repl = sharding.replicated(mesh)
    state = jax.device_put(state, repl)
    table = jax.device_put(jnp.asarray(data.x_NxF), repl)

    order = windows.BatchOrder(len(data.starts["train"]), cfg.batch_size, seed=cfg.seed)
    early = {"best_val_loss": float("inf"), "bad_epochs": 0, "stopped": False}
    history: list[dict] = []
    ckpt = checkpoint.Checkpointer(
        os.path.join(run_dir, "checkpoints"),
        save_every_steps=cfg.checkpoint_every_steps,
        keep=cfg.keep_checkpoints,
    )
    resumed_from = ckpt.latest_step()
    if resumed_from is not None:
        saved = ckpt.restore_meta(resumed_from)
        now = json.loads(json.dumps(cfg.to_json()))
        diff = {
            k: (saved["config"].get(k), v)
            for k, v in now.items()
            if k not in RESUME_IGNORES and saved["config"].get(k) != v
        }
        if diff:
            raise ValueError(
                f"{run_dir} holds a run with another config (saved, now): {diff}; use a new workdir"
            )
        state, meta = ckpt.restore(resumed_from, checkpoint.abstract(state))
        order.restore(meta["data_position"])
        early, history = meta["early_stopping"], meta["history"]
        logging.info("resuming %s from step %d (epoch %d)", run_dir, resumed_from, order.epoch)
    else:
        logging.info("starting %s from scratch", run_dir)

    def meta() -> dict:
        return {
            "config": cfg.to_json(),
            "features": list(data.features),
            "classes": list(data.classes),
            "num_classes": num_classes,
            "task": task.kind,
            "scaler": data.scaler.to_json(),
            "data_position": order.state(),
            # Copies: the async save serialises later, while the loop goes on mutating.
            "early_stopping": dict(early),
            "history": [dict(h) for h in history],
            **(meta_extra or {}),
        }

    saved_steps: set[int] = set(ckpt.all_steps())

    def save(at: int, *, force: bool = False, metrics: dict | None = None) -> None:
        if not (force or ckpt.should_save(at)):  # the common case: no meta built per step
            return
        if ckpt.save(at, state, meta(), metrics=metrics, force=force):
            saved_steps.add(at)

    train_step, eval_step = steps.make_steps(graphdef, tx, task, steps.trainable_filter(cfg))
    train_jit = jax.jit(train_step, donate_argnums=0)
    eval_jit = jax.jit(eval_step)
    pick_best = jax.jit(
        lambda s: s.replace(best_params=jax.tree.map(jnp.copy, s.params)), donate_argnums=0
    )

    def host_batch(
        idx_B: np.ndarray, starts_W: np.ndarray, label_W: np.ndarray, valid=None
    ) -> dict:
        sl = sharding.process_slice(len(idx_B))
        b = {"starts": starts_W[idx_B].astype(np.int32), "label": label_W[idx_B].astype(np.int32)}
        if valid is not None:
            b["valid"] = valid.astype(np.float32)
        return sharding.to_global({k: v[sl] for k, v in b.items()}, mesh)

    def val_loss(params) -> float:
        if len(val_starts) == 0:
            return float("nan")
        sums = [
            eval_jit(state, table, host_batch(idx, val_starts, val_labels, valid), params)
            for idx, valid in windows.eval_batches(len(val_starts), cfg.eval_batch_size)
        ]
        sums = jax.device_get(sums)
        return float(
            sum(s["loss_sum"] for s in sums) / max(sum(s["weight_sum"] for s in sums), 1e-12)
        )

    total = cfg.epochs * order.steps_per_epoch
    if max_steps is not None:
        total = min(total, max_steps)
    step = int(jax.device_get(state.step))
    writer = monitor.JsonlWriter(os.path.join(run_dir, "metrics.jsonl"))
    progress = monitor.Progress(total, step, "steps")
    preempted = False
    first = (
        host_batch(order.next(), data.starts["train"], labels["train"])
        if step < total and not early["stopped"]
        else None
    )
    compiled = None
    if first is not None:
        t0 = time.perf_counter()
        compiled = train_jit.lower(state, table, first).compile()
        compile_s = time.perf_counter() - t0
        writer.write({"step": step, "compile_time_s": compile_s})
        logging.info("train step compiled in %.2fs", compile_s)
    pending: list[tuple[int, dict]] = []
    window_t0, window_steps = time.perf_counter(), 0

    def drain() -> None:
        nonlocal window_t0, window_steps
        if not pending:
            return
        got = jax.device_get([m for _, m in pending])
        for (s, _), m in zip(pending, got, strict=True):
            if not np.isfinite(m["loss"]):
                raise FloatingPointError(
                    f"non-finite loss {m['loss']} at step {s}; stopping ({run_dir})"
                )
        dt = time.perf_counter() - window_t0
        s_last, m_last = pending[-1][0], got[-1]
        rate = window_steps / dt if dt > 0 else 0.0
        writer.write(
            {
                "step": s_last,
                "epoch": order.epoch,
                "loss": float(m_last["loss"]),
                "grad_norm": float(m_last["grad_norm"]),
                "steps_per_s": rate,
                "windows_per_s": rate * cfg.batch_size,
                "step_time_ms": 1000.0 / rate if rate else None,
            }
        )
        progress.update(s_last, f"loss {float(m_last['loss']):.4g}")
        pending.clear()
        window_t0, window_steps = time.perf_counter(), 0

    with monitor.Preemption() as preemption:
        batch = first
        while batch is not None:
            state, metrics = compiled(state, table, batch)  # dispatch step N ...
            step += 1
            window_steps += 1
            pending.append((step, metrics))
            epoch_end = order.step == 0
            if step % cfg.log_every_steps == 0 or epoch_end:
                drain()  # ... read step N's metrics only every log_every_steps
            if epoch_end:
                drain()
                vl = val_loss(state.params)
                lr = steps.learning_rate(state.opt_state)
                # Improvement must be relative (min_delta), or a loss creeping down by
                # 1e-6 an epoch would keep training to the epoch cap.
                improved = vl < early["best_val_loss"] * (1.0 - cfg.min_delta)
                if improved:
                    state = pick_best(state)
                    early["best_val_loss"], early["bad_epochs"] = vl, 0
                else:
                    early["bad_epochs"] += 1
                    if early["bad_epochs"] % cfg.lr_patience == 0:  # a plateau: lower the LR
                        state = state.replace(
                            opt_state=steps.set_learning_rate(state.opt_state, lr * cfg.lr_decay)
                        )
                early["stopped"] = early["bad_epochs"] >= cfg.patience
                record = {
                    "epoch": order.epoch,
                    "step": step,
                    "val_loss": vl,
                    "best_val_loss": early["best_val_loss"],
                    "learning_rate": lr,
                }
                history.append(record)
                writer.write(record)
                logging.info(
                    "epoch %d step %d val_loss %.6g%s",
                    order.epoch,
                    step,
                    vl,
                    " (best)" if improved else "",
                )
                save(step, force=True, metrics={"val_loss": vl})
            else:
                save(step)
            if preemption.requested:
                drain()
                if step not in saved_steps:
                    save(step, force=True)
                preempted = True
                break
            if early["stopped"] or step >= total:
                break
            batch = host_batch(order.next(), data.starts["train"], labels["train"])
        drain()
    progress.close()
    if step not in saved_steps:
        save(step, force=True)
    ckpt.close()
    # Early stopping restores the best parameters; before the first validation there are
    # none, and the latest parameters are the result.
    final = state.best_params if history else state.params
    best = nnx.merge(
        graphdef, jax.device_get(final), jax.device_get(state.frozen), jax.device_get(state.rest)
    )
    best.eval()
    if preempted:
        ended = "preempted (SIGTERM); re-run the same command to resume"
    elif early["stopped"]:
        ended = f"early stopping: {cfg.patience} epochs without validation improvement"
    elif max_steps is not None and step >= max_steps:
        ended = f"max_steps={max_steps} reached"
    else:
        ended = f"epoch cap: --epochs={cfg.epochs} reached before early stopping"
    return FitResult(
        best,
        history,
        early["best_val_loss"],
        step,
        resumed_from,
        preempted,
        bool(early["stopped"]),
        ended,
    )
