"""The one harness of ``benchmarks/detection.py``: train, score, and pick on validation.

Every model of the detection benchmark is trained by ``Harness.fit`` (the library's
``loop.fit`` in a fresh run directory, with the same batch size, epoch cap and early
stopping), scored by ``classifier_metrics`` or ``detector_metrics`` (stage 1: its members
fitted and its threshold chosen by ``calibrate``, the library's calibration), and
classifiers are compared by ``pick`` on validation numbers only; test numbers are
computed for the chosen candidate alone.

Shape letters as in the library: W windows, C classes.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence

import numpy as np
from flax import nnx

from lstmae_jax.config import Config
from lstmae_jax.data import windows
from lstmae_jax.detect import calibration, detector, inference, metrics
from lstmae_jax.jobs import rundir
from lstmae_jax.train import loop


def sequence_cuts(label_N: np.ndarray, train_fraction: float) -> tuple[int, int, int]:
    """(train_end, first_run, select_end) of a day in flow order: the first benign run is
    rows [0, first_run), its first ``train_fraction`` trains stage 1 and the rest is the
    benign hold-out; the selection chunk (the first attack run and the benign run after
    it) ends at select_end, and the test part starts there."""
    first_run = int(np.flatnonzero(label_N != 0)[0])
    train_end = int(train_fraction * first_run)
    attack_end = first_run + int(np.argmax(label_N[first_run:] == 0))
    select_end = attack_end + int(np.argmax(label_N[attack_end:] != 0))
    return train_end, first_run, select_end


def config_delta(cfg: Config) -> dict:
    """The options of ``cfg`` that differ from the library defaults (compact JSON)."""
    default = Config().to_json()
    return {k: v for k, v in cfg.to_json().items() if default[k] != v}


@dataclasses.dataclass
class Trained:
    name: str
    cfg: Config
    model: nnx.Module  # best parameters (early stopping on the validation loss)
    run_dir: str
    steps: int
    epochs: int
    best_val_loss: float
    seconds: float
    ended: str

    def record(self) -> dict:
        return {
            "config": config_delta(self.cfg),
            "steps": self.steps,
            "epochs_run": self.epochs,
            "ended": self.ended,
            "best_val_loss": _finite(self.best_val_loss),
            "train_seconds": round(self.seconds, 1),
        }


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


class Harness:
    """Trains models in run directories under ``root``; ``max_steps`` caps each fit (quick)."""

    def __init__(self, root: str, max_steps: int | None = None):
        self.root = root
        self.max_steps = max_steps
        os.makedirs(root, exist_ok=True)

    def fit(
        self,
        name: str,
        cfg: Config,
        data: windows.Windowed,
        *,
        labels: dict[str, np.ndarray] | None = None,
        init: Callable[[nnx.Module], None] | None = None,
    ) -> Trained:
        run_dir = tempfile.mkdtemp(prefix=f"{name}-", dir=self.root)
        t0 = time.perf_counter()
        res = loop.fit(cfg, run_dir, data, labels=labels, init=init, max_steps=self.max_steps)
        seconds = time.perf_counter() - t0
        if res.preempted:  # fit turns SIGTERM into a clean stop; a benchmark must not go on
            raise SystemExit(f"{name}: SIGTERM during training; stopping the benchmark")
        print(
            f"  fit {name}: {res.steps} steps, {len(res.history)} epochs, "
            f"val_loss {res.best_val_loss:.5g}, {seconds:.1f}s",
            flush=True,
        )
        return Trained(
            name,
            cfg,
            res.model,
            run_dir,
            res.steps,
            len(res.history),
            res.best_val_loss,
            seconds,
            res.ended,
        )

    def close(self, keep: bool) -> None:
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)


def encoder_init(stage1: Trained) -> Callable[[nnx.Module], None]:
    """Stage 2 starts from the stage-1 encoder (an ensemble hands over member 0's)."""
    return rundir.stage1_encoder_init(stage1.run_dir)


# ------------------------------------------------------------------------ scoring


def calibrate(t: Trained, w: windows.Windowed) -> tuple[detector.Detector, metrics.Threshold]:
    """Stage 1's members fitted on ``w``'s benign training windows and its threshold on
    the benign validation windows, as the library does after training."""
    det, threshold, _ = calibration.fit_and_choose(t.cfg, t.model, w)
    return det, threshold


def ae_scores(
    t: Trained, det: detector.Detector, w: windows.Windowed, starts_W: np.ndarray
) -> np.ndarray:
    """score_W: the run's stage-1 score (``detector.outputs``, its fitted members)."""
    s_W, _ = inference.window_scores(
        t.model, det, w.scalers, w.x_NxF, starts_W, w.window, t.cfg.eval_batch_size
    )
    return s_W


def log_probs(t: Trained, w: windows.Windowed, starts_W: np.ndarray) -> np.ndarray:
    logits_WxC = inference.logits(
        t.model, w.scaler, w.x_NxF, starts_W, w.window, t.cfg.eval_batch_size
    )
    z = logits_WxC.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def classifier_metrics(
    t: Trained, w: windows.Windowed, split: str, y_W: np.ndarray, names: Sequence[str]
) -> dict:
    """Accuracy, test cross-entropy, weighted and macro P/R/F1, and the attack-vs-benign view.

    ``y_W`` are the targets in the model's class codes (0 = Benign); ``names`` their names.
    """
    logp_WxC = log_probs(t, w, w.starts[split])
    pred_W = logp_WxC.argmax(axis=1)
    rep = metrics.classification_report(y_W, pred_W, list(names))
    yb, pb = (y_W != 0).astype(np.int64), (pred_W != 0).astype(np.int64)
    p, r, f1 = metrics.precision_recall_f1(yb, pb, 2, average="binary")
    nll_W = -logp_WxC[np.arange(len(y_W)), y_W]
    wrong_W = pred_W != y_W
    cm = np.asarray(rep["confusion_matrix"])
    off = [(int(cm[i, j]), i, j) for i in range(len(cm)) for j in range(len(cm)) if i != j]
    out = {
        "n": int(len(y_W)),
        "accuracy": rep["accuracy"],
        "loss": float(nll_W.mean()),
        # How much of the mean cross-entropy the misclassified windows alone contribute.
        "errors": int(wrong_W.sum()),
        "loss_from_errors": float(nll_W[wrong_W].sum() / len(y_W)),
        "top_confusions": [
            [names[i], names[j], n] for n, i, j in sorted(off, reverse=True)[:5] if n
        ],
        "weighted": rep["weighted"],
        "macro": rep["macro"],
        "attack": {
            "precision": p,
            "recall": r,
            "f1": f1,
            "fpr": metrics.false_positive_rate(yb, pb),
        },
        "per_class": {
            c: {"support": v["support"], "recall": round(v["recall"], 4), "f1": round(v["f1"], 4)}
            for c, v in rep["per_class"].items()
            if v["support"]
        },
    }
    if 0 < yb.sum() < len(yb):  # attack probability = 1 - P(Benign)
        out["attack"]["roc_auc"] = metrics.roc_auc(yb, -logp_WxC[:, 0])
    return out


def detector_metrics(
    y_W: np.ndarray,
    score_W: np.ndarray,
    threshold: metrics.Threshold,
    names_W: np.ndarray | None = None,
) -> dict:
    """metrics.detection_report at ``threshold``, without the bulky parts."""
    rep = metrics.detection_report(y_W, score_W, threshold, attack_labels=names_W)
    keep = ("n", "n_attack", "roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "fpr")
    out = {k: rep[k] for k in keep}
    out["threshold"] = {"value": threshold.value, "method": threshold.method, **threshold.params}
    if "per_attack" in rep:
        out["per_attack_recall"] = {
            k: [v["detected"], v["n"]] for k, v in rep["per_attack"].items()
        }
    return out


def fpr_threshold(cfg: Config, benign_val_scores: np.ndarray) -> metrics.Threshold:
    """The benchmark's operating point: 1% FPR on benign validation windows."""
    return calibration.threshold_from_scores(
        cfg.replace(threshold="fpr", target_fpr=0.01), benign_val_scores
    )


def pick(candidates: list[tuple[Trained, dict]], key: Callable[[dict], tuple]) -> int:
    """Index of the candidate whose validation record maximises ``key`` (first on ties)."""
    best = 0
    for i, (_, rec) in enumerate(candidates):
        if key(rec) > key(candidates[best][1]):
            best = i
    return best


def classifier_key(val: dict) -> tuple:
    """Validation ranking of classifiers: weighted F1, then lower cross-entropy."""
    return (round(val["weighted"]["f1"], 6), -val["loss"])
