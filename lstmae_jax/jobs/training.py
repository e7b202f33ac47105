"""One training job from a config: load, window, fit, write a summary.

A workdir holds one experiment; each model gets its own run directory in it:
``stage1/`` (the LSTM-AE), ``stage2/`` (the latent classifier, which reads
``stage1/``'s encoder, scaler and feature list), ``dnn/``, ``cnn/``. Each run directory
records the fingerprints of its input files (``inputs.json``); ``loop.lock`` in the
workdir keeps a second trainer out while one runs.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable

import jax
import numpy as np
from absl import logging
from flax import nnx

from lstmae_jax import atomic, config
from lstmae_jax.config import Config
from lstmae_jax.data import dataset, inputs, windows
from lstmae_jax.detect import calibration
from lstmae_jax.train import checkpoint as checkpoint_lib
from lstmae_jax.train import lock, loop, steps

THRESHOLD_FILE = calibration.THRESHOLD_FILE


def run_name(cfg: Config) -> str:
    return f"stage{cfg.stage}" if cfg.model == "lstm_ae" else cfg.model


def load_run(run_dir: str, checkpoint: str = "best") -> tuple[nnx.Module, dict]:
    """A trained model of a finished or interrupted run, and its meta.

    ``checkpoint``: ``best`` (the best parameters so far, kept in the latest checkpoint),
    ``latest`` (the parameters of the latest checkpoint) or a step number (its parameters).
    """
    if checkpoint not in ("best", "latest") and not str(checkpoint).isdigit():
        raise ValueError(f"checkpoint must be best, latest or a step number, got {checkpoint!r}")
    step = int(checkpoint) if str(checkpoint).isdigit() else None
    if not os.path.isdir(os.path.join(run_dir, "checkpoints")):
        raise FileNotFoundError(f"no trained run in {run_dir} (no checkpoints/ there)")
    ckpt = checkpoint_lib.Checkpointer(
        os.path.join(run_dir, "checkpoints"), save_every_steps=1, keep=1
    )
    try:
        if step is not None and step not in ckpt.all_steps():
            raise FileNotFoundError(
                f"{run_dir}: no checkpoint at step {step}; kept steps: {ckpt.all_steps()}"
            )
        meta = ckpt.restore_meta(step)
        cfg = Config.from_json(meta["config"])
        model = steps.build_model(
            cfg, len(meta["features"]), meta["num_classes"], nnx.Rngs(cfg.seed)
        )
        graphdef, abstract = steps.init_state(
            model, steps.optimizer(cfg), steps.trainable_filter(cfg)
        )
        state, meta = ckpt.restore(step, checkpoint_lib.abstract(jax.device_put(abstract)))
    finally:
        ckpt.close()
    summary_path = os.path.join(run_dir, "summary.json")
    if step is None and os.path.exists(summary_path):
        with open(summary_path) as f:
            finished_at = json.load(f).get("steps")
        if finished_at is not None and int(state.step) < finished_at:
            # The latest step was corrupt and an older one was restored: its parameters are
            # not those the threshold and the summary were computed on.
            raise ValueError(
                f"{run_dir}: the run finished at step {finished_at} but the newest intact"
                f" checkpoint is step {int(state.step)}; re-run the same training command"
                " to recompute the lost steps (exactly) and recalibrate"
            )
    best = checkpoint == "best" and meta["history"]
    final = state.best_params if best else state.params
    model = nnx.merge(graphdef, final, state.frozen, state.rest)
    model.eval()
    threshold_path = os.path.join(run_dir, THRESHOLD_FILE)
    if os.path.exists(threshold_path):
        error_model, threshold = calibration.load(run_dir)
        if checkpoint == "best":  # other parameters are recalibrated by their users
            calibration.check_fitted_for(run_dir, int(state.step))
        meta["threshold"] = threshold.to_json()
        meta["error_model"] = error_model
    return model, meta


def stage1_encoder_init(stage1_dir: str) -> Callable[[nnx.Module], None]:
    """An ``init`` for ``loop.fit`` that copies a trained stage 1's encoder into stage 2."""
    ae, _ = load_run(stage1_dir)

    # An ensemble hands over its first member's encoder.
    encoder = nnx.state(ae.encoder) if hasattr(ae, "encoder") else ae.member_state(0)["encoder"]

    def init(model: nnx.Module) -> None:
        nnx.update(model.encoder, encoder)

    return init


def build_windows(
    cfg: Config, flows: dataset.Flows, *, scaler: dataset.Scaler | None = None
) -> windows.Windowed:
    """Windows, splits and scaling as ``cfg`` says (``scaler``: reuse a fitted one)."""
    return windows.build(
        flows,
        window=cfg.window,
        stride=cfg.stride,
        split=cfg.split,
        fractions=cfg.split_fractions,
        seed=cfg.seed,
        train_benign_only=cfg.model == "lstm_ae" and cfg.stage == 1 and cfg.stage1_benign_only,
        scaler=scaler,
        scaler_kind=cfg.scaler,
        scaler_clip=cfg.input_clip,
    )


def _has_checkpoints(run_dir: str) -> bool:
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    return os.path.isdir(ckpt_dir) and any(n.isdigit() for n in os.listdir(ckpt_dir))


