"""Crash safety: ``launch/train.py`` killed with SIGKILL at five points, resumed each time
with the same command, ends bit-identical to an uninterrupted run.

The kill points are chosen from what is on disk, not from timing: the killed runs set
``checkpoint.COMMIT_DELAY_ENV``, which holds each asynchronous save for a moment after its
data and checksums are written and before Orbax commits it, so training runs at most one
checkpoint interval ahead of the last commit and the state on disk at each kill is known.
A persistent compilation cache keeps the seven launches to a few seconds each.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from lstmae_jax.synthetic import timeline
from lstmae_jax.train import checkpoint, monitor

LAUNCHER = os.path.join(os.path.dirname(__file__), "..", "..", "launch", "train.py")
DELAY_S = 0.5  # the hold before each commit in killed runs; a kill lands well within it
TMP = ocp.path.step.TMP_DIR_SUFFIX
# 600 flows: 262 training windows, 16 steps an epoch at batch 16; 2 epochs, a checkpoint
# every 4 steps (and each epoch end), so saves at 4, 8, ..., 32.
FLAGS = (
    "--window=4 --encoder_sizes=8 --decoder_sizes=8 --batch_size=16 --eval_batch_size=32"
    " --epochs=2 --log_every_steps=1 --checkpoint_every_steps=4 --keep_checkpoints=2"
).split()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    data = timeline.write(timeline.generate(600, seed=1), str(root / "flows.parquet"))
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_COMPILATION_CACHE_DIR": str(root / "jax_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    env.pop(checkpoint.COMMIT_DELAY_ENV, None)
    return root, data, env


def _command(data, workdir):
    return [sys.executable, LAUNCHER, f"--data={data}", f"--workdir={workdir}", *FLAGS]


def _run(cmd, env, log, *, kill_when=None, timeout=120):
    """Runs ``cmd`` to the end, or SIGKILLs it as soon as ``kill_when()`` holds; its
    stderr (the log) is returned."""
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + timeout
            while kill_when is not None and proc.poll() is None and not kill_when():
                assert time.monotonic() < deadline, f"kill point not reached; log in {log}"
                time.sleep(0.005)
            if kill_when is not None:
                assert proc.poll() is None, (
                    f"exited (rc {proc.returncode}) before the kill point:\n"
                    + open(log).read()[-3000:]
                )
                os.kill(proc.pid, signal.SIGKILL)
            rc = proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:  # a failed assertion: leave no training behind
                proc.kill()
                proc.wait()
    text = open(log).read()
    assert rc == (-signal.SIGKILL if kill_when else 0), text[-3000:]
    return text


def _committed(ckpt_dir):
    """Committed step numbers on disk (Orbax's own names; no temporaries, no set-asides)."""
    if not os.path.isdir(ckpt_dir):
        return []
    return sorted(int(n) for n in os.listdir(ckpt_dir) if n.isdigit())


def _resumed_from(log):
    if "from scratch" in log:
        return None
    line = next(x for x in log.splitlines() if "resuming" in x)
    return int(line.split("from step ")[1].split()[0])


def _state(run_dir, step):
    return ocp.StandardCheckpointer().restore(
        os.path.join(run_dir, "checkpoints", str(step), "state")
    )


def test_sigkill_at_five_points_then_resume_is_bit_identical(setup):
    root, data, env = setup
    ref = root / "uninterrupted"
    _run(_command(data, ref), env, root / "ref.log")

    work = root / "killed"
    run_dir = work / "stage1"
    ckpts = str(run_dir / "checkpoints")
    cmd = _command(data, work)
    slow = {**env, checkpoint.COMMIT_DELAY_ENV: str(DELAY_S)}
    sealed = lambda step: os.path.exists(os.path.join(ckpts, f"{step}{TMP}", checkpoint.CHECKSUMS))  # noqa: E731
    done = lambda step: os.path.isdir(os.path.join(ckpts, str(step)))  # noqa: E731

    def validated(epoch):
        path = str(run_dir / "metrics.jsonl")
        records = monitor.read_jsonl(path) if os.path.exists(path) else []
        return any(r.get("epoch") == epoch and "val_loss" in r for r in records)

    logs = []
    # 1. During the first asynchronous write: data and checksums written, not committed.
    logs.append(_run(cmd, slow, root / "1.log", kill_when=lambda: sealed(4)))
    assert _committed(ckpts) == [] and os.path.isdir(os.path.join(ckpts, f"4{TMP}"))
    # 2. Just after a commit, with the next write starting.
    logs.append(_run(cmd, slow, root / "2.log", kill_when=lambda: done(8)))
    assert _committed(ckpts)[-1] == 8
    # 3. After epoch 1's validation, the previous checkpoint (12) still being written: the
    #    steps and the validation after step 8 are lost and run again.
    logs.append(_run(cmd, slow, root / "3.log", kill_when=lambda: validated(1)))
    assert _committed(ckpts)[-1] == 8
    # 4. Just after the epoch-end checkpoint (with its validation loss) commits, while
    #    Orbax removes older steps; then one bit of its data flips on disk.
    logs.append(_run(cmd, slow, root / "4.log", kill_when=lambda: done(16)))
    assert _committed(ckpts)[-2:] == [12, 16]
    d = os.path.join(ckpts, "16", "state", "ocdbt.process_0", "d")
    victim = max((os.path.join(d, n) for n in os.listdir(d)), key=os.path.getsize)
    b = bytearray(open(victim, "rb").read())
    b[len(b) // 2] ^= 0x10
    open(victim, "wb").write(bytes(b))
    # 5. During the final write after the last step (close() waiting for its commit),
    #    before the threshold is calibrated.
    logs.append(_run(cmd, slow, root / "5.log", kill_when=lambda: sealed(32)))
    assert _committed(ckpts)[-1] == 28 and not (run_dir / "summary.json").exists()
    logs.append(_run(cmd, env, root / "6.log"))

    assert [_resumed_from(x) for x in logs] == [None, None, 8, 8, 12, 28]
    rel = os.path.relpath(victim, os.path.join(ckpts, "16"))
    assert f"checkpoint step 16 in {ckpts} is corrupt" in logs[4] and rel in logs[4]
    assert os.path.isdir(os.path.join(ckpts, "16.corrupt"))
    assert "Traceback" not in "".join(logs)

    # Bit-identical: the whole final train state (parameters, best parameters, optimizer
    # state, RNG, step), every logged loss, every validation loss and the threshold.
    for a, b in zip(
        jax.tree.leaves(_state(str(ref / "stage1"), 32)),
        jax.tree.leaves(_state(str(run_dir), 32)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    def trace(path):
        records = monitor.read_jsonl(str(path / "stage1" / "metrics.jsonl"))
        return [
            (r["step"], r.get("loss"), r.get("val_loss"))
            for r in records
            if "compile_time_s" not in r
        ]

    assert trace(work) == trace(ref)
    got, want = (json.loads((p / "stage1" / "summary.json").read_text()) for p in (work, ref))
    assert got["threshold"] == want["threshold"] and got["best_val_loss"] == want["best_val_loss"]
    assert got["steps"] == want["steps"] == 32 and got["resumed_from"] == 28
