"""Shares of the day list (--share_data): together they are the whole list, and what they
agree on (classes, split, scaler) is what one host computes from all of it."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from lstmae_jax.data import dataset, shares
from lstmae_jax.synthetic import timeline, writers


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    """Three generated day files of 32,768-row groups (the converter's), unequal sizes."""
    root = tmp_path_factory.mktemp("shares")
    sizes = (70_000, 40_000, 100_000)
    return [
        writers.write(timeline.generate(n, seed=i), str(root / f"day{i}.parquet"))
        for i, n in enumerate(sizes)
    ]


def _load_shares(days, num):
    plan = shares.plan(days, num)
    parts = [dataset.load_flows(days, row_groups=groups) for groups in plan]
    classes = shares.union_classes([p.classes for p in parts])
    return [shares.relabel(p, classes) for p in parts]


def _in_list_order(parts, per_part):
    """Rows of every share (``per_part[share]``: one value per row) put back in day-list
    order by their pieces."""
    rows = []
    for p, values in zip(parts, per_part, strict=True):
        at = 0
        for f, g, n in p.pieces:
            rows.append(((f, g), values[at : at + n]))
            at += n
    return np.concatenate([v for _, v in sorted(rows, key=lambda r: r[0])])


def test_shares_are_the_whole_list_balanced(days):
    whole = dataset.load_flows(days)
    num_groups = sum(pq.ParquetFile(d).metadata.num_row_groups for d in days)
    for num in (1, 2, 3, 4):
        parts = _load_shares(days, num)
        got = sorted((f, g) for p in parts for f, g, _ in p.pieces)
        assert got == sorted(set(got)) and len(got) == num_groups  # every group once
        np.testing.assert_array_equal(_in_list_order(parts, [p.x_NxF for p in parts]), whole.x_NxF)
        assert all(p.classes == whole.classes for p in parts)
        np.testing.assert_array_equal(
            _in_list_order(parts, [p.label_N for p in parts]), whole.label_N
        )
        raw = [sum(r.rows_in for r in p.reports) for p in parts]
        assert max(raw) - min(raw) <= 2 * 32_768  # balanced to a row group or two
        if num == 2:  # dealt: each share holds rows of every day (of >= 2 row groups)
            assert all(set(p.file_N.tolist()) == {0, 1, 2} for p in parts)


def test_more_processes_than_row_groups_is_an_error_naming_the_data(days):
    with pytest.raises(ValueError, match=r"3 row groups with rows.*fewer than the processes"):
        shares.plan(days[:1], 5)  # 70,000 rows: 3 row groups


def test_empty_row_groups_are_not_dealt_as_shares(days, tmp_path):
    """A file of no rows (one empty row group) counts for no share: every process still
    gets rows, and a list with fewer filled groups than processes is refused."""
    empty = str(tmp_path / "empty.parquet")
    pq.write_table(pq.read_table(days[0]).slice(0, 0), empty)
    assert pq.ParquetFile(empty).metadata.num_row_groups == 1
    plan = shares.plan([empty, days[0]], 3)  # 3 filled groups for 3 shares
    assert plan[0][0] == [0]  # the empty group, with share 0
    assert all(sum(len(g) for g in groups[1:]) == 1 for groups in plan)
    with pytest.raises(ValueError, match="0 row groups with rows"):
        shares.plan([empty], 1)


def _split_of_shares(parts, split, fractions):
    pieces = [p.pieces for p in parts]
    return [shares.split_codes(split, fractions, pieces, s) for s in range(len(parts))]


@pytest.mark.parametrize("split", ["temporal", "per_file"])
def test_each_share_gets_the_split_its_rows_get_on_one_host(days, split):
    whole = dataset.load_flows(days)
    fractions = (0.5, 0.3, 0.2)
    want = (
        dataset.temporal_split(len(whole), fractions)
        if split == "temporal"
        else dataset.per_file_split(whole.file_N, fractions)
    )
    parts = _load_shares(days, 3)
    got = _split_of_shares(parts, split, fractions)
    np.testing.assert_array_equal(_in_list_order(parts, [codes for codes, _ in got]), want)
    for p, (_, piece_N) in zip(parts, got, strict=True):  # the segment key: its piece
        assert np.array_equal(np.bincount(piece_N), [n for *_, n in p.pieces])
    with pytest.raises(ValueError, match="random split"):
        shares.split_codes("random", fractions, [p.pieces for p in parts], 0)


def _rank_interval(sorted_column, value):
    """(share of values < value, share <= value)."""
    n = len(sorted_column)
    return (
        np.searchsorted(sorted_column, value, "left") / n,
        np.searchsorted(sorted_column, value, "right") / n,
    )


@pytest.mark.parametrize("kind", ["standard", "minmax", "robust", "quantile"])
def test_the_merged_scaler_is_the_one_host_fit(days, kind):
    """Mean, std, min and max exactly (float64 rounding); quantiles (robust's, the quantile
    scaler's knots) to within two sketch steps in rank: each merged quantile lies where
    the whole training column's empirical distribution reaches that probability."""
    whole = dataset.load_flows(days)
    rows = dataset.temporal_split(len(whole)) == 0  # training rows
    one = dataset.fit_scaler(whole.x_NxF, whole.features, kind, rows=rows)
    parts = _load_shares(days, 3)
    stats = [
        shares.statistics(p.x_NxF, p.features, kind, codes == 0)
        for p, (codes, _) in zip(
            parts, _split_of_shares(parts, "temporal", (0.6, 0.2, 0.2)), strict=True
        )
    ]
    merged = shares.merge(stats, whole.features, kind, 0.0)
    assert merged.log == one.log and merged.kind == one.kind
    if kind in ("standard", "minmax"):
        np.testing.assert_allclose(merged.mean, one.mean, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(merged.std, one.std, rtol=1e-9, atol=1e-12)
        return
    if kind == "quantile":  # the slope beyond the knots: the exact std
        np.testing.assert_allclose(merged.std, one.std, rtol=1e-9)
    else:  # robust's scale is the IQR / 1.349, of sketched quartiles
        np.testing.assert_allclose(merged.std, one.std, rtol=1e-2)
    step = 1.0 / (shares.SKETCH_POINTS - 1)
    train = whole.x_NxF[rows].astype(np.float64)
    for j, name in enumerate(whole.features):
        col = train[:, j]
        if kind == "quantile":
            probs = np.linspace(0, 1, dataset.QUANTILE_KNOTS)
            values = merged.knots_x[j]
        else:
            if merged.log[j]:
                col = np.log1p(np.maximum(col, 0.0))
            probs = [0.5]
            values = [merged.mean[j]]  # the median is the robust scaler's centre
        col = np.sort(col)
        for q, v in zip(probs, values, strict=True):
            below, at_or_below = _rank_interval(col, v)
            assert below - 2 * step <= q <= at_or_below + 2 * step, (name, q, v, below)
