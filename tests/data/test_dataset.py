"""Parquet -> arrays on every genuine shared file; splits; scaler."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lstmae_jax.data import dataset
from lstmae_jax.ingest import clean, schema

# Expected per-file results of the default cleaning (nonfinite="drop", negative="clamp"),
# counted independently from the files with pyarrow in test_expected_counts_are_raw_counts.
EXPECTED = {
    "cicids2017/friday_afternoon_ddos_head.parquet": (9998, 9991, {"Benign": 9991}),
    "cicids2017/stratified_sample_all_days.parquet": (
        10918,
        10910,
        {
            "Benign": 9629,
            "PortScan": 688,
            "DDoS": 518,
            "FTP-Patator": 35,
            "SSH-Patator": 27,
            "Web Attack - Brute Force": 6,
            "Bot": 6,
            "Web Attack - XSS": 1,
        },
    ),
    "cicids2017/thursday_webattack_rows.parquet": (
        7,
        7,
        {"Web Attack - XSS": 3, "Web Attack - Brute Force": 2, "Web Attack - Sql Injection": 2},
    ),
    "cicids2017_friday_ddos_day/friday_ddos_day_part1.parquet": (
        103865,
        103865,
        {"DDoS": 63675, "Benign": 40190},
    ),
    "cicids2017_improved/improved_random_sample_non_wednesday.parquet": (
        35866,
        35866,
        {
            "PortScan": 7411,
            "DDoS": 7362,
            "Infiltration - Portscan": 7329,
            "Benign": 5955,
            "FTP-Patator": 3972,
            "SSH-Patator": 2961,
            "Bot": 736,
            "Web Attack - Brute Force": 73,
            "Infiltration": 36,
            "Web Attack - XSS": 18,
            "Web Attack - Sql Injection": 13,
        },
    ),
    "csecicids2018/random_sample_all_days.parquet": (
        943,
        943,
        {
            "Benign": 721,
            "DDOS attack-HOIC": 67,
            "DoS attacks-Hulk": 53,
            "Infilteration": 21,
            "SSH-Bruteforce": 21,
            "FTP-BruteForce": 20,
            "Bot": 20,
            "DoS attacks-SlowHTTPTest": 15,
            "DoS attacks-GoldenEye": 4,
            "DoS attacks-Slowloris": 1,
        },
    ),
    "csecicids2018/wednesday_14_02_bruteforce_balanced_subsample.parquet": (
        6053,
        6053,
        {"SSH-Bruteforce": 3000, "Benign": 3000, "FTP-BruteForce": 53},
    ),
}


def _raw_nonfinite_rows(table: pa.Table) -> int:
    bad = np.zeros(table.num_rows, dtype=bool)
    for name in table.column_names:
        if pa.types.is_floating(table.schema.field(name).type):
            bad |= ~np.isfinite(table.column(name).to_numpy())
    return int(bad.sum())


def test_every_shared_file_loads(shared_data):
    files = sorted(shared_data.glob("*/*.parquet"))
    assert len(files) >= 13
    for f in files:
        flows = dataset.load_flows(str(f))
        assert flows.x_NxF.dtype == np.float32
        assert np.isfinite(flows.x_NxF).all(), f
        assert flows.x_NxF.shape == (len(flows), len(flows.features))
        assert flows.classes[0] == schema.BENIGN
        assert all(schema.family(c) != "Other" for c in flows.classes), (f, flows.classes)
        # Non-negative kinds are non-negative after cleaning (sentinels clamped).
        for j, name in enumerate(flows.features):
            if schema.KIND[name] in schema.NONNEGATIVE_KINDS:
                assert flows.x_NxF[:, j].min() >= 0, (f, name)


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_expected_counts_are_raw_counts(shared_data, rel):
    rows_in, rows_out, labels = EXPECTED[rel]
    table = pq.read_table(shared_data / rel)
    assert table.num_rows == rows_in
    assert rows_in - _raw_nonfinite_rows(table) == rows_out
    flows = dataset.load_flows(str(shared_data / rel))
    assert len(flows) == rows_out
    got = {flows.classes[c]: int(n) for c, n in enumerate(np.bincount(flows.label_N)) if n}
    assert got == labels


def test_schema_mapping_of_the_three_styles(shared_data):
    styles = {
        "cicids2017/monday_head.parquet": ("cicids2017", 77),
        "cicids2017_improved/improved_random_sample_non_wednesday.parquet": (
            "cicids2017_improved",
            83,
        ),
        "csecicids2018/random_sample_all_days.parquet": ("csecicids2018", 78),
    }
    for rel, (style, n_features) in styles.items():
        names = pq.read_schema(shared_data / rel).names
        assert schema.detect_style(names) == style
        table, report = clean.canonicalize(pq.read_table(shared_data / rel), source=rel)
        assert report.unknown_columns == []
        assert len(report.features) == n_features
    # Same quantity, three spellings, one canonical column.
    t17 = dataset.load_flows(str(shared_data / "cicids2017/monday_head.parquet"))
    t18 = dataset.load_flows(str(shared_data / "csecicids2018/random_sample_all_days.parquet"))
    assert "tot_fwd_pkts" in t17.features and "tot_fwd_pkts" in t18.features
    assert "protocol" not in t17.features  # MachineLearningCVE has no Protocol column
    imp = clean.canonicalize(
        pq.read_table(
            shared_data / "cicids2017_improved/improved_random_sample_non_wednesday.parquet"
        ),
        source="improved",
    )[0]
    for name in ("timestamp", "src_ip", "dst_ip", "flow_id", "attempted_category"):
        assert name in imp.column_names  # identifiers kept as metadata ...
        assert name not in schema.FEATURES  # ... never as model features


def test_duplicate_fwd_header_and_nonfinite(shared_data):
    rel = "cicids2017/stratified_sample_all_days.parquet"
    raw = pq.read_table(shared_data / rel)
    assert " Fwd Header Length.1" in raw.column_names
    table, report = clean.canonicalize(raw, source=rel)
    assert schema.DUPLICATE_FWD_HEADER not in table.column_names
    assert report.duplicate_header_mismatches == 0
    assert report.dropped == {"nonfinite": 8}
    zero, report0 = clean.canonicalize(raw, source=rel, nonfinite="zero")
    assert zero.num_rows == raw.num_rows
    assert report0.fixed["flow_byts_s:nonfinite->0"] == 8
    # A mismatch in the duplicate is counted, not hidden.
    dup = raw.column(" Fwd Header Length.1").to_numpy().copy()
    dup[:3] += 1
    bad = raw.set_column(
        raw.column_names.index(" Fwd Header Length.1"), " Fwd Header Length.1", pa.array(dup)
    )
    assert clean.canonicalize(bad, source=rel)[1].duplicate_header_mismatches == 3


def test_negative_sentinels(shared_data):
    rel = "cicids2017/monday_head.parquet"
    raw = pq.read_table(shared_data / rel)
    n_neg = int((raw.column("Init_Win_bytes_forward").to_numpy() < 0).sum())
    assert n_neg > 0
    _, clamp = clean.canonicalize(raw, source=rel, nonfinite="zero")
    assert clamp.fixed["init_fwd_win_byts:negative->0"] == n_neg
    dropped, report = clean.canonicalize(raw, source=rel, nonfinite="zero", negative="drop")
    assert report.dropped["negative"] >= n_neg
    assert dropped.num_rows == raw.num_rows - report.dropped["negative"]


def test_label_normalisation():
    assert schema.normalize_label(" BENIGN ") == "Benign"
    assert schema.normalize_label("Web Attack \ufffd Brute Force") == "Web Attack - Brute Force"
    assert schema.normalize_label("Web Attack \u2013 Sql Injection") == "Web Attack - Sql Injection"
    assert schema.normalize_label("Web Attack - SQL Injection") == "Web Attack - Sql Injection"
    assert schema.normalize_label("Botnet") == "Bot"
    assert schema.family("Infilteration") == "Infiltration"
    assert schema.family("DDOS attack-HOIC") == "DDoS"
    assert schema.family("FTP-Patator - Attempted") == "Attempted"
    assert schema.normalize_label("Brand New Attack") == "Brand New Attack"
    assert schema.family("Brand New Attack") == "Other"


def test_repeated_header_rows_and_missing_labels():
    table = pa.table(
        {
            " Flow Duration": pa.array([1.0, 2.0, 3.0, 4.0]),
            " Label": pa.array(["BENIGN", " Label", None, "DDoS"]),
        }
    )
    out, report = clean.canonicalize(table, source="t")
    assert out.column("label").to_pylist() == ["Benign", "DDoS"]
    assert report.dropped == {"repeated_header": 1, "missing_label": 1}
    assert report.rows_in == 4 and report.rows_out == 2


def test_feature_subset_and_errors(shared_data, tmp_path):
    both = [
        str(shared_data / "cicids2017_friday_ddos_day"),
        str(shared_data / "cicids2017/monday_head.parquet"),
    ]
    flows = dataset.load_flows(both)
    assert len(flows.features) == 16  # the day file has 16 of the 77 features
    assert flows.files[0].endswith("friday_ddos_day_part1.parquet")
    with pytest.raises(
        ValueError,
        match=r"friday_ddos_day_part1.parquet: lacks requested feature columns \[.flow_duration.\]",
    ):
        dataset.load_flows(both[::-1], features=["flow_duration"])
    with pytest.raises(ValueError, match="unknown feature names"):
        dataset.load_flows(both[1], features=["nope"])
    with pytest.raises(FileNotFoundError):
        dataset.load_flows(str(tmp_path / "missing"))
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="junk.parquet: cannot read as Parquet"):
        dataset.load_flows(str(junk))


def _with_nan(tmp_path, column, share):
    """A generated day whose ``column`` is NaN in its first ``share`` of rows."""
    from lstmae_jax.synthetic import timeline

    table = pa.Table.from_batches(
        clean.canonicalize(timeline.generate(400, seed=0), source="g")[0].to_batches()
    )
    values = table.column(column).to_numpy().copy()
    values[: int(share * len(values))] = np.nan
    path = tmp_path / f"nan_{share}.parquet"
    idx = table.column_names.index(column)
    pq.write_table(table.set_column(idx, column, pa.array(values)), path)
    return str(path)


def test_all_nan_column_is_named(tmp_path):
    path = _with_nan(tmp_path, "flow_iat_mean", 1.0)
    with pytest.raises(ValueError, match=r"every row.*nonfinite.*'flow_iat_mean'"):
        dataset.load_flows(path)


def test_most_rows_dropped_warns_naming_reason_and_column(tmp_path, caplog):
    import logging

    path = _with_nan(tmp_path, "fwd_iat_std", 0.6)
    with caplog.at_level(logging.WARNING):
        flows = dataset.load_flows(path)
    rows = pq.read_metadata(path).num_rows
    assert len(flows) == rows - int(0.6 * rows)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("60%" in m and "nonfinite" in m and "'fwd_iat_std'" in m for m in warned), warned


def test_temporal_split_is_ordered():
    split = dataset.temporal_split(10, (0.6, 0.2, 0.2))
    assert split.tolist() == [0] * 6 + [1] * 2 + [2] * 2
    with pytest.raises(ValueError):
        dataset.temporal_split(10, (0.5, 0.2, 0.2))


def test_random_split_is_stratified_and_deterministic():
    labels = np.repeat(np.arange(3), [100, 50, 10])
    a = dataset.random_split(labels, (0.6, 0.2, 0.2), seed=1)
    assert np.array_equal(a, dataset.random_split(labels, (0.6, 0.2, 0.2), seed=1))
    for c, n in zip(range(3), (100, 50, 10), strict=True):
        counts = np.bincount(a[labels == c], minlength=3)
        assert counts.tolist() == [
            round(0.6 * n),
            round(0.8 * n) - round(0.6 * n),
            n - round(0.8 * n),
        ]


def test_scaler_log_standardise_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    features = ("flow_duration", "syn_flag_cnt")
    x = np.stack([rng.exponential(1e6, 1000), rng.integers(0, 3, 1000)], axis=1).astype(np.float32)
    sc = dataset.fit_scaler(x, features)
    assert sc.log == (True, False)
    z = sc.transform(x)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)  # float32 output of float64 stats
    np.testing.assert_allclose(z.std(0), 1, atol=1e-5)
    path = tmp_path / "scaler.json"
    path.write_text(json.dumps(sc.to_json()))  # the JSON the run and the sidecar hold
    assert dataset.Scaler.from_json(json.loads(path.read_text())) == sc
    assert json.loads(path.read_text())["features"] == list(features)
    # Constant column: centred, not divided by zero.
    const = dataset.fit_scaler(np.ones((5, 1), np.float32), ("syn_flag_cnt",))
    assert np.all(const.transform(np.ones((2, 1), np.float32)) == 0)


def test_minmax_scaler_is_the_papers():
    x = np.array([[0.0, 5.0], [10.0, 5.0], [5.0, 5.0]], np.float32)
    sc = dataset.fit_scaler(x, ("flow_duration", "syn_flag_cnt"), kind="minmax")
    np.testing.assert_array_equal(sc.transform(x), [[0.0, 0.0], [1.0, 0.0], [0.5, 0.0]])
    assert dataset.Scaler.from_json(sc.to_json()) == sc
    with pytest.raises(ValueError, match="scaler must be one of"):
        dataset.fit_scaler(x, ("flow_duration", "syn_flag_cnt"), kind="rank")


def test_robust_scaler_uses_median_and_iqr_and_clip_bounds():
    rng = np.random.default_rng(1)
    features = ("flow_duration", "syn_flag_cnt")
    x = np.stack([rng.exponential(1e3, 2001), rng.integers(0, 5, 2001)], axis=1)
    x[:20, 0] = 1e12  # a few extreme training rows: they move the mean, not the median
    sc = dataset.fit_scaler(x, features, kind="robust")
    logx = np.log1p(x[:, 0])
    q25, med, q75 = np.quantile(logx, [0.25, 0.5, 0.75])
    assert sc.mean[0] == pytest.approx(med) and sc.std[0] == pytest.approx((q75 - q25) / 1.349)
    np.testing.assert_allclose(np.median(sc.transform(x)[:, 0]), 0.0, atol=1e-6)
    clipped = dataset.fit_scaler(x, features, kind="robust", clip=3.0)
    z = clipped.transform(x)
    assert z.max() == 3.0 and z.min() >= -3.0
    assert dataset.Scaler.from_json(clipped.to_json()) == clipped
    with pytest.raises(ValueError, match="clip must be finite"):
        dataset.fit_scaler(x, features, clip=-1.0)


def test_quantile_scaler_maps_benign_quantiles_to_normal_scores(tmp_path):
    from statistics import NormalDist

    rng = np.random.default_rng(3)
    features = ("flow_duration", "syn_flag_cnt", "dst_port")
    n = 4000
    x = np.stack(
        [rng.exponential(1e6, n), rng.integers(0, 2, n), rng.choice([53, 443, 80], n)], axis=1
    )
    sc = dataset.fit_scaler(x, features, kind="quantile")
    z = sc.transform(x)
    # A continuous feature becomes standard normal on the training rows (up to the knots).
    assert abs(np.median(z[:, 0])) < 0.02 and abs(z[:, 0].std() - 1) < 0.05
    # Tied values share one score: the normal score of their block's mid-probability.
    zero_share = np.mean(x[:, 1] == 0)
    assert len(np.unique(z[:, 1])) == 2
    assert z[x[:, 1] == 0, 1][0] == pytest.approx(NormalDist().inv_cdf(zero_share / 2), abs=0.01)
    assert len(np.unique(z[:, 2])) == 3
    # Beyond the training range the map goes on from the end knots (Phi^-1(1 - 1/2n) for a
    # continuous feature) at the standard scaler's slope: log1p units / training std.
    far = np.array([[-1e12, -5, 0], [1e12, 7, 65535]], np.float64)
    end = NormalDist().inv_cdf(1 - 0.5 / n)
    std = dataset.fit_scaler(x, features).std  # the standard scaler's scale per feature
    beyond = (np.log1p(1e12) - np.log1p(x[:, 0].max())) / std[0]
    np.testing.assert_allclose(sc.transform(far)[1, 0], end + beyond, rtol=1e-5)
    below = (0.0 - np.log1p(x[:, 0].min())) / std[0]  # a negative value is clamped to 0
    np.testing.assert_allclose(sc.transform(far)[0, 0], -end + below, rtol=1e-5)
    np.testing.assert_allclose(
        sc.transform(far)[1, 1:],
        z[:, 1:].max(0) + (far[1, 1:] - x[:, 1:].max(0)) / std[1:],
        rtol=1e-5,
    )
    # A feature constant on the training rows is centred only, as the standard scaler does.
    const = dataset.fit_scaler(np.full((50, 1), 3.0), ("syn_flag_cnt",), kind="quantile")
    np.testing.assert_allclose(const.transform(np.array([[3.0], [5.0], [1.0]]))[:, 0], [0, 2, -2])
    # A monotone change of units changes nothing (log1p is not needed).
    np.testing.assert_allclose(
        dataset.fit_scaler(x * 1000.0, features, kind="quantile").transform(x * 1000.0),
        z,
        atol=1e-6,
    )
    text = json.dumps(sc.to_json())
    assert dataset.Scaler.from_json(json.loads(text)) == sc
    assert set(sc.arrays()) >= {"knots_x_FxK", "knots_z_FxK"}
    assert "knots_x_FxK" not in dataset.fit_scaler(x, features).arrays()  # standard: no knots
    # Chunked on the host: the same numbers whatever the number of rows.
    big = np.repeat(x, 5, axis=0)
    np.testing.assert_array_equal(sc.transform(big)[::5], z)


def test_per_file_split_cuts_every_file_in_time():
    file_N = np.repeat([0, 1, 2], [10, 20, 5])
    split = dataset.per_file_split(file_N, (0.6, 0.2, 0.2))
    for f in range(3):
        np.testing.assert_array_equal(
            split[file_N == f], dataset.temporal_split(int((file_N == f).sum()), (0.6, 0.2, 0.2))
        )
    # One file: the same as the temporal split of the whole list.
    np.testing.assert_array_equal(
        dataset.per_file_split(np.zeros(37, int)), dataset.temporal_split(37)
    )


def test_scaler_runs_the_same_in_jax():
    """The exported scorer scales with the same function (``xp=jnp``) in float32."""
    import jax.numpy as jnp

    rng = np.random.default_rng(2)
    features = ("flow_duration", "syn_flag_cnt")
    x = np.stack([rng.exponential(1e5, 500), rng.integers(0, 5, 500)], axis=1)
    kinds = (("standard", 0.0), ("log", 0.0), ("robust", 2.5), ("minmax", 0.0), ("quantile", 0.0))
    for kind, clip in kinds:
        sc = dataset.fit_scaler(x, features, kind=kind, clip=clip)
        z_np = sc.transform(x)
        z_jnp = np.asarray(sc.transform(jnp.asarray(x, jnp.float32), xp=jnp))
        np.testing.assert_allclose(z_jnp, z_np, rtol=1e-5, atol=1e-5)


def test_log_scaler_takes_log1p_of_every_non_negative_magnitude():
    """``log``: flags and ratios too (``standard`` only the heavy-tailed kinds); never a
    port or a protocol code."""
    features = ("dst_port", "flow_duration", "syn_flag_cnt", "down_up_ratio")
    x = np.random.default_rng(5).exponential(3.0, size=(400, 4))
    log = dataset.fit_scaler(x, features, kind="log")
    assert log.log == (False, True, True, True)
    assert dataset.fit_scaler(x, features).log == (False, True, False, False)
    z = np.log1p(x[:, 3])
    np.testing.assert_allclose(
        log.transform(x)[:, 3], (z - z.mean()) / z.std(), rtol=1e-4, atol=1e-5
    )


def test_port_categories_and_their_contributions_fold_back():
    """The most frequent ports are one-hot columns after the features (dst_port's own
    column zeroed), other ports a range each; contributions of those columns fold back
    into dst_port, in numpy and in jax alike."""
    import jax.numpy as jnp

    features = ("dst_port", "flow_duration")
    port = np.array([443, 443, 80, 80, 80, 53, 22, 8080, 60000, 443], np.float64)
    x = np.stack([port, np.arange(10.0)], axis=1)
    sc = dataset.fit_scaler(x, features, "quantile", ports=2)
    assert sc.ports == (80.0, 443.0) and sc.width == 2 + 2 + 3  # ties: the lower port first
    assert dataset.Scaler.from_json(json.loads(json.dumps(sc.to_json()))) == sc
    z = sc.transform(x)
    np.testing.assert_array_equal(z[:, 0], 0.0)  # the number itself no longer counts
    onehot = z[:, 2:]
    expected = [  # 80, 443, other < 1024, other registered, other ephemeral
        [0, 1, 0, 0, 0], [0, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 0, 0, 0, 0], [1, 0, 0, 0, 0],
        [0, 0, 1, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1], [0, 1, 0, 0, 0],
    ]  # fmt: skip
    np.testing.assert_array_equal(onehot, expected)
    np.testing.assert_allclose(
        z[:, 1], dataset.fit_scaler(x, features, "quantile").transform(x)[:, 1]
    )
    np.testing.assert_allclose(
        np.asarray(sc.transform(jnp.asarray(x, jnp.float32), xp=jnp)), z, atol=1e-6
    )
    c = np.arange(7.0)[None] + 1.0  # one window's contributions of the 7 columns
    np.testing.assert_array_equal(sc.fold(c), [[1 + 3 + 4 + 5 + 6 + 7, 2]])
    np.testing.assert_array_equal(np.asarray(sc.fold(jnp.asarray(c), xp=jnp)), sc.fold(c))
    # No dst_port among the features (the 2018 files): nothing to categorise.
    assert dataset.fit_scaler(x[:, 1:], features[1:], ports=2).ports == ()


def test_comma_separated_list_keeps_the_given_order(shared_data):
    a = str(shared_data / "cicids2017/tuesday_head.parquet")
    b = str(shared_data / "cicids2017/monday_head.parquet")
    assert dataset.list_parquet(f"{a},{b}") == [a, b]
    flows = dataset.load_flows(f"{a},{b}")
    assert flows.files == (a, b) and flows.file_N[0] == 0 and flows.file_N[-1] == 1


def test_label_encoded_copies_are_refused(tmp_path):
    path = tmp_path / "encoded.parquet"
    pq.write_table(pa.table({"Flow Duration": [1.0, 2.0], "Label": ["0", "1"]}), path)
    with pytest.raises(ValueError, match="labels are numbers"):
        dataset.load_flows(str(path))


def test_minmax_refuses_clipping():
    with pytest.raises(ValueError, match="not minmax"):
        dataset.fit_scaler(np.ones((3, 1)), ("flow_duration",), kind="minmax", clip=1.0)


def test_a_fifo_among_the_inputs_is_refused_before_it_blocks(tmp_path):
    # Found by probing issue 16: training on a FIFO named .parquet hung until killed.
    os.mkfifo(tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="not a regular file"):
        dataset.list_parquet(str(tmp_path))


def test_blockwise_transform_is_bit_identical_and_works_in_place(monkeypatch):
    """Row blocks (``BLOCK_ROWS``), in place or not: the whole-table float64 pass's bits."""
    rng = np.random.default_rng(5)
    features = ("flow_duration", "syn_flag_cnt", "tot_fwd_pkts")
    x = (rng.lognormal(2, 3, (1000, 3)) * (rng.random((1000, 3)) > 0.3)).astype(np.float32)
    x[::7, 0] = -5.0
    monkeypatch.setattr(dataset, "BLOCK_ROWS", 64)  # many blocks and a ragged last one
    for kind, clip in (("standard", 0.0), ("robust", 2.5), ("minmax", 0.0), ("quantile", 3.0)):
        sc = dataset.fit_scaler(x[:500], features, kind=kind, clip=clip)
        arrays = {k: np.asarray(v) for k, v in sc.arrays(np.float64).items()}
        whole = dataset.scale(x, **arrays)
        np.testing.assert_array_equal(sc.transform(x).view(np.uint32), whole.view(np.uint32))
        y = x.copy()
        assert sc.transform(y, out=y) is y
        np.testing.assert_array_equal(y.view(np.uint32), whole.view(np.uint32))
    with pytest.raises(ValueError, match="float32"):
        sc.transform(x, out=np.empty(x.shape, np.float64))


