"""Thresholds for the anomaly score and detection metrics, in numpy only.

The score is a reconstruction error: higher means more anomalous. Labels are integer class
ids (bool is accepted for binary labels); 1 is the attack class in binary metrics.

Conventions, chosen once and used everywhere:

* **Zero division** gives 0.0, as scikit-learn's ``zero_division=0``: the precision of a
  class never predicted, the recall of a class absent from ``y_true``, the F1 of a class
  with neither, the FPR with no benign flows. Classes are ``range(num_classes)`` whether
  or not they occur, so absent classes count in macro averages (with a 0.0).
* **Operating point: ``predict = score > threshold``.** A flow scoring exactly the
  threshold is benign. Every threshold here is calibrated under that rule, and
  ``Threshold.predict`` is the one place that applies it.
* **Curves use ``score >= t``** at each distinct observed score ``t`` (scikit-learn's
  convention; the point of a curve is its rate pair, not a deployable threshold).
  ``roc_curve`` starts at ``(0, 0)`` with threshold ``inf`` and keeps every distinct score
  (``drop_intermediate=False``); tied scores across classes give one diagonal segment.
* **Ranking metrics need both classes.** ``roc_auc``, ``average_precision`` and the
  curves raise ``ValueError`` when ``y_true`` holds one class: a rate is then 0/0 (FPR
  with no benign flow, recall with no attack), and a silent nan or 0.0 would slip into
  tables. ``detection_report`` does not raise: on a one-class test set its AUCs are
  ``None`` (JSON null), with the reason in ``auc_note``.
* **Scores must be finite** (no NaN/inf); NaN reconstruction errors mean a broken model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

Average = Literal["binary", "macro", "weighted"] | None
Curve = tuple[np.ndarray, np.ndarray, np.ndarray]


def _labels(y: ArrayLike, name: str, num_classes: int | None = None) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
    if y.size == 0:
        raise ValueError(f"{name} is empty")
    if y.dtype == np.bool_:
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class ids, got dtype {y.dtype}")
    if num_classes is not None and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name} has ids outside [0, {num_classes}): {y.min()}..{y.max()}")
    return y.astype(np.int64, copy=False)


def _pair(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int | None):
    t, p = _labels(y_true, "y_true", num_classes), _labels(y_pred, "y_pred", num_classes)
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} differ in length")
    return t, p


def _scores(score: ArrayLike, name: str, n: int | None = None) -> np.ndarray:
    s = np.asarray(score, dtype=np.float64)  # float32 -> float64 is exact: order unchanged
    if s.ndim != 1 or s.size == 0 or (n is not None and s.size != n):
        raise ValueError(f"{name} must be 1-D, non-empty, length {n}; got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} has {np.count_nonzero(~np.isfinite(s))} non-finite values")
    return s


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:  # 0.0 where den == 0
    return np.divide(num, den, out=np.zeros(np.shape(num)), where=den != 0)


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> np.ndarray:
    """Counts ``[i, j]`` of flows of true class i predicted as j; int64, (K, K)."""
    t, p = _pair(y_true, y_pred, num_classes)
    flat = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of flows whose predicted class equals the true class."""
    t, p = _pair(y_true, y_pred, None)
    return float(np.mean(t == p))


def precision_recall_f1(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    num_classes: int,
    average: Average = "binary",
    pos_label: int = 1,
) -> tuple[float, float, float] | Curve:
    """Precision, recall and F1, as scikit-learn's with ``zero_division=0``.

    ``average``: ``'binary'`` (needs ``num_classes == 2``) gives the floats of class
    ``pos_label``; ``'macro'`` the unweighted mean over all ``num_classes`` classes;
    ``'weighted'`` the mean weighted by true-class support; ``None`` three (K,) arrays.
    F1 is ``2 tp / (2 tp + fp + fn)``, which equals the harmonic mean where both are > 0.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp, n_pred, n_true = np.diag(cm), cm.sum(axis=0), cm.sum(axis=1)
    prf = (_div(tp, n_pred), _div(tp, n_true), _div(2 * tp, n_true + n_pred))
    if average is None:
        return prf
    if average == "binary":
        if num_classes != 2 or pos_label not in (0, 1):
            raise ValueError(
                f"'binary' needs 2 classes, pos_label 0|1: {num_classes=}, {pos_label=}"
            )
        return tuple(float(m[pos_label]) for m in prf)
    if average == "macro":
        return tuple(float(np.mean(m)) for m in prf)
    if average == "weighted":  # y_true is non-empty, so the weights never sum to 0
        return tuple(float(np.average(m, weights=n_true)) for m in prf)
    raise ValueError(f"average must be 'binary', 'macro', 'weighted' or None, got {average!r}")


def per_class_recall(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> np.ndarray:
    """Recall of each class, (K,); 0.0 for a class absent from ``y_true``."""
    return precision_recall_f1(y_true, y_pred, num_classes, average=None)[1]


def false_positive_rate(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Binary FP / (FP + TN): the fraction of benign flows flagged; 0.0 with no benign."""
    (tn, fp), _ = confusion_matrix(y_true, y_pred, 2)
    return float(_div(np.asarray(fp), np.asarray(fp + tn)))


