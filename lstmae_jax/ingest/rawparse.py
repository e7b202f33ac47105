"""Raw input -> typed Arrow columns: CSV header and blocks, numbers, text, bad cells.

The parsing layer of ``convert``: it reads a CSV header, cuts the file into blocks of whole
lines, parses each block into a table of the kept columns (``Plan``), and turns raw columns
(CSV blocks, or Parquet batches whose numbers are text) into float64 numbers and strings,
dropping and counting the rows it cannot use (``prepare``). Cleaning and writing are
``convert``'s job.

Raw CSV quirks handled on purpose (each has a test in tests/ingest/test_convert.py):

* The header is read here, not by Arrow: the raw CICIDS2017 header has ``Fwd Header
  Length`` twice and leading spaces; Arrow gets unique positional names instead.
* Numbers: a block is first parsed typed (float64), the fast path. If that fails, the
  block is parsed again as bytes and each column cast on its own; only a column whose cast
  fails goes through a regex validity mask. ``Infinity``, ``inf`` and ``NaN`` (any case,
  signed) are native IEEE values; an empty cell is missing and becomes NaN, so the
  ``nonfinite`` policy decides about it.
* Header lines inside a file (2018 Thursday-01-03 repeats its own; a log re-opened by a
  differently configured exporter writes another) are found by ``cut_at_headers`` and
  dropped as ``repeated_header``. The rows after a header are read with *that* header:
  one in another column order or naming style is re-mapped (counted as
  ``fixed["reordered_header"]``, logged with its line), never read with the old columns;
  one with other columns is refused naming its line (``Plan.reheader``). A repeated
  header the block cutter does not see is still dropped by its label cell.
* A cell that is not a number (``abc``): ``on_bad_cell="drop"`` drops the row, counted as
  ``unparsable``; ``"error"`` raises ``ValueError`` naming file, line and column.
* A row with the wrong number of fields: dropped as ``wrong_field_count`` (counted by the
  caller), or with ``on_bad_cell="error"`` a ``ValueError`` naming file and line.
* Text columns (label, IPs, timestamp) are UTF-8, or else cp1252, the encoding of the
  original 2017 CSVs (the en dash of the web-attack labels). A UTF-8 byte-order mark and
  CRLF line ends are accepted.
* Refused with the file's name (``csv_header``): UTF-16/32 text, NUL or other control bytes
  in the header line (binary data), a carriage return inside the header (CR-only line
  ends), no line end in the first ``HEADER_BYTES``, gzip data in a file not named ``.gz``
  (and a ``.gz`` that is not gzip). ``Plan`` refuses a header with no label column, with
  no feature column (a file of unknown columns), or with two columns of one canonical name.
* Parquet columns: integers (uint64 too), floats, nulls, and text (parsed as above) are
  numbers; any other type (timestamp, list, bool, ...) in a feature column is refused with
  the column's name.

Like Arrow with its defaults, blocks are cut at every newline: quoted fields must not
contain newlines (CICFlowMeter never quotes). Line numbers are physical, header = line 1.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from absl import logging

from lstmae_jax.ingest import clean, schema

# A header line longer than this without a line end is no CICFlowMeter header (~2.5 kB).
HEADER_BYTES = 1 << 20
# Exactly what Arrow's string->double cast accepts (tests/ingest/test_convert.py checks it), so the
# masked re-cast of a column with bad cells cannot fail.
NUMBER = r"^[+-]?(?:[0-9]+\.?[0-9]*(?:e[+-]?[0-9]+)?|\.[0-9]+(?:e[+-]?[0-9]+)?|inf|infinity|nan)$"


def parquet_batches(pf: pq.ParquetFile, plan: Plan, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The kept columns of a Parquet file, named ``plan.raw``, batch by batch, selected by
    position: a raw CICIDS2017 day saved to Parquet as it is holds ``Fwd Header Length``
    twice, which Arrow's selection by name refuses (``KeyError``). Arrow reads leaf
    columns, so a nested column (refused later, by name) counts its leaves."""
    first, at = [], 0  # each column's first leaf
    for field in pf.schema_arrow:
        first.append(at)
        at += _leaves(field.type)
    leaves = [
        first[k] + j for k in plan.keep for j in range(_leaves(pf.schema_arrow.field(k).type))
    ]
    for batch in pf.reader.iter_batches(
        batch_rows, range(pf.num_row_groups), column_indices=leaves
    ):
        yield pa.RecordBatch.from_arrays(batch.columns, names=plan.raw)


