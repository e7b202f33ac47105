"""artifact: the directory is written whole, and a hostile sidecar or manifest is one clear error.

(Scoring equality, tampering and shape checks are in jobs/test_export.py.)
"""

import errno
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lstmae_jax import atomic, compiler
from lstmae_jax.deploy import artifact

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _copy(artifact_dir, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(artifact_dir, out)
    return out


def _rewrite(model, name, fn):
    """Edits a JSON file of the artifact and re-signs it (the manifest no longer protects)."""
    meta = json.loads((model / name).read_text())
    fn(meta)
    (model / name).write_text(json.dumps(meta))
    if name != artifact.MANIFEST:
        artifact.write_manifest(str(model), [artifact.ARTIFACT, artifact.SIDECAR])


def test_format_version_as_a_string_is_named_as_such(artifact_dir, tmp_path):
    model = _copy(artifact_dir, tmp_path)
    _rewrite(model, artifact.MANIFEST, lambda m: m.update(format_version="2"))
    with pytest.raises(artifact.ArtifactError, match=r"artifact format '2', this scorer reads"):
        artifact.load(str(model))


def test_an_unknown_cleaning_key_is_an_artifact_error(artifact_dir, tmp_path):
    model = _copy(artifact_dir, tmp_path)
    _rewrite(model, artifact.SIDECAR, lambda m: m["cleaning"].update(infinite="zero"))
    with pytest.raises(artifact.ArtifactError, match=r"scorer.json: .*unknown keys \['infinite'\]"):
        artifact.load(str(model))


def test_write_dir_never_deletes_files_that_are_not_an_artifacts(artifact_dir, tmp_path):
    scorer = artifact.load(str(artifact_dir))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a detector artifact's"):
        artifact.write_dir(str(tmp_path / "mine"), scorer.payload, scorer.meta)
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]


