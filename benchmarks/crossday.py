"""Stage 1 on attack days it has never seen: the cross-day, per-family protocol.

    python benchmarks/crossday.py [--quick] [--ablation] [--seeds=0,1]

Per flow (T = 1). For each dataset, stage 1 is trained on benign flows of some days and
scored on other days; every peer is fitted on the same benign flows in the same run.
Each training day is split in time (its first 80% of benign flows train, the rest
calibrate the threshold and stop training early), so the threshold sees every training
day. Datasets (all in ``../shared/data``):

* ``cicids2017``: train on the benign heads of six 2017 day files (not Tuesday's);
  test on the Tuesday day in order (FTP-, SSH-Patator) and on the stratified sample of
  all days (PortScan, DDoS, FTP-Patator);
* ``cicids2017_ddos_day``: the same heads on the 16 features of the Friday DDoS day
  file; test on that day from flow 10,000 on (the heads' DDoS rows come before);
* ``cicids2017_improved``: the corrected re-extraction split by its ``Timestamp`` day:
  train on Monday's benign flows, test Tuesday, Thursday and Friday;
* ``csecicids2018``: train on the benign flows of the all-days 2018 sample; test on the
  14-02-2018 brute-force day (SSH, FTP).

Per attack label with >= ``MIN_FAMILY`` flows in a test day, against that day's benign
flows: ROC AUC, PR AUC, TPR@1% (recall at the score that flags 1% of the day's own
benign flows: the best any threshold could do at that FPR), and recall at the threshold
calibrated on the training days (1% FPR there); per test day the FPR that threshold
measures, and recall/FPR after recalibrating on the day's first ``RECAL_FRACTION`` of
benign flows (``launch/inference.py --calibrate``), measured on the rest of the day.

Stage 1 uses the library's defaults (``Config(window=1)``), nothing tuned here; each
seed is a separate run. ``--ablation`` also trains the ideas that were tried
(``VARIANTS``), each with every seed, against the same peers. Writes
``benchmarks/results/crossday.json`` and ``.md`` (``--quick``: into a scratch directory).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys
import tempfile
import time

import crossday_report
import detection_harness as harness
import jax
import machine
import numpy as np
import peers
import pyarrow.compute as pc
import pyarrow.parquet as pq
from absl import app, flags, logging

from lstmae_jax.config import Config
from lstmae_jax.data import dataset, windows
from lstmae_jax.detect import calibration, inference, metrics

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
MIN_FAMILY = 30  # an attack label is a row of the table from this many test flows on
TRAIN_OF_DAY = 0.8  # per training day: earlier benign flows train, the rest calibrate
RECAL_FRACTION = 0.2  # recalibration: the first fifth of a test day's benign flows
TARGET_FPR = 0.01

_QUICK = flags.DEFINE_bool("quick", False, "One seed, few steps, no PyOD: a smoke run.")
_ABLATION = flags.DEFINE_bool("ablation", False, "Also train every variant in VARIANTS.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1"], "Stage-1 seeds (one run each).")
_ONLY = flags.DEFINE_list("only", [], "Datasets to run (default: all).")

HEADS = [  # benign heads of the 2017 day files, in day order (Tuesday's is a test day)
    "cicids2017/monday_head.parquet",
    "cicids2017/thursday_morning_webattacks_head.parquet",
    "cicids2017/thursday_afternoon_infilteration_head.parquet",
    "cicids2017/friday_morning_head.parquet",
    "cicids2017/friday_afternoon_portscan_head.parquet",
    "cicids2017/friday_afternoon_ddos_head.parquet",
]
TUESDAY = "cicids2017_tuesday_ordered/tuesday_bruteforce_ordered_subsample.parquet"
STRATIFIED = "cicids2017/stratified_sample_all_days.parquet"
DDOS_DAY = "cicids2017_friday_ddos_day/friday_ddos_day_part1.parquet"
DDOS_DAY_FROM = 10_000  # its first 9,998 flows are the DDoS head, a training file
IMPROVED = "cicids2017_improved/improved_random_sample_non_wednesday.parquet"
Y2018 = [
    "csecicids2018/random_sample_all_days.parquet",
    "csecicids2018/wednesday_14_02_bruteforce_balanced_subsample.parquet",
]


@dataclasses.dataclass
class Protocol:
    name: str
    flows: dataset.Flows
    train: np.ndarray  # benign rows of the training days (early part of each)
    val: np.ndarray  # benign rows of the training days (late part): threshold, early stop
    tests: dict[str, np.ndarray]  # test day -> its rows, in file order
    about: str


def _benign_by_day(flows: dataset.Flows, days) -> tuple[np.ndarray, np.ndarray]:
    tr, va = [], []
    for f in days:
        rows = np.flatnonzero((flows.file_N == f) & (flows.label_N == 0))
        cut = int(TRAIN_OF_DAY * len(rows))
        tr.append(rows[:cut])
        va.append(rows[cut:])
    return np.concatenate(tr), np.concatenate(va)


def _rows(flows: dataset.Flows, f: int) -> np.ndarray:
    return np.flatnonzero(flows.file_N == f)


def cicids2017(_cache: str) -> Protocol:
    flows = dataset.load_flows([str(DATA / f) for f in [*HEADS, TUESDAY, STRATIFIED]])
    train, val = _benign_by_day(flows, range(len(HEADS)))
    tests = {"tuesday": _rows(flows, len(HEADS)), "stratified": _rows(flows, len(HEADS) + 1)}
    about = "train: 6 benign 2017 day heads (not Tuesday); test: Tuesday, the stratified sample"
    return Protocol("cicids2017", flows, train, val, tests, about)


def cicids2017_ddos_day(_cache: str) -> Protocol:
    flows = dataset.load_flows([str(DATA / f) for f in [*HEADS, DDOS_DAY]])
    train, val = _benign_by_day(flows, range(len(HEADS)))
    tests = {"friday_ddos_day": _rows(flows, len(HEADS))[DDOS_DAY_FROM:]}
    about = (
        f"train: the same heads on the day file's {len(flows.features)} features; test: the "
        f"Friday DDoS day from flow {DDOS_DAY_FROM:,} on"
    )
    return Protocol("cicids2017_ddos_day", flows, train, val, tests, about)


def cicids2017_improved(cache: str) -> Protocol:
    """The re-extraction, one Parquet file per ``Timestamp`` day (written to ``cache``)."""
    table = pq.read_table(DATA / IMPROVED)
    stamp = pc.cast(table.column("Timestamp"), "string")
    day_N = pc.utf8_slice_codeunits(stamp, 0, 10).to_numpy(zero_copy_only=False)
    days = sorted(set(day_N))
    files = []
    for d in days:
        path = os.path.join(cache, f"improved_{d}.parquet")
        pq.write_table(table.filter(day_N == d), path)
        files.append(path)
    flows = dataset.load_flows(files)
    train, val = _benign_by_day(flows, [0])
    tests = {days[i]: _rows(flows, i) for i in range(1, len(days))}
    about = f"train: benign flows of {days[0]} (Monday); test: {', '.join(days[1:])}"
    return Protocol("cicids2017_improved", flows, train, val, tests, about)


def csecicids2018(_cache: str) -> Protocol:
    flows = dataset.load_flows([str(DATA / f) for f in Y2018])
    train, val = _benign_by_day(flows, [0])
    about = "train: benign flows of the all-days 2018 sample; test: the 14-02-2018 day"
    return Protocol("csecicids2018", flows, train, val, {"2018-02-14": _rows(flows, 1)}, about)


DATASETS = {
    f.__name__: f for f in (cicids2017, cicids2017_ddos_day, cicids2017_improved, csecicids2018)
}


# --------------------------------------------------------------------------- metrics


def day_table(score_N: np.ndarray, p: Protocol, threshold: float) -> dict:
    """Per test day: FPR at ``threshold``, recalibration, and one row per attack label."""
    out = {}
    for day, rows in p.tests.items():
        label, s = p.flows.label_N[rows], score_N[rows].astype(np.float64)
        benign = np.flatnonzero(label == 0)
        n_cal = int(RECAL_FRACTION * len(benign))
        cal = metrics.fpr_threshold(s[benign[:n_cal]], TARGET_FPR)
        later = np.ones(len(rows), bool)
        later[benign[:n_cal]] = False
        at_1pct = metrics.fpr_threshold(s[benign], TARGET_FPR)  # the day's own 1% point
        families = {}
        for c in np.unique(label[label != 0]):
            attack = label == c
            if attack.sum() < MIN_FAMILY:
                continue
            y = np.r_[np.zeros(len(benign), np.int64), np.ones(attack.sum(), np.int64)]
            both = np.r_[s[benign], s[attack]]
            families[p.flows.classes[c]] = {
                "n": int(attack.sum()),
                "roc_auc": metrics.roc_auc(y, both),
                "pr_auc": metrics.average_precision(y, both),
                "tpr_at_1pct": float(np.mean(s[attack] > at_1pct)),
                "recall": float(np.mean(s[attack] > threshold)),
                "recall_recalibrated": float(np.mean(s[attack & later] > cal)),
            }
        out[day] = {
            "benign": len(benign),
            "fpr": float(np.mean(s[benign] > threshold)),
            "fpr_recalibrated": float(np.mean(s[(label == 0) & later] > cal)),
            "families": families,
        }
    return out


def macro(days: dict) -> dict:
    rows = [r for d in days.values() for r in d["families"].values()]
    keys = ("roc_auc", "pr_auc", "tpr_at_1pct", "recall", "recall_recalibrated")
    out = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    out["max_fpr"] = max(d["fpr"] for d in days.values())
    return out


def record(score_N: np.ndarray, p: Protocol, threshold: float, **extra) -> dict:
    days = day_table(score_N, p, threshold)
    return {**extra, "macro": macro(days), "days": days}


# ---------------------------------------------------------------------------- stage 1


def stage1_config(quick: bool, **delta) -> Config:
    """The library defaults at T = 1 (nothing tuned here), bookkeeping kept quiet."""
    cfg = Config(window=1, eval_batch_size=2048, log_every_steps=1000, checkpoint_every_steps=10**6)
    if quick:
        cfg = cfg.replace(epochs=3)
    return cfg.replace(**delta)


TOP_PORTS = 12  # variant: one-hot columns for the most frequent benign destination ports


def port_transform(p: Protocol, x_NxF: np.ndarray, how: str) -> np.ndarray:
    """Variants of the ``dst_port`` column of scaled flows: ``drop`` it (what the rest of
    the flow says), or ``onehot``: the ``TOP_PORTS`` most frequent destination ports of the
    benign training flows as one-hot columns, plus other-port buckets (< 1024, registered,
    ephemeral), so the network can learn each common service's own behaviour."""
    fl = p.flows
    if "dst_port" not in fl.features:
        return x_NxF
    j = fl.features.index("dst_port")
    rest = np.delete(x_NxF, j, axis=1)
    if how == "drop":
        return rest
    port = fl.x_NxF[:, j]
    values, counts = np.unique(port[p.train], return_counts=True)
    top = values[np.argsort(-counts, kind="stable")[:TOP_PORTS]]
    cols = [port == v for v in top]
    known = np.any(cols, axis=0)
    cols += [(port < 1024) & ~known, (port >= 1024) & (port < 49152) & ~known, port >= 49152]
    cols[-1] &= ~known
    return np.concatenate([rest, np.stack(cols, axis=1).astype(np.float32)], axis=1)


