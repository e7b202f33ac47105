"""Where the training step's time goes: the compiled step's ops, timed by the profiler.

    python benchmarks/step_profile.py [--batch_sizes=256,512] [--profile_steps=20]
        [--profile_json=FILE]

The step is ``throughput.py``'s ``lstmae_jax`` row (the reference model, T=10, library
defaults, windows gathered on the device). For each batch it is timed unprofiled
(``throughput._best_rate``), then ``--profile_steps`` calls run under ``jax.profiler``
and every op event of the trace (one per compiled op per call, named after the HLO
instruction) is summed by kind (the instruction name less its ``.N`` suffix) and by
group: matmuls (``dot``), elementwise fusions, reductions, data movement (gathers,
copies, slices, concatenations). Durations are the profiled ones: the profiler slows
the step (``profiled_ms_per_step`` against ``step_ms``), so read the shares, not the
milliseconds. Prints a Markdown table and writes JSON. Takes ``throughput.py``'s
``--batch_sizes``.
"""

from __future__ import annotations

import collections
import datetime
import glob
import gzip
import json
import os
import re
import sys
import tempfile

import jax
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput  # noqa: E402  (its flags and contenders)

_STEPS = flags.DEFINE_integer("profile_steps", 20, "Profiled train steps per batch size.")
_JSON = flags.DEFINE_string(
    "profile_json", "", "JSON path (default benchmarks/results/step_profile_<backend>.json)."
)

# Trace events that are not compiled ops: Python frames, the runtime's own spans, and
# the per-partition "end:" markers of an op split across threads.
_NOT_OPS = ("$", "ThunkExecutor", "PjitFunction", "CommonPjRt", "ThreadpoolListener", "end: ")
_MOVEMENT = ("gather", "copy", "concatenate", "slice_bitcast", "transpose")


def group_of(kind: str) -> str:
    """The coarse group of an HLO op kind (an instruction name less its suffix)."""
    if kind.startswith("dot"):
        return "matmul"
    if "reduce" in kind:
        return "reduction"
    if any(m in kind for m in _MOVEMENT):
        return "data movement"
    if "fusion" in kind or kind.startswith("wrapped_") or kind in ("add", "multiply", "tanh"):
        return "elementwise"
    return "runtime"  # the executable's argument handling and the like: not compiled ops


def aggregate(events: list[dict], steps: int) -> dict:
    """Per-step milliseconds, op counts and shares by kind and by group, from trace
    events (Chrome trace format: ``ph == "X"`` complete events with ``dur`` in us)."""
    by_kind, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") != "X" or e["name"].startswith(_NOT_OPS):
            continue
        kind = re.sub(r"\.\d+$", "", e["name"])
        by_kind[kind] += e["dur"]
        count[kind] += 1
    total = sum(by_kind.values()) or 1.0
    groups: dict = {}
    for kind, us in by_kind.items():
        g = groups.setdefault(group_of(kind), {"ms_per_step": 0.0, "ops_per_step": 0.0})
        g["ms_per_step"] += us / steps / 1e3
        g["ops_per_step"] += count[kind] / steps
    for g in groups.values():
        g["share"] = round(g["ms_per_step"] * steps * 1e3 / total, 3)
        g["ms_per_step"] = round(g["ms_per_step"], 3)
        g["ops_per_step"] = round(g["ops_per_step"], 1)
    kinds = [
        {
            "kind": k,
            "group": group_of(k),
            "ms_per_step": round(us / steps / 1e3, 3),
            "ops_per_step": round(count[k] / steps, 1),
            "share": round(us / total, 3),
        }
        for k, us in by_kind.most_common()
    ]
    ops = sum(n for k, n in count.items() if group_of(k) != "runtime")
    return {
        "profiled_ms_per_step": round(total / steps / 1e3, 3),
        "ops_per_step": round(ops / steps, 1),
        "groups": dict(sorted(groups.items(), key=lambda kv: -kv[1]["ms_per_step"])),
        "kinds": kinds,
    }


def _trace_events(run, steps: int) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="step-profile-") as out:
        with jax.profiler.trace(out, create_perfetto_trace=True):
            run(steps)
        (path,) = glob.glob(os.path.join(out, "**", "*.trace.json.gz"), recursive=True)
        with gzip.open(path) as f:
            trace = json.load(f)
    return trace["traceEvents"] if isinstance(trace, dict) else trace


def profile(d: throughput.Data, batch: int, steps: int) -> dict:
    run, *_ = throughput.ours_train(d, batch, {}, "float32")
    rate, _ = throughput._best_rate(run, batch, 50, 3.0)  # also warms up
    got = aggregate(_trace_events(run, steps), steps)
    return {"step_windows_per_s": round(rate), "step_ms": round(batch / rate * 1e3, 3), **got}


def render(report: dict) -> str:
    lines = []
    for b, r in report["batches"].items():
        lines += [
            f"B={b}: {r['step_windows_per_s']:,} windows/s unprofiled ({r['step_ms']} ms a step;"
            f" {r['profiled_ms_per_step']} ms profiled), {r['ops_per_step']:.0f} ops a step",
            "",
            "| group | ops a step | us an op (profiled) | share of op time |",
            "|---|---:|---:|---:|",
        ]
        for g, v in r["groups"].items():
            if g == "runtime":  # spans of the executable's own bookkeeping, not ops
                lines.append(f"| runtime (not ops) | - | - | {v['share']:.0%} |")
                continue
            us = v["ms_per_step"] * 1e3 / max(v["ops_per_step"], 1e-9)
            lines.append(f"| {g} | {v['ops_per_step']:.0f} | {us:.0f} | {v['share']:.0%} |")
        lines.append("")
    return "\n".join(lines)


_RENDER = flags.DEFINE_string("profile_render", "", "Print this JSON's tables and stop.")


def main(argv):
    del argv
    if _RENDER.value:
        with open(_RENDER.value) as f:
            print(render(json.load(f)))
        return
    d = throughput.Data()
    batches = [int(b) for b in throughput._BATCHES.value]
    report = {
        "benchmark": "step_profile",
        "machine": throughput._machine(),
        "date": datetime.date.today().isoformat(),
        "profile_steps": _STEPS.value,
        "batches": {str(b): profile(d, b, _STEPS.value) for b in batches},
    }
    path = _JSON.value or os.path.join(
        os.path.dirname(os.path.abspath(__file__)),
        "results",
        f"step_profile_{jax.default_backend()}.json",
    )
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    print(render(report))
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
