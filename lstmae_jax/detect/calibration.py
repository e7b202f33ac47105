"""What a trained stage 1 needs besides its weights: its fitted members and the threshold.

Shared by the jobs (``run`` calibrates after training; ``evaluate``, ``export`` and the
benchmark score with the result), so no job imports another. The split of the benign
data is deliberate:

* each member's fitted values (``detector``) come from **benign training windows** (at
  most ``ERROR_MODEL_WINDOWS``, evenly spaced in time): the reconstruction Gaussians of
  ``zscore`` / ``mahalanobis``, the latent references, the rarity Gaussian (of the
  windows' last flows);
* the members' p-value tables and the threshold come from the scores of **benign
  validation windows**, which none of the fits saw, so the calibrated false-positive
  rate is an out-of-sample one.

No test window touches either.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
from absl import logging
from flax import nnx

from lstmae_jax import atomic
from lstmae_jax.config import Config
from lstmae_jax.data import windows
from lstmae_jax.detect import anomaly, detector, inference, metrics

ERROR_MODEL_FILE = "error_model.json"  # the fitted detector (its name predates members)
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


def members_of(cfg: Config, networks=None, representations=None) -> list[detector.Member]:
    """The run's members, unfitted: the network and representation each reads (by their
    place among ``networks`` and ``representations``: the config's own by default, or
    those of a model trained with more, as the benchmark fits subsets of its members)."""
    networks = cfg.stage1_networks() if networks is None else tuple(networks)
    reps = cfg.representations() if representations is None else tuple(representations)
    out = []
    for name in cfg.stage1_members():
        rep, _, kind = name.partition(":")
        network = -1 if kind == "rarity" else networks.index(rep)
        out.append(detector.Member(name, network, reps.index(rep)))
    return out


def fit_detector(
    cfg: Config,
    model: nnx.Module,
    windowed: windows.Windowed,
    table_NxF=None,
    gather=None,
    members: list[detector.Member] | None = None,
) -> detector.Detector:
    """The members of ``cfg`` (``members``: these instead, e.g. a benchmark's subset of
    the networks' members) fitted on the benign training windows of ``windowed``
    (``table_NxF``: its table already on the device, if the caller put it there), without
    their p-value tables. ``gather``: a ``--share_data`` run's join of every process's
    array (each process reads its own windows, at most ``ERROR_MODEL_WINDOWS`` /
    processes of them)."""
    members = members_of(cfg) if members is None else members
    benign = windowed.starts["train"][~windowed.any_attack["train"]]
    benign = spread(benign, ERROR_MODEL_WINDOWS // (jax.process_count() if gather else 1))
    if all(m.kind in ("sse", "mae") for m in members):  # nothing to fit: no pass
        fitted_on = len(gather(benign) if gather else benign)
        fitted = tuple(dataclasses.replace(m, fitted_on=fitted_on) for m in members)
        return detector.Detector(fitted, cfg.fusion, len(windowed.features))
    table = windowed.x_NxF if table_NxF is None else table_NxF
    err_KxWxF, z_KxWxL, last_RxWxF = inference.fit_parts(
        model, windowed.scalers, table, benign, windowed.window, cfg.eval_batch_size
    )
    if gather:  # every process's windows, joined along W
        err_KxWxF, z_KxWxL, last_RxWxF = (
            np.swapaxes(gather(np.swapaxes(a, 0, 1)), 0, 1)
            for a in (err_KxWxF, z_KxWxL, last_RxWxF)
        )
    fitted = []
    for m in members:
        fields: dict = {"fitted_on": err_KxWxF.shape[1]}
        if m.kind in anomaly.GAUSSIAN or m.kind == "rarity":
            data = last_RxWxF[m.scaler] if m.kind == "rarity" else err_KxWxF[m.network]
            mu, prec, shrink = anomaly.fit_gaussian(
                data, "mahalanobis" if m.kind == "rarity" else m.kind
            )
            fields |= {
                "mean_F": tuple(mu.tolist()),
                "precision_FxF": tuple(tuple(r) for r in prec.tolist()),
                "shrinkage": shrink,
            }
        elif m.kind == "latent":
            fields["references_RxL"] = detector.references(z_KxWxL[m.network])
        fitted.append(dataclasses.replace(m, **fields))
    return detector.Detector(tuple(fitted), cfg.fusion, len(windowed.features))


def fit_and_choose(
    cfg: Config,
    model: nnx.Module,
    windowed: windows.Windowed,
    table_NxF=None,
    gather=None,
    members: list[detector.Member] | None = None,
) -> tuple[detector.Detector, metrics.Threshold, int]:
    """The fitted detector (benign training windows; p-value tables on benign validation
    windows) and the threshold (on the fused scores of the same validation windows) of
    ``model``; nothing is saved. ``table_NxF``: ``windowed``'s table already on the
    devices (the trainer's), if any. ``gather``, ``members``: as ``fit_detector`` says
    (``gather`` joins the validation scores of every process too)."""
    # On the device once, for both passes: the trainer's copy, or put (aliased on CPU).
    table_NxF = inference.on_device(windowed.x_NxF if table_NxF is None else table_NxF)
    det = fit_detector(cfg, model, windowed, table_NxF, gather, members)
    benign_val = windowed.starts["val"][~windowed.any_attack["val"]]
    score_W, _, members_WxM = inference.window_scores(
        model, det, windowed.scalers, table_NxF, benign_val, windowed.window,
        cfg.eval_batch_size, group_W=np.zeros(len(benign_val), np.int32), num_groups=1,
        members=True,
    )  # fmt: skip
    if gather:
        score_W, members_WxM = gather(score_W), gather(members_WxM)
    if det.fused:  # the tables, then the fused scores they give the same windows
        if len(score_W) == 0:
            raise ValueError("the members' p-values need benign validation windows; there are none")
        det = detector.with_tables(det, members_WxM.T)
        score_W = detector.fused_scores(det, members_WxM)
    return det, threshold_from_scores(cfg, score_W), len(score_W)


def calibrate(
    cfg: Config,
    model: nnx.Module,
    windowed: windows.Windowed,
    run_dir: str,
    step: int,
    table_NxF=None,
    gather=None,
) -> dict:
    """Fits the members, chooses the threshold; saves both with the run (process 0), each
    recording that it was fitted for the best parameters of checkpoint ``step``
    (``table_NxF``: the trainer's device table, so it is not put again; ``gather``: a
    shared run's, as ``fit_detector`` says)."""
    error_model, threshold, n_val = fit_and_choose(cfg, model, windowed, table_NxF, gather)
    fitted_for = {"checkpoint": "best", "step": int(step)}
    record = {**threshold.to_json(), FITTED_FOR: fitted_for}
    if jax.process_index() == 0:  # one writer across hosts
        em_record = {**error_model.to_json(), FITTED_FOR: fitted_for}
        atomic.write_json(os.path.join(run_dir, ERROR_MODEL_FILE), em_record)
        atomic.write_json(os.path.join(run_dir, THRESHOLD_FILE), record)
    logging.info(
        "stage 1 (%s) fitted on %d benign training windows; threshold %.6g (%s) from %d"
        " benign validation windows",
        ", ".join(m.name for m in error_model.members),
        error_model.members[0].fitted_on,
        threshold.value,
        threshold.method,
        n_val,
    )
    return {"threshold": record, "error_model": error_model}


def load(run_dir: str) -> tuple[detector.Detector, metrics.Threshold]:
    """The saved detector and threshold of a stage-1 run (clear error when missing)."""
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
        error_model = from_record(em_record)
        with open(paths[1]) as f:
            threshold = metrics.Threshold.from_json(json.load(f))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(
            f"{run_dir}: unreadable {ERROR_MODEL_FILE} or {THRESHOLD_FILE}: {e}"
        ) from e
    return error_model, threshold


def from_record(record: dict) -> detector.Detector:
    """A detector from ``error_model.json``, or from the error model a run saved before
    stage 1 had members (one network, one reconstruction score): that one member."""
    if "members" in record:
        return detector.Detector.from_json(record)
    if len(record.get("mean_KxF") or [None]) > 1:
        raise ValueError(
            "an ensemble of seeds (--ensemble, removed): train it again as one network, or"
            " with --members"
        )
    mean = record.get("mean_KxF") or [()]
    prec = record.get("precision_KxFxF") or [()]
    shrink = record.get("shrinkage_K") or [0.0]
    kind = record["kind"]
    member = detector.Member(
        f"{LEGACY_SCALER}:{kind}", 0, 0, tuple(mean[0]), tuple(tuple(r) for r in prec[0]),
        float(shrink[0]), fitted_on=int(record.get("fitted_on", 0)),
    )  # fmt: skip
    return detector.Detector((member,), "min", int(record["num_features"]))


LEGACY_SCALER = "scaler"  # the representation name a pre-member error model is given


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