def stage1_windowed(p: Protocol, cfg: Config, ports: str = "") -> windows.Windowed:
    """T = 1 windows of the protocol's rows, scaled as fitted on its training rows."""
    split = {"train": p.train, "val": p.val, "test": np.concatenate(list(p.tests.values()))}
    split_N = np.full(len(p.flows), -1, np.int8)  # rows of no split: training days' attacks
    for code, name in enumerate(dataset.SPLITS):
        split_N[split[name]] = code
    w = windows.build(
        p.flows, window=1, split_N=split_N, scaler_kind=cfg.scaler, scaler_clip=cfg.input_clip
    )
    # The protocol's rows come in file order: each split's windows are its rows, in order.
    assert all(np.array_equal(w.starts[k], v) for k, v in split.items())
    if ports:
        x = port_transform(p, w.x_NxF, ports)
        features = tuple(f"c{i}" for i in range(x.shape[1]))
        # The scaler is not used to transform again: only its feature names follow.
        scaler = dataclasses.replace(w.scaler, features=features)
        w = dataclasses.replace(w, x_NxF=x, features=features, scaler=scaler)
    return w


def latent_knn(t: harness.Trained, w: windows.Windowed, rows: np.ndarray) -> np.ndarray:
    """Variant score: mean distance of the encoder's code to its 5 nearest benign training
    codes (a kNN in the learned space instead of the input space)."""
    z_tr = inference.latents(t.model, w.x_NxF, w.starts["train"], 1, 2048)
    z = inference.latents(t.model, w.x_NxF, rows, 1, 2048)
    return peers.fit("knn", z_tr)(z)