def _ranked_counts(y_true: ArrayLike, score: ArrayLike) -> Curve:
    """(fps, tps, thresholds): cumulative counts with ``score >= t`` per distinct t, desc."""
    y = _labels(y_true, "y_true_binary", 2)
    s = _scores(score, "score", y.size)
    n_pos = int(y.sum())
    if n_pos in (0, y.size):
        raise ValueError(
            f"only one class present in y_true_binary ({y.size} flows, {n_pos} "
            "attacks): ROC AUC, AP and their curves are undefined"
        )
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each tie group
    tps = np.cumsum(y)[last]
    return last + 1 - tps, tps, s[last]


def roc_curve(y_true_binary: ArrayLike, score: ArrayLike) -> Curve:
    """(fpr, tpr, thresholds), thresholds decreasing from ``inf``; see module docstring."""
    fps, tps, thr = _ranked_counts(y_true_binary, score)
    return np.r_[0, fps] / fps[-1], np.r_[0, tps] / tps[-1], np.r_[np.inf, thr]


def roc_auc(y_true_binary: ArrayLike, score: ArrayLike) -> float:
    """Area under the ROC curve by the trapezoid rule over distinct thresholds.

    Equal to scikit-learn's ``roc_auc_score`` (ties count one half). The area is summed in
    integers, ``sum(dFP * (TP_i + TP_{i-1})) / (2 P N)``, and rounded once, so the result
    is the correctly rounded exact value (int64 holds the sum for up to ~4e9 flows).
    """
    fps, tps, _ = _ranked_counts(y_true_binary, score)
    fp, tp = np.r_[0, fps], np.r_[0, tps]
    twice_area = int(np.sum(np.diff(fp) * (tp[1:] + tp[:-1])))
    return float(Fraction(twice_area, 2 * int(fps[-1]) * int(tps[-1])))


