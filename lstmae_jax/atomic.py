"""Atomic file and directory writes, temporaries that follow no symlink, file digests.

An interrupted or failed write never leaves a half-written file under the final name and
never touches an earlier complete one: everything is written to a temporary beside the
target and renamed over it when complete. Temporaries are created with ``O_EXCL``
(``tempfile.mkstemp``), so a file or symlink planted at a temporary's name is never
opened or followed, and their names, ``.<name>.<pid>.<random>.tmp``, carry the writer's
process id, so a later run can remove those of killed processes (``remove_stale``).

Every output of the project goes through here: reports, scaler, threshold, summaries,
alerts, converted Parquet, the exported scorer (``replace_dir``) and generated data.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any, BinaryIO

from absl import logging

# Errors of writing (not of the input): the message names the output and the cause.
WRITE_ERRORS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EIO}
)


def cause(e: OSError) -> str:
    """``No space left on device (ENOSPC)``: the reason of an OSError, with its code."""
    if isinstance(e, WriteFailed):
        return e.reason
    code = errno.errorcode.get(e.errno or 0)
    return f"{e.strerror or e} ({code})" if code else str(e)


class WriteFailed(OSError):
    """A failed write, said in one line that names the output and the cause (its errno
    kept): ``cannot write PATH: No space left on device (ENOSPC)``."""

    reason = ""  # ``cause`` of the error it stands for

    def __str__(self) -> str:
        return str(self.strerror)


def write_failed(path: str, e: OSError, then: str = "") -> WriteFailed:
    """``e`` (a write of ``path`` that failed) as ``WriteFailed``, with ``then`` added."""
    if isinstance(e, WriteFailed):
        return e
    failed = WriteFailed(e.errno, f"cannot write {path}: {cause(e)}{then}")
    failed.reason = cause(e)
    return failed


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one file or folder, also through symlinks and hard links."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def temporary(path: str) -> tuple[BinaryIO, str]:
    """(open binary file, its name): a new temporary beside ``path``, created with
    ``O_EXCL`` (never an existing file or symlink), readable like a normal output."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=folder, prefix=f".{os.path.basename(path)}.{os.getpid()}.", suffix=".tmp"
    )
    os.fchmod(fd, 0o644)  # mkstemp makes it private
    return os.fdopen(fd, "wb"), tmp


def discard(tmp: str) -> None:
    """Removes a temporary if it is there (after a failure; never raises)."""
    try:
        os.unlink(tmp)
    except OSError:
        pass


def write_with(path: str, write_to: Callable[[BinaryIO], Any]) -> None:
    """Calls ``write_to(binary_file)`` on a temporary file, then renames it onto ``path``."""
    f, tmp = temporary(path)
    try:
        with f:
            write_to(f)
        os.replace(tmp, path)
    except OSError as e:  # the message names the output (a write's own error does not)
        discard(tmp)
        raise write_failed(path, e) from e
    except BaseException:
        discard(tmp)
        raise


def write_bytes(path: str, payload: bytes) -> None:
    write_with(path, lambda f: f.write(payload))


def write_json(path: str, obj: Any, **dump_kwargs: Any) -> None:
    """``json.dump`` (indent 1 unless given) of ``obj`` to ``path``, atomically."""
    dump_kwargs.setdefault("indent", 1)
    write_bytes(path, json.dumps(obj, **dump_kwargs).encode("utf-8"))


def read_json(path: str) -> Any:
    """What ``write_json`` wrote at ``path``; None when there is no such file."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def alive(pid: int) -> bool:
    """Whether a process with this id runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def discard_own(path: str) -> None:
    """Removes this process's temporaries of ``path``, by name: also one whose creation an
    interrupt cut short before the caller held its name."""
    folder, name = os.path.split(os.path.abspath(path))
    own = f".{glob.escape(name)}.{os.getpid()}.*.tmp"
    for tmp in glob.glob(os.path.join(glob.escape(folder), own)):
        discard(tmp)


def remove_stale(folder: str, name: str = "*") -> list[str]:
    """Deletes the temporaries ``.<name>.<pid>.<random>.tmp`` (and ``-dir`` ones) in
    ``folder`` whose process is gone (killed runs); returns their paths."""
    removed = []
    stem = "*" if name == "*" else glob.escape(name)
    pattern = os.path.join(glob.escape(folder), f".{stem}.*.tmp")
    for path in glob.glob(pattern) + glob.glob(pattern + "-dir"):
        parts = os.path.basename(path).removesuffix("-dir").rsplit(".", 3)
        if len(parts) != 4 or not parts[1].isdigit() or alive(int(parts[1])):
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            discard(path)
        removed.append(path)
    if removed:
        logging.warning("%s: removed %d temporary file(s) of killed runs", folder, len(removed))
    return removed


def _exchange(a: str, b: str) -> bool:
    """Swaps two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EPERM, errno.ENOTSUP):
        return False  # no such call, or a filesystem without it
    raise OSError(err, os.strerror(err), b)


def temporary_dir(path: str) -> str:
    """A new, empty directory beside ``path`` to build a replacement for it in."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    return tempfile.mkdtemp(
        dir=folder, prefix=f".{os.path.basename(path)}.{os.getpid()}.", suffix=".tmp-dir"
    )


def replace_dir(tmp_dir: str, path: str) -> None:
    """Puts the complete directory ``tmp_dir`` at ``path`` whole: a reader sees the old
    directory or the new one, never a mix. Where the system cannot swap two directories
    in one step, there is a moment with no directory at ``path`` (never a mixed one)."""
    path = os.path.abspath(path)
    if not os.path.lexists(path):
        os.rename(tmp_dir, path)
        return
    if not os.path.isdir(path) or os.path.islink(path):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
    if _exchange(tmp_dir, path):
        shutil.rmtree(tmp_dir)  # now the old directory
        return
    old = temporary_dir(path)
    os.rmdir(old)
    os.rename(path, old)
    os.rename(tmp_dir, path)
    shutil.rmtree(old)


def sha256_file(path: str) -> str:
    """Hex SHA-256 of a file, read in 1 MiB pieces (checkpoint checksums, artifact manifest)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