def _check_inputs(cfg: Config, run_dir: str, stage1_dir: str | None) -> None:
    """Fingerprints ``cfg.data``: a resume (and a stage 2) on other data than the run
    (stage 1) was started on is refused unless ``cfg.allow_data_change``."""
    now = inputs.fingerprints(cfg.data)
    resuming = _has_checkpoints(run_dir)
    write = inputs.check_resume(run_dir, now, resuming=resuming, allow_change=cfg.allow_data_change)
    stage1_inputs = inputs.load(stage1_dir) if stage1_dir else None
    if stage1_inputs is not None and not cfg.allow_data_change:
        if diffs := inputs.differences(stage1_inputs, now):
            raise ValueError(
                f"stage 2's data is not what stage 1 in {stage1_dir} was trained on:"
                f" {inputs.summary(diffs)}; train stage 1 on it first (or pass"
                " --allow_data_change)"
            )
    if write and jax.process_index() == 0:  # one writer across hosts
        inputs.save(run_dir, now)


def _check_classes(name: str, label_W: np.ndarray, classes) -> None:
    """A classifier trained on one class reaches loss 0 and answers that class always."""
    found = [classes[c] for c in np.unique(label_W)]
    if len(found) < 2:
        raise ValueError(
            f"{name}: the training windows hold one class ({', '.join(map(repr, found))}) in"
            f" {len(label_W)} windows; a classifier needs at least 2 classes (give it data"
            " with benign and attack flows)"
        )


def train_job(cfg: Config, workdir: str) -> dict:
    """Trains the model named by ``cfg`` on ``cfg.data``; returns (and writes) a summary.

    Holds ``workdir``'s lock (process 0) for the whole job: one trainer per workdir."""
    if not cfg.data:
        raise ValueError("--data is required (a Parquet file, directory or glob)")
    held = lock.WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
    with held:
        return _train_job(cfg, workdir)


def _train_job(cfg: Config, workdir: str) -> dict:
    run_dir = os.path.join(workdir, run_name(cfg))
    stage1_dir = None
    scaler, init, meta_extra = None, None, {}
    features = cfg.features or None
    if cfg.model == "lstm_ae" and cfg.stage == 2:
        stage1_dir = os.path.join(workdir, "stage1")
        if not os.path.isdir(os.path.join(stage1_dir, "checkpoints")):
            raise FileNotFoundError(
                f"stage 2 needs a trained stage 1 in {stage1_dir}; run --stage=1 first"
            )
        if not os.path.exists(os.path.join(stage1_dir, THRESHOLD_FILE)):
            raise FileNotFoundError(
                f"stage 1 in {stage1_dir} did not finish (no {THRESHOLD_FILE}: preempted or"
                " interrupted); re-run --stage=1 with the same flags to resume it first"
            )
        s1 = checkpoint_lib.Checkpointer(
            os.path.join(stage1_dir, "checkpoints"), save_every_steps=1, keep=1
        )
        s1_meta = s1.restore_meta()
        s1.close()
        s1_cfg = Config.from_json(s1_meta["config"])
        # Same data, split and cleaning as stage 1, or stage 1's encoder and scaler would
        # have seen stage 2's validation and test rows.
        for key in config.stage2_from_stage1(cfg):
            if getattr(s1_cfg, key) != getattr(cfg, key):
                raise ValueError(
                    f"stage 2 --{key}={getattr(cfg, key)} differs from stage 1's {getattr(s1_cfg, key)}"
                )
        features = s1_meta["features"]
        scaler = dataset.Scaler.from_json(s1_meta["scaler"])
        init = stage1_encoder_init(stage1_dir)
        meta_extra["stage1_dir"] = os.path.abspath(stage1_dir)
    _check_inputs(cfg, run_dir, stage1_dir)
    flows = dataset.load_flows(
        cfg.data, features=features, nonfinite=cfg.nonfinite, negative=cfg.negative
    )
    logging.info(
        "loaded %d flows, %d features, classes %s", len(flows), len(flows.features), flows.classes
    )
    windowed = build_windows(cfg, flows, scaler=scaler)
    logging.info("windows: %s", json.dumps(windowed.summary()))
    os.makedirs(run_dir, exist_ok=True)
    labels = None
    if cfg.task == "binary":
        labels = {s: (v != 0).astype(np.int32) for s, v in windowed.label.items()}
    if not (cfg.model == "lstm_ae" and cfg.stage == 1):
        names = ("Benign", "Attack") if cfg.task == "binary" else windowed.classes
        _check_classes(run_name(cfg), (labels or windowed.label)["train"], names)
    meta_extra["data"] = windowed.summary()
    result = loop.fit(cfg, run_dir, windowed, labels=labels, init=init, meta_extra=meta_extra)
    threshold, score = None, None
    if cfg.model == "lstm_ae" and cfg.stage == 1 and not result.preempted:
        calibrated = calibration.calibrate(cfg, result.model, windowed, run_dir, result.steps)
        threshold, score = calibrated["threshold"], calibrated["error_model"].describe()
    summary = {
        "run_dir": run_dir,
        "model": run_name(cfg),
        "steps": result.steps,
        "best_val_loss": result.best_val_loss,
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        "ended": result.ended,
        "preempted": result.preempted,
        "resumed_from": result.resumed_from,
        "score": score,
        "threshold": threshold,
        "data": windowed.summary(),
    }
    if jax.process_index() == 0:  # one writer across hosts
        atomic.write_json(os.path.join(run_dir, "summary.json"), summary)
    return summary