def _leaves(type_: pa.DataType) -> int:
    """How many Parquet leaf columns an Arrow type is stored as."""
    if pa.types.is_struct(type_):
        return sum(_leaves(type_.field(i).type) for i in range(type_.num_fields))
    if pa.types.is_map(type_):
        return _leaves(type_.key_type) + _leaves(type_.item_type)
    if (
        pa.types.is_list(type_)
        or pa.types.is_large_list(type_)
        or pa.types.is_fixed_size_list(type_)
    ):
        return _leaves(type_.value_type)
    return 1


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


def _is_text(t: pa.DataType) -> bool:
    return any(
        f(t) for f in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary,
                       pa.types.is_large_binary)
    )  # fmt: skip


def _array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array (zero-copy for the usual single chunk)."""
    if isinstance(col, pa.Array):
        return col
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def _numbers(arr: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    """float64 values and the mask of unparsable cells (None when all parsed).

    ``TypeError`` for a type that holds no numbers (the caller names file and column).
    """
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if clean.numeric_type(arr.type):
        return pc.cast(arr, pa.float64(), safe=False), None  # uint64 above 2**53 rounds
    if not _is_text(arr.type):
        raise TypeError(f"is {arr.type}, expected numbers")
    try:
        return pc.cast(arr, pa.float64()), None
    except pa.ArrowInvalid:
        pass
    trimmed = pc.replace_substring_regex(arr, r"^\s+|\s+$", "")
    ok = pc.fill_null(pc.match_substring_regex(trimmed, NUMBER, ignore_case=True), True)
    values = pc.cast(pc.if_else(ok, trimmed, pa.scalar(None, trimmed.type)), pa.float64())
    return values, pc.invert(ok)


class Plan:
    """Which input columns are read, and how: numbers, text, or the label."""

    def __init__(self, src: str, raw: list[str], require_label: bool = True):
        try:
            names = schema.canonical_names(raw)
        except ValueError as e:  # two columns of one canonical name
            raise ValueError(f"{src}: {e}") from e
        if schema.LABEL not in names and require_label:
            hint = "; the header has one column: is the separator a comma?" if len(raw) == 1 else ""
            raise ValueError(f"{src}: no label column (looked for {schema.LABEL_SPELLINGS}){hint}")
        self.unknown = [r for r, n in zip(raw, names, strict=True) if n is None]
        if not any(n in schema.KIND for n in names):
            raise ValueError(
                f"{src}: no feature column: none of the {len(schema.FEATURES)} CICFlowMeter "
                f"features is in the header (unknown columns: {self.unknown[:8]})"
            )
        self.src, self.n_fields = src, len(raw)
        self.keep = [i for i, n in enumerate(names) if n is not None]
        self.raw = [raw[i] for i in self.keep]
        kept = [names[i] for i in self.keep]
        self.numeric = [n in schema.KIND or n == schema.DUPLICATE_FWD_HEADER for n in kept]
        self.label = kept.index(schema.LABEL) if schema.LABEL in kept else None  # scorer input
        self.header, self.names = list(raw), kept

    def reheader(self, raw: list[str], line: int, same_columns: bool = True) -> Plan:
        """The plan for a header met at ``line`` inside the file. ``same_columns``: it must
        name the same columns as this one, in any order or naming style (the converter's
        output has one schema per file); else it needs only what ``Plan`` needs."""
        try:  # the converter keeps a label column it had; the scorer needs none
            new = Plan(self.src, raw, require_label=same_columns and self.label is not None)
        except ValueError as e:
            raise ValueError(f"{self.src}: line {line}: a header inside the file: {e}") from e
        # The duplicated Fwd Header Length is checked and dropped: not a column of the output.
        have, had = (
            set(new.names) - {schema.DUPLICATE_FWD_HEADER},
            set(self.names) - {schema.DUPLICATE_FWD_HEADER},
        )
        if same_columns and have != had:
            adds, lacks = sorted(have - had), sorted(had - have)
            raise ValueError(
                f"{self.src}: line {line}: a header with other columns than line 1's (adds"
                f" {adds}, lacks {lacks}); split the file at this line and convert both parts"
            )
        return new


def _open(src: str) -> pa.NativeFile:
    return pa.input_stream(src, compression="gzip" if src.lower().endswith(".gz") else None)


def _read_line(stream: pa.NativeFile, block_size: int) -> tuple[bytes, bytes]:
    """(first line without its newline, the bytes read after it)."""
    head = b""
    while b"\n" not in head and (chunk := stream.read(block_size)):
        head += chunk
    line, _, rest = head.partition(b"\n")
    return line, rest


def csv_header(src: str) -> list[str]:
    """The header's column names; ``ValueError`` naming the file for what is no CSV text."""
    with open(src, "rb") as f:
        magic = f.read(4)
    if magic == b"PAR1":
        raise ValueError(f"{src}: Parquet data in a file not named .parquet; rename it")
    gzipped = magic[:2] == b"\x1f\x8b"
    if gzipped != src.lower().endswith(".gz"):
        raise ValueError(
            f"{src}: gzip-compressed data in a file not named .gz; rename it to .csv.gz"
            if gzipped
            else f"{src}: named .gz but not gzip-compressed"
        )
    with _open(src) as stream:
        head = b""
        while b"\n" not in head and len(head) <= HEADER_BYTES and (chunk := stream.read(1 << 16)):
            head += chunk
    line, newline, _ = head.partition(b"\n")
    if not newline and len(head) > HEADER_BYTES:
        raise ValueError(
            f"{src}: no line end in the first {HEADER_BYTES >> 20} MiB: not CSV text, or "
            "CR-only (old Mac) line ends"
        )
    if line.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValueError(f"{src}: UTF-16/32 text (byte-order mark); re-save the file as UTF-8")
    line = line.rstrip(b"\r").removeprefix(b"\xef\xbb\xbf")
    if bad := re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", line):
        at, byte = bad.start(), bad.group()
        what = {b"\x00": "a NUL byte (UTF-16 text, or binary data)", b"\r": "a carriage return"}
        raise ValueError(
            f"{src}: line 1 (header), column {line[:at].count(b',') + 1}: "
            f"{what.get(byte, f'control byte {byte!r}')}; not a CSV text header"
            + (" (CR-only line ends?)" if byte == b"\r" else "")
        )
    if not line.strip():
        raise ValueError(f"{src}: empty file (no header line)")
    try:
        return next(csv.reader([_decode(line)]))
    except csv.Error as e:
        raise ValueError(f"{src}: line 1 (header): {e}") from e


