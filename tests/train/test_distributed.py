"""Two processes for real: 2 x 2 CPU devices joined by ``jax.distributed`` train as one
process with 4 devices.

Three runs of ``launch/train.py`` on the same tiny data and flags:

* ``two``: 2 processes, 2 CPU devices each, ``--distributed`` on localhost; each
  process feeds only its own rows of every batch, and writes into the one workdir.
* ``one``: 1 process with 4 devices, also ``--distributed`` (a cluster of one).
* ``plain``: 1 process with 4 devices, no ``jax.distributed``.

And with ``--share_data`` (each process loads only its share of the row groups):

* ``shared``: 2 processes of 2 devices, ``--share_data``;
* ``resumed``: the same for one epoch, then run again for two (it resumes).

``two`` and ``one`` must agree bit for bit. Once ``jax.distributed`` is initialised, CPU
collectives go through Gloo, whose all-reduce is a ring over the 4 devices whether they
sit in 1 process or 2; so any difference would be ours (wrong rows fed, a batch counted
twice, a second writer). ``plain`` uses XLA's in-process all-reduce, which adds the 4
per-device gradients in another order; float32 addition is not associative, so it
agrees only to rounding, with the bound of tests/train/test_loop.py's 1-vs-4-device test.
"""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import jax
import numpy as np
import pyarrow.parquet as pq
import pytest
from flax import nnx

from lstmae_jax.jobs import rundir
from lstmae_jax.synthetic import timeline
from lstmae_jax.train import monitor, sharding

