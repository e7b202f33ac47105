"""Streaming CSV / CSV.gz / Parquet -> canonical Parquet, with cleaning and a report.

Each input file becomes ``<stem>.parquet`` (zstd) in the output directory, in the schema
that ``clean.canonicalize`` returns, and ``report.json`` there holds one ``CleanReport``
per file plus totals. Memory stays flat as files grow: CSV is cut into blocks of whole
lines, Parquet is read batch by batch, and row groups are written as they fill. Blocks
are parsed and cleaned on a small thread pool (Arrow and numpy release the GIL) while a
writer thread encodes the previous row group; results are used in file order.

Parsing (the raw header, numbers, repeated headers, bad cells, wrong field counts, cp1252
text) is ``rawparse``'s job; its docstring lists each quirk. Empty files: 0 bytes (no
header) is an error; a header without rows gives an empty Parquet file with the canonical
schema and a warning.

Atomicity: a file is written under a hidden temporary name in the output directory and
renamed onto ``<stem>.parquet`` only when complete, so an interrupted run never leaves a
truncated file under the final name and never touches an earlier complete output.
``convert`` keeps going after a failed file (its error goes into ``report.json``) and
raises ``ConvertError`` at the end: one bad file never costs the others their outputs.
Every error message starts with the file's path (Arrow's and the csv module's are
prefixed here). An interrupt (Ctrl-C) removes the current file's temporary, writes a
``report.json`` marked ``"interrupted"`` that lists the files finished so far, and
propagates; the launcher exits with 130.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import glob
import json
import os
import time

import pyarrow as pa
import pyarrow.parquet as pq
from absl import logging

from lstmae_jax import atomic, console
from lstmae_jax.ingest import clean, rawparse

BAD_CELL_POLICIES = ("drop", "error")
# Measured with benchmarks/pipeline.py on 500k CICIDS2017 rows (2 shared cores): 1 MiB
# blocks (~3.4k rows) used the least CPU; 4 MiB cost ~100 MiB more peak memory.
BLOCK_SIZE = 1 << 20
PARQUET_BATCH_ROWS = 1 << 13
# Rows per Parquet row group. Larger groups encode faster and smaller (16k rows: 44 MB and
# 0.84 s; 64k: 28 MB and 0.61 s for those 500k rows) but hold more rows in memory.
ROW_GROUP_ROWS = 1 << 15
WORKERS = min(4, os.cpu_count() or 1)  # parse + clean threads; a writer thread comes on top
PARQUET_OPTIONS = {"compression": "zstd"}
PROGRESS_SECONDS = 10.0
_SUFFIXES = (".csv.gz", ".csv", ".parquet")
_META_KEY = "lstmae_jax.convert"  # Parquet key-value metadata: the file's CleanReport as JSON


class ConvertError(ValueError):
    """Some inputs failed (``failures``: path -> message, which starts with the path);
    ``reports``: the converted ones."""

    def __init__(self, failures: dict[str, str], reports: list[clean.CleanReport]):
        super().__init__("; ".join(failures.values()))
        self.failures, self.reports = failures, reports


class _Sink:
    """Gathers canonical blocks into row groups and writes each on a background thread.

    One group is encoded while the next fills, never more, so memory stays flat. Bigger
    groups encode faster and smaller (fewer dictionary pages) but hold more rows in
    memory; see ROW_GROUP_ROWS.
    """

    def __init__(self, file):
        self.file, self.writer, self.parts, self.rows, self.pending = file, None, [], 0, None
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    def add(self, table: pa.Table) -> None:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.file, table.schema, **PARQUET_OPTIONS)
        if table.num_rows:
            self.parts.append(table)
            self.rows += table.num_rows
        if self.rows >= ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            group = pa.concat_tables(self.parts)
            self.parts, self.rows = [], 0
            self.wait()
            self.pending = self.pool.submit(self.writer.write_table, group, ROW_GROUP_ROWS)

    def wait(self) -> None:
        if self.pending is not None:
            self.pending.result()
            self.pending = None

    def close(self, metadata: dict[str, str] | None) -> None:
        """Finish the file with this metadata, or abandon it (None) after an error."""
        if metadata is not None:
            self.flush()
            self.wait()
            self.writer.add_key_value_metadata(metadata)
        self.pool.shutdown(wait=True, cancel_futures=True)
        try:
            if self.writer is not None:
                self.writer.close()
        finally:
            self.file.close()


def _clean(plan: rawparse.Plan, raw: pa.Table, dropped: clean.CleanReport, policies: dict):
    """``clean.canonicalize`` plus the rows already dropped while parsing."""
    out, report = clean.canonicalize(raw, source=plan.src, **policies)
    report.merge(dropped)
    return out, report


def _csv_jobs(plan: rawparse.Plan, blocks, on_bad_cell: str, policies: dict):
    """One job per CSV block (per part of a block cut at a header line inside it): parse,
    clean; rows with a wrong field count and header lines are counted."""
    for whole, whole_first in blocks:
        parts, headers, reordered, plan, error = rawparse.cut_at_headers(plan, whole, whole_first)
        if error is not None:  # one schema per output file: the file fails
            raise error
        for k, (part_plan, block, first) in enumerate(parts or [(plan, b"", whole_first)]):

            def job(
                plan=part_plan, block=block, first=first, k=k, headers=headers, moved=reordered
            ):
                if block.strip():
                    table, n_invalid = rawparse.parse_csv(plan, block, first, on_bad_cell)
                else:  # a block of header lines only
                    table = pa.table([pa.array([], pa.binary())] * len(plan.raw), plan.raw)
                    n_invalid = 0

                def where(i: int) -> str:
                    return f"line {rawparse.line_of(block, first, i)}"

                raw, dropped = rawparse.prepare(plan, table, where, on_bad_cell)
                counts = collections.Counter(wrong_field_count=n_invalid)
                if k == 0:  # the block's header lines, once
                    counts["repeated_header"] = headers
                    dropped.fixed.update(+collections.Counter(reordered_header=moved))
                dropped.rows_in += sum(counts.values())
                dropped.dropped.update(+counts)
                return _clean(plan, raw, dropped, policies)

            yield job


def _parquet_jobs(plan: rawparse.Plan, on_bad_cell: str, policies: dict):
    """One job per Parquet batch (text columns of numbers take the same parsing path)."""
    row0 = 0
    for batch in rawparse.parquet_batches(pq.ParquetFile(plan.src), plan, PARQUET_BATCH_ROWS):

        def job(batch=batch, row0=row0):
            def where(i: int) -> str:
                return f"row {row0 + i + 1}"

            raw, dropped = rawparse.prepare(plan, batch, where, on_bad_cell)
            return _clean(plan, raw, dropped, policies)

        row0 += batch.num_rows
        yield job


def _collect(result: tuple[pa.Table, clean.CleanReport], report, sink: _Sink) -> None:
    out, block_report = result
    report.merge(block_report)
    sink.add(out)


def convert_file(
    src: str,
    dst_dir: str,
    *,
    nonfinite: str = "drop",
    negative: str = "clamp",
    on_bad_cell: str = "drop",
    block_size: int = BLOCK_SIZE,
) -> clean.CleanReport:
    """Convert one CSV, CSV.gz or Parquet file to ``dst_dir/<stem>.parquet``; see module doc.

    Errors are ``ValueError`` whose message starts with ``src``.
    """
    _check_policies(nonfinite, negative, on_bad_cell)
    try:
        return _convert_file(src, dst_dir, nonfinite, negative, on_bad_cell, block_size)
    except (ValueError, csv.Error, pa.ArrowException, OSError) as e:  # corrupt gzip, ...
        if str(e).startswith(src):
            raise
        raise ValueError(f"{src}: {e}") from e


def _check_policies(nonfinite: str, negative: str, on_bad_cell: str) -> None:
    if on_bad_cell not in BAD_CELL_POLICIES:
        raise ValueError(f"on_bad_cell must be one of {BAD_CELL_POLICIES}, got {on_bad_cell!r}")
    if nonfinite not in clean.NONFINITE_POLICIES or negative not in clean.NEGATIVE_POLICIES:
        raise ValueError(f"unknown policy: nonfinite={nonfinite!r}, negative={negative!r}")


def _convert_file(
    src: str, dst_dir: str, nonfinite: str, negative: str, on_bad_cell: str, block_size: int
) -> clean.CleanReport:
    policies = {"nonfinite": nonfinite, "negative": negative}
    dst = output_path(src, dst_dir)
    # realpath and samefile: an output folder that is a symlink to the input's folder
    # (or a hard link to the input) must not replace the raw file.
    if atomic.same_file(dst, src):
        raise ValueError(f"{src}: the output would overwrite the input")
    if os.path.getsize(src) == 0:
        raise ValueError(f"{src}: empty file (0 bytes, no header)")
    if src.lower().endswith(".parquet"):
        plan = rawparse.Plan(src, pq.read_schema(src).names)
        jobs = _parquet_jobs(plan, on_bad_cell, policies)
    else:
        plan = rawparse.Plan(src, rawparse.csv_header(src))
        jobs = _csv_jobs(plan, rawparse.csv_blocks(src, block_size), on_bad_cell, policies)
    report = clean.CleanReport(source=src, unknown_columns=plan.unknown)
    os.makedirs(dst_dir, exist_ok=True)
    start = time.monotonic()
    progress = console.Progress("rows", label=f"{src}: ", every=PROGRESS_SECONDS)
    sink = None
    try:  # from the temporary's creation on: an interrupt may come at any point
        file, tmp = atomic.temporary(dst)  # O_EXCL: no planted file or symlink is followed
        sink = _Sink(file)
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            pending = collections.deque()
            for job in jobs:
                pending.append(pool.submit(job))
                while len(pending) > WORKERS or (pending and pending[0].done()):
                    _collect(pending.popleft().result(), report, sink)
                progress.update(report.rows_in)
            while pending:
                _collect(pending.popleft().result(), report, sink)
        # An empty block carries the schema, so a header-only file gives a valid file.
        empty = [pa.array([], pa.float64() if x else pa.string()) for x in plan.numeric]
        nothing = clean.CleanReport(source=src)
        _collect(_clean(plan, pa.table(empty, plan.raw), nothing, policies), report, sink)
        sink.close({_META_KEY: json.dumps(report.to_json())})
        os.replace(tmp, dst)
    except BaseException as e:
        try:
            if sink is not None:
                sink.close(None)
        except OSError:
            pass  # the error that stopped the write is the one to report
        atomic.discard_own(dst)  # by name: an interrupt may have come inside temporary()
        if isinstance(e, OSError) and e.errno in atomic.WRITE_ERRORS:
            raise ValueError(
                f"{src}: cannot write {dst}: {atomic.cause(e)}; an earlier"
                f" {os.path.basename(dst)}, if any, is unchanged"
            ) from e
        raise
    seconds = time.monotonic() - start
    logging.info(
        "%s -> %s: %d rows in, %d out, %.1f s (%.0f rows/s)",
        src, dst, report.rows_in, report.rows_out, seconds, report.rows_in / max(seconds, 1e-9),
    )  # fmt: skip
    if report.rows_in == 0:
        logging.warning("%s: no data rows (header only); wrote an empty file", src)
    elif report.drops_most():
        logging.warning(
            "%s: %s%s",
            src,
            report.dropped_note(),
            "; wrote an empty file" if not report.rows_out else "",
        )
    return report


def output_path(src: str, dst_dir: str) -> str:
    """``dst_dir/<stem>.parquet`` for an input path (``x.csv.gz`` -> ``x.parquet``)."""
    base = os.path.basename(src)
    for suffix in _SUFFIXES:
        if base.lower().endswith(suffix):
            return os.path.join(dst_dir, base[: -len(suffix)] + ".parquet")
    raise ValueError(f"{src}: unsupported input (expected one of {_SUFFIXES})")


def expand_inputs(inputs: list[str]) -> list[str]:
    """Paths and glob patterns -> unique files in the order given (each glob sorted)."""
    files: list[str] = []
    for item in inputs:
        matches = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        if not matches or not os.path.exists(matches[0]):
            raise ValueError(f"no input file matches {item!r}")
        if others := [m for m in matches if not os.path.isfile(m)]:
            raise ValueError(f"not a regular file (matched by {item!r}): {others[:5]}")
        files += [m for m in matches if m not in files]
    return files


def convert(
    inputs: list[str],
    output_dir: str,
    *,
    nonfinite: str = "drop",
    negative: str = "clamp",
    on_bad_cell: str = "drop",
    block_size: int = BLOCK_SIZE,
) -> list[clean.CleanReport]:
    """Convert every input and write ``report.json``; ``ConvertError`` if any file failed."""
    _check_policies(nonfinite, negative, on_bad_cell)
    files = expand_inputs(inputs)
    outputs = collections.Counter(output_path(f, output_dir) for f in files)
    if clashes := sorted(d for d, c in outputs.items() if c > 1):
        raise ValueError(f"several inputs would write the same output: {clashes}")
    os.makedirs(output_dir, exist_ok=True)
    atomic.remove_stale(output_dir)  # of killed conversions
    policies = {"nonfinite": nonfinite, "negative": negative, "on_bad_cell": on_bad_cell}
    reports, entries, failures = [], [], {}
    try:
        for src in files:
            _convert_one(src, output_dir, entries, reports, failures, policies, block_size)
    except KeyboardInterrupt:  # convert_file removed its temporary
        if not entries or entries[-1]["source"] != src:
            entries.append({"source": src, "error": "interrupted"})
        _write_report(output_dir, policies, entries, reports, failures, interrupted=src)
        raise
    _write_report(output_dir, policies, entries, reports, failures)
    if failures:
        raise ConvertError(failures, reports)
    return reports


def _convert_one(src, output_dir, entries, reports, failures, policies, block_size) -> None:
    """Converts one file of ``convert``'s list and adds its entry, or its failure."""
    t0 = time.monotonic()
    try:
        rep = convert_file(src, output_dir, block_size=block_size, **policies)
    except (ValueError, OSError) as e:
        logging.error("%s failed: %s", src, e)
        stale = output_path(src, output_dir)
        same = os.path.exists(stale) and os.path.samefile(stale, src)
        if os.path.exists(stale) and not same:  # an older conversion of this input
            os.remove(stale)  # a later training must not take it as this one
            logging.error("%s: removed the older output %s", src, stale)
        failures[src] = str(e)
        entries.append({"source": src, "error": str(e)})
        return
    reports.append(rep)
    seconds = round(time.monotonic() - t0, 3)
    entries.append({**rep.to_json(), "output": output_path(src, output_dir), "seconds": seconds})


def _write_report(output_dir, policies, entries, reports, failures, interrupted=None) -> None:
    """``report.json``: per-file entries and totals (``interrupted``: the file it stopped in)."""
    total = clean.CleanReport(source="total")
    for rep in reports:
        total.merge(rep)
    total.style, total.features = ",".join(sorted({r.style for r in reports})), []
    summary = {
        "policies": policies,
        "files": entries,
        "total": {**total.to_json(), "files_ok": len(reports), "files_failed": len(failures)},
    }
    if interrupted is not None:
        summary["interrupted"] = interrupted
    atomic.write_json(os.path.join(output_dir, "report.json"), summary, ensure_ascii=False)
