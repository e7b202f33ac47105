"""Generated flows: determinism, time order, CICFlowMeter identities, episodes, raw formats."""

import json
import math
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from conftest import REPO
from hypothesis import given, settings
from hypothesis import strategies as st

from lstmae_jax.ingest import clean, schema
from lstmae_jax.synthetic import timeline, writers

N = 6000
META = ["timestamp", "src_ip", "dst_ip", "src_port", "flow_id"]
# float64 quotients (means, rates, std = sqrt(var)) carry one rounding each; multiplying
# back reproduces the exact integer inputs to within a few ulps, never more.
RTOL = 1e-12


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return timeline.generate(N, 3)


def cols(t: pa.Table) -> dict[str, np.ndarray]:
    return {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}


def meta(t: pa.Table) -> dict:
    return json.loads(t.schema.metadata[timeline.METADATA_KEY])


def ipc_bytes(t: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    return sink.getvalue().to_pybytes()


def test_same_seed_same_bytes(tmp_path, table):
    again = timeline.generate(N, 3)
    assert ipc_bytes(again) == ipc_bytes(table)  # NaN-safe, metadata included
    assert not timeline.generate(N, 4).column("flow_duration").equals(table.column("flow_duration"))
    for style in ("canonical", "cicids2017"):
        a = timeline.write(table, str(tmp_path / f"a_{style}.parquet"), style=style)
        b = timeline.write(again, str(tmp_path / f"b_{style}.parquet"), style=style)
        assert pathlib.Path(a).read_bytes() == pathlib.Path(b).read_bytes()
    assert len(os.listdir(tmp_path)) == 4  # no temporary files left behind


def test_columns_types_and_time_order(table):
    features = [f for f in schema.FEATURES if schema.spelling(f, "cicids2017") is not None]
    assert "protocol" in features
    assert table.column_names == [*META, *features, schema.LABEL]
    assert all(table.schema.field(f).type == pa.float64() for f in features)
    assert all(table.schema.field(m).type == pa.string() for m in META)
    ts = np.array(table.column("timestamp").to_pylist(), dtype="datetime64[us]")
    assert ts[0] >= np.datetime64("2017-07-07T08:00:00") and np.all(np.diff(ts) >= 0)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", table.column("timestamp")[0].as_py()
    )
    d = cols(table)
    fid = f"{d['src_ip'][0]}-{d['dst_ip'][0]}-{d['src_port'][0]}-{int(d['dst_port'][0])}-{int(d['protocol'][0])}"
    assert d["flow_id"][0] == fid


