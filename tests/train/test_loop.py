"""Training: resume is exact, 4 devices = 1 device, early stopping, preemption, NaN stop."""

import dataclasses
import json
import logging
import os
import shutil
import signal

import jax
import numpy as np
import pytest
from flax import nnx

from lstmae_jax import config, console
from lstmae_jax.data import dataset, windows
from lstmae_jax.train import loop, sharding


def _windowed(window=4, n=600, seed=0, benign_only=True):
    """Benign flows with two attack bursts; feature 0 jumps during attacks."""
    rng = np.random.default_rng(seed)
    label = np.zeros(n, np.int32)
    label[400:440] = 1
    label[520:560] = 1
    x = rng.exponential(100.0, (n, 3)).astype(np.float32)
    x[label == 1, 0] *= 50
    flows = dataset.Flows(
        x_NxF=x,
        label_N=label,
        file_N=np.zeros(n, np.int32),
        classes=("Benign", "DDoS"),
        features=("flow_duration", "tot_fwd_pkts", "syn_flag_cnt"),
        files=("synthetic",),
        reports=(),
    )
    kinds = config.smoke().representations()  # the networks' (quantile, log)
    return windows.build(
        flows, window=window, split="temporal", train_benign_only=benign_only, scaler_kinds=kinds
    )


def _params(model):
    return jax.tree.leaves(jax.device_get(nnx.state(model, nnx.Param)))


def _assert_same(a, b):
    for x, y in zip(_params(a), _params(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    cfg = config.smoke(epochs=3, patience=5)
    run_dir = str(tmp_path_factory.mktemp("full"))
    return cfg, loop.fit(cfg, run_dir, _windowed())


@pytest.mark.device_check
def test_loss_decreases_and_metrics_written(uninterrupted):
    cfg, result = uninterrupted
    assert len(result.history) == 3
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    assert result.resumed_from is None and not result.preempted


@pytest.mark.device_check
def test_resume_is_exact(uninterrupted, tmp_path):
    cfg, full = uninterrupted
    run_dir = str(tmp_path)
    first = loop.fit(cfg, run_dir, _windowed(), max_steps=13)  # mid-epoch 2 (9 steps/epoch)
    assert first.steps == 13
    resumed = loop.fit(cfg, run_dir, _windowed())
    assert resumed.resumed_from == 13
    assert resumed.steps == full.steps
    _assert_same(resumed.model, full.model)
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in full.history]
    lines = open(os.path.join(run_dir, "metrics.jsonl")).read().splitlines()
    assert any('"compile_time_s"' in line for line in lines)


def test_resume_refuses_another_config(uninterrupted, tmp_path):
    cfg, _ = uninterrupted
    loop.fit(cfg, str(tmp_path), _windowed(), max_steps=2)
    with pytest.raises(ValueError, match="another config"):
        loop.fit(cfg.replace(learning_rate=0.5), str(tmp_path), _windowed())


def _signal_at_batch(monkeypatch, sig: int, n: int = 6) -> None:
    """Sends ``sig`` to this process while the n-th batch is drawn (step n runs, then the
    loop sees the flag)."""
    calls = {"n": 0}
    real_next = windows.BatchOrder.next

    def next_and_signal(self):
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), sig)
        return real_next(self)

    monkeypatch.setattr(windows.BatchOrder, "next", next_and_signal)


def test_sigterm_saves_and_resume_matches(uninterrupted, tmp_path, monkeypatch):
    cfg, full = uninterrupted
    with monkeypatch.context() as m:
        _signal_at_batch(m, signal.SIGTERM)
        stopped = loop.fit(cfg, str(tmp_path), _windowed())
    assert stopped.preempted and stopped.steps == 6
    resumed = loop.fit(cfg, str(tmp_path), _windowed())
    assert resumed.resumed_from == 6
    _assert_same(resumed.model, full.model)