def run_stage1(H, p: Protocol, name: str, cfg: Config, ports: str = "", knn=False) -> dict:
    w = stage1_windowed(p, cfg, ports)
    t = H.fit(f"{p.name}-{name}-s{cfg.seed}", cfg, w)
    rows = np.arange(len(p.flows))
    out = {}
    s_N = harness.ae_scores(t, w, rows)
    thr = calibration.threshold_from_scores(cfg, s_N[p.val]).value
    out[name] = record(s_N, p, thr, **t.record())
    if knn:
        k_N = latent_knn(t, w, rows)
        out["latent_knn"] = record(k_N, p, metrics.fpr_threshold(k_N[p.val], TARGET_FPR))
    return out


# Ideas tried (``--ablation``): Config changes from the defaults, or a benchmark-side
# change of the representation. Each is trained with every seed.
VARIANTS = {
    "previous defaults (standard scaler, zscore)": dict(scaler="standard", score="zscore"),
    "standard scaler, sse": dict(scaler="standard", score="sse"),
    "quantile scaler, zscore": dict(score="zscore"),
    "quantile scaler, mae": dict(score="mae"),
    "quantile scaler, mahalanobis": dict(score="mahalanobis"),
    "noise 0.3": dict(input_noise=0.3),
    "no denoising": dict(input_noise=0.0),
    "latent 16": dict(encoder_sizes=(16,), decoder_sizes=(16,)),
    "ensemble of 3": dict(ensemble=3),
    "dst_port dropped": dict(ports="drop"),
    f"top-{TOP_PORTS} benign dst ports one-hot, sse": dict(ports="onehot"),
    f"top-{TOP_PORTS} benign dst ports one-hot, zscore": dict(ports="onehot", score="zscore"),
}


