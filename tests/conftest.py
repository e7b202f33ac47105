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


@pytest.fixture
def tensorboard_events():
    """A reader of a TensorBoard directory's event files, as TensorBoard reads them: files
    in name order, a session start at step S hiding the events before it of steps >= S
    (its purge of orphaned data after a restart). Returns (tag -> [(step, value)] of the
    scalars, the hyperparameters of the last HParams session start) (needs tensorboardX)."""
    pytest.importorskip("tensorboardX")
    import struct

    from tensorboardX.proto import event_pb2, plugin_hparams_pb2

    def read(directory) -> tuple[dict[str, list[tuple[int, float]]], dict]:
        scalars: dict[str, list[tuple[int, float]]] = {}
        hparams: dict = {}
        for name in sorted(os.listdir(directory)):
            data = (pathlib.Path(directory) / name).read_bytes()
            pos = 0
            while pos < len(data):  # TFRecords: length, its CRC, the event, its CRC
                (n,) = struct.unpack("<Q", data[pos : pos + 8])
                event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + n])
                pos += 12 + n + 4
                if event.session_log.status == event_pb2.SessionLog.START:
                    for tag, points in scalars.items():
                        scalars[tag] = [(s, v) for s, v in points if s < event.step]
                for v in event.summary.value:
                    plugin = v.metadata.plugin_data
                    if plugin.plugin_name == "hparams":
                        content = plugin_hparams_pb2.HParamsPluginData.FromString(plugin.content)
                        start = content.session_start_info.hparams
                        hparams = {k: getattr(h, h.WhichOneof("kind")) for k, h in start.items()}
                    else:
                        scalars.setdefault(v.tag, []).append((event.step, v.simple_value))
        return scalars, hparams

    return read