def test_a_kill_during_a_rewrite_leaves_the_old_artifact_working(artifact_dir, tmp_path):
    # Issue 16: kill -9 during an export over an existing artifact left it unloadable.
    model = _copy(artifact_dir, tmp_path)
    code = (
        "import os, signal, sys\n"
        f"sys.path.insert(0, {REPO!r})\n"
        "from lstmae_jax.deploy import artifact\n"
        f"scorer = artifact.load({str(model)!r})\n"
        "meta = {**scorer.meta, 'threshold': {**scorer.meta['threshold'], 'value': 1.0}}\n"
        "def die(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "artifact.write_manifest = die  # killed after the new function and sidecar are written\n"
        f"artifact.write_dir({str(model)!r}, scorer.payload, meta)\n"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    old = artifact.load(str(artifact_dir))
    assert artifact.load(str(model)).threshold == old.threshold  # the old one, whole
    leftovers = [n for n in os.listdir(tmp_path) if n != "model"]
    assert len(leftovers) == 1 and leftovers[0].endswith(".tmp-dir")
    artifact.write_dir(str(model), old.payload, {**old.meta})  # the next write cleans up
    assert os.listdir(tmp_path) == ["model"]


def _set(*keys_value):
    """An edit of the sidecar that sets meta[k0][k1]... to the last argument."""
    *keys, value = keys_value

    def edit(meta):
        for k in keys[:-1]:
            meta = meta[k]
        meta[keys[-1]] = value(meta[keys[-1]]) if callable(value) else value

    return edit


def _row0(fn):
    """Applies ``fn`` to the first feature's row of a per-feature table (knots)."""
    return lambda rows: [fn(rows[0])] + rows[1:]


def _first(value):
    return lambda xs: [value] + xs[1:]


# Values a re-signed sidecar could carry that would make the detector silently wrong.
HOSTILE = {
    "threshold nan": (_set("threshold", "value", float("nan")), "threshold.value", "got nan"),
    "threshold inf": (_set("threshold", "value", float("inf")), "threshold.value", "got inf"),
    "threshold -inf": (_set("threshold", "value", float("-inf")), "threshold.value", "got -inf"),
    "threshold text": (_set("threshold", "value", "0.5"), "threshold.value", "got '0.5'"),
    "threshold bool": (_set("threshold", "value", True), "threshold.value", "got True"),
    "window float": (_set("window", 4.7), "window", "got 4.7"),
    "window text": (_set("window", "4"), "window", "got '4'"),
    "window 0": (_set("window", 0), "window", "got 0"),
    "window negative": (_set("window", -4), "window", "got -4"),
    "window bool": (_set("window", True), "window", "got True"),
    "features duplicated": (
        _set("features", lambda f: [f[1]] + f[1:]),
        "features",
        "more than once",
    ),
    "features unknown": (_set("features", _first("Flow Bites/s")), "features", "Flow Bites/s"),
    "classes duplicated": (_set("classes", lambda c: [c[1]] + c[1:]), "classes", "more than once"),
    "scaler mean nan": (
        _set("scalers", 0, "mean", _first(float("nan"))),
        "scalers[0].mean",
        "finite",
    ),
    "scaler mean float32 overflow": (
        _set("scalers", 0, "mean", _first(1e300)),
        "scalers[0].mean",
        "finite",
    ),
    "scaler log nan": (_set("scalers", 1, "log", _first(float("nan"))), "scalers[1].log", "finite"),
    "scaler std inf": (_set("scalers", 0, "std", _first(float("inf"))), "scalers[0].std", "finite"),
    "scaler std 0": (_set("scalers", 1, "std", _first(0.0)), "scalers[1].std", "> 0"),
    "scaler std negative": (_set("scalers", 0, "std", _first(-1.0)), "scalers[0].std", "> 0"),
    "scaler clip nan": (_set("scalers", 0, "clip", float("nan")), "scalers[0].clip", "finite"),
    "knots_x nan": (
        _set("scalers", 0, "knots_x", _row0(_first(float("nan")))),
        "scalers[0].knots_x",
        "finite",
    ),
    "knots_z inf": (
        _set("scalers", 0, "knots_z", _row0(_first(float("-inf")))),
        "scalers[0].knots_z",
        "finite",
    ),
    "knots_x reversed": (
        _set("scalers", 0, "knots_x", lambda k: [r[::-1] for r in k]),
        "scalers[0].knots_x",
        "decreas",
    ),
    "knots_z reversed": (
        _set("scalers", 0, "knots_z", _row0(lambda r: r[::-1])),
        "scalers[0].knots_z",
        "decreas",
    ),
    "cleaning nonfinite": (_set("cleaning", "nonfinite", "keep"), "cleaning.nonfinite", "'keep'"),
    "cleaning negative": (_set("cleaning", "negative", "zero"), "cleaning.negative", "'zero'"),
    "error model mean nan": (
        _set("detector", "members", 0, "mean_F", _first(float("nan"))),
        "detector.members[0].mean_F",
        "finite",
    ),
    "rarity precision inf": (
        _set("detector", "members", 2, "precision_FxF", _row0(_first(float("inf")))),
        "detector.members[2].precision_FxF",
        "finite",
    ),
    "latent references garbled": (
        _set("detector", "members", 1, "references_RxL", lambda r: r[:-8]),
        "detector.members[1].references_RxL",
        "encoded float32 matrix",
    ),
    "table reversed": (
        _set("detector", "members", 1, "table", lambda t: t[::-1]),
        "detector.members[1].table",
        "decreas",
    ),
    "table nan": (
        _set("detector", "members", 0, "table", _first(float("nan"))),
        "detector.members[0].table",
        "finite",
    ),
    "tail scale 0": (
        _set("detector", "members", 2, "tail_scale", 0.0),
        "detector.members[2].tail_scale",
        "> 0",
    ),
}


@pytest.mark.parametrize("edit, field, detail", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_resigned_sidecar_with_hostile_values_is_refused_by_field(
    artifact_dir, tmp_path, monkeypatch, edit, field, detail
):
    model = _copy(artifact_dir, tmp_path)
    _rewrite(model, artifact.SIDECAR, edit)
    # Refused before the exported function is even read, let alone called.
    monkeypatch.setattr(artifact.jax.export, "deserialize", lambda *a: pytest.fail("deserialized"))
    with pytest.raises(artifact.ArtifactError) as e:
        artifact.load(str(model))
    message = str(e.value)
    assert message.startswith(f"{model / artifact.SIDECAR}: {field} "), message
    assert detail in message and "\n" not in message, message


def test_a_large_but_finite_threshold_is_accepted(artifact_dir, tmp_path):
    model = _copy(artifact_dir, tmp_path)
    _rewrite(model, artifact.SIDECAR, _set("threshold", "value", 1e300))
    assert artifact.load(str(model)).threshold == 1e300


def test_write_dir_through_a_symlink_to_a_directory(artifact_dir, tmp_path):
    scorer = artifact.load(str(artifact_dir))
    real = _copy(artifact_dir, tmp_path)
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    meta = {**scorer.meta, "threshold": {**scorer.meta["threshold"], "value": 1.5}}
    artifact.write_dir(str(tmp_path / "link"), scorer.payload, meta)
    assert (tmp_path / "link").is_symlink()  # the link is kept, its directory replaced
    assert artifact.load(str(tmp_path / "link")).threshold == 1.5
    assert artifact.load(str(real)).threshold == 1.5
    assert sorted(os.listdir(tmp_path)) == ["link", "model"]


def test_a_failed_write_dir_names_the_directory_and_keeps_the_old_artifact(
    artifact_dir, tmp_path, monkeypatch
):
    scorer = artifact.load(str(artifact_dir))
    model = _copy(artifact_dir, tmp_path)

    def too_large(*args, **kwargs):
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(atomic, "write_bytes", too_large)
    meta = {**scorer.meta, "threshold": {**scorer.meta["threshold"], "value": 1.5}}
    with pytest.raises(ValueError) as e:
        artifact.write_dir(str(model), scorer.payload, meta)
    assert str(e.value) == (
        f"cannot write the artifact {model}: File too large (EFBIG); the earlier artifact"
        " there, if any, is unchanged"
    )
    assert artifact.load(str(model)).threshold == scorer.threshold  # the old one, whole
    assert os.listdir(tmp_path) == ["model"]  # no temporary left behind


FORMAT3 = pathlib.Path(__file__).parent / "format3"


def test_a_format_3_artifact_still_scores_as_it_did(tmp_path, monkeypatch):
    """An artifact exported before stage 1 had members (format 3: one scaler, one zscore
    error model), kept in the tests with the scores the code of its day gave: it loads,
    scores the same windows to the bit, and recalibrates (its threshold only)."""
    from lstmae_jax.data import dataset, windows
    from lstmae_jax.deploy import recalibrate
    from lstmae_jax.synthetic import timeline

    scorer = artifact.load(str(FORMAT3))
    assert scorer.meta["format_version"] == 3 and artifact.detector_of(scorer.meta) is None
    # The expected scores came from XLA's default options; `compiler.options` changes the
    # matmuls' rounding only (tests/test_compiler.py), so the bit-for-bit check is made
    # with the options of its day, and the project's are held to float32 rounding.
    with monkeypatch.context() as patch:
        patch.setattr(compiler, "options", lambda: {})
        as_it_was = artifact.load(str(FORMAT3))
    # The 50 flows the expected scores were computed on: the generator's, seed 6.
    path = timeline.write(timeline.generate(50, seed=6), str(tmp_path / "flows.parquet"))
    flows = dataset.load_flows(path, features=scorer.features)
    x = windows.gather(flows.x_NxF, np.arange(len(flows.x_NxF) - 1), scorer.window)
    out = as_it_was(x)
    expected = json.loads((FORMAT3 / "expected.json").read_text())
    np.testing.assert_array_equal(out["score_B"], np.float32(expected["score_B"]))
    np.testing.assert_array_equal(out["flagged_B"], expected["flagged_B"])
    now = scorer(x)
    np.testing.assert_allclose(now["score_B"], out["score_B"], rtol=1e-5)
    np.testing.assert_array_equal(now["flagged_B"], out["flagged_B"])
    assert "members_BxM" not in out
    new = recalibrate.calibrate(scorer, path, 0.5, str(tmp_path / "m"))
    assert artifact.load(str(tmp_path / "m")).threshold == new["threshold"]["value"]
