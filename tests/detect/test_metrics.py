"""lstmae_jax.detect.metrics against scikit-learn (a test-only dependency) and exact oracles.

Floats are compared exactly wherever both sides perform the same correctly rounded
operations on the same integer counts. The one tolerance, 1e-12 for ROC AUC and AP against
scikit-learn, is there because the two sum the same terms in a different order (sklearn
also thins collinear ROC points first); with at most a few hundred terms in [0, 1] the
rounding difference is below 1e-13, so 1e-12 cannot hide a wrong tie or step convention,
which moves the value by at least 1 / (P * N) >= 1e-5 here. ROC AUC is also checked for
exact equality against a rational Mann-Whitney oracle.
"""

import dataclasses
import json
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from lstmae_jax.detect import metrics as M

SEEDS = range(40)
SK_TOL = 1e-12  # see the module docstring: summation order only


def _multiclass(seed: int):
    """Imbalanced labels over k classes, some absent, some never predicted."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 6))
    n = int(rng.integers(1, 300))
    y_true = rng.choice(k, size=n, p=rng.dirichlet(np.full(k, 0.3)))
    predicted = rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False)
    y_pred = rng.choice(predicted, size=n)
    keep = (rng.random(n) < 0.6) & np.isin(y_true, predicted)
    y_pred[keep] = y_true[keep]
    return k, y_true, y_pred


def _binary_scores(seed: int):
    """Both classes present, imbalanced, scores with heavy ties on even seeds."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    y = (rng.random(n) < rng.choice([0.01, 0.1, 0.5, 0.95])).astype(np.int64)
    y[:2] = [0, 1]
    rng.shuffle(y)
    score = rng.normal(size=n) + rng.uniform(0, 2) * y
    if seed % 2 == 0:
        score = np.round(score, 1)  # ~40 levels: many ties within and across classes
    if seed % 3 == 0:
        score = score.astype(np.float32)
    return y, score


# ------------------------------------------------------------------ classification


@pytest.mark.parametrize("seed", SEEDS)
def test_multiclass_metrics_match_sklearn(seed):
    k, y_true, y_pred = _multiclass(seed)
    labels = np.arange(k)
    np.testing.assert_array_equal(
        M.confusion_matrix(y_true, y_pred, k), skm.confusion_matrix(y_true, y_pred, labels=labels)
    )
    assert M.accuracy(y_true, y_pred) == skm.accuracy_score(y_true, y_pred)
    for average in (None, "macro", "weighted"):
        ours = M.precision_recall_f1(y_true, y_pred, k, average=average)
        theirs = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )[:3]
        for o, t in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(o, t)
    np.testing.assert_array_equal(
        M.per_class_recall(y_true, y_pred, k),
        skm.recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0),
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_binary_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 100))
    y_true = (rng.random(n) < rng.choice([0.0, 0.05, 0.5, 1.0])).astype(np.int64)
    y_pred = (rng.random(n) < rng.choice([0.0, 0.1, 0.5])).astype(np.int64)  # may be all 0
    for pos_label in (0, 1):
        ours = M.precision_recall_f1(y_true, y_pred, 2, "binary", pos_label=pos_label)
        theirs = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=[0, 1], average="binary", pos_label=pos_label, zero_division=0
        )[:3]
        assert ours == theirs
    tn, fp, _, _ = skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    assert M.false_positive_rate(y_true, y_pred) == (fp / (fp + tn) if fp + tn else 0.0)


def test_zero_division_gives_zero():
    # class 2 never predicted (precision 0/0) and absent from y_true (recall 0/0).
    p, r, f1 = M.precision_recall_f1([0, 1, 1], [0, 1, 0], 3, average=None)
    assert (p[2], r[2], f1[2]) == (0.0, 0.0, 0.0)
    assert M.false_positive_rate([1, 1], [1, 0]) == 0.0  # no benign flows


def test_label_validation():
    with pytest.raises(ValueError, match="integer class ids"):
        M.accuracy([0.0, 1.0], [0, 1])
    with pytest.raises(ValueError, match="outside"):
        M.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="differ in length"):
        M.accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="empty"):
        M.accuracy([], [])
    with pytest.raises(ValueError, match="binary"):
        M.precision_recall_f1([0, 2], [0, 1], 3, average="binary")
    assert M.accuracy(np.array([True, False]), np.array([1, 0])) == 1.0


# ------------------------------------------------------------------------ ranking


