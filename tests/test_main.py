"""``python -m lstmae_jax JOB``: the jobs it knows, its usage, and one real run."""

import os
import pathlib
import subprocess
import sys
import tomllib

import pyarrow.parquet as pq
import pytest

from lstmae_jax import __main__ as dispatch

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_every_job_has_a_command_a_launcher_and_a_module():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {f"lstmae-{job}": f"lstmae_jax.cli.{job}:run" for job in dispatch.JOBS}
    assert {p.stem for p in (REPO / "launch").glob("*.py")} == set(dispatch.JOBS)
    assert {p.stem for p in (REPO / "lstmae_jax" / "cli").glob("*.py")} == {
        *dispatch.JOBS,
        "__init__",
        "entry",
    }


@pytest.mark.parametrize("arg", ["--help", "-h", "help"])
def test_help_lists_the_jobs(arg, capsys):
    with pytest.raises(SystemExit) as e:
        dispatch.main(["lstmae_jax", arg])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(f"  {job} " in out for job in dispatch.JOBS)


@pytest.mark.parametrize("argv, message", [([], "no job given"), (["nope"], "unknown job 'nope'")])
def test_no_job_or_an_unknown_one_is_a_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        dispatch.main(["lstmae_jax", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and "lstmae-JOB" in err


def test_runs_a_job_with_its_flags(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = tmp_path / "flows.parquet"
    cmd = [sys.executable, "-m", "lstmae_jax", "synth", f"--output={out}", "--flows=300"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert pq.read_metadata(out).num_rows > 250  # the canonical style drops non-finite rows
    bad = subprocess.run([*cmd, "--flows=x"], capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and "--flows" in bad.stderr and "Traceback" not in bad.stderr
