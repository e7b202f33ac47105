"""Trained workdir -> detector artifact directory (see ``artifact`` for the layout).

``scoring_function`` is what gets exported: raw x_BxTxF and the sidecar's values
(``artifact.call_params``) -> score, per-feature contributions, flags, each member's own
score and, with a stage 2, class probabilities. The network weights are baked in; the
scalers, the members' fitted values (error models, latent references, rarity Gaussians,
p-value tables) and the threshold are inputs, so each value exists once (in the sidecar)
and recalibrating (``launch/score.py --calibrate``) needs no re-export.

``--checkpoint`` picks the stage-1 parameters: ``best`` (the default: those the run
calibrated its error model and threshold on), ``latest`` or a step number. Other than
``best``, the error model and threshold are fitted again for those parameters, on the
run's own data and split, the way training does (``stage1``), without touching the run.
"""

from __future__ import annotations

import json
import os
import platform

import jax
import jax.numpy as jnp
import numpy as np

from lstmae_jax import __version__
from lstmae_jax.data import dataset, windows
from lstmae_jax.deploy import artifact
from lstmae_jax.detect import detector

ARTIFACT, SIDECAR = artifact.ARTIFACT, artifact.SIDECAR


def scoring_function(ae, spec: tuple, stage2=None):
    """The exported function: ``fn(x_BxTxF, params) -> dict`` (see ``artifact``).

    ``ae`` is the stage-1 autoencoder (one, or the K networks), ``spec`` the detector's
    (``Detector.spec``), ``stage2`` the optional classifier (it reads the first
    representation, as it was trained). Also what ``benchmarks/throughput.py`` times.
    """
    from flax import nnx

    from lstmae_jax.detect import detector
    from lstmae_jax.model import models

    ae_def, ae_state = nnx.split(ae)
    s2 = nnx.split(stage2) if stage2 is not None else None

    def scorer(x_BxTxF: jax.Array, params: dict) -> dict:
        model = nnx.merge(ae_def, ae_state)
        out = detector.outputs(
            lambda x: models.encode_decode(model, x), x_BxTxF, params["scalers"], spec,
            params["members"],
        )  # fmt: skip
        out["flagged_B"] = out["score_B"] > params["threshold"]
        if s2 is not None:
            x0 = dataset.scale(x_BxTxF, **params["scalers"][0], xp=jnp)
            out["probs_BxC"] = jax.nn.softmax(nnx.merge(*s2)(x0), axis=-1)
        return out

    return scorer


def versions() -> dict:
    from importlib import metadata

    names = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "pyarrow")
    return {
        "lstmae_jax": __version__,
        **{n: metadata.version(n) for n in names},
        "python": platform.python_version(),
    }


def _recalibrate_on_run_data(cfg, ae, meta) -> tuple[detector.Detector, dict]:
    """Members and threshold for parameters other than the calibrated best ones."""
    from lstmae_jax.detect import calibration
    from lstmae_jax.jobs import rundir

    flows = dataset.load_flows(
        cfg.data, features=meta["features"], nonfinite=cfg.nonfinite, negative=cfg.negative
    )
    windowed = windows.for_config(cfg, flows, scalers=rundir.scalers(meta))
    now, then = json.loads(json.dumps(windowed.summary())), meta.get("data") or {}
    if cfg.share_data:  # a shared run's windows stop at row groups: compare the flows
        now, then = now["flows"], then.get("flows")
    if now != then:
        raise ValueError(
            f"{cfg.data} no longer holds the data the run was trained on (its windows"
            " differ); refitting the threshold on it would not be the run's calibration"
        )
    error_model, threshold, _ = calibration.fit_and_choose(cfg, ae, windowed)
    return error_model, threshold.to_json()


def _validation(meta: dict) -> dict:
    history = meta.get("history") or []
    best = min((h["val_loss"] for h in history), default=None)
    return {
        "best_val_loss": best,
        "epochs": len(history),
        "last_epoch": history[-1] if history else None,
    }


