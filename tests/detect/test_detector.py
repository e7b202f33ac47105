"""The stage-1 detector: members, p-value tables, fusion, contributions, JSON."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstmae_jax.detect import anomaly, detector, metrics


def _surprisal(table, s):
    t = detector.table(table)
    a = {
        "table_S": np.asarray(t[0], np.float32),
        "table_count_S": np.asarray(t[1], np.float32),
        "table_n": np.float32(t[2]),
        "tail_scale": np.float32(t[3]),
    }
    return np.asarray(detector.surprisal(jnp.asarray(s, jnp.float32), **a)), t


def test_surprisal_is_the_conformal_p_value_and_goes_on_past_the_table():
    rng = np.random.default_rng(0)
    cal = rng.exponential(size=300).astype(np.float32)  # the table is float32
    s = np.r_[rng.exponential(size=200).astype(np.float32), cal[:20]]  # ties with entries too
    got, (table, _, n, scale) = _surprisal(cal, s)
    assert len(table) == detector.TABLE and n == 300 and scale > 0
    want = -np.log((1 + (cal[None, :] >= s[:, None]).sum(1)) / 301)
    at_entry = np.isin(s, cal)  # exact at the validation scores, ...
    np.testing.assert_allclose(got[at_entry], want[at_entry], rtol=1e-5, atol=1e-6)
    # ... between them within one rank (the count is read linearly between entries).
    lower = -np.log((2 + (cal[None, :] >= s[:, None]).sum(1)) / 301)
    inside = s <= cal.max()
    assert np.all((got[inside] >= lower[inside] - 1e-5) & (got[inside] <= want[inside] + 1e-5))
    # Continuous at the largest and growing linearly past it: no ties out there.
    top = np.float32(cal.max())
    far = top + np.array([0.0, 1.0, 2.0], np.float32)
    tail, _ = _surprisal(cal, far)
    assert tail[0] == pytest.approx(-np.log(2 / 301), rel=1e-4)
    np.testing.assert_allclose(np.diff(tail), 1.0 / np.float32(scale), rtol=1e-4)
    eps = _surprisal(cal, np.array([top * (1 + 1e-6)], np.float32))[0]
    assert eps[0] == pytest.approx(tail[0], abs=1e-3)


def test_a_table_of_many_scores_is_exact_in_the_tail_and_close_in_the_bulk():
    rng = np.random.default_rng(1)
    cal = rng.normal(size=40_000).astype(np.float32)
    s = np.r_[np.linspace(-2, 3, 50, dtype=np.float32), np.sort(cal)[-2000:][::97]]
    got, (table, _, n, _) = _surprisal(cal, s)
    assert len(table) == detector.TABLE and n == 40_000
    count = (cal[None, :] >= s[:, None]).sum(1)
    want = -np.log((1 + count) / (n + 1))
    tail = count <= detector.TABLE // 2  # every score kept there: exact at them, ...
    exact = tail & np.isin(s, cal)
    np.testing.assert_allclose(got[exact], want[exact], rtol=1e-5)
    lower = -np.log((2 + count) / (n + 1))  # ... within a rank between them
    assert np.all((got[tail] >= lower[tail] - 1e-5) & (got[tail] <= want[tail] + 1e-5))
    np.testing.assert_allclose(got[~tail], want[~tail], atol=0.006)  # counts within 0.5%


def test_a_tail_of_ties_still_has_a_scale():
    _, _, n, scale = detector.table(np.zeros(50))
    assert n == 50 and scale > 0


def _two_members(rng, w=400):
    score = np.abs(rng.normal(size=(2, w))).astype(np.float32) + 0.1
    contrib = rng.uniform(size=(2, w, 4)).astype(np.float32)
    contrib *= (score / contrib.sum(-1))[..., None]  # each member's sum to its score
    det = detector.Detector(
        (detector.Member("quantile:sse", 0, 0), detector.Member("log:rarity", -1, 1)), "min", 4
    )
    det = detector.with_tables(det, score + 0.05 * rng.normal(size=score.shape))
    return det, score, contrib


@pytest.mark.parametrize("fusion", detector.FUSIONS)
def test_fusion_and_its_contributions(fusion):
    rng = np.random.default_rng(2)
    det, score, contrib = _two_members(rng)
    det = dataclasses.replace(det, fusion=fusion)
    s, c = jax.jit(lambda a, b, arr: detector.fuse(det.spec(), arr, a, b))(
        score, contrib, det.arrays()
    )
    s, c = np.asarray(s), np.asarray(c)
    L = np.stack(
        [
            _surprisal(np.asarray(m.table[: m.table_n]), score[i])[0]
            for i, m in enumerate(det.members)
        ]
    )
    np.testing.assert_allclose(s, L.max(0) if fusion == "min" else L.sum(0), rtol=1e-4)
    np.testing.assert_allclose(c.sum(-1), s, rtol=1e-3)  # contributions sum to the score
    if fusion == "min":  # the member that set the score gives the contributions' pattern
        best = L.argmax(0)
        pattern = contrib[best, np.arange(len(best))]
        np.testing.assert_allclose(
            c / c.sum(-1, keepdims=True), pattern / pattern.sum(-1, keepdims=True), rtol=1e-4
        )


def test_one_member_is_its_own_score():
    det = detector.Detector((detector.Member("quantile:sse", 0, 0),), "min", 3)
    assert not det.fused and det.spec()[1] is None and "table_S" not in det.arrays()[0]
    s = jnp.asarray([[1.0, 2.0]])
    c = jnp.ones((1, 2, 3))
    got, gc = detector.fuse(det.spec(), det.arrays(), s, c)
    np.testing.assert_array_equal(np.asarray(got), [1.0, 2.0])
    np.testing.assert_array_equal(np.asarray(gc), np.ones((2, 3)))


def test_the_fused_threshold_keeps_its_false_positive_rate():
    """Tables and threshold from the same benign validation windows: a fresh benign window
    is exchangeable with them, so the calibrated 1% holds out of sample."""
    rng = np.random.default_rng(3)
    cov = np.array([[1.0, 0.6, 0.2], [0.6, 1.0, 0.4], [0.2, 0.4, 1.0]])

    def draw(n):  # three dependent members of different scales
        z = rng.multivariate_normal(np.zeros(3), cov, size=n)
        return np.stack([np.exp(z[:, 0]), z[:, 1] ** 2, 10 * np.abs(z[:, 2])], axis=1)

    members = tuple(detector.Member(f"log:{k}", 0, 0) for k in ("sse", "latent", "rarity"))
    det = detector.Detector(members, "min", 1)
    val = draw(3000)
    det = detector.with_tables(det, val.T)
    thr = metrics.calibrate(
        "fpr", detector.fused_scores(det, val).astype(np.float64), target_fpr=0.01
    )
    fresh = detector.fused_scores(det, draw(50_000))
    assert 0.006 <= float(np.mean(fresh > thr.value)) <= 0.015


def test_rarity_and_latent_members():
    rng = np.random.default_rng(4)
    b, t, f, r, ell = 6, 3, 4, 20, 5
    xs = [jnp.asarray(rng.normal(size=(b, t, f)), jnp.float32) for _ in range(2)]
    z = jnp.asarray(rng.normal(size=(1, b, ell)), jnp.float32)
    err = jnp.asarray(rng.uniform(size=(1, b, f)), jnp.float32)
    refs = rng.normal(size=(r, ell)).astype(np.float32)
    mu, prec, _ = anomaly.fit_gaussian(rng.normal(size=(100, f)), "mahalanobis")
    det = detector.Detector(
        (
            detector.Member("log:latent", 0, 0, references_RxL=detector.encode(refs)),
            detector.Member("quantile:rarity", -1, 1, tuple(mu), tuple(map(tuple, prec))),
        ),
        "min",
        f,
    )
    scalers = [{"log_F": np.zeros(f, np.float32)}] * 2  # no port categories: nothing folds
    s, c = map(np.asarray, detector.member_scores(det.spec(), det.arrays(), scalers, xs, z, err))
    d = np.linalg.norm(np.asarray(z[0])[:, None] - refs[None], axis=-1)
    np.testing.assert_allclose(
        s[0], np.sort(d, axis=1)[:, : detector.NEIGHBOURS].mean(1), rtol=1e-4
    )
    x1 = np.asarray(xs[1]) - mu
    want = np.einsum("btf,fg,btg->bt", x1, prec, x1).mean(1)
    np.testing.assert_allclose(s[1], want, rtol=1e-4)
    np.testing.assert_allclose(c.sum(-1), s, rtol=1e-4)  # both sum to their scores


def test_outputs_compose_the_representations_the_networks_and_the_members():
    rng = np.random.default_rng(5)
    b, t, f = 4, 2, 3
    scalers = [
        {"log_F": np.zeros(f, np.float32), "mean_F": np.zeros(f, np.float32),
         "std_F": np.full(f, s, np.float32), "clip": np.float32(0)}
        for s in (1.0, 2.0)
    ]  # fmt: skip

    def forward(x_KxBxTxF):  # "networks" that halve their input; the code is its mean
        return x_KxBxTxF.mean(axis=2), 0.5 * x_KxBxTxF

    det = detector.Detector(
        (detector.Member("standard:sse", 0, 0), detector.Member("log:mae", 1, 1)), "min", f
    )
    x = jnp.asarray(rng.normal(size=(b, t, f)), jnp.float32)
    out = detector.outputs(forward, x, scalers, det.spec(), det.arrays())
    e0 = np.abs(0.5 * np.asarray(x)).mean(1)
    np.testing.assert_allclose(out["members_BxM"][:, 0], (e0**2).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(out["members_BxM"][:, 1], (e0 / 2).mean(-1), rtol=1e-5)
    # Before the tables are fitted the score is the first member's.
    np.testing.assert_allclose(out["score_B"], out["members_BxM"][:, 0], rtol=1e-6)


def test_json_round_trip_and_the_encoded_references():
    rng = np.random.default_rng(6)
    det, _, _ = _two_members(rng)
    refs = rng.normal(size=(7, 3)).astype(np.float32)
    det = dataclasses.replace(
        det,
        members=(
            dataclasses.replace(det.members[0], references_RxL=detector.encode(refs)),
            det.members[1],
        ),
    )
    back = detector.Detector.from_json(json.loads(json.dumps(det.to_json())))
    assert back == det
    np.testing.assert_array_equal(detector.decode(det.members[0].references_RxL), refs)
    with pytest.raises(ValueError, match="not an encoded"):
        detector.decode("7x3:not base64!")
    with pytest.raises(ValueError, match="holds"):
        detector.decode(detector.encode(refs).replace("7x3", "8x3"))


def test_bad_detectors_are_refused():
    with pytest.raises(ValueError, match="fusion must be"):
        detector.Detector((detector.Member("log:sse", 0, 0),), "mean", 3)
    with pytest.raises(ValueError, match="score must be one of"):
        detector.Detector((detector.Member("log:l2", 0, 0),), "min", 3)
    with pytest.raises(ValueError, match="do not match 4 features"):
        detector.Detector(
            (detector.Member("log:rarity", -1, 0, (0.0,) * 3, ((1.0,) * 3,) * 3),), "min", 4
        )
    with pytest.raises(ValueError, match="non-finite"):
        detector.Detector(
            (detector.Member("log:rarity", -1, 0, (float("nan"),), ((1.0,),)),), "min", 1
        )
