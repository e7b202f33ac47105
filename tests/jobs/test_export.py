"""The detector artifact: export, manifest, tampering refused, scores equal the model's."""

import json
import os
import shutil

import numpy as np
import pytest

from lstmae_jax import atomic, compiler, config
from lstmae_jax.data import dataset, windows
from lstmae_jax.deploy import artifact
from lstmae_jax.detect import inference
from lstmae_jax.jobs import export, rundir, training
from lstmae_jax.synthetic import timeline


def _reference(trained_workdir, scorer, starts):
    """Raw windows and the in-process model's scores and contributions for them."""
    root, cfg, _, _ = trained_workdir
    model, meta = rundir.load_run(os.path.join(root, "stage1"))
    flows = dataset.load_flows(cfg.data, features=scorer.features)
    s_W, c_WxF, m_WxM = inference.window_scores(
        model, meta["error_model"], rundir.scalers(meta), flows.x_NxF, starts, cfg.window,
        members=True,
    )  # fmt: skip
    return windows.gather(flows.x_NxF, starts, cfg.window), (s_W, c_WxF, m_WxM), meta


@pytest.mark.device_check
def test_artifact_scores_equal_the_in_process_model(trained_workdir, artifact_dir):
    scorer = artifact.load(str(artifact_dir))
    starts = np.arange(0, 1500, 5)
    raw, (ref_score, ref_contrib, ref_members), meta = _reference(trained_workdir, scorer, starts)
    out = scorer(raw)
    # The same function (detector.outputs, scaling on the device) in and out of process;
    # only the compilation differs (a baked-in model against a merged one).
    np.testing.assert_allclose(out["score_B"], ref_score, rtol=1e-5)
    atol = 1e-5 * np.abs(ref_score).max()  # contributions: relative to the score's scale
    np.testing.assert_allclose(out["contrib_BxF"], ref_contrib, rtol=1e-5, atol=atol)
    np.testing.assert_allclose(out["members_BxM"], ref_members, rtol=1e-5, atol=1e-6)
    assert out["members_BxM"].shape == (len(starts), 3)
    threshold = scorer.meta["threshold"]["value"]
    np.testing.assert_array_equal(out["flagged_B"], out["score_B"] > threshold)
    assert out["probs_BxC"].shape == (len(starts), len(scorer.classes))
    np.testing.assert_allclose(out["probs_BxC"].sum(axis=1), 1.0, rtol=1e-5)
    assert scorer(raw[:3])["score_B"].shape == (3,)  # symbolic batch
    # The threshold is an input: another one flags other windows without a re-export.
    median = float(np.median(out["score_B"]))
    np.testing.assert_array_equal(
        scorer(raw, threshold=median)["flagged_B"], out["score_B"] > median
    )
    assert scorer.meta["detector"] == meta["error_model"].to_json()


def test_sidecar_states_what_an_operator_needs(trained_workdir, artifact_dir):
    meta = json.loads((artifact_dir / artifact.SIDECAR).read_text())
    _, cfg, s1, _ = trained_workdir
    assert meta["platforms"] == ["cpu", "cuda"]
    assert meta["window"] == cfg.window
    assert [len(s["mean"]) for s in meta["scalers"]] == [len(meta["features"])] * 2
    assert [m["name"] for m in meta["detector"]["members"]] == list(cfg.stage1_members())
    assert meta["threshold"]["value"] == s1["threshold"]["value"]
    assert meta["threshold"]["method"] == "fpr" and "calibrated_on" in meta["threshold"]
    assert meta["cleaning"] == {"nonfinite": cfg.nonfinite, "negative": cfg.negative}
    assert meta["training_data"]["path"] == cfg.data and "windows" in json.dumps(
        meta["training_data"]
    )
    assert meta["validation"]["stage1"]["best_val_loss"] == pytest.approx(s1["best_val_loss"])
    assert {"jax", "flax", "numpy", "pyarrow"} <= set(meta["versions"])
    manifest = json.loads((artifact_dir / artifact.MANIFEST).read_text())
    assert set(manifest["files"]) == {artifact.ARTIFACT, artifact.SIDECAR}
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == atomic.sha256_file(str(artifact_dir / name))
    # No pickle anywhere: two JSON files and the jax.export flatbuffer, nothing else.
    assert sorted(os.listdir(artifact_dir)) == sorted([*manifest["files"], artifact.MANIFEST])
    json.loads((artifact_dir / artifact.MANIFEST).read_text())


