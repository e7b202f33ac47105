"""console: the stop flag's two signal behaviours and the progress line."""

import logging
import os
import signal
import threading
import time

from lstmae_jax import console


def test_once_gives_a_second_signal_the_default_action():
    # The interactive scorer: the first Ctrl-C asks for a clean stop, a second one kills.
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with console.Stop() as stop:
        assert not stop
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop and stop.signal == "SIGTERM"
        assert signal.getsignal(signal.SIGINT) == signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_without_once_the_handler_stays_until_the_end():
    # The trainer: a second SIGTERM must not kill it while it writes its checkpoint.
    before = signal.getsignal(signal.SIGTERM)
    with console.Stop((signal.SIGTERM,), once=False) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # would end the test run if it were SIG_DFL
        assert stop and stop.signal == "SIGTERM"
        assert signal.getsignal(signal.SIGTERM) == stop._handle
    assert signal.getsignal(signal.SIGTERM) == before


def test_off_the_main_thread_nothing_is_installed():
    before, got = signal.getsignal(signal.SIGTERM), {}

    def worker():
        with console.Stop((signal.SIGTERM,), once=False) as stop:
            got["handler"] = signal.getsignal(signal.SIGTERM)
            stop.set()
            got["set"] = bool(stop)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert got == {"handler": before, "set": True}
    assert signal.getsignal(signal.SIGTERM) == before


def test_sleep_wakes_early_when_set():
    stop = console.Stop()
    threading.Timer(0.1, stop.set).start()
    t0 = time.monotonic()
    stop.sleep(30)
    assert stop and time.monotonic() - t0 < 5


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "absl"]


def test_progress_lines_rate_eta_and_extra(caplog, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: now[0])
    caplog.set_level(logging.INFO)
    steps = console.Progress("steps", total=100, start=20)  # resumed at step 20
    now[0] += 4.0
    steps.update(40, "loss 0.5")  # 20 steps in 4 s; 60 left at 5 steps/s
    rows = console.Progress("rows", label="a.csv: ")
    now[0] += 2.0
    rows.update(3000)
    flows = console.Progress("flows")
    now[0] += 10.0
    flows.update(500, "3 alerts", fraction=0.25)  # a quarter of the bytes in 10 s
    assert _lines(caplog) == [
        "40/100 steps (5.0 steps/s, ETA 12 s), loss 0.5",
        "a.csv: 3000 rows (1500 rows/s)",
        "500 flows (50 flows/s, ETA 30 s), 3 alerts",
    ]


def test_progress_logs_at_most_every_interval_unless_forced(caplog, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: now[0])
    caplog.set_level(logging.INFO)
    progress = console.Progress("flows", every=10.0)
    for t in (1.0, 9.0, 10.0, 15.0, 19.0, 20.5):
        now[0] = t
        progress.update(int(t * 100))
    progress.update(2100, force=True)
    assert [line.split(" ")[0] for line in _lines(caplog)] == ["1000", "2050", "2100"]


def test_progress_eta_under_a_cap_is_a_bound(caplog, monkeypatch):
    # Training: the total is the --epochs cap and early stopping may end the run before it.
    now = [0.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: now[0])
    caplog.set_level(logging.INFO)
    steps = console.Progress("steps", total=100, eta_bound=True)
    now[0] = 5.0
    steps.update(25, "loss 0.1")  # 25 steps in 5 s, 75 left
    steps.update(100)  # done: no ETA at all
    assert _lines(caplog) == [
        "25/100 steps (5.0 steps/s, ETA <= 15 s), loss 0.1",
        "100/100 steps (20 steps/s)",
    ]
