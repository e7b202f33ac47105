"""Hostile inputs: a corpus of malformed files, each refused by name or cleaned and counted.

Every case is generated in ``tmp_path`` and converted in one glob together with a good
file: the good file must still be converted, the case must give exactly the expected
outcome (an error that starts with the file's path and names the line or column where one
exists, or the documented counts in ``report.json``), and nothing partial may be left.
The training-side loader, the window builder and Ctrl-C in the launcher come after.
"""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lstmae_jax import config
from lstmae_jax.data import dataset, windows
from lstmae_jax.ingest import convert, schema

S17, S18 = "cicids2017", "csecicids2018"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def names(style: str = S18) -> list[str]:
    """A header in one naming style; 2017 as released has leading spaces and two copies of
    ``Fwd Header Length``."""
    out = [schema.spelling(f, style) for f in schema.FEATURES if schema.spelling(f, style)]
    if style == S17:
        out.insert(out.index("Avg Bwd Segment Size") + 1, "Fwd Header Length")
        return [" " + n for n in out] + [" Label"]
    return [*out, "Label"]


def cells(style: str = S18, label: str = "BENIGN", **over: str) -> list[str]:
    """One row's cells: feature k holds k + 1 (so a column mix-up shows), ``over`` wins."""
    row = []
    for n in schema.canonical_names(names(style)):
        n = "fwd_header_len" if n == schema.DUPLICATE_FWD_HEADER else n
        row.append(label if n == schema.LABEL else over.get(n, str(schema.FEATURES.index(n) + 1)))
    return row


def csv_text(rows: list[list[str]], style: str = S18, head: list[str] | None = None) -> str:
    return "".join(",".join(r) + "\n" for r in [head or names(style), *rows])


def ok_rows(n: int = 2, style: str = S18) -> list[list[str]]:
    return [cells(style) for _ in range(n)]