@pytest.mark.parametrize("seed", SEEDS)
def test_roc_matches_sklearn(seed):
    y, score = _binary_scores(seed)
    for o, t in zip(
        M.roc_curve(y, score), skm.roc_curve(y, score, drop_intermediate=False), strict=True
    ):
        np.testing.assert_array_equal(o, t)
    assert abs(M.roc_auc(y, score) - skm.roc_auc_score(y, score)) <= SK_TOL


@pytest.mark.parametrize("seed", SEEDS)
def test_roc_auc_is_exact_mann_whitney(seed):
    """AUC = P(s_pos > s_neg) + P(s_pos == s_neg) / 2, in rationals, rounded once."""
    y, score = _binary_scores(seed)
    s = score.astype(np.float64)
    pos, neg = s[y == 1][:, None], s[y == 0][None, :]
    twice_u = 2 * int(np.sum(pos > neg)) + int(np.sum(pos == neg))
    assert M.roc_auc(y, score) == float(Fraction(twice_u, 2 * pos.size * neg.size))


@pytest.mark.parametrize("seed", SEEDS)
def test_precision_recall_matches_sklearn(seed):
    y, score = _binary_scores(seed)
    for o, t in zip(
        M.precision_recall_curve(y, score), skm.precision_recall_curve(y, score), strict=True
    ):
        np.testing.assert_array_equal(o, t)
    assert abs(M.average_precision(y, score) - skm.average_precision_score(y, score)) <= SK_TOL


def test_ranking_tie_conventions_by_hand():
    # one positive tied with one negative: ROC is a diagonal segment (half credit), AP is
    # a step: at the single threshold recall jumps 0 -> 1 at precision 1/2.
    assert M.roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert M.average_precision([0, 1], [0.5, 0.5]) == 0.5
    assert M.roc_auc([0, 0, 1], [0.1, 0.2, 0.2]) == 0.75


@pytest.mark.parametrize("y", [[0, 0, 0], [1, 1]])
def test_single_class_raises_for_ranking_metrics(y):
    score = np.linspace(0, 1, len(y))
    for fn in (M.roc_auc, M.average_precision, M.roc_curve, M.precision_recall_curve):
        with pytest.raises(ValueError, match="only one class"):
            fn(y, score)


def test_non_finite_scores_rejected():
    with pytest.raises(ValueError, match="non-finite"):
        M.roc_auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="non-finite"):
        M.Threshold(0.1, "fixed").predict([np.nan])


# --------------------------------------------------------------------- thresholds


@pytest.mark.parametrize("q", [0.0, 0.5, 0.9, 0.99, 1.0])
def test_quantile_threshold_is_np_quantile(q):
    s = np.random.default_rng(0).exponential(size=1001)
    assert M.quantile_threshold(s, q) == np.quantile(s, q)


def _frac_above(s: np.ndarray, t: float) -> float:
    return np.count_nonzero(s > t) / s.size


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([0.0, 0.1, 0.2, 0.25, 1.0, 3.5]) | st.floats(-1e6, 1e6), min_size=1),
    st.floats(0.0, 1.0, exclude_max=True) | st.sampled_from([0.0, 0.01, 0.1, 0.29, 0.5]),
)
def test_fpr_threshold_is_tightest(scores, target):
    s = np.asarray(scores)
    t = M.fpr_threshold(s, target)
    assert t in s  # the threshold is a benign score
    assert _frac_above(s, t) <= target
    # tightest: any smaller threshold flags more than the target (the fraction only grows
    # as t decreases, so the next float below t is enough).
    assert _frac_above(s, np.nextafter(t, -np.inf)) > target


def test_fpr_threshold_rounding_and_edges():
    s = np.arange(100.0)
    assert M.fpr_threshold(s, 0.29) == 70.0  # 0.29 * 100 = 28.999...: still 29 allowed
    assert M.fpr_threshold(s, 0.0) == 99.0
    assert M.fpr_threshold(np.ones(10), 0.5) == 1.0  # all tied: nothing flagged
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="target_fpr"):
            M.fpr_threshold(s, bad)


def test_threshold_json_round_trip_and_frozen():
    thr = M.Threshold(np.nextafter(0.1, 1.0), "fpr", {"target_fpr": 0.01, "n_benign": 7})
    back = M.Threshold.from_json(json.loads(json.dumps(thr.to_json())))
    assert back == thr and back.value == thr.value  # bit-exact float through JSON
    assert isinstance(back.value, float) and hash(back) == hash(thr)
    with pytest.raises(dataclasses.FrozenInstanceError):
        thr.value = 0.2
    with pytest.raises(ValueError, match="finite"):
        M.Threshold(np.inf, "fixed")


