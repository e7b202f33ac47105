"""Tables of ``benchmarks/scale.py``'s results: peak memory per flow and rates by size
(``scale.json``, plus ``scale_16m.json``), and per process under ``--share_data``
(``scale_shared.json``), with the issue's targets checked."""

from __future__ import annotations

import json
import pathlib

TARGET_KB_PER_FLOW = 0.8  # peak RSS at 3M flows, every phase
TARGET_RATE_DROP = 0.15  # windows/s at 10M within 15% of 0.3M
TARGET_SHARED = 0.40  # per-process peak at 4 processes / 1 process, 10M flows


def _gb(b: float) -> str:
    return f"{b / 1e9:.2f}"


def _rate(phase: dict) -> str:
    if phase.get("windows_per_s"):
        return f"{phase['windows_per_s']:,} windows/s"
    if phase.get("flows_per_s"):
        return f"{phase['flows_per_s']:,} flows/s"
    return ""


def _commits(sweep: dict | None, big: dict | None, shared: dict | None) -> str:
    """The code each result file measured: one commit, or each file's."""
    runs = [(n, r["commit"]) for n, r in (("sizes", sweep), ("16M", big), ("shared", shared)) if r]
    if len({c for _, c in runs}) == 1:
        return f"commit `{runs[0][1]}`"
    return "commits " + ", ".join(f"{n} `{c}`" for n, c in runs)


def _load(results: pathlib.Path, name: str) -> dict | None:
    path = results / name
    return json.loads(path.read_text()) if path.exists() else None


def tables(results: pathlib.Path) -> list[str]:
    """Markdown lines; empty when no scale result exists."""
    sweep = _load(results, "scale.json")
    big = _load(results, "scale_16m.json")
    shared = _load(results, "scale_shared.json")
    if not (sweep or big or shared):
        return []
    sizes = (sweep or {}).get("sizes", []) + (big or {}).get("sizes", [])
    first = sweep or big or shared
    m = first["machine"]
    memory = next((r["memory_gb"] for r in (sweep, big, shared) if r and "memory_gb" in r), None)
    lines = [
        f"Machine: {m['cpu_model']} ({m['cpu_count']} cores"
        + (f", {memory:.0f} GB" if memory else "")
        + f"), jax {m['jax']}, {m['date'][:10]}; {_commits(sweep, big, shared)}; generated day files"
        " of 1M flows (78 features), `--scaler=quantile`, T=10, one epoch of a small model"
        " (`config.smoke`), batch 1024.",
        "",
        "| flows | phase | peak RSS (GB) | KB/flow | KB/flow above imports | rate | time (s) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        for ph in size["phases"]:
            lines.append(
                f"| {ph['flows']:,} | {ph['phase']} | {_gb(ph['peak_rss_bytes'])} |"
                f" {ph['kb_per_flow']:.2f} | {ph['kb_per_flow_above_baseline']:.2f} |"
                f" {_rate(ph)} | {ph['seconds']:.0f} |"
            )
    lines.append("")
    slopes = (sweep or {}).get("peak_bytes_per_flow_slope") or {}
    if slopes:
        lines.append(
            "Peak RSS per added flow (least-squares slope over the sizes): "
            + ", ".join(f"{k} {v:.0f} B" for k, v in slopes.items() if v is not None)
            + " (the float32 feature table alone is 312 B)."
        )
        lines.append("")
    lines += _targets(sizes)
    if shared:
        lines += [
            "",
            "`--share_data`, the train phase over P processes of one CPU device each on this"
            " machine (localhost `jax.distributed`), same data:",
            "",
            "| flows | processes | peak RSS per process (GB) | largest / 1 process | windows/s | time (s) |",
            "|---:|---:|---|---:|---:|---:|",
        ]
        one = next((r["max_peak_rss_bytes"] for r in shared["shared"] if r["processes"] == 1), None)
        for r in shared["shared"]:
            ratio = f"{r['max_peak_rss_bytes'] / one:.0%}" if one else ""
            peaks = ", ".join(_gb(b) for b in r["peak_rss_bytes_per_process"])
            lines.append(
                f"| {r['flows']:,} | {r['processes']} | {peaks} | {ratio} |"
                f" {r['windows_per_s']:,} | {r['seconds']:.0f} |"
            )
        four = next((r for r in shared["shared"] if r["processes"] == 4), None)
        if one and four:
            got = four["max_peak_rss_bytes"] / one
            met = "MET" if got <= TARGET_SHARED else "NOT MET"
            lines += ["", f"Target: per-process peak at 4 processes <= 40% of 1: {got:.0%}, {met}."]
    return lines


def _targets(sizes: list[dict]) -> list[str]:
    out = []
    by = {s["flows_requested"]: {p["phase"]: p for p in s["phases"]} for s in sizes}
    if 3_000_000 in by:
        worst = max(p["kb_per_flow"] for p in by[3_000_000].values())
        met = "MET" if worst <= TARGET_KB_PER_FLOW else "NOT MET"
        names = ", ".join(by[3_000_000])
        out.append(f"Target: peak <= 0.8 KB/flow at 3M flows ({names}): {worst:.2f}, {met}.")
    if 300_000 in by and 10_000_000 in by:
        a, b = by[300_000]["train"]["windows_per_s"], by[10_000_000]["train"]["windows_per_s"]
        met = "MET" if b >= (1 - TARGET_RATE_DROP) * a else "NOT MET"
        out.append(
            f"Target: training windows/s at 10M within 15% of 0.3M: {b:,} vs {a:,}"
            f" ({b / a - 1:+.0%}), {met}."
        )
    if 16_000_000 in by:
        p = by[16_000_000]["train"]
        met = "MET" if p["peak_rss_bytes"] < 24e9 else "NOT MET"
        out.append(
            f"Target: one epoch on 16M flows in 24 GB: {p['flows']:,} flows, peak"
            f" {_gb(p['peak_rss_bytes'])} GB, {p['seconds'] / 60:.0f} min, {met}."
        )
    return out