def _copy(artifact_dir, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(artifact_dir, out)
    return out


def _edit_sidecar(path, fn):
    meta = json.loads((path / artifact.SIDECAR).read_text())
    fn(meta)
    (path / artifact.SIDECAR).write_text(json.dumps(meta))


def _flip(path, offset):
    raw = bytearray(path.read_bytes())
    raw[offset % len(raw)] ^= 0x01
    path.write_bytes(bytes(raw))


A, S = artifact.ARTIFACT, artifact.SIDECAR
TAMPERING = {  # case: (what is done to a copy, the file the error must name)
    "flipped artifact byte": (lambda p: _flip(p / A, 120003), A),
    "flipped first byte": (lambda p: _flip(p / A, 0), A),
    "truncated artifact": (lambda p: (p / A).write_bytes((p / A).read_bytes()[:1000]), A),
    "empty artifact": (lambda p: (p / A).write_bytes(b""), A),
    "deleted artifact": (lambda p: (p / A).unlink(), A),
    "threshold changed": (
        lambda p: _edit_sidecar(p, lambda m: m["threshold"].update(value=0.1)),
        S,
    ),
    "classes reversed": (lambda p: _edit_sidecar(p, lambda m: m["classes"].reverse()), S),
    "features swapped": (
        lambda p: _edit_sidecar(
            p, lambda m: m["features"].__setitem__(slice(0, 2), m["features"][1::-1])
        ),
        S,
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampering_is_refused_naming_the_file(artifact_dir, tmp_path, case):
    model = _copy(artifact_dir, tmp_path)
    tamper, name = TAMPERING[case]
    tamper(model)
    with pytest.raises(artifact.ArtifactError, match=f"{model / name}"):
        artifact.load(str(model))


def test_missing_or_unreadable_manifest_is_refused(artifact_dir, tmp_path):
    model = _copy(artifact_dir, tmp_path)
    (model / artifact.MANIFEST).write_text("{not json")
    with pytest.raises(artifact.ArtifactError, match="unreadable manifest"):
        artifact.load(str(model))
    (model / artifact.MANIFEST).unlink()
    with pytest.raises(artifact.ArtifactError, match="MANIFEST.json: missing"):
        artifact.load(str(model))


def test_a_rewritten_manifest_is_caught_by_its_own_hash(artifact_dir, tmp_path):
    model = _copy(artifact_dir, tmp_path)
    good = atomic.sha256_file(str(model / artifact.MANIFEST))
    artifact.load(str(model), manifest_sha256=good)
    _edit_sidecar(model, lambda m: m["threshold"].update(value=0.1))
    artifact.write_manifest(str(model), [artifact.ARTIFACT, artifact.SIDECAR])
    assert artifact.load(str(model)).threshold == 0.1  # consistent again: only the hash tells
    with pytest.raises(artifact.ArtifactError, match="SHA-256 differs from the expected"):
        artifact.load(str(model), manifest_sha256=good)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(window=m["window"] + 1), "window"),
        (lambda m: m["classes"].pop(), "classes"),
        (lambda m: m["scalers"][0]["mean"].pop(), "do not fit"),
        (lambda m: m["detector"]["members"][0]["table"].pop(), "do not fit"),
    ],
)
def test_a_sidecar_that_does_not_fit_the_function_is_refused(artifact_dir, tmp_path, edit, message):
    # Consistent hashes, inconsistent content (an export bug or a hand-made directory).
    model = _copy(artifact_dir, tmp_path)
    _edit_sidecar(model, edit)
    artifact.write_manifest(str(model), [artifact.ARTIFACT, artifact.SIDECAR])
    with pytest.raises(artifact.ArtifactError, match=message):
        artifact.load(str(model))


def test_scorer_refuses_bad_windows(artifact_dir):
    scorer = artifact.load(str(artifact_dir))
    x = np.zeros((2, scorer.window, len(scorer.features)), np.float32)
    with pytest.raises(ValueError, match="non-finite"):
        scorer(np.full_like(x, np.nan))
    with pytest.raises(ValueError, match="expected"):
        scorer(x[:, :2])


