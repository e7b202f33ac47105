"""The detection benchmark, one runner for every protocol, in one run.

    python benchmarks/detection.py [--quick] [--parts=stage1,paper,cross] [--seeds=0,1]
        [--only=cicids2017,...] [--candidates=defaults,...]

Every model is trained by one harness (``detection_harness``: the library's ``loop.fit``,
same early stopping on the validation loss). Three parts:

* ``stage1``: stage 1 judged family by family (``families``): every candidate config and
  every peer (``peers``: PCA, Isolation Forest, kNN, PyOD's autoencoder, each on the log
  and the quantile representation) on the protocols of ``protocols`` (four per-flow
  datasets on days training never saw, the Friday DDoS day in sequence, ``make demo``'s
  generated day), two seeds; worst family, mean over families, the selection rule, a
  leave-one-dataset-out view.
* ``paper``: the reference paper's protocol: random stratified split, per flow, on three
  sampled files; CNN, DNN and the two-stage LSTM-AE (stage 2: frozen or fine-tuned
  encoder, chosen on validation), stage 1 at 1% FPR, and the paper's fixed 0.1 MAE
  threshold under min-max scaling. The paper's five numbers use weighted averages.
* ``cross``: trained on the CICIDS2017 files, tested on the CSE-CIC-IDS2018 files, on
  their common features, benign vs attack.

Writes ``benchmarks/results/detection.json`` and ``.md`` after each part (``--quick``: into
a scratch directory, so a smoke run never overwrites the real results);
``--render_only`` re-renders the ``.md`` from the ``.json``; ``--merge=OTHER.json`` joins the
parts of a run made beside it (other ``--parts``) into it, then re-renders.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

import detection_harness as harness
import detection_report
import families
import jax
import machine
import numpy as np
import protocols
from absl import app, flags, logging

from lstmae_jax.config import Config
from lstmae_jax.data import dataset, windows
from lstmae_jax.detect import metrics

RESULTS = protocols.REPO / "benchmarks" / "results"
DATA = protocols.DATA

_QUICK = flags.DEFINE_bool("quick", False, "A smoke run: few steps, one seed, no PyOD.")
_PARTS = flags.DEFINE_list("parts", ["stage1", "paper", "cross"], "Parts to run.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1"], "Stage-1 seeds (each a separate training).")
_ONLY = flags.DEFINE_list("only", [], "Stage-1 protocols to run (default: all).")
_CANDIDATES = flags.DEFINE_list("candidates", [], "Stage-1 candidates (default: all).")
_RENDER = flags.DEFINE_bool("render_only", False, "Only re-render the .md from the .json.")
_KEEP = flags.DEFINE_bool("keep_workdir", False, "Keep run directories and checkpoints.")
_MERGE = flags.DEFINE_string(
    "merge", None, "Join the parts of this detection.json (a run of other --parts, e.g. in a"
    " second process) into the results' detection.json, and re-render; nothing is run.",
)  # fmt: skip

PAPER_DATASETS = {
    "cicids2017": ["cicids2017/stratified_sample_all_days.parquet"],
    "cicids2017_improved": ["cicids2017_improved/improved_random_sample_non_wednesday.parquet"],
    "csecicids2018": protocols.Y2018,
}
# The paper's Table (percent; loss = test cross-entropy).
PAPER = {
    "CNN": {"accuracy": 98.7, "loss": 0.0245, "recall": 98.6, "precision": 98.52, "f1": 98.86},
    "DNN": {"accuracy": 98.55, "loss": 0.0107, "recall": 98.45, "precision": 98.31, "f1": 98.21},
    "LSTM-AE": {
        "accuracy": 99.20,
        "loss": 0.0040,
        "recall": 99.20,
        "precision": 99.12,
        "f1": 99.02,
    },
}
SEED = 0
RANDOM_FRACTIONS = (0.6, 0.2, 0.2)


def settings(quick: bool) -> dict:
    """The classifier parts' knobs, declared once (stage 1 runs the library defaults)."""
    common = dict(log_every_steps=1000, checkpoint_every_steps=10**9, keep_checkpoints=1)
    s = {
        "base": Config(batch_size=256, seed=SEED, **common),
        "classifier_epochs": 60,  # caps; early stopping on the validation loss ends runs
        "classifier_patience": 5,
        "classifier_lrs": (1e-3, 3e-3),  # (paper): every classifier gets this grid
        "other_classifier_lrs": (1e-3,),  # (cross): one learning rate
        "freeze_options": (True, False),
        "max_steps": None,
    }
    if quick:
        s.update(classifier_epochs=2, classifier_lrs=(1e-3,), max_steps=25)
    return s