def check_identities(d: dict[str, np.ndarray]) -> None:
    """The CICFlowMeter identities, on the raw (uncleaned) values."""
    nf, nb, dur = d["tot_fwd_pkts"], d["tot_bwd_pkts"], d["flow_duration"]
    n = nf + nb
    for f in schema.FEATURES:
        if f in d and not writers._is_float(f):
            assert np.array_equal(d[f], np.rint(d[f])), f  # counts, bytes, microseconds
    assert np.all(nf >= 1) and np.all(nb >= 0) and np.all(dur >= 0)
    for side, cnt in (("fwd", nf), ("bwd", nb)):
        tot, mean = d[f"totlen_{side}_pkts"], d[f"{side}_pkt_len_mean"]
        np.testing.assert_allclose(tot, cnt * mean, rtol=RTOL, err_msg=side)
        assert np.all(d[f"{side}_pkt_len_min"] <= mean) and np.all(mean <= d[f"{side}_pkt_len_max"])
        assert np.all(d[f"{side}_pkt_len_std"] >= 0)
        assert np.array_equal(d[f"{side}_seg_size_avg"], mean)
        assert np.array_equal(d[f"subflow_{side}_pkts"], cnt)
        assert np.array_equal(d[f"subflow_{side}_byts"], tot)
        assert np.array_equal(d[f"{side}_header_len"], cnt * d["fwd_seg_size_min"])
        assert np.all(d[f"{side}_psh_flags"] <= cnt)
        iat_tot = d[f"{side}_iat_tot"]
        assert np.all(iat_tot <= dur)
        assert np.all(d[f"{side}_iat_min"] <= d[f"{side}_iat_mean"])
        assert np.all(d[f"{side}_iat_mean"] <= d[f"{side}_iat_max"])
        many = cnt > 1  # cnt - 1 gaps between the packets of one direction
        np.testing.assert_allclose(
            iat_tot[many], (cnt - 1)[many] * d[f"{side}_iat_mean"][many], rtol=RTOL
        )
    for f in ("max", "min", "mean", "std"):
        assert np.all(d[f"bwd_pkt_len_{f}"][nb == 0] == 0), f
    # Flow-wide lengths count the first packet twice (as in the 2017 release).
    assert np.all(d["pkt_len_min"] <= d["pkt_len_mean"]) and np.all(
        d["pkt_len_mean"] <= d["pkt_len_max"]
    )
    assert np.array_equal(d["pkt_len_max"], np.maximum(d["fwd_pkt_len_max"], d["bwd_pkt_len_max"]))
    both_min = np.where(
        nb > 0, np.minimum(d["fwd_pkt_len_min"], d["bwd_pkt_len_min"]), d["fwd_pkt_len_min"]
    )
    assert np.array_equal(d["pkt_len_min"], both_min)
    np.testing.assert_allclose(d["pkt_len_var"], d["pkt_len_std"] ** 2, rtol=RTOL)
    np.testing.assert_allclose(d["pkt_size_avg"], d["pkt_len_mean"] * (n + 1) / n, rtol=RTOL)
    assert np.array_equal(d["down_up_ratio"], np.floor(nb / nf))
    # Rates per second of a duration in microseconds; zero-duration flows as in 2017.
    pos = dur > 0
    byts = d["totlen_fwd_pkts"] + d["totlen_bwd_pkts"]
    for rate, amount in (
        ("flow_byts_s", byts),
        ("flow_pkts_s", n),
        ("fwd_pkts_s", nf),
        ("bwd_pkts_s", nb),
    ):
        np.testing.assert_allclose(
            d[rate][pos], amount[pos] * 1e6 / dur[pos], rtol=RTOL, err_msg=rate
        )
    zero = ~pos
    assert np.all(d["flow_iat_max"][zero] == 0)
    assert np.all(np.isinf(d["flow_pkts_s"][zero]))
    assert np.array_equal(np.isnan(d["flow_byts_s"]), zero & (byts == 0))
    assert np.array_equal(np.isinf(d["flow_byts_s"]), zero & (byts > 0))
    assert np.all(d["fwd_pkts_s"][zero] == 0) and np.all(d["bwd_pkts_s"][zero] == 0)
    many = n > 1
    np.testing.assert_allclose(d["flow_iat_mean"][many] * (n - 1)[many], dur[many], rtol=RTOL)
    for g in ("flow_iat", "active", "idle"):
        assert np.all(d[f"{g}_min"] <= d[f"{g}_mean"]) and np.all(d[f"{g}_mean"] <= d[f"{g}_max"])
        assert np.all(d[f"{g}_std"] >= 0)
    assert np.all(d["idle_min"][d["idle_mean"] > 0] > timeline.ACTIVITY_TIMEOUT_US)
    assert np.all(d["idle_max"] + d["active_max"] <= dur)
    assert np.all(dur < timeline.FLOW_TIMEOUT_US)
    # Flags, windows, data packets.
    for f in ("fin", "syn", "rst", "psh", "ack", "urg", "cwr", "ece"):
        assert np.all(d[f"{f}_flag_cnt"] <= n) and np.all(d[f"{f}_flag_cnt"] >= 0), f
    assert np.array_equal(d["psh_flag_cnt"], d["fwd_psh_flags"] + d["bwd_psh_flags"])
    udp = d["protocol"] == 17
    assert np.all(d["init_bwd_win_byts"][nb == 0] == -1) and np.all(
        d["init_fwd_win_byts"][udp] == -1
    )
    assert np.all(d["init_bwd_win_byts"][~udp & (nb > 0)] >= 0)
    assert np.all(d["ack_flag_cnt"][udp] == 0)
    assert np.all(d["fwd_act_data_pkts"] <= nf)
    assert np.array_equal(d["fwd_act_data_pkts"] == 0, d["totlen_fwd_pkts"] == 0)


