"""Peak host memory per flow and windows/s of training, evaluation and scoring as the
day list grows, on one host and shared over processes (issue 19).

    python benchmarks/scale.py --flows=300000,1000000,3000000,10000000 --output=FILE
    python benchmarks/scale.py --flows=16000000 --phases=train --output=FILE
    python benchmarks/scale.py --flows=10000000 --processes=1,2,4 --output=FILE

Generates the flows (``synthetic.timeline``, Parquet day files of ``--per_file`` flows with
the converter's 32,768-row groups, cached in ``--data_dir``), then runs each phase in its
own child process(es), so each peak is its own (``VmHWM``):

* ``train``: the stage-1 training job (``training.train_job``, as ``launch/train.py``
  runs it): load, window, scale, one epoch of a small model, calibration. windows/s: the
  trainer's logged rate (median over the epoch: steps only);
* ``evaluate``: ``launch/evaluate.py``'s stage-1 report on the test split (load, scale,
  score, metrics, per-class attribution). windows/s: test windows over the job's time;
* ``score``: the exported artifact scores every flow through the Python API
  (``api.load(...).score(path)``: one result row per flow, in memory). flows/s over the
  call's time (the export before it is not counted: the peak is reset after it);
* ``score_cli``: the same through ``launch/score.py``'s code (alerts streamed to a
  Parquet file).

``--processes=P,...``: the train phase with ``--share_data`` over P processes of one CPU
device each, joined by ``jax.distributed`` on localhost; the peak is the largest process's.

KB/flow is the peak over the flows loaded (the interpreter, JAX and the model included);
``kb_per_flow_above_baseline`` the same above the RSS after imports (JAX's CPU client
started). ``--repo`` measures another checkout (before/after). Writes JSON (stdout, and
``--output``). Timings are of this machine, busy or not: compare within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _peak_bytes() -> int:
    """This process's peak RSS: VmHWM, not ``ru_maxrss``, which on Linux a child started by
    fork + exec inherits from its parent (the data generation would count)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def make_data(num_flows: int, data_dir: str, per_file: int, seed: int = 0) -> str:
    """A directory of Parquet day files holding ``num_flows`` flows in all.

    Day ``i`` of ``n`` flows is generated once (seed ``seed + i``) into ``data_dir/pool``
    and linked from each size's directory, so the 16M day list reuses the 10M one's days.
    """
    from lstmae_jax.synthetic import timeline, writers

    pool = os.path.join(data_dir, "pool")
    out = os.path.join(data_dir, f"flows_{num_flows}")
    os.makedirs(pool, exist_ok=True)
    os.makedirs(out, exist_ok=True)
    sizes = [min(per_file, num_flows - a) for a in range(0, num_flows, per_file)]
    for i, n in enumerate(sizes):
        day = os.path.join(pool, f"day{i:03d}_{n}.parquet")
        if not os.path.exists(day):
            print(f"generating {day}", file=sys.stderr, flush=True)
            writers.write(timeline.generate(n, seed + i), day)
        link = os.path.join(out, f"day{i:03d}.parquet")
        if os.path.lexists(link) and os.path.realpath(link) != os.path.realpath(day):
            os.remove(link)
        if not os.path.lexists(link):
            os.symlink(day, link)
    for name in set(os.listdir(out)) - {f"day{i:03d}.parquet" for i in range(len(sizes))}:
        os.remove(os.path.join(out, name))  # a day list of another --per_file
    return out


def _cfg(data: str, scaler: str, **extra):
    from lstmae_jax import config

    return config.smoke(
        data=data,
        scaler=scaler,
        window=10,
        epochs=1,
        batch_size=1024,
        eval_batch_size=4096,
        log_every_steps=200,
        checkpoint_every_steps=1_000_000,
        **extra,
    )