def test_windows_cut_on_the_device_score_as_windows_cut_on_the_host(artifact_dir, monkeypatch):
    """``dispatch_flows`` (the scoring pass's call) gives ``__call__``'s outputs on the
    same windows bit for bit, under XLA's default options as under the project's; the
    contributions become the ``top`` largest, in order."""
    rng = np.random.default_rng(0)
    for xla_defaults in (False, True):
        if xla_defaults:
            monkeypatch.setattr(compiler, "options", lambda: {})
        scorer = artifact.load(str(artifact_dir))
        t, f = scorer.window, len(scorer.features)
        x_MxF = rng.gamma(1.0, 50.0, (64, f)).astype(np.float32)
        starts_B = np.array([0, 3, 3, 54, 17, 0, 0, 0], np.int32)  # repeats, the last start
        out = {k: np.asarray(v) for k, v in scorer.dispatch_flows(x_MxF, starts_B, 3).items()}
        ref = scorer(windows.gather(x_MxF, starts_B, t))
        for k in ("score_B", "flagged_B", "members_BxM", "probs_BxC"):
            np.testing.assert_array_equal(out[k], ref[k], err_msg=k)
        contrib = ref["contrib_BxF"]
        top = np.argsort(-contrib, axis=1, kind="stable")[:, :3]  # a tie: the lower index
        np.testing.assert_array_equal(out["top_feature_BxK"], top)
        np.testing.assert_array_equal(out["top_contrib_BxK"], np.take_along_axis(contrib, top, 1))
        assert "contrib_BxF" not in out


def test_dispatch_flows_refuses_what_it_cannot_cut(artifact_dir):
    scorer = artifact.load(str(artifact_dir))
    x = np.zeros((20, len(scorer.features)), np.float32)
    with pytest.raises(ValueError, match="must lie in"):  # the device would clamp it
        scorer.dispatch_flows(x, np.array([0, 20 - scorer.window + 1]), 3)
    with pytest.raises(ValueError, match="must lie in"):
        scorer.dispatch_flows(x, np.array([-1]), 3)
    with pytest.raises(ValueError, match="non-finite"):
        scorer.dispatch_flows(np.full_like(x, np.inf), np.array([0]), 3)
    with pytest.raises(ValueError, match="expected"):
        scorer.dispatch_flows(x[:, :2], np.array([0]), 3)


def test_export_of_another_checkpoint_refits_its_threshold(trained_workdir, tmp_path):
    root = trained_workdir[0]
    steps = sorted(int(s) for s in os.listdir(root / "stage1" / "checkpoints") if s.isdigit())
    sidecar = export.export_scorer(str(root), str(tmp_path / "m"), checkpoint=str(steps[0]))
    assert "refitted at export for checkpoint" in sidecar["threshold"]["calibrated_on"]
    assert sidecar["threshold"]["params"]["benign_fpr"] <= 0.01
    artifact.load(str(tmp_path / "m"))
    with pytest.raises(FileNotFoundError, match="no checkpoint at step 999999"):
        export.export_scorer(str(root), str(tmp_path / "x"), checkpoint="999999")
    with pytest.raises(ValueError, match="best, latest or a step number"):
        export.export_scorer(str(root), str(tmp_path / "x"), checkpoint="newest")


def test_float32_threshold_flags_as_the_float64_rule():
    for value in (0.1, 1 / 3, 219.0626983642578, 1e-30, -2.5):
        t32 = artifact.float32_at_or_below(value)
        around = np.float32(value) + np.arange(-4, 5) * np.spacing(np.float32(value))
        s = np.concatenate([around, np.nextafter(around, np.float32(np.inf))]).astype(np.float32)
        np.testing.assert_array_equal(s > t32, s.astype(np.float64) > np.float64(value))


