"""Figures: ROC / PR curves, score histograms per class, and a run's training curves.

The ROC's false-positive axis is logarithmic (a detector's operating points lie at 1% and
below), both curves mark the threshold's operating point, and titles name the run and the
split they were drawn for.

matplotlib is the optional extra ``plots``; it is imported inside the functions, so the
library imports and runs without it. Figures are drawn with the Agg canvas directly (no
pyplot state, no interactive backend switched on), which also makes them thread-safe.

Shape letters: W windows (or flows).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from lstmae_jax.detect import metrics


def _figure(width: float = 5.0, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format="png")
    return path


OPERATING_POINT = "operating point"  # the gid of the threshold's marker on ROC and PR


def _titled(what: str, title: str) -> str:
    return f"{what}: {title}" if title else what


def operating_point(
    y_true_W: ArrayLike, score_W: ArrayLike, threshold: float | metrics.Threshold
) -> dict:
    """The threshold's point on the curves: ``fpr``, ``tpr`` (recall) and ``precision``
    of ``score > threshold``, the rule and the numbers of ``metrics.detection_report``."""
    y = np.asarray(y_true_W).astype(np.int64)
    thr = (
        threshold
        if isinstance(threshold, metrics.Threshold)
        else metrics.Threshold(threshold, "given")
    )
    pred = thr.predict(score_W).astype(np.int64)
    precision, recall, _ = metrics.precision_recall_f1(y, pred, 2, average="binary")
    return {
        "value": thr.value,
        "fpr": metrics.false_positive_rate(y, pred),
        "tpr": recall,
        "precision": precision,
    }


def roc_figure(
    y_true_W: ArrayLike,
    score_W: ArrayLike,
    threshold: float | metrics.Threshold | None = None,
    title: str = "",
):
    """The ROC curve with a logarithmic false-positive axis (a detector runs at FPRs of
    1% and below, squeezed against the edge of a linear axis). The axis starts at one
    benign window in all, 1/N: an FPR of 0 is drawn there. ``threshold`` marks its point
    (gid ``OPERATING_POINT``)."""
    y = np.asarray(y_true_W).astype(np.int64)
    fpr, tpr, _ = metrics.roc_curve(y, score_W)
    auc = metrics.roc_auc(y, score_W)
    floor = 1.0 / int((y == 0).sum())  # the smallest FPR above 0
    fig = _figure(5.0, 4.6)  # the legend below the axes
    ax = fig.add_subplot()
    ax.plot(np.maximum(fpr, floor), tpr, lw=1.5, label=f"ROC AUC {auc:.4f}")
    chance = np.geomspace(floor, 1.0, 100)
    ax.plot(chance, chance, ls=":", c="grey", lw=1, label="chance")
    if threshold is not None:
        op = operating_point(y, score_W, threshold)
        ax.plot(
            max(op["fpr"], floor),
            op["tpr"],
            "o",
            c="C3",
            gid=OPERATING_POINT,
            label=f"threshold {op['value']:.4g}: FPR {100 * op['fpr']:.2f}%,"
            f" TPR {100 * op['tpr']:.2f}%",
        )
    ax.set_xscale("log")
    ax.set(
        xlabel="false-positive rate (log)",
        ylabel="true-positive rate (recall)",
        title=_titled("ROC", title),
    )
    ax.set(xlim=(floor, 1), ylim=(0, 1.01))
    _legend_below(fig, ax)
    return fig


def pr_figure(
    y_true_W: ArrayLike,
    score_W: ArrayLike,
    threshold: float | metrics.Threshold | None = None,
    title: str = "",
):
    """The precision-recall curve; ``threshold`` marks its point (gid ``OPERATING_POINT``)."""
    y = np.asarray(y_true_W).astype(np.int64)
    precision, recall, _ = metrics.precision_recall_curve(y, score_W)
    ap = metrics.average_precision(y, score_W)
    fig = _figure(5.0, 4.6)  # the legend below the axes
    ax = fig.add_subplot()
    ax.step(recall, precision, where="post", lw=1.5, label=f"PR AUC (AP) {ap:.4f}")
    ax.axhline(y.mean(), ls=":", c="grey", lw=1, label=f"attack share {y.mean():.3f}")
    if threshold is not None:
        op = operating_point(y, score_W, threshold)
        ax.plot(
            op["tpr"],
            op["precision"],
            "o",
            c="C3",
            gid=OPERATING_POINT,
            label=f"threshold {op['value']:.4g}: precision {100 * op['precision']:.2f}%,"
            f" recall {100 * op['tpr']:.2f}%",
        )
    ax.set(xlabel="recall", ylabel="precision", title=_titled("Precision-recall", title))
    ax.set(xlim=(0, 1), ylim=(0, 1.01))
    _legend_below(fig, ax)
    return fig


def _legend_below(fig, ax) -> None:
    """The legend under the axes: inside, any corner can hold the operating point (low
    recall at a low FPR is the ROC's lower left, where a long legend reaches)."""
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", fontsize="small")


def plot_curves(
    out_prefix: str,
    y_true_W: ArrayLike,
    score_W: ArrayLike,
    threshold: float | metrics.Threshold | None = None,
    *,
    title: str = "",
) -> tuple[str, str]:
    """ROC and precision-recall curves of ``score_W`` (higher = attack) for binary labels.

    Writes ``{out_prefix}_roc.png`` and ``{out_prefix}_pr.png``; returns their paths. The
    curves and areas are those of ``lstmae_jax.detect.metrics`` (both classes must be
    present). ``threshold`` marks the operating point on both; ``title`` (the run and the
    split) follows each figure's name.
    """
    roc_path = _save(roc_figure(y_true_W, score_W, threshold, title), f"{out_prefix}_roc.png")
    pr_path = _save(pr_figure(y_true_W, score_W, threshold, title), f"{out_prefix}_pr.png")
    return roc_path, pr_path


def plot_score_histograms(
    out_path: str,
    score_W: ArrayLike,
    label_names_W: Sequence[str] | np.ndarray,
    threshold: float | metrics.Threshold | None = None,
    *,
    title: str = "",
) -> str:
    """Histogram of the scores of each class (one step outline per class, log counts).

    Reconstruction errors span orders of magnitude, so bins are log-spaced (and the x axis
    logarithmic) when every score is positive. ``threshold`` draws the operating point;
    ``title`` (the run and the split) follows the figure's name.
    """
    s = np.asarray(score_W, dtype=np.float64)
    names = np.asarray(label_names_W, dtype=object)
    if s.ndim != 1 or s.shape != names.shape or s.size == 0:
        raise ValueError(f"score_W {s.shape} and label_names_W {names.shape} must be equal 1-D")
    log_x = bool(np.all(s > 0)) and s.max() > s.min()
    lo, hi = s.min(), s.max()
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.geomspace(lo, hi, 61) if log_x else np.linspace(lo, hi, 61)
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    classes, counts = np.unique(names.astype(str), return_counts=True)
    # Most frequent class first (usually Benign), so its colour is stable across figures.
    for c in classes[np.argsort(-counts, kind="stable")]:
        sel = s[names.astype(str) == c]
        ax.hist(sel, bins=bins, histtype="step", lw=1.3, label=f"{c} ({sel.size})")
    if threshold is not None:
        value = threshold.value if isinstance(threshold, metrics.Threshold) else float(threshold)
        ax.axvline(value, c="k", ls="--", lw=1, label=f"threshold {value:.4g}")
    if log_x:
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel="anomaly score", ylabel="windows", title=_titled("Scores per class", title))
    ax.legend(fontsize="small")
    return _save(fig, out_path)