def _binary(w: windows.Windowed) -> dict[str, np.ndarray]:
    return {s: (v != 0).astype(np.int32) for s, v in w.label.items()}


def classifiers(H, S, w, cfg0, stage1, lrs, labels=None, names=None) -> dict:
    """Stage 2 (frozen / fine-tuned encoder), DNN and CNN, each chosen on validation from
    the same learning-rate grid (stage 2 also from frozen / fine-tuned)."""
    labels = labels if labels is not None else w.label
    names = names if names is not None else w.classes
    cfg = cfg0.replace(epochs=S["classifier_epochs"], patience=S["classifier_patience"])
    out = {}
    grids = {
        "stage2": [
            cfg.replace(stage=2, freeze_encoder=fr, learning_rate=lr)
            for fr in S["freeze_options"]
            for lr in lrs
        ],
        "dnn": [cfg.replace(model="dnn", learning_rate=lr) for lr in lrs],
        "cnn": [cfg.replace(model="cnn", learning_rate=lr) for lr in lrs],
    }
    for name, grid in grids.items():
        cands = []
        for c in grid:
            init = harness.encoder_init(stage1) if name == "stage2" else None
            t = H.fit(name, c, w, labels=labels, init=init)
            val = harness.classifier_metrics(t, w, "val", labels["val"], names)
            cands.append((t, {**t.record(), "val": val}))
        best = harness.pick(cands, lambda r: harness.classifier_key(r["val"]))
        t = cands[best][0]
        out[name] = {
            "candidates": [r for _, r in cands],
            "chosen": best,
            "test": harness.classifier_metrics(t, w, "test", labels["test"], names),
        }
    return out


def seen_in_train(flows: dataset.Flows, w: windows.Windowed) -> float:
    """Share of test flows (T=1) whose feature vector is exactly that of a training flow:
    the leakage of a random split of sampled flows."""
    rows = np.ascontiguousarray(flows.x_NxF)
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    train = set(keys[w.starts["train"]].tolist())
    return float(np.mean([k in train for k in keys[w.starts["test"]].tolist()]))


def paper_experiment(H, S, name: str, files: list[str]) -> dict:
    flows = dataset.load_flows([str(DATA / f) for f in files])
    cfg0 = S["base"].replace(window=1, split="random", split_fractions=RANDOM_FRACTIONS)
    build = dict(window=1, split="random", fractions=RANDOM_FRACTIONS, seed=SEED)
    w1 = windows.build(
        flows, train_benign_only=True, scaler_kinds=cfg0.representations(), **build
    )  # fmt: skip
    w = windows.build(flows, scalers=w1.scalers[:1], **build)  # the same split: seed, strata
    assert np.array_equal(w1.starts["test"], w.starts["test"])
    y_test = w.label["test"] != 0
    names_test = np.asarray(w.classes, dtype=object)[w.label["test"]]
    print(f"[paper] {name}: {len(flows)} flows, {len(flows.features)} features", flush=True)

    def detect(t, wx, threshold=None):
        det, thr = harness.calibrate(t, wx)
        s = harness.ae_scores(t, det, wx, wx.starts["test"])
        return harness.detector_metrics(y_test, s, threshold or thr, names_test)

    s1 = H.fit("stage1", cfg0, w1)
    out = {
        "files": files,
        "protocol": "random stratified split by label (0.6/0.2/0.2, seed 0), per flow (T=1)",
        "test_rows_also_in_train": seen_in_train(flows, w),
        "features": len(flows.features),
        "splits": w.summary(),
        "stage1": {**s1.record(), "test_fpr_1pct": detect(s1, w1)},
    }
    # The paper's fixed 0.1 is a mean-absolute-error threshold under min-max scaling.
    cfg_m = cfg0.replace(scaler="minmax", score="mae", members=())
    wm = windows.build(flows, train_benign_only=True, scaler_kinds=("minmax",), **build)
    tm = H.fit("stage1_minmax", cfg_m, wm)
    out["stage1_minmax"] = {
        **tm.record(),
        "test_fixed_0.1": detect(tm, wm, metrics.calibrate("fixed", None, value=0.1)),
        "test_fpr_1pct": detect(tm, wm),
    }
    out.update(classifiers(H, S, w, cfg0, s1, S["classifier_lrs"]))
    return out


