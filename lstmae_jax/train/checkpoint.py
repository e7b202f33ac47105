"""Orbax checkpoints, current API, in one module, each step sealed with checksums.

A checkpoint holds two items: ``state`` (the train-state pytree: parameters, optimizer
state, the best parameters so far, RNG key, step) and ``meta`` (JSON: config, feature
list, classes, scaler, data-iterator position, early-stopping counters, history). Saving
both together is what makes a resume exact.

Policies: save every ``save_every_steps`` (plus forced saves at epoch ends and on
preemption), keep the latest ``keep`` checkpoints and the one with the best validation
loss. Saves are asynchronous; ``close`` waits for them.

Integrity. Orbax restores a flipped bit without complaint and crashes on a truncated or
missing file, so each step directory gets ``sha256.json``: the size and SHA-256 of every
file in it. Process 0 writes it in Orbax's post-finalization hook, which runs once every
process's files are written and merged and *before* the rename that commits the step, so
a step is committed together with its checksums or not at all (a kill cannot leave a
committed step without them). The two files Orbax writes at the commit itself
(``_CHECKPOINT_METADATA``: timestamps and metrics; the top-level ``commit_success.txt``)
are not covered; Orbax restores without them. Before a step is restored it is verified
(process 0 reads; the others take its verdict): a step with a missing, truncated or
changed file, or without ``sha256.json``, is reported with a warning naming the step and
the file and renamed to ``<step>.corrupt`` (outside Orbax's step names, kept for
inspection); ``restore(None)`` then takes the newest intact step, an explicitly requested
step is an error. Steps saved before checksums existed (no marker in their Orbax step
metadata) are restored unverified, with a warning.

Test hook: ``LSTMAE_DEBUG_COMMIT_DELAY_S=<seconds>`` sleeps in the background save thread
after the checksums are written, before the commit, so a test can kill a process in the
middle of an asynchronous write. Unset (the default) it does nothing.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as cm

from lstmae_jax import atomic
from lstmae_jax.train import peers

DIRECTORY = "checkpoints"  # in each run directory (the layout: jobs/rundir.py)
CHECKSUMS = "sha256.json"  # in each step directory
COMMIT_DELAY_ENV = "LSTMAE_DEBUG_COMMIT_DELAY_S"
_UNSEALED = frozenset({"_CHECKPOINT_METADATA", "commit_success.txt", CHECKSUMS})  # top level
_MARKER = {"lstmae_checksums": CHECKSUMS}  # Orbax custom step metadata: "has checksums"
_NONE, _NONE_INTACT = -1, -2  # latest-step verdicts besides a step number
_UNKNOWN = object()


class WriteError(ValueError):
    """A checkpoint could not be written (disk full, no permission): a ValueError, so the
    launchers print its one line instead of a traceback."""


def write_failure(e: BaseException) -> str | None:
    """The cause in words when ``e`` is a failed write: an OSError, or tensorstore's
    ValueError carrying an OS error code (``RESOURCE_EXHAUSTED ... [os_error_code='28']``);
    None for anything else (a bug, which keeps its traceback)."""
    if isinstance(e, OSError):
        return atomic.cause(e)
    if isinstance(e, ValueError):
        if code := re.search(r"os_error_code='(\d+)'", str(e)):
            return os.strerror(int(code.group(1)))
        if str(e).startswith("RESOURCE_EXHAUSTED"):
            return str(e).split(":", 1)[0]
    return None


class _QuietOrbax(logging.Filter):
    """Drops Orbax's INFO chatter (a dozen lines per save); its warnings still show. A
    failed write (disk full) is said once, by ``Checkpointer``'s one line naming the step
    and the cause: the errors each of Orbax's threads logs about it (and their
    tracebacks) are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "orbax" not in record.pathname:
            return True
        if record.exc_info and write_failure(record.exc_info[1]):
            return False
        if record.levelno >= logging.ERROR and _WRITE_FAILED.search(record.getMessage()):
            return False
        return record.levelno >= logging.WARNING


