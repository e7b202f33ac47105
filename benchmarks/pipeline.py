"""Data-pipeline benchmark: CSV -> Parquet conversion against pandas, in one run.

    python benchmarks/pipeline.py [--rows=500000] [--repeats=3]

Builds a CSV of at least ``--rows`` CICIDS2017 rows in a temporary directory by repeating
the genuine rows of ``shared/data/cicids2017/stratified_sample_all_days.parquet``, written
the way the raw 2017 CSVs are: the original header with its leading spaces and the
duplicated ``Fwd Header Length``, ``Infinity`` and ``NaN`` as text. The CSV is written in
UTF-8 (the originals are cp1252) so that pandas needs no transcoding.

Each contender runs in a fresh subprocess, so its peak RSS (``os.wait4`` rusage of that
child) is its own; runs alternate between contenders so both see the same machine load,
and the best time of ``--repeats`` is reported (the host is shared). The timed span is
the work only (imports and interpreter start excluded); an ``idle`` child that only
imports the libraries gives the memory floor.

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
import platform
import subprocess
import sys
import tempfile
import time

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "cicids2017" / "stratified_sample_all_days.parquet"
RESULTS = REPO / "benchmarks" / "results" / "pipeline.json"

_ROWS = flags.DEFINE_integer("rows", 500_000, "Minimum number of CSV rows to convert.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Runs per contender; the best time is reported.")
_OUTPUT = flags.DEFINE_string("output", str(RESULTS), "JSON file the results are merged into.")
_CHILD = flags.DEFINE_enum(
    "child", None, ["ours", "pandas", "idle"], "Internal: run one contender."
)
_CSV = flags.DEFINE_string("csv", None, "Internal: the CSV a child converts.")
_OUT = flags.DEFINE_string("out", None, "Internal: the directory a child writes to.")


def machine_info() -> dict:
    import numpy
    import pyarrow

    cpu = "unknown"
    if os.path.exists("/proc/cpuinfo"):
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        import pandas

        pandas_version = pandas.__version__
    except ImportError:
        pandas_version = None
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu,
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "pyarrow": pyarrow.__version__,
        "pandas": pandas_version,
    }


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
    if kind == "ours":
        from lstmae_jax import convert
    start, cpu = time.perf_counter(), time.process_time()
    rows = 0
    if kind == "ours":
        rows = convert.convert([csv], out)[0].rows_in
    elif kind == "pandas":
        df = pd.read_csv(csv)
        df.to_parquet(os.path.join(out, "pandas.parquet"), compression="zstd")
        rows = len(df)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps({"rows": rows, "seconds": seconds, "cpu_seconds": cpu}))


def run_child(kind: str, csv: pathlib.Path, out: pathlib.Path) -> dict:
    """Run a contender in a fresh interpreter; its own peak RSS comes from ``os.wait4``."""
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
    result["peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux reports KiB
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
        best = min(results, key=lambda r: r["seconds"])
        summary[kind] = {
            "rows_per_s": round(rows / best["seconds"]),
            "seconds_best": round(best["seconds"], 3),
            "seconds_all": [round(r["seconds"], 3) for r in results],
            "cpu_seconds_best_run": round(best["cpu_seconds"], 3),
            "peak_rss_mib": round(max(r["peak_rss_mib"] for r in results), 1),
        }
    if "pandas" in summary:
        ours, peer = summary["ours"], summary["pandas"]
        summary["speed_ratio_vs_pandas"] = round(ours["rows_per_s"] / peer["rows_per_s"], 2)
        summary["memory_ratio_vs_pandas"] = round(ours["peak_rss_mib"] / peer["peak_rss_mib"], 3)
        summary["targets"] = {
            "speed_ratio_min": 2.0,
            "memory_ratio_max": 1 / 3,
            "met": summary["speed_ratio_vs_pandas"] >= 2.0
            and summary["memory_ratio_vs_pandas"] <= 1 / 3,
        }
    return summary


def main(argv: list[str]) -> None:
    del argv
    if _CHILD.value:
        child(_CHILD.value, _CSV.value, _OUT.value)
        return
    if not SAMPLE.exists():
        sys.exit(f"benchmark data not found: {SAMPLE}")
    output = pathlib.Path(_OUTPUT.value)
    results = json.loads(output.read_text()) if output.exists() else {}
    results["machine"] = machine_info()
    results["machine"]["load_average_before"] = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        results["conversion"] = bench_conversion(pathlib.Path(tmp))
    conv = results["conversion"]
    for kind in ("ours", "pandas"):
        if kind in conv:
            print(
                f"{kind:7s} {conv[kind]['rows_per_s']:>10,} rows/s  {conv[kind]['peak_rss_mib']:7.1f} MiB"
            )
    if "speed_ratio_vs_pandas" in conv:
        print(f"speed x{conv['speed_ratio_vs_pandas']} (target >= 2), "
              f"memory x{conv['memory_ratio_vs_pandas']} (target <= 0.333)")  # fmt: skip
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    app.run(main)
