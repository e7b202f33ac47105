"""Atomic file writes (a temporary file beside the target, renamed over it when complete)
and file digests.

An interrupted write never leaves a half-written file under the final name, and never
touches an earlier complete one. Every small output of the project (reports, scaler,
threshold, summaries, exported scorer, generated data) is written through here.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from typing import Any, BinaryIO


def write_with(path: str, write_to: Callable[[BinaryIO], Any]) -> None:
    """Calls ``write_to(binary_file)`` on a temporary file, then renames it onto ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write_to(f)
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes(path: str, payload: bytes) -> None:
    write_with(path, lambda f: f.write(payload))


def write_json(path: str, obj: Any, **dump_kwargs: Any) -> None:
    """``json.dump`` (indent 1 unless given) of ``obj`` to ``path``, atomically."""
    dump_kwargs.setdefault("indent", 1)
    write_bytes(path, json.dumps(obj, **dump_kwargs).encode("utf-8"))


def sha256_file(path: str) -> str:
    """Hex SHA-256 of a file, read in 1 MiB pieces (checkpoint checksums, artifact manifest)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