def peers_for(p: Protocol, quick: bool) -> dict:
    """Every peer on the standard (log1p + z) and on the quantile representation."""
    out = {}
    names = [n for n in peers.available() if n != "pyod_lstm" and not (quick and "pyod" in n)]
    for kind in ("standard", "quantile"):
        scaler = dataset.fit_scaler(p.flows.x_NxF[p.train], p.flows.features, kind)
        x = scaler.transform(p.flows.x_NxF)
        for name in names:
            t0 = time.perf_counter()
            s_N = peers.fit(name, x[p.train])(x)
            thr = metrics.fpr_threshold(s_N[p.val], TARGET_FPR)
            rec = record(s_N, p, thr, seconds=round(time.perf_counter() - t0, 1))
            out[f"{name}/{kind}"] = rec
            print(f"  peer {name}/{kind}: macro ROC AUC {rec['macro']['roc_auc']:.4f}", flush=True)
    return out


def run_dataset(H, p: Protocol, seeds: list[int], quick: bool, ablation: bool) -> dict:
    print(f"[{p.name}] {len(p.flows)} flows, {len(p.flows.features)} features", flush=True)
    out = {
        "about": p.about,
        "features": len(p.flows.features),
        "train_benign": len(p.train),
        "calibration_benign": len(p.val),
        "test_days": {d: int(len(r)) for d, r in p.tests.items()},
        "peers": peers_for(p, quick),
        "stage1": {},
        "variants": {},
    }
    for seed in seeds:
        res = run_stage1(H, p, "defaults", stage1_config(quick, seed=seed), knn=ablation)
        out["stage1"][str(seed)] = res.pop("defaults")
        for k, v in res.items():
            out["variants"].setdefault(k, {})[str(seed)] = v
        m = out["stage1"][str(seed)]["macro"]
        print(f"  stage 1 seed {seed}: macro ROC AUC {m['roc_auc']:.4f}", flush=True)
        if not ablation:
            continue
        for name, delta in VARIANTS.items():
            delta = dict(delta)
            ports = delta.pop("ports", "")
            res = run_stage1(H, p, name, stage1_config(quick, seed=seed, **delta), ports)
            out["variants"].setdefault(name, {})[str(seed)] = res[name]
            m = res[name]["macro"]
            print(f"  {name} seed {seed}: macro ROC AUC {m['roc_auc']:.4f}", flush=True)
    return out


