"""Markdown for a ``benchmarks/throughput.py`` report (its printout and docs/results.md)."""

from __future__ import annotations

TARGETS_CPU = {
    "train_vs_torch_b256": 2.0,
    "train_vs_torch_b512": 2.0,
    "score_vs_torch": 2.0,
    # issue 29: the trainer's own loop within 5% of its step, and 1.2x torch through it
    "loop_vs_step_b256": 0.95,
    "loop_vs_step_b512": 0.95,
    "loop_vs_torch_b256": 1.2,
    "loop_vs_torch_b512": 1.2,
}
TARGETS_GPU = {"train_vs_torch_b256": 1.5}


def render(report: dict) -> str:
    """A Markdown table of a throughput report (the throughput table of docs/results.md)."""
    m = report["machine"]
    lines = [
        f"{m['cpu_model']}, {m['cpu_cores']} cores, {m['backend']} ({m['device']}); "
        f"sgemm {report['sgemm_gflops']} GFLOP/s, training roofline "
        f"{report['train_roofline_windows_per_s']:.0f} windows/s"
        + (
            f", scoring roofline {report['scoring_roofline_windows_per_s']:.0f} windows/s."
            if "scoring_roofline_windows_per_s" in report
            else "."
        ),
        "",
        "| kind | contender | batch | windows/s | roofline | compile s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key, row in report["results"].items():
        if "error" in row:
            kind, name, b = key.split("/")
            lines.append(f"| {kind} | {name} | {b} | failed: {row['error'][:60]} | | |")
            continue
        share = f"{100 * row['roofline_share']:.0f}%" if "roofline_share" in row else ""
        lines.append(
            f"| {row['kind']} | {row['contender']} | {row['batch']} | "
            f"{row['windows_per_s']:,.0f} | {share} | {row['compile_s']} |"
        )
    lines += ["", "Ratios (ours / peer, same run): "
              + ", ".join(f"{k} {v}" for k, v in report["ratios"].items())]  # fmt: skip
    return "\n".join(lines)


def targets(report: dict) -> list[str]:
    """One line per target (issues 8 and 29): the measured value and whether it is met."""
    gpu = report["machine"]["backend"] == "gpu"
    r, out = report["ratios"], []
    for key, want in (TARGETS_GPU if gpu else TARGETS_CPU).items():
        got = r.get(key)
        if got is None:  # e.g. the loop's ratios in a run from before its contender
            out.append(f"{key} >= {want}: not measured in this run")
            continue
        out.append(f"{key} >= {want}: {got} ({'met' if got >= want else '**not met**'})")
    if not gpu:
        row = report["results"].get("train/lstmae_jax/512", {})
        share = row.get("roofline_share")
        met = share is not None and share >= 0.6
        out.append(
            f"training share of the sgemm roofline at B=512 >= 60%: "
            f"{share if share is None else f'{100 * share:.0f}%'} ({'met' if met else '**not met**'})"
        )
    else:
        b = report["settings"]["score_batch"]
        rate = report["results"].get(f"train/lstmae_jax/{b}", {}).get("windows_per_s")
        met = rate is not None and rate >= 10e6
        out.append(
            f"training at B={b} >= 10M windows/s: {rate} ({'met' if met else '**not met**'})"
        )
    return out
