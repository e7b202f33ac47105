"""Windows are exact, never cross files or splits; scaler sees train only; resume is exact."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstmae_jax.data import dataset, windows
from lstmae_jax.ingest import schema


def _flows(labels_per_file, num_features=3, seed=0):
    rng = np.random.default_rng(seed)
    label = np.concatenate([np.asarray(lab, np.int32) for lab in labels_per_file])
    n = len(label)
    return dataset.Flows(
        x_NxF=rng.exponential(100.0, (n, num_features)).astype(np.float32),
        label_N=label,
        file_N=np.repeat(
            np.arange(len(labels_per_file), dtype=np.int32), [len(x) for x in labels_per_file]
        ),
        classes=("Benign", "DDoS"),
        features=("flow_duration", "tot_fwd_pkts", "syn_flag_cnt")[:num_features],
        files=tuple(f"f{i}" for i in range(len(labels_per_file))),
        reports=(),
    )


@given(
    sizes=st.lists(st.integers(0, 30), min_size=1, max_size=5),
    window=st.integers(1, 6),
    stride=st.integers(1, 3),
)
@settings(max_examples=60, deadline=None)
def test_window_i_is_rows_i_to_i_plus_t(sizes, window, stride):
    seg = np.repeat(np.arange(len(sizes)), sizes)
    starts = windows.window_starts(seg, window, stride)
    expected = []
    offset = 0
    for size in sizes:
        expected += list(range(offset, offset + size - window + 1, stride))
        offset += size
    assert starts.tolist() == expected
    x = np.arange(len(seg), dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    got = windows.gather(x, starts, window)
    assert got.shape == (len(starts), window, 2)
    for w, s in enumerate(starts):
        assert np.array_equal(got[w, :, 0], np.arange(s, s + window))
        assert len(set(seg[s : s + window])) == 1  # never crosses a segment


def test_window_labels_last_flow_and_any_attack():
    label = np.array([0, 0, 1, 0, 0, 0, 1])
    starts = np.array([0, 1, 2, 3, 4])
    last, any_attack = windows.window_labels(label, starts, 3)
    assert last.tolist() == [1, 0, 0, 0, 1]
    assert any_attack.tolist() == [True, True, True, False, True]


def test_temporal_build_no_window_spans_splits_or_files():
    flows = _flows([[0] * 40, [0] * 30 + [1] * 10 + [0] * 20])
    w = windows.build(flows, window=4, split="temporal", fractions=(0.5, 0.25, 0.25))
    split_N = dataset.temporal_split(len(flows), (0.5, 0.25, 0.25))
    for code, name in enumerate(dataset.SPLITS):
        for s in w.starts[name]:
            assert set(split_N[s : s + 4]) == {code}
            assert len(set(flows.file_N[s : s + 4])) == 1
    # The scaler is fitted on training rows only.
    train_rows = windows.rows_covered(len(flows), w.starts["train"], 4)
    ref = dataset.fit_scaler(flows.x_NxF[train_rows], flows.features)
    assert w.scaler == ref
    assert train_rows.sum() == 50  # rows 0..49, none from val/test


def test_train_benign_only_and_random_split():
    flows = _flows([[0] * 50 + [1] * 10 + [0] * 40])
    w = windows.build(
        flows, window=3, split="temporal", fractions=(0.7, 0.1, 0.2), train_benign_only=True
    )
    assert not w.any_attack["train"].any()
    assert len(w.starts["train"]) > 0
    r = windows.build(flows, window=1, split="random", fractions=(0.6, 0.2, 0.2), seed=3)
    assert sum(len(r.starts[s]) for s in dataset.SPLITS) == len(flows)
    allstarts = np.concatenate([r.starts[s] for s in dataset.SPLITS])
    assert len(np.unique(allstarts)) == len(flows)  # a partition
    assert (r.label["test"] == 1).sum() == 2  # 10 attacks -> 6/2/2


def test_build_errors():
    flows = _flows([[0] * 5])
    with pytest.raises(ValueError, match="no training windows"):
        windows.build(flows, window=10)
    with pytest.raises(ValueError, match="split must be"):
        windows.build(flows, window=1, split="nope")


def _windows_by_hand(flows, split_N, T):
    """What the cross-day benchmarks assembled themselves: every window of T rows of one
    file and one split, labels of its flows, the scaler fitted on the training rows."""
    n, label = len(flows), flows.label_N
    starts = {}
    for code, name in enumerate(dataset.SPLITS):
        starts[name] = np.array(
            [
                s
                for s in range(n - T + 1)
                if (split_N[s : s + T] == code).all() and len(set(flows.file_N[s : s + T])) == 1
            ],
            np.int64,
        )
    train_rows = np.zeros(n, bool)
    for s in starts["train"]:
        train_rows[s : s + T] = True
    scaler = dataset.fit_scaler(flows.x_NxF[train_rows], flows.features)
    return windows.Windowed(
        x_NxF=flows.x_NxF,
        label_N=label,
        window=T,
        starts=starts,
        label={k: label[v + T - 1] for k, v in starts.items()},
        any_attack={
            k: np.array([(label[s : s + T] != 0).any() for s in v], bool) for k, v in starts.items()
        },
        classes=flows.classes,
        features=flows.features,
        scalers=(scaler,),
    )


def _assert_same_windowed(a, b):
    assert (a.window, a.classes, a.features, a.scalers) == (
        b.window,
        b.classes,
        b.features,
        b.scalers,
    )
    assert np.array_equal(a.x_NxF, b.x_NxF) and np.array_equal(a.label_N, b.label_N)
    for s in dataset.SPLITS:
        for got, want in ((a.starts, b.starts), (a.label, b.label), (a.any_attack, b.any_attack)):
            assert got[s].dtype == want[s].dtype and np.array_equal(got[s], want[s]), s


@pytest.mark.parametrize("T", [1, 3])
def test_given_split_is_the_hand_built_windowed(T):
    # Cross-day: file 0 trains (early and late rows) and validates, its attack run is in no
    # split (-1); file 1 is test.
    flows = _flows([[0] * 25 + [1] * 5 + [0] * 10, [0] * 10 + [1] * 10 + [0] * 10])
    split_N = np.array([0] * 20 + [1] * 5 + [-1] * 5 + [1] * 4 + [0] * 6 + [2] * 30, np.int8)
    w = windows.build(flows, window=T, split_N=split_N)
    _assert_same_windowed(w, _windows_by_hand(flows, split_N, T))
    for code, name in enumerate(dataset.SPLITS):  # inside (file, split) segments
        for s in w.starts[name]:
            assert set(split_N[s : s + T]) == {code} and len(set(flows.file_N[s : s + T])) == 1
    # The scaler saw the training rows only: rows 0..19 and 34..39.
    train_rows = windows.rows_covered(len(flows), w.starts["train"], T)
    assert np.flatnonzero(train_rows).tolist() == [*range(20), *range(34, 40)]
    # A split given per row is the temporal split when it is the temporal split.
    fr = (0.5, 0.2, 0.3)
    _assert_same_windowed(
        windows.build(flows, window=T, split_N=dataset.temporal_split(len(flows), fr)),
        windows.build(flows, window=T, split="temporal", fractions=fr),
    )


def test_given_split_errors():
    flows = _flows([[0] * 10])
    with pytest.raises(ValueError, match="takes no split_N"):
        windows.build(flows, window=1, split="random", split_N=np.zeros(10, np.int8))
    with pytest.raises(ValueError, match=r"one integer split code per flow, shape \(10,\)"):
        windows.build(flows, window=1, split_N=np.zeros(9, np.int8))
    with pytest.raises(ValueError, match=r"got \[3\]"):
        windows.build(flows, window=1, split_N=np.full(10, 3))
    with pytest.raises(ValueError, match="split given per row"):
        windows.build(flows, window=1, split_N=np.full(10, 2))


@pytest.mark.parametrize("T", [1, 4])
def test_gather_cuts_the_same_windows_on_device_under_jit(T):
    import jax

    x = np.arange(60, dtype=np.float32).reshape(20, 3)
    starts = np.array([0, 5, len(x) - T], np.int32)  # the last window too
    got = jax.jit(lambda t, s: windows.gather(t, s, T))(jax.numpy.asarray(x), starts)
    assert np.array_equal(np.asarray(got), windows.gather(x, starts, T))


def test_all_attack_training_data_says_no_benign_windows():
    # Stage 1 trains on benign windows only: with none, the cause is the labels, not a
    # too-short stretch of rows (the message used to name "the longest training stretch").
    flows = _flows([[1] * 3000])
    with pytest.raises(ValueError, match=r"no benign training windows: all 1797 training windows"):
        windows.build(flows, window=4, train_benign_only=True)


def test_batch_order_resume_is_exact():
    order = windows.BatchOrder(num_items=103, batch_size=10, seed=7)
    assert order.steps_per_epoch == 10
    full = [order.next() for _ in range(25)]
    resumed = windows.BatchOrder(num_items=103, batch_size=10, seed=7)
    for _ in range(13):
        resumed.next()
    saved = resumed.state()
    assert saved == {"epoch": 1, "step": 3}
    fresh = windows.BatchOrder(num_items=103, batch_size=10, seed=7)
    fresh.restore(saved)
    rest = [fresh.next() for _ in range(12)]
    for a, b in zip(full[13:], rest, strict=True):
        assert np.array_equal(a, b)
    # Each epoch is a permutation prefix: no item twice within an epoch.
    epoch0 = np.concatenate(full[:10])
    assert len(np.unique(epoch0)) == 100
    assert not np.array_equal(full[0], full[10])  # reshuffled per epoch
    with pytest.raises(ValueError, match="cannot fill one batch"):
        windows.BatchOrder(num_items=5, batch_size=10)


def test_eval_batches_cover_everything_once():
    seen = []
    for idx, valid in windows.eval_batches(23, 8):
        assert idx.shape == (8,) and valid.shape == (8,)
        seen += idx[valid].tolist()
    assert seen == list(range(23))


def test_real_contiguous_day_windows(shared_data):
    flows = dataset.load_flows(str(shared_data / "cicids2017_friday_ddos_day"))
    w = windows.build(flows, window=10, split="temporal", train_benign_only=True)
    # The first 60% of the day: the first 18,588-flow run is benign, DDoS starts after it.
    assert not w.any_attack["train"].any()
    assert w.any_attack["test"].mean() > 0.3
    x = windows.gather(w.x_NxF, w.starts["test"][:4], 10)
    assert x.shape == (4, 10, len(flows.features)) and np.isfinite(x).all()
    assert set(flows.features) <= set(schema.FEATURES)


def test_last_attack_label():
    label = np.array([0, 2, 0, 0, 1, 0, 0, 0])
    starts = np.array([0, 1, 2, 4, 5])
    assert windows.last_attack_label(label, starts, 3).tolist() == [2, 2, 1, 1, 0]
    # Against the definition, window by window, on random labels, starts and lengths.
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 50))
        t = int(rng.integers(1, min(n, 12) + 1))
        label = (rng.integers(0, 5, n) * (rng.random(n) < rng.random())).astype(np.int32)
        starts = np.sort(rng.choice(n - t + 1, int(rng.integers(0, n - t + 2)), replace=False))
        want = [next((c for c in label[s : s + t][::-1] if c), 0) for s in starts]
        assert windows.last_attack_label(label, starts, t).tolist() == want


def test_the_table_is_not_scaled_and_every_representation_gets_a_scaler():
    """The windows keep the loaded table (the models scale on the device); one scaler per
    kind asked for, each fitted on the training rows, in order."""
    flows = _flows([[0] * 40, [0] * 30])
    raw = flows.x_NxF.copy()
    w = windows.build(flows, window=4, scaler_kinds=("quantile", "log"))
    assert w.x_NxF is flows.x_NxF
    np.testing.assert_array_equal(flows.x_NxF, raw)
    rows = windows.rows_covered(len(flows), w.starts["train"], 4)
    assert w.scalers == tuple(
        dataset.fit_scaler(flows.x_NxF[rows], flows.features, k) for k in ("quantile", "log")
    )
    assert w.scaler == w.scalers[0]
    again = windows.build(flows, window=4, scalers=w.scalers[1:])  # given: reused as they are
    assert again.scalers == w.scalers[1:]