def csv_blocks(src: str, block_size: int):
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


# Words in every CICFlowMeter header style and in no data row: a block without any of them
# holds no header line, and is not searched line by line (the common case costs ~0.3 ms/MiB).
HEADER_WORDS = (b"Fwd", b"Bwd", b"Flow", b"Dst", b"Destination", b"Protocol", b"Label", b"label")


def _header_names(line: bytes) -> list[str] | None:
    """A line's cells if it is a header (at least half of them, and two, name known
    columns), else None."""
    try:  # a byte-order mark where two exports were concatenated
        cells = next(csv.reader([_decode(line.rstrip(b"\r").removeprefix(b"\xef\xbb\xbf"))]))
    except (csv.Error, StopIteration):
        return None
    known = sum(schema.canonical_name(c) is not None for c in cells)
    return cells if known >= max(2, len(cells) // 2) else None


def cut_at_headers(plan: Plan, block: bytes, first: int, same_columns: bool = True):
    """A block of lines cut at the header lines inside it: ``(parts, headers, reordered,
    plan, error)``, where ``parts`` are ``(plan, bytes, first line)`` each to be read with
    the header above it, ``headers`` counts the header lines left out, ``reordered`` those
    with another column order or naming style, ``plan`` is the one for the next block, and
    ``error`` the ValueError of a header that cannot be read (the parts before it are
    good: the caller raises it after them)."""
    if not any(word in block for word in HEADER_WORDS):
        return [(plan, block, first)], 0, 0, plan, None
    parts, start, start_line, headers, reordered = [], 0, first, 0, 0
    offset = 0
    for number, line in enumerate(block.split(b"\n"), first):
        end = offset + len(line) + 1
        names = _header_names(line) if any(w in line for w in HEADER_WORDS) else None
        if names is not None:
            if offset > start:
                parts.append((plan, block[start:offset], start_line))
            headers += 1
            if [schema.canonical_name(c) for c in names] != [
                schema.canonical_name(c) for c in plan.header
            ]:
                try:
                    plan = plan.reheader(names, number, same_columns)
                except ValueError as e:
                    return parts, headers, reordered, plan, e
                reordered += 1
                logging.warning(
                    "%s: line %d: a header in another column order or naming style; the"
                    " rows after it are read with it", plan.src, number,
                )  # fmt: skip
            start, start_line = min(end, len(block)), number + 1
        offset = end
    if start < len(block) and block[start:].strip():
        parts.append((plan, block[start:], start_line))
    return parts, headers, reordered, plan, None


def line_of(block: bytes, first: int, row: int) -> int:
    """Physical line number of the row-th (0-based) non-empty line of a block."""
    for offset, text in enumerate(block.split(b"\n")):
        if text.strip(b"\r"):
            if row == 0:
                return first + offset
            row -= 1
    return first


def parse_csv(plan: Plan, block: bytes, first: int, on_bad_cell: str):
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
                    f"{plan.src}: line {line_of(block, first, row.number - 1)}: expected "
                    f"{row.expected_columns} fields, got {row.actual_columns}: {row.text[:80]!r}"
                ) from e
            if not typed:
                raise ValueError(f"{plan.src}: lines from {first}: {e}") from e
    raise AssertionError("unreachable")


