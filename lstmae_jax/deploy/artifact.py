"""The detector artifact on the scoring side: verify, load, call. jax and numpy, and the
scorer's own light modules (schema, clean: no model or training code).

An artifact directory holds three files:

* ``scorer.jaxexport``: the scoring function, ``jax.export``ed (symbolic batch, CPU and
  CUDA). Only the network weights are baked into it.
* ``scorer.json``: the sidecar. Every *value* the function needs besides the weights
  (the scalers, the detector's fitted members and p-value tables, the threshold) lives
  here and is passed to the function as an input, so there is one copy of each: what the
  sidecar says is what the artifact computes with.
  It also states features, window, classes, cleaning policy, how the threshold was chosen,
  the training data and validation metrics, and library versions.
* ``MANIFEST.json``: the SHA-256 and size of every file. ``load`` checks it before it
  reads anything else and refuses any mismatch, naming the file; it then checks the
  sidecar's values (finite numbers, canonical features, known cleaning policies,
  non-decreasing quantile knots, positive window and std) and that they fit the exported
  function (input and output shapes). The manifest detects
  accidental and naive changes; against a deliberate attacker who rewrites the manifest
  too, compare its own SHA-256 (``manifest_sha256``, printed at export) with a copy kept
  elsewhere (``launch/score.py --manifest_sha256``).

The exported function: ``fn(x_BxTxF, params) -> dict`` with raw (cleaned, unscaled)
float32 features in the sidecar's ``features`` order, and ``params`` as ``call_params``
builds it. Outputs: ``score_B``, ``contrib_BxF`` (per-feature contributions, summing to
the score), ``flagged_B`` (``score > threshold``), ``members_BxM`` (each stage-1 member's
own score, format 4; recalibration refits the p-value tables on them) and, with a stage
2, ``probs_BxC``.

No pickle anywhere: JSON and the ``jax.export`` serialization (flatbuffers).
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import os
import shutil

import jax
import numpy as np

# atomic: stdlib and absl; clean and schema: numpy and pyarrow, which the scorer loads anyway
from lstmae_jax import atomic, compiler
from lstmae_jax.data import dataset
from lstmae_jax.detect import detector
from lstmae_jax.ingest import clean, schema

ARTIFACT = "scorer.jaxexport"
SIDECAR = "scorer.json"
MANIFEST = "MANIFEST.json"
# 3: the scaler may carry quantile knots, the score may be sse; 4: scalers (one per
# representation) and a detector of fused members instead of one scaler and error model.
FORMAT_VERSION = 4
READS_VERSIONS = (2, 3, 4)  # 2 has no knots or sse: its inputs are a subset of 3's
# The sidecar's cleaning policy (clean.canonicalize's arguments) and the values each takes.
CLEANING = {"nonfinite": clean.NONFINITE_POLICIES, "negative": clean.NEGATIVE_POLICIES}


class ArtifactError(ValueError):
    """The artifact directory is incomplete, altered or inconsistent (names the file)."""


def float32_at_or_below(value: float) -> np.float32:
    """The largest float32 <= ``value``: for every float32 score s, ``s > result`` exactly
    when ``s > value`` (the float64 rule of ``metrics.Threshold.predict``), so the artifact
    flags the windows the in-process model flags."""
    with np.errstate(over="ignore"):  # beyond float32 (1e300): inf, then its largest finite
        v32 = np.float32(value)
    # float(): numpy would compare a float32 with a Python float in float32.
    return np.nextafter(v32, np.float32(-np.inf)) if float(v32) > value else v32


def call_params(sidecar: dict) -> dict:
    """The exported function's second input, from the sidecar (the one copy of each value),
    through the functions the in-process score uses (``Scaler.arrays``,
    ``Detector.arrays``). Formats 2 and 3 (one scaler, one error model): their own."""
    threshold = float32_at_or_below(sidecar["threshold"]["value"])
    if "detector" not in sidecar:
        return _legacy_params(sidecar, threshold)
    return {
        "threshold": threshold,
        "scalers": [dataset.Scaler.from_json(s).arrays(np.float32) for s in sidecar["scalers"]],
        "members": detector.Detector.from_json(sidecar["detector"]).arrays(),
    }


def _legacy_params(sidecar: dict, threshold: np.float32) -> dict:
    params = {
        "threshold": threshold,
        "scaler": dataset.Scaler.from_json(sidecar["scaler"]).arrays(np.float32),
    }
    em = sidecar["error_model"]
    if em["kind"] in ("zscore", "mahalanobis"):
        params["error_model"] = {
            "mean_KxF": np.asarray(em["mean_KxF"], np.float32),
            "precision_KxFxF": np.asarray(em["precision_KxFxF"], np.float32),
        }
    return params


def detector_of(sidecar: dict) -> detector.Detector | None:
    """The sidecar's stage-1 detector (None for formats 2 and 3, which predate it)."""
    return detector.Detector.from_json(sidecar["detector"]) if "detector" in sidecar else None


