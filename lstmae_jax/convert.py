"""Streaming CSV / CSV.gz / Parquet -> canonical Parquet, with cleaning and a report.

Each input file becomes ``<stem>.parquet`` (zstd) in the output directory, in the schema
that ``clean.canonicalize`` returns, and ``report.json`` there holds one ``CleanReport``
per file plus totals. Memory stays flat as files grow: CSV is cut into blocks of whole
lines, Parquet is read batch by batch, and row groups are written as they fill. Blocks
are parsed and cleaned on a small thread pool (Arrow and numpy release the GIL) while a
writer thread encodes the previous row group; results are used in file order.

Raw CSV quirks handled on purpose (each has a test):

* The header is read here, not by Arrow: the raw CICIDS2017 header has ``Fwd Header
  Length`` twice and leading spaces; Arrow gets unique positional names instead.
* Numbers: a block is first parsed typed (float64), the fast path. If that fails, the
  block is parsed again as bytes and each column cast on its own; only a column whose cast
  fails goes through a regex validity mask. ``Infinity``, ``inf`` and ``NaN`` (any case,
  signed) are native IEEE values; an empty cell is missing and becomes NaN, so the
  ``nonfinite`` policy decides about it.
* Header lines repeated inside a file (2018 Thursday-01-03 and others) are recognised by
  their label cell and dropped as ``repeated_header``.
* A cell that is not a number (``abc``): ``on_bad_cell="drop"`` drops the row, counted as
  ``unparsable``; ``"error"`` raises ``ValueError`` naming file, line and column.
* A row with the wrong number of fields: dropped as ``wrong_field_count``, or with
  ``on_bad_cell="error"`` a ``ValueError`` naming file and line.
* Text columns (label, IPs, timestamp) are UTF-8, or else cp1252, the encoding of the
  original 2017 CSVs (the en dash of the web-attack labels).
* Empty files: 0 bytes (no header) is an error; a header without rows gives an empty
  Parquet file with the canonical schema and a warning.

Like Arrow with its defaults, blocks are cut at every newline: quoted fields must not
contain newlines (CICFlowMeter never quotes). Line numbers are physical, header = line 1.

Atomicity: a file is written under a hidden temporary name in the output directory and
renamed onto ``<stem>.parquet`` only when complete, so an interrupted run never leaves a
truncated file under the final name and never touches an earlier complete output.
``convert`` keeps going after a failed file (its error goes into ``report.json``) and
raises ``ConvertError`` at the end: one bad file never costs the others their outputs.
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
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from absl import logging

from lstmae_jax import clean, schema

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
# Exactly what Arrow's string->double cast accepts (tests/test_convert.py checks it), so the
# masked re-cast of a column with bad cells cannot fail.
_NUMBER = r"^[+-]?(?:[0-9]+\.?[0-9]*(?:e[+-]?[0-9]+)?|\.[0-9]+(?:e[+-]?[0-9]+)?|inf|infinity|nan)$"


class ConvertError(ValueError):
    """Some inputs failed (``failures``: path -> message); ``reports``: the converted ones."""

    def __init__(self, failures: dict[str, str], reports: list[clean.CleanReport]):
        super().__init__("; ".join(f"{src}: {msg}" for src, msg in failures.items()))
        self.failures, self.reports = failures, reports


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def _text(arr: pa.Array) -> pa.Array:
    """Bytes -> strings, decoding each distinct value through ``_decode`` if not UTF-8."""
    if not pa.types.is_binary(arr.type):
        return arr
    try:
        return pc.cast(arr, pa.string())
    except pa.ArrowInvalid:
        enc = pc.dictionary_encode(arr)
        words = pa.array([_decode(b) for b in enc.dictionary.to_pylist()], pa.string())
        return pc.cast(pa.DictionaryArray.from_arrays(enc.indices, words), pa.string())


def _array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array (zero-copy for the usual single chunk)."""
    if isinstance(col, pa.Array):
        return col
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def _numbers(arr: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    """float64 values and the mask of unparsable cells (None when all parsed)."""
    try:
        return pc.cast(arr, pa.float64()), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if not (pa.types.is_binary(arr.type) or pa.types.is_string(arr.type)):
            raise
    trimmed = pc.replace_substring_regex(arr, r"^\s+|\s+$", "")
    ok = pc.fill_null(pc.match_substring_regex(trimmed, _NUMBER, ignore_case=True), True)
    values = pc.cast(pc.if_else(ok, trimmed, pa.scalar(None, trimmed.type)), pa.float64())
    return values, pc.invert(ok)


class _Plan:
    """Which input columns are read, and how: numbers, text, or the label."""

    def __init__(self, src: str, raw: list[str]):
        names = schema.canonical_names(raw)
        if schema.LABEL not in names:
            raise ValueError(f"{src}: no label column (looked for {schema.LABEL_SPELLINGS})")
        self.src, self.n_fields = src, len(raw)
        self.keep = [i for i, n in enumerate(names) if n is not None]
        self.raw = [raw[i] for i in self.keep]
        kept = [names[i] for i in self.keep]
        self.numeric = [n in schema.KIND or n == schema.DUPLICATE_FWD_HEADER for n in kept]
        self.label = kept.index(schema.LABEL)
        self.unknown = [r for r, n in zip(raw, names, strict=True) if n is None]


def _open(src: str) -> pa.NativeFile:
    return pa.input_stream(src, compression="gzip" if src.lower().endswith(".gz") else None)


def _read_line(stream: pa.NativeFile, block_size: int) -> tuple[bytes, bytes]:
    """(first line without its newline, the bytes read after it)."""
    head = b""
    while b"\n" not in head and (chunk := stream.read(block_size)):
        head += chunk
    line, _, rest = head.partition(b"\n")
    return line, rest


def _csv_header(src: str) -> list[str]:
    with _open(src) as stream:
        line, _ = _read_line(stream, 1 << 16)
    line = line.rstrip(b"\r").removeprefix(b"\xef\xbb\xbf")
    if not line.strip():
        raise ValueError(f"{src}: empty file (no header line)")
    return next(csv.reader([_decode(line)]))


def _csv_blocks(src: str, block_size: int):
    """Blocks of whole lines after the header, each with the number of its first line."""
    with _open(src) as stream:
        carry, lineno = _read_line(stream, block_size)[1], 2
        while data := stream.read(block_size):
            data = carry + data
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            if data[:cut].strip():
                yield data[:cut], lineno
            lineno += data.count(b"\n", 0, cut)
    if carry.strip():
        yield carry, lineno


def _line_of(block: bytes, first: int, row: int) -> int:
    """Physical line number of the row-th (0-based) non-empty line of a block."""
    for offset, text in enumerate(block.split(b"\n")):
        if text.strip(b"\r"):
            if row == 0:
                return first + offset
            row -= 1
    return first


def _parse_csv(plan: _Plan, block: bytes, first: int, on_bad_cell: str):
    """A block of CSV lines -> (raw table of kept columns, rows with a wrong field count)."""
    positional = [f"f{i}" for i in range(plan.n_fields)]
    include = [positional[i] for i in plan.keep]
    for typed in (True, False):
        invalid = []

        def on_invalid(row, invalid=invalid) -> str:
            invalid.append(row)
            return "error" if on_bad_cell == "error" else "skip"

        types = {
            name: pa.float64() if typed and is_num else pa.binary()
            for name, is_num in zip(include, plan.numeric, strict=True)
        }
        try:
            table = pcsv.read_csv(
                pa.py_buffer(block),
                read_options=pcsv.ReadOptions(
                    column_names=positional, use_threads=False, block_size=len(block) + 1
                ),
                parse_options=pcsv.ParseOptions(invalid_row_handler=on_invalid),
                convert_options=pcsv.ConvertOptions(
                    column_types=types,
                    include_columns=include,
                    strings_can_be_null=True,
                    null_values=[""],
                ),
            )
            return table, len(invalid)
        except pa.ArrowInvalid as e:
            if invalid and on_bad_cell == "error":
                row = invalid[-1]
                raise ValueError(
                    f"{plan.src}: line {_line_of(block, first, row.number - 1)}: expected "
                    f"{row.expected_columns} fields, got {row.actual_columns}: {row.text[:80]!r}"
                ) from e
            if not typed:
                raise ValueError(f"{plan.src}: lines from {first}: {e}") from e
    raise AssertionError("unreachable")


def _prepare(plan: _Plan, table, where, on_bad_cell: str) -> tuple[pa.Table, clean.CleanReport]:
    """Raw columns -> numbers and text, minus the rows dropped here (counted in the report).

    ``where(i)`` names row i in error messages. The report's ``rows_in`` counts only the
    rows dropped here; ``clean.canonicalize`` counts the rows it is given (see ``_clean``).
    """
    n = table.num_rows
    label = _text(_array(table.column(plan.label)))
    header_rows = None
    if n and pa.types.is_string(label.type):
        enc = pc.dictionary_encode(label)
        words = [schema.canonical_name(w) == schema.LABEL for w in enc.dictionary.to_pylist()]
        if any(words):
            header_rows = pc.fill_null(pc.take(pa.array(words), enc.indices), False)
    columns, bad = [], header_rows
    for i, is_num in enumerate(plan.numeric):
        col = _array(table.column(i))
        if i == plan.label or not is_num or pa.types.is_float64(col.type):
            columns.append(label if i == plan.label else _text(col))
            continue
        values, unparsable = _numbers(col)
        if unparsable is not None and header_rows is not None:
            unparsable = pc.and_(unparsable, pc.invert(header_rows))
        if unparsable is not None and pc.any(unparsable).as_py():
            if on_bad_cell == "error":
                at = pc.index(unparsable, True).as_py()
                cell = col[at].as_py()
                cell = _decode(cell) if isinstance(cell, bytes) else cell
                raise ValueError(
                    f"{plan.src}: {where(at)}, column {plan.raw[i].strip()!r}: "
                    f"cannot parse {cell!r} as a number"
                )
            bad = unparsable if bad is None else pc.or_(bad, unparsable)
        columns.append(values)
    raw = pa.Table.from_arrays(columns, names=plan.raw)
    report = clean.CleanReport(source=plan.src)
    if bad is not None:
        raw = raw.filter(pc.invert(bad))
        n_header = pc.sum(header_rows).as_py() if header_rows is not None else 0
        report.dropped.update(repeated_header=n_header, unparsable=n - raw.num_rows - n_header)
        report.dropped = +report.dropped
        report.rows_in = n - raw.num_rows
    return raw, report


class _Sink:
    """Gathers canonical blocks into row groups and writes each on a background thread.

    One group is encoded while the next fills, never more, so memory stays flat. Bigger
    groups encode faster and smaller (fewer dictionary pages) but hold more rows in
    memory; see ROW_GROUP_ROWS.
    """

    def __init__(self, path: str):
        self.path, self.writer, self.parts, self.rows, self.pending = path, None, [], 0, None
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    def add(self, table: pa.Table) -> None:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema, **PARQUET_OPTIONS)
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
        if self.writer is not None:
            self.writer.close()


