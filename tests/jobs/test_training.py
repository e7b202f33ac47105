"""End to end on generated data: train stage 1 and 2, threshold, evaluate (export and scoring: jobs/test_export.py, deploy/test_stream.py)."""

import importlib.util
import json
import os
import re

import jax
import numpy as np
import pytest
from flax import nnx

from lstmae_jax import config
from lstmae_jax.data import dataset, windows
from lstmae_jax.detect import anomaly, calibration, detector, inference, metrics
from lstmae_jax.jobs import evaluate, rundir, training
from lstmae_jax.synthetic import timeline


@pytest.fixture(scope="module")
def workdir(trained_workdir):
    return trained_workdir


@pytest.mark.device_check
def test_stage1_threshold_is_calibrated_on_benign_val(workdir):
    root, cfg, s1, _ = workdir
    t = s1["threshold"]
    assert t["method"] == "fpr" and t["params"]["target_fpr"] == 0.01
    assert t["params"]["benign_fpr"] <= 0.01
    saved = json.loads(open(os.path.join(root, "stage1", calibration.THRESHOLD_FILE)).read())
    assert saved == t
    # Recompute: the members are fitted on the benign training windows, their p-value
    # tables on the benign validation windows, the threshold is fpr_threshold of the
    # fused validation scores.
    model, meta = rundir.load_run(os.path.join(root, "stage1"))
    flows = dataset.load_flows(cfg.data)
    w = windows.for_config(cfg, flows)
    det = meta["error_model"]
    assert [m.name for m in det.members] == list(cfg.stage1_members())
    assert cfg.stage1_members() == ("quantile:zscore", "log:latent", "quantile:rarity")
    train = w.starts["train"][~w.any_attack["train"]]
    assert all(m.fitted_on == len(train) for m in det.members)
    bs = cfg.eval_batch_size  # as calibration did: float sums depend on the batch shape
    err, z, last = inference.fit_parts(model, w.scalers, w.x_NxF, train, cfg.window, bs)
    zscore, latent, rarity = det.members
    mu, _, _ = anomaly.fit_gaussian(err[0], "zscore")
    np.testing.assert_allclose(zscore.mean_F, mu, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(detector.decode(latent.references_RxL), z[1])  # < 4096
    mu, _, _ = anomaly.fit_gaussian(last[0], "mahalanobis")
    np.testing.assert_allclose(rarity.mean_F, mu, rtol=1e-5, atol=1e-7)
    benign = w.starts["val"][~w.any_attack["val"]]
    s_W, contrib_WxF, members_WxM = inference.window_scores(
        model, det, w.scalers, w.x_NxF, benign, cfg.window, bs, members=True
    )
    for m, s_M in zip(det.members, members_WxM.T, strict=True):
        assert m.table_n == len(benign) and m.table == detector.table(s_M)[0]
    np.testing.assert_allclose(contrib_WxF.sum(axis=1), s_W, rtol=1e-4, atol=1e-6)
    assert t["value"] == metrics.fpr_threshold(s_W, 0.01)
    assert calibration.load(os.path.join(root, "stage1"))[0] == det


def test_stage2_uses_stage1_encoder_frozen(workdir):
    root, _, _, s2 = workdir
    ae, meta1 = rundir.load_run(os.path.join(root, "stage1"))
    clf, meta = rundir.load_run(os.path.join(root, "stage2"))
    # Stage 1's first network (the --scaler one): its encoder and its scaler.
    for a, b in zip(
        jax.tree.leaves(ae.member_state(0)["encoder"]),
        jax.tree.leaves(nnx.state(clf.encoder, nnx.Param)),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert meta["stage1_dir"].endswith("stage1")
    assert rundir.scalers(meta) == rundir.scalers(meta1)[:1]


def test_evaluate_report(workdir, tmp_path):
    root, _, _, _ = workdir
    out = tmp_path / "report.json"
    report = evaluate.evaluate_job(str(root), workdir[1].data, str(out))
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(report))
    s1 = saved["runs"]["stage1"]
    assert s1["n"] == s1["n_benign"] + s1["n_attack"]
    assert set(s1["per_attack"]) <= set(timeline.DEFAULT_ATTACK_MIX)
    assert all(len(v) == evaluate.TOP_FEATURES for v in s1["feature_contribution"].values())
    assert s1["score"] == calibration.load(os.path.join(root, "stage1"))[0].describe()
    s2 = saved["runs"]["stage2"]
    assert 0.0 <= s2["accuracy"] <= 1.0 and "confusion_matrix" in s2
    md = (tmp_path / "report.md").read_text()
    assert "Stage 1: LSTM-AE anomaly detection" in md and "stage2: classification" in md
    # The per-class feature table: a row per class, its top features in report.json's order.
    for name, top in s1["feature_contribution"].items():
        cells = [f"`{f}` {v:.4g}" for f, v in top.items()]
        assert f"| {name} | " + " | ".join(cells) + " |" in md.splitlines()
    if importlib.util.find_spec("matplotlib") is None:
        return
    # Figures: every plot is a file beside the report, linked by its relative name.
    figures = [p for r in saved["runs"].values() for p in r["plots"]]
    names = {os.path.basename(p) for p in figures}
    assert {"report_stage1_roc.png", "report_stage1_pr.png", "report_stage2_training.png"} <= names
    linked = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md.split("## Figures")[1])
    assert sorted(linked) == sorted(names)
    assert all((tmp_path / name).stat().st_size > 0 for name in linked)


