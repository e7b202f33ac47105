"""Training metrics: the one writer (process 0 only) and the JSONL reader. The progress
line and the SIGTERM flag are ``lstmae_jax.console``'s.

``metrics.jsonl`` is the record. With ``--tensorboard`` the same records also go to
TensorBoard event files in ``<run dir>/tensorboard/`` through tensorboardX (the optional
extra ``tensorboard``), each number at the record's step under its JSONL key prefixed as
the flax examples do (``tensorboard_tag``): ``eval/`` for validation, ``train/`` for the
rest; the run's config goes there too, as the hyperparameters of TensorBoard's HParams
tab. What is computed after training (the calibrated threshold, the evaluation's AUCs) is
added by ``write_scalars``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time

import jax
from absl import logging

from lstmae_jax import atomic

METRICS_FILE = "metrics.jsonl"  # in each run directory (the layout: jobs/rundir.py)
TENSORBOARD_DIR = "tensorboard"  # beside it, with --tensorboard
TENSORBOARD_FLUSH_S = 10  # tensorboardX's default, 120 s, is long for a user watching


def tensorboard_tag(key: str) -> str:
    """The TensorBoard tag of a ``metrics.jsonl`` key: validation under ``eval/``, the
    rest (loss, learning rate, speed) under ``train/``."""
    return f"eval/{key}" if key.startswith(("val_", "best_val_")) else f"train/{key}"


def write_scalars(run_dir: str, step: int, values: dict[str, float | None], what: str) -> None:
    """Adds ``values`` (tag -> number; None and non-finite ones skipped) at ``step`` to the
    run's TensorBoard directory, in a file of their own named after ``what``: numbers
    computed after training, when its event file is closed. Process 0 only; a failed
    write, or tensorboardX missing where a --tensorboard run is evaluated, warns: the
    numbers are in the JSON files anyway."""
    if jax.process_index() != 0:
        return
    directory = os.path.join(run_dir, TENSORBOARD_DIR)
    try:
        events = _Events(directory, None, f".{what}.{time.time_ns()}")
        events.scalars(_finite(values), step)
        events.close()
    except ImportError:
        logging.warning("TensorBoard: no tensorboardX here, %s not written to %s", what, directory)
    except OSError as e:
        logging.warning("TensorBoard: cannot write %s in %s: %s", what, directory, atomic.cause(e))


def _finite(values: dict) -> dict[str, float]:
    """The numbers of ``values`` (not bools, None or non-finite), as floats."""
    return {
        key: float(value)
        for key, value in values.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        if math.isfinite(value)
    }


def check_tensorboard() -> None:
    """Raises, naming the extra to install, when tensorboardX is missing (``--tensorboard``
    is checked at the start of a job, not after its data is loaded)."""
    try:
        import tensorboardX  # noqa: F401  (the optional `tensorboard` extra)
    except ImportError:
        raise ImportError(
            "--tensorboard needs tensorboardX: pip install 'lstmae-jax[tensorboard]'"
            " (pip install -e '.[tensorboard]' in a checkout)"
        ) from None


class JsonlWriter:
    """The one metrics writer, process 0 only: JSON lines in ``path``, and with
    ``tensorboard_dir`` the same records as TensorBoard scalars there.

    ``cut_after`` (a resume) must come before the first ``write``; ``close`` flushes the
    event file. ``hparams`` (the run's config) opens each event file."""

    def __init__(
        self, path: str, tensorboard_dir: str | None = None, hparams: dict | None = None
    ) -> None:
        self.enabled = jax.process_index() == 0
        self.path, self.tensorboard_dir, self.hparams = path, tensorboard_dir, hparams
        self._events = None  # the tensorboardX SummaryWriter, opened on the first write
        self._purge_step: int | None = None
        if tensorboard_dir is not None:
            check_tensorboard()
        if self.enabled:
            os.makedirs(os.path.dirname(path), exist_ok=True)

    def write(self, record: dict) -> None:
        """Appends ``record``. A failed write of ``metrics.jsonl`` (the record) ends the run
        with ``atomic.WriteFailed`` naming it; one of the TensorBoard copy warns once and
        TensorBoard stops, the run goes on."""
        if not self.enabled:
            return
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:  # a torn last line is dropped on resume (cut_after)
            raise atomic.write_failed(
                self.path, e, "; the checkpoints are intact: free space and re-run the same"
                " command, which resumes from the latest one, if any",
            ) from e  # fmt: skip
        if self.tensorboard_dir is not None:
            try:
                self._scalars(record)
            except OSError as e:
                self._stop_events(e)

    def _stop_events(self, e: OSError) -> None:
        logging.warning(
            "TensorBoard stopped: cannot write %s: %s; training goes on, %s keeps every record",
            self.tensorboard_dir, atomic.cause(e), self.path,
        )  # fmt: skip
        self.tensorboard_dir = None
        with contextlib.suppress(OSError):
            self._events.close()
        self._events = None

    def _scalars(self, record: dict) -> None:
        """Every number of ``record`` but its step, as a scalar at that step."""
        if self._events is None:
            start = self._purge_step - 1 if self._purge_step is not None else 0
            self._events = _Events(self.tensorboard_dir, self._purge_step, f".from{start:010d}")
            if self.hparams is not None:
                self._events.hparams(self.hparams)
        step = int(record.get("step", 0))
        numbers = _finite({k: v for k, v in record.items() if k != "step"})
        self._events.scalars({tensorboard_tag(k): v for k, v in numbers.items()}, step)

    def cut_after(self, step: int) -> None:
        """Drops the records of steps after ``step`` (a resume runs them again, so they
        would repeat) and a torn last line, rewriting the file atomically.

        Event files are append-only and are not rewritten: the event file opened next
        starts with tensorboardX's purge marker (a session start at ``step + 1``), and
        TensorBoard itself hides, on display, the older events of steps after ``step``,
        so its curves rewind to the checkpoint as ``metrics.jsonl`` does."""
        self._purge_step = step + 1
        if not self.enabled or not os.path.exists(self.path):
            return
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
        atomic.write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())

    def close(self) -> None:
        """Flushes and closes the event file (JSON lines are written as they come)."""
        if self._events is not None:
            try:
                self._events.close()
            except OSError as e:
                self._stop_events(e)
            self._events = None


