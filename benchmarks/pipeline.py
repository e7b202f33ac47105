"""Data-pipeline benchmark: CSV -> Parquet conversion against pandas, in one run.

    python benchmarks/pipeline.py [--rows=500000] [--repeats=5]

Builds a CSV of at least ``--rows`` CICIDS2017 rows in a temporary directory by repeating
the genuine rows of ``shared/data/cicids2017/stratified_sample_all_days.parquet``, written
the way the raw 2017 CSVs are: the original header with its leading spaces and the
duplicated ``Fwd Header Length``, ``Infinity`` and ``NaN`` as text. The CSV is written in
UTF-8 (the originals are cp1252) so that pandas needs no transcoding.

Each contender runs in a fresh subprocess, so its peak memory is its own; runs alternate
between contenders so both see the same machine load, and the best and median of
``--repeats`` runs are reported (the host may be shared: the load average is recorded,
and CPU seconds are less sensitive to it than wall time). The timed span is the work
only (imports and interpreter start excluded). Peak memory is the child's VmHWM
(``os.wait4`` rusage where /proc is missing); an ``idle`` child that only imports
``lstmae_jax.convert`` gives our floor.

* ``ours``: ``lstmae_jax.convert.convert`` with default policies (parses, cleans, writes
  canonical float64 columns, zstd).
* ``pandas``: ``pandas.read_csv`` + ``DataFrame.to_parquet(compression="zstd")``; no
  cleaning at all, so the comparison favours pandas. Skipped when pandas is missing.

Results are merged into ``benchmarks/results/pipeline.json`` under ``conversion`` (other
sections of that file are kept), with machine information under ``machine``.
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "cicids2017" / "stratified_sample_all_days.parquet"
RESULTS = REPO / "benchmarks" / "results" / "pipeline.json"

_ROWS = flags.DEFINE_integer("rows", 500_000, "Minimum number of CSV rows to convert.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Runs per contender (best and median reported).")
_OUTPUT = flags.DEFINE_string("output", str(RESULTS), "JSON file the results are merged into.")
_CHILD = flags.DEFINE_enum(
    "child", None, ["ours", "pandas", "idle"], "Internal: run one contender."
)
_BATCHES_ONLY = flags.DEFINE_bool("batches_only", False, "Skip the conversion part.")
_CSV = flags.DEFINE_string("csv", None, "Internal: the CSV a child converts.")
_OUT = flags.DEFINE_string("out", None, "Internal: the directory a child writes to.")


def write_csv(path: pathlib.Path, min_rows: int) -> int:
    """Raw-2017-style CSV of at least ``min_rows`` rows; returns the row count."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    table = pq.read_table(SAMPLE)
    cells = []
    for col in table.columns:
        text = pc.cast(col, pa.string())
        if pa.types.is_floating(col.type):  # Arrow writes inf/nan; CICFlowMeter wrote these
            for arrow, java in (("inf", "Infinity"), ("-inf", "-Infinity"), ("nan", "NaN")):
                text = pc.replace_substring_regex(text, f"^{arrow}$", java)
        cells.append(text)
    body = pa.BufferOutputStream()
    options = pcsv.WriteOptions(include_header=False, quoting_style="none")
    pcsv.write_csv(pa.table(cells, names=[f"c{i}" for i in range(len(cells))]), body, options)
    body = body.getvalue().to_pybytes()
    header = [n.removesuffix(".1") for n in table.column_names]  # the duplicate, as in the raw CSV
    repeats = -(-min_rows // table.num_rows)
    with open(path, "wb") as f:
        f.write((",".join(header) + "\n").encode())
        for _ in range(repeats):
            f.write(body)
    return repeats * table.num_rows


def child(kind: str, csv: str, out: str) -> None:
    """One contender's work in this process; prints its timing as JSON."""
    import pyarrow  # noqa: F401 - imported before timing in every contender

    if kind == "pandas":
        import pandas as pd
    if kind in ("ours", "idle"):
        from lstmae_jax.ingest import convert
    start, cpu = time.perf_counter(), time.process_time()
    rows = 0
    if kind == "ours":
        rows = convert.convert([csv], out)[0].rows_in
    elif kind == "pandas":
        df = pd.read_csv(csv)
        df.to_parquet(os.path.join(out, "pandas.parquet"), compression="zstd")
        rows = len(df)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps({"rows": rows, "seconds": seconds, "cpu_seconds": cpu, "vm_hwm_mib": _hwm()}))