def test_fit_scaler_on_rows_is_the_fit_on_a_copy_of_them():
    """``rows=`` reads column blocks of the table: the same statistics, bit for bit, as
    the fit on ``x[rows]`` (numpy sums a lone column pairwise, hence blocks of >= 2)."""
    rng = np.random.default_rng(6)
    features = schema.FEATURES[:9]  # 9 columns: the last block would be one column alone
    x = (rng.lognormal(2, 3, (3001, 9)) * (rng.random((3001, 9)) > 0.3)).astype(np.float32)
    rows = rng.random(3001) > 0.4
    x64 = x[rows].astype(np.float64)
    for kind in dataset.SCALERS:
        sc = dataset.fit_scaler(x, features, kind, rows=rows)
        assert sc == dataset.fit_scaler(x[rows], features, kind)
        assert sc == dataset.fit_scaler(x, features, kind, rows=np.flatnonzero(rows))
        if kind == "standard":  # the whole-table axis-0 formula
            log = np.array([schema.KIND[f] in schema.LOG_KINDS for f in features])
            t = np.where(log, np.log1p(np.maximum(x64, 0.0)), x64)
            assert sc.mean == tuple(t.mean(axis=0).tolist())
            assert sc.std == tuple(np.where(t.std(axis=0) > 1e-12, t.std(axis=0), 1.0).tolist())
    with pytest.raises(ValueError, match="zero rows"):
        dataset.fit_scaler(x, features, rows=np.zeros(3001, bool))


