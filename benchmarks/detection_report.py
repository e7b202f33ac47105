"""Summaries, targets and Markdown for ``benchmarks/detection.py`` (reads only the report).

``finish`` adds what is computed from the measurements (the stage-1 summaries, the
selection rule's verdicts, the leave-one-dataset-out view, the targets); ``markdown`` is
the full report, ``summary_tables`` the part the results page shows.
"""

from __future__ import annotations

import families

ROWS = (("Accuracy", "accuracy"), ("Loss", "loss"), ("Recall", "recall"))
ROWS += (("Precision", "precision"), ("F-Measure", "f1"))
MODELS = (("CNN", "cnn"), ("DNN", "dnn"), ("LSTM-AE", "stage2"))
DEMO_AUC, DEMO_RECALL, DEMO_FPR = 0.98, 0.80, 0.02
SEQUENCE_AUC = 0.95


# ------------------------------------------------------------------ computed parts


def finish(report: dict) -> None:
    """Adds ``stage1_summary``, ``verdicts``, ``leave_one_out`` and ``targets``."""
    report["targets"] = []
    for key in ("undetected", "stage1_summary", "verdicts", "leave_one_out"):
        report.pop(key, None)  # recomputed from the measurements below
    done = {k: d for k, d in report.get("datasets", {}).items() if "stage1" in d}
    if done and len(done) == len(report["datasets"]):
        skip = families.undetected(report)
        report["undetected"] = sorted("/".join(k) for k in skip)
        dets = families.detectors(report)
        report["stage1_summary"] = {
            name: {seed: families.summary(rows, skip) for seed, rows in by_seed.items()}
            for name, by_seed in dets.items()
        }
        for name in report["candidates"]:
            for seed, d in families.demo_of(report, name).items():
                report["stage1_summary"][name][seed]["demo"] = d
        if families.PREVIOUS in dets:
            report["verdicts"] = {
                n: families.verdict(report, n)
                for n in report["candidates"]
                if n != families.PREVIOUS
            }
        if "defaults" in dets:
            report["leave_one_out"] = families.leave_one_out(report)
            report["targets"] += stage1_targets(report)
    report["targets"] += paper_targets(report)


def _peer_best(report: dict, what: str) -> tuple[str, float]:
    peers = {k: v["-"][what] for k, v in report["stage1_summary"].items() if k.startswith("peer ")}
    name = max(peers, key=peers.get)
    return name[5:], peers[name]


def stage1_targets(report: dict) -> list[dict]:
    out = []
    s = report["stage1_summary"]["defaults"]
    for what in ("worst", "mean"):
        peer, value = _peer_best(report, what)
        got = min(v[what] for v in s.values())
        out.append(
            {
                "target": f"stage 1's {what} family ROC AUC above every peer's (best: {peer} {value:.3f})",
                "value": round(got, 4),
                "met": got > value,
            }
        )
    demo = families.demo_of(report, "defaults")
    if demo:
        auc = min(d["roc_auc"] for d in demo.values())
        ok = all(d["recall"] >= DEMO_RECALL and d["fpr"] <= DEMO_FPR for d in demo.values())
        out.append(
            {
                "target": f"make demo: ROC AUC >= {DEMO_AUC}",
                "value": round(auc, 4),
                "met": auc >= DEMO_AUC,
            }
        )
        out.append(
            {
                "target": f"make demo: recall >= {DEMO_RECALL:.0%} at FPR <= {DEMO_FPR:.0%}",
                "value": "; ".join(
                    f"{100 * d['recall']:.1f}% at {100 * d['fpr']:.2f}%" for d in demo.values()
                ),
                "met": ok,
            }
        )
    seq = report["datasets"].get("sequence")
    if seq and "defaults" in seq["stage1"]:
        auc = min(
            r["roc_auc"] for rec in seq["stage1"]["defaults"].values() for r in rec["families"]
        )
        out.append(
            {
                "target": f"Friday DDoS day in sequence (T=5): ROC AUC >= {SEQUENCE_AUC}",
                "value": round(auc, 4),
                "met": auc >= SEQUENCE_AUC,
            }
        )
    return out


def _five(test: dict) -> dict:
    """The paper's five numbers of a classifier's test record (percent; loss as is)."""
    w = test["weighted"]
    return {
        "accuracy": 100 * test["accuracy"],
        "loss": test["loss"],
        "recall": 100 * w["recall"],
        "precision": 100 * w["precision"],
        "f1": 100 * w["f1"],
    }


def _better_or_equal(key: str, a: float, b: float) -> bool:
    if key == "loss":  # compared at the precision the tables print (2 decimals, loss 4)
        return round(a, 4) <= round(b, 4)
    return round(a, 2) >= round(b, 2)