def test_cicflowmeter_identities(table):
    d = cols(table)
    check_identities(d)
    zero = d["flow_duration"] == 0  # a few, like the real files' Infinity/NaN rows
    assert 0 < zero.sum() < 0.02 * N
    assert np.isnan(d["flow_byts_s"]).any() and np.isinf(d["flow_byts_s"]).any()
    assert (d["init_bwd_win_byts"] == -1).any() and (d["idle_mean"] > 0).any()


@settings(max_examples=12, deadline=None)
@given(
    num_flows=st.integers(1, 400),
    seed=st.integers(0, 2**31),
    attack_fraction=st.floats(0.0, 0.7),
)
def test_identities_and_counts_any_size(num_flows, seed, attack_fraction):
    t = timeline.generate(num_flows, seed, attack_fraction=attack_fraction)
    assert t.num_rows == num_flows
    check_identities(cols(t))
    n_attack = int(np.sum(cols(t)[schema.LABEL] != schema.BENIGN))
    assert n_attack <= round(attack_fraction * num_flows)
    assert np.all(cols(t)[schema.LABEL][: math.ceil(0.3 * num_flows)] == schema.BENIGN)


def test_episodes_are_bursts_after_a_clean_prefix(table):
    labels = cols(table)[schema.LABEL]
    episodes = meta(table)["episodes"]
    assert {e["label"] for e in episodes} == set(timeline.DEFAULT_ATTACK_MIX)
    assert int(np.sum(labels != schema.BENIGN)) == round(timeline.DEFAULT_ATTACK_FRACTION * N)
    assert episodes[0]["first_row"] >= math.ceil(0.3 * N)
    assert np.all(labels[: math.ceil(0.3 * N)] == schema.BENIGN)
    in_episode = np.zeros(N, dtype=bool)
    for e, nxt in zip(episodes, [*episodes[1:], None], strict=True):
        rows = labels[e["first_row"] : e["last_row"] + 1]
        assert rows[0] == rows[-1] == e["label"]
        assert set(rows) == {e["label"], schema.BENIGN}  # only benign interleaved
        assert np.sum(rows == e["label"]) == e["flows"]
        density = e["flows"] / len(rows)  # benign at 20/s against the attack rate
        assert density > (0.8 if e["label"] in ("DoS Hulk", "DDoS", "PortScan") else 0.3), e
        assert nxt is None or nxt["first_row"] > e["last_row"]  # episodes do not overlap
        in_episode[e["first_row"] : e["last_row"] + 1] = True
    assert np.all(labels[~in_episode] == schema.BENIGN)


def test_bot_beacons_are_periodic(table):
    d = cols(table)
    bot = d[schema.LABEL] == "Bot"
    ts = np.array(d["timestamp"], dtype="datetime64[us]").astype(np.int64)
    gaps = []
    for e in meta(table)["episodes"]:
        rows = np.arange(e["first_row"], e["last_row"] + 1)
        rows = rows[d[schema.LABEL][rows] == "Bot"]
        for host in np.unique(d["src_ip"][rows]):
            gaps.append(np.diff(ts[rows[d["src_ip"][rows] == host]]))
    gaps = np.concatenate(gaps)
    assert len(gaps) > 10 and np.all(np.abs(gaps - 1e6) < 0.15e6)  # 1 s, +-5% jitter twice
    assert set(d["dst_port"][bot]) == {8080.0} and len(set(d["dst_ip"][bot])) == 1


def test_labels_are_canonical(table):
    for label in set(cols(table)[schema.LABEL]):
        assert schema.normalize_label(label) == label
        assert schema.family(label) != "Other"


def test_attacks_differ_from_benign(table):
    d = cols(table)
    features = [f for f in table.column_names[len(META) : -1] if f not in ("dst_port", "protocol")]
    x = np.log1p(np.clip(np.nan_to_num(np.stack([d[f] for f in features], 1), posinf=0), 0, None))
    benign = x[d[schema.LABEL] == schema.BENIGN]
    scale = benign.std(0) + 1e-9
    for label in timeline.DEFAULT_ATTACK_MIX:
        shift = np.abs(x[d[schema.LABEL] == label].mean(0) - benign.mean(0)) / scale
        assert np.sum(shift > 0.5) >= 5, (label, dict(zip(features, shift.round(2), strict=True)))


