"""``--help`` of every job lists every option the job defines, however it is started
(cli.entry; launch/*.py, ``python -m lstmae_jax JOB``)."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest

from lstmae_jax import config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
JOBS = ("train", "evaluate", "export", "score", "convert", "synth")
# Runs a job's command with --help, then prints the flags the project's modules defined in
# that process: what --help must list (absl's and JAX's own flags are --helpfull's).
HELP_THEN_DEFINED = (
    "import json, runpy, sys\n"
    "from absl import flags\n"
    "try:\n"
    "    if sys.argv[1] == '-m':\n"
    "        sys.argv = ['lstmae_jax', *sys.argv[2:]]\n"
    "        runpy.run_module('lstmae_jax', run_name='__main__', alter_sys=True)\n"
    "    else:\n"
    "        sys.argv = sys.argv[1:]\n"
    "        runpy.run_path(sys.argv[0], run_name='__main__')\n"
    "except SystemExit:\n"
    "    pass\n"
    "ours = [f.name for m, fs in flags.FLAGS.flags_by_module_dict().items()\n"
    "        if m.startswith('lstmae_jax') for f in fs]\n"
    "print('DEFINED', json.dumps(sorted(ours)))\n"
)


def _help(*command: str) -> tuple[set[str], set[str], str]:
    """(flags --help listed, flags the project defined, the help text)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", HELP_THEN_DEFINED, *command],
        capture_output=True, text=True, timeout=120, env=env, cwd=REPO,
    )  # fmt: skip
    text, _, defined = proc.stdout.rpartition("DEFINED ")
    assert defined, proc.stdout + proc.stderr[-3000:]
    listed = set(re.findall(r"^  --(?:\[no\])?(\w+)", text, flags=re.M))
    return listed, set(json.loads(defined)), text


@pytest.mark.parametrize("job", JOBS)
def test_launcher_help_lists_every_option_of_its_job(job):
    listed, defined, text = _help(os.path.join(REPO, "launch", f"{job}.py"), "--help")
    assert defined and listed == defined, (sorted(defined - listed), sorted(listed - defined))
    assert f"lstmae-{job}" in text  # the usage line is the job's docstring
    if job == "train":  # every field of the config is an option, and --help shows it
        assert listed == {f.name for f in dataclasses.fields(config.Config)} | {"workdir"}
        assert {"epochs", "window", "batch_size", "data"} <= listed


def test_module_help_lists_the_same_options_as_the_launcher():
    listed, defined, text = _help("-m", "synth", "--help")
    assert listed == defined == {"output", "flows", "seed", "style", "attack_fraction"}
    assert "lstmae-synth" in text and "python -m lstmae_jax synth" in text
