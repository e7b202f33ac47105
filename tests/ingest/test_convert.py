"""convert: every raw-CSV quirk in all three naming styles, atomic output, exact reports."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstmae_jax.ingest import clean, convert, rawparse, schema

STYLES = schema.STYLES
META = {
    "flow_id": "192.168.10.5-8.8.8.8-1234-53-17",
    "src_ip": "192.168.10.5",
    "timestamp": "3/7/2017 8:55",
}


def header(style: str) -> list[str]:
    """A raw header: 2017 as released has leading spaces and ``Fwd Header Length`` twice."""
    names = [schema.spelling(f, style) for f in schema.FEATURES if schema.spelling(f, style)]
    if style == "cicids2017":
        names.insert(names.index("Avg Bwd Segment Size") + 1, "Fwd Header Length")
        return [n if k % 7 == 0 else " " + n for k, n in enumerate(names)] + [" Label"]
    if style == "cicids2017_improved":
        names = ["Flow ID", "Src IP", "Timestamp", *names]
    return [*names, "Label"]


def features(style: str) -> list[str]:
    return [f for f in schema.FEATURES if schema.spelling(f, style)]


def value(name: str) -> str:
    """Default cell of a feature: distinct per column, so a column mix-up shows."""
    return str(schema.FEATURES.index(name) + 1)


def row(style: str, label: str = "BENIGN", **cells: str) -> str:
    out = []
    for n in schema.canonical_names(header(style)):
        if n == schema.LABEL:
            out.append(label)
        elif n in META:
            out.append(META[n])
        elif n == schema.DUPLICATE_FWD_HEADER:
            out.append(cells.get(n, cells.get("fwd_header_len", value("fwd_header_len"))))
        else:
            out.append(cells.get(n, value(n)))
    return ",".join(out)


def write(path, style: str, lines: list[str]) -> str:
    path.write_text("\n".join([",".join(header(style)), *lines]) + "\n", encoding="utf-8")
    return str(path)


def run(tmp_path, style: str, lines: list[str], **kw) -> tuple[pa.Table, clean.CleanReport]:
    src = write(tmp_path / "in.csv", style, lines)
    report = convert.convert_file(src, str(tmp_path / "out"), **kw)
    assert report.rows_in == report.rows_out + sum(report.dropped.values())
    return pq.read_table(tmp_path / "out" / "in.parquet"), report


@pytest.mark.parametrize("style", STYLES)
def test_styles_give_canonical_schema_and_values(tmp_path, style):
    table, report = run(tmp_path, style, [row(style), row(style, "DDoS"), row(style, " BENIGN ")])
    meta = [m for m in schema.METADATA if m in META] if style == "cicids2017_improved" else []
    assert table.column_names == [*meta, *features(style), "label"]
    for f in features(style):
        assert table.column(f).type == pa.float64()
        assert table.column(f).to_pylist() == [float(value(f))] * 3, f
    assert table.column("label").to_pylist() == ["Benign", "DDoS", "Benign"]
    assert (report.style, report.rows_in, report.rows_out) == (style, 3, 3)
    assert report.labels == {"Benign": 2, "DDoS": 1}
    assert not report.dropped and not report.unknown_columns
    if meta:
        assert table.column("src_ip").to_pylist() == [META["src_ip"]] * 3
    kv = pq.read_metadata(tmp_path / "out" / "in.parquet").metadata[b"lstmae_jax.convert"]
    assert json.loads(kv)["rows_out"] == 3


@pytest.mark.parametrize("style", STYLES)
def test_nonfinite_cells_parse_natively(tmp_path, style):
    texts = ["Infinity", "inf", "NaN", "-Infinity", "nan", ""]
    lines = [row(style, flow_byts_s=t) for t in texts] + [row(style)]
    table, report = run(tmp_path, style, lines)
    assert report.dropped == {"nonfinite": 6} and report.rows_out == 1
    table, report = run(tmp_path, style, lines, nonfinite="zero")
    assert table.column("flow_byts_s").to_pylist() == [0.0] * 6 + [16.0]
    assert report.fixed == {"flow_byts_s:nonfinite->0": 6} and not report.dropped


def test_duplicate_fwd_header_is_checked_and_dropped(tmp_path):
    lines = [row("cicids2017"), row("cicids2017", fwd_header_len_dup="999")]
    table, report = run(tmp_path, "cicids2017", lines)
    assert [n.strip() for n in header("cicids2017")].count("Fwd Header Length") == 2
    assert schema.DUPLICATE_FWD_HEADER not in table.column_names
    assert table.column("fwd_header_len").to_pylist() == [38.0, 38.0]
    assert report.duplicate_header_mismatches == 1 and report.rows_out == 2


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("on_bad_cell", ["drop", "error"])
def test_repeated_header_rows_are_dropped(tmp_path, style, on_bad_cell):
    again = ",".join(header(style))
    lines = [row(style), again, row(style, "Bot"), again, row(style)]
    table, report = run(tmp_path, style, lines, on_bad_cell=on_bad_cell)
    assert report.dropped == {"repeated_header": 2}
    assert table.column("label").to_pylist() == ["Benign", "Bot", "Benign"]


def _reordered(style: str, label: str = "BENIGN", **cells: str) -> tuple[str, str]:
    """(header, row) of ``style`` with the columns in reverse order."""
    return ",".join(header(style)[::-1]), ",".join(row(style, label, **cells).split(",")[::-1])


@pytest.mark.parametrize("block_size", [1 << 20, 200])
def test_a_header_in_another_column_order_remaps_the_rows_after_it(tmp_path, block_size):
    # A log re-opened by a differently configured exporter: its rows must be read with the
    # new header, never with line 1's (issue 16: all windows alerted at scores up to 3e20).
    style = "csecicids2018"
    again, moved = _reordered(style, "Bot", flow_duration="5")
    lines = [row(style), row(style), again, moved, moved]
    table, report = run(tmp_path, style, lines, block_size=block_size)
    assert table.column("label").to_pylist() == ["Benign", "Benign", "Bot", "Bot"]
    assert (
        table.column("flow_duration").to_pylist() == [float(value("flow_duration"))] * 2 + [5.0] * 2
    )
    for f in features(style):
        if f != "flow_duration":
            assert table.column(f).to_pylist() == [float(value(f))] * 4, f
    assert report.dropped == {"repeated_header": 1}
    assert report.fixed == {"reordered_header": 1}


def test_a_header_in_another_naming_style_is_remapped(tmp_path):
    lines = [row("cicids2017"), ",".join(header("csecicids2018")), row("csecicids2018", "DDoS")]
    table, report = run(tmp_path, "cicids2017", lines)
    assert table.column("label").to_pylist() == ["Benign", "DDoS"]
    assert report.fixed == {"reordered_header": 1}


def test_a_header_with_other_columns_is_refused_naming_its_line(tmp_path):
    style = "csecicids2018"
    fewer = header(style)[1:]  # one column less
    lines = [row(style), ",".join(fewer), ",".join(row(style).split(",")[1:])]
    with pytest.raises(ValueError, match=r"in\.csv: line 3: a header with other columns"):
        run(tmp_path, style, lines)
    assert not os.path.exists(tmp_path / "out" / "in.parquet")


@pytest.mark.parametrize("style", STYLES)
def test_unparsable_cells_drop_the_row(tmp_path, style):
    lines = [row(style), row(style, flow_duration="abc"), row(style, tot_fwd_pkts="1,5")]
    lines += [",".join(header(style)), row(style, idle_min=" 7 "), row(style, flow_iat_max="0x1")]
    table, report = run(tmp_path, style, lines)
    assert report.dropped == {"unparsable": 2, "repeated_header": 1, "wrong_field_count": 1}
    assert table.column("idle_min").to_pylist() == [float(value("idle_min")), 7.0]


@pytest.mark.parametrize("style", STYLES)
def test_unparsable_cell_error_names_file_line_column(tmp_path, style):
    lines = [row(style)] * 3 + [row(style, flow_duration="abc")] + [row(style)] * 30
    name = schema.spelling("flow_duration", style)
    with pytest.raises(ValueError, match=rf"in\.csv: line 5, column '{name}': cannot parse 'abc'"):
        run(tmp_path, style, lines, on_bad_cell="error")
    # Across small blocks, and with blank lines, the line number stays physical.
    lines = [row(style)] * 10 + [""] * 800 + [row(style)] * 10 + [row(style, flow_duration="x")]
    with pytest.raises(ValueError, match=r"line 822, column"):
        run(tmp_path, style, lines, on_bad_cell="error", block_size=700)
    assert not os.path.exists(tmp_path / "out" / "in.parquet")


@pytest.mark.parametrize("style", STYLES)
def test_wrong_field_count(tmp_path, style):
    lines = [row(style), row(style) + ",5", row(style).rsplit(",", 2)[0], row(style)]
    table, report = run(tmp_path, style, lines)
    assert report.dropped == {"wrong_field_count": 2} and report.rows_in == 4
    assert table.num_rows == 2
    with pytest.raises(ValueError, match=r"in\.csv: line 3: expected \d+ fields, got \d+"):
        run(tmp_path, style, lines, on_bad_cell="error")


def test_empty_files(tmp_path):
    (tmp_path / "zero.csv").write_bytes(b"")
    with pytest.raises(ValueError, match=r"zero\.csv: empty file \(0 bytes"):
        convert.convert_file(str(tmp_path / "zero.csv"), str(tmp_path / "out"))
    (tmp_path / "blank.csv").write_bytes(b"\n\n")
    with pytest.raises(ValueError, match="empty file"):
        convert.convert_file(str(tmp_path / "blank.csv"), str(tmp_path / "out"))
    for style in STYLES:
        src = write(tmp_path / "head.csv", style, [])
        report = convert.convert_file(src, str(tmp_path / "out"))
        table = pq.read_table(tmp_path / "out" / "head.parquet")
        assert table.num_rows == 0 and set(features(style)) < set(table.column_names)
        assert (report.rows_in, report.rows_out, report.style) == (0, 0, style)


def test_gzip_and_encodings(tmp_path):
    style = "cicids2017"
    lines = [row(style, "Web Attack \x96 Brute Force"), row(style, tot_bwd_pkts="\xff")]
    text = "\r\n".join([",".join(header(style)), *lines]) + "\r\n"
    # BOM, CRLF, cp1252 en dash (byte 0x96) in a label, a byte that is no text at all.
    (tmp_path / "day.csv.gz").write_bytes(gzip.compress(b"\xef\xbb\xbf" + text.encode("latin-1")))
    report = convert.convert_file(str(tmp_path / "day.csv.gz"), str(tmp_path / "out"))
    table = pq.read_table(tmp_path / "out" / "day.parquet")
    assert table.column("label").to_pylist() == ["Web Attack - Brute Force"]
    assert report.dropped == {"unparsable": 1} and report.style == style


def test_parquet_input_matches_canonicalize(tmp_path):
    names = header("cicids2017")
    names[[i for i, n in enumerate(names) if n.strip() == "Fwd Header Length"][1]] += ".1"
    cols = {n: pa.array([1.0, np.inf, -1.0]) for n in names[:-1]}
    src = tmp_path / "mixed.parquet"
    pq.write_table(
        pa.table({**cols, "Extra": [1, 2, 3], names[-1]: ["BENIGN", "Bot", "DDoS"]}), src
    )
    report = convert.convert_file(str(src), str(tmp_path / "out"), negative="drop")
    expected, want = clean.canonicalize(pq.read_table(src), source=str(src), negative="drop")
    assert pq.read_table(tmp_path / "out" / "mixed.parquet").equals(expected)
    assert report.to_json() == want.to_json()
    # Numbers stored as text take the CSV parsing path, row numbers in errors.
    cols = {n: pa.array(["1", "2", "oops"]) for n in names[:-1]}
    pq.write_table(pa.table({**cols, names[-1]: ["BENIGN"] * 3}), src)
    report = convert.convert_file(str(src), str(tmp_path / "out"))
    assert report.dropped == {"unparsable": 1} and report.rows_out == 2
    with pytest.raises(ValueError, match=r"mixed\.parquet: row 3, column 'Destination Port'"):
        convert.convert_file(str(src), str(tmp_path / "out"), on_bad_cell="error")


def test_a_parquet_day_saved_with_its_duplicate_header(tmp_path):
    """A CICIDS2017 day read and saved to Parquet as it is keeps ``Fwd Header Length``
    twice: Arrow cannot select it by name, so both readers take the columns by position
    (it raised a ``KeyError`` traceback before)."""
    from lstmae_jax.ingest import reader

    lines = [row("cicids2017"), row("cicids2017", fwd_header_len_dup="999")]
    src = write(tmp_path / "day.csv", "cicids2017", lines)
    raw = pcsv.read_csv(src)
    assert [n.strip() for n in raw.column_names].count("Fwd Header Length") == 2
    pq.write_table(raw, tmp_path / "day.parquet")
    from_csv = convert.convert_file(src, str(tmp_path / "a"))
    report = convert.convert_file(str(tmp_path / "day.parquet"), str(tmp_path / "b"))
    assert report.duplicate_header_mismatches == 1 == from_csv.duplicate_header_mismatches
    got, want = (pq.read_table(tmp_path / d / "day.parquet") for d in ("b", "a"))
    assert got.column_names == want.column_names and got.num_rows == want.num_rows == 2
    for name in want.column_names:
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name
    source = reader.Source(str(tmp_path / "day.parquet"), features("cicids2017"), {})
    chunks = [c for c in source.poll(final=True) if c.table.num_rows]
    assert sum(c.table.num_rows for c in chunks) == 2
    assert chunks[0].table.column("fwd_header_len").to_pylist() == [38.0, 38.0]


def test_small_blocks_give_the_same_file(tmp_path):
    style = "cicids2017_improved"
    lines = [row(style, str(k % 3), flow_duration=str(k)) for k in range(40)]
    lines[17] = row(style, flow_duration="bad")
    src = write(tmp_path / "a.csv", style, lines)
    big = convert.convert_file(src, str(tmp_path / "big"))
    small = convert.convert_file(src, str(tmp_path / "small"), block_size=300)
    assert big.to_json() == small.to_json() and small.dropped == {"unparsable": 1}
    assert pq.read_table(tmp_path / "big" / "a.parquet").equals(
        pq.read_table(tmp_path / "small" / "a.parquet")
    )


def test_failure_mid_file_leaves_earlier_outputs(tmp_path, monkeypatch):
    style, out = "csecicids2018", tmp_path / "out"
    a = write(tmp_path / "a.csv", style, [row(style)] * 5)
    b = write(tmp_path / "b.csv", style, [row(style, "Bot")] * 60)
    convert.convert([b], str(out))  # an earlier, complete run
    before = (out / "b.parquet").read_bytes()
    real, calls = clean.canonicalize, []

    def flaky(table, *, source, **kw):
        calls.append(source)
        if calls.count(b) >= 10:  # >=: workers run concurrently
            raise RuntimeError("killed mid-file")
        return real(table, source=source, **kw)

    monkeypatch.setattr(clean, "canonicalize", flaky)
    monkeypatch.setattr(convert, "ROW_GROUP_ROWS", 4)  # row groups reach the disk first
    with pytest.raises(RuntimeError, match="killed"):
        convert.convert([a, b], str(out), block_size=500)
    assert sorted(os.listdir(out)) == ["a.parquet", "b.parquet", "report.json"]
    assert pq.read_table(out / "a.parquet").num_rows == 5
    assert (out / "b.parquet").read_bytes() == before


def test_a_failed_file_does_not_stop_the_others(tmp_path):
    style, out = "cicids2017", tmp_path / "out"
    bad = write(tmp_path / "bad.csv", style, [row(style), row(style, flow_duration="?")])
    good = write(tmp_path / "good.csv", style, [row(style)] * 3)
    (tmp_path / "zero.csv").write_bytes(b"")
    with pytest.raises(convert.ConvertError) as err:
        convert.convert([str(tmp_path / "*.csv")], str(out), on_bad_cell="error")
    assert sorted(err.value.failures) == [bad, str(tmp_path / "zero.csv")]
    assert [r.source for r in err.value.reports] == [good]
    summary = json.loads((out / "report.json").read_text())
    assert [("error" in f) for f in summary["files"]] == [True, False, True]
    assert "line 3, column 'Flow Duration'" in summary["files"][0]["error"]
    assert summary["total"]["rows_out"] == 3 and summary["total"]["files_failed"] == 2
    assert sorted(os.listdir(out)) == ["good.parquet", "report.json"]


def test_inputs_are_checked_up_front(tmp_path):
    style = "csecicids2018"
    (tmp_path / "x").mkdir()
    a, b = (
        write(tmp_path / "d.csv", style, [row(style)]),
        write(tmp_path / "x" / "d.csv", style, []),
    )
    with pytest.raises(ValueError, match="same output"):
        convert.convert([a, b], str(tmp_path / "out"))
    with pytest.raises(ValueError, match="no input file matches"):
        convert.convert([str(tmp_path / "*.nothing")], str(tmp_path / "out"))
    convert.convert_file(a, str(tmp_path / "out"))
    with pytest.raises(ValueError, match="overwrite the input"):
        convert.convert_file(str(tmp_path / "out" / "d.parquet"), str(tmp_path / "out"))


def test_report_json_totals(tmp_path):
    s17, s18 = "cicids2017", "csecicids2018"
    a = write(tmp_path / "a.csv", s17, [row(s17), row(s17, init_fwd_win_byts="-1")])
    b = write(tmp_path / "b.csv", s18, [row(s18, "Infilteration"), row(s18, flow_pkts_s="inf")])
    reports = convert.convert([a, b], str(tmp_path / "out"))
    summary = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [f["source"] for f in summary["files"]] == [a, b] == [r.source for r in reports]
    total = summary["total"]
    assert (total["rows_in"], total["rows_out"], total["files_ok"]) == (4, 3, 2)
    assert total["dropped"] == {"nonfinite": 1}
    assert total["fixed"] == {"init_fwd_win_byts:negative->0": 1}
    assert total["labels"] == {"Benign": 2, "Infilteration": 1}


_ARROW_ALPHABET = st.text(alphabet="0123456789.eE+-infatyINFATYx ", max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.from_regex(re.compile(rawparse.NUMBER, re.I), fullmatch=True), _ARROW_ALPHABET))
def test_number_regex_agrees_with_arrow(text):
    """The regex fallback must accept exactly what Arrow's cast parses."""
    try:
        pc.cast(pa.array([text]), pa.float64())
        parses = True
    except pa.ArrowInvalid:
        parses = False
    assert parses == bool(re.fullmatch(rawparse.NUMBER, text, re.I)), text


