"""Property tests (hypothesis): the converter's round trip and counts, the window builder.

Converter: random finite values in random schema columns, any column order, naming style,
case and stray whitespace, any block size and blank lines, give back exactly those values
(and the Parquet path the same table as the CSV path); injected bad cells are counted
exactly, per reason and policy; junk never escapes as anything but a ``ValueError`` that
names the file. Windows: never across a file or split, starts in range, splits disjoint,
the count formula, benign-only training, labels, a scaler that sees training rows only,
and a batch order that resumes exactly.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lstmae_jax.data import dataset, windows
from lstmae_jax.ingest import clean, convert, schema

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LABELS = ("BENIGN", " DDoS ", "Bot", "Web Attack \u2013 XSS", "DoS Hulk", "Infilteration")


def _finite(kind: str):
    """A valid value of a feature kind (finite, within float32, in range for identifiers)."""
    if kind in schema.RANGES:
        lo, hi = schema.RANGES[kind]
        return st.integers(int(lo), int(hi)).map(float)
    lo = 0.0 if kind in schema.NONNEGATIVE_KINDS else -1e30
    return st.floats(lo, 1e30, allow_nan=False, allow_infinity=False, width=64)


def _spell(f: str, how: str, pad: str) -> str:
    base = {
        "style": next(filter(None, (schema.spelling(f, s) for s in schema.STYLES)), f),
        "canonical": f,
        "upper": (schema.spelling(f, "csecicids2018") or f).upper(),
    }[how]
    return pad + base + pad[::-1]


@st.composite
def tables(draw):
    """(raw header, rows of values, raw labels): a random subset and order of features."""
    feats = draw(st.lists(st.sampled_from(schema.FEATURES), min_size=1, max_size=12, unique=True))
    spelled = [
        _spell(
            f,
            draw(st.sampled_from(["style", "canonical", "upper"])),
            draw(st.sampled_from(["", " ", "  "])),
        )
        for f in feats
    ]
    n = draw(st.integers(0, 12))
    values = {f: draw(st.lists(_finite(schema.KIND[f]), min_size=n, max_size=n)) for f in feats}
    labels = draw(st.lists(st.sampled_from(LABELS), min_size=n, max_size=n))
    order = draw(st.permutations(range(len(feats) + 1)))
    head = [(spelled + [" Label"])[i] for i in order]
    cols = [(feats + [schema.LABEL])[i] for i in order]
    return head, cols, values, labels


def _csv(head, cols, values, labels, blank_every: int) -> bytes:
    lines = [",".join(head)]
    for r, lab in enumerate(labels):
        lines.append(",".join(lab if c == schema.LABEL else repr(values[c][r]) for c in cols))
        if blank_every and r % blank_every == 0:
            lines.append("")
    return ("\n".join(lines) + "\n").encode()


@SETTINGS
@given(tables(), st.integers(64, 4096), st.integers(0, 3))
def test_round_trip_csv_and_parquet(table, block_size, blank_every):
    head, cols, values, labels = table
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "day.csv")
        with open(src, "wb") as f:
            f.write(_csv(head, cols, values, labels, blank_every))
        report = convert.convert_file(src, os.path.join(d, "a"), block_size=block_size)
        got = pq.read_table(os.path.join(d, "a", "day.parquet"))
        feats = [f for f in schema.FEATURES if f in values]
        assert got.column_names == [*feats, schema.LABEL]
        for f in feats:
            assert got.column(f).to_pylist() == values[f], f
        assert got.column(schema.LABEL).to_pylist() == [schema.normalize_label(x) for x in labels]
        assert (report.rows_in, report.rows_out) == (len(labels), len(labels))
        assert not report.dropped and not report.fixed and not report.unknown_columns
        # The same table as Parquet (numbers typed) takes the other path to the same file.
        raw = {
            h: pa.array(values[c], pa.float64())
            for h, c in zip(head, cols, strict=True)
            if c in values
        }
        raw[" Label"] = pa.array(labels, pa.string())
        pq.write_table(pa.table({h: raw[h] for h in head}), os.path.join(d, "day.parquet"))
        convert.convert_file(os.path.join(d, "day.parquet"), os.path.join(d, "b"))
        assert pq.read_table(os.path.join(d, "b", "day.parquet")).equals(got)


# A small header of every kind that cleaning treats differently.
FEATS = ("dst_port", "protocol", "flow_duration", "flow_byts_s", "fin_flag_cnt", "down_up_ratio")
HEAD = [schema.spelling(f, "csecicids2018") for f in FEATS] + ["Label"]
NONNEG = [f for f in FEATS if schema.KIND[f] in schema.NONNEGATIVE_KINDS]
FAULTS = {
    # fault -> (reason, strategy of (feature, cell))
    "unparsable": st.tuples(st.sampled_from(FEATS), st.sampled_from(["abc", "1;2x", "0x1", "1e"])),
    "nonfinite": st.tuples(
        st.sampled_from(FEATS), st.sampled_from(["inf", "-Infinity", "NaN", "", "1e39"])
    ),
    "negative": st.tuples(st.sampled_from(NONNEG), st.sampled_from(["-1", "-0.5", "-1e6"])),
    "out_of_range": st.tuples(
        st.sampled_from(["dst_port", "protocol"]), st.sampled_from(["-1", "70000", "1e9"])
    ),
    "repeated_header": st.just((None, None)),
    "missing_label": st.just((None, None)),
    "wrong_field_count": st.just((None, None)),
    "none": st.just((None, None)),
}


@st.composite
def faulty_rows(draw):
    """Rows with at most one injected fault each, and the faults."""
    n = draw(st.integers(1, 25))
    kinds = draw(st.lists(st.sampled_from(sorted(FAULTS)), min_size=n, max_size=n))
    return [(k, *draw(FAULTS[k])) for k in kinds]


@SETTINGS
@given(
    faulty_rows(),
    st.sampled_from(clean.NONFINITE_POLICIES),
    st.sampled_from(clean.NEGATIVE_POLICIES),
    st.integers(40, 2000),
)
def test_counts_equal_the_injected_faults(rows, nonfinite, negative, block_size):
    lines, expect_dropped, expect_fixed = [",".join(HEAD)], {}, {}
    for k, feat, cell in rows:
        values = [str(j + 1) for j in range(len(FEATS))] + ["BENIGN"]
        if feat is not None:
            values[FEATS.index(feat)] = cell
        if k == "repeated_header":
            values = list(HEAD)
        elif k == "missing_label":
            values[-1] = ""
        elif k == "wrong_field_count":
            values.append("9")
        lines.append(",".join(values))
        fixes = {"nonfinite": nonfinite == "zero", "negative": negative == "clamp"}
        if fixes.get(k):
            key = f"{feat}:{k}->0"
            expect_fixed[key] = expect_fixed.get(key, 0) + 1
        elif k != "none":
            expect_dropped[k] = expect_dropped.get(k, 0) + 1
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "day.csv")
        with open(src, "w") as f:
            f.write("\n".join(lines) + "\n")
        report = convert.convert_file(
            src, d, nonfinite=nonfinite, negative=negative, block_size=block_size
        )
        got = pq.read_table(os.path.join(d, "day.parquet"))
    assert dict(report.dropped) == expect_dropped
    assert dict(report.fixed) == expect_fixed
    assert report.rows_in == len(rows) and got.num_rows == report.rows_out
    assert report.rows_out == len(rows) - sum(expect_dropped.values())
    x = np.stack([got.column(f).to_numpy() for f in FEATS], axis=1)
    assert np.isfinite(x).all() and (x[:, [FEATS.index(f) for f in NONNEG]] >= 0).all()


_JUNK = st.text(
    alphabet=st.sampled_from(list("0123456789,.-+eE\"' \t\r\nabcLBEIN\x00\xff\u2013")),
    max_size=300,
)


@SETTINGS
@given(st.integers(0, len(HEAD)), _JUNK, st.booleans())
def test_junk_is_refused_by_name_or_counted(cut, junk, with_header):
    """Whatever the bytes, the result is a counted conversion or a ValueError naming the file,
    and no temporary or partial output is left."""
    text = (",".join(HEAD[:cut] + HEAD[cut + 1 :]) + "\n" if with_header else "") + junk
    with tempfile.TemporaryDirectory() as d:
        src, out = os.path.join(d, "junk.csv"), os.path.join(d, "out")
        with open(src, "wb") as f:
            f.write(text.encode("utf-8", errors="surrogatepass"))
        try:
            report = convert.convert_file(src, out)
        except ValueError as e:
            assert str(e).startswith(f"{src}: "), e
            assert not os.path.exists(os.path.join(out, "junk.parquet"))
        else:
            assert report.rows_in == report.rows_out + sum(report.dropped.values())
            assert pq.read_metadata(os.path.join(out, "junk.parquet")).num_rows == report.rows_out
        assert not os.path.isdir(out) or not [f for f in os.listdir(out) if f.endswith(".tmp")]


# ------------------------------------------------------------------------ windows


@st.composite
def flows_and_args(draw):
    sizes = draw(st.lists(st.integers(0, 40), min_size=1, max_size=4))
    n = sum(sizes)
    label = np.asarray(draw(st.lists(st.sampled_from([0, 0, 0, 1]), min_size=n, max_size=n)))
    flows = dataset.Flows(
        x_NxF=np.asarray(
            draw(st.lists(st.floats(0, 1e6, width=32), min_size=n, max_size=n)), np.float32
        ).reshape(n, 1),
        label_N=label.astype(np.int32),
        file_N=np.repeat(np.arange(len(sizes), dtype=np.int32), sizes),
        classes=("Benign", "DDoS"),
        features=("flow_duration",),
        files=tuple(f"f{i}" for i in range(len(sizes))),
        reports=(),
    )
    a = draw(st.integers(0, 10))
    b = draw(st.integers(0, 10 - a))
    args = {
        "window": draw(st.integers(1, 8)),
        "stride": draw(st.integers(1, 3)),
        "split": draw(st.sampled_from(["temporal", "random"])),
        "fractions": (a / 10, b / 10, (10 - a - b) / 10),
        "seed": draw(st.integers(0, 3)),
        "train_benign_only": draw(st.booleans()),
    }
    return flows, args


def _expected_starts(seg_N: np.ndarray, window: int, stride: int) -> list[int]:
    """Brute force: every row where a window of this stride fits in its segment."""
    out, n = [], len(seg_N)
    for a in range(n):
        first = a == 0 or seg_N[a - 1] != seg_N[a]
        if first:
            b = a
            while b < n and seg_N[b] == seg_N[a]:
                b += 1
            out += list(range(a, b - window + 1, stride))
    return out


@settings(max_examples=60, deadline=None)
@given(flows_and_args())
def test_window_builder_invariants(case):
    flows, args = case
    n, t = len(flows), args["window"]
    split_N = dataset.temporal_split(n, args["fractions"])
    keys = (flows.file_N, split_N) if args["split"] == "temporal" else (flows.file_N,)
    every = _expected_starts(windows.segment_ids(*keys), t, args["stride"])  # brute force
    attack = {s: bool(flows.label_N[s : s + t].any()) for s in every}
    if args["split"] == "temporal":
        code_W = [split_N[s] for s in every]
    else:  # stratified by the label of the window's last flow
        last = flows.label_N[np.asarray(every, np.int64) + t - 1]
        code_W = dataset.random_split(last, args["fractions"], args["seed"]).tolist()
    expected = {
        name: [s for s, c in zip(every, code_W, strict=True) if c == code]
        for code, name in enumerate(dataset.SPLITS)
    }
    before_filter = len(expected["train"])
    if args["train_benign_only"]:
        expected["train"] = [s for s in expected["train"] if not attack[s]]
    if not expected["train"]:
        # Training windows that all hold an attack flow: the message says so (issue 16).
        why = "no benign training windows" if before_filter else "no training windows"
        with pytest.raises(ValueError, match=why):
            windows.build(flows, **args)
        return
    w = windows.build(flows, **args)
    # The count formula, the split of each window and the benign-only filter, exactly.
    assert {name: w.starts[name].tolist() for name in dataset.SPLITS} == expected
    all_starts = np.concatenate([w.starts[name] for name in dataset.SPLITS])
    assert len(np.unique(all_starts)) == len(all_starts)  # splits are disjoint
    for code, name in enumerate(dataset.SPLITS):
        starts = w.starts[name]
        assert ((starts >= 0) & (starts <= n - t)).all()
        for s in starts:
            assert len(set(flows.file_N[s : s + t])) == 1  # never across files
            if args["split"] == "temporal":
                assert set(split_N[s : s + t]) == {code}  # never across splits
        assert w.label[name].tolist() == flows.label_N[starts + t - 1].tolist()
        assert w.any_attack[name].tolist() == [attack[s] for s in starts.tolist()]
    # The scaler sees training rows only: changing every other row does not move it.
    train_rows = windows.rows_covered(n, w.starts["train"], t)
    x = np.where(train_rows[:, None], flows.x_NxF, np.float32(7e5))
    assert windows.build(dataclasses.replace(flows, x_NxF=x), **args).scaler == w.scaler


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.integers(1, 16), st.integers(0, 5), st.integers(0, 40))
def test_batch_order_epochs_and_exact_resume(n, batch, seed, k):
    assume(batch <= n)
    order = windows.BatchOrder(n, batch, seed=seed)
    spe = order.steps_per_epoch
    assert spe == n // batch
    run = [order.next() for _ in range(3 * spe + k)]
    for e in range(3):  # an epoch visits distinct items, all in range
        epoch = np.concatenate(run[e * spe : (e + 1) * spe])
        assert len(np.unique(epoch)) == spe * batch and ((epoch >= 0) & (epoch < n)).all()
    first = windows.BatchOrder(n, batch, seed=seed)
    for _ in range(k):
        first.next()
    again = windows.BatchOrder(n, batch, seed=seed)
    again.restore(first.state())
    for expected in run[k : k + 2 * spe]:
        assert np.array_equal(again.next(), expected)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 100), st.integers(1, 17))
def test_eval_batches_cover_every_item_once(n, batch):
    seen = []
    for idx, valid in windows.eval_batches(n, batch):
        assert idx.shape == valid.shape == (batch,)
        seen += idx[valid].tolist()
    assert seen == list(range(n))