# What Orbax's threads log when a save fails to write, or as a consequence of it.
_WRITE_FAILED = re.compile(
    r"No space left|File too large|Disk quota|Read-only file system|Permission denied"
    r"|\[Errno (28|27|122|30|13|5)\]|os_error_code|RESOURCE_EXHAUSTED|OUT_OF_RANGE: Error writing"
    r"|Save Finalize thread .* failed|Failed to run .* Commit|cannot schedule new futures"
)


_QUIET = _QuietOrbax()


def _quiet_orbax() -> None:
    """On the loggers Orbax logs through (absl's, and the root logger a few of its modules
    use), not on a handler: a logger's filter sees each record it creates whatever handler
    is installed (absl's under ``app.run``, ``logging.basicConfig``'s in the Python API)."""
    for logger in (absl_logging.get_absl_logger(), logging.getLogger()):
        if _QUIET not in logger.filters:
            logger.addFilter(_QUIET)


def _val_loss(metrics: dict) -> float:
    return float(metrics["val_loss"])


# ------------------------------------------------------------------ checksums


def _digest(files: dict) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def write_checksums(step_dir: str) -> None:
    """Writes ``step_dir/sha256.json``: ``{"algorithm": "sha256", "files": {relative path
    ("/"-separated): {"bytes": size, "sha256": hex digest}}, "files_sha256": digest of
    "files" itself}`` for every file but ``_UNSEALED`` (and a stale temporary of this)."""
    files = {}
    for root, dirs, names in os.walk(step_dir):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, step_dir).replace(os.sep, "/")
            if rel in _UNSEALED or rel.startswith(f".{CHECKSUMS}."):
                continue
            files[rel] = {"bytes": os.path.getsize(path), "sha256": atomic.sha256_file(path)}
    sums = {"algorithm": "sha256", "files": files, "files_sha256": _digest(files)}
    atomic.write_json(os.path.join(step_dir, CHECKSUMS), sums)


def verify(step_dir: str) -> str | None:
    """None if every file listed in ``step_dir/sha256.json`` is there with its size and
    SHA-256; otherwise what is wrong, naming the file (the first bad one)."""
    try:
        with open(os.path.join(step_dir, CHECKSUMS), "rb") as f:
            sums = json.load(f)
        listed = sums["files"]
        if _digest(listed) != sums["files_sha256"]:
            return f"{CHECKSUMS} does not match its own SHA-256 (corrupted)"
        expected = sorted((rel, int(v["bytes"]), str(v["sha256"])) for rel, v in listed.items())
    except FileNotFoundError:
        return f"{CHECKSUMS} is missing"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{CHECKSUMS} is unreadable ({type(e).__name__}: {e})"
    if not expected:
        return f"{CHECKSUMS} lists no files"
    for rel, size, sha256 in expected:
        path = os.path.join(step_dir, *rel.split("/"))
        try:
            if (got := os.path.getsize(path)) != size:
                return f"{rel} has {got} bytes, {size} expected (truncated or overwritten)"
            if atomic.sha256_file(path) != sha256:
                return f"{rel} does not match its SHA-256 (corrupted)"
        except FileNotFoundError:
            return f"{rel} is missing"
        except OSError as e:
            return f"{rel} cannot be read ({e})"
    return None


def _written_before_checksums(step_dir: str) -> bool:
    """True if the step's Orbax metadata is readable and lacks the checksum marker."""
    try:
        with open(os.path.join(step_dir, "_CHECKPOINT_METADATA"), "rb") as f:
            custom = json.load(f).get("custom_metadata") or {}
    except (OSError, ValueError, AttributeError):
        return False  # unreadable: no proof of an old step, so it counts as incomplete
    return not any(k in custom for k in _MARKER)


# ------------------------------------------------------------------ the manager


