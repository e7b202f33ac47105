"""Stage 1 judged family by family: the candidates, the peers, the selection rule.

Every stage-1 candidate (a config: representations, members, fusion) and every peer (one
detector on one representation, ``peers``) is scored on every test group of every
protocol (``protocols``) with two seeds; each attack family of a group is a row: ROC AUC,
PR AUC and TPR@1% against that group's benign windows. A family is an attack label with
at least ``MIN_FAMILY`` windows, or, below that, the labels of one family
(``schema.family``: web attacks, bot, infiltration, ...) together, marked small, from
``MIN_SMALL`` windows on. A detector is summarised by its **worst family** and its **mean
over families**; a family that no detector (candidate or peer, either seed) ranks above
``UNDETECTED`` is listed but left out of both (it says nothing about which is better).

The selection rule (``verdict``): a candidate may replace the previous defaults only if,
at both seeds, it does not lower the worst family or the demo's ROC AUC by more than
``SLACK``, and it raises the worst family or the mean; otherwise it is an option. A
leave-one-dataset-out view (``leave_one_out``) chooses by the rule on the other datasets
and reports the left-out one untouched.

Candidates that train the same networks share one training per protocol and seed: the
networks are trained as the library trains them (``loop.fit``, jointly when several) and
each candidate's members are fitted on them (``calibration.fit_and_choose``).
"""

from __future__ import annotations

import time

import detection_harness as harness
import numpy as np
import peers
import protocols

from lstmae_jax.config import Config
from lstmae_jax.data import windows
from lstmae_jax.detect import calibration, inference, metrics
from lstmae_jax.ingest import schema

MIN_FAMILY, MIN_SMALL = 30, 5
UNDETECTED = 0.6  # no detector's ROC AUC above this: the family is listed, not summarised
SLACK = 0.01
TARGET_FPR = 0.01
PREVIOUS = "previous defaults (quantile, sse)"  # what the rule compares with

# name -> overrides of the library defaults (each protocol's own settings on top).
CANDIDATES = {
    "defaults": {},
    PREVIOUS: {"members": ()},
    "older defaults (standard, zscore)": {"scaler": "standard", "score": "zscore", "members": ()},
    "log, sse": {"scaler": "log", "members": ()},
    "+ log:sse": {"members": ("log:sse",)},
    "+ log:latent, log:rarity": {"members": ("log:latent", "log:rarity")},
    "+ log:sse, log:latent, log:rarity": {"members": ("log:sse", "log:latent", "log:rarity")},
    "+ log:latent": {"members": ("log:latent",)},
    "+ log:rarity": {"members": ("log:rarity",)},
    "+ quantile:latent, quantile:rarity": {"members": ("quantile:latent", "quantile:rarity")},
    "+ log:latent, log:rarity, Fisher": {
        "members": ("log:latent", "log:rarity"),
        "fusion": "fisher",
    },
    "defaults, top-12 ports as categories": {"port_categories": 12},
    "defaults, top-12 ports as categories, zscore": {"port_categories": 12, "score": "zscore"},
}
QUICK_CANDIDATES = ("defaults", PREVIOUS)


def config_for(p: protocols.Protocol, overrides: dict, seed: int, quick: bool) -> Config:
    cfg = Config(log_every_steps=1000, checkpoint_every_steps=10**6, keep_checkpoints=1)
    cfg = cfg.replace(seed=seed, **p.config, **overrides)
    return cfg.replace(epochs=3) if quick else cfg


# ---------------------------------------------------------------------- scoring


def family_rows(p: protocols.Protocol, starts: dict, score_W: dict) -> list[dict]:
    """The rows of one detector on ``p``: per test group (``score_W[group]``, one score per
    window of ``starts[group]``), per family against the group's benign windows."""
    out = []
    classes = p.flows.classes
    for group, s_W in score_W.items():
        st = starts[group]
        label_W = windows.last_attack_label(p.flows.label_N, st, p.window)
        benign = s_W[label_W == 0].astype(np.float64)
        at_1pct = metrics.fpr_threshold(benign, TARGET_FPR)
        big, small = {}, {}
        for c in np.unique(label_W[label_W != 0]):
            rows = label_W == c
            if rows.sum() >= MIN_FAMILY:
                big[classes[c]] = rows
            else:
                fam = schema.family(classes[c])
                small[fam] = small.get(fam, np.zeros(len(st), bool)) | rows
        fams = [(name, rows, False) for name, rows in big.items()]
        fams += [(name, rows, True) for name, rows in small.items() if rows.sum() >= MIN_SMALL]
        for name, rows, is_small in fams:
            attack = s_W[rows].astype(np.float64)
            y = np.r_[np.zeros(len(benign), np.int64), np.ones(len(attack), np.int64)]
            both = np.r_[benign, attack]
            out.append(
                {
                    "dataset": p.name,
                    "group": group,
                    "family": name,
                    "small": is_small,
                    "n": int(rows.sum()),
                    "roc_auc": metrics.roc_auc(y, both),
                    "pr_auc": metrics.average_precision(y, both),
                    "tpr_at_1pct": float(np.mean(attack > at_1pct)),
                }
            )
    return out