def child(phase: str, data: str, scaler: str, workdir: str, cluster: str) -> dict:
    """One phase in this process; returns its peak RSS, flows and rate."""
    import statistics

    import jax

    if cluster:  # "port,processes,id": a --share_data process
        port, num, pid = (int(v) for v in cluster.split(","))
        jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=num, process_id=pid)
    from lstmae_jax import api
    from lstmae_jax.jobs import evaluate, training
    from lstmae_jax.train import monitor

    jax.devices()  # the fixed cost: the interpreter, JAX and its CPU client
    baseline = _peak_bytes()
    t0 = time.time()
    out: dict = {"phase": phase}
    if phase == "train":
        cfg = _cfg(data, scaler, **({"share_data": True, "distributed": True} if cluster else {}))
        summary = training.train_job(cfg, workdir)
        out["flows"] = summary["data"]["flows"]
        out["windows"] = summary["data"]["train"]["windows"]
        records = monitor.read_jsonl(os.path.join(summary["run_dir"], monitor.METRICS_FILE))
        rates = [r["windows_per_s"] for r in records if r.get("windows_per_s")]
        out["windows_per_s"] = round(statistics.median(rates)) if rates else None
    elif phase == "evaluate":
        report = evaluate.stage1_report(workdir, data, "test")
        out["flows"] = json.load(open(os.path.join(workdir, "stage1", "summary.json")))["data"][
            "flows"
        ]
        out["windows"] = report["windows"]["windows"]
        out["windows_per_s"] = round(out["windows"] / (time.time() - t0))
    elif phase == "score":
        artifact, baseline, t0 = _exported(workdir)
        result = api.load(artifact).score(data)
        out["flows"] = result.num_rows
        out["flows_per_s"] = round(result.num_rows / (time.time() - t0))
    elif phase == "score_cli":  # launch/score.py's code: alerts streamed to a Parquet file
        from absl import flags

        from lstmae_jax.cli import score as score_cli

        artifact, baseline, t0 = _exported(workdir)
        alerts = os.path.join(workdir, "alerts.parquet")
        flags.FLAGS(["score", f"--model={artifact}", f"--input={data}", f"--output={alerts}"])
        with contextlib.redirect_stdout(sys.stderr):  # its summary: stdout is our JSON
            code = score_cli._score()
        if code:
            raise RuntimeError(f"launch/score.py's _score returned {code}")
        summary = json.load(open(alerts + ".summary.json"))
        out["flows"] = summary["flows_read"]
        out["flows_per_s"] = round(out["flows"] / (time.time() - t0))
    else:
        raise ValueError(phase)
    out.update(peak_rss_bytes=_peak_bytes(), baseline_rss_bytes=baseline)
    out["seconds"] = round(time.time() - t0, 1)
    return out


def _exported(workdir: str) -> tuple[str, int, float]:
    """The run's artifact (exported once), then the peak reset, since the export is not
    scoring: (its path, the RSS baseline, the start time)."""
    from lstmae_jax.jobs import export

    artifact = os.path.join(workdir, "artifact")
    if not os.path.exists(artifact):
        export.export_scorer(workdir, artifact, platforms=("cpu",))
    with open("/proc/self/clear_refs", "w") as f:  # VmHWM back to the current RSS
        f.write("5")
    return artifact, _peak_bytes(), time.time()


def _per_flow(out: dict) -> dict:
    out["kb_per_flow"] = round(out["peak_rss_bytes"] / out["flows"] / 1000, 3)
    above = out["peak_rss_bytes"] - out["baseline_rss_bytes"]
    out["kb_per_flow_above_baseline"] = round(above / out["flows"] / 1000, 3)
    return out


def _command(phase, data, scaler, workdir, cluster=""):
    cmd = [sys.executable, __file__, "--child", phase, "--data", data, "--scaler", scaler]
    return cmd + ["--workdir", workdir, "--cluster", cluster]


def _env(repo: str, devices: int = 0) -> dict:
    env = dict(os.environ, PYTHONPATH=repo, JAX_PLATFORMS="cpu")
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _result(proc: subprocess.CompletedProcess | subprocess.Popen, stdout: str, what: str) -> dict:
    if proc.returncode:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}); see its log")
    return json.loads(stdout.strip().splitlines()[-1])


def run_phases(phases: list[str], data: str, scaler: str, repo: str) -> list[dict]:
    """The phases in order, one child each, in one workdir (evaluate and score use the
    run that train made)."""
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for phase in phases:
            print(f"{os.path.basename(data)}: {phase} ...", file=sys.stderr, flush=True)
            proc = subprocess.run(
                _command(phase, data, scaler, workdir), env=_env(repo), capture_output=True,
                text=True, cwd=repo,
            )  # fmt: skip
            if proc.returncode:
                sys.stderr.write(proc.stderr[-4000:])
            results.append(_per_flow(_result(proc, proc.stdout, phase)))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    return results


