"""What a trained stage 1 needs besides its weights: the error model and the threshold.

Shared by the jobs (``run`` calibrates after training; ``evaluate``, ``export`` and the
benchmark score with the result), so no job imports another. The split of the benign
data is deliberate:

* the error model (``anomaly.fit``) is fitted on the error vectors of **benign training
  windows** (at most ``ERROR_MODEL_WINDOWS``, evenly spaced in time);
* the threshold is chosen on the scores of **benign validation windows**, which the
  error model never saw, so the calibrated false-positive rate is an out-of-sample one.

No test window touches either.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from absl import logging
from flax import nnx

from lstmae_jax import atomic
from lstmae_jax.config import Config
from lstmae_jax.data import windows
from lstmae_jax.detect import anomaly, inference, metrics

ERROR_MODEL_FILE = "error_model.json"
THRESHOLD_FILE = "threshold.json"
ERROR_MODEL_WINDOWS = 100_000  # enough for an F x F covariance, bounded fitting time
# Key in both files: {"checkpoint": "best", "step": N}, the parameters they were fitted
# for. An extended run that stops early holds newer best parameters in a later step;
# pairing those with this calibration flagged 75% of benign windows (issue 16).
FITTED_FOR = "fitted_for"


def threshold_from_scores(cfg: Config, benign_scores: np.ndarray) -> metrics.Threshold:
    """The stage-1 threshold chosen by ``cfg.threshold`` from benign validation scores."""
    if cfg.threshold == "fixed":
        return metrics.calibrate(
            "fixed", benign_scores if len(benign_scores) else None, value=cfg.threshold_value
        )
    if len(benign_scores) == 0:
        raise ValueError(
            f"threshold={cfg.threshold} needs benign validation windows; there are none"
        )
    if cfg.threshold == "fpr":
        return metrics.calibrate("fpr", benign_scores, target_fpr=cfg.target_fpr)
    if cfg.threshold == "quantile":
        return metrics.calibrate("quantile", benign_scores, q=cfg.threshold_quantile)
    raise ValueError(f"threshold must be fpr, quantile or fixed, got {cfg.threshold!r}")


def spread(starts_W: np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` of ``starts_W``, evenly spaced (deterministic, keeps time order)."""
    if len(starts_W) <= limit:
        return starts_W
    return starts_W[np.linspace(0, len(starts_W) - 1, limit).round().astype(np.int64)]