def _with_test(w: windows.Windowed, wt: windows.Windowed) -> windows.Windowed:
    """``w`` with its test split replaced by ``wt``'s (the rows of ``wt`` appended)."""
    import dataclasses

    off = len(w.x_NxF)
    lut = np.array([w.classes.index(c) if c in w.classes else len(w.classes) for c in wt.classes])
    return dataclasses.replace(
        w,
        x_NxF=np.concatenate([w.x_NxF, wt.x_NxF]),
        starts={**w.starts, "test": wt.starts["test"] + off},
        # Binary only: a target class unknown to the source keeps "attack" (code != 0).
        label={**w.label, "test": lut[wt.label["test"]].astype(np.int32)},
        any_attack={**w.any_attack, "test": wt.any_attack["test"]},
    )


def cross_experiment(H, S) -> dict:
    src = [str(DATA / "cicids2017")]
    dst = [str(DATA / f) for f in PAPER_DATASETS["csecicids2018"]]
    f_src, f_dst = dataset.load_flows(src), dataset.load_flows(dst)
    common = [f for f in f_src.features if f in set(f_dst.features)]
    f_src = dataset.load_flows(src, features=common)
    f_dst = dataset.load_flows(dst, features=common)
    print(f"[cross] {len(f_src)} -> {len(f_dst)} flows, {len(common)} common features", flush=True)
    cfg0 = S["base"].replace(
        window=1, split="random", split_fractions=RANDOM_FRACTIONS, task="binary"
    )
    build = dict(window=1, split="random", fractions=RANDOM_FRACTIONS, seed=SEED)
    w1 = windows.build(
        f_src, train_benign_only=True, scaler_kinds=cfg0.representations(), **build
    )  # fmt: skip
    w = windows.build(f_src, scalers=w1.scalers[:1], **build)
    # All target flows are test windows, scaled as the source's training rows.
    wt = windows.build(
        f_dst, window=1, split="temporal", fractions=(0.0, 0.0, 1.0), scalers=w1.scalers
    )
    y_dst = wt.label["test"] != 0
    names_dst = np.asarray(wt.classes, dtype=object)[wt.label["test"]]
    s1 = H.fit("stage1", cfg0, w1)
    det, thr = harness.calibrate(s1, w1)
    out = {
        "train_files": sorted(os.path.relpath(f, DATA) for f in f_src.files),
        "test_files": PAPER_DATASETS["csecicids2018"],
        "features": common,
        "protocol": (
            "train/val: CICIDS2017 files, random stratified split (0.6/0.2/0.2, seed 0; the "
            "2017 test part is unused); test: every CSE-CIC-IDS2018 flow; T=1; benign vs attack"
        ),
        "source_splits": w.summary(),
        "target_labels": wt.summary()["test"]["labels"],
        "stage1": {
            **s1.record(),
            "test": harness.detector_metrics(
                y_dst, harness.ae_scores(s1, det, wt, wt.starts["test"]), thr, names_dst
            ),
        },
    }
    wx = _with_test(w, windows.build(
        f_dst, window=1, split="temporal", fractions=(0.0, 0.0, 1.0), scalers=w1.scalers[:1]
    ))  # fmt: skip
    binary = classifiers(
        H,
        S,
        wx,
        cfg0,
        s1,
        S["other_classifier_lrs"],
        labels=_binary(wx),
        names=["Benign", "Attack"],
    )
    out.update(binary)
    return out