LAUNCHER = pathlib.Path(__file__).resolve().parents[2] / "launch" / "train.py"
TIMEOUT_S = 240  # each wave of runs (about 60 s on 2 cores); then the rest are killed
FLAGS = [
    "--window=4",
    # Every kind of member: each process's windows feed the error models, the latent
    # references, the rarity Gaussian and the p-value tables (joined across processes).
    "--score=zscore",
    "--members=log:sse,log:latent,quantile:rarity",
    "--encoder_sizes=8",
    "--decoder_sizes=8",
    "--batch_size=16",
    "--eval_batch_size=32",
    "--epochs=2",
    "--log_every_steps=5",
    "--checkpoint_every_steps=10",
    "--keep_checkpoints=2",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster(port: int, num_processes: int, process_id: int) -> list[str]:
    return [
        "--distributed",
        f"--coordinator_address=127.0.0.1:{port}",
        f"--num_processes={num_processes}",
        f"--process_id={process_id}",
    ]


def _start(out: pathlib.Path, name: str, argv: list[str], devices: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
    }
    with open(out / f"{name}.log", "w") as log:  # a file, not a pipe: a full pipe blocks
        return subprocess.Popen(
            [sys.executable, str(LAUNCHER), *argv], stdout=log, stderr=subprocess.STDOUT, env=env
        )


def _wait(procs: dict[str, subprocess.Popen], out: pathlib.Path) -> None:
    """Waits for all; the first failure or the deadline kills the rest, so a process
    whose peer died cannot keep the test waiting for it."""
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while any(p.poll() is None for p in procs.values()):
            if any(p.poll() not in (None, 0) for p in procs.values()):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    bad = {name: p.returncode for name, p in procs.items() if p.returncode != 0}
    if bad:
        logs = {name: (out / f"{name}.log").read_text()[-3000:] for name in bad}
        pytest.fail(f"exit status {bad} (negative: killed); log tails: {logs}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    data = root / "days"
    data.mkdir()
    for i in range(3):  # three days of 200-row groups: 9 groups to share out
        day = timeline.write(timeline.generate(500, seed=i), str(data / f"day{i}.parquet"))
        pq.write_table(pq.read_table(day), day, row_group_size=200)
    common = [f"--data={data}", *FLAGS]

    def pair(name, port, extra):
        for i in range(2):
            argv = [f"--workdir={root / name}", *common, *extra, *_cluster(port, 2, i)]
            procs[f"{name}{i}"] = _start(root, f"{name}{i}", argv, 2)

    procs: dict[str, subprocess.Popen] = {}
    pair("two", _free_port(), [])
    pair("shared", _free_port(), ["--share_data"])
    pair("resumed", _free_port(), ["--share_data", "--epochs=1"])  # later: --epochs=2
    one = [f"--workdir={root / 'one'}", *common, *_cluster(_free_port(), 1, 0)]
    procs["one"] = _start(root, "one", one, 4)
    procs["plain"] = _start(root, "plain", [f"--workdir={root / 'plain'}", *common], 4)
    _wait(procs, root)
    procs.clear()
    pair("resumed", _free_port(), ["--share_data"])  # the same run, resumed for epoch 2
    _wait(procs, root)
    return root


def _params(run_dir: pathlib.Path) -> list[np.ndarray]:
    model, _ = rundir.load_run(str(run_dir))
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def _steps(run_dir: pathlib.Path) -> list[dict]:
    """The metrics records without the timings."""
    drop = {"steps_per_s", "windows_per_s", "step_time_ms", "compile_time_s"}
    records = monitor.read_jsonl(str(run_dir / "metrics.jsonl"))
    return [{k: v for k, v in r.items() if k not in drop} for r in records]


def test_two_processes_train_exactly_as_one(runs):
    for i in range(2):
        log = (runs / f"two{i}.log").read_text()
        assert f"process {i}/2, 2 local / 4 global devices" in log
    two, one = runs / "two" / "stage1", runs / "one" / "stage1"
    a, b = _params(two), _params(one)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    # One writer: process 1 logged nothing, so the records (losses, validation) are one
    # copy of the single process's.
    assert _steps(two) == _steps(one)
    for name in ("threshold.json", "error_model.json"):
        assert json.loads((two / name).read_text()) == json.loads((one / name).read_text())
    steps = [json.loads((d / "summary.json").read_text())["steps"] for d in (two, one)]
    assert steps[0] == steps[1] > 0


def test_two_processes_match_plain_one_process_to_rounding(runs):
    # Only the order in which the 4 per-device gradients are added differs (Gloo's ring
    # vs. XLA's in-process sum): float32 rounding, accumulated over the Adam steps.
    two, plain = _params(runs / "two" / "stage1"), _params(runs / "plain" / "stage1")
    for x, y in zip(two, plain, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def _meta(run_dir: pathlib.Path) -> dict:
    return rundir.load_run(str(run_dir))[1]


def test_shared_processes_load_their_share_and_agree_on_the_data(runs):
    """Each process loaded part of the flows; together they saw what one host sees: the
    same flows and classes, the same split (windows: at most window - 1 fewer per row
    group, which windows do not cross when shared), a scaler with the same
    standard deviations and each quantile knot within one knot step (1/128 in rank) of
    one host's."""
    loaded = []
    for i in range(2):
        log = (runs / f"shared{i}.log").read_text()
        assert f"process {i}/2, 2 local / 4 global devices" in log
        line = next(ln for ln in log.splitlines() if "loaded its share" in ln)
        loaded.append(int(line.split("share: ")[1].split(" of ")[0]))
    shared, one = _meta(runs / "shared" / "stage1"), _meta(runs / "one" / "stage1")
    assert sum(loaded) == shared["data"]["flows"] == one["data"]["flows"]
    assert min(loaded) > 0.4 * sum(loaded)  # balanced
    assert shared["classes"] == one["classes"]
    row_groups, window = 9, 4
    for split in ("train", "val", "test"):
        lost = one["data"][split]["windows"] - shared["data"][split]["windows"]
        assert 0 <= lost <= (window - 1) * row_groups, (split, lost)
    assert [s["kind"] for s in shared["scalers"]] == [s["kind"] for s in one["scalers"]]
    for a, b in zip(shared["scalers"], one["scalers"], strict=True):  # quantile, then log
        assert a["log"] == b["log"]
        np.testing.assert_allclose(a["std"], b["std"], rtol=0.02)  # a few rows fewer
        np.testing.assert_allclose(a["mean"], b["mean"], rtol=0.02, atol=0.02)
        for knots_a, knots_b in zip(a["knots_x"], b["knots_x"], strict=True):
            lo = np.r_[knots_b[0], knots_b[:-1]]
            hi = np.r_[knots_b[1:], knots_b[-1]]
            assert np.all((lo <= knots_a) & (knots_a <= hi))


def test_shared_processes_train_like_one_and_resume_exactly(runs):
    """Other batches (each process draws from its own windows), so the validation loss
    agrees to 10% after each epoch; and a shared run stopped after one epoch and run
    again ends bit for bit where the uninterrupted one does."""
    shared, one = _steps(runs / "shared" / "stage1"), _steps(runs / "one" / "stage1")
    val = [[r["val_loss"] for r in rec if "val_loss" in r] for rec in (shared, one)]
    assert len(val[0]) == len(val[1]) == 2
    np.testing.assert_allclose(val[0], val[1], rtol=0.10)
    for x, y in zip(_params(runs / "shared" / "stage1"), _params(runs / "resumed" / "stage1"),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(x, y)
    # The same records, but for the resumed run's second compile record (timings dropped)
    resumed = _steps(runs / "resumed" / "stage1")
    assert [r for r in resumed if set(r) != {"step"}] == [r for r in shared if set(r) != {"step"}]
    for name in ("threshold.json", "error_model.json"):
        got = json.loads((runs / "resumed" / "stage1" / name).read_text())
        assert got == json.loads((runs / "shared" / "stage1" / name).read_text())


def _fake_mesh(owners: list[int]) -> SimpleNamespace:
    """What ``process_slice`` reads of a mesh: its devices' process indices."""
    devices = np.array([SimpleNamespace(process_index=p) for p in owners], dtype=object)
    return SimpleNamespace(devices=devices)


def test_processes_that_disagree_are_refused_before_writing(tmp_path):
    """Issue 27's case: the same flags but another --data list on process 1 (a folder of
    three days on 0, two of its files on 1); and the same data with another flag. Every
    process refuses with one line naming the file or the option, and the workdir stays
    empty."""
    data = tmp_path / "days"
    data.mkdir()
    for i in range(3):
        timeline.write(timeline.generate(300, seed=i), str(data / f"day{i}.parquet"))
    two_days = f"--data={data / 'day0.parquet'},{data / 'day1.parquet'}"
    cases = {
        "files": ([f"--data={data}"], [two_days]),
        "flags": ([f"--data={data}"], [f"--data={data}", "--epochs=3"]),
        "workdir": ([f"--data={data}"], [f"--data={data}"]),  # process 1: another workdir
        "locked": ([f"--data={data}"], [f"--data={data}"]),  # another trainer holds it
    }
    (tmp_path / "locked").mkdir()
    lock = {"host": socket.gethostname(), "pid": os.getpid()}  # alive: this test
    (tmp_path / "locked" / "train.lock").write_text(json.dumps(lock))
    procs = {}
    for name, extra in cases.items():
        port = _free_port()
        for i in range(2):
            work = tmp_path / (f"{name}{i}" if name == "workdir" else name)
            argv = [f"--workdir={work}", *FLAGS, *extra[i], *_cluster(port, 2, i)]
            argv += ["--share_data"] if name == "files" else []
            procs[f"{name}{i}"] = _start(tmp_path, f"{name}{i}", argv, 2)
    deadline = time.monotonic() + TIMEOUT_S
    while any(p.poll() is None for p in procs.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for p in procs.values():
        if p.poll() is None:
            p.kill()
    want = {
        "files": "day2.parquet is in --data on process 0, not on process 1",
        "flags": "--epochs is 2 on process 0, 3 on process 1",
        "workdir": f"--workdir is '{tmp_path / 'workdir0'}' on process 0, '{tmp_path / 'workdir1'}'",
        "locked": f"error: process 0: {tmp_path / 'locked'} is in use by another trainer",
    }
    for name, proc in procs.items():
        lines = (tmp_path / f"{name}.log").read_text().strip().splitlines()
        assert proc.returncode == 1, (name, lines[-5:])
        if name[:-1] != "locked":
            assert lines[-1].startswith("error: the 2 processes of this run disagree, so none")
        assert want[name[:-1]] in lines[-1], lines[-1]
    for work in tmp_path.glob("[fwl]*"):  # nothing written: no run directory, no record
        assert not (work / "stage1").exists()
    assert json.loads((tmp_path / "locked" / "train.lock").read_text()) == lock


def test_a_killed_process_ends_the_other_in_one_line(tmp_path):
    """SIGKILL of process 1 of 2 mid-training: process 0, waiting on it in a collective,
    stops within seconds (not after jax.distributed's 100 s heartbeat timeout, with a
    native stack) with one line saying which process was lost and how to resume, and
    leaves no half-written checkpoint."""
    from lstmae_jax.train import peers

    data = tmp_path / "days"
    data.mkdir()
    for i in range(2):
        day = timeline.write(timeline.generate(2000, seed=i), str(data / f"day{i}.parquet"))
        pq.write_table(pq.read_table(day), day, row_group_size=500)
    port, work = _free_port(), tmp_path / "w"
    argv = [f"--data={data}", f"--workdir={work}", *FLAGS, "--epochs=50", "--share_data"]
    procs = [_start(tmp_path, f"p{i}", [*argv, *_cluster(port, 2, i)], 2) for i in range(2)]
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while "steps (" not in (tmp_path / "p0.log").read_text():  # training has begun
            assert all(p.poll() is None for p in procs), (tmp_path / "p0.log").read_text()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        procs[1].kill()
        killed = time.monotonic()
        procs[0].wait(timeout=peers.LOST_AFTER_S + 30)
        waited = time.monotonic() - killed
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    log = (tmp_path / "p0.log").read_text()
    assert procs[0].returncode == peers.EXIT_LOST, log[-3000:]
    assert waited < peers.LOST_AFTER_S + 10
    assert (
        log.strip()
        .splitlines()[-1]
        .startswith("error: process 1 stopped (no sign of life for 15 s): it was killed")
    )
    assert "Traceback" not in log and "Fatal Python error" not in log
    assert not list(work.rglob("*tmp*"))


def test_a_signal_to_one_process_stops_both_at_the_same_step(tmp_path):
    """SIGTERM to process 1 of 2 (a preemption notice, or Ctrl-C in its terminal): the
    processes stop together at the next step where they read metrics, write that step's
    checkpoint together and both exit as preempted (143), instead of the signalled one
    waiting alone in the collective save."""
    data = tmp_path / "days"
    data.mkdir()
    for i in range(2):
        timeline.write(timeline.generate(2000, seed=i), str(data / f"day{i}.parquet"))
    port, work = _free_port(), tmp_path / "w"
    argv = [f"--data={data}", f"--workdir={work}", *FLAGS, "--epochs=50"]
    procs = [_start(tmp_path, f"p{i}", [*argv, *_cluster(port, 2, i)], 2) for i in range(2)]
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while "steps (" not in (tmp_path / "p1.log").read_text():
            assert all(p.poll() is None for p in procs), (tmp_path / "p1.log").read_text()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    logs = [(tmp_path / f"p{i}.log").read_text() for i in range(2)]
    assert [p.returncode for p in procs] == [143, 143], [log[-2000:] for log in logs]
    assert "SIGTERM on process 1 received: saving a checkpoint" in logs[0]
    steps = {int(m) for log in logs for m in re.findall(r"preempted at step (\d+)", log)}
    assert len(steps) == 1, steps
    assert str(steps.pop()) in os.listdir(work / "stage1" / "checkpoints")
    assert not list(work.rglob("*tmp*"))


def test_process_slice_follows_the_mesh(monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    assert sharding.process_slice(16, _fake_mesh([0, 0, 1, 1])) == slice(8, 16)
    assert sharding.process_slice(16, _fake_mesh([1, 1, 0, 0])) == slice(0, 8)
    with pytest.raises(ValueError, match="not next to each other"):
        sharding.process_slice(16, _fake_mesh([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="no device in the mesh"):
        sharding.process_slice(16, _fake_mesh([0, 0]))


def test_one_process_feeds_the_whole_batch():
    mesh = sharding.make_mesh()
    assert mesh.devices.size == jax.device_count() == 4
    assert sharding.process_slice(16, mesh) == slice(0, 16)