def test_networks_train_together_each_on_its_representation(tmp_path):
    path = timeline.write(timeline.generate(1500, seed=2), str(tmp_path / "flows.parquet"))
    cfg = config.smoke(data=path, epochs=2, batch_size=32, members=("robust:sse", "log:mae"))
    assert cfg.stage1_networks() == ("quantile", "robust", "log")
    summary = training.train_job(cfg, str(tmp_path))
    model, meta = rundir.load_run(os.path.join(tmp_path, "stage1"))
    w = model.members.encoder.layers[0].w_ih[...]
    assert w.shape[0] == 3 and not np.allclose(w[0], w[1])  # different initialisations
    assert [s.kind for s in rundir.scalers(meta)] == ["quantile", "robust", "log"]
    # Each network's validation loss is logged under its representation's name.
    last = meta["history"][-1]
    assert {"val_loss_quantile", "val_loss_robust", "val_loss_log"} <= set(last)
    assert last["val_loss"] == pytest.approx(
        np.mean([last[f"val_loss_{r}"] for r in cfg.stage1_networks()])
    )
    assert summary["threshold"]["params"]["benign_fpr"] <= 0.01


def test_the_config_is_a_file_and_the_numbers_after_training_go_to_tensorboard(
    tmp_path, caplog, tensorboard_events
):
    import logging

    from lstmae_jax.train import monitor

    path = timeline.write(timeline.generate(1500, seed=4), str(tmp_path / "flows.parquet"))
    cfg = config.smoke(data=path, epochs=1, batch_size=32, tensorboard=True)
    with caplog.at_level(logging.INFO):
        summary = training.train_job(cfg, str(tmp_path))
    run_dir = tmp_path / "stage1"
    # The whole config in the run's folder, named by one log line (no dump in the log).
    saved = json.loads((run_dir / rundir.CONFIG).read_text())
    assert config.Config.from_json(saved) == cfg
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("config:")]
    assert said == [f"config: {run_dir / rundir.CONFIG}"]
    # The calibrated threshold and its validation FPR at the run's last step ...
    report = evaluate.evaluate_job(str(tmp_path), path, str(tmp_path / "r.json"), plots=False)
    got, _ = tensorboard_events(run_dir / monitor.TENSORBOARD_DIR)
    t, step = summary["threshold"], summary["steps"]
    assert got["eval/threshold"] == [(step, pytest.approx(t["value"], rel=1e-6))]
    assert got["eval/val_fpr"] == [(step, pytest.approx(t["params"]["benign_fpr"], rel=1e-6))]
    # ... and the evaluation's AUCs, named by the split evaluated.
    s1 = report["runs"]["stage1"]
    assert got["test/roc_auc"] == [(step, pytest.approx(s1["roc_auc"], rel=1e-6))]
    assert got["test/pr_auc"] == [(step, pytest.approx(s1["pr_auc"], rel=1e-6))]


