"""The training loop: early stopping, checkpoints, exact resume, preemption.

``fit`` drives the pure steps of ``steps.py`` over a ``windows.Windowed`` dataset: it
dispatches step N before reading step N-1's metrics, validates every epoch, keeps the
best parameters, and saves the state together with the data position so that re-running
resumes exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from lstmae_jax import compiler, config, console
from lstmae_jax.config import Config
from lstmae_jax.data import windows
from lstmae_jax.detect import inference
from lstmae_jax.train import checkpoint, collective, monitor, sharding, steps

RESUME_MAY_CHANGE = config.resume_may_change()  # the rest must match the run resumed


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
    table: jax.Array | None = None  # the flow table on the devices (calibration reuses it)


def class_weights(counts_C: np.ndarray) -> tuple[float, ...]:
    """Inverse-frequency weights from the training windows' class counts, normalised so a
    balanced set gets all ones."""
    counts = np.asarray(counts_C, np.float64)
    w = np.where(counts > 0, counts.sum() / (len(counts) * np.maximum(counts, 1)), 0.0)
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
    on_epoch: Callable[[dict], None] | None = None,
) -> FitResult:
    """Trains on ``data``'s train windows, early-stops on its val windows.

    ``labels`` overrides the per-split targets (binary task, stage 1 ignores them).
    ``init`` edits the fresh model before training (stage 2 loads the encoder).
    Re-running with the same ``run_dir`` resumes from its latest checkpoint.
    ``max_steps`` stops after that many steps in total (tests use it to interrupt).
    ``mesh`` defaults to all devices. ``on_epoch`` gets each epoch's record (``end_epoch``'s
    metrics line plus the run's step count, last training loss, rate and ETA): the Python
    API's ``verbose`` line.

    SIGTERM (preemption) saves a checkpoint and returns with ``preempted=True`` instead
    of raising, so the process can exit cleanly; a caller that would go on to other work
    must check it. SIGINT (Ctrl-C) saves a checkpoint too, then raises
    ``console.Interrupted`` saying how to resume. Whatever else ends a run early, the
    checkpoint being written is finished first.

    The phases, in order: ``_Fit.__init__`` (set-up), ``resume``, ``run`` (the step loop,
    which calls ``end_epoch`` for validation, early stopping and the learning-rate
    plateau at each epoch end), ``finish``.
    """
    fit_ = _Fit(cfg, run_dir, data, labels, init, meta_extra, max_steps, mesh)
    fit_.on_epoch = on_epoch
    try:
        fit_.resume()
        fit_.run()
    except BaseException:  # the save in flight completes (not left as a temporary)
        with contextlib.suppress(Exception):
            fit_.ckpt.close()
        raise
    result = fit_.finish()
    if fit_.stopped_by and fit_.stopped_by.startswith("SIGINT"):
        raise console.Interrupted(
            f"{run_dir}: stopped by Ctrl-C (SIGINT) at step {result.steps}, checkpoint saved;"
            " run the same command (or fit) again to resume"
        )
    return result


def _pick_best(state: steps.TrainState, improved_K: jax.Array) -> steps.TrainState:
    """``best_params`` takes the current parameters of each network that improved: all of
    them for one network, member k's slice of every stacked leaf for K networks."""
    if improved_K.shape[0] == 1:
        return state.replace(best_params=jax.tree.map(jnp.copy, state.params))

    def pick(new, old):
        mask = improved_K.reshape((-1,) + (1,) * (new.ndim - 1))
        return jnp.where(mask, new, old)

    return state.replace(best_params=jax.tree.map(pick, state.params, state.best_params))