class _Events:
    """One TensorBoard event file, written in the caller's thread (tensorboardX's
    ``EventsWriter`` and protos, not its ``SummaryWriter``, whose background thread would
    print a failed write's traceback and then block on its full queue): a failed write
    raises here, where ``JsonlWriter`` turns it into one warning.

    Named as ``SummaryWriter`` names them, by the second it opens plus ``suffix`` (the
    start step: a resume in the same second must not overwrite its predecessor's file).
    ``purge_step`` (a resume) first writes the session start that makes TensorBoard hide
    the older events of the steps from there on, as ``SummaryWriter(purge_step=)`` does."""

    def __init__(self, directory: str, purge_step: int | None, suffix: str) -> None:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        os.makedirs(directory, exist_ok=True)
        self._writer = EventsWriter(os.path.join(directory, "events"), suffix)
        if purge_step is not None:
            start = SessionLog(status=SessionLog.START)
            self._writer.write_event(
                Event(step=purge_step, wall_time=time.time(), session_log=start)
            )
        self._flushed = time.monotonic()

    def scalars(self, values: dict[str, float], step: int) -> None:
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar

        for key, value in values.items():
            event = Event(step=step, wall_time=time.time(), summary=scalar(key, value))
            self._writer.write_event(event)
        if time.monotonic() - self._flushed >= TENSORBOARD_FLUSH_S:
            self._writer.flush()
            self._flushed = time.monotonic()

    def hparams(self, config: dict) -> None:
        """``config`` as the run's hyperparameters (the session start that TensorBoard's
        HParams tab reads, as flax's ``write_hparams`` writes it); lists as text."""
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import hparams

        flat = {
            k: ",".join(map(str, v)) if isinstance(v, list | tuple) else v
            for k, v in config.items()
        }
        _, session_start, _ = hparams(flat, {})
        self._writer.write_event(Event(wall_time=time.time(), summary=session_start))

    def close(self) -> None:
        self._writer.close()


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