def test_an_unfinished_stage2_is_not_exported(trained_workdir, tmp_path):
    root = trained_workdir[0]
    shutil.copytree(root / "stage1", tmp_path / "stage1")
    shutil.copytree(root / "stage2", tmp_path / "stage2")
    summary = json.loads((tmp_path / "stage2" / "summary.json").read_text())
    (tmp_path / "stage2" / "summary.json").write_text(json.dumps({**summary, "preempted": True}))
    with pytest.raises(ValueError, match="stage2 did not finish"):
        export.export_scorer(str(tmp_path), str(tmp_path / "m"))
    shutil.rmtree(tmp_path / "stage2")  # stage 1 alone: no classes, no probabilities
    sidecar = export.export_scorer(str(tmp_path), str(tmp_path / "m"))
    assert sidecar["classes"] is None and "probs_BxC" not in artifact.load(str(tmp_path / "m"))(
        np.zeros((1, sidecar["window"], len(sidecar["features"])), np.float32)
    )


@pytest.mark.parametrize("window, ports", [(1, 0), (4, 0), (1, 4)])
def test_the_default_members_export(tmp_path, window, ports):
    """The library defaults (the quantile network's sse, and at T = 1 the log network's
    latent distance and the log rarity, above T = 1 its sse; fused by the smallest p-value)
    give the same scores through the artifact as in process; so do they with the ports as
    categories, whose contributions come back as dst_port's."""
    path = timeline.write(timeline.generate(1200, seed=4), str(tmp_path / "flows.parquet"))
    cfg = config.smoke(data=path, epochs=1, batch_size=32, window=window, port_categories=ports)
    assert (cfg.scaler, cfg.score, cfg.fusion) == ("quantile", "sse", "min")
    training.train_job(cfg, str(tmp_path / "run"))
    export.export_scorer(str(tmp_path / "run"), str(tmp_path / "art"), platforms=("cpu",))
    scorer = artifact.load(str(tmp_path / "art"))
    assert "knots_x_FxK" in scorer.params["scalers"][0]
    kinds = [m["name"] for m in scorer.meta["detector"]["members"]]
    assert kinds == (
        ["quantile:sse", "log:latent", "log:rarity"] if window == 1 else ["quantile:sse", "log:sse"]
    )
    model, meta = rundir.load_run(str(tmp_path / "run" / "stage1"))
    flows = dataset.load_flows(path, features=scorer.features)
    starts = np.arange(0, 1000, 7)
    ref, _ = inference.window_scores(
        model, meta["error_model"], rundir.scalers(meta), flows.x_NxF, starts, cfg.window
    )
    out = scorer(windows.gather(flows.x_NxF, starts, cfg.window))
    np.testing.assert_allclose(out["score_B"], ref, rtol=1e-4)
    assert out["contrib_BxF"].shape == (len(starts), len(scorer.features))
    np.testing.assert_allclose(out["contrib_BxF"].sum(axis=1), out["score_B"], rtol=1e-4)
    assert [len(s.get("ports", ())) for s in scorer.meta["scalers"]] == [ports] * 2


def test_a_single_member_exports_and_loads(tmp_path):
    """With ``--members=`` (one network, its own score, as before members existed) the
    detector has nothing to fuse: no p-value table, and the artifact loads and scores."""
    path = timeline.write(timeline.generate(600, seed=5), str(tmp_path / "flows.parquet"))
    cfg = config.smoke(data=path, epochs=1, batch_size=32, window=1, members=())
    training.train_job(cfg, str(tmp_path / "run"))
    export.export_scorer(str(tmp_path / "run"), str(tmp_path / "art"), platforms=("cpu",))
    scorer = artifact.load(str(tmp_path / "art"))
    assert [m["name"] for m in scorer.meta["detector"]["members"]] == ["quantile:sse"]
    model, meta = rundir.load_run(str(tmp_path / "run" / "stage1"))
    flows = dataset.load_flows(path, features=scorer.features)
    starts = np.arange(0, 500, 5)
    ref, _ = inference.window_scores(
        model, meta["error_model"], rundir.scalers(meta), flows.x_NxF, starts, cfg.window
    )
    out = scorer(windows.gather(flows.x_NxF, starts, cfg.window))
    np.testing.assert_allclose(out["score_B"], ref, rtol=1e-4)
    np.testing.assert_allclose(out["contrib_BxF"].sum(axis=1), out["score_B"], rtol=1e-4)
