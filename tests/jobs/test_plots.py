"""plots: each function writes a non-empty PNG (skipped without matplotlib)."""

import json

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from lstmae_jax.detect import metrics  # noqa: E402
from lstmae_jax.jobs import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path) -> None:
    with open(path, "rb") as f:
        head = f.read(8)
    assert head == PNG_MAGIC, f"{path} is not a PNG"
    assert len(open(path, "rb").read()) > 1000, f"{path} is suspiciously small"


def _scores(seed=0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(300, int), np.ones(60, int)]
    score = np.r_[rng.lognormal(-3, 0.5, 300), rng.lognormal(-1.5, 0.7, 60)]
    return y, score


def test_plot_curves(tmp_path):
    y, score = _scores()
    thr = metrics.calibrate("fpr", score[y == 0], target_fpr=0.01)
    roc, pr = plots.plot_curves(str(tmp_path / "sub" / "det"), y, score, thr, title="demo/stage1")
    assert roc.endswith("det_roc.png") and pr.endswith("det_pr.png")
    _assert_png(roc)
    _assert_png(pr)
    # Without a threshold or title, as before.
    _assert_png(plots.plot_curves(str(tmp_path / "bare"), y, score)[0])


def _marker(ax):
    (line,) = [line for line in ax.lines if line.get_gid() == plots.OPERATING_POINT]
    (x,), (y,) = line.get_data()
    return x, y


def test_roc_has_a_log_fpr_axis_and_marks_the_threshold():
    y, score = _scores()
    thr = metrics.calibrate("fpr", score[y == 0], target_fpr=0.01)
    report = metrics.detection_report(y, score, thr)
    ax = plots.roc_figure(y, score, thr, "demo/stage1, test split").axes[0]
    assert ax.get_xscale() == "log"
    assert ax.get_xlim()[0] == pytest.approx(1 / 300)  # one benign window in all
    assert ax.get_title() == "ROC: demo/stage1, test split"
    # The report's numbers at the threshold: FPR 1% of the 300 benign windows.
    assert report["fpr"] == 3 / 300
    assert _marker(ax) == (report["fpr"], report["recall"])
    # The curve passes through the marker (score > t is a point of the score >= t curve).
    fpr, tpr = (np.asarray(v) for v in ax.lines[0].get_data())
    assert np.any((fpr == report["fpr"]) & (tpr == report["recall"]))


def test_an_fpr_of_zero_is_drawn_at_the_axis_floor():
    y, score = _scores()
    op = plots.operating_point(y, score, score.max())  # flags nothing
    assert op["fpr"] == op["tpr"] == 0.0
    ax = plots.roc_figure(y, score, score.max()).axes[0]
    assert _marker(ax) == (1 / 300, 0.0) and ax.get_title() == "ROC"


def test_pr_marks_the_threshold_and_names_the_run():
    y, score = _scores()
    thr = metrics.calibrate("fpr", score[y == 0], target_fpr=0.01)
    report = metrics.detection_report(y, score, thr)
    ax = plots.pr_figure(y, score, thr, "demo/stage1, all windows").axes[0]
    assert ax.get_title() == "Precision-recall: demo/stage1, all windows"
    assert _marker(ax) == (report["recall"], report["precision"])


@pytest.mark.parametrize("figure", [plots.roc_figure, plots.pr_figure])
def test_the_legend_leaves_a_low_recall_operating_point_uncovered(figure):
    # Attacks scored like benign windows: at 1% FPR the recall is low, and with 20,000
    # benign windows the ROC's point sits mid-bottom, under the legend's old place (lower
    # right, inside the axes).
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(20_000, int), np.ones(400, int)]
    score = np.r_[rng.lognormal(-3, 0.5, 20_000), rng.lognormal(-2.8, 0.7, 400)]
    thr = metrics.calibrate("fpr", score[y == 0], target_fpr=0.01)
    assert metrics.detection_report(y, score, thr)["recall"] < 0.1
    fig = figure(y, score, thr, "demo/stage1")
    fig.canvas.draw()
    (legend,) = fig.legends
    box = legend.get_window_extent()
    ax = fig.axes[0]
    point = ax.transData.transform(_marker(ax))
    assert not box.contains(*point)
    assert not box.overlaps(ax.get_window_extent())  # nor anything else drawn in the axes


def test_plot_score_histograms(tmp_path):
    y, score = _scores()
    names = np.where(y == 0, "Benign", np.where(np.arange(y.size) % 2, "DDoS", "PortScan"))
    thr = metrics.calibrate("fpr", score[y == 0], target_fpr=0.01)
    _assert_png(
        plots.plot_score_histograms(str(tmp_path / "h.png"), score, names, thr, title="demo")
    )
    # Non-positive scores fall back to linear bins; a float threshold works too.
    _assert_png(plots.plot_score_histograms(str(tmp_path / "h2.png"), score - 0.1, names, 0.0))


def test_plot_score_histograms_checks_shapes(tmp_path):
    with pytest.raises(ValueError, match="equal 1-D"):
        plots.plot_score_histograms(str(tmp_path / "x.png"), np.ones(3), ["a", "b"])


def test_plot_training(tmp_path):
    # The record kinds train.fit writes: compile time, logged steps, epoch ends.
    records = [{"step": 0, "compile_time_s": 1.2}]
    for s in range(1, 41):
        records.append({"step": 5 * s, "epoch": s // 10, "loss": 1.0 / s, "grad_norm": 0.1})
        if s % 10 == 0:
            records.append(
                {"epoch": s // 10, "step": 5 * s, "val_loss": 1.5 / s, "best_val_loss": 0}
            )
    run_dir = tmp_path / "demo" / "stage1"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    train, val = plots.read_metrics(str(run_dir))
    assert len(train) == 40 and len(val) == 4
    _assert_png(plots.plot_training(str(run_dir), str(tmp_path / "training.png")))
    assert plots.training_figure(str(run_dir)).axes[0].get_title() == "Training: demo/stage1"


def test_plot_training_needs_losses(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 0, "compile_time_s": 1}) + "\n")
    with pytest.raises(ValueError, match="no loss records"):
        plots.plot_training(str(tmp_path), str(tmp_path / "t.png"))