def test_loading_in_small_blocks_is_cleaning_each_whole_file(shared_data, monkeypatch):
    """``load_flows`` reads, cleans and copies ``BLOCK_FLOWS`` rows at a time into one
    table: with blocks of 1,000 rows (drops, repeated labels and label orders differing
    between blocks and files) the table, labels, classes and reports equal cleaning each
    whole file at once."""
    rels = [
        "cicids2017/stratified_sample_all_days.parquet",  # raw 2017 names, inf/NaN, duplicate
        "csecicids2018/random_sample_all_days.parquet",  # 2018 short names
        "cicids2017_improved/improved_random_sample_non_wednesday.parquet",
    ]
    paths = [str(shared_data / r) for r in rels]
    monkeypatch.setattr(dataset, "BLOCK_FLOWS", 1000)
    flows = dataset.load_flows(paths)
    whole = [clean.canonicalize(pq.read_table(p), source=p) for p in paths]
    features = [f for f in schema.FEATURES if all(f in t.column_names for t, _ in whole)]
    assert flows.features == tuple(features)
    expect_x = np.concatenate(
        [np.stack([t.column(f).to_numpy() for f in features], 1) for t, _ in whole]
    ).astype(np.float32)
    np.testing.assert_array_equal(flows.x_NxF, expect_x)
    labels = [s for t, _ in whole for s in t.column(schema.LABEL).to_pylist()]
    assert [flows.classes[c] for c in flows.label_N] == labels
    assert flows.classes[0] == schema.BENIGN and sorted(flows.classes[1:]) == list(
        flows.classes[1:]
    )
    np.testing.assert_array_equal(
        flows.file_N, np.repeat(np.arange(3), [t.num_rows for t, _ in whole])
    )
    assert [r.to_json() for r in flows.reports] == [r.to_json() for _, r in whole]
    assert flows.x_NxF.ctypes.data % dataset.ALIGN == 0