# ------------------------------------------------------------------------- manifest


def write_dir(directory: str, payload: bytes, sidecar: dict) -> str:
    """Writes an artifact directory (function, sidecar, manifest) whole: it is built beside
    ``directory`` and swapped in at once, so a reader (or a kill) never meets a mix of an
    old artifact and a new one. An existing ``directory`` must be empty or an artifact:
    other files in it are never deleted; a symlink to a directory is followed (the link is
    kept, its directory replaced). Returns the manifest's SHA-256. Used by the export and by
    recalibration. A failure to write (no space, file-size limit, read-only place) is a
    one-line ``ValueError`` naming ``directory``."""
    target = os.path.realpath(directory)
    if os.path.isdir(target):
        others = sorted(set(os.listdir(target)) - {ARTIFACT, SIDECAR, MANIFEST})
        if others:
            raise ValueError(
                f"{directory} holds files that are not a detector artifact's ({others[:5]});"
                " write the artifact to a new or empty directory"
            )
    elif os.path.lexists(target):
        raise ValueError(f"{directory} exists and is not a directory")
    try:
        atomic.remove_stale(os.path.dirname(target), os.path.basename(target))
        tmp = atomic.temporary_dir(target)
        try:
            atomic.write_bytes(os.path.join(tmp, ARTIFACT), payload)
            atomic.write_json(os.path.join(tmp, SIDECAR), sidecar)
            digest = write_manifest(tmp, [ARTIFACT, SIDECAR])
            os.chmod(tmp, 0o755)  # mkdtemp makes it private
            atomic.replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except OSError as e:  # the cause alone: the temporary's name would only confuse
        raise ValueError(
            f"cannot write the artifact {directory}: {atomic.cause(e)}; the earlier artifact"
            " there, if any, is unchanged"
        ) from e
    return digest


def write_manifest(directory: str, names: list[str]) -> str:
    """Writes MANIFEST.json for ``names`` in ``directory``; returns the manifest's SHA-256."""
    files = {}
    for name in sorted(names):
        path = os.path.join(directory, name)
        files[name] = {"sha256": atomic.sha256_file(path), "bytes": os.path.getsize(path)}
    manifest = {"format": "lstmae-jax detector", "format_version": FORMAT_VERSION, "files": files}
    path = os.path.join(directory, MANIFEST)
    atomic.write_json(path, manifest, sort_keys=True)
    return atomic.sha256_file(path)


