"""Fingerprints of a run's input files, so a resume cannot silently mix two datasets.

A run directory holds ``inputs.json``: ``{"data": the --data value, "files": {absolute
path: fingerprint}}``, written when training starts. A resume compares the files that
``--data`` names now with it, and a file that changed, was added or was removed is
refused (``--allow_data_change`` resumes anyway, and records the new files), because
the weights of the old data would be calibrated on the new. Evaluation compares too.

The fingerprint of a Parquet file is its size and the SHA-256 of its footer (the file
metadata at its end: row count, schema, row-group offsets, sizes and column statistics),
a few KiB read whatever the file's size. Any rewrite with other rows changes the sizes,
offsets or statistics there. The modification time is left out on purpose: a copy or a
re-download of the same file changes it, and that is no reason to refuse. A file that is
not Parquet (no ``PAR1`` footer) gets the SHA-256 of its whole content.
"""

from __future__ import annotations

import hashlib
import os
import struct

from absl import logging

from lstmae_jax import atomic
from lstmae_jax.data import dataset

FILE = "inputs.json"
_MAGIC = b"PAR1"


def fingerprint(path: str) -> dict:
    """``{"bytes", "parquet_footer_sha256"}``, or ``{"bytes", "sha256"}`` for non-Parquet."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if size >= 12:
            f.seek(size - 8)
            tail = f.read(8)
            (footer_len,) = struct.unpack("<I", tail[:4])
            if tail[4:] == _MAGIC and footer_len <= size - 12:
                f.seek(size - 8 - footer_len)
                footer = f.read(footer_len)
                return {"bytes": size, "parquet_footer_sha256": hashlib.sha256(footer).hexdigest()}
    return {"bytes": size, "sha256": atomic.sha256_file(path)}


def fingerprints(data_spec: str) -> dict:
    """``{"data": data_spec, "files": {absolute path: fingerprint}}`` of what it names now."""
    files = {os.path.abspath(p): fingerprint(p) for p in dataset.list_parquet(data_spec)}
    return {"data": data_spec, "files": files}


def load(run_dir: str) -> dict | None:
    """The recorded fingerprints of ``run_dir``; None for a run made before they existed."""
    return atomic.read_json(os.path.join(run_dir, FILE))


def save(run_dir: str, record: dict) -> None:
    os.makedirs(run_dir, exist_ok=True)
    atomic.write_json(os.path.join(run_dir, FILE), record)


def differences(was: dict, now: dict) -> list[str]:
    """What differs, one phrase per file, naming it: changed, added, removed."""
    out = []
    for path, fp in now["files"].items():
        old = was["files"].get(path)
        if old is None:
            out.append(f"{path} was added")
        elif old != fp:
            sizes = (
                f"{old.get('bytes')} -> {fp['bytes']} bytes"
                if old.get("bytes") != fp["bytes"]
                else f"{fp['bytes']} bytes as before"
            )
            what = "Parquet footer" if "parquet_footer_sha256" in fp else "content"
            out.append(f"{path} changed ({sizes}, another {what})")
    out += [f"{path} was removed" for path in was["files"] if path not in now["files"]]
    return out


def summary(diffs: list[str]) -> str:
    """The first difference, and how many more: one line however many files changed."""
    return diffs[0] + (f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else "")


def check_resume(run_dir: str, now: dict, *, resuming: bool, allow_change: bool) -> bool:
    """Refuses a resume on other data than ``run_dir`` was started on (ValueError, one
    line naming the file), unless ``allow_change``; a run without a record resumes with a
    warning. True when the record should be (re)written."""
    if not resuming:
        return True
    was = load(run_dir)
    if was is None:
        logging.warning(
            "%s has no record of its input files (made before fingerprints existed): resuming"
            " without checking that %s is the data it was started on",
            run_dir,
            now["data"],
        )
        return True
    diffs = differences(was, now)
    if not diffs:
        return False
    if not allow_change:
        raise ValueError(
            f"{run_dir} was started on other data: {summary(diffs)}; resume on the new data"
            " with --allow_data_change, or train in a new --workdir"
        )
    logging.warning(
        "resuming %s on changed data (--allow_data_change): %s", run_dir, summary(diffs)
    )
    return True


def mismatch(run_dir: str, data_spec: str, trained_on: str) -> str | None:
    """Why ``data_spec`` is not the data ``run_dir`` was trained on (``trained_on``, its
    --data), or None if it is. A run without a record is compared by file paths only."""
    now = fingerprints(data_spec)
    was = load(run_dir)
    if was is None:
        try:
            paths = [os.path.abspath(p) for p in dataset.list_parquet(trained_on)]
        except FileNotFoundError:
            paths = []
        was = {"files": {p: now["files"].get(p) for p in paths}}
    if set(was["files"]) != set(now["files"]):
        return "other files"
    diffs = differences(was, now)
    return f"the same paths, but {summary(diffs)}" if diffs else None
