"""Checkpoints: every step sealed with checksums; a corrupt latest step falls back."""

import errno
import glob
import json
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstmae_jax.train import checkpoint

STEPS = (1, 2, 3)


def _tree(step):
    return {
        "w": jnp.arange(256, dtype=jnp.float32) * step,
        "b": {"x": jnp.full((4, 3), step, jnp.float32)},
        "step": jnp.int32(step),
    }


def _meta(step):
    return {"step": step, "history": [{"epoch": 1, "val_loss": 1.0 / step}]}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A directory with steps 1, 2, 3 saved asynchronously, as training does."""
    directory = str(tmp_path_factory.mktemp("ckpt") / "checkpoints")
    ckpt = checkpoint.Checkpointer(directory, save_every_steps=1, keep=3)
    for s in STEPS:
        assert ckpt.save(s, _tree(s), _meta(s), metrics={"val_loss": 1.0 / s})
    ckpt.close()
    return directory


@pytest.fixture
def copy(saved, tmp_path):
    directory = str(tmp_path / "checkpoints")
    shutil.copytree(saved, directory)
    return directory


def _open(directory):
    return checkpoint.Checkpointer(directory, save_every_steps=1, keep=3)


def _assert_tree(got, step):
    """Exactly the values saved at ``step``."""
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(_tree(step)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _data_file(directory, step):
    """The largest array-data file of ``step``, as named in the operator's report."""
    files = glob.glob(os.path.join(directory, str(step), "state", "ocdbt.process_0", "d", "*"))
    return max(files, key=os.path.getsize)


