"""Train state, pure jitted steps, and the loop (early stopping, resume, preemption).

The steps are pure functions of ``(state, table, batch)`` jitted once. The scaled flow
table lives on the devices (replicated; it is small: 2.8M CICIDS2017 flows x 78
features x 4 B = 0.9 GB), and a batch is only the first-row indices of its windows
(plus labels), so each step moves ``B`` integers host -> device and gathers the windows
on device.

Tasks: ``reconstruct`` (stage 1: mean squared error of the LSTM-AE) and ``classify``
(stage 2 and the DNN/CNN baselines: softmax cross-entropy, optional class weights).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx

from lstmae_jax import checkpoint, models, sharding, windows
from lstmae_jax.config import Config


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: nnx.State  # trainable parameters
    frozen: nnx.State  # parameters held fixed (stage 2 with a frozen encoder)
    rest: nnx.State  # other variables (dropout RNG state)
    opt_state: Any
    best_params: nnx.State  # early stopping restores these


@dataclasses.dataclass(frozen=True)
class Task:
    """What a run optimises; static for jit."""

    kind: str  # "reconstruct" or "classify"
    window: int
    members: int = 1  # ensemble size K (reconstruct only)
    num_classes: int = 0
    class_weight_C: tuple[float, ...] = ()


# --------------------------------------------------------------------------- model


def build_model(cfg: Config, num_features: int, num_classes: int, rngs: nnx.Rngs) -> nnx.Module:
    """The model named by ``cfg.model`` / ``cfg.stage``."""
    ae_cfg = models.LSTMAEConfig(
        num_features=num_features,
        window=cfg.window,
        encoder_sizes=cfg.encoder_sizes,
        decoder_sizes=cfg.decoder_sizes,
        unroll=cfg.unroll,
    )
    if cfg.model == "lstm_ae" and cfg.stage == 1:
        if cfg.ensemble > 1:
            return models.LSTMAEEnsemble(ae_cfg, cfg.ensemble, rngs=rngs)
        return models.LSTMAE(ae_cfg, rngs=rngs)
    if cfg.model == "lstm_ae" and cfg.stage == 2:
        head = models.LatentClassifierConfig(
            latent=cfg.encoder_sizes[-1],
            num_classes=num_classes,
            hidden=cfg.classifier_hidden,
            dropout=cfg.dropout,
        )
        return models.Stage2Model(
            models.Encoder(ae_cfg, rngs=rngs), models.LatentClassifier(head, rngs=rngs)
        )
    if cfg.model == "dnn":
        return models.DNN(
            models.DNNConfig(num_features, cfg.window, num_classes, dropout=cfg.dropout), rngs=rngs
        )
    if cfg.model == "cnn":
        return models.CNN(
            models.CNNConfig(num_features, cfg.window, num_classes, dropout=cfg.dropout), rngs=rngs
        )
    raise ValueError(f"unknown model {cfg.model!r} / stage {cfg.stage}")


def task_for(cfg: Config, num_classes: int, class_weight_C: tuple[float, ...] = ()) -> Task:
    if cfg.model == "lstm_ae" and cfg.stage == 1:
        return Task("reconstruct", cfg.window, members=cfg.ensemble)
    return Task("classify", cfg.window, num_classes, class_weight_C)


def trainable_filter(cfg: Config) -> Any:
    """Which parameters get gradients: all, or all but the encoder (frozen stage 2)."""
    if cfg.model == "lstm_ae" and cfg.stage == 2:
        return models.trainable_params(cfg.freeze_encoder)
    return nnx.Param


# --------------------------------------------------------------------------- steps


def _global_norm(tree: Any) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(tree)))


def _gather(table_NxF: jax.Array, starts_B: jax.Array, window: int) -> jax.Array:
    return table_NxF[starts_B[:, None] + jnp.arange(window)]


def per_window_loss(model: nnx.Module, x_BxTxF: jax.Array, y_B: jax.Array, task: Task):
    """(loss_B, weight_B): per-window loss and its weight in the batch mean.

    Reconstruction: mean squared error over T and F (an ensemble's K x B x T x F output:
    also the mean over members).
    """
    if task.kind == "reconstruct":
        xhat = model(x_BxTxF)
        axes = (1, 2) if xhat.ndim == 3 else (0, 2, 3)
        return jnp.mean((xhat - x_BxTxF) ** 2, axis=axes), jnp.ones(y_B.shape, jnp.float32)
    logits_BxC = model(x_BxTxF)
    loss_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxC, y_B)
    weight_B = (
        jnp.asarray(task.class_weight_C, jnp.float32)[y_B]
        if task.class_weight_C
        else jnp.ones_like(loss_B)
    )
    return loss_B, weight_B


def make_steps(
    graphdef: nnx.GraphDef, tx: optax.GradientTransformation, task: Task, trainable: Any
):
    """Pure ``train_step(state, table, batch)`` and ``eval_step(state, table, batch, params)``.

    The model is rebuilt from its state inside the step (``nnx.merge``) and differentiated
    with ``nnx.value_and_grad`` w.r.t. the ``trainable`` parameters only, which also
    carries the dropout RNG updates out of the gradient trace.
    """

    def train_step(state: TrainState, table_NxF: jax.Array, batch: dict) -> tuple[TrainState, dict]:
        model = nnx.merge(graphdef, state.params, state.frozen, state.rest)
        model.train()
        x_BxTxF = _gather(table_NxF, batch["starts"], task.window)

        def loss_fn(model):
            loss_B, weight_B = per_window_loss(model, x_BxTxF, batch["label"], task)
            # x K: the members' losses summed, so each member's gradient is its own.
            return task.members * jnp.sum(loss_B * weight_B) / jnp.sum(weight_B)

        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, trainable))(model)
        _, _, _, rest = nnx.split(model, trainable, nnx.Param, ...)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = state.replace(step=state.step + 1, params=params, rest=rest, opt_state=opt_state)
        return new, {"loss": loss / task.members, "grad_norm": _global_norm(grads)}

    def eval_step(state: TrainState, table_NxF: jax.Array, batch: dict, params: nnx.State) -> dict:
        model = nnx.merge(graphdef, params, state.frozen, state.rest)
        model.eval()
        x_BxTxF = _gather(table_NxF, batch["starts"], task.window)
        loss_B, weight_B = per_window_loss(model, x_BxTxF, batch["label"], task)
        w_B = weight_B * batch["valid"]
        return {"loss_sum": jnp.sum(loss_B * w_B), "weight_sum": jnp.sum(w_B)}

    return train_step, eval_step


# ---------------------------------------------------------------------------- loop


class _Preemption:
    """SIGTERM sets a flag; the loop saves a checkpoint and returns cleanly."""

    def __init__(self) -> None:
        self.requested = False
        self._old = None

    def __enter__(self) -> _Preemption:
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, no preemption support
            self._old = None
        return self

    def _handle(self, signum, frame) -> None:
        logging.warning("SIGTERM received: saving a checkpoint and stopping")
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


class _Progress:
    """A progress line with rate and ETA on a terminal; periodic log lines elsewhere."""

    def __init__(self, total: int, start: int, unit: str) -> None:
        self.total, self.start, self.unit = total, start, unit
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def update(self, step: int, extra: str = "") -> None:
        done = step - self.start
        elapsed = time.perf_counter() - self.t0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        line = f"step {step}/{self.total} {rate:.1f} {self.unit}/s ETA {eta:.0f}s {extra}"
        if self.tty:
            sys.stderr.write("\r" + line + " " * 8)
            sys.stderr.flush()
        else:
            logging.info(line)

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


class _Jsonl:
    """The one metrics writer: JSON lines, written by process 0 only."""

    def __init__(self, path: str) -> None:
        self.enabled = jax.process_index() == 0
        self.path = path
        if self.enabled:
            os.makedirs(os.path.dirname(path), exist_ok=True)

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


@dataclasses.dataclass
class FitResult:
    model: nnx.Module  # with the best parameters
    history: list[dict]
    best_val_loss: float
    steps: int
    resumed_from: int | None
    preempted: bool
    stopped_early: bool


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
    """
    mesh = sharding.make_mesh() if mesh is None else mesh
    sharding.check_batch_size(cfg.batch_size, mesh)
    sharding.check_batch_size(cfg.eval_batch_size, mesh)
    labels = labels if labels is not None else data.label
    num_classes = 2 if cfg.task == "binary" else len(data.classes)
    weights = class_weights(labels["train"], num_classes) if cfg.class_weights else ()
    task = task_for(cfg, num_classes, weights)

    val_keep = np.ones(len(data.starts["val"]), dtype=bool)
    if task.kind == "reconstruct" and cfg.stage1_benign_only:
        val_keep = ~data.any_attack["val"]  # the score is trained on benign traffic only
    val_starts, val_labels = data.starts["val"][val_keep], labels["val"][val_keep]

    model = build_model(cfg, len(data.features), num_classes, nnx.Rngs(cfg.seed))
    if init is not None:
        init(model)
    graphdef, params, frozen, rest = nnx.split(model, trainable_filter(cfg), nnx.Param, ...)
    tx = optax.adam(cfg.learning_rate)
    repl = sharding.replicated(mesh)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        frozen=frozen,
        rest=rest,
        opt_state=tx.init(params),
        best_params=jax.tree.map(jnp.copy, params),  # own buffers: the state is donated
    )
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
        if saved["config"] != json.loads(json.dumps(cfg.to_json())):
            diff = {
                k: (saved["config"].get(k), v)
                for k, v in cfg.to_json().items()
                if saved["config"].get(k) != v
            }
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
            "early_stopping": early,
            "history": history,
            **(meta_extra or {}),
        }

    saved_steps: set[int] = set(ckpt.all_steps())

    def save(at: int, *, force: bool = False, metrics: dict | None = None) -> None:
        if ckpt.save(at, state, meta(), metrics=metrics, force=force):
            saved_steps.add(at)

    train_step, eval_step = make_steps(graphdef, tx, task, trainable_filter(cfg))
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
    writer = _Jsonl(os.path.join(run_dir, "metrics.jsonl"))
    progress = _Progress(total, step, "steps")
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

    with _Preemption() as preemption:
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
                improved = vl < early["best_val_loss"]
                if improved:
                    state = pick_best(state)
                    early["best_val_loss"], early["bad_epochs"] = vl, 0
                else:
                    early["bad_epochs"] += 1
                early["stopped"] = early["bad_epochs"] >= cfg.patience
                record = {
                    "epoch": order.epoch,
                    "step": step,
                    "val_loss": vl,
                    "best_val_loss": early["best_val_loss"],
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
    return FitResult(
        best, history, early["best_val_loss"], step, resumed_from, preempted, bool(early["stopped"])
    )
