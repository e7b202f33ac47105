"""Input fingerprints: a resume on changed training data is refused unless asked for."""

import json
import logging
import os
import shutil

import pyarrow.parquet as pq
import pytest

from lstmae_jax import config
from lstmae_jax.data import inputs
from lstmae_jax.jobs import training
from lstmae_jax.synthetic import timeline


def _write(path, seed, n=1200):
    return timeline.write(timeline.generate(n, seed=seed), str(path))


def test_parquet_fingerprint_is_its_size_and_footer(tmp_path):
    a = _write(tmp_path / "a.parquet", seed=1)
    fp = inputs.fingerprint(a)
    assert fp["bytes"] == os.path.getsize(a) and len(fp["parquet_footer_sha256"]) == 64
    os.utime(a, (0, 0))  # a copy or a touch changes the time, not the data
    assert inputs.fingerprint(a) == fp
    table = pq.read_table(a)
    pq.write_table(table.slice(0, len(table) - 1), a, compression="zstd")
    assert inputs.fingerprint(a) != fp
    other = tmp_path / "notes.txt"
    other.write_text("not parquet")
    assert set(inputs.fingerprint(str(other))) == {"bytes", "sha256"}


@pytest.fixture
def trained(tmp_path):
    """Stage 1 trained on a directory of two day files: (workdir, config, data dir)."""
    days = tmp_path / "days"
    days.mkdir()
    _write(days / "a.parquet", seed=1)
    _write(days / "b.parquet", seed=2)
    cfg = config.smoke(data=str(days), epochs=1, batch_size=32)
    training.train_job(cfg, str(tmp_path / "work"))
    return tmp_path / "work", cfg, days


def test_resume_on_changed_data_is_refused_naming_the_file(trained, caplog):
    work, cfg, days = trained
    recorded = json.loads((work / "stage1" / inputs.FILE).read_text())
    assert sorted(recorded["files"]) == [str(days / "a.parquet"), str(days / "b.parquet")]
    _write(days / "a.parquet", seed=3)  # the same path, other flows
    with pytest.raises(ValueError, match=rf"{days / 'a.parquet'} changed \(.*bytes"):
        training.train_job(cfg, str(work))
    stage1_saw = r"stage 2's data is not what stage 1 in .* was trained on: .*a\.parquet changed"
    with pytest.raises(ValueError, match=stage1_saw):  # stage 2 reuses stage 1's scaler
        training.train_job(cfg.replace(stage=2), str(work))
    _write(days / "a.parquet", seed=1)  # back as it was: resumes
    training.train_job(cfg, str(work))
    _write(days / "c.parquet", seed=4)
    with pytest.raises(ValueError, match=rf"{days / 'c.parquet'} was added"):
        training.train_job(cfg, str(work))
    os.remove(days / "c.parquet")
    shutil.move(days / "b.parquet", work / "b.parquet")
    with pytest.raises(ValueError, match=rf"{days / 'b.parquet'} was removed.*--allow_data_change"):
        training.train_job(cfg, str(work))
    with caplog.at_level(logging.WARNING):
        training.train_job(cfg.replace(allow_data_change=True), str(work))
    assert any("--allow_data_change" in r.getMessage() for r in caplog.records)
    recorded = json.loads((work / "stage1" / inputs.FILE).read_text())
    assert list(recorded["files"]) == [str(days / "a.parquet")]  # the new data, from now on
    training.train_job(cfg, str(work))


def test_a_run_without_fingerprints_resumes_with_a_warning(trained, caplog):
    work, cfg, _ = trained
    os.remove(work / "stage1" / inputs.FILE)  # as runs made before fingerprints were
    with caplog.at_level(logging.WARNING):
        training.train_job(cfg, str(work))
    assert any("no record of its input files" in r.getMessage() for r in caplog.records)
    assert (work / "stage1" / inputs.FILE).exists()
