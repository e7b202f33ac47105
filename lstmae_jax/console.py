"""What a long job shows and hears while it runs: one progress reporter and one stop flag.

``Progress`` gives a count, its rate and, when the share done is known, an ETA, followed by
the job's own fields: a line rewritten in place on a terminal (training) or log lines at
most every ``every`` seconds (conversion, scoring). ``Stop`` is the flag that SIGINT or
SIGTERM set so that a loop ends its unit of work in hand and returns cleanly: a checkpoint
for the trainer, a chunk for the scorer.

Standard library and absl only: the trainer, the converter and the scorer all import it.
"""

from __future__ import annotations

import signal
import sys
import time

from absl import logging


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped training after it saved a checkpoint; the message names the
    run and the step. Running the same command (or ``Detector.fit``) again resumes there.
    A ``KeyboardInterrupt``, so code that handles Ctrl-C handles it."""


class Stop:
    """Set by one of ``signals`` (or by ``set()``); the job checks ``if stop:``.

    The handler only sets the flag and records the signal's name in ``signal``: a lock
    taken there (logging's, say) could be held by the code it interrupted.

    ``once=True`` (the interactive scorer): after the first signal, every one of
    ``signals`` gets the default action again, so a second Ctrl-C kills the process.
    ``once=False`` (the trainer): the handler stays until ``restore`` (or the end of the
    ``with`` block), so a second SIGTERM cannot kill a checkpoint half-written.

    ``install`` off the main thread installs nothing (Python allows handlers only there):
    the flag then changes only through ``set()``.
    """

    def __init__(
        self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM), *, once: bool = True
    ) -> None:
        self.signals, self.once = tuple(signals), once
        self.signal: str | None = None  # the name of the signal that set the flag
        self._set = False
        self._old: dict[int, object] = {}  # handlers to put back on restore

    def install(self) -> Stop:
        try:
            for s in self.signals:
                self._old[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread: no handler
            self.restore()
        return self

    def _handle(self, signum, frame) -> None:
        del frame
        self.signal, self._set = signal.Signals(signum).name, True
        if self.once:
            for s in self.signals:
                signal.signal(s, signal.SIG_DFL)

    def restore(self) -> None:
        """Puts back the handlers found by ``install``."""
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()

    def __enter__(self) -> Stop:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()

    def set(self) -> None:
        self._set = True

    def __bool__(self) -> bool:
        return self._set

    def sleep(self, seconds: float) -> None:
        """Sleeps up to ``seconds``, waking early when set."""
        end = time.monotonic() + seconds
        while not self._set and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))


class Progress:
    """``[label]done[/total] unit (rate unit/s[, ETA n s])[, extra]``.

    The rate counts from ``start`` (a resumed run's first step) over the time since the
    reporter was made; the ETA needs the share of the work done, from ``total`` or passed
    to ``update`` (the scorer's bytes read). ``eta_bound``: ``total`` is a cap the job may
    stop before (training's epoch cap under early stopping), so the ETA reads
    ``ETA <= n s``. ``inplace``: on a terminal, one line on stderr rewritten at each
    update; elsewhere (and by default) log lines. ``every``: the fewest seconds between
    two lines, unless an update is forced (a closing line).
    """

    def __init__(
        self,
        unit: str,
        *,
        total: int | None = None,
        start: int = 0,
        label: str = "",
        every: float = 0.0,
        inplace: bool = False,
        eta_bound: bool = False,
    ) -> None:
        self.unit, self.total, self.start, self.label, self.every = unit, total, start, label, every
        self.eta_bound = eta_bound
        self.t0 = self.last = time.monotonic()
        self.inplace = inplace and sys.stderr.isatty()

    def update(
        self, done: int, extra: str = "", *, fraction: float | None = None, force: bool = False
    ) -> None:
        """Reports ``done`` (the count so far); ``fraction``: the share of the work done
        when ``total`` does not say it."""
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        rate, eta = self.estimate(done, fraction)
        eta = f", {eta}" if eta else ""
        count = f"{done}/{self.total}" if self.total is not None else f"{done}"
        digits = 1 if rate < 10 else 0  # 2.5 steps/s, 6675 flows/s
        line = f"{self.label}{count} {self.unit} ({rate:.{digits}f} {self.unit}/s{eta})"
        if extra:
            line += ", " + extra
        if self.inplace:
            sys.stderr.write("\r" + line + " " * 8)
            sys.stderr.flush()
        else:
            logging.info("%s", line)

    def estimate(self, done: int, fraction: float | None = None) -> tuple[float, str]:
        """(the rate since ``start``, in ``unit``/s; ``"ETA n s"``, ``"ETA <= n s"`` under
        ``eta_bound``, or ``""`` where the share done is unknown) at ``done``."""
        elapsed = time.monotonic() - self.t0
        rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
        if fraction is None and self.total is not None and self.total > self.start:
            fraction = (done - self.start) / (self.total - self.start)
        if fraction is None or not 0 < fraction < 1:
            return rate, ""
        bound = "<= " if self.eta_bound else ""
        return rate, f"ETA {bound}{elapsed * (1 - fraction) / fraction:.0f} s"

    def close(self) -> None:
        """Ends the line rewritten in place."""
        if self.inplace:
            sys.stderr.write("\n")