def test_cicids2017_csv_round_trips_through_the_cleaner(tmp_path, table):
    path = timeline.write(table, str(tmp_path / "day.csv"), style="cicids2017")
    text = pathlib.Path(path).read_text(encoding="utf-8")
    header = [name for name, _ in timeline.raw_header("cicids2017")]
    assert text.split("\n", 1)[0] == ",".join(header)
    assert header.count(" Fwd Header Length") == 2 and header[-1] == " Label"
    assert ",Infinity," in text and ",NaN," in text and ",BENIGN\n" in text
    raw = pa_csv.read_csv(path)
    got, report = clean.canonicalize(raw, source=path)
    want, want_report = clean.canonicalize(table, source="generated")
    assert report.style == "cicids2017" and not report.unknown_columns
    assert report.duplicate_header_mismatches == 0
    nonfinite = ~np.isfinite(cols(table)["flow_byts_s"])
    assert report.dropped == want_report.dropped == {"nonfinite": int(nonfinite.sum())}
    assert got.column_names == [f for f in want.column_names if f not in [*META, "protocol"]]
    for f in got.column_names:
        assert got.column(f).equals(want.column(f)), f


def test_header_matches_the_real_2017_release(shared_data):
    real = pq.read_schema(shared_data / "cicids2017" / "monday_head.parquet").names
    mine = [name for name, _ in timeline.raw_header("cicids2017")]
    assert [n.replace(".1", "") for n in real] == mine


def test_web_attack_labels_keep_the_en_dash(tmp_path, table):
    t = table.slice(0, 5)
    t = t.set_column(t.num_columns - 1, schema.LABEL, pa.array(["Web Attack - XSS"] * 5))
    path = timeline.write(t, str(tmp_path / "web.csv"), style="cicids2017")
    assert "Web Attack \u2013 XSS" in pathlib.Path(path).read_text(encoding="utf-8")
    got, _ = clean.canonicalize(pa_csv.read_csv(path), source=path, nonfinite="zero")
    assert got.column(schema.LABEL).to_pylist() == ["Web Attack - XSS"] * 5


def test_csecicids2018_csv(tmp_path, table):
    path = timeline.write(table, str(tmp_path / "day.csv"), style="csecicids2018")
    raw = pa_csv.read_csv(path)
    assert raw.column_names[:4] == ["Dst Port", "Protocol", "Timestamp", "Flow Duration"]
    stamp = raw.column("Timestamp")[0].as_py()
    assert re.fullmatch(r"07/07/2017 08:\d\d:\d\d", stamp), stamp
    got, report = clean.canonicalize(raw, source=path)
    assert report.style == "csecicids2018" and not report.unknown_columns
    assert "DoS attacks-Hulk" in report.labels and "SSH-Bruteforce" in report.labels
    want, _ = clean.canonicalize(table, source="generated")
    for f in got.column_names:
        if f not in (schema.LABEL, "timestamp"):
            assert got.column(f).equals(want.column(f)), f


def test_canonical_parquet_is_the_cleaned_table(tmp_path, table):
    path = timeline.write(table, str(tmp_path / "timeline.parquet"))
    got = pq.read_table(path)
    want, _ = clean.canonicalize(table, source="generated")
    assert got.drop_columns([]).equals(want)
    info = meta(got)
    assert info["episodes"] == meta(table)["episodes"] and info["clean"]["rows_out"] == got.num_rows


def test_invalid_arguments():
    with pytest.raises(ValueError, match="attack_fraction"):
        timeline.generate(100, 0, attack_fraction=0.8)
    with pytest.raises(ValueError, match="unknown attack labels"):
        timeline.generate(100, 0, attack_mix={"Heartbleed": 1.0})
    with pytest.raises(ValueError, match="style"):
        timeline.write(timeline.generate(10, 0), "/tmp/x.parquet", style="cicids2018")


def test_launcher_writes_into_a_directory(tmp_path):
    cmd = [sys.executable, str(REPO / "launch" / "synth.py"), f"--output={tmp_path}", "--flows=500"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    got = pq.read_table(tmp_path / "timeline.parquet")
    assert 480 < got.num_rows <= 500 and set(got.column(schema.LABEL).to_pylist()) > {"Benign"}
