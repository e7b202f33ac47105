"""Flow records for scoring, in chunks: CSV, CSV.gz or Parquet, whole or growing.

The scorer's input path. Each chunk goes through the converter's own parsing
(``rawparse``) and cleaning (``clean.canonicalize``, with the artifact's policy), so a
flow is cleaned the same way for scoring as for training. A chunk carries the input row
number of each kept flow (``ROW``: a CSV's physical line, header = 1, as the converter's
error messages count; a Parquet file's row, first = 1) and the time its bytes were read.

``Source.poll()`` yields the chunks available now. A plain CSV is read from a byte offset
and only up to its last complete line, so a file that grows (CICFlowMeter appends flows as
they end) is read again from where it stopped on the next poll; ``final=True`` also takes
a last line without its newline. A CSV that shrinks, is replaced (another inode: a
rotation) or is rewritten in place (its first bytes, or those before where reading
stopped, changed) starts over, and its first chunk says so (``restart``) before any new
flow.
Parquet and CSV.gz files are read once, in full (in live mode once they stop changing).

No JAX or training code here: numpy, pyarrow, the schema and the cleaning modules.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from absl import logging

from lstmae_jax.ingest import clean, rawparse, schema

ROW = clean.ROW
SUFFIXES = (".csv", ".csv.gz", ".parquet")
BLOCK_SIZE = 1 << 20
# Rows per Parquet chunk: each chunk costs a fixed ~80 columns' worth of Python in cleaning
# and windowing; 32,768 rows (~20 MB of float64 features) take about a third less of the
# scoring pass's host time than 8,192, for ~0.15 GB more peak memory (still flat in the
# number of flows: docs/results.md, "Scoring end to end").
PARQUET_BATCH_ROWS = 1 << 15
MARK = 256  # bytes compared to tell an append from a rewrite (``Source._rewritten``)


@dataclasses.dataclass
class Chunk:
    """Cleaned, canonical flows of one source (``table`` has ``ROW`` and maybe ``label``)."""

    source: str
    table: pa.Table
    report: clean.CleanReport
    read_at: float  # time.monotonic() when its bytes were read
    restart: bool = False  # the source started over (a truncated file): reset its windows


def _check_features(src: str, header: list[str], features: list[str]) -> None:
    try:
        names = set(n for n in schema.canonical_names(header) if n)
    except ValueError as e:  # two columns of one canonical name
        raise ValueError(f"{src}: {e}") from e
    missing = [f for f in features if f not in names]
    if missing:
        style = schema.detect_style(header)
        spelled = [schema.spelling(f, style) or f if style in schema.STYLES else f for f in missing]
        raise ValueError(
            f"{src}: lacks feature columns the detector needs: {spelled} (canonical {missing})"
        )


def _csv_rows(block: bytes, first: int, n_fields: int, n_parsed: int) -> np.ndarray:
    """Line numbers of the rows Arrow parsed from a block: its non-empty lines with the
    right number of fields (CICFlowMeter never quotes, so commas count the fields)."""
    rows = []
    for offset, text in enumerate(block.split(b"\n")):
        text = text.rstrip(b"\r")
        if text and text.count(b",") + 1 == n_fields:
            rows.append(first + offset)
    if len(rows) != n_parsed:  # quoted commas: line numbers unknown (null) for this block
        return np.full(n_parsed, -1, np.int64)
    return np.asarray(rows, np.int64)


def _row_array(rows: np.ndarray) -> pa.Array:
    return pa.array(rows, pa.int64(), mask=rows < 0)


class Source:
    """One input file. ``poll()`` yields the chunks that can be read now."""

    def __init__(
        self, path: str, features: list[str], cleaning: dict, block_size: int = BLOCK_SIZE
    ):
        self.path, self.features, self.cleaning = path, list(features), dict(cleaning)
        self.block_size = block_size
        self.kind = next((s for s in SUFFIXES[::-1] if path.lower().endswith(s)), None)
        if self.kind is None:
            raise ValueError(f"{path}: unsupported input (expected one of {SUFFIXES})")
        self.plan: rawparse.Plan | None = None
        self.offset = 0  # plain CSV: bytes consumed (whole lines)
        self.lineno = 2  # plain CSV: line number at ``offset``
        self.done = False  # read in full (Parquet, CSV.gz) or stopped
        self.bytes_total = os.path.getsize(path) if os.path.exists(path) else 0
        self.identity: tuple[int, int] | None = None  # plain CSV: (device, inode) last seen
        self.stamp: tuple[int, int] | None = None  # Parquet, CSV.gz: (size, mtime) last seen
        self.head_mark = self.tail_mark = b""  # plain CSV: bytes last read (``_rewritten``)
        self.clean_seconds = 0.0  # of the reading time, the cleaning's (``canonicalize``)

    # -- helpers shared by the formats

    def _open_plan(self, header: list[str]) -> None:
        _check_features(self.path, header, self.features)
        self.plan = rawparse.Plan(self.path, header, require_label=False)

    def _chunk(self, raw: pa.Table, dropped: clean.CleanReport, read_at: float) -> Chunk:
        t0 = time.perf_counter()
        out, report = clean.canonicalize(
            raw, source=self.path, require_label=False, **self.cleaning
        )
        self.clean_seconds += time.perf_counter() - t0
        report.merge(dropped)
        return Chunk(self.path, out, report, read_at)

    def _csv_chunks(self, whole: bytes, whole_first: int, read_at: float):
        """The chunks of a block of whole lines, cut at any header line inside it (each
        part read with the header above it; ``rawparse.cut_at_headers``)."""
        before = self.plan
        parts, headers, reordered, self.plan, error = rawparse.cut_at_headers(
            before, whole, whole_first, same_columns=False
        )
        for k, (plan, block, first) in enumerate(parts or [(self.plan, b"", whole_first)]):
            if plan is not before:  # a new header: it must still have the features
                _check_features(f"{self.path}: line {first - 1}", plan.header, self.features)
            extra = clean.CleanReport(self.path)
            if k == 0 and headers:  # the block's header lines, once
                extra.rows_in = headers
                extra.dropped["repeated_header"] = headers
                extra.fixed.update(+collections.Counter(reordered_header=reordered))
            if not block.strip():
                yield Chunk(self.path, pa.table({}), extra, read_at)
                continue
            table, n_invalid = rawparse.parse_csv(plan, block, first, "drop")
            rows = _csv_rows(block, first, plan.n_fields, table.num_rows)
            table = table.append_column(ROW, _row_array(rows))

            def where(i: int, rows=rows) -> str:
                return f"line {rows[i]}"

            raw, dropped = rawparse.prepare(plan, table, where, "drop")
            dropped.rows_in += n_invalid
            if n_invalid:
                dropped.dropped["wrong_field_count"] += n_invalid
            dropped.merge(extra)
            yield self._chunk(raw, dropped, read_at)
        if error is not None:  # after the rows above the header that cannot be read
            raise error

    # -- formats

    def poll(self, final: bool = False, settle: bool = False):
        """The chunks readable now. ``final``: take a last line without its newline.
        ``settle`` (live mode): read a Parquet or CSV.gz file only once its size and
        modification time held still between two polls (it may still be being written).
        ``FileNotFoundError`` when the file is gone. In live mode a Parquet or CSV.gz
        file read in full is read again, from a restart, when it is replaced or changes."""
        if self.done and not settle:
            return
        if final and os.path.getsize(self.path) == 0:  # the converter's rule (live: not yet)
            raise ValueError(f"{self.path}: empty file (0 bytes, no header)")
        if self.kind == ".csv":
            yield from self._csv(final)
            return
        st = os.stat(self.path)  # FileNotFoundError: gone (the caller drops it)
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        previous, self.stamp = self.stamp, stamp
        if self.done:
            if stamp == previous:
                return
            logging.warning("%s was replaced or changed; scoring it again", self.path)
            self.done, self.plan = False, None
            yield Chunk(
                self.path, pa.table({}), clean.CleanReport(self.path), time.monotonic(), True
            )
        if settle and stamp != previous:
            return
        try:
            yield from self._parquet() if self.kind == ".parquet" else self._gzip()
        except (OSError, pa.ArrowException) as e:  # truncated gzip, corrupt Parquet, ...
            raise ValueError(f"{self.path}: cannot read: {e}") from e
        self.done = True

    def _parquet(self):
        # pre_buffer off: pyarrow would otherwise keep every row group read in a cache,
        # and a scored file would stay in memory whole until its Source is dropped
        pf = pq.ParquetFile(self.path, pre_buffer=False, buffer_size=1 << 20)
        self._open_plan(pf.schema_arrow.names)
        row0 = 0
        for batch in rawparse.parquet_batches(pf, self.plan, PARQUET_BATCH_ROWS):
            read_at = time.monotonic()
            table = pa.Table.from_batches([batch])
            rows = np.arange(row0 + 1, row0 + 1 + batch.num_rows, dtype=np.int64)
            table = table.append_column(ROW, pa.array(rows))
            row0 += batch.num_rows

            def where(i: int, rows=rows) -> str:
                return f"row {rows[i]}"

            raw, dropped = rawparse.prepare(self.plan, table, where, "drop")
            yield self._chunk(raw, dropped, read_at)

    def _gzip(self):
        self._open_plan(rawparse.csv_header(self.path))
        for block, first in rawparse.csv_blocks(self.path, self.block_size):
            yield from self._csv_chunks(block, first, time.monotonic())

    def _restart(self):
        """The file was truncated or replaced: a new file under the same name."""
        self.plan, self.offset, self.lineno = None, 0, 2
        self.head_mark = self.tail_mark = b""
        return Chunk(self.path, pa.table({}), clean.CleanReport(self.path), time.monotonic(), True)

    def _rewritten(self, f) -> bool:
        """Whether the bytes this source read last (the file's first ``MARK`` and the
        ``MARK`` before ``offset``) changed: a file truncated and rewritten larger within
        one poll keeps its inode and grows, but is no append."""
        for at, mark in ((0, self.head_mark), (self.offset - len(self.tail_mark), self.tail_mark)):
            f.seek(at)
            if f.read(len(mark)) != mark:
                return True
        return False

    def _remember(self, consumed: bytes) -> None:
        """Keeps the marks ``_rewritten`` compares, from bytes just consumed (no file read
        in the reading loop): the file's first ``MARK`` and the ``MARK`` before ``offset``."""
        if len(self.head_mark) < MARK:
            self.head_mark = (self.head_mark + consumed[:MARK])[:MARK]
        tail = consumed[-MARK:]
        self.tail_mark = tail if len(tail) == MARK else (self.tail_mark + tail)[-MARK:]

    def _csv(self, final: bool):
        st = os.stat(self.path)
        identity = (st.st_dev, st.st_ino)
        if self.plan is not None and (st.st_size < self.offset or identity != self.identity):
            yield self._restart()  # at once: its windows must not reach into the new file
        elif self.plan is not None and st.st_size > self.offset:
            with open(self.path, "rb") as f:
                if self._rewritten(f):
                    logging.warning(
                        "%s was rewritten in place; scoring it from the start", self.path
                    )
                    yield self._restart()
        self.identity, self.bytes_total = identity, st.st_size
        if self.plan is not None and st.st_size == self.offset:
            return  # nothing new
        with open(self.path, "rb") as f:
            if self.plan is None:
                head = f.read(1 << 16)
                if b"\n" not in head and not (final and head.strip()):
                    return  # the header line is not complete yet
                self._open_plan(rawparse.csv_header(self.path))
                self.offset = head.index(b"\n") + 1 if b"\n" in head else len(head)
                self._remember(head[: self.offset])
            f.seek(self.offset)
            while data := f.read(self.block_size):
                read_at = time.monotonic()
                cut = data.rfind(b"\n") + 1
                if cut == 0 and len(data) == self.block_size:
                    data += f.readline()  # a line longer than a block
                    cut = data.rfind(b"\n") + 1
                if cut == 0:
                    if not final:
                        return  # a partial last line: wait for its newline
                    logging.warning(
                        "%s: line %d has no line end: scored as it is (a file still being"
                        " written may have its last flow cut)",
                        self.path, self.lineno,
                    )  # fmt: skip
                    cut = len(data)
                block = data[:cut]
                first = self.lineno
                self.offset += cut
                self.lineno += block.count(b"\n")
                self._remember(block)
                f.seek(self.offset)
                if block.strip():
                    yield from self._csv_chunks(block, first, read_at)


def expand(inputs: str, missing_ok: bool = False) -> list[str]:
    """A path, a directory (its CSV / CSV.gz / Parquet files, sorted) or a glob -> files.
    Hidden files (``.name``: files being written, temporaries) are left out.
    ``missing_ok`` (live mode): a path that does not exist yet names no files."""
    if os.path.isdir(inputs):
        candidates = glob.glob(os.path.join(glob.escape(inputs), "*"))
    elif glob.has_magic(inputs):
        candidates = glob.glob(inputs)
    elif os.path.isfile(inputs):
        return [inputs]
    elif os.path.exists(inputs):
        raise ValueError(f"{inputs}: not a regular file (a FIFO, a device?): give a file of flows")
    elif missing_ok:
        return []
    else:
        raise FileNotFoundError(f"no such file or directory: {inputs}")
    return sorted(p for p in candidates if os.path.isfile(p) and p.lower().endswith(SUFFIXES))
