"""Trained workdir -> a self-contained scorer: ``jax.export`` artifact + JSON sidecar.

The exported function takes *raw* (cleaned, unscaled) flow features x_BxTxF, float32,
columns in the sidecar's ``features`` order, with a symbolic batch dimension, and
returns a dict:

* ``score_B``: the stage-1 anomaly score (``anomaly.score`` with the run's fitted error
  model: the number the threshold was calibrated on),
* ``contrib_BxF``: each feature's contribution to it (which features raised the alert),
* ``flagged_B``: ``score_B > threshold``,
* ``probs_BxC``: stage-2 class probabilities (only when stage 2 was trained).

The scaler and the error model are baked into the function, and the sidecar
``scorer.json`` records features, window, scaler, error model, threshold, classes and
versions.
Loading (``load_scorer``) needs only jax and numpy: no Flax, no training code.
One artifact serves CPU and CUDA (lowered for both, even on a CPU-only machine).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from lstmae_jax import anomaly, atomic, data

ARTIFACT = "scorer.jaxexport"
SIDECAR = "scorer.json"
FORMAT_VERSION = 1


def float32_at_or_below(value: float) -> np.float32:
    """The largest float32 <= ``value``: for every float32 score s, ``s > result`` exactly
    when ``s > value`` (the float64 rule of ``Threshold.predict``), so the artifact flags
    the windows the in-process model flags."""
    v32 = np.float32(value)
    # float(): numpy would compare a float32 with a Python float in float32.
    return np.nextafter(v32, np.float32(-np.inf)) if float(v32) > value else v32


def scoring_function(ae, error_model, transform, threshold: float, stage2=None):
    """The function ``export_scorer`` exports: raw x_BxTxF -> dict (see module doc).

    ``ae`` is the stage-1 autoencoder (or ensemble), ``transform`` a ``Scaler.transform``,
    ``stage2`` the optional classifier. Also what ``benchmarks/throughput.py`` times.
    """
    from flax import nnx

    threshold_f32 = float32_at_or_below(threshold)
    ae_def, ae_state = nnx.split(ae)
    s2 = nnx.split(stage2) if stage2 is not None else None

    def scorer(x_BxTxF: jax.Array) -> dict:
        x = transform(x_BxTxF, xp=jnp)
        score_B, contrib_BxF = anomaly.score(x, nnx.merge(ae_def, ae_state)(x), error_model)
        out = {
            "score_B": score_B,
            "contrib_BxF": contrib_BxF,
            "flagged_B": score_B > threshold_f32,
        }
        if s2 is not None:
            out["probs_BxC"] = jax.nn.softmax(nnx.merge(*s2)(x), axis=-1)
        return out

    return scorer


def export_scorer(
    workdir: str, output_dir: str, platforms: tuple[str, ...] = ("cpu", "cuda")
) -> dict:
    """Exports the stage-1 (and stage-2, if trained) model of ``workdir``; returns the sidecar."""
    from lstmae_jax import run
    from lstmae_jax.config import Config

    ae, meta = run.load_run(os.path.join(workdir, "stage1"))
    if "threshold" not in meta:
        raise FileNotFoundError(
            f"{workdir}/stage1 has no {run.THRESHOLD_FILE}: training did not finish"
        )
    cfg = Config.from_json(meta["config"])
    scaler, threshold, error_model = meta["scaler"], meta["threshold"], meta["error_model"]
    transform = data.Scaler.from_json(scaler).transform
    stage2, classes = None, None
    if os.path.isdir(os.path.join(workdir, "stage2", "checkpoints")):
        stage2, meta2 = run.load_run(os.path.join(workdir, "stage2"))
        if meta2["features"] != meta["features"] or meta2["scaler"] != scaler:
            raise ValueError("stage 2 was trained with other features or scaling than stage 1")
        cfg2 = Config.from_json(meta2["config"])
        classes = ["Benign", "Attack"] if cfg2.task == "binary" else meta2["classes"]
    scorer = scoring_function(ae, error_model, transform, threshold["value"], stage2)
    (b,) = jax.export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((b, cfg.window, len(meta["features"])), jnp.float32)
    # Cross-platform lowering: a CUDA artifact can be produced on a CPU-only machine.
    exported = jax.export.export(jax.jit(scorer), platforms=platforms)(spec)
    sidecar = {
        "format_version": FORMAT_VERSION,
        "artifact": ARTIFACT,
        "platforms": list(exported.platforms),
        "features": meta["features"],
        "window": cfg.window,
        "input": "raw cleaned features, float32, shape [batch, window, features]",
        "scaler": scaler,
        "threshold": threshold,
        "score": f"{error_model.describe()} ({cfg.ensemble} member(s), {cfg.ensemble_score})",
        "error_model": error_model.to_json(),
        "classes": classes,
        "cleaning": {"nonfinite": cfg.nonfinite, "negative": cfg.negative},
        "jax_version": jax.__version__,
        "source_workdir": os.path.abspath(workdir),
    }
    os.makedirs(output_dir, exist_ok=True)
    atomic.write_bytes(os.path.join(output_dir, ARTIFACT), exported.serialize())
    atomic.write_json(os.path.join(output_dir, SIDECAR), sidecar)
    return sidecar


class Scorer:
    """A loaded scorer: ``scorer(x_BxTxF)`` -> dict of numpy arrays (see module doc)."""

    def __init__(self, directory: str):
        with open(os.path.join(directory, SIDECAR)) as f:
            self.meta = json.load(f)
        if self.meta["format_version"] != FORMAT_VERSION:
            raise ValueError(
                f"{directory}: scorer format {self.meta['format_version']}, expected {FORMAT_VERSION}"
            )
        with open(os.path.join(directory, self.meta["artifact"]), "rb") as f:
            self._exported = jax.export.deserialize(bytearray(f.read()))
        self.features: list[str] = self.meta["features"]
        self.window: int = self.meta["window"]

    def __call__(self, x_BxTxF: np.ndarray) -> dict[str, np.ndarray]:
        x = np.asarray(x_BxTxF, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (self.window, len(self.features)):
            raise ValueError(
                f"expected [batch, {self.window}, {len(self.features)}] features, got {x.shape}"
            )
        if not np.isfinite(x).all():
            raise ValueError(
                "non-finite input features: clean them as in the sidecar's 'cleaning' policy first"
            )
        return {k: np.asarray(v) for k, v in self._exported.call(x).items()}


def load_scorer(directory: str) -> Scorer:
    return Scorer(directory)