def _hwm() -> float | None:
    """This process's peak RSS (VmHWM, reset by exec, unlike ``ru_maxrss``), in MiB."""
    if not os.path.exists("/proc/self/status"):
        return None
    for line in open("/proc/self/status", encoding="ascii"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def run_child(kind: str, csv: pathlib.Path, out: pathlib.Path) -> dict:
    """Run a contender in a fresh interpreter and collect its timing and peak memory."""
    out.mkdir(exist_ok=True)
    cmd = [sys.executable, __file__, f"--child={kind}", f"--csv={csv}", f"--out={out}"]
    with tempfile.TemporaryFile() as stdout:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        text = stdout.read().decode()
    if proc.returncode:
        raise RuntimeError(f"{kind} failed with exit code {proc.returncode}")
    result = json.loads(text.strip().splitlines()[-1])
    result["wall_with_startup_s"] = wall
    # ru_maxrss survives exec, so it can show the parent's RSS at fork; VmHWM cannot.
    result["peak_rss_mib"] = result.pop("vm_hwm_mib") or usage.ru_maxrss / 1024
    return result


def bench_conversion(workdir: pathlib.Path) -> dict:
    csv = workdir / "bench.csv"
    rows = write_csv(csv, _ROWS.value)
    with open(csv, "rb") as f:  # warm the page cache so no contender pays for the disk
        while f.read(1 << 24):
            pass
    contenders = ["ours"]
    try:
        import pandas  # noqa: F401

        contenders.append("pandas")
    except ImportError:
        pass
    runs: dict[str, list[dict]] = {c: [] for c in contenders}
    idle = run_child("idle", csv, workdir / "idle")
    for _ in range(_REPEATS.value):
        for kind in contenders:
            runs[kind].append(run_child(kind, csv, workdir / kind))
            print(kind, runs[kind][-1], flush=True)
    summary = {
        "csv_rows": rows,
        "csv_mib": round(csv.stat().st_size / 2**20, 1),
        "idle_import_rss_mib": round(idle["peak_rss_mib"], 1),
        "load_average_after": os.getloadavg(),
    }
    for kind, results in runs.items():
        seconds = sorted(r["seconds"] for r in results)
        best = min(results, key=lambda r: r["seconds"])
        summary[kind] = {
            "rows_per_s": round(rows / seconds[0]),
            "rows_per_s_median": round(rows / statistics.median(seconds)),
            "seconds_all": [round(r["seconds"], 3) for r in results],
            "cpu_seconds_all": [round(r["cpu_seconds"], 3) for r in results],
            "peak_rss_mib": round(max(r["peak_rss_mib"] for r in results), 1),
            "best_run": best,
        }
    if "pandas" in summary:
        ours, peer = summary["ours"], summary["pandas"]
        cpu = [statistics.median(s["cpu_seconds_all"]) for s in (peer, ours)]
        summary["ratios_vs_pandas"] = {
            "speed_best": round(ours["rows_per_s"] / peer["rows_per_s"], 2),
            "speed_median": round(ours["rows_per_s_median"] / peer["rows_per_s_median"], 2),
            "cpu_efficiency_median": round(cpu[0] / cpu[1], 2),  # >1: ours needs less CPU
            "peak_memory": round(ours["peak_rss_mib"] / peer["peak_rss_mib"], 3),
        }
        ratios = summary["ratios_vs_pandas"]
        summary["targets"] = {
            "speed_min": 2.0,
            "memory_max": round(1 / 3, 3),
            "speed_met": ratios["speed_best"] >= 2.0,
            "memory_met": ratios["peak_memory"] <= 1 / 3,
        }
    return summary


def bench_batches(tmp: pathlib.Path, batch_size: int = 512, window: int = 10) -> dict:
    """Parquet -> arrays -> fixed-shape batches, against what a training step consumes.

    Training consumes *index* batches (the window start rows and labels; the windows are
    gathered on device from the table placed there once), so that is the rate that must
    outpace the step. The host-side gather of full B x T x F windows is measured too.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lstmae_jax.data import dataset, windows

    table = pq.read_table(SAMPLE)
    reps = -(-_ROWS.value // table.num_rows)
    path = tmp / "batches.parquet"
    pq.write_table(pa.concat_tables([table] * reps), path)
    t0 = time.perf_counter()
    flows = dataset.load_flows(str(path))
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    w = windows.build(flows, window=window, split="temporal")
    t_build = time.perf_counter() - t0
    starts, labels = w.starts["train"], w.label["train"]
    order = windows.BatchOrder(len(starts), batch_size, seed=0)
    n_batches = 2000
    t0 = time.perf_counter()
    for _ in range(n_batches):
        idx = order.next()
        batch = {"starts": starts[idx].astype(np.int32), "label": labels[idx].astype(np.int32)}
    t_index = time.perf_counter() - t0
    n_gather = 200
    t0 = time.perf_counter()
    for _ in range(n_gather):
        x = windows.gather(w.x_NxF, batch["starts"], window)
        batch = {"starts": starts[order.next()]}
    t_gather = time.perf_counter() - t0
    step = _train_step_windows_per_s(w, batch_size)
    index_rate = n_batches * batch_size / t_index
    out = {
        "rows": len(flows),
        "features": len(flows.features),
        "window": window,
        "batch_size": batch_size,
        "load_rows_per_s": round(len(flows) / t_load),
        "windows_build_rows_per_s": round(len(flows) / t_build),
        "index_batches_windows_per_s": round(index_rate),
        "host_gather_windows_per_s": round(n_gather * batch_size / t_gather),
        "gathered_batch_shape": list(x.shape),
        "train_step_windows_per_s": round(step),
        "ratio_index_batches_vs_train_step": round(index_rate / step, 1),
    }
    out["targets"] = {
        "index_batches_min_windows_per_s": 1_000_000,
        "ratio_vs_train_step_min": 10,
        "met": index_rate >= 1_000_000 and index_rate / step >= 10,
    }
    return out


def _train_step_windows_per_s(w, batch_size: int, steps: int = 20) -> float:
    """The reference LSTM-AE train step on this machine's default device, windows/s."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from lstmae_jax import compiler, config
    from lstmae_jax.data import windows
    from lstmae_jax.train import steps as steps_lib

    cfg = config.Config(window=w.window, members=())  # the reference design: one network
    model = steps_lib.build_model(cfg, len(w.features), 2, nnx.Rngs(0))
    tx = steps_lib.optimizer(cfg)
    graphdef, state = steps_lib.init_state(model, tx, nnx.Param)
    task = steps_lib.task_for(cfg, 2)
    scalers = [sc.arrays() for sc in w.scalers]  # the step scales on the device
    train_step = steps_lib.make_train_step(graphdef, tx, task, nnx.Param, scalers)
    step_fn = compiler.jit(train_step, donate_argnums=0)
    table = jnp.asarray(w.x_NxF)
    order = windows.BatchOrder(len(w.starts["train"]), batch_size, seed=1)

    def batch():
        idx = order.next()
        return {
            "starts": w.starts["train"][idx].astype(np.int32),
            "label": np.zeros(batch_size, np.int32),
        }

    for _ in range(3):
        state, m = step_fn(state, table, batch())
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = step_fn(state, table, batch())
    jax.block_until_ready((state, m))
    return steps * batch_size / (time.perf_counter() - t0)


def main(argv: list[str]) -> None:
    del argv
    if _CHILD.value:
        child(_CHILD.value, _CSV.value, _OUT.value)
        return
    if not SAMPLE.exists():
        sys.exit(f"benchmark data not found: {SAMPLE}")
    output = pathlib.Path(_OUTPUT.value)
    results = json.loads(output.read_text()) if output.exists() else {}
    import machine  # here, not at the top: a contender's child process stays as it was

    results["machine"] = machine.machine_info(("numpy", "pyarrow", "pandas"))
    results["machine"]["load_average_before"] = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        if not _BATCHES_ONLY.value:
            results["conversion"] = bench_conversion(pathlib.Path(tmp))
        results["batches"] = bench_batches(pathlib.Path(tmp))
    print("batches:", json.dumps(results["batches"]))
    conv = results.get("conversion", {})
    for kind in ("ours", "pandas"):
        if kind in conv:
            c = conv[kind]
            print(f"{kind:7s} {c['rows_per_s']:>9,} rows/s best, {c['rows_per_s_median']:>9,} median,"
                  f" {c['peak_rss_mib']:6.1f} MiB peak")  # fmt: skip
    if "ratios_vs_pandas" in conv:
        print("vs pandas:", conv["ratios_vs_pandas"], "targets:", conv["targets"])
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    app.run(main)
