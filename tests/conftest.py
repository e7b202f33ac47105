"""Test setup: 4 fake CPU devices (set before JAX is imported), shared-data paths."""

import os
import pathlib

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The genuine CICIDS2017 / CSE-CIC-IDS2018 samples beside the repo (never copied in)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory):
    """Stage 1 and stage 2 trained once on generated flows (shared by the run, export and
    scorer tests): (workdir, config, stage-1 summary, stage-2 summary)."""
    from lstmae_jax import config
    from lstmae_jax.jobs import training
    from lstmae_jax.synthetic import timeline

    root = tmp_path_factory.mktemp("run")
    path = timeline.write(timeline.generate(3000, seed=1), str(root / "flows.parquet"))
    # Every kind of fitted value travels through export and the scorer: the quantile
    # network's zscore error model (the default sse has none), the log network's latent
    # references, the quantile rarity Gaussian, and their p-value tables.
    cfg = config.smoke(
        data=path, epochs=2, batch_size=32, window=4, score="zscore",
        members=("log:latent", "quantile:rarity"),
    )  # fmt: skip
    s1 = training.train_job(cfg, str(root))
    s2 = training.train_job(cfg.replace(stage=2), str(root))
    return root, cfg, s1, s2


@pytest.fixture(scope="session")
def artifact_dir(trained_workdir, tmp_path_factory):
    """``trained_workdir`` exported once (tests that alter it work on a copy)."""
    from lstmae_jax.jobs import export

    out = tmp_path_factory.mktemp("artifact")
    export.export_scorer(str(trained_workdir[0]), str(out))
    return out
