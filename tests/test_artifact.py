"""artifact: the directory is written whole, and a hostile sidecar or manifest is one clear error.

(Scoring equality, tampering and shape checks are in test_export.py.)
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from lstmae_jax.deploy import artifact

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