def verify(directory: str, manifest_sha256: str | None = None) -> dict[str, bytes]:
    """Checks the two files against MANIFEST.json and returns their bytes, read once (what
    is used is what was verified). ``ArtifactError`` names the first file that is missing,
    of another size, or of another hash."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise ArtifactError(f"{path}: missing; not a detector artifact (export it again)")
    with open(path, "rb") as f:
        text = f.read()
    if manifest_sha256 is not None and not manifest_sha256.strip():
        raise ArtifactError("--manifest_sha256 is empty: give the 64 hex digits printed at export")
    if (
        manifest_sha256 is not None
        and hashlib.sha256(text).hexdigest() != manifest_sha256.strip().lower()
    ):
        raise ArtifactError(f"{path}: SHA-256 differs from the expected {manifest_sha256}")
    try:
        manifest = json.loads(text)
        version = manifest["format_version"]
        files = manifest["files"]
        entries = {n: (int(files[n]["bytes"]), str(files[n]["sha256"])) for n in files}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ArtifactError(f"{path}: unreadable manifest: {e!r}") from e
    if type(version) is not int or version not in READS_VERSIONS:  # "2" is no format 2
        raise ArtifactError(
            f"{path}: artifact format {version!r}, this scorer reads {list(READS_VERSIONS)}"
        )
    if set(entries) != {ARTIFACT, SIDECAR}:
        raise ArtifactError(f"{path}: lists {sorted(entries)}, expected {[ARTIFACT, SIDECAR]}")
    contents = {}
    for name, (size, digest) in entries.items():
        p = os.path.join(directory, name)
        if not os.path.isfile(p):
            raise ArtifactError(f"{p}: missing (listed in {MANIFEST})")
        with open(p, "rb") as f:
            contents[name] = f.read()
        if len(contents[name]) != size:
            raise ArtifactError(f"{p}: {len(contents[name])} bytes, {MANIFEST} says {size}")
        if hashlib.sha256(contents[name]).hexdigest() != digest:
            raise ArtifactError(f"{p}: SHA-256 differs from {MANIFEST}: the file was altered")
    return contents


# --------------------------------------------------------------------------- scorer


def _check_values(meta: dict, where: str) -> None:
    """Refuses sidecar values that would make the detector silently wrong (a NaN threshold
    flags nothing, reversed knots flag nearly everything), naming the field; the shapes are
    ``Scorer._check_fits``'s. Values the function takes are checked as the float32 it
    computes with (1e300 is inf there)."""

    def refuse(field: str, why: str) -> ArtifactError:
        return ArtifactError(f"{where}: {field} {why}")

    def repeated(names: list) -> list:
        return sorted(n for n, k in collections.Counter(names).items() if k > 1)

    features = meta["features"]

    def feature(i: int) -> str:  # the name of row i of a per-feature array
        return repr(features[i]) if i < len(features) else f"#{i}"

    value = meta["threshold"]["value"]
    if type(value) not in (int, float) or not math.isfinite(value):  # bool is no number here
        raise refuse("threshold.value", f"must be a finite number, got {value!r}")
    if type(meta["window"]) is not int or meta["window"] <= 0:
        raise refuse("window", f"must be a positive integer, got {meta['window']!r}")
    if twice := repeated(features):
        raise refuse("features", f"lists {twice} more than once")
    if unknown := [f for f in features if f not in schema.FEATURES]:
        raise refuse("features", f"are not all canonical feature names: {unknown[:5]}")
    if isinstance(meta.get("classes"), list) and (twice := repeated(meta["classes"])):
        raise refuse("classes", f"lists {twice} more than once")
    if unknown := sorted(set(meta["cleaning"]) - set(CLEANING)):
        raise refuse("cleaning", f"has unknown keys {unknown} (known: {list(CLEANING)})")
    for key, allowed in CLEANING.items():
        if key in meta["cleaning"] and meta["cleaning"][key] not in allowed:
            raise refuse(
                f"cleaning.{key}", f"must be one of {allowed}, got {meta['cleaning'][key]!r}"
            )

    scalers = meta["scalers"] if "scalers" in meta else [meta["scaler"]]
    prefix = "scalers[{}]." if "scalers" in meta else "scaler."
    arrays = {}
    with np.errstate(over="ignore"):  # too large for float32: inf, refused below
        for i, sc in enumerate(scalers):
            names = ["log", "mean", "std", "clip"] + (
                ["knots_x", "knots_z"] if sc.get("knots_x") else []
            )
            names += ["ports"] if sc.get("ports") else []
            arrays |= {prefix.format(i) + k: np.asarray(sc[k], np.float32) for k in names}
        if "error_model" in meta:  # formats 2 and 3
            em = meta["error_model"]
            arrays |= {
                f"error_model.{k}": np.asarray(em[k], np.float32)
                for k in ("mean_KxF", "precision_KxFxF")
                if k in em
            }
        else:
            for i, m in enumerate(meta["detector"]["members"]):
                # A member alone is not fused: it has no table, and its tail_scale is 0.
                tail = ("table", "tail_scale") if m.get("table") else ()
                for k in ("mean_F", "precision_FxF", *tail):
                    if m.get(k) not in (None, (), []):
                        arrays[f"detector.members[{i}].{k}"] = np.asarray(m[k], np.float32)
                if m.get("references_RxL"):
                    field = f"detector.members[{i}].references_RxL"
                    try:
                        arrays[field] = detector.decode(m["references_RxL"])
                    except ValueError:
                        raise refuse(field, "is not an encoded float32 matrix") from None
    for field, a in arrays.items():
        if not np.isfinite(a).all():
            raise refuse(field, f"must hold finite float32 numbers, has {a[~np.isfinite(a)][0]}")
    for field, a in arrays.items():
        if field.endswith(".std") and ((std := a.ravel()) <= 0).any():
            i = int(np.argmax(std <= 0))
            raise refuse(field, f"must be > 0, got {std[i]} for {feature(i)}")
        if field.endswith((".knots_x", ".knots_z")) and (falls := np.diff(a, axis=-1) < 0).any():
            i = int(np.argmax(falls.any(axis=-1)))
            raise refuse(
                field, f"must be non-decreasing along each feature's row (not {feature(i)})"
            )
        if field.endswith(".table") and (np.diff(a) < 0).any():
            raise refuse(field, "must be non-decreasing (the sorted benign validation scores)")
        if field.endswith(".tail_scale") and not a > 0:
            raise refuse(field, f"must be > 0, got {a}")


def _check_finite(x: np.ndarray) -> None:
    if not np.isfinite(x).all():
        raise ValueError(
            "non-finite input features: clean them as in the sidecar's 'cleaning' policy"
            " first (launch/score.py does)"
        )


class Scorer:
    """A verified, loaded artifact: ``scorer(x_BxTxF)`` -> dict of numpy arrays;
    ``dispatch`` the same without waiting, and ``dispatch_flows`` (the scoring pass's call)
    with the windows cut from consecutive flows on the device."""

    def __init__(self, directory: str, manifest_sha256: str | None = None):
        self.directory = directory
        contents = verify(directory, manifest_sha256)
        sidecar_path = os.path.join(directory, SIDECAR)
        self.payload: bytes = contents[ARTIFACT]  # the verified bytes (recalibration copies)
        try:
            self.meta = json.loads(contents[SIDECAR])
            _check_values(self.meta, sidecar_path)
            self.features: list[str] = list(self.meta["features"])
            self.window: int = int(self.meta["window"])
            self.classes: list[str] | None = self.meta.get("classes")
            self.params = call_params(self.meta)
            self.cleaning: dict = dict(self.meta["cleaning"])
        except ArtifactError:
            raise
        except (ValueError, KeyError, TypeError, OverflowError) as e:
            raise ArtifactError(f"{sidecar_path}: unreadable sidecar: {e!r}") from e
        artifact_path = os.path.join(directory, ARTIFACT)
        try:
            self._exported = jax.export.deserialize(bytearray(self.payload))
        except Exception as e:  # flatbuffers raises several types on bad bytes
            raise ArtifactError(f"{artifact_path}: not a jax.export artifact: {e}") from e
        self._check_fits()
        # ``Exported.call`` re-enters its tracing machinery on every call (about 4 ms of
        # Python each); under ``jit`` it is traced once per batch shape and then
        # dispatched from the compiled cache: the same computation, compiled with the
        # project's options (`compiler.jit`, as the trainer's passes are).
        self._call = compiler.jit(self._exported.call)
        self._call_flows = compiler.jit(self._flows_fn, static_argnames="top")
        self._params_on_device = jax.device_put(self.params)  # sent once, not per batch

    def _flows_fn(self, x_MxF, starts_B, params, top: int):
        """The exported function on the windows ``x_MxF[s : s + window]`` cut on the
        device, its per-feature contributions reduced there to the ``top`` largest
        (``lax.top_k``: a tie goes to the lower feature index, as ``argmax``)."""
        x_BxTxF = x_MxF[starts_B[:, None] + np.arange(self.window)]
        out = dict(self._exported.call(x_BxTxF, params))
        out["top_contrib_BxK"], out["top_feature_BxK"] = jax.lax.top_k(out.pop("contrib_BxF"), top)
        return out

    def _check_fits(self) -> None:
        """The sidecar's values must have the shapes the exported function was built for."""
        where = os.path.join(self.directory, SIDECAR)
        x_aval, params_avals = jax.tree.unflatten(self._exported.in_tree, self._exported.in_avals)[
            0
        ]
        if tuple(x_aval.shape[1:]) != (self.window, len(self.features)):
            raise ArtifactError(
                f"{where}: window {self.window} x {len(self.features)} features, the artifact"
                f" takes {tuple(x_aval.shape[1:])}"
            )
        want = jax.tree.map(lambda a: (tuple(a.shape), str(a.dtype)), params_avals)
        have = jax.tree.map(lambda a: (tuple(np.shape(a)), str(np.asarray(a).dtype)), self.params)
        if want != have:
            raise ArtifactError(
                f"{where}: the scalers / detector / threshold do not fit the artifact"
            )
        outs = jax.tree.unflatten(self._exported.out_tree, self._exported.out_avals)
        n_classes = outs["probs_BxC"].shape[1] if "probs_BxC" in outs else None
        if n_classes != (len(self.classes) if self.classes else None):
            raise ArtifactError(
                f"{where}: {len(self.classes or [])} classes, the artifact gives {n_classes}"
            )

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"]["value"])

    def __call__(self, x_BxTxF: np.ndarray, threshold: float | None = None) -> dict:
        """Scores raw windows; ``threshold`` overrides the sidecar's (for calibration)."""
        return {k: np.asarray(v) for k, v in self.dispatch(x_BxTxF, threshold).items()}

    def dispatch(self, x_BxTxF: np.ndarray, threshold: float | None = None) -> dict:
        """``__call__`` without waiting: the outputs are device arrays still being computed
        (``np.asarray`` waits for each), so the caller can prepare the next batch."""
        x = np.asarray(x_BxTxF, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (self.window, len(self.features)):
            raise ValueError(
                f"expected [batch, {self.window}, {len(self.features)}] features, got {x.shape}"
            )
        _check_finite(x)
        return self._call(x, self._params(threshold))

    def dispatch_flows(self, x_MxF: np.ndarray, starts_B: np.ndarray, top: int) -> dict:
        """``dispatch`` of the windows ``x_MxF[s : s + window]``, ``s`` in ``starts_B``,
        cut on the device: a batch of B windows of consecutive flows sends B + window - 1
        flows, not B x window. The scores are those of ``dispatch`` on the same windows,
        bit for bit; ``contrib_BxF`` becomes ``top_feature_BxK`` and ``top_contrib_BxK``
        (the ``top`` largest, largest first). Compiled once per (M, B) shape."""
        x = np.asarray(x_MxF, dtype=np.float32)
        starts = np.asarray(starts_B, dtype=np.int32)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(f"expected [flows, {len(self.features)}] features, got {x.shape}")
        last = len(x) - self.window  # the device would clamp a start beyond it, silently
        if starts.ndim != 1:
            raise ValueError(f"expected one window start per window, got shape {starts.shape}")
        if len(outside := np.flatnonzero((starts < 0) | (starts > last))):
            i = outside[0]
            raise ValueError(f"window starts must lie in [0, {last}]: starts[{i}] = {starts[i]}")
        _check_finite(x)
        return self._call_flows(x, starts, self._params(None), top=top)

    def _params(self, threshold: float | None) -> dict:
        """The sidecar's values on the device; ``threshold`` overrides its threshold."""
        params = self._params_on_device
        if threshold is not None:  # the same arrays; only the threshold differs
            params = {**params, "threshold": float32_at_or_below(threshold)}
        return params


def load(directory: str, manifest_sha256: str | None = None) -> Scorer:
    """Verifies and loads an artifact directory (``ArtifactError`` names what is wrong)."""
    return Scorer(directory, manifest_sha256)
