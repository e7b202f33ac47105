"""One trainer per workdir: a lock file naming its holder's host and pid.

Two trainers on one workdir write the same checkpoints and metrics (one died with an
Orbax traceback and ``metrics.jsonl`` got step 0 twice). ``WorkdirLock`` creates
``<workdir>/train.lock`` with ``O_EXCL`` (atomic, also on NFS v3 and later) holding
``{"host", "pid"}``, and removes it on exit, exceptions and preemption included. A lock
left by a process that no longer runs on this host (``kill -9``, a crash) is taken over
with a warning; a lock of another host cannot be checked from here, so it is refused with
what to delete. A pid reused since by another process reads as alive: refused, the
message says which file to delete.
"""

from __future__ import annotations

import json
import os
import socket

from absl import logging

from lstmae_jax import atomic

FILE = "train.lock"


class WorkdirLock:
    """``with WorkdirLock(workdir):`` holds ``workdir``'s lock or raises ValueError."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, FILE)
        self.mine = {"host": socket.gethostname(), "pid": os.getpid()}

    def __enter__(self) -> WorkdirLock:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        for _ in range(2):  # the second try follows the removal of a stale lock
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._stale_or_refuse()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.mine, f)
            return self
        raise ValueError(f"{self.path}: another trainer took the lock while it was being freed")

    def __exit__(self, *exc) -> None:
        try:
            with open(self.path) as f:
                if json.load(f) != self.mine:
                    return  # not ours any more (deleted by hand and taken): leave it
            os.remove(self.path)
        except (OSError, ValueError):
            pass

    def _stale_or_refuse(self) -> None:
        """Removes a lock whose holder is dead on this host; otherwise raises, naming it."""
        workdir = os.path.dirname(self.path)
        try:
            with open(self.path) as f:
                holder = json.load(f)
            host, pid = str(holder["host"]), int(holder["pid"])
        except FileNotFoundError:
            return  # released meanwhile: try again
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"{workdir} is locked by an unreadable {self.path} ({e}); if no trainer runs"
                " on this workdir, delete that file"
            ) from None
        if host == self.mine["host"] and not atomic.alive(pid):
            logging.warning(
                "taking over the stale lock of pid %d on %s (no longer running): %s",
                pid,
                host,
                self.path,
            )
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            return
        raise ValueError(
            f"{workdir} is in use by another trainer (pid {pid} on {host}, {self.path}); wait"
            " for it or use another --workdir (if that process is gone, delete the file)"
        )