def paper_targets(report: dict) -> list[dict]:
    out = []
    ref = report["paper_reference"]
    for name, exp in report.get("paper", {}).items():
        ours = {label: _five(exp[key]["test"]) for label, key in MODELS}
        for label, key in ROWS:
            lstm = ours["LSTM-AE"][key]
            vs_paper = _better_or_equal(key, lstm, ref["LSTM-AE"][key])
            vs_ours = all(_better_or_equal(key, lstm, ours[m][key]) for m in ("CNN", "DNN"))
            out.append(
                {
                    "target": f"paper/{name}: LSTM-AE {label} at least the paper's LSTM-AE and our CNN, DNN",
                    "value": round(lstm, 4),
                    "met": bool(vs_paper and vs_ours),
                }
            )
    return out


# ------------------------------------------------------------------------ markdown


def _f(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _p(x, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}"


def _seeds(by_seed: dict, key: str, fmt=_f) -> str:
    return " / ".join(fmt(v.get(key)) for v in by_seed.values())


def summary_table(report: dict) -> list[str]:
    """Every candidate and peer by its worst family and its mean (both seeds)."""
    s = report["stage1_summary"]
    verdicts = report.get("verdicts", {})
    lines = [
        "| detector | worst family (seed 0 / 1) | where | mean over families | TPR@1% mean % | demo ROC AUC | demo recall % at FPR % | may be the default? |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, by_seed in s.items():
        first = next(iter(by_seed.values()))
        demo = [v["demo"] for v in by_seed.values() if "demo" in v]
        d_auc = " / ".join(_f(d["roc_auc"]) for d in demo) or ""
        d_rec = " / ".join(f"{_p(d['recall'])} at {_p(d['fpr'], 2)}" for d in demo) or ""
        v = verdicts.get(name)
        verdict = (
            ""
            if v is None
            else ("yes" if v["may_be_default"] else "no: " + "; ".join(v["why_not"]))
        )
        label = f"**{name}**" if name == "defaults" else name
        lines.append(
            f"| {label} | {_seeds(by_seed, 'worst')} | {first['worst_family']} "
            f"| {_seeds(by_seed, 'mean')} | {_seeds(by_seed, 'tpr_at_1pct', _p)} | {d_auc} | {d_rec} | {verdict} |"
        )
    return [*lines, ""]


def lodo_table(report: dict) -> list[str]:
    lines = [
        "| left out | chosen on the others (worst / mean there) | its worst / mean on the left-out dataset (seed 0 / 1) | the defaults' there |",
        "|---|---|---|---|",
    ]
    for left, v in report["leave_one_out"].items():
        o = v["on_the_others"]
        lo = " / ".join(f"{x['worst']:.3f}, {x['mean']:.3f}" for x in v["left_out"].values() if x)
        de = " / ".join(
            f"{x['worst']:.3f}, {x['mean']:.3f}" for x in v["defaults_left_out"].values() if x
        )
        lines.append(
            f"| {left} | {v['chosen']} ({o['worst']:.3f} / {o['mean']:.3f}) | {lo} | {de} |"
        )
    return [*lines, ""]


def family_table(report: dict, key: str) -> list[str]:
    """One dataset: a row per family, the defaults and the previous defaults (both seeds),
    and every peer; the best of all peers marked."""
    ds = report["datasets"][key]
    skip = set(report.get("undetected", []))
    cands = [n for n in ("defaults", families.PREVIOUS) if n in ds["stage1"]]
    peers = list(ds["peers"])
    head = ["group", "family", "n", *cands, *peers]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    rows0 = next(iter(ds["stage1"][cands[0]].values()))["families"]
    for i, r in enumerate(rows0):
        name = f"{r['family']}{' (small)' if r['small'] else ''}"
        if f"{r['dataset']}/{r['group']}/{r['family']}" in skip:
            name += " (undetected by all)"
        cells = [r["group"], name, str(r["n"])]
        for c in cands:
            cells.append(
                " / ".join(_f(rec["families"][i]["roc_auc"]) for rec in ds["stage1"][c].values())
            )
        best = max(peers, key=lambda p: ds["peers"][p]["families"][i]["roc_auc"]) if peers else None
        for p in peers:
            v = _f(ds["peers"][p]["families"][i]["roc_auc"])
            cells.append(f"**{v}**" if p == best else v)
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def paper_table(name: str, exp: dict, ref: dict) -> list[str]:
    ours = {label: _five(exp[key]["test"]) for label, key in MODELS}
    head = "| row | " + " | ".join(f"{m} paper | {m} ours" for m, _ in MODELS) + " |"
    lines = [f"#### {name}", "", head, "|---" * (1 + 2 * len(MODELS)) + "|"]
    for label, key in ROWS:
        cells = []
        for m, _ in MODELS:
            fmt = "{:.4f}" if key == "loss" else "{:.2f}"
            cells += [fmt.format(ref[m][key]), fmt.format(ours[m][key])]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    s1 = exp["stage1"]["test_fpr_1pct"]
    fixed = exp["stage1_minmax"]["test_fixed_0.1"]
    lines += [
        "",
        f"Stage 1 (library defaults) at its 1%-FPR threshold: ROC AUC {_f(s1['roc_auc'], 4)},"
        f" recall {_p(s1['recall'], 2)}%, FPR {_p(s1['fpr'], 2)}%; the paper's fixed 0.1 MAE"
        f" threshold under min-max scaling: recall {_p(fixed['recall'], 2)}%, FPR"
        f" {_p(fixed['fpr'], 2)}%. Test rows whose features equal a training row's:"
        f" {_p(exp['test_rows_also_in_train'])}% (the random split leaks).",
        "",
    ]
    return lines


def _targets(report: dict) -> list[str]:
    return [
        f"- {'MET' if t['met'] else 'MISS'} {t['target']}: {t['value']}" for t in report["targets"]
    ]


def _cross_line(c: dict, recall: bool = False) -> str:
    """The cross-dataset result in one sentence (``recall``: with stage 1's recall/FPR)."""
    s1 = c["stage1"]["test"]
    at = f", recall {_p(s1['recall'])}% at FPR {_p(s1['fpr'])}%" if recall else ""
    f1 = {k: _p(c[k]["test"]["attack"]["f1"]) for k in ("stage2", "dnn", "cnn")}
    return (
        f"stage-1 ROC AUC {_f(s1['roc_auc'])}{at}; stage-2 attack F1 {f1['stage2']}%,"
        f" DNN {f1['dnn']}%, CNN {f1['cnn']}%."
    )


def summary_tables(report: dict) -> str:
    lines = []
    if "stage1_summary" in report:
        lines += ["### Stage 1 by its worst family and its mean", "", *summary_table(report)]
    for name, exp in report.get("paper", {}).items():
        lines += paper_table(name, exp, report["paper_reference"])
    if "cross" in report:
        lines += [f"Cross-dataset (2017 -> 2018): {_cross_line(report['cross'])}", ""]
    if report.get("targets"):
        lines += ["Targets:", "", *_targets(report), ""]
    return "\n".join(lines)


def markdown(report: dict) -> str:
    m = report["machine"]
    L = [
        "# Detection benchmark",
        "",
        f"Command: `{report['command']}`; wall time {report.get('wall_seconds', 0) / 60:.0f} min.",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} cores, {m['platform']}; jax {m['jax']},"
        f" flax {m['flax']}, devices {m['jax_devices']}; {m['date']}.",
        "",
    ]
    if "stage1_summary" in report:
        L += [
            "## Stage 1, family by family, on days and families it was not tuned on",
            "",
            "Each cell is a ROC AUC against the test group's own benign windows. A family is an"
            f" attack label with >= {families.MIN_FAMILY} windows or, below that, one family's"
            f" labels together (>= {families.MIN_SMALL} windows, marked small). A family that no"
            f" detector ranks above {families.UNDETECTED} is listed as undetected by all and left"
            " out of the summaries: "
            + (", ".join(report["undetected"]) or "none")
            + ". Peers are fitted on the same benign windows in the same run, one detector on"
            " one representation each. Selection rule: a candidate may replace the previous"
            " defaults only if at both seeds it lowers neither the worst family nor the demo by"
            f" more than {families.SLACK} and raises the worst family or the mean.",
            "",
            "| dataset | protocol | features | training windows | calibration windows | test windows |",
            "|---|---|---|---|---|---|",
        ]
        for key, ds in report["datasets"].items():
            tests = ", ".join(f"{g} {n:,}" for g, n in ds["test_groups"].items())
            L.append(
                f"| {key} | {ds['about']} | {ds['features']} | {ds['train_windows']:,}"
                f" | {ds['calibration_windows']:,} | {tests} |"
            )
        L += ["", "### Summary", "", *summary_table(report)]
        if "leave_one_out" in report:
            L += ["### Leave one dataset out", "", *lodo_table(report)]
        for key, ds in report["datasets"].items():
            if "stage1" in ds:
                L += [f"### {key}", "", *family_table(report, key)]
        L += [
            "### Candidates",
            "",
            "| candidate | members (T=1 / above) | overrides |",
            "|---|---|---|",
        ]
        for name, over in report["candidates"].items():
            by_ds = {
                k: next(iter(ds["stage1"][name].values()))["members"]
                for k, ds in report["datasets"].items()
                if name in ds["stage1"]
            }
            members = sorted({", ".join(v) for v in by_ds.values()})
            L.append(f"| {name} | {' / '.join(members)} | `{over}` |")
        L.append("")
    if "paper" in report:
        L += [
            "## Paper protocol: random stratified split, per flow (T=1)",
            "",
            "Accuracy, Recall, Precision and F-Measure in %, weighted by true-class support over"
            " all classes, Benign included; Loss = mean test cross-entropy. LSTM-AE = the"
            " two-stage model's stage-2 classifier on the stage-1 encoder. The random split"
            " leaks (near-duplicate flows fall on both sides), as in the paper.",
            "",
        ]
        for name, exp in report["paper"].items():
            L += paper_table(name, exp, report["paper_reference"])
    if "cross" in report:
        c = report["cross"]
        L += ["## Cross-dataset: CICIDS2017 -> CSE-CIC-IDS2018", "", c["protocol"] + ".", ""]
        L += [f"Library defaults: {_cross_line(c, recall=True)}", ""]
    if report.get("targets"):
        L += ["## Targets", "", *_targets(report), ""]
    return "\n".join(L)