def run_shared(num: int, data: str, scaler: str, repo: str) -> dict:
    """The train phase with --share_data over ``num`` processes (one CPU device each)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    print(f"{os.path.basename(data)}: train, shared by {num} ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        logs = [open(os.path.join(workdir, f"p{i}.out"), "w+") for i in range(num)]
        procs = [
            subprocess.Popen(
                _command("train", data, scaler, workdir, f"{port},{num},{i}"),
                env=_env(repo, 1),
                stdout=logs[i],
                stderr=subprocess.STDOUT,
                cwd=repo,
            )  # fmt: skip
            for i in range(num)
        ]
        outs = []
        for proc, log in zip(procs, logs, strict=True):
            proc.wait()
            log.seek(0)
            text = log.read()
            if proc.returncode:
                sys.stderr.write(text[-4000:])
            outs.append(_result(proc, text, f"shared train over {num}"))
    flows = outs[0]["flows"]
    peaks = [o["peak_rss_bytes"] for o in outs]
    return {
        "processes": num,
        "flows": flows,
        "windows": outs[0]["windows"],
        "windows_per_s": outs[0]["windows_per_s"],
        "seconds": max(o["seconds"] for o in outs),
        "peak_rss_bytes_per_process": peaks,
        "max_peak_rss_bytes": max(peaks),
        "kb_per_flow_of_max_process": round(max(peaks) / flows / 1000, 3),
    }


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1]) / 1024**2  # MemTotal, kB
    except (OSError, ValueError, IndexError):
        return None


def _slope(points: list[tuple[int, int]]) -> float | None:
    """Least-squares bytes per flow of peak RSS over flows."""
    if len(points) < 2:
        return None
    import numpy as np

    n, peak = np.array(points, dtype=np.float64).T
    return float(np.polyfit(n, peak, 1)[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--flows", default="300000", help="comma-separated sizes")
    p.add_argument("--scaler", default="quantile")
    p.add_argument("--phases", default="train,evaluate,score,score_cli")
    p.add_argument("--processes", default="", help="comma-separated: shared train over P")
    p.add_argument("--per_file", type=int, default=1_000_000, help="flows per day file")
    p.add_argument("--data_dir", default=os.path.join(tempfile.gettempdir(), "lstmae_scale"))
    p.add_argument("--repo", default=REPO, help="checkout whose lstmae_jax is measured")
    p.add_argument("--output", default="")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    p.add_argument("--data", default="", help=argparse.SUPPRESS)
    p.add_argument("--workdir", default="", help=argparse.SUPPRESS)
    p.add_argument("--cluster", default="", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.data, a.scaler, a.workdir, a.cluster)))
        return
    sys.path.insert(0, REPO)  # data generation with this checkout, whatever --repo says
    from benchmarks import machine

    result = {
        "benchmark": "scale",
        "machine": machine.machine_info(("jax", "numpy", "pyarrow")),
        "memory_gb": _memory_gb(),
        "scaler": a.scaler,
        "repo": os.path.abspath(a.repo),
        "commit": subprocess.run(
            ["git", "-C", a.repo, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "sizes": [],
        "shared": [],
    }
    for num_flows in (int(v) for v in a.flows.split(",")):
        data = make_data(num_flows, a.data_dir, a.per_file)
        if a.processes:
            for num in (int(v) for v in a.processes.split(",")):
                result["shared"].append(run_shared(num, data, a.scaler, a.repo))
        else:
            phases = run_phases(a.phases.split(","), data, a.scaler, a.repo)
            result["sizes"].append({"flows_requested": num_flows, "phases": phases})
    by_phase: dict[str, list] = {}
    for size in result["sizes"]:
        for ph in size["phases"]:
            by_phase.setdefault(ph["phase"], []).append((ph["flows"], ph["peak_rss_bytes"]))
    result["peak_bytes_per_flow_slope"] = {k: _slope(v) for k, v in by_phase.items()}
    text = json.dumps(result, indent=1)
    print(text)
    if a.output:
        with open(a.output, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
