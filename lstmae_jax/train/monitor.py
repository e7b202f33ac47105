"""Training metrics: the JSONL writer (process 0 only) and its reader. The progress line
and the SIGTERM flag are ``lstmae_jax.console``'s."""

from __future__ import annotations

import json
import os

import jax
from absl import logging

from lstmae_jax import atomic

METRICS_FILE = "metrics.jsonl"  # in each run directory (the layout: jobs/rundir.py)


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