def stage1_part(H, report: dict, quick: bool, seeds, save) -> None:
    names = _CANDIDATES.value or (families.QUICK_CANDIDATES if quick else list(families.CANDIDATES))
    report["candidates"] = {n: families.CANDIDATES[n] for n in names}
    cache = H.root
    for key, make in protocols.PROTOCOLS.items():
        if _ONLY.value and key not in _ONLY.value:
            continue
        p = make(cache)
        w = p.windowed(())
        print(
            f"[stage1] {p.name}: {len(p.flows)} flows, {len(p.flows.features)} features", flush=True
        )
        ds = report["datasets"].setdefault(key, {})
        ds.update(
            about=p.about,
            window=p.window,
            features=len(p.flows.features),
            train_windows=int(len(w.starts["train"])),
            calibration_windows=int((~w.any_attack["val"]).sum()),
            test_groups={g: int(len(s)) for g, s in p.tests.items()},
        )
        ds["peers"] = families.run_peers(p, quick)
        save()
        ds["stage1"] = families.run_stage1(H, p, names, seeds, quick)
        save()


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    out_json = RESULTS / "detection.json"
    if _MERGE.value:  # the parts of two runs side by side, each as it was measured
        report, other = json.loads(out_json.read_text()), json.loads(open(_MERGE.value).read())
        for part in ("paper", "cross"):
            if part in other:
                report[part] = other[part]
        if other.get("datasets"):
            report["datasets"] = other["datasets"]
        report["command"] = f"{report['command']}; {other['command']} (side by side)"
        report["wall_seconds"] = max(report["wall_seconds"], other["wall_seconds"])
    elif _RENDER.value:
        report = json.loads(out_json.read_text())
    if _MERGE.value or _RENDER.value:  # the numbers untouched: the text is a function of them
        detection_report.finish(report)
        out_json.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
        (RESULTS / "detection.md").write_text(detection_report.markdown(report))
        return
    quick = _QUICK.value
    S = settings(quick)
    seeds = [int(s) for s in _SEEDS.value][: 1 if quick else None]
    workdir = tempfile.mkdtemp(prefix="lstmae-detection-")
    # Repeated shapes across the many small runs compile once.
    jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    H = harness.Harness(os.path.join(workdir, "runs"), max_steps=S["max_steps"])
    out_dir = pathlib.Path(workdir) if quick else RESULTS
    flags_used = " ".join(a for a in sys.argv[1:] if a.startswith("--"))
    report = {
        "command": f"python benchmarks/detection.py {flags_used}".strip(),
        "quick": quick,
        "machine": machine.machine_info(),
        "seeds": seeds,
        "settings": {
            k: (harness.config_delta(v) if isinstance(v, Config) else v) for k, v in S.items()
        },
        "paper_reference": PAPER,
        "datasets": {},
    }
    t0 = time.perf_counter()

    def save():  # after every part, so a long run leaves what it has measured
        report["wall_seconds"] = round(time.perf_counter() - t0, 1)
        detection_report.finish(report)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "detection.json").write_text(
            json.dumps(report, indent=1, allow_nan=False) + "\n"
        )
        (out_dir / "detection.md").write_text(detection_report.markdown(report))

    try:
        if "stage1" in _PARTS.value:
            stage1_part(H, report, quick, seeds, save)
        if "paper" in _PARTS.value:
            report["paper"] = {}
            for name, files in PAPER_DATASETS.items():
                report["paper"][name] = paper_experiment(H, S, name, files)
                save()
        if "cross" in _PARTS.value:
            report["cross"] = cross_experiment(H, S)
            save()
    finally:
        H.close(keep=_KEEP.value)
    save()
    if not quick and not _KEEP.value:
        shutil.rmtree(workdir, ignore_errors=True)
    print(detection_report.summary_tables(report))
    print(f"wall time {report['wall_seconds']:.0f}s; wrote {out_dir}/detection.json and .md")


if __name__ == "__main__":
    sys.exit(app.run(main))
