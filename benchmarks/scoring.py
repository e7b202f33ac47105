"""The scoring pass end to end, beside the model's own rate and torch eager's, in one run.

    python benchmarks/scoring.py [--flows=500000] [--repeats=2] [--output=FILE]

The detector: trained through the API on 20,000 generated flows for one epoch (speed does
not depend on the weights), with ``make demo``'s shapes, window 10 and LSTM 64/32, and
one network scored by its reconstruction ``sse`` on the ``log`` representation
(``scaler="log", score="sse", members=()``, stage 1): the work the torch peer does. ``--demo_members`` uses
the defaults instead (two networks; stage 2 too), as ``make demo`` exports them.

The input: ``--flows`` held-back flows as a raw CICIDS2017 day (CSV; ``Infinity`` rates,
``-1`` sentinels, ``Fwd Header Length`` twice), and the same table saved to Parquet as
it is. Every contender scores every flow (windows: flows - 9 per file).

Contenders, flows/s (``repeats`` runs each, interleaved, the best counts; the machine may
be shared, so the load average is recorded):

* ``command_<in>_<out>``: ``lstmae-score`` as a user runs it, a fresh process (interpreter,
  imports, artifact load, compilation: from XLA's compilation cache after the first run,
  as ``--compilation_cache`` keeps it; reading, scoring, writing, the summary), for
  Parquet and CSV in, Parquet and JSONL out; with its peak RSS.
* ``pass_<in>``: the same pass in this process (``stream.score_files`` from
  ``artifact.load`` to the committed Parquet output, compiled once before), with the
  pass's own ``seconds_by_stage``: read, clean, window, compile, device (dispatching and
  the waits the host could not overlap), write.
* ``follow_csv``: ``--follow`` on a folder holding the CSV, in process, from the start
  until every window is written (then stopped as Ctrl-C stops it).
* ``api_table``, ``api_path``: ``det.score(...)`` of a detector loaded (and compiled)
  once, ``det = lstmae_jax.load(dir)``, on the Parquet table (read first, untimed; the
  API writes it to a temporary Parquet file, timed) and on its path: the aligned result,
  one row per input row.
* ``model_512``, ``model_4096``: the artifact's compiled call alone, on the pass's windows
  cut beforehand (512: the pass's batch; 4096: the large batch of ``throughput.py``).
* ``torch_512``, ``torch_4096``: torch eager on the same windows, under
  ``inference_mode``: the same scaling, LSTM-AE and sse (single network only).

``ratios``: each end-to-end rate over ``model_512`` (the model at the batch the pass
uses), and the model over torch. Memory: the Parquet command's peak RSS at a quarter of
the flows and at all of them. Writes ``benchmarks/results/scoring.json``.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "scoring.json"

_FLOWS = flags.DEFINE_integer("flows", 500_000, "Flows in the scored day.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed runs per contender (the best counts).")
_DEMO = flags.DEFINE_bool("demo_members", False, "make demo's members and stage 2.")
_OUTPUT = flags.DEFINE_string("output", str(RESULTS), "JSON file the results go to.")
_RENDER = flags.DEFINE_string("render", None, "Print the Markdown of this JSON result and stop.")

ROWS = {  # contender -> what it is, in the table's order
    "command_parquet_parquet": "`lstmae-score`, Parquet in, Parquet out (fresh process)",
    "command_parquet_jsonl": "`lstmae-score`, Parquet in, JSONL out (fresh process)",
    "command_csv_parquet": "`lstmae-score`, CSV in, Parquet out (fresh process)",
    "pass_parquet": "the scoring pass in process, Parquet in",
    "pass_csv": "the scoring pass in process, CSV in",
    "follow_csv": "`--follow` on a folder holding the CSV, in process",
    "api_path": "`det.score(path)`, Parquet (the aligned result)",
    "api_table": "`det.score(table)` (the table written to a temporary Parquet file)",
}


def markdown(info: dict) -> str:
    """The result as the Markdown table docs/results.md shows."""
    m, d = info["machine"], info["detector"]
    model = info["windows_per_second"]
    lines = [
        f"`python benchmarks/scoring.py --flows={info['flows']}` on {m['cpu_model']}"
        f" ({m['cpu_count']} cores), jax {m['jax']}, torch {m.get('torch')}, {m['date'][:10]}"
        f" (load average {m['load_average_before'][0]:.1f} before, {m['load_average_after'][0]:.1f}"
        f" after); detector: window {d['window']}, LSTM 64/32, {d['features']} features,"
        f" members {', '.join(d['members'])}{', stage 2' if d['stage2'] else ''};"
        f" {info['windows']:,} windows; the best of the runs.",
        "",
        "| path | flows/s | of the model's rate (B=512) |",
        "|---|---:|---:|",
    ]
    for name, what in ROWS.items():
        rate = info["flows_per_second"][name]
        lines.append(f"| {what} | {rate:,} | {rate / model['model_512']:.2f} |")
    share = info.get("roofline_share", {})
    lines += [
        "",
        "| the model alone, same windows | windows/s | of the sgemm roofline |",
        "|---|---:|---:|",
    ]
    for name, rate in model.items():
        who = "exported model (`Scorer`)" if name.startswith("model") else "torch eager"
        of = f"{100 * share[name]:.0f}%" if name in share else ""
        lines.append(f"| {who}, B={name.split('_')[1]} | {rate:,} | {of} |")
    lines += [
        "",
        "Where the in-process pass's time goes (seconds; `seconds_by_stage` of its summary):",
        "",
    ]
    stages = info["seconds_by_stage"]
    keys = list(next(iter(stages.values())))
    lines += ["| pass | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for name, by in stages.items():
        lines.append(f"| {name} | " + " | ".join(f"{by[k]:.2f}" for k in keys) + " |")
    rss = info["peak_rss_gb"]
    lines += [
        "",
        f"Peak RSS of the Parquet command: {rss['quarter_flows']:.2f} GB at {info['flows'] // 4:,}"
        f" flows, {rss['all_flows']:.2f} GB at {info['flows']:,}.",
    ]
    if "sgemm_gflops" in info:
        lines += [
            "",
            f"Roofline: the forward's {info['forward_flops_per_window']:,} matmul FLOPs per"
            f" window at the best square sgemm through XLA, {info['sgemm_gflops']} GFLOP/s.",
        ]
    return "\n".join(lines)


# Runs a command in this interpreter and reports its peak RSS: VmHWM, the high-water mark
# of this address space (``ru_maxrss`` would carry the benchmark's own across the exec).
_RSS = (
    "import runpy, sys; sys.argv = sys.argv[1:]\n"
    "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
    "except SystemExit as e:\n    code = e.code\n"
    "else:\n    code = 0\n"
    "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
    "print('peak_rss_kb', hwm.split()[1], file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def _command(model: str, inputs: str, out: str, cache: str) -> tuple[float, float]:
    """``launch/score.py`` in a fresh process: (seconds, peak RSS in GB)."""
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    argv = [str(REPO / "launch" / "score.py"), f"--model={model}", f"--input={inputs}",
            f"--output={out}", f"--compilation_cache={cache}"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _RSS, *argv], capture_output=True, text=True, env=env, cwd=REPO
    )
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    rss = next(line for line in proc.stderr.splitlines() if line.startswith("peak_rss_kb"))
    return seconds, int(rss.split()[1]) / 1e6


def _pass(scorer, inputs: str, out: str) -> tuple[float, dict]:
    from lstmae_jax.deploy import output, stream

    t0 = time.perf_counter()
    writer = output.AlertWriter(out, output.output_schema(scorer.classes))
    summary, _ = stream.score_files(scorer, inputs, writer)
    return time.perf_counter() - t0, summary


class _Counting:
    """An ``AlertWriter`` that stops the live pass once ``windows`` rows are written."""

    def __init__(self, writer, windows: int, stop):
        self.writer, self.windows, self.stop, self.rows = writer, windows, stop, 0
        self.schema = writer.schema
        self.done_at: float | None = None

    def write(self, table) -> None:
        self.writer.write(table)
        self.rows += table.num_rows
        if self.rows >= self.windows and self.done_at is None:
            self.done_at = time.perf_counter()
            self.stop.set()

    def commit(self, summary: dict, partial: bool = False):
        return self.writer.commit(summary, partial)

    def abort(self) -> None:
        self.writer.abort()


def _follow(scorer, folder: str, out: str, windows: int) -> float:
    """``--follow`` on ``folder``: seconds from the start until ``windows`` rows are written."""
    from lstmae_jax import console
    from lstmae_jax.deploy import output, stream

    stop = console.Stop()
    writer = _Counting(output.AlertWriter(out, output.output_schema(scorer.classes), live=True),
                       windows, stop)  # fmt: skip
    timer = threading.Timer(600, stop.set)  # never more than 10 minutes
    timer.start()
    t0 = time.perf_counter()
    try:
        stream.score_files(scorer, folder, writer, follow=True, poll_seconds=0.05, stop=stop)
    finally:
        timer.cancel()
    if writer.done_at is None:
        raise RuntimeError(f"--follow wrote {writer.rows} of {windows} windows in 10 minutes")
    return writer.done_at - t0


def _rate(call, x_NxTxF: np.ndarray, batch: int, seconds: float = 3.0) -> float:
    """Windows/s of ``call`` over ``x`` in batches of ``batch`` (whole passes, at least
    ``seconds``), after one untimed batch."""
    batches = [x_NxTxF[i : i + batch] for i in range(0, len(x_NxTxF) - batch + 1, batch)]
    call(batches[0])
    done, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds or not done:
        for b in batches:
            call(b)
            done += len(b)
    return done / (time.perf_counter() - t0) if elapsed else 0.0


def _torch_scorer(scorer):
    """torch eager: the log scaler, the LSTM-AE and sse of the artifact's one network, on
    the GPU where torch sees one (cuDNN), the windows sent from the host as ours are."""
    import machine  # beside this script: main put benchmarks/ on the path
    import torch

    torch.set_num_threads(machine.usable_cpus())  # `taskset` honoured
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    (sc,) = scorer.params["scalers"]
    import torch_lstmae  # beside this script: main put benchmarks/ on the path

    model = torch_lstmae.autoencoder(torch, len(scorer.features)).to(device).eval()
    log, mean, std = (
        torch.tensor(np.asarray(sc[k], np.float32), device=device)
        for k in ("log_F", "mean_F", "std_F")
    )

    def score(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            xt = torch.from_numpy(x).to(device)
            z = (torch.where(log > 0, torch.log1p(xt.clamp(min=0)), xt) - mean) / std
            err = torch.mean(torch.abs(model(z) - z), dim=1)
            return torch.sum(err**2, dim=-1).cpu().numpy()

    return score


def main(argv):
    del argv
    if _RENDER.value:
        print(markdown(json.loads(pathlib.Path(_RENDER.value).read_text())))
        return
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    import lstmae_jax
    from lstmae_jax.data import windows as windows_
    from lstmae_jax.deploy import artifact
    from lstmae_jax.synthetic import timeline

    sys.path.insert(0, str(REPO / "benchmarks"))
    import machine
    import roofline
    import torch_lstmae

    info = {"machine": machine.machine_info(("jax", "numpy", "pyarrow", "torch"))}
    info["machine"]["load_average_before"] = os.getloadavg()
    n = _FLOWS.value
    with tempfile.TemporaryDirectory(prefix="scoring-") as tmp:
        path = lambda name: os.path.join(tmp, name)  # noqa: E731
        options = {} if _DEMO.value else {"members": (), "scaler": "log", "score": "sse"}
        t0 = time.perf_counter()
        train = path("train.csv")  # the 2017 style, as make demo: no Protocol column
        timeline.write(timeline.generate(20_000, seed=1), train, style="cicids2017")
        with lstmae_jax.Detector(verbose=0, epochs=1, **options) as det:
            det.fit(train, stage2=_DEMO.value)
            det.export(path("model"))
        fit_seconds = time.perf_counter() - t0
        os.makedirs(path("day"))
        csv = path("day/flows.csv")
        timeline.write(timeline.generate(n, seed=7), csv, style="cicids2017")
        pq.write_table(pcsv.read_csv(csv), path("flows.parquet"))  # as it is: names twice
        parquet = path("flows.parquet")
        quarter = path("quarter.parquet")
        pq.write_table(pq.ParquetFile(parquet).read().slice(0, n // 4), quarter)
        cache = path("xla")
        scorer = artifact.load(path("model"))
        # The pass's windows, cut beforehand, for the model-alone contenders.
        from lstmae_jax.ingest import reader

        src = reader.Source(parquet, scorer.features, scorer.cleaning)
        x_NxF = np.concatenate(
            [
                np.stack([c.table.column(f).to_numpy() for f in scorer.features], 1)
                for c in src.poll(final=True)
                if c.table.num_rows
            ]  # fmt: skip
        ).astype(np.float32)
        t = scorer.window
        x_W = windows_.gather(x_NxF, np.arange(len(x_NxF) - t + 1), t)

        contenders = {
            "command_parquet_parquet": lambda: _command(path("model"), parquet, path("a.parquet"), cache),
            "command_csv_parquet": lambda: _command(path("model"), csv, path("b.parquet"), cache),
            "command_parquet_jsonl": lambda: _command(path("model"), parquet, path("c.jsonl"), cache),
            "pass_parquet": lambda: _pass(scorer, parquet, path("d.parquet")),
            "pass_csv": lambda: _pass(scorer, csv, path("e.parquet")),
            "api_table": lambda: (lambda tb: _timed(lambda: loaded.score(tb)))(pq.ParquetFile(parquet).read()),
            "api_path": lambda: _timed(lambda: loaded.score(parquet)),
        }  # fmt: skip
        _command(path("model"), quarter, path("warm.parquet"), cache)  # fills the cache
        _pass(scorer, quarter, path("warm2.parquet"))  # compiles in this process
        loaded = lstmae_jax.load(path("model"))  # as a user keeps it: loaded once
        loaded.score(quarter)  # ... and compiled
        best: dict[str, float] = {}
        stages: dict[str, dict] = {}
        rss: dict[str, float] = {}
        windows_scored = None
        for _ in range(_REPEATS.value):
            for name, run in contenders.items():
                seconds, extra = run()
                best[name] = min(best.get(name, np.inf), seconds)
                if name.startswith("pass_") and best[name] == seconds:
                    stages[name] = extra["seconds_by_stage"]
                    windows_scored = extra["windows_scored"]
                if name == "command_parquet_parquet":
                    rss["all_flows"] = extra
            follow = _follow(scorer, path("day"), path(f"f{_}.jsonl"), windows_scored)
            best["follow_csv"] = min(best.get("follow_csv", np.inf), follow)
        rss["quarter_flows"] = _command(path("model"), quarter, path("q.parquet"), cache)[1]
        rates = {k: n / v for k, v in best.items()}
        model = {}
        for b in (512, 4096):
            model[f"model_{b}"] = _rate(lambda x: scorer(x), x_W, b)
            if not _DEMO.value:
                model[f"torch_{b}"] = _rate(_torch_scorer(scorer), x_W, b)
        # The model's share of the matmul roofline: its forward's FLOPs at the machine's
        # best sgemm (both in roofline.py, as throughput.py reports them).
        sgemm = roofline.sgemm_gflops(2048, 1.0)
        flops = roofline.matmul_flops_per_window(
            t, len(scorer.features), torch_lstmae.ENC, torch_lstmae.DEC
        )["forward"]
        info["machine"]["load_average_after"] = os.getloadavg()
    info |= {
        "flows": n,
        "windows": int(windows_scored),
        "detector": {
            "members": ["auto"] if _DEMO.value else ["log:sse"],
            "stage2": _DEMO.value,
            "window": t,
            "features": len(scorer.features),
            "fit_seconds": round(fit_seconds, 1),
        },
        "flows_per_second": {k: round(v) for k, v in rates.items()},
        "windows_per_second": {k: round(v) for k, v in model.items()},
        "seconds_by_stage": stages,
        "peak_rss_gb": {k: round(v, 3) for k, v in rss.items()},
        "sgemm_gflops": round(sgemm, 1),
        "forward_flops_per_window": flops,
        "roofline_share": {k: round(v * flops / (sgemm * 1e9), 3) for k, v in model.items()},
        "ratios": {
            **{f"{k}_over_model_512": round(v / model["model_512"], 3) for k, v in rates.items()},
            **(
                {}
                if _DEMO.value
                else {
                    f"model_over_torch_{b}": round(model[f"model_{b}"] / model[f"torch_{b}"], 3)
                    for b in (512, 4096)
                }  # fmt: skip
            ),
        },
    }
    pathlib.Path(_OUTPUT.value).write_text(json.dumps(info, indent=1) + "\n")
    print(
        json.dumps(
            {k: info[k] for k in ("flows_per_second", "windows_per_second", "ratios")}, indent=1
        )
    )


def _timed(call) -> tuple[float, None]:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0, None


if __name__ == "__main__":
    app.run(main)
