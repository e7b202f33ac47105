"""A non-editable install runs the commands: the wheel built from this tree, installed
into a fresh virtual environment, used from a folder with no source tree and no launch/.

No network: the new environment sees the dependencies through a ``.pth`` file naming the
site-packages this interpreter found jax in (a path in a ``.pth`` file is only added to
``sys.path``, so an editable install of lstmae_jax there stays inactive), and the test
checks that lstmae_jax itself comes from the new environment.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import zipfile

import jax
import pytest

from lstmae_jax import __main__ as dispatch

pytestmark = pytest.mark.slow
REPO = pathlib.Path(__file__).resolve().parents[2]
# What git ignores at the top (runs/, data/, ...) and anywhere (caches), and build outputs.
TOP_NOT_SOURCE = {".git", ".venv", "runs", "data", "out", "build", "dist"}
NOT_SOURCE = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache")


def _ignore(folder, names):
    top = TOP_NOT_SOURCE.intersection(names) if pathlib.Path(folder) == REPO else set()
    return top | NOT_SOURCE(folder, names)


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """(wheel, sdist) built from a copy of the tree (a build writes into its source)."""
    pytest.importorskip("setuptools", minversion="77", reason="the build backend (test extra)")
    tmp = tmp_path_factory.mktemp("build")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=_ignore)
    build = "from setuptools import build_meta as b; b.build_wheel('dist'); b.build_sdist('dist')"
    _run([sys.executable, "-c", build], cwd=src)
    return next((src / "dist").glob("*.whl")), next((src / "dist").glob("*.tar.gz"))


@pytest.fixture(scope="module")
def venv(dists, tmp_path_factory):
    """A fresh venv with the wheel installed: (its bin folder, an environment for it)."""
    root = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", str(root)])
    python = root / "bin" / "python"
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    site = pathlib.Path(purelib.stdout.strip())
    deps = pathlib.Path(jax.__file__).resolve().parents[1]
    (site / "dependencies.pth").write_text(f"{deps}\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
          "--no-index", str(dists[0])])  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    env |= {"JAX_PLATFORMS": "cpu", "PATH": f"{root / 'bin'}{os.pathsep}{env['PATH']}"}
    return root / "bin", env, site


def test_the_wheel_holds_the_package_the_commands_and_the_license(dists):
    names = zipfile.ZipFile(dists[0]).namelist()
    packages = {p.relative_to(REPO).as_posix() for p in (REPO / "lstmae_jax").rglob("*.py")}
    assert packages <= set(names), packages - set(names)  # lstmae_jax.cli too
    assert not [n for n in names if n.startswith(("launch/", "tests/", "benchmarks/"))]
    info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    scripts = zipfile.ZipFile(dists[0]).read(info).decode()
    assert all(f"lstmae-{job} = lstmae_jax.cli.{job}:run" in scripts for job in dispatch.JOBS)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_the_sdist_holds_the_sources(dists):
    names = {n.split("/", 1)[1] for n in tarfile.open(dists[1]).getnames() if "/" in n}
    expected = {"README.md", "LICENSE", "CITATION.cff", "pyproject.toml", "Makefile"}
    expected |= {f"launch/{job}.py" for job in dispatch.JOBS}
    expected |= {"lstmae_jax/cli/train.py", "tests/cli/test_install.py", "docs/deploy.md"}
    assert expected <= names, expected - names


def test_installed_commands_run_without_the_source_tree(venv, tmp_path):
    bin_, env, site = venv
    assert {f"lstmae-{job}" for job in dispatch.JOBS} <= {p.name for p in bin_.iterdir()}
    where = _run([bin_ / "python", "-c", "import lstmae_jax; print(lstmae_jax.__file__)"],
                 cwd=tmp_path, env=env)  # fmt: skip
    assert pathlib.Path(where.stdout.strip()).is_relative_to(site)

    _run(["lstmae-synth", "--output=raw.csv", "--style=cicids2017", "--flows=400"],
         cwd=tmp_path, env=env)  # fmt: skip
    _run(["lstmae-convert", "--input=raw.csv", "--output=canonical"], cwd=tmp_path, env=env)
    assert (tmp_path / "canonical" / "raw.parquet").is_file()
    _run([bin_ / "python", "-m", "lstmae_jax", "synth", "--output=more", "--flows=300"],
         cwd=tmp_path, env=env)  # fmt: skip
    assert (tmp_path / "more" / "timeline.parquet").is_file()

    help_ = subprocess.run(["lstmae-train", "--help"], capture_output=True, text=True,
                           cwd=tmp_path, env=env, timeout=120)  # fmt: skip
    assert help_.returncode == 0, help_.stderr[-2000:]
    for option in ("--workdir", "--data", "--epochs", "--window", "--batch_size"):
        assert f"\n  {option}:" in help_.stdout, help_.stdout[-3000:] + help_.stderr[-2000:]
    assert "\ntraining:\n" in help_.stdout  # grouped: the installed config has its source