def _flip(path):
    b = bytearray(open(path, "rb").read())
    b[len(b) // 2] ^= 0x01
    open(path, "wb").write(bytes(b))


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def test_a_good_run_verifies(copy, caplog):
    for s in STEPS:
        assert checkpoint.verify(os.path.join(copy, str(s))) is None
    listed = json.load(open(os.path.join(copy, "3", checkpoint.CHECKSUMS)))
    assert listed["algorithm"] == "sha256"
    assert "meta/metadata" in listed["files"] and "state/manifest.ocdbt" in listed["files"]
    assert os.path.relpath(_data_file(copy, 3), os.path.join(copy, "3")) in listed["files"]
    ckpt = _open(copy)
    with caplog.at_level(logging.WARNING):
        state, meta = ckpt.restore(None, checkpoint.abstract(_tree(0)))
        assert ckpt.latest_step() == 3 and ckpt.restore_meta() == meta == _meta(3)
        assert ckpt.restore_meta(2) == _meta(2)
    ckpt.close()
    _assert_tree(state, 3)
    assert not [r for r in caplog.records if "corrupt" in r.getMessage()]


CORRUPTIONS = {
    "flip a bit in a data file": (_data_file, _flip),
    "truncate a data file": (_data_file, _truncate),
    "delete a data file": (_data_file, os.remove),
    "delete state/manifest.ocdbt": (lambda d, s: f"{d}/{s}/state/manifest.ocdbt", os.remove),
    "delete the process manifest.ocdbt": (
        lambda d, s: f"{d}/{s}/state/ocdbt.process_0/manifest.ocdbt",
        os.remove,
    ),
    "truncate meta/metadata": (lambda d, s: f"{d}/{s}/meta/metadata", _truncate),
    "delete meta/metadata": (lambda d, s: f"{d}/{s}/meta/metadata", os.remove),
    "delete sha256.json": (lambda d, s: f"{d}/{s}/{checkpoint.CHECKSUMS}", os.remove),
    "flip a bit in sha256.json": (lambda d, s: f"{d}/{s}/{checkpoint.CHECKSUMS}", _flip),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupt_latest_step_falls_back_to_the_previous(copy, caplog, case):
    where, damage = CORRUPTIONS[case]
    path = where(copy, 3)
    rel = os.path.relpath(path, os.path.join(copy, "3")).replace(os.sep, "/")
    damage(path)
    ckpt = _open(copy)
    with caplog.at_level(logging.WARNING):
        meta = ckpt.restore_meta()  # as rundir.load_run: meta first, then the state
        state, meta2 = ckpt.restore(None, checkpoint.abstract(_tree(0)))
    assert meta == meta2 == _meta(2)
    _assert_tree(state, 2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    named = [m for m in warnings if "step 3" in m and rel in m and copy in m]
    assert named, warnings
    # Set aside for inspection, out of Orbax's way: step 3 can be saved again.
    assert os.path.isdir(os.path.join(copy, "3.corrupt")) and ckpt.all_steps() == [1, 2]
    assert ckpt.save(3, _tree(3), _meta(3), force=True)
    ckpt.close()
    again = _open(copy)
    assert again.latest_step() == 3 and again.restore_meta() == _meta(3)
    again.close()


def test_explicit_bad_step_is_an_error_without_fallback(copy):
    _flip(_data_file(copy, 2))
    ckpt = _open(copy)
    with pytest.raises(ValueError, match=r"step 2 in .*checkpoints is corrupt.*does not match"):
        ckpt.restore(2, checkpoint.abstract(_tree(0)))
    with pytest.raises(FileNotFoundError, match="no checkpoint at step 2"):
        ckpt.restore_meta(2)  # moved aside by the first call
    assert ckpt.restore_meta(3) == _meta(3)  # others are untouched
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at step 7 .*steps: \[1, 3\]"):
        ckpt.restore_meta(7)
    ckpt.close()


def test_all_steps_bad_is_a_clear_error(copy):
    for s in STEPS:
        os.remove(os.path.join(copy, str(s), "meta", "metadata"))
    ckpt = _open(copy)
    with pytest.raises(ValueError, match=f"no intact checkpoint in {copy}: every step"):
        ckpt.restore(None, checkpoint.abstract(_tree(0)))
    ckpt.close()
    assert sorted(os.listdir(copy)) == ["1.corrupt", "2.corrupt", "3.corrupt"]
    again = _open(copy)  # a re-run starts from scratch
    assert again.latest_step() is None
    with pytest.raises(FileNotFoundError, match=f"no checkpoint in {copy}"):
        again.restore_meta()
    again.close()


def test_a_second_corruption_of_a_step_is_kept_too(copy):
    os.makedirs(os.path.join(copy, "3.corrupt"))
    _truncate(_data_file(copy, 3))
    ckpt = _open(copy)
    assert ckpt.latest_step() == 2
    ckpt.close()
    assert os.path.isdir(os.path.join(copy, "3.corrupt.2"))


def test_step_saved_before_checksums_is_restored_unverified(copy, caplog):
    # A step written by an older version: no sha256.json and no marker in Orbax's metadata.
    os.remove(os.path.join(copy, "3", checkpoint.CHECKSUMS))
    path = os.path.join(copy, "3", "_CHECKPOINT_METADATA")
    meta = json.load(open(path))
    meta.pop("custom_metadata")
    json.dump(meta, open(path, "w"))
    ckpt = _open(copy)
    with caplog.at_level(logging.WARNING):
        assert ckpt.restore_meta() == _meta(3)
    ckpt.close()
    assert any("before checksums" in r.getMessage() for r in caplog.records)


def test_checksums_are_written_before_the_commit(tmp_path, monkeypatch):
    # Orbax's hook runs on the temporary directory, before the rename that commits it.
    seen = []
    real = checkpoint.write_checksums

    def spy(step_dir):
        seen.append(os.path.basename(step_dir))
        real(step_dir)

    monkeypatch.setattr(checkpoint, "write_checksums", spy)
    ckpt = checkpoint.Checkpointer(str(tmp_path), save_every_steps=1, keep=2, async_save=False)
    ckpt.save(5, _tree(5), _meta(5))
    assert seen == ["5.orbax-checkpoint-tmp"]
    assert os.path.exists(tmp_path / "5" / checkpoint.CHECKSUMS)  # synchronous: committed
    ckpt.close()


# What Orbax raises when the disk fills: OSError from its own file writes, or tensorstore's
# ValueError (seen with a 200 KiB tmpfs), both after the step's temporary directory exists.
ENOSPC_TENSORSTORE = (
    'RESOURCE_EXHAUSTED: Error writing local file "{tmp}/state/_sharding": Failed to write'
    " 83 bytes to file 14: No space left on device [os_error_code='28']"
)


@pytest.mark.parametrize("when", ["while saving", "in the background"])
def test_disk_full_is_one_line_and_keeps_the_earlier_steps(copy, monkeypatch, when):
    ckpt = _open(copy)
    tmp = os.path.join(copy, "4.orbax-checkpoint-tmp")

    def partial_save(*args, **kwargs):
        os.makedirs(os.path.join(tmp, "state"))
        if when == "while saving":
            raise OSError(errno.ENOSPC, "No space left on device")
        return True

    def failed_commit():
        raise ValueError(ENOSPC_TENSORSTORE.format(tmp=tmp))

    monkeypatch.setattr(ckpt._manager, "save", partial_save)
    message = rf"cannot write checkpoint step 4 in {copy}: No space left on device.*step 3"
    with pytest.raises(checkpoint.WriteError, match=message):
        ckpt.save(4, _tree(4), _meta(4), force=True)
        monkeypatch.setattr(ckpt._manager, "wait_until_finished", failed_commit)
        ckpt.close()
    assert isinstance(checkpoint.WriteError("x"), ValueError)  # the launchers' one line
    assert sorted(os.listdir(copy)) == ["1", "2", "3"]  # the temporary is gone
    again = _open(copy)
    state, _ = again.restore(None, checkpoint.abstract(_tree(0)))
    again.close()
    _assert_tree(state, 3)


def _orbax_records(directory, caplog, monkeypatch, *, quiet):
    """Orbax's INFO-and-below records reaching a root handler (``logging.basicConfig``
    style, outside ``absl.app.run``) over one save and one restore."""
    if not quiet:  # Orbax as it is without the filter: shows the test sees its chatter
        monkeypatch.setattr(checkpoint, "_quiet_orbax", lambda: None)
        for logger in (logging.getLogger("absl"), logging.getLogger()):
            monkeypatch.setattr(logger, "filters", [])
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        ckpt = checkpoint.Checkpointer(directory, save_every_steps=1, keep=2)
        ckpt.save(1, _tree(1), _meta(1), metrics={"val_loss": 1.0})
        ckpt.close()
        again = checkpoint.Checkpointer(directory, save_every_steps=1, keep=2)
        _assert_tree(again.restore(None, checkpoint.abstract(_tree(0)))[0], 1)
        again.close()
    return [r for r in caplog.records if "orbax" in r.pathname and r.levelno < logging.WARNING]


def test_orbax_chatter_is_dropped_whatever_handler_is_installed(tmp_path, caplog, monkeypatch):
    assert not _orbax_records(str(tmp_path / "quiet"), caplog, monkeypatch, quiet=True)
    with monkeypatch.context() as m:
        assert _orbax_records(str(tmp_path / "loud"), caplog, m, quiet=False)
    # Orbax's warnings still pass the filter.
    warning = logging.LogRecord("absl", logging.WARNING, "/x/orbax/y.py", 1, "w", None, None)
    assert checkpoint._QUIET.filter(warning)