def read_metrics(run_dir: str) -> tuple[list[dict], list[dict]]:
    """(train records with ``loss``, epoch records with ``val_loss``) of a run's JSONL."""
    from lstmae_jax.train import monitor

    train, val = [], []
    for rec in monitor.read_jsonl(os.path.join(run_dir, monitor.METRICS_FILE)):
        if "val_loss" in rec:
            val.append(rec)
        elif "loss" in rec:
            train.append(rec)
    return train, val


def plot_training(run_dir: str, out_path: str, title: str = "") -> str:
    """Training loss per logged step and validation loss per epoch from ``metrics.jsonl``.

    ``title`` defaults to the run's workdir and name (``demo/stage1``)."""
    return _save(training_figure(run_dir, title), out_path)


def training_figure(run_dir: str, title: str = ""):
    """The figure of ``plot_training``."""
    train, val = read_metrics(run_dir)
    if not train and not val:
        raise ValueError(f"{run_dir}/metrics.jsonl holds no loss records")
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, label="train loss")
    if val:
        steps = [r["step"] for r in val]
        ax.plot(steps, [r["val_loss"] for r in val], "o-", ms=3, lw=1, label="val loss (epoch)")
        best = min(range(len(val)), key=lambda i: val[i]["val_loss"])
        ax.plot(steps[best], val[best]["val_loss"], "*", ms=12, c="C3", label="best")
    losses = [r["loss"] for r in train] + [r["val_loss"] for r in val]
    if all(v > 0 for v in losses if np.isfinite(v)):
        ax.set_yscale("log")
    if not title:
        run = os.path.normpath(os.path.abspath(run_dir))
        title = f"{os.path.basename(os.path.dirname(run))}/{os.path.basename(run)}"
    ax.set(xlabel="step", ylabel="loss", title=_titled("Training", title))
    ax.legend()
    return fig
