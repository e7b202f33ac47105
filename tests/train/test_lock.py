"""The workdir lock: one trainer per workdir; a dead holder's lock is taken over."""

import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from lstmae_jax import config
from lstmae_jax.jobs import training
from lstmae_jax.train import lock


def _plant(workdir, pid, host=None):
    path = workdir / lock.FILE
    path.write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid}))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_live_holder_is_refused_naming_host_and_pid(tmp_path):
    holder = os.getppid()  # alive for as long as this test runs
    _plant(tmp_path, holder)
    message = rf"{tmp_path} is in use by another trainer \(pid {holder} on {socket.gethostname()}"
    with pytest.raises(ValueError, match=message):
        with lock.WorkdirLock(str(tmp_path)):
            pass
    cfg = config.smoke(data=str(tmp_path / "flows.parquet"))
    with pytest.raises(ValueError, match=message):  # what launch/train.py prints in one line
        training.train_job(cfg, str(tmp_path))
    assert json.loads((tmp_path / lock.FILE).read_text())["pid"] == holder  # left alone


def test_another_hosts_lock_is_refused(tmp_path):
    _plant(tmp_path, 12345, host="elsewhere")
    with pytest.raises(ValueError, match=r"pid 12345 on elsewhere"):
        with lock.WorkdirLock(str(tmp_path)):
            pass


def test_a_dead_holders_lock_is_taken_over_and_released(tmp_path, caplog):
    dead = _dead_pid()
    path = _plant(tmp_path, dead)
    with caplog.at_level(logging.WARNING):
        with lock.WorkdirLock(str(tmp_path)):
            held = json.loads(path.read_text())
    assert held == {"host": socket.gethostname(), "pid": os.getpid()}
    assert any(f"stale lock of pid {dead}" in r.getMessage() for r in caplog.records)
    assert not path.exists()


def test_the_lock_is_released_on_an_exception(tmp_path):
    cfg = config.smoke(data=str(tmp_path / "missing.parquet"))
    with pytest.raises(FileNotFoundError):
        training.train_job(cfg, str(tmp_path))
    assert not (tmp_path / lock.FILE).exists()
    with pytest.raises(RuntimeError):
        with lock.WorkdirLock(str(tmp_path)):
            assert (tmp_path / lock.FILE).exists()
            raise RuntimeError("boom")
    assert not (tmp_path / lock.FILE).exists()
