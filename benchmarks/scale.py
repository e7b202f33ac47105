"""Peak host memory per flow of loading, windowing, scaling and training (issue 19).

    python benchmarks/scale.py --flows=300000 --scaler=quantile [--repo=PATH] [--output=FILE]

Generates ``--flows`` synthetic flows (``synthetic.timeline.generate``, Parquet files of
at most ``--per_file`` flows, cached in ``--data_dir``), then runs in child processes, one
per phase, so each peak is its own:

* ``data``: ``load_flows`` + ``windows.for_config`` (scaled in place where the checkout
  has ``consume``);
* ``train``: the stage-1 training job (``training.train_job``: load, window, one epoch
  of a small model, calibration), as ``launch/train.py`` runs it.

Each child reports its peak RSS (``ru_maxrss``); KB/flow is that peak over the flows
loaded (the interpreter, JAX and the model's fixed cost included, so small runs
overstate it), and ``kb_per_flow_above_baseline`` the same above the RSS after imports
(and, for ``train``, JAX's CPU client started). ``--repo`` imports ``lstmae_jax`` from another checkout (a worktree of
main) for a before/after comparison with the same data and the same script.
Writes JSON (stdout, and ``--output``).
"""

from __future__ import annotations

import argparse
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
        if not os.path.exists(link):
            os.symlink(day, link)
    return out


def child(phase: str, data: str, scaler: str, workdir: str) -> dict:
    """One phase in this process; returns its peak RSS and the flows it loaded."""
    from lstmae_jax import config

    cfg = config.smoke(
        data=data,
        scaler=scaler,
        window=10,
        epochs=1,
        batch_size=1024,
        eval_batch_size=4096,
        log_every_steps=1000,
        checkpoint_every_steps=100_000,
    )
    if phase == "train":  # the fixed cost: the interpreter, JAX and its CPU client
        import jax

        from lstmae_jax.jobs import training  # noqa: F401

        jax.devices()
    baseline = _peak_bytes()
    t0 = time.time()
    if phase == "data":
        from lstmae_jax.data import dataset, windows

        flows = dataset.load_flows(data)
        num = len(flows)
        try:
            w = windows.for_config(cfg, flows, consume=True)
        except TypeError:  # a checkout from before in-place scaling
            w = windows.for_config(cfg, flows)
        del flows
        assert len(w.x_NxF) == num
    elif phase == "train":
        from lstmae_jax.jobs import training

        summary = training.train_job(cfg, workdir)
        num = summary["data"]["flows"]
    else:
        raise ValueError(phase)
    peak = _peak_bytes()
    return {
        "phase": phase,
        "flows": num,
        "peak_rss_bytes": peak,
        "baseline_rss_bytes": baseline,
        "seconds": round(time.time() - t0, 1),
    }


def run_child(phase: str, data: str, scaler: str, repo: str) -> dict:
    with tempfile.TemporaryDirectory() as workdir:
        env = dict(os.environ, PYTHONPATH=repo, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", ""))
        if not env["JAX_PLATFORMS"]:
            env.pop("JAX_PLATFORMS")
        cmd = [sys.executable, __file__, "--child", phase, "--data", data, "--scaler", scaler]
        cmd += ["--workdir", workdir]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=repo)
        if proc.returncode:
            raise RuntimeError(f"{phase} failed:\n{proc.stderr[-4000:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    out["kb_per_flow"] = round(out["peak_rss_bytes"] / out["flows"] / 1000, 3)
    above = out["peak_rss_bytes"] - out["baseline_rss_bytes"]
    out["kb_per_flow_above_baseline"] = round(above / out["flows"] / 1000, 3)
    out["rusage_children_max_bytes"] = children  # the largest child so far, a cross-check
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--flows", type=int, default=300_000)
    p.add_argument("--scaler", default="quantile")
    p.add_argument("--phases", default="data,train")
    p.add_argument("--per_file", type=int, default=1_000_000, help="flows per day file")
    p.add_argument("--data_dir", default=os.path.join(tempfile.gettempdir(), "lstmae_scale"))
    p.add_argument("--repo", default=REPO, help="checkout whose lstmae_jax is measured")
    p.add_argument("--output", default="")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    p.add_argument("--data", default="", help=argparse.SUPPRESS)
    p.add_argument("--workdir", default="", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.data, a.scaler, a.workdir)))
        return
    sys.path.insert(0, REPO)  # data generation with this checkout, whatever --repo says
    data = make_data(a.flows, a.data_dir, a.per_file)
    result = {
        "flows_requested": a.flows,
        "scaler": a.scaler,
        "repo": os.path.abspath(a.repo),
        "commit": subprocess.run(
            ["git", "-C", a.repo, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "phases": [run_child(ph, data, a.scaler, a.repo) for ph in a.phases.split(",")],
    }
    text = json.dumps(result, indent=1)
    print(text)
    if a.output:
        with open(a.output, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