def precision_recall_curve(y_true_binary: ArrayLike, score: ArrayLike) -> Curve:
    """(precision, recall, thresholds) as scikit-learn's: thresholds increasing, and a
    final point (precision 1, recall 0) with no threshold."""
    fps, tps, thr = _ranked_counts(y_true_binary, score)
    precision, recall = tps / (tps + fps), tps / tps[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thr[::-1]


def average_precision(y_true_binary: ArrayLike, score: ArrayLike) -> float:
    """PR AUC as scikit-learn's ``average_precision_score``: ``sum_i (R_i - R_{i-1}) P_i``
    over distinct thresholds (a step function, not the optimistic trapezoid)."""
    fps, tps, _ = _ranked_counts(y_true_binary, score)
    return float(np.sum(np.diff(tps, prepend=0) * (tps / (tps + fps))) / tps[-1])


def fixed_threshold(value: float = 0.1) -> float:
    """A given threshold; 0.1 is the reference paper's fixed MAE threshold."""
    if not np.isfinite(value):
        raise ValueError(f"threshold must be finite, got {value}")
    return float(value)


def quantile_threshold(benign_scores: ArrayLike, q: float) -> float:
    """``np.quantile(benign_scores, q)`` (linear), q in [0, 1]: flags about 1 - q of them."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    return float(np.quantile(_scores(benign_scores, "benign_scores"), q))


def fpr_threshold(benign_scores: ArrayLike, target_fpr: float = 0.01) -> float:
    """The smallest t with ``mean(benign_scores > t) <= target_fpr``, for target in [0, 1).

    Under ``score > t`` the count above t can only drop at observed scores, so the
    smallest such t is the (k+1)-th largest benign score, k being the largest count with
    ``k / n <= target_fpr``. The threshold is itself a benign score, which is not flagged;
    with ties fewer than k benign flows may lie above it. target 0 gives the maximum.
    """
    if not 0.0 <= target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr}")
    s = np.sort(_scores(benign_scores, "benign_scores"))
    n = s.size
    k = int(np.floor(target_fpr * n))
    # target * n is rounded (0.29 * 100 = 28.999...); settle k on the test actually used.
    while (k + 1) / n <= target_fpr:
        k += 1
    while k > 0 and k / n > target_fpr:
        k -= 1
    return float(s[n - 1 - k])


@dataclasses.dataclass(frozen=True)
class Threshold:
    """A chosen threshold and how it was chosen (JSON-serialisable ``params``), for the
    model's sidecar. ``params`` is left out of the hash (dicts are unhashable), not of ==."""

    value: float
    method: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", fixed_threshold(self.value))
        object.__setattr__(self, "params", dict(self.params))  # no aliasing of the caller's

    def predict(self, score: ArrayLike) -> np.ndarray:
        """Attack (True) where ``score > value``; the rule every threshold is calibrated for."""
        return _scores(score, "score") > self.value

    def to_json(self) -> dict:
        """A JSON-ready dict, like every ``to_json`` here; json writes floats with repr, so
        the value round-trips bit for bit."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Threshold:
        return cls(value=d["value"], method=d["method"], params=d["params"])


def calibrate(method: str, benign_scores: ArrayLike | None, **params: Any) -> Threshold:
    """Choose a threshold by ``method`` ('fixed' | 'quantile' | 'fpr').

    ``params`` go to ``fixed_threshold`` / ``quantile_threshold`` / ``fpr_threshold`` and
    are recorded with their defaults filled in. Given benign scores (optional for
    'fixed'), the record adds ``n_benign`` and ``benign_fpr``, the calibration-set FPR.
    """
    if method == "fixed":
        params.setdefault("value", 0.1)
        value = fixed_threshold(**params)
    elif method in ("quantile", "fpr"):
        if benign_scores is None:
            raise ValueError(f"method {method!r} needs benign_scores")
        if method == "fpr":
            params.setdefault("target_fpr", 0.01)
        fn = quantile_threshold if method == "quantile" else fpr_threshold
        value = fn(benign_scores, **params)
    else:
        raise ValueError(f"method must be 'fixed', 'quantile' or 'fpr', got {method!r}")
    if benign_scores is not None:
        flagged = Threshold(value, method).predict(benign_scores)
        params.update(n_benign=int(flagged.size), benign_fpr=float(np.mean(flagged)))
    return Threshold(value=value, method=method, params=params)


def detection_report(
    y_true_binary: ArrayLike,
    score: ArrayLike,
    threshold: Threshold | float,
    *,
    attack_labels: ArrayLike | None = None,
) -> dict[str, Any]:
    """JSON-ready binary detection metrics at ``threshold`` (``score > threshold``).

    ``attack_labels`` (str per flow) adds ``per_attack``: for each label among attack
    flows (``y_true_binary == 1``; benign flows excluded), its count ``n``, ``detected``
    and ``recall`` (detection rate). One-class sets give ``None`` AUCs and an ``auc_note``.
    """
    y = _labels(y_true_binary, "y_true_binary", 2)
    s = _scores(score, "score", y.size)
    thr = threshold if isinstance(threshold, Threshold) else Threshold(threshold, "given")
    y_pred = thr.predict(s).astype(np.int64)
    (tn, fp), (fn, tp) = confusion_matrix(y, y_pred, 2).tolist()
    precision, recall, f1 = precision_recall_f1(y, y_pred, 2, "binary")
    report: dict[str, Any] = {"n": int(y.size), "n_benign": tn + fp, "n_attack": fn + tp}
    report["threshold"] = dataclasses.asdict(thr)
    report.update(accuracy=accuracy(y, y_pred), precision=precision, recall=recall, f1=f1)
    report["fpr"] = false_positive_rate(y, y_pred)
    report["confusion"] = {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    if 0 < tp + fn < y.size:
        report["roc_auc"], report["pr_auc"] = roc_auc(y, s), average_precision(y, s)
    else:
        report["roc_auc"] = report["pr_auc"] = None
        report["auc_note"] = "only one class in y_true_binary: ROC AUC and PR AUC undefined"
    if attack_labels is not None:
        labels = np.asarray(attack_labels)
        if labels.shape != y.shape:
            raise ValueError(f"attack_labels {labels.shape} and y {y.shape} differ in shape")
        names, inv = np.unique(labels[y == 1], return_inverse=True)
        n = np.bincount(inv, minlength=names.size)
        hit = np.bincount(inv[y_pred[y == 1] == 1], minlength=names.size)
        report["per_attack"] = {
            str(name): {"n": int(c), "detected": int(h), "recall": float(h / c)}
            for name, c, h in zip(names, n, hit, strict=True)
        }
    return report


def classification_report(
    y_true: ArrayLike, y_pred: ArrayLike, class_names: Sequence[str]
) -> dict[str, Any]:
    """JSON-ready multi-class report; class i is ``class_names[i]``; zero division -> 0.0."""
    k = len(class_names)
    if len(set(class_names)) != k:
        raise ValueError(f"class_names must be unique, got {list(class_names)}")
    cm = confusion_matrix(y_true, y_pred, k)
    per_class = zip(*precision_recall_f1(y_true, y_pred, k, average=None), strict=True)
    keys = ("precision", "recall", "f1")
    report: dict[str, Any] = {"accuracy": accuracy(y_true, y_pred)}
    for a in ("macro", "weighted"):
        report[a] = dict(zip(keys, precision_recall_f1(y_true, y_pred, k, a), strict=True))
    report["per_class"] = {
        str(name): {**dict(zip(keys, map(float, prf), strict=True)), "support": int(cm[i].sum())}
        for i, (name, prf) in enumerate(zip(class_names, per_class, strict=True))
    }
    report["class_names"] = [str(c) for c in class_names]
    report["confusion_matrix"] = cm.tolist()
    return report