def _clean(plan: _Plan, raw: pa.Table, dropped: clean.CleanReport, policies: dict):
    """``clean.canonicalize`` plus the rows already dropped while parsing."""
    out, report = clean.canonicalize(raw, source=plan.src, **policies)
    report.merge(dropped)
    return out, report


def _csv_jobs(plan: _Plan, blocks, on_bad_cell: str, policies: dict):
    """One job per CSV block: parse, clean; rows with a wrong field count are counted."""
    for block, first in blocks:

        def job(block=block, first=first):
            table, n_invalid = _parse_csv(plan, block, first, on_bad_cell)

            def where(i: int) -> str:
                return f"line {_line_of(block, first, i)}"

            raw, dropped = _prepare(plan, table, where, on_bad_cell)
            dropped.rows_in += n_invalid
            dropped.dropped.update(+collections.Counter(wrong_field_count=n_invalid))
            return _clean(plan, raw, dropped, policies)

        yield job


def _parquet_jobs(plan: _Plan, on_bad_cell: str, policies: dict):
    """One job per Parquet batch (text columns of numbers take the same parsing path)."""
    row0 = 0
    for batch in pq.ParquetFile(plan.src).iter_batches(PARQUET_BATCH_ROWS, columns=plan.raw):

        def job(batch=batch, row0=row0):
            def where(i: int) -> str:
                return f"row {row0 + i + 1}"

            raw, dropped = _prepare(plan, batch.select(plan.raw), where, on_bad_cell)
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
    """Convert one CSV, CSV.gz or Parquet file to ``dst_dir/<stem>.parquet``; see module doc."""
    if on_bad_cell not in BAD_CELL_POLICIES:
        raise ValueError(f"on_bad_cell must be one of {BAD_CELL_POLICIES}, got {on_bad_cell!r}")
    if nonfinite not in clean.NONFINITE_POLICIES or negative not in clean.NEGATIVE_POLICIES:
        raise ValueError(f"unknown policy: nonfinite={nonfinite!r}, negative={negative!r}")
    policies = {"nonfinite": nonfinite, "negative": negative}
    dst = output_path(src, dst_dir)
    if os.path.abspath(dst) == os.path.abspath(src):
        raise ValueError(f"{src}: the output would overwrite the input")
    if os.path.getsize(src) == 0:
        raise ValueError(f"{src}: empty file (0 bytes, no header)")
    if src.lower().endswith(".parquet"):
        plan = _Plan(src, pq.read_schema(src).names)
        jobs = _parquet_jobs(plan, on_bad_cell, policies)
    else:
        plan = _Plan(src, _csv_header(src))
        jobs = _csv_jobs(plan, _csv_blocks(src, block_size), on_bad_cell, policies)
    report = clean.CleanReport(source=src, unknown_columns=plan.unknown)
    os.makedirs(dst_dir, exist_ok=True)
    tmp = os.path.join(dst_dir, f".{os.path.basename(dst)}.{os.getpid()}.tmp")
    sink = _Sink(tmp)
    start = last_log = time.monotonic()
    try:
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            pending = collections.deque()
            for job in jobs:
                pending.append(pool.submit(job))
                while len(pending) > WORKERS or (pending and pending[0].done()):
                    _collect(pending.popleft().result(), report, sink)
                if time.monotonic() - last_log > PROGRESS_SECONDS:
                    last_log = time.monotonic()
                    rate = report.rows_in / (last_log - start)
                    logging.info("%s: %d rows, %.0f rows/s", src, report.rows_in, rate)
            while pending:
                _collect(pending.popleft().result(), report, sink)
        # An empty block carries the schema, so a header-only file gives a valid file.
        empty = [pa.array([], pa.float64() if x else pa.string()) for x in plan.numeric]
        nothing = clean.CleanReport(source=src)
        _collect(_clean(plan, pa.table(empty, plan.raw), nothing, policies), report, sink)
        sink.close({_META_KEY: json.dumps(report.to_json())})
        os.replace(tmp, dst)
    except BaseException:
        sink.close(None)
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    seconds = time.monotonic() - start
    logging.info(
        "%s -> %s: %d rows in, %d out, %.1f s (%.0f rows/s)",
        src, dst, report.rows_in, report.rows_out, seconds, report.rows_in / max(seconds, 1e-9),
    )  # fmt: skip
    if report.rows_in == 0:
        logging.warning("%s: no data rows (header only); wrote an empty file", src)
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
        if not matches or not all(os.path.isfile(m) for m in matches):
            raise ValueError(f"no input file matches {item!r}")
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
    files = expand_inputs(inputs)
    outputs = collections.Counter(output_path(f, output_dir) for f in files)
    if clashes := sorted(d for d, c in outputs.items() if c > 1):
        raise ValueError(f"several inputs would write the same output: {clashes}")
    os.makedirs(output_dir, exist_ok=True)
    reports, entries, failures = [], [], {}
    for src in files:
        t0 = time.monotonic()
        try:
            rep = convert_file(
                src, output_dir, nonfinite=nonfinite, negative=negative,
                on_bad_cell=on_bad_cell, block_size=block_size,
            )  # fmt: skip
        except (ValueError, OSError, pa.ArrowException) as e:
            logging.error("%s failed: %s", src, e)
            failures[src] = str(e)
            entries.append({"source": src, "error": str(e)})
            continue
        reports.append(rep)
        seconds = round(time.monotonic() - t0, 3)
        entries.append(
            {**rep.to_json(), "output": output_path(src, output_dir), "seconds": seconds}
        )
    total = clean.CleanReport(source="total")
    for rep in reports:
        total.merge(rep)
    total.style, total.features = ",".join(sorted({r.style for r in reports})), []
    summary = {
        "policies": {"nonfinite": nonfinite, "negative": negative, "on_bad_cell": on_bad_cell},
        "files": entries,
        "total": {**total.to_json(), "files_ok": len(reports), "files_failed": len(failures)},
    }
    tmp = os.path.join(output_dir, f".report.json.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1, ensure_ascii=False)
    os.replace(tmp, os.path.join(output_dir, "report.json"))
    if failures:
        raise ConvertError(failures, reports)
    return reports