class _Fit:
    """One call of ``fit``: its state and its phases."""

    # ------------------------------------------------------------------ set-up

    def __init__(self, cfg, run_dir, data, labels, init, meta_extra, max_steps, mesh):
        self.cfg, self.run_dir, self.data, self.meta_extra = cfg, run_dir, data, meta_extra
        self.mesh = mesh = sharding.make_mesh() if mesh is None else mesh
        sharding.check_batch_size(cfg.batch_size, mesh)
        sharding.check_batch_size(cfg.eval_batch_size, mesh)
        self.labels = labels = labels if labels is not None else data.label
        self.num_classes = 2 if cfg.task == "binary" else len(data.classes)
        # --share_data: this process holds only its share of the windows (docs/training.md,
        # "Several hosts"); what all must agree on is summed over the processes.
        self.shared = cfg.share_data
        self.parts = jax.process_count() if self.shared else 1
        counts = np.bincount(labels["train"], minlength=self.num_classes)
        weights = class_weights(self._sum(counts)) if cfg.class_weights else ()
        self.task = task = steps.task_for(cfg, self.num_classes, weights)
        if len(data.scalers) < task.members:
            raise ValueError(
                f"stage 1 trains {task.members} networks ({', '.join(cfg.stage1_networks())}),"
                f" the data has {len(data.scalers)} scaler(s): build it with the config's"
                " representations (windows.for_config)"
            )
        self._validation_set()

        # The scaled width: the features, and the port categories' columns when there are.
        width = data.scalers[0].width
        model = steps.build_model(cfg, width, self.num_classes, nnx.Rngs(cfg.seed))
        if init is not None:
            init(model)
        trainable = steps.trainable_filter(cfg)
        tx = steps.optimizer(cfg)
        self.graphdef, state = steps.init_state(model, tx, trainable)
        repl = sharding.replicated(mesh)
        self.state = jax.device_put(state, repl)
        # aliased on CPU where it can; none when shared (each process cuts its windows)
        self.table = None if self.shared else sharding.put_table(data.x_NxF, mesh)
        # Each representation's scaler as arrays: the steps scale the windows on the device.
        self.scalers = [sc.arrays(np.float32) for sc in data.scalers]
        train_step = steps.make_train_step(self.graphdef, tx, task, trainable, self.scalers)
        self.train_jit = compiler.jit(train_step, donate_argnums=0)
        k = cfg.steps_per_call
        self.repeat_jit = (
            compiler.jit(steps.repeat_step(train_step, k), donate_argnums=0) if k > 1 else None
        )
        self.validation_loss = steps.ValidationLoss(task)
        self.pick_best = compiler.jit(_pick_best, donate_argnums=0)

        self.order = self._batch_order()
        self.early = {
            "best_val_loss": float("inf"),
            "best_val_losses": [float("inf")] * task.members,
            "bad_epochs": 0,
            "stopped": False,
        }
        self.history: list[dict] = []
        self.ckpt = checkpoint.Checkpointer(
            os.path.join(run_dir, checkpoint.DIRECTORY),
            save_every_steps=cfg.checkpoint_every_steps,
            keep=cfg.keep_checkpoints,
        )
        self.saved_steps: set[int] = set()  # filled by resume, once bad steps are moved aside
        self.resumed_from: int | None = None
        self.total = cfg.epochs * self.order.steps_per_epoch
        self.max_steps = max_steps
        if max_steps is not None:
            self.total = min(self.total, max_steps)
        self.preempted = False
        self.stopped_by: str | None = None  # the signal that stopped the step loop
        self.on_epoch: Callable[[dict], None] | None = None
        self.last_loss: float | None = None  # the last step's loss read back (``_drain``)

    def _each(self, value) -> list:
        """Every process's ``value`` (JSON-able) in a shared run; ``[value]`` otherwise."""
        return collective.allgather_json(value) if self.shared else [value]

    def _sum(self, x: np.ndarray) -> np.ndarray:
        """``x`` summed over the processes of a shared run (itself otherwise)."""
        return np.sum([np.asarray(v) for v in self._each(np.asarray(x).tolist())], axis=0)

    def _batch_order(self) -> windows.BatchOrder:
        """The global order of the training windows, or, shared, this process's order of
        its own, B/P per step, with the epoch cut to the steps every process can fill."""
        cfg, n = self.cfg, len(self.data.starts["train"])
        if not self.shared:
            return windows.BatchOrder(n, cfg.batch_size, seed=cfg.seed)
        part = cfg.batch_size // self.parts
        counts = self._each(n)
        if min(counts) < part:
            raise ValueError(
                f"--share_data: the processes hold {counts} training windows; each needs at"
                f" least its {part} of a batch of {cfg.batch_size}: lower --batch_size or"
                " use fewer processes"
            )
        return windows.BatchOrder(
            n,
            part,
            seed=cfg.seed,
            stream=jax.process_index(),
            max_steps_per_epoch=min(c // part for c in counts),
        )

    def _validation_set(self) -> None:
        cfg, data, labels = self.cfg, self.data, self.labels
        keep = np.ones(len(data.starts["val"]), dtype=bool)
        if self.task.kind == "reconstruct" and cfg.stage1_benign_only:
            keep = ~data.any_attack["val"]  # the score is trained on benign traffic only
        self.val_starts, self.val_labels = data.starts["val"][keep], labels["val"][keep]
        self.val_batch = cfg.eval_batch_size // self.parts
        counts = self._each(len(self.val_starts))
        self.val_batches = max(-(-c // self.val_batch) for c in counts)
        if sum(counts) == 0:  # early stopping and the best-parameter pick need them
            benign = " without attacks" if self.task.kind == "reconstruct" else ""
            raise ValueError(
                f"no validation windows{benign} (split_fractions={cfg.split_fractions},"
                f" window={cfg.window}, split={cfg.split}); give the validation split more"
                " data"
                + (
                    " (with many short files, --split=temporal splits the whole list instead"
                    " of each file)"
                    if cfg.split == "per_file"
                    else ""
                )
            )

    # ------------------------------------------------------------------ resume

    def resume(self) -> None:
        """Continues from the latest checkpoint, if any, after checking the config."""
        # The newest step that verifies; newer corrupt ones are moved aside (and so are
        # saved again when training passes them).
        self.resumed_from = step = self.ckpt.latest_step()
        self.saved_steps = set(self.ckpt.all_steps())
        if step is None:
            logging.info("starting %s from scratch", self.run_dir)
            return
        saved = self.ckpt.restore_meta(step)
        now = json.loads(json.dumps(self.cfg.to_json()))
        # Through Config: options added since the run was saved read as their defaults.
        was = json.loads(json.dumps(Config.from_json(saved["config"]).to_json()))
        # Stage 1's members mean nothing to a classifier: a stage 2 or baseline run made
        # before members existed resumes without --members=.
        ignored = RESUME_MAY_CHANGE if self.cfg.is_stage1 else {*RESUME_MAY_CHANGE, "members"}
        diff = {k: (was.get(k), v) for k, v in now.items() if k not in ignored and was.get(k) != v}
        if diff:
            hint = ""
            if {"scaler", "split"} & set(diff):  # their defaults changed (issue 15)
                hint = (
                    "; runs made before the stage-1 defaults changed resume with"
                    " --scaler=standard --split=temporal --score=zscore"
                )
            if "members" in diff and not diff["members"][0]:  # made before members
                hint += "; a run of one network (made before --members) resumes with --members="
            raise ValueError(
                f"{self.run_dir} holds a run with another config (saved, now): {diff};"
                f" use a new workdir{hint}"
            )
        self.state, meta = self.ckpt.restore(step, checkpoint.abstract(self.state))
        self.order.restore(meta["data_position"])
        self.early, self.history = meta["early_stopping"], meta["history"]
        self.early.setdefault("best_val_losses", [self.early["best_val_loss"]])
        # A larger --patience on resume extends a run that had stopped early.
        self.early["stopped"] = self.early["bad_epochs"] >= self.cfg.patience
        logging.info("resuming %s from step %d (epoch %d)", self.run_dir, step, self.order.epoch)

    def _meta(self) -> dict:
        return {
            "config": self.cfg.to_json(),
            "features": list(self.data.features),
            "classes": list(self.data.classes),
            "num_classes": self.num_classes,
            "task": self.task.kind,
            "scalers": [sc.to_json() for sc in self.data.scalers],
            "data_position": self.order.state(),
            # Copies: the async save serialises later, while the loop goes on mutating.
            "early_stopping": dict(self.early),
            "history": [dict(h) for h in self.history],
            **(self.meta_extra or {}),
        }

    def save(self, at: int, *, force: bool = False, metrics: dict | None = None) -> None:
        if not (force or self.ckpt.should_save(at)):  # the common case: no meta built per step
            return
        if self.ckpt.save(at, self.state, self._meta(), metrics=metrics, force=force):
            self.saved_steps.add(at)

    # ----------------------------------------------------------- the step loop

    def _host_batch(self, idx: np.ndarray, starts_W, label_W) -> dict:
        """Window indices idx_B (one batch) or idx_KxB (K stacked) -> the batch on the
        devices. Every process draws the same global indices (shared: its own part)."""
        b = {"starts": starts_W[idx].astype(np.int32), "label": label_W[idx].astype(np.int32)}
        return self._to_devices(b)

    def _to_devices(self, host_batch: dict) -> dict:
        """A global host batch -> this process's share of its batch axis (the last) on the
        devices: each process sends only its own rows. Shared: the host batch is already
        this process's part, and its windows are cut here from its share of the table."""
        axis = host_batch["starts"].ndim - 1
        if self.shared:
            starts = host_batch.pop("starts")
            x = windows.gather(self.data.x_NxF, starts.reshape(-1), self.cfg.window)
            host_batch["x"] = x.reshape(*starts.shape, *x.shape[1:])
            return sharding.to_global(host_batch, self.mesh, axis)
        rows = (..., sharding.process_slice(host_batch["starts"].shape[-1], self.mesh))
        return sharding.to_global({k: v[rows] for k, v in host_batch.items()}, self.mesh, axis)

    def _next_batches(self, num: int) -> dict:
        """The next ``num`` train batches, stacked on a leading axis when ``num`` > 1."""
        idx = self.order.next() if num == 1 else np.stack([self.order.next() for _ in range(num)])
        return self._host_batch(idx, self.data.starts["train"], self.labels["train"])

    def _call_size(self, step: int) -> int:
        """Steps in the next call: ``steps_per_call``, or 1 near a boundary (epoch end,
        step budget, checkpoint or log interval), so every boundary falls between calls."""
        k = self.cfg.steps_per_call
        if k == 1:
            return 1
        limits = (
            self.order.steps_per_epoch - self.order.step,
            self.total - step,
            self.cfg.checkpoint_every_steps - step % self.cfg.checkpoint_every_steps,
            self.cfg.log_every_steps - step % self.cfg.log_every_steps,
        )
        return k if min(limits) >= k else 1

    def _compile(self, fn, batch) -> object:
        # The steps already dispatched finish first: compiling while they run would take
        # their time out of the logged rate along with the compilation's.
        jax.block_until_ready(self.state)
        t0 = time.perf_counter()
        compiled = fn.lower(self.state, self.table, batch).compile()
        compile_s = time.perf_counter() - t0
        self.window_t0 += compile_s  # the logged rate counts steps, not compilation
        self.writer.write({"step": self.step, "compile_time_s": compile_s})
        logging.info("train step compiled in %.2fs", compile_s)
        return compiled

    def run(self) -> None:
        """Opens the metrics writer and the progress line, runs the steps (``_steps``)
        unless the run is already over, and closes both whatever happens."""
        self.step = step = int(jax.device_get(self.state.step))
        # The peak rate, kept here so that logging the rate never waits on the device;
        # ``end_epoch`` updates it when a plateau lowers it.
        self.peak_lr = steps.learning_rate(self.state.opt_state)
        events = (
            os.path.join(self.run_dir, monitor.TENSORBOARD_DIR) if self.cfg.tensorboard else None
        )
        self.writer = monitor.JsonlWriter(
            os.path.join(self.run_dir, monitor.METRICS_FILE), events, hparams=self.cfg.to_json()
        )
        # Steps logged after the checkpoint run again; so do those of a run killed before
        # its first checkpoint (step 0 here).
        self.writer.cut_after(step)
        # The total is the --epochs cap: early stopping may end sooner, so the ETA is a bound.
        self.progress = console.Progress(
            "steps", total=self.total, start=step, inplace=True, eta_bound=True
        )
        self.pending: list[tuple[int, int, dict]] = []  # (last step, steps, metrics)
        try:
            if step < self.total and not self.early["stopped"]:
                logging.info(
                    "training up to step %d (--epochs=%d); early stopping"
                    " (--patience=%d) usually ends it sooner: the ETA is an upper bound",
                    self.total,
                    self.cfg.epochs,
                    self.cfg.patience,
                )
                self._warn_if_warmup_outlasts_training()
                self._steps(step)
        finally:
            self.writer.close()
            self.progress.close()

    def _warn_if_warmup_outlasts_training(self) -> None:
        """A short run whose warm-up never ends trains at a fraction of --learning_rate:
        say so, or it is under-trained without a word."""
        cfg, total = self.cfg, self.total
        if cfg.warmup_steps < total:
            return
        reached = steps.effective_learning_rate(cfg.learning_rate, cfg.warmup_steps, total)
        logging.warning(
            "--warmup_steps=%d outlasts training (%d steps): the learning rate reaches only"
            " %.3g, %.0f%% of --learning_rate=%g; give e.g. --warmup_steps=%d (a tenth of the"
            " steps) or more --epochs",
            cfg.warmup_steps,
            total,
            reached,
            100 * reached / cfg.learning_rate,
            cfg.learning_rate,
            max(total // 10, 1),
        )

    def _steps(self, step: int) -> None:
        """Dispatches step N before reading step N-1's metrics (only every
        ``log_every_steps``), validates at each epoch end, saves on the checkpoint policy,
        and stops on early stopping, the step budget or SIGTERM. With ``steps_per_call``
        K > 1, one call runs K steps wherever no boundary falls inside them."""
        cfg = self.cfg
        compiled: dict[int, object] = {}  # steps per call -> executable, compiled on first use
        self.window_t0, self.window_steps = time.perf_counter(), 0
        # Kept for the whole run (once=False): a second signal must not kill the process
        # while it writes the checkpoint the first one asked for.
        with console.Stop((signal.SIGTERM, signal.SIGINT), once=False) as sigterm:
            while True:
                k = self._call_size(step)
                batch = self._next_batches(k)
                if k not in compiled:
                    compiled[k] = self._compile(
                        self.train_jit if k == 1 else self.repeat_jit, batch
                    )
                self.state, metrics = compiled[k](self.state, self.table, batch)  # step N ...
                step = self.step = step + k
                self.window_steps += k
                self.pending.append((step, k, metrics))
                epoch_end = self.order.step == 0
                if step % cfg.log_every_steps == 0 or epoch_end:
                    self._drain()  # ... step N's metrics are read only here
                if epoch_end:
                    self.end_epoch()
                else:
                    self.save(step)
                if stopping := self._stop_requested(sigterm, step, epoch_end):
                    self.stopped_by = stopping
                    logging.warning("%s received: saving a checkpoint and stopping", stopping)
                    self._drain()
                    if step not in self.saved_steps:
                        self.save(step, force=True)
                    self.preempted = True
                    break
                if self.early["stopped"] or step >= self.total:
                    break
            self._drain()

    def _stop_requested(self, sigterm: console.Stop, step: int, epoch_end: bool) -> str | None:
        """The signal that stops the run here, or None. One process: its own, at once.
        Several: the checkpoint is written by all of them together, so they stop at the
        same step; each tells the others its signal at the steps where metrics are read
        (the same on every process), and all stop there if any got one."""
        if jax.process_count() == 1:
            return sigterm.signal if sigterm else None
        if not (step % self.cfg.log_every_steps == 0 or epoch_end):
            return None
        got = collective.allgather_json(sigterm.signal if sigterm else None)
        named = [f"{sig} on process {p}" for p, sig in enumerate(got) if sig]
        if not named:
            return None
        return sigterm.signal if sigterm else named[0]

    def _drain(self) -> None:
        """Reads the pending steps' metrics: a non-finite loss stops; one log line."""
        if not self.pending:
            return
        got = jax.device_get([m for *_, m in self.pending])
        for (s, k, _), m in zip(self.pending, got, strict=True):
            loss_K = np.atleast_1d(m["loss"])  # K values from a K-step call
            bad = np.flatnonzero(~np.isfinite(loss_K))
            if len(bad):
                raise FloatingPointError(
                    f"non-finite loss {loss_K[bad[0]]} at step {s - k + 1 + bad[0]};"
                    f" stopping ({self.run_dir})"
                )
        dt = time.perf_counter() - self.window_t0
        s_last = self.pending[-1][0]
        m_last = {key: float(np.atleast_1d(v)[-1]) for key, v in got[-1].items()}
        rate = self.window_steps / dt if dt > 0 else 0.0
        self.writer.write(
            {
                "step": s_last,
                "epoch": self.order.epoch,
                "loss": m_last["loss"],
                "grad_norm": m_last["grad_norm"],
                "learning_rate": self._rate(s_last),
                "steps_per_s": rate,
                "windows_per_s": rate * self.cfg.batch_size,
                "step_time_ms": 1000.0 / rate if rate else None,
            }
        )
        self.progress.update(s_last, f"loss {m_last['loss']:.4g}")
        self.last_loss = m_last["loss"]
        self.pending.clear()
        self.window_t0, self.window_steps = time.perf_counter(), 0

    def _rate(self, step: int) -> float:
        """The learning rate the update making ``step`` applied (warm-up included)."""
        return steps.effective_learning_rate(self.peak_lr, self.cfg.warmup_steps, step)

    # ------------------------------------------------------------- epoch end

    def val_loss(self, params) -> np.ndarray:
        """The mean validation loss of each of the K networks (K = 1: the model's)."""
        outs = inference.batches(
            self.graphdef,
            (params, self.state.frozen, self.state.rest),
            self.validation_loss,
            self.table,
            self.val_starts,
            self.cfg.window,
            self.val_batch,
            label_W=self.val_labels,
            args=self.scalers,
            put=self._to_devices,
            num_batches=self.val_batches,
        )
        sums = jax.device_get([s for s, _ in outs])
        total_K = np.sum([np.asarray(s["loss_sum_K"], np.float64) for s in sums], axis=0)
        return total_K / max(sum(float(s["weight_sum"]) for s in sums), 1e-12)

    def end_epoch(self) -> None:
        """Validation, the best parameters, the LR plateau, early stopping, a checkpoint.

        ``val_loss`` is the K networks' mean (K = 1: the model's): the plateau and early
        stopping follow it, as one loss (the networks' summed losses) is trained; each
        network keeps the parameters of its own best epoch (a network improves when its
        own validation loss drops by ``min_delta``)."""
        cfg, early, step = self.cfg, self.early, self.step
        vl_K = self.val_loss(self.state.params)
        vl = float(np.mean(vl_K))
        lr = steps.learning_rate(self.state.opt_state)
        # Improvement must be relative (min_delta), or a loss creeping down by 1e-6 an
        # epoch would keep training to the epoch cap.
        improved = vl < early["best_val_loss"] * (1.0 - cfg.min_delta)
        best_K = np.asarray(early["best_val_losses"], np.float64)
        improved_K = vl_K < best_K * (1.0 - cfg.min_delta)
        if improved_K.any():
            self.state = self.pick_best(self.state, jnp.asarray(improved_K))
            early["best_val_losses"] = [float(v) for v in np.where(improved_K, vl_K, best_K)]
        # While the learning rate still warms up, an epoch without improvement says
        # nothing about convergence: counting it would cut the rate (and stop training)
        # before it ever reached its peak, which on a small training set (a few steps an
        # epoch) left the model at its initial weights.
        warming = step < cfg.warmup_steps
        if improved:
            early["best_val_loss"], early["bad_epochs"] = vl, 0
        elif not warming:
            early["bad_epochs"] += 1
            if early["bad_epochs"] % cfg.lr_patience == 0:  # a plateau: lower the LR
                opt_state = steps.set_learning_rate(self.state.opt_state, lr * cfg.lr_decay)
                self.state = self.state.replace(opt_state=opt_state)
                self.peak_lr = lr * cfg.lr_decay
        early["stopped"] = early["bad_epochs"] >= cfg.patience
        record = {
            "epoch": self.order.epoch,
            "step": step,
            "val_loss": vl,
            "best_val_loss": early["best_val_loss"],
            # The rate this epoch's last step applied, and its peak (before warm-up,
            # lowered on plateaus): both before this epoch's plateau, if any.
            "learning_rate": steps.effective_learning_rate(lr, cfg.warmup_steps, step),
            "peak_learning_rate": lr,
        }
        if len(vl_K) > 1:  # each network's, named by its representation
            for name, v in zip(cfg.stage1_networks(), vl_K, strict=True):
                record[f"val_loss_{name}"] = float(v)
        self.history.append(record)
        self.writer.write(record)
        best = " (best)" if improved else ""
        logging.info("epoch %d step %d val_loss %.6g%s", self.order.epoch, step, vl, best)
        self.save(step, force=True, metrics={"val_loss": vl})
        if self.on_epoch is not None:
            self.on_epoch(self._epoch_report(record, improved))

    def _epoch_report(self, record: dict, improved: bool) -> dict:
        """``record`` with what a one-line epoch report needs: the epoch cap, the step
        cap, the last training loss, and the progress line's rate (windows/s) and ETA (an
        upper bound: early stopping may end sooner)."""
        steps_per_s, eta = self.progress.estimate(self.step)
        return {
            **record,
            "epochs": self.cfg.epochs,
            "steps": self.total,
            "loss": self.last_loss,
            "improved": improved,
            "windows_per_s": steps_per_s * self.cfg.batch_size,
            "eta": eta,
        }

    # ------------------------------------------------------------------ finish

    def finish(self) -> FitResult:
        """The last checkpoint, the best parameters as a model, and how training ended."""
        cfg, early, step, state = self.cfg, self.early, self.step, self.state
        if step not in self.saved_steps:
            self.save(step, force=True)
        self.ckpt.close()
        # Early stopping restores the best parameters; before the first validation there
        # are none, and the latest parameters are the result.
        final = state.best_params if self.history else state.params
        best = nnx.merge(
            self.graphdef,
            jax.device_get(final),
            jax.device_get(state.frozen),
            jax.device_get(state.rest),
        )
        best.eval()
        if self.preempted:
            ended = f"preempted ({self.stopped_by}); re-run the same command to resume"
        elif early["stopped"]:
            ended = f"early stopping: {cfg.patience} epochs without validation improvement"
        elif self.max_steps is not None and step >= self.max_steps:
            ended = f"max_steps={self.max_steps} reached"
        else:
            ended = f"epoch cap: --epochs={cfg.epochs} reached before early stopping"
        return FitResult(
            best,
            self.history,
            early["best_val_loss"],
            step,
            self.resumed_from,
            self.preempted,
            bool(early["stopped"]),
            ended,
            self.table,
        )