class Checkpointer:
    """A thin wrapper around ``ocp.CheckpointManager`` for one training run."""

    def __init__(
        self, directory: str, *, save_every_steps: int, keep: int, async_save: bool = True
    ):
        _quiet_orbax()
        self.directory = os.path.abspath(directory)
        self._async = async_save
        self._writing: int | None = None  # the step whose save is in flight (for _seal)
        self._good: set[int] = set()  # verified, or saved by this object
        self._bad: dict[int, str] = {}  # step -> what is wrong with it
        self._latest: Any = _UNKNOWN  # latest_step's verdict, kept so repeated calls agree
        self._delay_s = float(os.environ.get(COMMIT_DELAY_ENV) or 0.0)
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=cm.FixedIntervalPolicy(save_every_steps),
            # reverse=True: sorted by val_loss descending, BestN keeps the tail (lowest).
            preservation_policy=cm.AnyPreservationPolicy(
                [
                    cm.LatestN(keep),
                    cm.BestN(
                        get_metric_fn=_val_loss,
                        reverse=True,
                        n=1,
                        keep_checkpoints_without_metrics=False,
                    ),
                ]
            ),
            # Always async underneath: the checksum hook exists only there (a synchronous
            # save waits for the commit instead).
            enable_async_checkpointing=True,
            async_options=ocp.AsyncOptions(post_finalization_callback=self._seal),
            create=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )
        peers.on_lost(self._remove_temporaries)  # a lost peer ends the run mid-save

    def _remove_temporaries(self) -> None:
        for tmp in glob.glob(os.path.join(self.directory, f"*{ocp.path.step.TMP_DIR_SUFFIX}*")):
            shutil.rmtree(tmp, ignore_errors=True)

    def latest_step(self) -> int | None:
        """The newest intact step, None if there is no checkpoint. Newer corrupt or
        incomplete steps are reported and moved aside; ValueError if none is intact."""
        if self._latest is _UNKNOWN:
            found = self._agreed(self._newest_intact)
            if found == _NONE_INTACT:
                raise ValueError(
                    f"no intact checkpoint in {self.directory}: every step failed"
                    f" verification ({self._bad or 'see process 0'}); re-run to start from"
                    " scratch"
                )
            self._latest = None if found == _NONE else found
            if found >= 0:
                self._good.add(found)
        return self._latest

    def all_steps(self) -> list[int]:
        """The steps on disk (verified only when restored or chosen by ``latest_step``)."""
        return list(self._manager.all_steps())

    def should_save(self, step: int) -> bool:
        """Whether the interval policy saves at ``step`` (cheap; no I/O)."""
        return self._manager.should_save(step)

    def save(
        self, step: int, state: Any, meta: dict, *, metrics: dict | None = None, force: bool = False
    ) -> bool:
        """Saves (asynchronously) if the policy says so or ``force``; True if it did."""
        if not (force or self._manager.should_save(step)):
            return False
        self.wait()  # the previous save's _seal reads _writing
        self._writing = step
        with self._failed_write(step):
            saved = self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
                ),
                metrics=metrics,
                force=force,
                custom_metadata=_MARKER,
            )
        if saved:
            self._good.add(step)
            self._latest = _UNKNOWN
            if not self._async:
                self.wait()
        return saved

    def restore(self, step: int | None, abstract_state: Any) -> tuple[Any, dict]:
        """Restores ``step`` (None: the newest intact one) into the shapes and shardings
        of ``abstract_state``, after verifying its checksums."""
        restored = self._manager.restore(
            self._intact_step(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], restored["meta"]

    def restore_meta(self, step: int | None = None) -> dict:
        args = ocp.args.Composite(meta=ocp.args.JsonRestore())
        return self._manager.restore(self._intact_step(step), args=args)["meta"]

    def wait(self) -> None:
        """Waits for the save in flight; WriteError if it failed."""
        with self._failed_write(self._writing):
            self._manager.wait_until_finished()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            with contextlib.suppress(Exception):  # a failed save: said by wait's error
                self._manager.close()

    @contextlib.contextmanager
    def _failed_write(self, step: int | None):
        """A failed write of ``step`` (disk full, no permission) -> WriteError, one line
        naming the directory and the cause, after removing the step's partial temporary
        directory; the committed steps are untouched (Orbax deletes old steps only after
        a commit), so re-running resumes from the newest."""
        try:
            yield
        except (OSError, ValueError) as e:
            cause = write_failure(e)
            if cause is None or isinstance(e, WriteError):
                raise
            # Orbax's other threads may still be writing the step: joined first, or they
            # would leave its temporary behind (and log at interpreter exit).
            with contextlib.suppress(Exception):
                self._manager.close()
            self._remove_temporaries()
            kept = sorted(int(n) for n in os.listdir(self.directory) if n.isdigit())
            resume = (
                f"the earlier checkpoints are intact: free space and re-run the same command"
                f" to resume from step {kept[-1]}"
                if kept
                else "no earlier checkpoint: free space and re-run the same command"
            )
            raise WriteError(
                f"cannot write checkpoint step {step} in {self.directory}: {cause}; {resume}"
            ) from e

    # ------------------------------------------------------------ verification

    def _seal(self) -> None:
        """Orbax's post-finalization hook (process 0, background thread): the step's files
        are complete in its temporary directory, not yet renamed into place."""
        if jax.process_index() != 0:
            return
        name = str(self._writing)
        step_dir = os.path.join(self.directory, name + ocp.path.step.TMP_DIR_SUFFIX)
        if not os.path.isdir(step_dir):  # an Orbax that commits before the hook
            step_dir = os.path.join(self.directory, name)
        if not os.path.isdir(step_dir):
            raise RuntimeError(f"checkpoint step {name} not found in {self.directory}")
        write_checksums(step_dir)
        if self._delay_s:
            time.sleep(self._delay_s)

    def _intact_step(self, step: int | None) -> int:
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"no checkpoint in {self.directory}")
            return step
        if step in self._good:
            return step
        if step not in self._manager.all_steps():
            raise FileNotFoundError(
                f"no checkpoint at step {step} in {self.directory}; steps: {self.all_steps()}"
            )
        if not self._agreed(lambda: int(self._intact(step))):
            problem = self._bad.get(step, "see process 0's warning")
            raise ValueError(
                f"checkpoint step {step} in {self.directory} is corrupt or incomplete: {problem}"
            )
        self._good.add(step)
        return step

    def _agreed(self, decide: Callable[[], int]) -> int:
        """``decide()`` on process 0, its answer on every process (one host: just run).
        The broadcast waits for process 0, so its renames are done when everyone re-reads
        the directory."""
        moved = len(self._bad)
        if jax.process_count() == 1:
            answer = decide()
        else:
            mine = decide() if jax.process_index() == 0 else 0
            answer = int(multihost_utils.broadcast_one_to_all(np.int32(mine)))
        if jax.process_count() > 1 or len(self._bad) > moved:
            self._manager.reload()  # forget the steps moved aside
        return answer

    def _newest_intact(self) -> int:
        """Process 0: the newest intact step, newer bad ones moved aside; or a verdict."""
        steps = sorted(self._manager.all_steps(), reverse=True)
        for i, step in enumerate(steps):
            if self._intact(step):
                if i:
                    absl_logging.warning(
                        "restoring checkpoint step %d in %s instead of %s (failed"
                        " verification); re-running training recomputes the rest exactly",
                        step,
                        self.directory,
                        steps[:i],
                    )
                return step
        return _NONE_INTACT if steps else _NONE

    def _intact(self, step: int) -> bool:
        """Process 0: whether ``step`` verifies; a bad step is reported and moved aside."""
        if step in self._good:
            return True
        if step in self._bad:
            return False
        step_dir = os.path.join(self.directory, str(step))
        if not os.path.exists(os.path.join(step_dir, CHECKSUMS)) and _written_before_checksums(
            step_dir
        ):
            absl_logging.warning(
                "checkpoint step %d in %s was saved before checksums existed: restored unverified",
                step,
                self.directory,
            )
            return True
        problem = verify(step_dir)
        if problem is None:
            return True
        self._bad[step] = problem
        if not os.path.isdir(step_dir):  # deleted meanwhile (a trainer's keep policy)
            return False
        aside = step_dir + ".corrupt"
        for n in range(2, 1000):
            if not os.path.exists(aside):
                break
            aside = f"{step_dir}.corrupt.{n}"
        try:
            os.rename(step_dir, aside)
            where = f"renamed to {os.path.basename(aside)}"
        except OSError as e:
            where = f"could not be renamed ({e}); skipped"
        self._bad[step] = f"{problem}; {where}"
        absl_logging.warning(
            "checkpoint step %d in %s is corrupt or incomplete: %s",
            step,
            self.directory,
            self._bad[step],
        )
        return False


def abstract(tree: Any) -> Any:
    """Shapes, dtypes and shardings of a pytree of arrays, for restoring into."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree,
    )
