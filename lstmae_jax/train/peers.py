"""A lost process ends every other process of the run at once, in one line.

``jax.distributed`` notices a process that stopped (killed, crashed, its host gone) only
after its heartbeat timeout, 100 s by default, and then aborts every other process with a
native stack trace (the runtime client's default callback is a fatal log; a Python
callback cannot be given its status). Meanwhile the others sit in a collective waiting
for the lost one.

So every process beats here: a thread bumps this process's counter in the coordination
service's key-value store every ``BEAT_S`` and reads the others'. A process whose counter
has not moved for ``LOST_AFTER_S`` (timed on this process's own clock: the hosts' clocks
need not agree), or a coordinator that no longer answers, ends this process: the
registered cleanups run (the checkpoint being written is removed), one line says which
process was lost and that running the same command again resumes, and the process exits
with ``EXIT_LOST`` without waiting on the collective. A process that finished its job says
so (``done``), so the others do not take it for lost while they finish theirs; one that
ends with an error of its own does not, and the others stop in turn.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable

import jax

BEAT_S = 1.0
LOST_AFTER_S = 15.0
EXIT_LOST = 1
_PREFIX = "lstmae_jax/peers"

_cleanups: list[Callable[[], None]] = []
_watch: _Watch | None = None


def on_lost(cleanup: Callable[[], None]) -> None:
    """Runs ``cleanup`` (it must not raise or block) before a lost peer ends the process."""
    _cleanups.append(cleanup)


def watch() -> None:
    """Starts beating and watching the other processes (nothing with one process)."""
    global _watch
    from jax._src import distributed  # the coordination service's client

    client = distributed.global_state.client
    if jax.process_count() == 1 or client is None or _watch is not None:
        return
    _watch = _Watch(client, jax.process_index(), jax.process_count())
    _watch.start()
    atexit.register(_watch.stop, done=False)  # before jax.distributed's shutdown


def explain(error: BaseException) -> None:
    """A collective failed with ``error`` (Gloo's "connection closed by peer", say): if a
    peer is lost, the watch sees it within ``LOST_AFTER_S`` and ends this process with its
    line; wait for that. Returns (the caller raises ``error``) if no peer is found lost."""
    del error
    if _watch is not None and _watch.is_alive():
        _watch.join(LOST_AFTER_S + 3 * BEAT_S)


def done() -> None:
    """This process finished its job: the others must not take it for lost."""
    if _watch is not None:
        _watch.stop(done=True)


class _Watch(threading.Thread):
    def __init__(self, client, me: int, count: int) -> None:
        super().__init__(name="lstmae_jax-peers", daemon=True)
        self.client, self.me, self.others = client, me, [p for p in range(count) if p != me]
        self._halt = threading.Event()

    def stop(self, done: bool) -> None:
        self._halt.set()
        if done:
            with contextlib.suppress(Exception):
                self.client.key_value_set(f"{_PREFIX}/done/{self.me}", "1", allow_overwrite=True)

    def run(self) -> None:
        seen: dict[int, tuple[str | None, float]] = {
            p: (None, time.monotonic()) for p in self.others
        }
        beat = 0
        while not self._halt.wait(BEAT_S):
            beat += 1
            try:
                self.client.key_value_set(
                    f"{_PREFIX}/beat/{self.me}", str(beat), allow_overwrite=True
                )
                now = time.monotonic()
                for p in self.others:
                    value = _try_get(self.client, f"{_PREFIX}/beat/{p}")
                    if value != seen[p][0]:
                        seen[p] = (value, now)
                    elif value is not None and now - seen[p][1] > LOST_AFTER_S:
                        if _try_get(self.client, f"{_PREFIX}/done/{p}") is None:
                            _lost(f"process {p} stopped (no sign of life for {LOST_AFTER_S:.0f} s)")
            except Exception:  # noqa: BLE001  the coordination service is gone
                if self._halt.is_set():
                    return
                _lost("process 0, the coordinator, no longer answers")


def _try_get(client, key: str) -> str | None:
    try:
        return client.key_value_try_get(key)
    except Exception as e:  # noqa: BLE001
        if "NOT_FOUND" in str(e) or "not found" in str(e).lower():
            return None
        raise


def _lost(what: str) -> None:
    for cleanup in _cleanups:
        with contextlib.suppress(Exception):
            cleanup()
    sys.stderr.write(
        f"error: {what}: it was killed, crashed or lost its network, so this process stops"
        " too; run the same command on every host again to resume from the last checkpoint\n"
    )
    sys.stderr.flush()
    os._exit(EXIT_LOST)