SEQUENCE_T = 5
SEQUENCE_CONFIGS = {  # the sequence protocol's check: today's defaults against the previous
    "defaults": {},
    "previous defaults (standard scaler, zscore)": dict(scaler="standard", score="zscore"),
}


def sequence_check(H, seeds: list[int], quick: bool) -> dict:
    """The Friday-DDoS day in order at T = 5, as in ``benchmarks/detection.py`` (b), with
    no selection: stage 1 on the first 80% of the first benign run, threshold on the rest
    of it, tested on every window after the first attack run and the benign run after it."""
    flows = dataset.load_flows(str(DATA / DDOS_DAY))
    label = flows.label_N
    train_end, first_run, select_end = harness.sequence_cuts(label, TRAIN_OF_DAY)
    n, T = len(flows), SEQUENCE_T
    fractions = (train_end / n, (first_run - train_end) / n, 1 - first_run / n)
    out = {
        "about": f"T={T}; train rows [0, {train_end}), threshold rows [{train_end}, "
        f"{first_run}), test windows from row {select_end} on",
        "runs": {},
    }
    for name, delta in SEQUENCE_CONFIGS.items():
        for seed in seeds:
            cfg = stage1_config(quick, seed=seed, **delta).replace(window=T)
            w = windows.build(
                flows, window=T, split="temporal", fractions=fractions, train_benign_only=True,
                scaler_kind=cfg.scaler,
            )  # fmt: skip
            tst = w.starts["test"][w.starts["test"] >= select_end]
            y = windows.window_labels(label, tst, T)[1]
            t = H.fit(f"sequence-{name}-s{seed}", cfg, w)
            thr = calibration.threshold_from_scores(cfg, harness.ae_scores(t, w, w.starts["val"]))
            rec = harness.detector_metrics(y, harness.ae_scores(t, w, tst), thr)
            out["runs"].setdefault(name, {})[str(seed)] = {**t.record(), "test": rec}
            print(f"  sequence {name} seed {seed}: ROC AUC {rec['roc_auc']:.4f}", flush=True)
    return out


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    quick = _QUICK.value
    seeds = [int(s) for s in _SEEDS.value][: 1 if quick else None]
    workdir = tempfile.mkdtemp(prefix="lstmae-crossday-")
    jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    H = harness.Harness(os.path.join(workdir, "runs"), max_steps=30 if quick else None)
    out_dir = pathlib.Path(workdir) if quick else RESULTS
    name = "crossday"
    report = {
        "command": "python benchmarks/crossday.py"
        + (" --quick" if quick else "")
        + (" --ablation" if _ABLATION.value else ""),
        "machine": machine.machine_info(),
        "seeds": seeds,
        "stage1_config": harness.config_delta(stage1_config(quick)),
        "min_family": MIN_FAMILY,
        "target_fpr": TARGET_FPR,
        "recalibration_fraction": RECAL_FRACTION,
        "datasets": {},
    }
    t0 = time.perf_counter()

    def save():  # after every part, so a long run leaves what it has measured
        report["wall_seconds"] = round(time.perf_counter() - t0, 1)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
        (out_dir / f"{name}.md").write_text(crossday_report.markdown(report))

    try:
        for key, make in DATASETS.items():
            if _ONLY.value and key not in _ONLY.value:
                continue
            p = make(workdir)
            report["datasets"][key] = run_dataset(H, p, seeds, quick, _ABLATION.value)
            save()
        if not _ONLY.value or "sequence" in _ONLY.value:
            report["sequence"] = sequence_check(H, seeds, quick)
            save()
    finally:
        H.close(keep=False)
    print(crossday_report.markdown(report))
    print(f"wall time {time.perf_counter() - t0:.0f}s; wrote {out_dir / name}.json and .md")


if __name__ == "__main__":
    sys.exit(app.run(main))
