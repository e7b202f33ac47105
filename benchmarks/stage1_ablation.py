"""Stage-1 ablation on the sequence protocol: what each idea changes, measured in one run.

    python benchmarks/stage1_ablation.py [--quick] [--window=10]

Same rows as ``benchmarks/detection.py`` (b): train on the first benign run's head of the
Friday DDoS day, threshold (1% FPR) on its rest, selection chunk, test = all later flows.
Each variant is one change to the library defaults (a denoising LSTM-AE with the plateau
schedule, the z-score error model); every trained network is scored by each error
model, so the table separates what the network does from what the score does. Test
numbers are reported for every variant because this is an ablation, not a selection:
``detection.py`` chooses on the selection chunk alone.

Writes ``benchmarks/results/stage1_ablation.json`` and ``.md`` (``--quick``: a temp dir).
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import tempfile
import time

import detection
import detection_harness as harness
import machine
from absl import app, flags, logging

from lstmae_jax.config import Config
from lstmae_jax.data import dataset, windows
from lstmae_jax.detect import metrics

_QUICK = detection._QUICK  # --quick: a few steps per variant (smoke test)
_WINDOW = flags.DEFINE_integer("window", 10, "T of every variant.")

# name -> overrides of the library defaults (and the seed); one idea each.
VARIANTS = {
    "default (denoising sigma=1, plateau LR, clip 1)": {},
    "default, seed 1": {"seed": 1},
    "no denoising": {"input_noise": 0.0},
    "no denoising, seed 1": {"input_noise": 0.0, "seed": 1},
    "denoising sigma=0.5": {"input_noise": 0.5},
    "denoising sigma=2": {"input_noise": 2.0},
    "previous trainer (constant LR, no clip, no warmup, no denoising)": {
        "input_noise": 0.0,
        "lr_decay": 1.0,
        "grad_clip": 0.0,
        "warmup_steps": 0,
    },
    "robust scaler (median/IQR)": {"scaler": "robust"},
    "scaled inputs clipped to [-4, 4]": {"input_clip": 4.0},
    "latent 32 (decoder 16)": {"encoder_sizes": (32,), "decoder_sizes": (16,)},
    "weight decay 0.01 (AdamW)": {"weight_decay": 0.01},
}


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    T = _WINDOW.value
    flows = dataset.load_flows(str(detection.DATA / detection.SEQ_DIR))
    n = len(flows)
    rows = detection.sequence_rows(flows)
    (_, train_end), (_, first_run), (_, select_end) = (
        rows["stage1_train"],
        rows["stage1_holdout_benign"],
        rows["stage1_selection"],
    )
    fractions = (train_end / n, (first_run - train_end) / n, 1 - first_run / n)
    workdir = tempfile.mkdtemp(prefix="lstmae-ablation-")
    H = harness.Harness(os.path.join(workdir, "runs"), max_steps=25 if _QUICK.value else None)
    base = Config(
        window=T,
        batch_size=256,
        learning_rate=3e-3,
        epochs=200,
        log_every_steps=1000,
        checkpoint_every_steps=10**9,
        keep_checkpoints=1,
    )
    t0 = time.perf_counter()
    results = {}
    for name, overrides in VARIANTS.items():
        kw = dict(overrides)
        scaler_kind, clip = kw.get("scaler", "standard"), kw.get("input_clip", 0.0)
        w = windows.build(
            flows,
            window=T,
            split="temporal",
            fractions=fractions,
            train_benign_only=True,
            scaler_kind=scaler_kind,
            scaler_clip=clip,
        )
        starts = w.starts["test"]
        sel, tst = starts[starts + T - 1 < select_end], starts[starts >= select_end]
        y_sel = detection._any_attack(flows.label_N, sel, T)
        y_tst = detection._any_attack(flows.label_N, tst, T)
        print(f"[{name}]", flush=True)
        t = H.fit("stage1", base.replace(**kw), w)
        rec = {**t.record(), "by_score": {}}
        for kind in ("mae", "zscore", "mahalanobis"):
            tk = harness.with_score(t, kind, w)
            thr = harness.fpr_threshold(tk.cfg, harness.ae_scores(tk, w, w.starts["val"]))
            d = harness.detector_metrics(y_tst, harness.ae_scores(tk, w, tst), thr)
            rec["by_score"][kind] = {
                "selection_roc_auc": metrics.roc_auc(y_sel, harness.ae_scores(tk, w, sel)),
                **{k: d[k] for k in ("roc_auc", "pr_auc", "recall", "fpr")},
            }
            print(f"  {kind}: {json.dumps(rec['by_score'][kind])}", flush=True)
        results[name] = rec
    H.close(keep=False)
    report = {
        "command": "python benchmarks/stage1_ablation.py" + (" --quick" if _QUICK.value else ""),
        "machine": machine.machine_info(),
        "window": T,
        "rows": rows,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "variants": results,
    }
    out = pathlib.Path(workdir if _QUICK.value else detection.RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stage1_ablation.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "stage1_ablation.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    m = report["machine"]
    L = [
        "# Stage-1 ablation (sequence protocol, Friday DDoS day)",
        "",
        f"`{report['command']}`, T={report['window']}, {report['wall_seconds']:.0f} s on "
        f"{m['cpu_model']} ({m['cpu_count']} cores), jax {m['jax']}, {m['date']}. One change to "
        "the defaults per row; each network scored by every error model. Test = all flows "
        "after the selection chunk; recall and FPR at the threshold set for 1% FPR on the "
        "held-out benign windows.",
        "",
        "| variant | epochs (ended by) | mae ROC AUC | zscore ROC AUC | zscore recall % "
        "| zscore FPR % | mahalanobis ROC AUC | mahalanobis recall % | mahalanobis FPR % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["variants"].items():
        b = r["by_score"]
        ended = "early stop" if r["ended"].startswith("early") else r["ended"].split(":")[0]
        L.append(
            f"| {name} | {r['epochs_run']} ({ended}) | {b['mae']['roc_auc']:.4f} "
            f"| {b['zscore']['roc_auc']:.4f} | {100 * b['zscore']['recall']:.1f} "
            f"| {100 * b['zscore']['fpr']:.2f} | {b['mahalanobis']['roc_auc']:.4f} "
            f"| {100 * b['mahalanobis']['recall']:.1f} | {100 * b['mahalanobis']['fpr']:.2f} |"
        )
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(app.run(main))