def run_group(H, p, cands: dict[str, Config], seed: int) -> dict[str, dict]:
    """Trains the networks ``cands`` share once, fits and scores every candidate on them."""
    first = next(iter(cands.values()))
    nets = first.stage1_networks()
    trained = first.replace(scaler=nets[0], members=tuple(f"{r}:sse" for r in nets[1:]))
    kinds = tuple(dict.fromkeys([*nets, *(r for c in cands.values() for r in c.representations())]))
    w = p.windowed(kinds, first.port_categories)
    t = H.fit(f"{p.name}-{'+'.join(nets)}-s{seed}", trained, w)
    groups = {g: st for g, st in p.tests.items()}
    every = np.unique(np.concatenate(list(groups.values())))
    out = {}
    for name, cfg in cands.items():
        members = calibration.members_of(cfg, trained.stage1_networks(), kinds)
        det, thr, _ = calibration.fit_and_choose(cfg, t.model, w, members=members)
        s_W, _, m_WxM = inference.window_scores(
            t.model, det, w.scalers, w.x_NxF, every, p.window, 2048, members=True
        )
        by_start = {s: i for i, s in enumerate(every.tolist())}
        pick = {g: [by_start[s] for s in st.tolist()] for g, st in groups.items()}
        rec = {
            **t.record(),
            "config": harness.config_delta(cfg),
            "members": list(cfg.stage1_members()),
        }
        rec["families"] = family_rows(p, groups, {g: s_W[i] for g, i in pick.items()})
        if det.fused:  # each member alone, on the same windows: what the fusion adds
            rec["member_families"] = {
                m.name: family_rows(p, groups, {g: m_WxM[i, j] for g, i in pick.items()})
                for j, m in enumerate(det.members)
            }
        rec["threshold"] = thr.value
        if p.name == "demo":  # recall and FPR at the calibrated threshold, the demo's report
            label_W = windows.last_attack_label(p.flows.label_N, every, p.window)
            attack = label_W != 0
            rec["demo"] = {
                "roc_auc": metrics.roc_auc(attack.astype(np.int64), s_W.astype(np.float64)),
                "recall": float(np.mean(s_W[attack] > thr.value)),
                "fpr": float(np.mean(s_W[~attack] > thr.value)),
            }
        out[name] = rec
    return out


def run_stage1(H, p: protocols.Protocol, names, seeds, quick: bool) -> dict:
    """Every candidate of ``names`` at every seed on ``p``; identical configs run once."""
    out = {}
    for seed in seeds:
        resolved: dict[tuple, str] = {}
        groups: dict[tuple, dict[str, Config]] = {}
        for name in names:
            cfg = config_for(p, CANDIDATES[name], seed, quick)
            key = (cfg.stage1_members(), cfg.fusion, cfg.port_categories)
            if key in resolved:  # the same detector as another candidate here
                out.setdefault(name, {})[str(seed)] = {"same_as": resolved[key]}
                continue
            resolved[key] = name
            groups.setdefault((cfg.stage1_networks(), cfg.port_categories), {})[name] = cfg
        for cands in groups.values():
            t0 = time.perf_counter()
            for name, rec in run_group(H, p, cands, seed).items():
                out.setdefault(name, {})[str(seed)] = rec
                worst = min(r["roc_auc"] for r in rec["families"])
                print(f"  {p.name} s{seed} {name}: worst {worst:.3f}", flush=True)
            print(f"  ({time.perf_counter() - t0:.0f}s)", flush=True)
    for by_seed in out.values():  # copies of an identical candidate's record
        for seed, rec in by_seed.items():
            if "same_as" in rec:
                by_seed[seed] = {**out[rec["same_as"]][seed], "same_as": rec["same_as"]}
    return out


def run_peers(p: protocols.Protocol, quick: bool) -> dict:
    """Every peer on both representations: fitted on the benign training windows, scored
    on every test window (once: the peers do not depend on stage 1's seed)."""
    w = p.windowed(())
    train = w.starts["train"]
    rows = windows.rows_covered(len(p.flows), train, p.window)
    every = np.unique(np.concatenate(list(p.tests.values())))
    by_start = {s: i for i, s in enumerate(every.tolist())}
    out = {}
    for name in peers.available(quick):
        for rep in peers.REPRESENTATIONS:
            t0 = time.perf_counter()
            s_W = peers.scores(name, rep, p.flows, rows, train, every, p.window)
            score = {g: s_W[[by_start[s] for s in st.tolist()]] for g, st in p.tests.items()}
            rec = {"families": family_rows(p, p.tests, score)}
            rec["seconds"] = round(time.perf_counter() - t0, 1)
            out[f"{name}/{rep}"] = rec
            print(f"  {p.name} peer {name}/{rep}: {rec['seconds']}s", flush=True)
    return out