def test_the_launcher_logs_no_config_dump(tmp_path):
    # The config goes to the run's config.json (above); the log keeps its progress lines.
    proc = _launch_with_job(tmp_path, "def job(cfg, workdir): return {'preempted': False}")
    assert proc.returncode == 0, proc.stderr
    assert '"batch_size"' not in proc.stderr and "devices" in proc.stderr


def test_stage2_refuses_another_split_than_stage1(workdir):
    root, cfg, _, _ = workdir
    with pytest.raises(ValueError, match="stage 2 --split=random differs from stage 1's per_file"):
        training.train_job(cfg.replace(stage=2, split="random"), str(root))


def test_rerun_with_another_score_recalibrates_without_training(tmp_path):
    path = timeline.write(timeline.generate(1500, seed=3), str(tmp_path / "flows.parquet"))
    cfg = config.smoke(data=path, epochs=1, batch_size=32)
    first = training.train_job(cfg, str(tmp_path))
    again = training.train_job(cfg.replace(score="mae"), str(tmp_path))
    assert again["resumed_from"] == first["steps"] and again["steps"] == first["steps"]
    det, threshold = calibration.load(os.path.join(tmp_path, "stage1"))
    assert det.members[0].name == "quantile:mae" and threshold.value == again["threshold"]["value"]
    assert again["threshold"]["value"] != first["threshold"]["value"]


def test_stage2_refuses_an_unfinished_stage1(workdir, tmp_path):
    # A preempted stage 1 has checkpoints but no threshold: stage 2 must not train on it.
    import shutil

    root, cfg, _, _ = workdir
    shutil.copytree(root / "stage1", tmp_path / "stage1")
    os.remove(tmp_path / "stage1" / calibration.THRESHOLD_FILE)
    with pytest.raises(FileNotFoundError, match="stage 1 in .* did not finish"):
        training.train_job(cfg.replace(stage=2), str(tmp_path))


def _launch_with_job(tmp_path, job: str):
    """launch/train.py run with ``training.train_job`` replaced by ``job`` (Python source
    defining ``job(cfg, workdir)``): only what the launcher does with its end is tested."""
    import subprocess
    import sys

    launcher = os.path.join(os.path.dirname(__file__), "..", "..", "launch", "train.py")
    code = (
        "import runpy, sys; from lstmae_jax import console; from lstmae_jax.jobs import training\n"
        f"{job}\n"
        "training.train_job = job\n"
        f"sys.argv = ['train.py', '--workdir={tmp_path}', '--data=x.parquet']\n"
        f"runpy.run_path({launcher!r}, run_name='__main__')"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def test_launcher_exits_nonzero_when_preempted(tmp_path):
    # SIGTERM ends fit with preempted=True; the launcher must not report success, or
    # `make demo` would go on to stage 2.
    proc = _launch_with_job(
        tmp_path, "def job(cfg, workdir): return {'preempted': True, 'steps': 6}"
    )
    assert proc.returncode == 143, proc.stderr
    assert "preempted at step 6" in proc.stderr


def test_launcher_reports_ctrl_c_in_one_line(tmp_path):
    # loop.fit turns SIGINT into console.Interrupted after saving (tests/train/test_loop.py);
    # the launcher prints its message as one line and exits 130, no traceback.
    job = "def job(cfg, workdir): raise console.Interrupted('W/stage1: stopped at step 6')"
    proc = _launch_with_job(tmp_path, job)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "interrupted: W/stage1: stopped at step 6"
    assert "Traceback" not in proc.stderr


def test_a_failed_write_during_training_is_one_line(tmp_path):
    """Every file the trainer may write is capped (RLIMIT_FSIZE: EFBIG, as a full disk
    gives ENOSPC): the TensorBoard copy warns once and stops, then the metrics record ends
    the run with one line naming the file and the cause; no traceback, no temporary."""
    import resource
    import signal
    import subprocess
    import sys

    pytest.importorskip("tensorboardX")
    data = timeline.write(timeline.generate(2000, seed=3), str(tmp_path / "flows.parquet"))
    launcher = os.path.join(os.path.dirname(__file__), "..", "..", "launch", "train.py")

    def capped():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the cap fails, EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))

    argv = [
        sys.executable, launcher, f"--data={data}", f"--workdir={tmp_path / 'w'}", "--window=4",
        "--encoder_sizes=8", "--decoder_sizes=8", "--batch_size=16", "--epochs=2",
        "--log_every_steps=1", "--tensorboard",
    ]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, preexec_fn=capped)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, lines[-5:]
    assert "Traceback" not in proc.stderr
    warned = [line for line in lines if "TensorBoard stopped" in line]
    assert len(warned) == 1 and "File too large (EFBIG)" in warned[0]
    metrics = tmp_path / "w" / "stage1" / "metrics.jsonl"
    assert lines[-1].startswith(f"error: cannot write {metrics}: File too large (EFBIG);")
    left = [p for p in (tmp_path / "w").rglob("*") if "tmp" in p.name]
    assert not left, left