def test_genuine_cicids2017_csv_matches_parquet(shared_data, tmp_path):
    """The raw-CSV path and the Parquet path clean a genuine day file identically."""
    src = shared_data / "cicids2017" / "tuesday_head.parquet"
    table = pq.read_table(src)
    cells = []
    for col in table.columns:
        text = pc.cast(col, pa.string())
        if pa.types.is_floating(col.type):
            for arrow, java in (("inf", "Infinity"), ("-inf", "-Infinity"), ("nan", "NaN")):
                text = pc.replace_substring_regex(text, f"^{arrow}$", java)
        cells.append(text)
    body = pa.BufferOutputStream()
    options = pcsv.WriteOptions(include_header=False, quoting_style="none")
    pcsv.write_csv(pa.table(cells, names=[str(i) for i in range(len(cells))]), body, options)
    raw_header = ",".join(n.removesuffix(".1") for n in table.column_names)
    assert raw_header.count(" Fwd Header Length,") == 2
    csv_path = tmp_path / "Tuesday-WorkingHours.pcap_ISCX.csv"
    csv_path.write_bytes(raw_header.encode() + b"\n" + body.getvalue().to_pybytes())
    for nonfinite in clean.NONFINITE_POLICIES:
        report = convert.convert_file(str(csv_path), str(tmp_path), nonfinite=nonfinite)
        expected, want = clean.canonicalize(table, source=str(csv_path), nonfinite=nonfinite)
        got = pq.read_table(tmp_path / "Tuesday-WorkingHours.pcap_ISCX.parquet")
        assert got.equals(expected)
        assert report.to_json() == want.to_json()
    assert b"Infinity" in csv_path.read_bytes()