# -------------------------------------------------------------------- summaries


def _key(r: dict) -> tuple:
    return (r["dataset"], r["group"], r["family"])


def undetected(report: dict) -> set[tuple]:
    """Families no detector (candidate or peer, either seed) ranks above ``UNDETECTED``."""
    best: dict[tuple, float] = {}
    for ds in report["datasets"].values():
        recs = [r for c in ds["stage1"].values() for r in c.values()]
        recs += list(ds["peers"].values())
        for rec in recs:
            for r in rec["families"]:
                best[_key(r)] = max(best.get(_key(r), 0.0), r["roc_auc"])
    return {k for k, v in best.items() if v <= UNDETECTED}


def summary(families: list[dict], skip: set[tuple], datasets=None) -> dict:
    rows = [r for r in families if _key(r) not in skip]
    if datasets is not None:
        rows = [r for r in rows if r["dataset"] in datasets]
    if not rows:
        return {}
    worst = min(rows, key=lambda r: r["roc_auc"])
    return {
        "worst": worst["roc_auc"],
        "worst_family": f"{worst['dataset']}/{worst['group']}/{worst['family']}",
        "mean": float(np.mean([r["roc_auc"] for r in rows])),
        "tpr_at_1pct": float(np.mean([r["tpr_at_1pct"] for r in rows])),
        "families": len(rows),
    }


def detectors(report: dict) -> dict[str, dict[str, list[dict]]]:
    """name -> seed -> every family row over the datasets (peers: one seed, "-"; the
    defaults' members alone: "member NAME", on the datasets where it is a member)."""
    out: dict[str, dict[str, list[dict]]] = {}
    for ds in report["datasets"].values():
        for name, by_seed in ds["stage1"].items():
            for seed, rec in by_seed.items():
                out.setdefault(name, {}).setdefault(seed, []).extend(rec["families"])
                if name != "defaults":
                    continue
                for member, rows in rec.get("member_families", {}).items():
                    out.setdefault(f"member {member}", {}).setdefault(seed, []).extend(rows)
        for name, rec in ds["peers"].items():
            out.setdefault(f"peer {name}", {}).setdefault("-", []).extend(rec["families"])
    return out


def demo_of(report: dict, name: str) -> dict[str, dict]:
    ds = report["datasets"].get("demo")
    if not ds or name not in ds["stage1"]:
        return {}
    return {seed: rec["demo"] for seed, rec in ds["stage1"][name].items()}


def verdict(report: dict, name: str, datasets=None) -> dict:
    """The selection rule for candidate ``name`` against ``PREVIOUS`` (module docstring)."""
    skip = undetected(report)
    dets = detectors(report)
    ok, better, why = True, True, []
    for seed in dets[name]:
        a = summary(dets[name][seed], skip, datasets)
        b = summary(dets[PREVIOUS][seed], skip, datasets)
        if a["worst"] < b["worst"] - SLACK:
            ok = False
            why.append(f"seed {seed}: worst family {a['worst']:.3f} < {b['worst']:.3f}")
        da, db = demo_of(report, name).get(seed), demo_of(report, PREVIOUS).get(seed)
        if (datasets is None or "demo" in datasets) and da and db:
            if da["roc_auc"] < db["roc_auc"] - SLACK:
                ok = False
                why.append(f"seed {seed}: demo {da['roc_auc']:.3f} < {db['roc_auc']:.3f}")
        if not (a["worst"] > b["worst"] or a["mean"] > b["mean"]):
            better = False
            why.append(f"seed {seed}: raises neither the worst family nor the mean")
    return {"may_be_default": ok and better, "why_not": why}


def leave_one_out(report: dict) -> dict:
    """For each dataset: the candidate the rule prefers on the others (worst family first,
    then the mean, each the lower of its two seeds), and the left-out dataset untouched."""
    skip = undetected(report)
    dets = {k: v for k, v in detectors(report).items() if k in report["candidates"]}
    names = [k for k, ds in report["datasets"].items() if "stage1" in ds]
    out = {}
    if len(names) < 2:
        return out

    def rank(name, others):
        s = [summary(rows, skip, others) for rows in dets[name].values()]
        if not all(s):
            return (-1.0, -1.0)
        return (min(x["worst"] for x in s), min(x["mean"] for x in s))

    for left in names:
        others = [d for d in names if d != left]
        best = max(dets, key=lambda n: rank(n, others))  # noqa: B023 (called right here)
        out[left] = {
            "chosen": best,
            "on_the_others": dict(zip(("worst", "mean"), rank(best, others), strict=True)),
            "left_out": {seed: summary(rows, skip, [left]) for seed, rows in dets[best].items()},
            "defaults_left_out": {
                seed: summary(rows, skip, [left]) for seed, rows in dets["defaults"].items()
            },
        }
    return out