def test_evaluate_checks_its_output_before_scoring(workdir, tmp_path, monkeypatch):
    root, cfg, _, _ = workdir

    def must_not_load(*args, **kwargs):
        raise AssertionError("loaded data before checking --output")

    monkeypatch.setattr(evaluate.dataset, "load_flows", must_not_load)
    with pytest.raises(ValueError, match="is a directory"):
        evaluate.evaluate_job(str(root), cfg.data, str(tmp_path))


def test_load_run_refuses_an_older_step_than_the_run_finished_at(workdir, tmp_path):
    # A corrupt latest step falls back to an older one (checkpoint.py); a finished run's
    # threshold belongs to the newer parameters, so loading it must stop, not go on.
    import shutil

    root = workdir[0]
    shutil.copytree(root / "stage1", tmp_path / "stage1")
    ckpts = tmp_path / "stage1" / "checkpoints"
    latest = max((p for p in ckpts.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    data_file = max((p for p in (latest / "state").rglob("*") if p.is_file()), key=os.path.getsize)
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data_file.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="newest intact checkpoint is step .*; re-run"):
        rundir.load_run(str(tmp_path / "stage1"))


def _extend_and_preempt(cfg, workdir, monkeypatch, at_batch=3):
    """Re-runs a finished stage 1 with more epochs and stops it by SIGTERM."""
    import signal

    calls = {"n": 0}
    real_next = windows.BatchOrder.next

    def next_and_preempt(self):
        calls["n"] += 1
        if calls["n"] == at_batch:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_next(self)

    monkeypatch.setattr(windows.BatchOrder, "next", next_and_preempt)
    summary = training.train_job(cfg.replace(epochs=cfg.epochs + 2), str(workdir))
    monkeypatch.setattr(windows.BatchOrder, "next", real_next)
    assert summary["preempted"]
    return summary


def test_calibration_is_tied_to_the_step_it_was_fitted_for(workdir, tmp_path, monkeypatch):
    # An extended, then preempted stage 1 holds newer best weights than its error model
    # and threshold were fitted for: export, evaluate and stage 2 must not pair them.
    import shutil

    from lstmae_jax.jobs import export

    root, cfg, s1, _ = workdir
    for name in (calibration.ERROR_MODEL_FILE, calibration.THRESHOLD_FILE):
        saved = json.loads((root / "stage1" / name).read_text())
        assert saved["fitted_for"] == {"checkpoint": "best", "step": s1["steps"]}
    shutil.copytree(root / "stage1", tmp_path / "stage1")
    extended = _extend_and_preempt(cfg, tmp_path, monkeypatch)
    message = (
        rf"fitted for the best parameters as of step {s1['steps']}, but the checkpoint is at"
        rf" step {extended['steps']}.*re-run training"
    )
    with pytest.raises(ValueError, match=message):
        export.export_scorer(str(tmp_path), str(tmp_path / "artifact"))
    with pytest.raises(ValueError, match=message):
        evaluate.evaluate_job(str(tmp_path), cfg.data, str(tmp_path / "r.json"), plots=False)
    with pytest.raises(ValueError, match=message):
        training.train_job(cfg.replace(stage=2), str(tmp_path))
    # Finishing the stage recalibrates for the new step; then all is consistent again.
    finished = training.train_job(cfg.replace(epochs=cfg.epochs + 2), str(tmp_path))
    assert finished["threshold"]["fitted_for"]["step"] == finished["steps"] > s1["steps"]
    rundir.load_run(str(tmp_path / "stage1"))


def test_calibration_files_without_a_step_load_with_a_warning(workdir, tmp_path, caplog):
    import logging
    import shutil

    root = workdir[0]
    shutil.copytree(root / "stage1", tmp_path / "stage1")
    for name in (calibration.ERROR_MODEL_FILE, calibration.THRESHOLD_FILE):
        path = tmp_path / "stage1" / name
        path.write_text(
            json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "fitted_for"})
        )
    with caplog.at_level(logging.WARNING):
        _, meta = rundir.load_run(str(tmp_path / "stage1"))
    assert meta["error_model"] == rundir.load_run(str(root / "stage1"))[1]["error_model"]
    assert any("no record of the checkpoint step" in r.getMessage() for r in caplog.records)


