"""atomic: temporaries that follow no planted file, stale ones removed, directories swapped whole."""

import errno
import os
import tempfile

import pytest

from lstmae_jax import atomic

DEAD_PID = 2**22 + 1  # above Linux's pid_max: never a live process


def test_a_symlink_planted_at_the_temporary_name_is_never_followed(tmp_path, monkeypatch):
    # Issue 16: '.NAME.PID.tmp' opened with O_TRUNC through a planted symlink overwrote any
    # file the user could write. The first name tried is taken by a symlink: not opened.
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    names = iter(["planted", "fresh000"])
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: names)
    planted = tmp_path / f".out.json.{os.getpid()}.planted.tmp"
    os.symlink(victim, planted)
    atomic.write_json(str(tmp_path / "out.json"), {"a": 1})
    assert victim.read_text() == "keep me" and os.path.islink(planted)
    assert (tmp_path / "out.json").read_text() == '{\n "a": 1\n}'
    assert oct((tmp_path / "out.json").stat().st_mode & 0o777) == oct(0o644)


def test_a_failed_write_keeps_the_earlier_file_and_no_temporary(tmp_path):
    out = tmp_path / "out.bin"
    out.write_bytes(b"earlier")

    def fail(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic.write_with(str(out), fail)
    assert out.read_bytes() == b"earlier" and os.listdir(tmp_path) == ["out.bin"]


def test_only_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = tmp_path / f".a.parquet.{DEAD_PID}.k2j4.tmp"
    live = tmp_path / f".a.parquet.{os.getpid()}.k2j4.tmp"
    other = tmp_path / ".a.parquet.notapid.tmp"
    dead_dir = tmp_path / f".model.{DEAD_PID}.x9.tmp-dir"
    for p in (dead, live, other):
        p.write_bytes(b"")
    dead_dir.mkdir()
    removed = atomic.remove_stale(str(tmp_path))
    assert sorted(removed) == sorted([str(dead), str(dead_dir)])
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, other.name])


def test_replace_dir_swaps_a_directory_whole(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "a").write_text("old")
    (tmp_path / "model" / "gone").write_text("old only")
    new = atomic.temporary_dir(str(tmp_path / "model"))
    (tmp_path / new / "a").write_text("new")
    atomic.replace_dir(new, str(tmp_path / "model"))
    assert (
        os.listdir(tmp_path / "model") == ["a"] and (tmp_path / "model" / "a").read_text() == "new"
    )
    assert os.listdir(tmp_path) == ["model"]  # the old directory is gone too
    fresh = atomic.temporary_dir(str(tmp_path / "other"))
    atomic.replace_dir(fresh, str(tmp_path / "other"))
    assert sorted(os.listdir(tmp_path)) == ["model", "other"]


def test_cause_names_the_error_code():
    assert (
        atomic.cause(OSError(28, "No space left on device")) == "No space left on device (ENOSPC)"
    )


def test_a_failed_write_names_the_output_and_leaves_no_temporary(tmp_path):
    def full(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    path = tmp_path / "summary.json"
    with pytest.raises(OSError) as e:
        atomic.write_with(str(path), full)
    assert isinstance(e.value, atomic.WriteFailed) and e.value.errno == errno.ENOSPC
    assert str(e.value) == f"cannot write {path}: No space left on device (ENOSPC)"
    assert atomic.cause(e.value) == "No space left on device (ENOSPC)"  # not said twice
    assert os.listdir(tmp_path) == []