def test_launcher(tmp_path):
    style = "csecicids2018"
    write(tmp_path / "ok.csv", style, [row(style), row(style, flow_duration="abc")])
    (tmp_path / "zero.csv").write_bytes(b"")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(
        [sys.executable, os.path.join(root, "launch", "convert.py"),
         f"--input={tmp_path}/ok.csv,{tmp_path}/zero.csv", f"--output={tmp_path}/out"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert re.search(r"ok\.csv +2 +1  unparsable=1", proc.stdout), proc.stdout
    assert "FAILED" in proc.stderr and "zero.csv: empty file" in proc.stderr


def test_output_through_a_symlink_never_replaces_the_input(tmp_path):
    style = "cicids2017"
    same = tmp_path / "same"
    same.mkdir()
    src = convert.convert_file(write(same / "d.csv", style, [row(style)]), str(same)).source
    parquet = str(same / "d.parquet")
    before = open(parquet, "rb").read()
    os.symlink(same, tmp_path / "link")
    with pytest.raises(ValueError, match="overwrite the input"):
        convert.convert_file(parquet, str(tmp_path / "link"))
    assert open(parquet, "rb").read() == before and src.endswith("d.csv")


def test_stale_temporaries_and_outputs_are_removed(tmp_path):
    style, out = "cicids2017", tmp_path / "out"
    good = write(tmp_path / "a.csv", style, [row(style)] * 2)
    convert.convert([good], str(out))
    # A killed run's temporary (pid 2**22 + 1 is above Linux's pid_max: never alive) ...
    stale = out / f".a.parquet.{2**22 + 1}.x1y2z3.tmp"
    stale.write_bytes(b"partial")
    # ... and a re-conversion that now fails: the older a.parquet must not survive it.
    write(tmp_path / "a.csv", style, [row(style), row(style, flow_duration="?")])
    with pytest.raises(convert.ConvertError):
        convert.convert([good], str(out), on_bad_cell="error")
    assert sorted(os.listdir(out)) == ["report.json"]


def test_a_malformed_header_costs_only_its_file(tmp_path):
    style, out = "cicids2017", tmp_path / "out"
    header = ",".join(f"{c}" for c in ["a\rb", "Label"])
    (tmp_path / "bad.csv").write_bytes(('"' + header + "\n1,BENIGN\n").encode())
    good = write(tmp_path / "good.csv", style, [row(style)] * 2)
    with pytest.raises(convert.ConvertError) as err:
        convert.convert([str(tmp_path / "bad.csv"), good], str(out))
    assert list(err.value.failures) == [str(tmp_path / "bad.csv")]
    message = err.value.failures[str(tmp_path / "bad.csv")]
    assert message.startswith(f"{tmp_path / 'bad.csv'}: line 1 (header), column 1: a carriage")
    assert sorted(os.listdir(out)) == ["good.parquet", "report.json"]


def test_a_full_disk_keeps_the_earlier_output_and_names_it(tmp_path, monkeypatch):
    from lstmae_jax import atomic

    style = "cicids2017"
    src = write(tmp_path / "in.csv", style, [row(style)] * 5)
    convert.convert_file(src, str(tmp_path / "out"))
    before = (tmp_path / "out" / "in.parquet").read_bytes()
    real = atomic.temporary

    def full(path):  # every write to the temporary fails with ENOSPC
        f, tmp = real(path)
        f.close()
        return open("/dev/full", "wb"), tmp

    monkeypatch.setattr(atomic, "temporary", full)
    with pytest.raises(
        ValueError, match=r"cannot write .*in\.parquet: No space left on device \(ENOSPC\)"
    ):
        convert.convert_file(src, str(tmp_path / "out"))
    assert os.listdir(tmp_path / "out") == ["in.parquet"]
    assert (tmp_path / "out" / "in.parquet").read_bytes() == before


def test_a_planted_symlink_at_the_old_temporary_name_is_not_followed(tmp_path):
    style = "cicids2017"
    src = write(tmp_path / "in.csv", style, [row(style)] * 5)
    (tmp_path / "out").mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    os.symlink(victim, tmp_path / "out" / f".in.parquet.{os.getpid()}.tmp")  # the old name
    convert.convert_file(src, str(tmp_path / "out"))
    assert victim.read_text() == "keep me"
    assert pq.read_table(tmp_path / "out" / "in.parquet").num_rows == 5


def test_rows_carrying_a_row_number_are_named_when_dropped():
    # The scorer's path (``clean.ROW``): which rows go, and the first column to blame.
    nan, inf = float("nan"), float("inf")
    table = pa.table({
        "Flow Duration": ["5", "-1", "inf", "5", "abc", "5", "Label"],
        "Dst Port": [80.0, 80.0, nan, 70000.0, 80.0, 80.0, 80.0],
        "Flow Bytes/s": [1.0, 1.0, 1.0, 1.0, 1.0, inf, 1.0],
        "Label": ["BENIGN"] * 6 + ["Label"],
        clean.ROW: [2, 3, 4, 5, 6, 7, 8],
    })  # fmt: skip
    plan = rawparse.Plan("t.csv", table.column_names[:-1])
    raw, dropped = rawparse.prepare(plan, table, str, "drop")
    out, report = clean.canonicalize(raw, source="t.csv", negative="drop")
    report.merge(dropped)
    rows = {k: np.concatenate(v).tolist() for k, v in report.dropped_rows.items()}
    assert rows == {
        "repeated_header": [8],
        "unparsable:flow_duration": [6],
        "negative:flow_duration": [3],
        "nonfinite:dst_port": [4],  # flow_duration too: the first in the schema's order
        "out_of_range:dst_port": [5],
        "nonfinite:flow_byts_s": [7],
    }
    assert out.column(clean.ROW).to_pylist() == [2]
    assert sum(report.dropped.values()) == 6 and "dropped_rows" not in report.to_json()
