"""What a long job shows while it runs: progress with rate and ETA, a JSONL metrics
writer (process 0 only), and the SIGTERM flag that turns preemption into a clean stop."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import jax
from absl import logging

from lstmae_jax import atomic

METRICS_FILE = "metrics.jsonl"  # in each run directory (the layout: jobs/rundir.py)


class Preemption:
    """SIGTERM sets a flag; the loop saves a checkpoint and returns cleanly."""

    def __init__(self) -> None:
        self.requested = False
        self._old = None

    def __enter__(self) -> Preemption:
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, no preemption support
            self._old = None
        return self

    def _handle(self, signum, frame) -> None:
        logging.warning("SIGTERM received: saving a checkpoint and stopping")
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


class Progress:
    """A progress line with rate and ETA on a terminal; periodic log lines elsewhere."""

    def __init__(self, total: int, start: int, unit: str) -> None:
        self.total, self.start, self.unit = total, start, unit
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def update(self, step: int, extra: str = "") -> None:
        done = step - self.start
        elapsed = time.perf_counter() - self.t0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        line = f"step {step}/{self.total} {rate:.1f} {self.unit}/s ETA {eta:.0f}s {extra}"
        if self.tty:
            sys.stderr.write("\r" + line + " " * 8)
            sys.stderr.flush()
        else:
            logging.info(line)

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


class JsonlWriter:
    """The one metrics writer: JSON lines, written by process 0 only."""

    def __init__(self, path: str) -> None:
        self.enabled = jax.process_index() == 0
        self.path = path
        if self.enabled:
            os.makedirs(os.path.dirname(path), exist_ok=True)

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def cut_after(self, step: int) -> None:
        """Drops the records of steps after ``step`` (a resume runs them again, so they
        would repeat) and a torn last line, rewriting the file atomically."""
        if not self.enabled or not os.path.exists(self.path):
            return
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
        atomic.write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())


def read_jsonl(path: str) -> list[dict]:
    """The records of a JSONL file. A torn last line (the writer was killed mid-line) is
    skipped with a warning; an unparsable line elsewhere is an error naming file and line."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if all(not rest.strip() for rest in lines[n:]):  # the last line
                logging.warning("%s: skipping a torn last line %d", path, n)
                continue
            raise ValueError(f"{path}, line {n}: not JSON ({e})") from None
    return records
