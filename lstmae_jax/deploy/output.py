"""The alert file and its summary: the output schema and ``AlertWriter``.

One row per scored window (see ``stream``): the file, the input row, timestamp and
identifiers where the input has them, the score, ``alert``, the stage-2 class and its
probability where the artifact has a stage 2, the ``TOP`` features that contributed most
to the score, and the true label where the input is labelled. Written to ``.parquet`` or
``.jsonl``, with ``<output>.summary.json`` beside it.
"""

from __future__ import annotations

import fcntl
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
from absl import logging

from lstmae_jax import atomic

ROW_GROUP_ROWS = 1 << 16  # Parquet output: rows per row group
TOP = 3
IDENTIFIERS = ("timestamp", "flow_id", "src_ip", "src_port", "dst_ip")


def output_schema(classes: list[str] | None) -> pa.Schema:
    fields = [("file", pa.string()), ("row", pa.int64())]
    fields += [(name, pa.string()) for name in IDENTIFIERS]
    fields += [("dst_port", pa.int64()), ("score", pa.float32()), ("alert", pa.bool_())]
    if classes:
        fields += [("predicted", pa.string()), ("probability", pa.float32())]
    for k in range(1, TOP + 1):
        fields += [(f"top{k}", pa.string()), (f"top{k}_contribution", pa.float32())]
    fields += [("label", pa.string())]
    return pa.schema(fields)


class OutputError(OSError):
    """The alerts could not be written (names the path and the cause)."""


class AlertWriter:
    """Alerts to ``.parquet`` or ``.jsonl``, never at the cost of an earlier output.

    A batch run writes a temporary beside the output (row groups, or one line per
    window) and ``commit`` renames it, and then the summary, into place; a failed run
    (``abort``) removes the temporary and leaves the earlier output and its summary as
    they were, and a run stopped early (``partial``) puts its rows beside an earlier
    output (``NAME.partial.parquet``) instead of over it. A live run (``live``) to
    ``.jsonl`` appends to the output itself, flushed after each batch, so it can be
    tailed; it holds an exclusive lock on it (a second live scorer is refused), starts a
    new file when the output is deleted or rotated away, and an error truncates it back to
    its last complete line. Temporaries are created with ``O_EXCL`` (``atomic.temporary``).
    """

    def __init__(self, path: str, schema_: pa.Schema, live: bool = False):
        if not path.endswith((".parquet", ".jsonl")):
            raise ValueError(f"--output must end in .parquet or .jsonl, got {path}")
        self.path, self.schema, self.rows = path, schema_, 0
        self.summary_path = path + ".summary.json"
        for p in (path, self.summary_path):
            if os.path.isdir(p):
                raise OutputError(
                    f"--output: {p} is a directory in the way; move it or name another file"
                )
        self.in_place = live and path.endswith(".jsonl")
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
            atomic.remove_stale(folder, os.path.basename(path))
            if self.in_place:
                self._open_in_place()
            else:
                self.file, self.tmp = atomic.temporary(path)
        except OSError as e:
            raise OutputError(f"cannot write {path}: {atomic.cause(e)}") from e
        self.good_bytes = self.file.tell()  # the end of the last complete batch
        self._pq = None
        self._parts: list[pa.Table] = []  # Parquet rows awaiting a full row group
        if path.endswith(".parquet"):
            self._pq = pq.ParquetWriter(self.file, schema_, compression="zstd")

    def _open_in_place(self) -> None:
        """Opens (or re-opens) the live output for appending, locked against a second
        live scorer, cut back to its last complete line."""
        self.file, self.tmp = open(self.path, "ab"), None
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise OutputError(
                f"--output {self.path} is being written by another live scorer; give each its"
                " own output"
            ) from None
        self._end_at_line()
        self.good_bytes = self.file.tell()

    def _still_there(self) -> None:
        """Live output deleted or rotated away (``mv``, logrotate): a new file at the path,
        so alerts never go to a file nobody can read."""
        try:
            same = os.path.samestat(os.stat(self.path), os.fstat(self.file.fileno()))
        except FileNotFoundError:
            same = False
        if not same:
            logging.warning(
                "%s was moved or deleted; writing alerts to a new %s", self.path, self.path
            )
            self.file.close()
            self._open_in_place()

    def _end_at_line(self) -> None:
        """An appended-to file that ends in a torn line (a killed run) is cut back to
        its last complete line, so every line stays one JSON record."""
        size = self.file.tell()
        if not size:
            return
        with open(self.path, "rb") as f:
            f.seek(max(0, size - (1 << 16)))
            tail = f.read()
        if tail.endswith(b"\n"):
            return
        keep = size - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
        logging.warning("%s: ends in an incomplete line (a killed run?); cut back to %d bytes",
                        self.path, keep)  # fmt: skip
        self.file.truncate(keep)
        self.file.seek(keep)

    def write(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        try:
            if self._pq is not None:
                self._parts.append(table)
                if sum(t.num_rows for t in self._parts) >= ROW_GROUP_ROWS:
                    self._flush_group()
            else:
                if self.in_place:
                    self._still_there()
                self.file.write("".join(json.dumps(r) + "\n" for r in table.to_pylist()).encode())
                self.file.flush()
                self.good_bytes = self.file.tell()
        except OSError as e:
            self._failed(e)
        self.rows += table.num_rows

    def _flush_group(self) -> None:
        if self._parts:
            self._pq.write_table(pa.concat_tables(self._parts))
            self._parts = []

    def _failed(self, e: OSError):
        self.abort()
        kept = (
            f"{self.path} holds the windows written before"
            if self.in_place
            else f"the earlier {self.path}, if any, is unchanged"
        )
        raise OutputError(f"cannot write {self.path}: {atomic.cause(e)}; {kept}") from e

    def commit(self, summary: dict, partial: bool = False) -> str:
        """Completes the output with every row written so far and puts it, then its
        summary (``<output>.summary.json``), in place; returns where. ``partial`` (a run
        stopped early): beside an earlier output, never over it."""
        path = self.path
        if partial and self.tmp is not None and os.path.exists(path):
            stem, suffix = os.path.splitext(path)
            path = f"{stem}.partial{suffix}"
        summary, summary_tmp = {**summary, "output": path}, None
        try:
            if self._pq is not None:
                self._flush_group()
                self._pq.close()
                self._pq = None
            self.file.close()
            summary_file, summary_tmp = atomic.temporary(path + ".summary.json")
            with summary_file:
                summary_file.write(json.dumps(summary, indent=1).encode())
            if self.tmp is not None:
                os.replace(self.tmp, path)
                self.tmp = None
            os.replace(summary_tmp, path + ".summary.json")
        except OSError as e:
            if summary_tmp is not None:
                atomic.discard(summary_tmp)
            self._failed(e)
        return path

    def abort(self) -> None:
        """After a failure: removes the temporary (an in-place file is cut back to its
        last complete batch). Never raises."""
        try:
            if self._pq is not None:
                self._pq.close()
        except (OSError, pa.ArrowException):
            pass
        self._pq = None
        try:
            if self.in_place and not self.file.closed:
                self.file.truncate(self.good_bytes)
            self.file.close()
        except OSError:
            pass
        if self.tmp is not None:
            atomic.discard(self.tmp)
            self.tmp = None
