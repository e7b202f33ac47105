"""Score a dataset with a trained workdir and write the evaluation report.

Ground truth. Stage 1 (anomaly detection): a window is an attack window when any of its
flows is an attack, named after its last attack flow; benign windows hold benign flows
only, the same definition the threshold was calibrated with. Stage 2 and the baselines
(classification): the label of the window's last flow, the label they were trained on.

Stage 1 (anomaly detection): the run's score (``detector.outputs`` with the members
fitted after training: one reconstruction score, or several members fused); a window is
flagged when its score is above the threshold calibrated after training. With several
members the report also gives each member's own ROC AUC. The report's per-class feature
table ranks features by their mean contribution to the score. Stage 2 and the
baselines: argmax of the logits.
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import logging

from lstmae_jax import atomic
from lstmae_jax.config import Config
from lstmae_jax.data import dataset, inputs, windows
from lstmae_jax.detect import calibration, inference, metrics
from lstmae_jax.jobs import rundir
from lstmae_jax.train import monitor

TOP_FEATURES = 5


def feature_attribution(mean_CxF: np.ndarray, label_W: np.ndarray, classes, features) -> dict:
    """Per class with windows: the features with the largest mean contribution to the
    anomaly score (``mean_CxF``: each class's mean contribution)."""
    out = {}
    for c in np.unique(label_W):
        mean_F = mean_CxF[c]
        top = np.argsort(mean_F)[::-1][:TOP_FEATURES]
        out[classes[c]] = {features[j]: round(float(mean_F[j]), 6) for j in top}
    return out


def _windows_for(meta: dict, data_path: str, split: str) -> tuple[windows.Windowed, str]:
    """The evaluation windows, cut as the run was trained, with its scalers."""
    cfg = Config.from_json(meta["config"])
    flows = dataset.load_flows(
        data_path, features=meta["features"], nonfinite=cfg.nonfinite, negative=cfg.negative
    )
    scalers = rundir.scalers(meta)
    if split == "test":
        return windows.for_config(cfg, flows, scalers=scalers), "test"
    if split == "all":
        w = windows.build(
            flows,
            window=cfg.window,
            stride=cfg.stride,
            split="temporal",
            fractions=(0.0, 0.0, 1.0),
            scalers=scalers,
        )
        return w, "test"
    raise ValueError(f"split must be 'test' or 'all', got {split!r}")


def warn_if_other_data(run_dir: str, meta: dict, data_path: str, split: str) -> None:
    """``--split=test`` cuts the run's split out of ``data_path``: of another dataset, that
    is no held-out data of the run, so say so (the report still gets written)."""
    if split != "test":
        return
    trained_on = Config.from_json(meta["config"]).data
    why = inputs.mismatch(run_dir, data_path, trained_on)
    if why is not None:
        logging.warning(
            "evaluating the test split of %s, which is not the data %s was trained on (%s):"
            " %s; its test windows are not the run's held-out data (--split=all scores every"
            " window)",
            data_path,
            run_dir,
            trained_on,
            why,
        )


def _map_classes(label_W: np.ndarray, eval_classes, train_classes) -> np.ndarray:
    """Evaluation label codes -> the model's class codes (-1: a class the model never saw)."""
    lut = np.array([train_classes.index(c) if c in train_classes else -1 for c in eval_classes])
    return lut[label_W]


def stage1_report(workdir: str, data_path: str, split: str, plot_prefix: str | None = None) -> dict:
    run_dir = rundir.path(workdir, rundir.STAGE1)
    model, meta = rundir.load_run(run_dir)
    warn_if_other_data(run_dir, meta, data_path, split)
    cfg = Config.from_json(meta["config"])
    if rundir.unfinished(workdir, rundir.STAGE1):  # load_run read no calibration
        calibration.load(run_dir)  # raises, naming the missing file
    error_model = meta["error_model"]
    threshold = metrics.Threshold.from_json(meta["threshold"])
    w, s = _windows_for(meta, data_path, split)
    attack_W = windows.last_attack_label(w.label_N, w.starts[s], w.window)
    score_W, mean_CxF, members_WxM = inference.window_scores(
        model, error_model, w.scalers, w.x_NxF, w.starts[s], w.window, cfg.eval_batch_size,
        group_W=attack_W, num_groups=len(w.classes), members=True,
    )  # fmt: skip
    y_W = w.any_attack[s].astype(np.int64)
    names = np.asarray(w.classes, dtype=object)[attack_W]
    report = metrics.detection_report(y_W, score_W, threshold, attack_labels=names)
    report["score"] = error_model.describe()
    if error_model.fused and 0 < y_W.sum() < len(y_W):  # which member sees what
        report["members_roc_auc"] = {
            m.name: metrics.roc_auc(y_W, members_WxM[:, i].astype(np.float64))
            for i, m in enumerate(error_model.members)
        }
    report["feature_contribution"] = feature_attribution(mean_CxF, attack_W, w.classes, w.features)
    if cfg.tensorboard:  # beside the run's training curves, at its last step
        step = (rundir.summary(run_dir) or {}).get("steps", 0)
        aucs = {f"{split}/roc_auc": report["roc_auc"], f"{split}/pr_auc": report["pr_auc"]}
        monitor.write_scalars(run_dir, step, aucs, "evaluation")
    report["windows"] = w.summary()[s]
    if plot_prefix is not None:
        from lstmae_jax.jobs import plots

        title = plot_title(workdir, rundir.STAGE1, split)
        paths = (
            plots.plot_curves(f"{plot_prefix}stage1", y_W, score_W, threshold, title=title)
            if 0 < y_W.sum() < len(y_W)
            else ()
        )
        hist = plots.plot_score_histograms(
            f"{plot_prefix}stage1_scores.png", score_W, names, threshold, title=title
        )
        report["plots"] = [*paths, hist]
    return report


def plot_title(workdir: str, run: str, split: str) -> str:
    """What a figure shows: ``demo/stage1, test split`` (``all windows`` for --split=all)."""
    name = os.path.basename(os.path.normpath(os.path.abspath(workdir)))
    return f"{name}/{run}, " + ("all windows" if split == "all" else f"{split} split")


def _plots_available() -> bool:
    try:
        import matplotlib  # noqa: F401  (the optional `plots` extra)
    except ImportError:
        return False
    return True


def classifier_report(run_dir: str, data_path: str, split: str) -> dict:
    model, meta = rundir.load_run(run_dir)
    warn_if_other_data(run_dir, meta, data_path, split)
    cfg = Config.from_json(meta["config"])
    w, s = _windows_for(meta, data_path, split)
    logits_WxC = inference.logits(
        model, w.scaler, w.x_NxF, w.starts[s], w.window, cfg.eval_batch_size
    )
    pred_W = logits_WxC.argmax(axis=1)
    if cfg.task == "binary":
        names, y_W = ["Benign", "Attack"], (w.label[s] != 0).astype(np.int64)
    else:
        names, y_W = meta["classes"], _map_classes(w.label[s], w.classes, meta["classes"])
    known = y_W >= 0
    report = metrics.classification_report(y_W[known], pred_W[known], names)
    report["unseen_class_windows"] = int((~known).sum())
    # Binary view of any classifier: attack = any class other than Benign (code 0).
    yb, pb = (w.label[s] != 0).astype(np.int64), (pred_W != 0).astype(np.int64)
    p, r, f1 = metrics.precision_recall_f1(yb, pb, 2, average="binary")
    report["binary"] = {
        "accuracy": metrics.accuracy(yb, pb),
        "precision": p,
        "recall": r,
        "f1": f1,
        "fpr": metrics.false_positive_rate(yb, pb),
    }
    return report


def check_output(output: str) -> None:
    """Refuses an output path that could not be written, naming it."""
    if os.path.isdir(output):
        raise ValueError(f"--output={output} is a directory; give a file path (REPORT.json)")
    parent = os.path.dirname(os.path.abspath(output))
    os.makedirs(parent, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise ValueError(f"--output={output}: cannot write in {parent}")


def evaluate_job(
    workdir: str, data_path: str, output: str, split: str = "test", plots: bool = True
) -> dict:
    """Scores ``data_path`` with every run found in ``workdir``; writes JSON and Markdown.

    With ``plots`` and matplotlib installed (the ``plots`` extra), also PNGs beside the
    report: stage-1 ROC and PR curves, score histograms per class, training curves.
    """
    check_output(output)  # before the scoring, not after it
    report: dict = {
        "workdir": os.path.abspath(workdir),
        "data": data_path,
        "split": split,
        "runs": {},
    }
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    plot_prefix = None
    if plots and _plots_available():
        plot_prefix = os.path.splitext(output)[0] + "_"
    elif plots:
        logging.info("matplotlib not installed (pip install -e '.[plots]'): no plots")
    if rundir.trained(rundir.path(workdir, rundir.STAGE1)):
        report["runs"][rundir.STAGE1] = stage1_report(workdir, data_path, split, plot_prefix)
    for name in rundir.CLASSIFIERS:
        run_dir = rundir.path(workdir, name)
        if rundir.trained(run_dir):
            report["runs"][name] = classifier_report(run_dir, data_path, split)
    if not report["runs"]:
        names = ", ".join(f"{name}/" for name in rundir.RUNS)
        raise FileNotFoundError(f"no trained runs ({names}) in {workdir}")
    for name, r in report["runs"].items():
        r["training"] = _training(rundir.path(workdir, name))
    if plot_prefix is not None:
        from lstmae_jax.jobs import plots as plots_lib

        for name, r in report["runs"].items():
            path = plots_lib.plot_training(
                rundir.path(workdir, name), f"{plot_prefix}{name}_training.png"
            )
            r.setdefault("plots", []).append(path)
    atomic.write_json(output, report, allow_nan=False)
    md = os.path.splitext(output)[0] + ".md"
    atomic.write_bytes(md, markdown(report, os.path.dirname(os.path.abspath(md))).encode("utf-8"))
    logging.info("wrote %s and %s", output, md)
    return report


def _training(run_dir: str) -> dict:
    """How the run's training ended, from its summary.json (absent: interrupted)."""
    s = rundir.summary(run_dir)
    if s is None:
        return {"ended": f"unknown: no {rundir.SUMMARY} (training did not finish)"}
    keys = ("ended", "epochs_run", "steps", "best_val_loss")
    return {k: s[k] for k in keys if k in s}


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _feature_table(contribution: dict) -> list[str]:
    """Per class, its top features by mean contribution to the score (``feature_attribution``)."""
    if not contribution:
        return []
    k = max(len(top) for top in contribution.values())
    lines = [
        "Features with the largest mean contribution to the score, per class (the"
        " contributions of all features sum to the window's score):",
        "",
        "| class | " + " | ".join(f"#{i + 1}" for i in range(k)) + " |",
        "|---" * (k + 1) + "|",
    ]
    for name, top in contribution.items():
        cells = [f"`{feature}` {value:.4g}" for feature, value in top.items()]
        lines.append(f"| {name} | " + " | ".join(cells + [""] * (k - len(cells))) + " |")
    return [*lines, ""]


def _figures(runs: dict, figures_dir: str | None) -> list[str]:
    """Every run's plots as Markdown images, relative to ``figures_dir`` when given."""
    paths = [(name, p) for name, r in runs.items() for p in r.get("plots", ())]
    if not paths:
        return []
    lines = ["## Figures", ""]
    for name, path in paths:
        if figures_dir is not None:
            path = os.path.relpath(os.path.abspath(path), figures_dir)
        what = os.path.splitext(os.path.basename(path))[0]
        lines += [f"![{name}: {what}]({path})", ""]
    return lines


def markdown(report: dict, figures_dir: str | None = None) -> str:
    """The report in Markdown. ``figures_dir``: the folder the text is written to, so its
    image links are relative to it (None: the plot paths as the report holds them)."""
    lines = [
        f"# Evaluation of `{report['workdir']}`",
        "",
        f"Data: `{report['data']}`, windows: {report['split']} split.",
        "",
    ]
    runs = report["runs"]
    if rundir.STAGE1 in runs:
        r = runs[rundir.STAGE1]
        t = r["threshold"]
        lines += [
            "## Stage 1: LSTM-AE anomaly detection",
            "",
            f"Score: {r['score']}. Threshold {t['value']:.6g} ({t['method']}, "
            f"{json.dumps(t['params'])}). Training: {r['training']['ended']}.",
            "",
            "| windows | attack | ROC AUC | PR AUC | accuracy | precision | recall | F1 | FPR |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {r['n']} | {r['n_attack']} | {r['roc_auc'] if r['roc_auc'] is None else round(r['roc_auc'], 4)} "
            f"| {r['pr_auc'] if r['pr_auc'] is None else round(r['pr_auc'], 4)} | {_pct(r['accuracy'])} "
            f"| {_pct(r['precision'])} | {_pct(r['recall'])} | {_pct(r['f1'])} | {_pct(r['fpr'])} |",
            "",
        ]
        if r.get("per_attack"):
            lines += [
                "| attack (last attack flow of the window) | windows | detected | recall |",
                "|---|---|---|---|",
            ]
            for name, v in r["per_attack"].items():
                lines.append(f"| {name} | {v['n']} | {v['detected']} | {_pct(v['recall'])} |")
            lines.append("")
        if r.get("members_roc_auc"):
            lines += [
                "Each member alone (ROC AUC of its own score on these windows):",
                "",
                "| member | ROC AUC |",
                "|---|---|",
                *(f"| `{k}` | {v:.4f} |" for k, v in r["members_roc_auc"].items()),
                "",
            ]
        lines += _feature_table(r.get("feature_contribution", {}))
    for name in rundir.CLASSIFIERS:
        if name in runs:
            r = runs[name]
            b = r["binary"]
            lines += [
                f"## {name}: classification",
                "",
                f"Training: {r['training']['ended']}.",
                "",
                "| accuracy | macro F1 | weighted F1 | attack precision | attack recall | attack F1 | FPR |",
                "|---|---|---|---|---|---|---|",
                f"| {_pct(r['accuracy'])} | {_pct(r['macro']['f1'])} | {_pct(r['weighted']['f1'])} "
                f"| {_pct(b['precision'])} | {_pct(b['recall'])} | {_pct(b['f1'])} | {_pct(b['fpr'])} |",
                "",
            ]
    lines += _figures(runs, figures_dir)
    return "\n".join(lines)