def test_sigint_saves_raises_how_to_resume_and_resume_matches(uninterrupted, tmp_path, monkeypatch):
    # Ctrl-C in a script (Detector.fit, train_job): the checkpoint of the step in hand is
    # written whole, then console.Interrupted (a KeyboardInterrupt) says how to resume.
    cfg, full = uninterrupted
    with monkeypatch.context() as m:
        _signal_at_batch(m, signal.SIGINT)
        with pytest.raises(console.Interrupted, match="at step 6, checkpoint saved; run the same"):
            loop.fit(cfg, str(tmp_path), _windowed())
    assert issubclass(console.Interrupted, KeyboardInterrupt)
    assert max(int(n) for n in os.listdir(tmp_path / "checkpoints") if n.isdigit()) == 6
    assert not [n for n in os.listdir(tmp_path / "checkpoints") if "tmp" in n]
    resumed = loop.fit(cfg, str(tmp_path), _windowed())
    assert resumed.resumed_from == 6
    _assert_same(resumed.model, full.model)


def test_four_devices_equal_one_device(tmp_path):
    assert jax.device_count() == 4  # tests/conftest.py fakes 4 CPU devices
    cfg = config.smoke(epochs=1)
    one = loop.fit(
        cfg, str(tmp_path / "one"), _windowed(), mesh=sharding.make_mesh(jax.devices()[:1])
    )
    four = loop.fit(cfg, str(tmp_path / "four"), _windowed(), mesh=sharding.make_mesh())
    # Same global batch and mean loss; only the order of the cross-device gradient sum
    # differs, so parameters agree to float32 rounding accumulated over 9 Adam steps.
    for a, b in zip(_params(one.model), _params(four.model), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_uneven_batch_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not split evenly over 4 devices"):
        loop.fit(config.smoke(batch_size=10), str(tmp_path), _windowed())


def test_early_stopping_restores_best(tmp_path, caplog):
    # A vanishing learning rate: no epoch after the first improves by min_delta.
    caplog.set_level(logging.INFO)
    cfg = config.smoke(epochs=10, patience=2, learning_rate=1e-12, warmup_steps=0)
    result = loop.fit(cfg, str(tmp_path), _windowed())
    assert result.stopped_early and result.ended.startswith("early stopping")
    assert len(result.history) == 3  # epoch 1 sets the best, 2 and 3 do not improve
    # The ETA counted to the 10-epoch cap that early stopping cut short: it says so.
    lines = [r.getMessage() for r in caplog.records if r.name == "absl"]
    assert any(" steps/s, ETA <= " in line for line in lines), lines
    assert any("early stopping (--patience=2) usually ends it sooner" in line for line in lines)


def test_no_bad_epochs_while_the_learning_rate_warms_up(tmp_path):
    # The same vanishing rate, but every epoch ends inside the warmup: none counts against
    # patience or the plateau, so the rate is never cut and the epoch cap ends training.
    # (Before this rule a training set of a few steps an epoch lost its rate to the plateau
    # during warmup and kept its initial weights.)
    cfg = config.smoke(epochs=4, patience=2, lr_patience=1, learning_rate=1e-12)
    assert cfg.warmup_steps > 4 * len(_windowed().starts["train"]) // cfg.batch_size
    result = loop.fit(cfg, str(tmp_path), _windowed())
    assert not result.stopped_early and result.ended.startswith("epoch cap")
    assert [h["peak_learning_rate"] for h in result.history] == pytest.approx([1e-12] * 4)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def _step_lines(run_dir) -> list[dict]:
    from lstmae_jax.train import monitor

    records = monitor.read_jsonl(os.path.join(run_dir, monitor.METRICS_FILE))
    return [r for r in records if "loss" in r]


def test_a_warmup_outlasting_training_warns_and_the_applied_rate_is_logged(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    cfg = config.smoke(epochs=3)  # the default 100-step warm-up
    n = loop.fit(cfg, str(tmp_path), _windowed()).steps
    assert n == 66  # 3 epochs of 22 steps: all in the warm-up
    (warning,) = [w for w in _warnings(caplog) if "outlasts" in w]
    assert warning.startswith("--warmup_steps=100 outlasts training (66 steps)")
    assert "reaches only 0.00066, 66% of --learning_rate=0.001" in warning
    assert "--warmup_steps=6" in warning  # a tenth of the steps
    # Each step line logs the rate its step applied: the peak times step / warm-up.
    lines = _step_lines(tmp_path)
    assert len(lines) > 10
    for r in lines:
        assert r["learning_rate"] == pytest.approx(1e-3 * r["step"] / 100, rel=1e-6)


def test_the_logged_rate_follows_the_warmup_then_the_plateaus(tmp_path, caplog):
    # A vanishing peak rate: after the 5-step warm-up no epoch improves, and each lowers
    # the peak by lr_decay; long enough a run for its warm-up: no warning.
    caplog.set_level(logging.WARNING)
    cfg = config.smoke(epochs=3, lr_patience=1, patience=5, lr_decay=0.5, learning_rate=1e-12,
                       warmup_steps=5)  # fmt: skip
    result = loop.fit(cfg, str(tmp_path), _windowed())
    assert not [w for w in _warnings(caplog) if "outlasts" in w]
    peaks = [h["peak_learning_rate"] for h in result.history]
    assert peaks == pytest.approx([1e-12, 1e-12, 5e-13])  # epoch 3 trained at the lowered peak
    for r in _step_lines(tmp_path):  # the peak of its epoch times the warm-up share
        peak = next(h for h in result.history if h["step"] >= r["step"])["peak_learning_rate"]
        assert r["learning_rate"] == pytest.approx(peak * min(1, r["step"] / 5), rel=1e-6)
    assert [h["learning_rate"] for h in result.history] == pytest.approx(peaks, rel=1e-6)


def test_learning_rate_drops_on_a_plateau(tmp_path):
    cfg = config.smoke(
        epochs=10, patience=3, lr_patience=1, lr_decay=0.5, learning_rate=1e-12, warmup_steps=0
    )
    result = loop.fit(cfg, str(tmp_path), _windowed())
    # Each epoch records the rate it trained with; each bad epoch halves it afterwards.
    assert [h["learning_rate"] for h in result.history] == pytest.approx(
        [1e-12, 1e-12, 5e-13, 2.5e-13]
    )


def test_epoch_cap_is_reported(uninterrupted):
    _, result = uninterrupted
    assert result.ended.startswith("epoch cap") and not result.stopped_early


def test_warmup_and_clipping_shape_the_first_step():
    """Step 1 moves the parameters by warmup/warmup_steps of Adam's step, and clipping
    leaves Adam's step unchanged in size (it is scale-free) but not the gradient."""
    import jax.numpy as jnp
    import optax

    from lstmae_jax.train import steps

    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.array([30.0, 40.0, 0.0])}  # global norm 50
    for warmup, expected in ((1, 1e-2), (10, 1e-3)):
        tx = steps.optimizer(config.smoke(learning_rate=1e-2, warmup_steps=warmup, members=()))
        updates, state = tx.update(grads, tx.init(params), params)
        np.testing.assert_allclose(np.abs(updates["w"][:2]), expected, rtol=1e-3)
        assert steps.learning_rate(state) == pytest.approx(1e-2)
    # Adam's first moment after one step is (1 - b1) * the (clipped) gradient.
    for clip, norm in ((1.0, 1.0), (0.0, 50.0)):
        tx = steps.optimizer(config.smoke(grad_clip=clip, members=()))  # one network
        _, state = tx.update(grads, tx.init(params), params)
        mu = optax.tree_utils.tree_get(state, "mu")
        assert float(optax.tree.norm(mu)) == pytest.approx(0.1 * norm, rel=1e-5)


def test_each_network_is_clipped_on_its_own():
    """K stacked networks: each network's gradient is clipped by its own norm, so a large
    gradient of one does not shrink another's (each gets the update it would alone)."""
    import jax.numpy as jnp
    import optax

    from lstmae_jax.train import steps

    cfg = config.smoke(grad_clip=1.0)
    assert len(cfg.stage1_networks()) == 2
    params = {"a": jnp.ones((2, 3)), "b": jnp.ones((2, 1))}
    grads = {"a": jnp.array([[30.0, 40.0, 0.0], [0.3, 0.0, 0.0]]), "b": jnp.array([[0.0], [0.4]])}
    tx = steps.optimizer(cfg)
    _, state = tx.update(grads, tx.init(params), params)
    mu = optax.tree_utils.tree_get(state, "mu")  # 0.1 * the clipped gradient
    # Network 0 (norm 50) is clipped to norm 1; network 1 (norm 0.5) is left alone.
    np.testing.assert_allclose(np.asarray(mu["a"][0]) / 0.1, [0.6, 0.8, 0.0], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(mu["a"][1]) / 0.1, [0.3, 0.0, 0.0], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(mu["b"][1]) / 0.1, [0.4], rtol=1e-5)


def test_non_finite_loss_stops_with_step(tmp_path):
    w = _windowed()
    x = w.x_NxF.copy()
    x[w.starts["train"]] = np.nan  # every training window
    bad = dataclasses.replace(w, x_NxF=x)
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* at step \d+"):
        loop.fit(config.smoke(epochs=1), str(tmp_path), bad)


def test_stage2_frozen_encoder_is_unchanged(tmp_path):
    w = _windowed()
    s1_cfg = config.smoke(epochs=1, members=())  # one network: its encoder
    ae = loop.fit(s1_cfg, str(tmp_path / "stage1"), w).model
    cfg = config.smoke(epochs=1, stage=2, freeze_encoder=True)

    def init(model):
        nnx.update(model.encoder, nnx.state(ae.encoder))

    s2 = loop.fit(cfg, str(tmp_path / "stage2"), w, init=init).model
    for a, b in zip(
        jax.tree.leaves(nnx.state(ae.encoder, nnx.Param)),
        jax.tree.leaves(nnx.state(s2.encoder, nnx.Param)),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert s2(w.x_NxF[None, :4]).shape == (1, 2)


def test_no_validation_windows_is_a_clear_error(tmp_path):
    cfg = config.smoke(split_fractions=(0.8, 0.0, 0.2))
    w = _windowed()
    w = windows.build(
        dataset.Flows(
            w.x_NxF,
            w.label_N,
            np.zeros(len(w.label_N), np.int32),
            w.classes,
            w.features,
            ("f",),
            (),
        ),
        window=4,
        fractions=cfg.split_fractions,
        train_benign_only=True,
        scaler_kinds=cfg.representations(),
    )
    with pytest.raises(ValueError, match="no validation windows without attacks"):
        loop.fit(cfg, str(tmp_path), w)


def test_resume_ignores_bookkeeping_options(uninterrupted, tmp_path):
    cfg, _ = uninterrupted
    loop.fit(cfg, str(tmp_path), _windowed(), max_steps=2)
    resumed = loop.fit(
        cfg.replace(log_every_steps=3, process_id=0), str(tmp_path), _windowed(), max_steps=4
    )
    assert resumed.resumed_from == 2 and resumed.steps == 4


def test_resume_ignores_speed_options(uninterrupted, tmp_path):
    cfg, _ = uninterrupted
    loop.fit(cfg, str(tmp_path), _windowed(), max_steps=2)
    resumed = loop.fit(
        cfg.replace(unroll=1, lstm_backward="fused"), str(tmp_path), _windowed(), max_steps=4
    )
    assert resumed.resumed_from == 2 and resumed.steps == 4


def test_resume_reads_options_added_since_as_defaults(uninterrupted, tmp_path, monkeypatch):
    # A run saved before an option existed (its config lacks the key) resumes when the
    # option is at its default, and is refused when it is not.
    cfg, _ = uninterrupted
    real = config.Config.to_json

    def without_dtype(self):
        d = real(self)
        d.pop("dtype")
        return d

    monkeypatch.setattr(config.Config, "to_json", without_dtype)
    loop.fit(cfg, str(tmp_path), _windowed(), max_steps=2)
    monkeypatch.setattr(config.Config, "to_json", real)
    resumed = loop.fit(cfg, str(tmp_path), _windowed(), max_steps=3)
    assert resumed.resumed_from == 2
    with pytest.raises(ValueError, match="another config.*dtype"):
        loop.fit(cfg.replace(dtype="bfloat16"), str(tmp_path), _windowed(), max_steps=4)


def test_a_run_made_before_members_resumes_as_such(tmp_path, monkeypatch):
    # A config saved before --members existed reads as members=[] (one network): stage 1
    # resumes only with --members= (the refusal says so); a classifier, which has no
    # members, resumes as it is.
    real = config.Config.to_json

    def without_members(self):
        d = real(self)
        d.pop("members")
        return d

    s1 = config.smoke(epochs=1)
    dnn = config.smoke(epochs=1, model="dnn")
    w, labelled = _windowed(), _windowed(benign_only=False)
    monkeypatch.setattr(config.Config, "to_json", without_members)
    loop.fit(s1.replace(members=()), str(tmp_path / "s1"), w, max_steps=2)
    loop.fit(dnn, str(tmp_path / "dnn"), labelled, max_steps=2)
    monkeypatch.setattr(config.Config, "to_json", real)
    with pytest.raises(ValueError, match="another config.*members.*resumes with --members="):
        loop.fit(s1, str(tmp_path / "s1"), w, max_steps=3)
    assert loop.fit(s1.replace(members=()), str(tmp_path / "s1"), w, max_steps=3).resumed_from == 2
    assert loop.fit(dnn, str(tmp_path / "dnn"), labelled, max_steps=3).resumed_from == 2


def test_steps_per_call_trains_the_same(uninterrupted, tmp_path):
    # K steps per call, with boundaries (log, checkpoint, epoch end) falling inside a
    # K-block handled by single steps: the same parameters, history and checkpoints.
    base = config.smoke(epochs=3, patience=5, log_every_steps=6, checkpoint_every_steps=6)
    full = loop.fit(base, str(tmp_path / "one"), _windowed())
    k = base.replace(steps_per_call=3)
    result = loop.fit(k, str(tmp_path / "k"), _windowed())
    assert result.steps == full.steps
    _assert_same(result.model, full.model)
    assert [h["val_loss"] for h in result.history] == [h["val_loss"] for h in full.history]
    lines = [json.loads(x) for x in open(tmp_path / "k" / "metrics.jsonl")]
    # Both executables ran: 3-step calls between boundaries, single steps up to them.
    assert len([x for x in lines if "compile_time_s" in x]) == 2
    logged = [x["step"] for x in lines if "loss" in x]
    assert logged and all(
        s % base.log_every_steps == 0 or s in {h["step"] for h in full.history} for s in logged
    )
    # Resuming a K-step run with single steps continues exactly.
    loop.fit(k, str(tmp_path / "r"), _windowed(), max_steps=7)
    resumed = loop.fit(base, str(tmp_path / "r"), _windowed())
    _assert_same(resumed.model, full.model)


def test_steps_per_call_must_fit_the_intervals():
    with pytest.raises(ValueError, match="--steps_per_call=8 must be <= --log_every_steps"):
        config.smoke(steps_per_call=8)


def test_a_finished_run_can_be_extended(uninterrupted, tmp_path):
    # More epochs (and more patience) on resume: accepted, training continues from there.
    cfg, _ = uninterrupted
    short = cfg.replace(epochs=1)
    first = loop.fit(short, str(tmp_path), _windowed())
    longer = loop.fit(short.replace(epochs=2, patience=7), str(tmp_path), _windowed())
    assert longer.resumed_from == first.steps and longer.steps == 2 * first.steps
    assert len(longer.history) == 2


def test_more_patience_extends_an_early_stopped_run(tmp_path):
    # min_delta=0.9: every epoch after the first counts as no improvement; patience=1 stops.
    cfg = config.smoke(epochs=6, patience=1, lr_patience=1, min_delta=0.9, warmup_steps=0)
    first = loop.fit(cfg, str(tmp_path), _windowed())
    assert first.stopped_early
    more = loop.fit(cfg.replace(patience=3), str(tmp_path), _windowed())
    assert more.steps > first.steps and len(more.history) > len(first.history)


def test_resume_cuts_metrics_back_to_the_checkpoint(uninterrupted, tmp_path):
    # Steps logged after the last checkpoint (a kill before the next save) run again on
    # resume: their records are dropped first, as is a line torn by the kill.
    cfg, _ = uninterrupted
    loop.fit(cfg, str(tmp_path), _windowed(), max_steps=4)
    path = tmp_path / "metrics.jsonl"
    with open(path, "a") as f:
        f.write(json.dumps({"step": 5, "loss": 1.0}) + "\n" + '{"step": 6, "lo')
    loop.fit(cfg, str(tmp_path), _windowed(), max_steps=6)
    steps = [json.loads(x)["step"] for x in open(path) if '"loss"' in x]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) and steps[-1] == 6


def test_read_jsonl_skips_only_a_torn_last_line(tmp_path):
    from lstmae_jax.train import monitor

    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"st')
    assert [r["step"] for r in monitor.read_jsonl(str(path))] == [1, 2]
    path.write_text('{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(ValueError, match="m.jsonl, line 2: not JSON"):
        monitor.read_jsonl(str(path))


def test_tensorboard_events_match_metrics_jsonl(tmp_path, tensorboard_events):
    from lstmae_jax.train import monitor

    cfg = config.smoke(epochs=1, tensorboard=True)
    loop.fit(cfg, str(tmp_path), _windowed(), max_steps=6)
    # Killed after logging step 6 but before its checkpoint: the resume starts at step 4
    # and runs steps 5 and 6 again; their first records must not show twice.
    shutil.rmtree(tmp_path / "checkpoints" / "6")
    result = loop.fit(cfg, str(tmp_path), _windowed())
    assert result.resumed_from == 4 and result.history
    expected: dict[str, list[tuple[int, float]]] = {}
    for record in monitor.read_jsonl(str(tmp_path / monitor.METRICS_FILE)):
        for key, value in record.items():
            if key != "step" and value is not None:
                point = (record["step"], float(np.float32(value)))
                expected.setdefault(monitor.tensorboard_tag(key), []).append(point)
    events = tmp_path / monitor.TENSORBOARD_DIR
    assert len(os.listdir(events)) == 2  # one event file per run of fit
    got, hparams = tensorboard_events(events)
    # Prefixed as the flax examples: training under train/, validation under eval/.
    assert {"train/loss", "train/grad_norm", "train/steps_per_s", "train/learning_rate"} <= set(got)
    assert {"eval/val_loss", "eval/best_val_loss"} <= set(got)
    assert got == expected
    assert [s for s, _ in got["train/loss"]] == sorted({s for s, _ in got["train/loss"]})
    # The config as the run's hyperparameters; lists as text.
    assert hparams["epochs"] == 1 and hparams["model"] == "lstm_ae"
    assert hparams["encoder_sizes"] == "8" and hparams["tensorboard"] is True


def test_tensorboard_missing_is_a_clear_error_at_start(tmp_path, monkeypatch):
    import sys

    from lstmae_jax.jobs import training

    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails as if missing
    cfg = config.smoke(data=str(tmp_path / "absent.parquet"), tensorboard=True)
    # Before the data is read (the path does not exist) and before any training.
    with pytest.raises(ImportError, match=r"pip install 'lstmae-jax\[tensorboard\]'"):
        training.train_job(cfg, str(tmp_path))
    with pytest.raises(ImportError, match=r"pip install 'lstmae-jax\[tensorboard\]'"):
        loop.fit(cfg, str(tmp_path / "run"), _windowed())