def test_calibrate_dispatch_and_records():
    benign = np.random.default_rng(1).exponential(size=500)
    fixed = M.calibrate("fixed", None)
    assert fixed == M.Threshold(0.1, "fixed", {"value": 0.1})
    quant = M.calibrate("quantile", benign, q=0.95)
    assert quant.value == np.quantile(benign, 0.95) and quant.params["q"] == 0.95
    fpr = M.calibrate("fpr", benign)
    assert fpr.value == M.fpr_threshold(benign, 0.01)
    assert fpr.params == {
        "target_fpr": 0.01,
        "n_benign": 500,
        "benign_fpr": float(np.mean(fpr.predict(benign))),
    }
    assert fpr.params["benign_fpr"] <= 0.01
    # predict is strictly-greater: a score equal to the threshold is benign.
    assert not fpr.predict([fpr.value])[0] and fpr.predict([np.nextafter(fpr.value, 9)])[0]
    with pytest.raises(ValueError, match="method"):
        M.calibrate("otsu", benign)
    with pytest.raises(ValueError, match="needs benign_scores"):
        M.calibrate("fpr", None)


# ------------------------------------------------------------------------ reports


@pytest.mark.parametrize("seed", range(10))
def test_detection_report_matches_sklearn(seed):
    y, score = _binary_scores(seed)
    names = np.array(["DoS Hulk", "PortScan", "Bot"])
    labels = np.where(y == 1, names[np.arange(y.size) % 3], "BENIGN")
    thr = M.calibrate("fpr", score[y == 0], target_fpr=0.05)
    rep = M.detection_report(y, score, thr, attack_labels=labels)
    json.dumps(rep, allow_nan=False)  # JSON-ready: plain types, no NaN
    pred = (score > thr.value).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel().tolist()
    assert rep["confusion"] == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    assert (rep["n"], rep["n_benign"], rep["n_attack"]) == (y.size, tn + fp, fn + tp)
    assert rep["accuracy"] == skm.accuracy_score(y, pred)
    assert rep["precision"] == skm.precision_score(y, pred, zero_division=0)
    assert rep["recall"] == skm.recall_score(y, pred, zero_division=0)
    assert rep["f1"] == skm.f1_score(y, pred, zero_division=0)
    assert rep["fpr"] == fp / (fp + tn)
    assert abs(rep["roc_auc"] - skm.roc_auc_score(y, score)) <= SK_TOL
    assert abs(rep["pr_auc"] - skm.average_precision_score(y, score)) <= SK_TOL
    assert rep["threshold"] == dataclasses.asdict(thr)
    expected = {}
    for name in sorted(set(labels[y == 1])):
        rows = labels == name
        n, hit = int(rows.sum()), int(pred[rows].sum())
        expected[name] = {"n": n, "detected": hit, "recall": hit / n}
    assert rep["per_attack"] == expected


def test_detection_report_single_class_and_float_threshold():
    rep = M.detection_report([0, 0, 0], [0.05, 0.2, 0.1], 0.1)
    json.dumps(rep, allow_nan=False)
    assert rep["roc_auc"] is None and rep["pr_auc"] is None and "one class" in rep["auc_note"]
    assert rep["threshold"] == {"value": 0.1, "method": "given", "params": {}}
    assert rep["confusion"] == {"tn": 2, "fp": 1, "fn": 0, "tp": 0} and rep["fpr"] == 1 / 3
    assert "per_attack" not in rep


@pytest.mark.parametrize("seed", range(10))
def test_classification_report_matches_sklearn(seed):
    k, y_true, y_pred = _multiclass(seed)
    names = [f"class{i}" for i in range(k)]
    rep = M.classification_report(y_true, y_pred, names)
    json.dumps(rep, allow_nan=False)
    sk = skm.classification_report(
        y_true, y_pred, labels=np.arange(k), target_names=names, output_dict=True, zero_division=0
    )
    ours_avg = {"macro": "macro avg", "weighted": "weighted avg"}
    for ours, theirs in ours_avg.items():
        assert rep[ours] == {
            "precision": sk[theirs]["precision"],
            "recall": sk[theirs]["recall"],
            "f1": sk[theirs]["f1-score"],
        }
    for name in names:
        t = sk[name]
        assert rep["per_class"][name] == {
            "precision": t["precision"],
            "recall": t["recall"],
            "f1": t["f1-score"],
            "support": t["support"],
        }
    assert rep["accuracy"] == skm.accuracy_score(y_true, y_pred)
    assert rep["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred, labels=range(k)).tolist()
    with pytest.raises(ValueError, match="unique"):
        M.classification_report(y_true, y_pred, ["a"] * k)