def parquet_bytes(columns: dict[str, pa.Array]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue()


def pq_feature(arr: pa.Array) -> bytes:
    """A Parquet file with ``Flow Duration`` of the given Arrow type, one port, a label."""
    n = len(arr)
    return parquet_bytes(
        {"Flow Duration": arr, "Dst Port": pa.array([80.0] * n), "Label": ["BENIGN"] * n}
    )


@dataclasses.dataclass(frozen=True)
class Case:
    """A hostile file and what must come of it: ``error`` (a regex the message must match
    after the file's path) or the exact counts of a cleaning."""

    name: str  # the file name, suffix included
    content: Callable[[], bytes]
    error: str | None = None
    rows_out: int | None = None
    dropped: dict = dataclasses.field(default_factory=dict)
    fixed: dict = dataclasses.field(default_factory=dict)
    check: Callable[[pa.Table, dict], None] | None = None  # more checks of a cleaned output
    policies: dict = dataclasses.field(default_factory=dict)


def _col(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist()


def _reordered() -> bytes:
    order = np.random.default_rng(0).permutation(len(names()))
    return csv_text(
        [[r[i] for i in order] for r in ok_rows()], head=[names()[i] for i in order]
    ).encode()


def _mixed_styles_one_header() -> bytes:
    """Odd columns spelled as in 2017, even ones as in 2018 (no name mapped twice)."""
    head = names(S18)
    for k, f in enumerate(schema.canonical_names(head)):
        if k % 2 and f in schema.KIND and schema.spelling(f, S17):
            head[k] = schema.spelling(f, S17)
    return csv_text(ok_rows(), head=head).encode()


def _dup_column() -> bytes:
    return csv_text([[*r, "5"] for r in ok_rows()], head=[*names(), "Flow Duration"]).encode()


def _cr_only() -> bytes:
    return csv_text(ok_rows()).replace("\n", "\r").encode()


def _utf16(bom: bool) -> bytes:
    return csv_text(ok_rows()).encode("utf-16" if bom else "utf-16-le")


def _gzip_of(text: str) -> bytes:
    return gzip.compress(text.encode())


def _truncated_parquet() -> bytes:
    whole = pq_feature(pa.array([1.0, 2.0, 3.0]))
    return whole[: len(whole) // 2]


def _check_huge(table, rep):
    assert _col(table, "flow_duration") == [3e38]  # fits float32: kept, exactly


def _check_negative_flags(table, rep):
    assert _col(table, "fin_flag_cnt") == [0.0] and _col(table, "down_up_ratio") == [0.0]


def _check_reordered(table, rep):
    for f in rep["features"]:
        assert _col(table, f) == [float(schema.FEATURES.index(f) + 1)] * 2, f


def _check_uint64(table, rep):
    assert _col(table, "flow_duration") == [1.0, float(2**64 - 1)]


def _check_cp1252(table, rep):
    assert _col(table, "label") == ["Web Attack - Brute Force", "Benign"]


H = ",".join(names())
CORPUS = [
    # ---- refused: not a CSV text file at all
    Case("empty.csv", lambda: b"", error=r"empty file \(0 bytes, no header\)"),
    Case("bom_only.csv", lambda: b"\xef\xbb\xbf", error=r"empty file \(no header line\)"),
    Case("blank_lines.csv", lambda: b"\n \n\r\n", error=r"empty file \(no header line\)"),
    Case(
        "gzip_named.csv",
        lambda: _gzip_of(csv_text(ok_rows())),
        error=r"gzip-compressed data in a file not named \.gz; rename it to \.csv\.gz",
    ),
    Case(
        "plain_named.csv.gz",
        lambda: csv_text(ok_rows()).encode(),
        error=r"named \.gz but not gzip-compressed",
    ),
    Case(
        "truncated.csv.gz",
        lambda: _gzip_of(csv_text(ok_rows(3000)))[:2000],
        error=r"Truncated compressed stream",
    ),
    Case(
        "random_bytes.csv",
        lambda: np.random.default_rng(0).bytes(4096),
        error=r"line 1 \(header\), column 1: control byte .*not a CSV text header",
    ),
    Case(
        "parquet_named.csv",
        lambda: pq_feature(pa.array([1.0])),
        error=r"Parquet data in a file not named .parquet; rename it",  # probe of issue 16
    ),
    Case(
        "utf16_bom.csv", lambda: _utf16(True), error=r"UTF-16/32 text \(byte-order mark\); re-save"
    ),
    Case(
        "utf16_no_bom.csv",
        lambda: _utf16(False),
        error=r"line 1 \(header\), column 1: a NUL byte \(UTF-16 text, or binary data\)",
    ),
    Case(
        "cr_in_header.csv",
        lambda: csv_text(ok_rows(), head=["Dst Port", "Pro\rtocol", *names()[2:]]).encode(),
        error=r"line 1 \(header\), column 2: a carriage return; .*\(CR-only line ends\?\)",
    ),
    Case(
        "cr_only_line_ends.csv",
        _cr_only,
        error=rf"line 1 \(header\), column {len(names())}: a carriage return",
    ),
    Case(
        "no_line_end.csv",
        lambda: b"x" * (2 << 20),
        error=r"no line end in the first 1 MiB: not CSV text, or CR-only",
    ),
    # ---- refused: a CSV whose header cannot be mapped
    Case(
        "no_label.csv",
        lambda: csv_text([r[:-1] for r in ok_rows()], head=names()[:-1]).encode(),
        error=r"no label column \(looked for \('Label',\)\)",
    ),
    Case(
        "semicolons.csv",
        lambda: csv_text(ok_rows()).replace(",", ";").encode(),
        error=r"no label column .*the header has one column: is the separator a comma\?",
    ),
    Case(
        "only_unknown_columns.csv",
        lambda: b"foo,bar,Label\n1,2,BENIGN\n",
        error=r"no feature column: none of the 83 .*unknown columns: \['foo', 'bar'\]",
    ),
    Case(
        "duplicated_column.csv",
        _dup_column,
        error=r"columns 'Flow Duration' and 'Flow Duration' both map to canonical column "
        r"'flow_duration'",
    ),
    Case(
        "two_styles_same_column.csv",
        lambda: csv_text(
            [[*r, "80"] for r in ok_rows()], head=[*names(), "Destination Port"]
        ).encode(),
        error=r"columns 'Dst Port' and 'Destination Port' both map to canonical column 'dst_port'",
    ),
    # ---- refused on request (on_bad_cell="error"): file, line and column
    Case(
        "bad_cell_strict.csv",
        lambda: csv_text([*ok_rows(), cells(flow_duration="abc")]).encode(),
        error=r"line 4, column 'Flow Duration': cannot parse 'abc' as a number",
        policies={"on_bad_cell": "error"},
    ),
    Case(
        "field_count_strict.csv",
        lambda: csv_text([*ok_rows(), cells()[:-3]]).encode(),
        error=rf"line 4: expected {len(names())} fields, got {len(names()) - 3}",
        policies={"on_bad_cell": "error"},
    ),
    # ---- refused: Parquet
    Case(
        "random_bytes.parquet",
        lambda: np.random.default_rng(1).bytes(4096),
        error=r"Parquet magic bytes not found",
    ),
    Case("truncated.parquet", _truncated_parquet, error=r"Parquet magic bytes not found"),
    Case(
        "timestamp_feature.parquet",
        lambda: pq_feature(pa.array([datetime.datetime(2018, 2, 14)] * 2)),
        error=r"column 'Flow Duration' is timestamp\[us\], expected numbers",
    ),
    Case(
        "list_feature.parquet",
        lambda: pq_feature(pa.array([[1], [2]])),
        error=r"column 'Flow Duration' is list<element: int64>, expected numbers",
    ),
    Case(
        "bool_feature.parquet",
        lambda: pq_feature(pa.array([True, False])),
        error=r"column 'Flow Duration' is bool, expected numbers",
    ),
    # ---- accepted, cleaned and counted
    Case(
        "bom_crlf.csv",
        lambda: b"\xef\xbb\xbf" + csv_text(ok_rows()).replace("\n", "\r\n").encode(),
        rows_out=2,
    ),
    Case("header_only_crlf.csv", lambda: (H + "\r\n").encode(), rows_out=0),
    Case("reordered_columns.csv", _reordered, rows_out=2, check=_check_reordered),
    Case("mixed_2017_2018_header.csv", _mixed_styles_one_header, rows_out=2),
    Case(
        "release_2017.csv",  # another style in the same folder as the 2018 good file
        lambda: csv_text(ok_rows(2, S17), style=S17).encode(),
        rows_out=2,
        check=lambda t, rep: rep["style"] == S17 or pytest.fail(rep["style"]),
    ),
    Case(
        "unknown_and_trailing_empty_column.csv",
        lambda: csv_text(
            [["7", *r, ""] for r in ok_rows()], head=["Unnamed: 0", *names(), ""]
        ).encode(),
        rows_out=2,
        check=lambda t, rep: rep["unknown_columns"] == ["Unnamed: 0", ""] or pytest.fail(),
    ),
    Case(
        "huge_values.csv",
        lambda: csv_text(
            [cells(flow_duration=v) for v in ("1e39", "-1e39", "1e400", "3e38")]
            + [cells(dst_port="99999999999999999999999")]
        ).encode(),
        rows_out=1,
        dropped={"nonfinite": 3, "out_of_range": 1},
        check=_check_huge,
    ),
    Case(
        "out_of_range_identifiers.csv",
        lambda: csv_text(
            [cells(dst_port="-5"), cells(dst_port="70000"), cells(protocol="300"), *ok_rows(1)]
        ).encode(),
        rows_out=1,
        dropped={"out_of_range": 3},
    ),
    Case(
        "negative_flags_ratio.csv",
        lambda: csv_text([cells(fin_flag_cnt="-1", down_up_ratio="-2")]).encode(),
        rows_out=1,
        fixed={"fin_flag_cnt:negative->0": 1, "down_up_ratio:negative->0": 1},
        check=_check_negative_flags,
    ),
    Case(
        "negative_flags_dropped.csv",
        lambda: csv_text([cells(fin_flag_cnt="-1"), *ok_rows(1)]).encode(),
        rows_out=1,
        dropped={"negative": 1},
        policies={"negative": "drop"},
    ),
    Case(
        "bad_cells.csv",
        lambda: csv_text(
            [cells(flow_duration="abc"), cells(flow_duration="1\x002"), cells(idle_min="0x1")]
            + [cells(flow_duration="\xff"), *ok_rows(1)]
        ).encode("latin-1"),
        rows_out=1,
        dropped={"unparsable": 4},
    ),
    Case(
        "wrong_field_counts.csv",
        lambda: csv_text([[*cells(), "5"], cells()[:-2], ["9" * (3 << 20)], *ok_rows(2)]).encode(),
        rows_out=2,
        dropped={"wrong_field_count": 3},
    ),
    Case(
        "quoted_newline.csv",  # CICFlowMeter never quotes; a quoted newline is a bad cell
        lambda: csv_text([cells(flow_duration='"1\n2"'), *ok_rows(1)]).encode(),
        rows_out=1,
        dropped={"unparsable": 1},
    ),
    Case(
        "repeated_headers_and_missing_labels.csv",
        lambda: csv_text([names(), cells(label=""), names(), *ok_rows(2)]).encode(),
        rows_out=2,
        dropped={"repeated_header": 2, "missing_label": 1},
    ),
    Case(
        "inf_nan_zeroed.csv",
        lambda: csv_text([cells(flow_byts_s="Infinity"), cells(flow_pkts_s="NaN")]).encode(),
        rows_out=2,
        fixed={"flow_byts_s:nonfinite->0": 1, "flow_pkts_s:nonfinite->0": 1},
        policies={"nonfinite": "zero"},
    ),
    Case(
        "cp1252_label.csv",
        lambda: csv_text([cells(label="Web Attack \x96 Brute Force"), *ok_rows(1)]).encode(
            "latin-1"
        ),
        rows_out=2,
        check=_check_cp1252,
    ),
    Case(
        "every_row_dropped.csv",
        lambda: csv_text([cells(flow_duration="inf"), cells(dst_port="-1")]).encode(),
        rows_out=0,
        dropped={"nonfinite": 1, "out_of_range": 1},
    ),
    Case(
        "uint64_feature.parquet",
        lambda: pq_feature(pa.array([1, 2**64 - 1], pa.uint64())),
        rows_out=2,
        check=_check_uint64,
    ),
    Case(
        "numbers_as_text.parquet",
        lambda: pq_feature(pa.array(["1", "oops", " 3 "])),
        rows_out=2,
        dropped={"unparsable": 1},
    ),
]


def test_the_corpus_is_large_and_named_uniquely():
    assert len(CORPUS) >= 25
    assert len({c.name for c in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.name)
def test_corpus_case(tmp_path, case):
    src_dir, out = tmp_path / "in", tmp_path / "out"
    src_dir.mkdir()
    (src_dir / case.name).write_bytes(case.content())
    good = src_dir / "zz_good.csv"
    good.write_text(csv_text(ok_rows(3)))
    hostile, hostile_out = str(src_dir / case.name), convert.output_path(case.name, str(out))
    if case.error is not None:
        with pytest.raises(convert.ConvertError) as err:
            convert.convert([str(src_dir / "*")], str(out), **case.policies)
        assert list(err.value.failures) == [hostile]
        message = err.value.failures[hostile]
        assert message.startswith(f"{hostile}: "), message
        assert re.search(case.error, message), message
        assert not os.path.exists(hostile_out)
    else:
        convert.convert([str(src_dir / "*")], str(out), **case.policies)
    # The good file is converted whatever happened to the other one, and nothing is partial.
    assert pq.read_table(out / "zz_good.parquet").num_rows == 3
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    summary = json.loads((out / "report.json").read_text())
    entry = {e["source"]: e for e in summary["files"]}[hostile]
    if case.error is not None:
        assert re.search(case.error, entry["error"]) and summary["total"]["files_failed"] == 1
        return
    table = pq.read_table(hostile_out)
    assert (entry["rows_out"], table.num_rows) == (case.rows_out, case.rows_out)
    assert entry["dropped"] == case.dropped and entry["fixed"] == case.fixed
    assert entry["rows_in"] == entry["rows_out"] + sum(entry["dropped"].values())
    assert set(entry["features"]) <= set(table.column_names) and table.column_names[-1] == "label"
    if case.check is not None:
        case.check(table, entry)


# --------------------------------------------------------------- inputs as arguments


def test_a_glob_that_matches_a_folder_names_it(tmp_path):
    (tmp_path / "a.csv").write_text(csv_text(ok_rows()))
    (tmp_path / "b.csv").mkdir()
    with pytest.raises(ValueError, match=r"not a regular file .*b\.csv"):
        convert.convert([str(tmp_path / "*.csv")], str(tmp_path / "out"))


def test_unknown_policy_is_refused_before_any_file(tmp_path):
    (tmp_path / "a.csv").write_text(csv_text(ok_rows()))
    with pytest.raises(ValueError, match="unknown policy"):
        convert.convert([str(tmp_path / "a.csv")], str(tmp_path / "out"), negative="zero")
    assert not os.path.exists(tmp_path / "out" / "report.json")


# ----------------------------------------------------------- the training-side loader


@pytest.mark.parametrize(
    "arr, kind",
    [
        (pa.array([[1.0], [2.0]]), "list<element: double>"),
        (pa.array([datetime.datetime(2018, 2, 14)] * 2), r"timestamp\[us\]"),
        (pa.array(["1", "2"]), "string"),  # text is parsed by the converter, not here
        (pa.array([True, False]), "bool"),
    ],
    ids=["list", "timestamp", "string", "bool"],
)
def test_loader_refuses_columns_without_numbers(tmp_path, arr, kind):
    path = tmp_path / "day.parquet"
    path.write_bytes(pq_feature(arr))
    message = rf"day\.parquet: column 'Flow Duration' \(flow_duration\) is {kind}, expected numbers"
    with pytest.raises(ValueError, match=message):
        dataset.load_flows(str(path))


def test_loader_reads_uint64_and_refuses_bad_label_and_metadata_types(tmp_path):
    path = tmp_path / "day.parquet"
    path.write_bytes(pq_feature(pa.array([1, 2**64 - 1], pa.uint64())))
    flows = dataset.load_flows(str(path))
    assert flows.x_NxF[:, flows.features.index("flow_duration")].tolist() == [1.0, 2.0**64]
    n = 2
    base = {"Flow Duration": pa.array([1.0] * n), "Dst Port": pa.array([80.0] * n)}
    path.write_bytes(parquet_bytes({**base, "Label": pa.array([[1], [2]])}))
    with pytest.raises(ValueError, match=r"day\.parquet: column 'Label' is list<.*expected text"):
        dataset.load_flows(str(path))
    bad_ip = {"Src IP": pa.array([[1], [2]]), "Label": ["BENIGN"] * n}
    path.write_bytes(parquet_bytes({**base, **bad_ip}))
    with pytest.raises(ValueError, match=r"day\.parquet: column 'Src IP' is list<"):
        dataset.load_flows(str(path))


def test_loader_refuses_corrupt_label_encoded_and_featureless_files(tmp_path):
    path = tmp_path / "day.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match=r"day\.parquet: cannot read as Parquet"):
        dataset.load_flows(str(path))
    path.write_bytes(parquet_bytes({"Dst Port": pa.array([80.0, 81.0]), "Label": ["0", "1"]}))
    with pytest.raises(ValueError, match="labels are numbers"):
        dataset.load_flows(str(path))
    path.write_bytes(parquet_bytes({"foo": pa.array([1.0]), "Label": ["BENIGN"]}))
    with pytest.raises(ValueError, match="no feature columns common"):
        dataset.load_flows(str(path))


def test_mixed_styles_in_one_folder_load_on_their_common_features(tmp_path):
    (tmp_path / "a.csv").write_text(csv_text(ok_rows(3, S17), style=S17))
    (tmp_path / "b.csv").write_text(csv_text(ok_rows(3)))
    reports = convert.convert([str(tmp_path / "*.csv")], str(tmp_path / "out"))
    assert [r.style for r in reports] == [S17, S18]
    flows = dataset.load_flows(str(tmp_path / "out"))
    common = set(reports[0].features) & set(reports[1].features)
    assert set(flows.features) == common and len(flows) == 6
    assert flows.file_N.tolist() == [0, 0, 0, 1, 1, 1]


# --------------------------------------------------------------------- the windows


def _flows(rows_per_file: list[int]) -> dataset.Flows:
    n = sum(rows_per_file)
    return dataset.Flows(
        x_NxF=np.arange(n, dtype=np.float32)[:, None],
        label_N=np.zeros(n, np.int32),
        file_N=np.repeat(np.arange(len(rows_per_file), dtype=np.int32), rows_per_file),
        classes=("Benign",),
        features=("flow_duration",),
        files=tuple(f"f{i}" for i in range(len(rows_per_file))),
        reports=(),
    )


def test_a_window_longer_than_the_file_is_a_clear_error():
    flows = _flows([5])
    with pytest.raises(ValueError, match=r"window=10 needs 10 consecutive rows of one file and "
                       r"the longest training stretch has 3; split=temporal"):  # fmt: skip
        windows.build(flows, window=10)
    with pytest.raises(ValueError, match=r"window=10 needs .* has 5; split=random"):
        windows.build(flows, window=10, split="random")
    # Two files of 4 rows: the window fits neither, though 8 rows are there in all.
    with pytest.raises(ValueError, match=r"window=5 needs .* has 4; split=random"):
        windows.for_config(config.smoke(window=5, split="random"), _flows([4, 4]))


# ------------------------------------------------------------------------- Ctrl-C


def _big_inputs(tmp_path, files: int = 8, rows: int = 60_000) -> str:
    """Files that take a while to convert (the same bytes under several names)."""
    src = tmp_path / "in"
    src.mkdir()
    body = (csv_text([]) + (",".join(cells()) + "\n") * rows).encode()
    for i in range(files):
        (src / f"day{i}.csv").write_bytes(body)
    return str(src / "*.csv")


@pytest.mark.parametrize(
    "sig, ignored",
    [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["sigint", "sigint_while_ignored", "sigterm"],
)
def test_interrupt_stops_cleanly(tmp_path, sig, ignored):
    inputs, out = _big_inputs(tmp_path), tmp_path / "out"

    def ignore_sigint():  # a shell's background job starts like this
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "launch", "convert.py"), f"--input={inputs}",
         f"--output={out}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=ignore_sigint if ignored else None,
    )  # fmt: skip
    deadline = time.monotonic() + 60

    def mid_file() -> bool:  # the first file is done, a later one is being written
        names = os.listdir(out) if out.is_dir() else []
        return "day0.parquet" in names and any(f.endswith(".tmp") for f in names)

    while not mid_file():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no conversion started"
        time.sleep(0.002)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted: no partial output left" in stderr
    left = sorted(os.listdir(out))
    assert not [f for f in left if f.endswith(".tmp")], left
    summary = json.loads((out / "report.json").read_text())
    done = [e for e in summary["files"] if "error" not in e]
    assert done and len(done) < 8
    assert summary["interrupted"] == summary["files"][-1]["source"]
    assert summary["files"][-1]["error"] == "interrupted"
    assert left == sorted([os.path.basename(e["output"]) for e in done] + ["report.json"])
    for e in done:  # every output under its final name is complete
        assert pq.read_metadata(e["output"]).num_rows == 60_000