def export_scorer(
    workdir: str,
    output_dir: str,
    *,
    checkpoint: str = "best",
    platforms: tuple[str, ...] = ("cpu", "cuda"),
    data_name: str | None = None,
    workdir_name: str | None = None,
) -> dict:
    """Exports ``workdir``'s stage 1 (and stage 2, if trained); returns the sidecar, with
    ``manifest_sha256`` added (not stored in it: the manifest covers the sidecar).
    ``data_name``, ``workdir_name``: what the sidecar names the training data and the
    workdir by, instead of their paths (the Python API's inputs and temporary workdir,
    whose paths mean nothing once it is gone)."""
    from lstmae_jax.config import Config
    from lstmae_jax.jobs import rundir

    stage1_dir = rundir.path(workdir, rundir.STAGE1)
    ae, meta = rundir.load_run(stage1_dir, checkpoint=checkpoint)
    if why := rundir.unfinished(workdir, rundir.STAGE1):  # its calibration is missing
        raise FileNotFoundError(f"{stage1_dir} has {why}: training did not finish")
    cfg = Config.from_json(meta["config"])
    error_model, threshold = meta["error_model"], meta["threshold"]
    scalers = [sc.to_json() for sc in rundir.scalers(meta)]
    calibrated_on = "benign validation windows of the run (after training)"
    if checkpoint != "best":
        error_model, threshold = _recalibrate_on_run_data(cfg, ae, meta)
        calibrated_on += f"; refitted at export for checkpoint {checkpoint!r}"
    stage2, classes, validation = None, None, {"stage1": _validation(meta)}
    why2 = rundir.unfinished(workdir, rundir.STAGE2)  # NOT_TRAINED: stage 1 alone
    if why2 not in (None, rundir.NOT_TRAINED):
        raise ValueError(
            f"{workdir}/stage2 did not finish (no summary.json, or preempted): re-run"
            " --stage=2 with the same flags to complete it, or remove stage2/ to export"
            " stage 1 alone"
        )
    if why2 is None:
        stage2, meta2 = rundir.load_run(rundir.path(workdir, rundir.STAGE2))
        # Compared as scalers: a stage 1 saved before a field existed has no key for it.
        same_scaler = rundir.scalers(meta2)[0] == rundir.scalers(meta)[0]
        if meta2["features"] != meta["features"] or not same_scaler:
            raise ValueError("stage 2 was trained with other features or scaling than stage 1")
        cfg2 = Config.from_json(meta2["config"])
        classes = ["Benign", "Attack"] if cfg2.task == "binary" else meta2["classes"]
        validation["stage2"] = _validation(meta2)
    sidecar = {
        "format_version": artifact.FORMAT_VERSION,
        "artifact": ARTIFACT,
        "features": meta["features"],
        "window": cfg.window,
        "input": "raw cleaned features, float32, shape [batch, window, features]",
        "scalers": scalers,
        "score": error_model.describe(),
        "detector": error_model.to_json(),
        "threshold": {**threshold, "calibrated_on": calibrated_on},
        "classes": classes,
        "cleaning": {"nonfinite": cfg.nonfinite, "negative": cfg.negative},
        "training_data": {
            "path": data_name or cfg.data,
            "split": cfg.split,
            **meta.get("data", {}),
        },
        "validation": validation,
        "checkpoint": {
            "stage1": checkpoint,
            "source_workdir": workdir_name or os.path.abspath(workdir),
        },
        "versions": versions(),
    }
    fn = scoring_function(ae, error_model.spec(), stage2)
    (b,) = jax.export.symbolic_shape("b")
    x_spec = jax.ShapeDtypeStruct((b, cfg.window, len(meta["features"])), jnp.float32)
    params_spec = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype),
        artifact.call_params(sidecar),
    )
    # Cross-platform lowering: a CUDA artifact can be produced on a CPU-only machine.
    exported = jax.export.export(jax.jit(fn), platforms=platforms)(x_spec, params_spec)
    sidecar["platforms"] = list(exported.platforms)
    digest = artifact.write_dir(output_dir, bytes(exported.serialize()), sidecar)
    return {**sidecar, "manifest_sha256": digest}