def prepare(plan: Plan, table, where, on_bad_cell: str) -> tuple[pa.Table, clean.CleanReport]:
    """Raw columns -> numbers and text, minus the rows dropped here (counted in the report).

    ``where(i)`` names row i in error messages. The report's ``rows_in`` counts only the
    rows dropped here; ``clean.canonicalize`` counts the rows it is given; ``convert`` merges the two.
    """
    n = table.num_rows
    label = _text(_array(table.column(plan.label))) if plan.label is not None else None
    header_rows = None
    if n and label is not None and pa.types.is_string(label.type):
        enc = pc.dictionary_encode(label)
        words = [schema.canonical_name(w) == schema.LABEL for w in enc.dictionary.to_pylist()]
        if any(words):
            header_rows = pc.fill_null(pc.take(pa.array(words), enc.indices), False)
    columns, bad = [], header_rows
    unparsable_by: list[tuple[str, pa.Array]] = []  # (canonical column, its bad cells)
    for i, is_num in enumerate(plan.numeric):
        col = _array(table.column(i))
        if i == plan.label or not is_num or pa.types.is_float64(col.type):
            columns.append(label if i == plan.label else _text(col))
            continue
        try:
            values, unparsable = _numbers(col)
        except TypeError as e:
            raise ValueError(f"{plan.src}: column {plan.raw[i].strip()!r} {e}") from e
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
            unparsable_by.append((plan.names[i], unparsable))
        columns.append(values)
    raw = pa.Table.from_arrays(columns, names=plan.raw)
    for name in table.column_names[len(plan.numeric) :]:  # a caller's extra columns (clean.ROW)
        raw = raw.append_column(name, table.column(name))
    report = clean.CleanReport(source=plan.src)
    if bad is not None:
        if clean.ROW in table.column_names:  # which rows, and why (``CleanReport.dropped_rows``)
            _record_dropped(report, table.column(clean.ROW), header_rows, unparsable_by)
        raw = raw.filter(pc.invert(bad))
        n_header = pc.sum(header_rows).as_py() if header_rows is not None else 0
        report.dropped.update(repeated_header=n_header, unparsable=n - raw.num_rows - n_header)
        report.dropped = +report.dropped
        report.rows_in = n - raw.num_rows
    return raw, report


def _record_dropped(report, rows, header_rows, unparsable_by) -> None:
    """The ``ROW`` of each row ``prepare`` drops, by reason: a header line, or the first
    column whose cell is no number."""
    rows = pc.fill_null(_array(rows), -1).to_numpy(zero_copy_only=False)
    named = np.zeros(len(rows), bool)
    if header_rows is not None:
        named = header_rows.to_numpy(zero_copy_only=False).astype(bool)
        report.drop_rows("repeated_header", rows[named])
    for name, mask in unparsable_by:
        first = mask.to_numpy(zero_copy_only=False).astype(bool) & ~named
        report.drop_rows(f"unparsable:{name}", rows[first])
        named |= first