def fit_error_model(
    cfg: Config, model: nnx.Module, windowed: windows.Windowed, table_NxF=None, gather=None
) -> anomaly.ErrorModel:
    """``cfg.score``'s error model on the benign training windows of ``windowed``
    (``table_NxF``: its table already on the device, if the caller put it there).
    ``gather``: a ``--share_data`` run's join of every process's array (each process
    scores its own windows, at most ``ERROR_MODEL_WINDOWS`` / processes of them)."""
    benign = windowed.starts["train"][~windowed.any_attack["train"]]
    benign = spread(benign, ERROR_MODEL_WINDOWS // (jax.process_count() if gather else 1))
    if cfg.score in ("mae", "sse"):  # nothing to fit
        fitted_on = len(gather(benign) if gather else benign)
        return anomaly.ErrorModel(
            cfg.score, cfg.ensemble_score, len(windowed.features), fitted_on=fitted_on
        )
    table = windowed.x_NxF if table_NxF is None else table_NxF
    err_KxWxF = inference.member_errors(model, table, benign, windowed.window, cfg.eval_batch_size)
    if gather:  # every process's windows, joined along W
        err_KxWxF = np.swapaxes(gather(np.swapaxes(err_KxWxF, 0, 1)), 0, 1)
    return anomaly.fit(err_KxWxF, cfg.score, cfg.ensemble_score)


def fit_and_choose(
    cfg: Config, model: nnx.Module, windowed: windows.Windowed, table_NxF=None, gather=None
) -> tuple[anomaly.ErrorModel, metrics.Threshold, int]:
    """The error model (benign training windows) and the threshold (benign validation
    windows) of ``model``, and how many validation windows chose it; nothing is saved.
    ``table_NxF``: ``windowed``'s table already on the devices (the trainer's), if any.
    ``gather``: as ``fit_error_model`` says (the validation scores of every process)."""
    # On the device once, for both passes: the trainer's copy, or put (aliased on CPU).
    table_NxF = inference.on_device(windowed.x_NxF if table_NxF is None else table_NxF)
    error_model = fit_error_model(cfg, model, windowed, table_NxF, gather)
    benign_val = windowed.starts["val"][~windowed.any_attack["val"]]
    score_W, _ = inference.window_scores(
        model, error_model, table_NxF, benign_val, windowed.window, cfg.eval_batch_size,
        group_W=np.zeros(len(benign_val), np.int32), num_groups=1,
    )  # fmt: skip
    if gather:
        score_W = gather(score_W)
    return error_model, threshold_from_scores(cfg, score_W), len(score_W)


def calibrate(
    cfg: Config,
    model: nnx.Module,
    windowed: windows.Windowed,
    run_dir: str,
    step: int,
    table_NxF=None,
    gather=None,
) -> dict:
    """Fits the error model, chooses the threshold; saves both with the run (process 0),
    each recording that it was fitted for the best parameters of checkpoint ``step``
    (``table_NxF``: the trainer's device table, so it is not put again; ``gather``: a
    shared run's, as ``fit_error_model`` says)."""
    error_model, threshold, n_val = fit_and_choose(cfg, model, windowed, table_NxF, gather)
    fitted_for = {"checkpoint": "best", "step": int(step)}
    record = {**threshold.to_json(), FITTED_FOR: fitted_for}
    if jax.process_index() == 0:  # one writer across hosts
        em_record = {**error_model.to_json(), FITTED_FOR: fitted_for}
        atomic.write_json(os.path.join(run_dir, ERROR_MODEL_FILE), em_record)
        atomic.write_json(os.path.join(run_dir, THRESHOLD_FILE), record)
    logging.info(
        "score %s fitted on %d benign training windows; threshold %.6g (%s) from %d benign "
        "validation windows",
        error_model.kind,
        error_model.fitted_on,
        threshold.value,
        threshold.method,
        n_val,
    )
    return {"threshold": record, "error_model": error_model}


def load(run_dir: str) -> tuple[anomaly.ErrorModel, metrics.Threshold]:
    """The saved error model and threshold of a stage-1 run (clear error when missing)."""
    paths = [os.path.join(run_dir, f) for f in (ERROR_MODEL_FILE, THRESHOLD_FILE)]
    for p in paths:
        if not os.path.exists(p):
            raise FileNotFoundError(
                f"{p} is missing: stage-1 training did not finish calibrating; re-run it"
            )
    try:
        with open(paths[0]) as f:
            em_record = json.load(f)
        em_record.pop(FITTED_FOR, None)
        error_model = anomaly.ErrorModel.from_json(em_record)
        with open(paths[1]) as f:
            threshold = metrics.Threshold.from_json(json.load(f))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(
            f"{run_dir}: unreadable {ERROR_MODEL_FILE} or {THRESHOLD_FILE}: {e}"
        ) from e
    return error_model, threshold


def check_fitted_for(run_dir: str, step: int) -> None:
    """Refuses (ValueError) a calibration fitted for other parameters than the best ones
    of checkpoint ``step``; files written before the step was recorded pass, warned."""
    records = []
    for name in (ERROR_MODEL_FILE, THRESHOLD_FILE):
        with open(os.path.join(run_dir, name)) as f:
            records.append(json.load(f).get(FITTED_FOR))
    if None in records:
        logging.warning(
            "%s: %s or %s has no record of the checkpoint step it was fitted for (written"
            " before steps were recorded): used with the best parameters of step %d"
            " unchecked; re-running training recalibrates and records it",
            run_dir,
            ERROR_MODEL_FILE,
            THRESHOLD_FILE,
            step,
        )
    for fitted_for in filter(None, records):
        if fitted_for != {"checkpoint": "best", "step": step}:
            raise ValueError(
                f"{run_dir}: the error model and threshold were fitted for the"
                f" {fitted_for.get('checkpoint')} parameters as of step {fitted_for.get('step')},"
                f" but the checkpoint is at step {step} (training went on and did not"
                " finish); re-run training to finish the stage, which recalibrates"
            )