def test_evaluating_the_test_split_of_other_data_warns(workdir, tmp_path, caplog):
    import logging

    root, cfg, _, _ = workdir
    other = timeline.write(timeline.generate(1500, seed=9), str(tmp_path / "other.parquet"))
    with caplog.at_level(logging.WARNING):
        evaluate.evaluate_job(str(root), other, str(tmp_path / "r.json"), plots=False)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(other in m and cfg.data in m and "not the data" in m for m in warned), warned
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        evaluate.evaluate_job(str(root), cfg.data, str(tmp_path / "r.json"), plots=False)
    assert not [r for r in caplog.records if "not the data" in r.getMessage()]


def test_a_classifier_needs_two_classes_to_train(tmp_path):
    # One class trains to loss 0 and labels everything with it: refused, naming the class.
    benign = timeline.generate(1200, seed=5, attack_fraction=0.0)
    path = timeline.write(benign, str(tmp_path / "benign.parquet"))
    cfg = config.smoke(data=path, epochs=1, batch_size=32)
    training.train_job(cfg, str(tmp_path))  # stage 1 trains on benign windows: fine
    message = r"training windows hold one class \('Benign'\).*at least 2"
    with pytest.raises(ValueError, match=message):
        training.train_job(cfg.replace(stage=2), str(tmp_path))
    with pytest.raises(ValueError, match=message):
        training.train_job(cfg.replace(model="dnn"), str(tmp_path))
    assert not os.path.exists(tmp_path / "stage2" / "checkpoints")


def test_stage2_refuses_another_scaler_than_stage1s(trained_workdir):
    # Found by probing issue 16: stage 2 used stage 1's scaler and recorded --scaler=minmax.
    root, cfg, _, _ = trained_workdir
    with pytest.raises(ValueError, match="stage 2 --scaler=standard differs from stage 1's"):
        training.train_job(cfg.replace(stage=2, scaler="standard"), str(root))


def test_disagreements_name_the_process_and_the_file_or_option():
    def run(files, epochs=2):
        fps = [[name, {"bytes": 10, "sha256": fp}] for name, fp in files]
        return {"error": None, "config": {"epochs": epochs, "window": 4}, "files": fps}

    days = [("day0.parquet", "a"), ("day1.parquet", "b")]
    assert training.disagreements([run(days), run(days)]) == []
    assert training.disagreements([run(days), run(days[::-1])]) == [
        "process 1 lists the --data files in another order than process 0"
    ]
    assert training.disagreements(
        [run(days), run(days), run([days[0], ("day1.parquet", "c")])]
    ) == ["day1.parquet differs between process 0 and process 2 (another size or content)"]
    assert training.disagreements([run(days), run(days[:1], epochs=3)]) == [
        "--epochs is 2 on process 0, 3 on process 1",
        "day1.parquet is in --data on process 0, not on process 1",
    ]
    lost = {"error": "FileNotFoundError: no Parquet files match /data/days"}
    assert training.disagreements([run(days), lost]) == [
        "process 1 cannot read --data: FileNotFoundError: no Parquet files match /data/days"
    ]
