"""A workdir and its run directories: the layout, loading a run, whether a run finished.

A workdir holds one experiment; each model gets its own run directory in it, named by
``run_name``: ``stage1/`` (the LSTM-AE), ``stage2/`` (the latent classifier, which reads
``stage1/``'s encoder, scaler and feature list), ``dnn/``, ``cnn/``. ``train.lock`` in the
workdir (``lock.FILE``) keeps a second trainer out while one runs. A run directory holds

* ``checkpoints/`` (``checkpoint.DIRECTORY``): the Orbax steps, state and meta together;
* ``metrics.jsonl`` (``monitor.METRICS_FILE``): the training and validation records;
* with ``--tensorboard``, ``tensorboard/`` (``monitor.TENSORBOARD_DIR``): the same records
  as TensorBoard event files, the config as hyperparameters, and (stage 1) the calibrated
  threshold and the evaluation's AUCs;
* ``inputs.json`` (``inputs.FILE``): the fingerprint of each input file;
* ``config.json`` (``CONFIG``): the options of the latest training command (each
  checkpoint holds its own copy, which is what a resume and the loaders read);
* ``summary.json`` (``SUMMARY``): how training ended, the training job's last write;
* stage 1 only: ``error_model.json`` and ``threshold.json`` (``calibration``), fitted
  after training, each recording the checkpoint step it was fitted for.

Finished: ``unfinished`` is the one check, for stage 2's training, evaluation and export
(the evaluation report shows ``summary.json`` as it is). Stage 1 finished when its
calibration is there, what its users need (a finished run extended and then preempted
keeps the calibration of its older step, which ``load_run`` refuses, naming both steps);
any other run when its ``summary.json`` says it was not preempted.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
from flax import nnx

from lstmae_jax import atomic
from lstmae_jax.config import Config
from lstmae_jax.data import dataset
from lstmae_jax.detect import calibration
from lstmae_jax.train import checkpoint as checkpoint_lib
from lstmae_jax.train import steps

STAGE1, STAGE2 = "stage1", "stage2"
RUNS = (STAGE1, STAGE2, "dnn", "cnn")  # every run name, in report order
CLASSIFIERS = RUNS[1:]  # the runs scored by their logits
SUMMARY = "summary.json"
CONFIG = "config.json"
NOT_TRAINED = f"no {checkpoint_lib.DIRECTORY}/"  # an ``unfinished`` reason


def run_name(cfg: Config) -> str:
    return f"stage{cfg.stage}" if cfg.model == "lstm_ae" else cfg.model


def path(workdir: str, name: str) -> str:
    return os.path.join(workdir, name)


def checkpoints(run_dir: str) -> str:
    return os.path.join(run_dir, checkpoint_lib.DIRECTORY)


def trained(run_dir: str) -> bool:
    """Training started there (it has a checkpoints directory)."""
    return os.path.isdir(checkpoints(run_dir))


def summary(run_dir: str) -> dict | None:
    """The run's ``summary.json``, or None: training never ended (interrupted)."""
    return atomic.read_json(os.path.join(run_dir, SUMMARY))


def unfinished(workdir: str, name: str) -> str | None:
    """Why run ``name`` of ``workdir`` did not finish (``NOT_TRAINED``, ``no
    threshold.json``, ``no summary.json``, ``preempted``), or None when it did."""
    run_dir = path(workdir, name)
    if not trained(run_dir):
        return NOT_TRAINED
    if name == STAGE1:
        exists = os.path.exists(os.path.join(run_dir, calibration.THRESHOLD_FILE))
        return None if exists else f"no {calibration.THRESHOLD_FILE}"
    ended = summary(run_dir)
    if ended is None:
        return f"no {SUMMARY}"
    return "preempted" if ended["preempted"] else None


def scalers(meta: dict) -> tuple[dataset.Scaler, ...]:
    """A run's scalers, one per representation (its networks' first), from its meta; a
    run saved before representations were several has one (``scaler``)."""
    records = meta["scalers"] if "scalers" in meta else [meta["scaler"]]
    return tuple(dataset.Scaler.from_json(r) for r in records)


def latest_meta(run_dir: str) -> dict:
    """The meta (config, features, scaler, ...) of the run's latest checkpoint."""
    ckpt = checkpoint_lib.Checkpointer(checkpoints(run_dir), save_every_steps=1, keep=1)
    try:
        return ckpt.restore_meta()
    finally:
        ckpt.close()


def load_run(run_dir: str, checkpoint: str = "best") -> tuple[nnx.Module, dict]:
    """A trained model of a finished or interrupted run, and its meta.

    ``checkpoint``: ``best`` (the best parameters so far, kept in the latest checkpoint),
    ``latest`` (the parameters of the latest checkpoint) or a step number (its parameters).
    """
    if checkpoint not in ("best", "latest") and not str(checkpoint).isdigit():
        raise ValueError(f"checkpoint must be best, latest or a step number, got {checkpoint!r}")
    step = int(checkpoint) if str(checkpoint).isdigit() else None
    if not trained(run_dir):
        raise FileNotFoundError(f"no trained run in {run_dir} ({NOT_TRAINED} there)")
    ckpt = checkpoint_lib.Checkpointer(checkpoints(run_dir), save_every_steps=1, keep=1)
    try:
        if step is not None and step not in ckpt.all_steps():
            raise FileNotFoundError(
                f"{run_dir}: no checkpoint at step {step}; kept steps: {ckpt.all_steps()}"
            )
        meta = ckpt.restore_meta(step)
        cfg = Config.from_json(meta["config"])
        model = steps.build_model(
            cfg, scalers(meta)[0].width, meta["num_classes"], nnx.Rngs(cfg.seed)
        )
        graphdef, abstract = steps.init_state(
            model, steps.optimizer(cfg), steps.trainable_filter(cfg)
        )
        state, meta = ckpt.restore(step, checkpoint_lib.abstract(jax.device_put(abstract)))
    finally:
        ckpt.close()
    ended = summary(run_dir) if step is None else None
    finished_at = ended.get("steps") if ended is not None else None
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
    if os.path.exists(os.path.join(run_dir, calibration.THRESHOLD_FILE)):
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
