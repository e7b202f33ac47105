"""``--help`` of every job lists every option the job defines, however it is started
(cli.entry; launch/*.py, ``python -m lstmae_jax JOB``)."""

import dataclasses
import json
import logging
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


@pytest.mark.parametrize("job, flag", [("train", "--help"), ("score", "-h")])
def test_help_groups_the_flags_by_purpose_and_exits_0(job, flag):
    # absl's --help exits 1, which breaks ``lstmae-train --help && ...`` in a script.
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "launch", f"{job}.py"), flag],
        capture_output=True, text=True, timeout=120, cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    headings = re.findall(r"^(\S[^\n]*):$", proc.stdout, flags=re.M)
    if job == "train":  # the config's sections, in its order, after the job's own flags
        assert headings == ["options", *(title for title, _ in config.sections())]
        assert {"data", "model", "training", "several hosts"} <= set(headings)
        # each option under its section: --epochs after "training:", before the next one
        training = proc.stdout.split("\ntraining:\n")[1].split("\n\n")[0]
        assert "\n  --epochs:" in f"\n{training}" and "--window:" not in training
    else:  # score's --model and --target_fpr are its own, not the config's
        assert headings == ["options"]
    for named in ("--verbosity=1", "--verbosity=-1", "--helpfull", "README.md", "docs/"):
        assert named in proc.stdout.split("\n\n")[-1]  # the footer


def test_helpfull_is_absls_full_listing_and_exits_0():
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "launch", "synth.py"), "--helpfull"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--verbosity" in proc.stdout and "--output" in proc.stdout


def test_config_sections_hold_every_option_once_in_declaration_order():
    sections = config.sections()
    assert [n for _, fields in sections for n in fields] == [
        f.name for f in dataclasses.fields(config.Config)
    ]
    assert dict(sections)["training"][:2] == ["batch_size", "eval_batch_size"]


def test_a_command_hides_jaxs_missing_tpu_line_unless_verbose(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(
        "import sys, types, jax\n"
        "from lstmae_jax.cli import entry\n"
        "job = types.ModuleType('job')\n"
        "job.__doc__ = 'a job'\n"
        "entry.run(lambda argv: print(jax.devices()), job)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}  # JAX probes them all

    def stderr(*flags):
        proc = subprocess.run([sys.executable, str(script), *flags], capture_output=True,
                              text=True, timeout=120, env=env, cwd=REPO)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stderr

    if "Unable to initialize backend" not in stderr("--verbosity=1"):
        pytest.skip("JAX probed no missing backend here")
    assert "Unable to initialize backend" not in stderr()


def test_jaxs_missing_tpu_line_is_a_debug_line(monkeypatch):
    from absl import logging as absl_logging

    from lstmae_jax.cli import entry

    def record(message, level=logging.INFO):
        return logging.LogRecord(
            "jax._src.xla_bridge", level, "xla_bridge.py", 1, message, (), None
        )

    probe = record("Unable to initialize backend 'tpu': INTERNAL: Failed to open libtpu.so")
    monkeypatch.setattr(absl_logging, "level_debug", lambda: False)  # --verbosity=0
    assert not entry._backend_probe(probe)
    assert entry._backend_probe(record("Backend 'cpu' initialized"))
    assert entry._backend_probe(record("Unable to initialize backend 'cuda'", logging.WARNING))
    monkeypatch.setattr(absl_logging, "level_debug", lambda: True)  # --verbosity=1
    probe = record("Unable to initialize backend 'tpu': INTERNAL: Failed to open libtpu.so")
    assert entry._backend_probe(probe) and probe.levelno == logging.DEBUG
