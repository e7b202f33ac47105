"""The Python API's ``score`` against ``launch/score.py`` on the same 100k flows, in one run.

    python benchmarks/api_score.py [--rows=100000] [--repeats=3]

Trains a small detector through the API (``Detector.fit`` on 3,000 generated flows, one
epoch, both stages; the default window of 10 and LSTM 64/32, so the scoring cost is the
real model's), generates ``--rows`` held-back flows as a raw CSE-CIC-IDS2018-style CSV
(``Infinity``/``NaN`` rates, ``-1`` sentinels) and scores that file with:

* ``cli_process``: ``launch/score.py`` as a user runs it (a subprocess: interpreter start,
  imports, artifact load, scoring, the Parquet output and its summary);
* ``cli``: the same in process, timed from ``artifact.load`` to the committed output:
  what ``launch/score.py`` does after its imports;
* ``api``: ``lstmae_jax.load(dir).score(path)``, timed from the load to the aligned result
  table (one row per input row);
* ``api_table``: ``det.score(table)`` of the same flows read into a pyarrow Table first
  (the read not timed; the API writes it to a temporary Parquet file, timed).

Runs alternate between contenders so they see the same machine load (the host may be
shared: the load average is recorded); an untimed warm-up of each on 2,000 other flows
compiles the scorer's one batch shape first (``cli_process`` compiles in every run). The
results must be equal (file row, score, alert, class, probability, top features) before
anything is written. ``ratio`` is the API's median over the command line's (in process);
the issue's bar is at most 1.10. Writes ``benchmarks/results/api_score.json``.
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
RESULTS = REPO / "benchmarks" / "results" / "api_score.json"

_ROWS = flags.DEFINE_integer("rows", 100_000, "Flows in the scored file.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per contender (median and best).")
_OUTPUT = flags.DEFINE_string("output", str(RESULTS), "JSON file the results go to.")


def _cli(model: str, csv: str, out: str) -> float:
    """``launch/score.py``'s ``_score`` after its imports, timed."""
    from lstmae_jax.deploy import artifact, output, stream

    t0 = time.perf_counter()
    scorer = artifact.load(model)
    stream.check_inputs(csv)
    stream.check_output(out, csv)
    writer = output.AlertWriter(out, output.output_schema(scorer.classes))
    stream.score_files(scorer, csv, writer)
    return time.perf_counter() - t0


def _cli_process(model: str, csv: str, out: str) -> float:
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch" / "score.py"), f"--model={model}",
         f"--input={csv}", f"--output={out}"],
        capture_output=True, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return seconds


def _api(model: str, data):
    import lstmae_jax

    t0 = time.perf_counter()
    result = lstmae_jax.load(model).score(data)
    return time.perf_counter() - t0, result


def _check_equal(cli_out: str, api, api_table) -> int:
    """The command line's rows against the API's scored rows (path: by file row; table: by
    position, the CSV's line minus 2). Returns the number of windows compared."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    cli = pq.read_table(cli_out)
    for result, offset in ((api, 0), (api_table, 2)):
        scored = result.filter(pc.equal(result.column("status"), "scored"))
        assert scored.num_rows == cli.num_rows, (scored.num_rows, cli.num_rows)
        rows = pc.add(scored.column("row"), offset)
        assert rows.equals(cli.column("row")), "rows differ"
        for a, c in (("score", "score"), ("alert", "alert"), ("predicted_class", "predicted"),
                     ("class_probability", "probability")):  # fmt: skip
            assert scored.column(a).equals(cli.column(c)), f"{a} differs"
        tops = scored.column("top_features").to_pylist()
        assert tops == [list(t) for t in zip(*(cli.column(f"top{k}").to_pylist()
                                                for k in (1, 2, 3)), strict=True)]  # fmt: skip
    return cli.num_rows


def main(argv):
    del argv
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import pyarrow.csv as pcsv

    import lstmae_jax
    from lstmae_jax.synthetic import timeline

    sys.path.insert(0, str(REPO / "benchmarks"))
    import machine

    info = {"machine": machine.machine_info(("jax", "numpy", "pyarrow"))}
    info["machine"]["load_average_before"] = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="api_score-") as tmp:
        t0 = time.perf_counter()
        det = lstmae_jax.Detector(os.path.join(tmp, "work"), epochs=1, batch_size=64)
        det.fit(timeline.generate(3000, seed=1))
        model = os.path.join(tmp, "model")
        det.export(model)
        fit_seconds = time.perf_counter() - t0
        csv = os.path.join(tmp, "flows.csv")
        timeline.write(timeline.generate(_ROWS.value, seed=7), csv, style="csecicids2018")
        warm = os.path.join(tmp, "warm.csv")  # the warm-up's: compiles the one batch shape
        timeline.write(timeline.generate(2000, seed=8), warm, style="csecicids2018")
        outs = {k: os.path.join(tmp, f"{k}.parquet") for k in ("cli", "cli_process")}
        contenders = {
            "cli_process": lambda path, _: _cli_process(model, path, outs["cli_process"]),
            "cli": lambda path, _: _cli(model, path, outs["cli"]),
            "api": lambda path, _: _api(model, path)[0],
            "api_table": lambda _, table: _api(model, table)[0],
        }
        for run in contenders.values():
            run(warm, pcsv.read_csv(warm))
        table = pcsv.read_csv(csv)
        seconds = {k: [] for k in contenders}
        for _ in range(_REPEATS.value):
            for name, run in contenders.items():
                seconds[name].append(round(run(csv, table), 3))
        windows = _check_equal(outs["cli"], _api(model, csv)[1], _api(model, table)[1])
        info["machine"]["load_average_after"] = os.getloadavg()
    median = {k: statistics.median(v) for k, v in seconds.items()}
    info |= {
        "flows": _ROWS.value,
        "windows_compared": windows,
        "equal_results": True,  # _check_equal raises otherwise
        "model": {
            "window": det.window,
            "classes": len(det.classes or []),
            "fit_seconds": round(fit_seconds, 1),
        },  # fmt: skip
        "seconds": seconds,
        "seconds_median": median,
        "flows_per_second_median": {k: round(_ROWS.value / v) for k, v in median.items()},
        "ratio": round(median["api"] / median["cli"], 3),
        "ratio_table": round(median["api_table"] / median["cli"], 3),
        "ratio_vs_process": round(median["api"] / median["cli_process"], 3),
        "bar": "api / cli (median seconds) <= 1.10",
    }
    pathlib.Path(_OUTPUT.value).write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps({k: info[k] for k in ("seconds_median", "ratio", "ratio_table")}, indent=1))


if __name__ == "__main__":
    app.run(main)
