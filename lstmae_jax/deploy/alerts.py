"""Score flows with a detector artifact: windows across chunks, alerts out, a summary.

One output row per scored window, placed at its last flow: the file, the input row,
timestamp and identifiers where the input has them, the score, ``alert`` (score above the
artifact's threshold), the stage-2 class and its probability where the artifact has a
stage 2, the three features that contributed most to the score, and the true label where
the input is labelled. A window is ``window`` consecutive cleaned flows of one file, as in
training; the first ``window - 1`` flows of a file end no window.

Chunking does not change the result: each file keeps its last ``window - 1`` flows
between chunks, and windows are scored in batches of one fixed shape (the last one
padded), so every window meets the same computation whatever the chunk size.

No JAX or training code here beyond the artifact's ``call``.
"""

from __future__ import annotations

import collections
import fcntl
import fnmatch
import glob
import json
import os
import signal
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from absl import logging
from numpy.lib.stride_tricks import sliding_window_view

from lstmae_jax import atomic
from lstmae_jax.deploy import artifact
from lstmae_jax.detect import metrics
from lstmae_jax.ingest import clean, reader, schema

BATCH = 512  # windows per call of the artifact (one compiled shape)
ROW_GROUP_ROWS = 1 << 16  # Parquet output: rows per row group
TOP = 3
PROGRESS_SECONDS = 10.0
IDENTIFIERS = ("timestamp", "flow_id", "src_ip", "src_port", "dst_ip")
# Label cells that label nothing: CICFlowMeter's live output writes "NeedManualLabel".
UNLABELLED = frozenset({"", "NeedManualLabel"})


def output_schema(classes: list[str] | None) -> pa.Schema:
    fields = [("file", pa.string()), ("row", pa.int64())]
    fields += [(name, pa.string()) for name in IDENTIFIERS]
    fields += [("dst_port", pa.int64()), ("score", pa.float32()), ("alert", pa.bool_())]
    if classes:
        fields += [("predicted", pa.string()), ("probability", pa.float32())]
    for k in range(1, TOP + 1):
        fields += [(f"top{k}", pa.string()), (f"top{k}_contribution", pa.float32())]
    fields += [("label", pa.string())]
    return pa.schema(fields)


def _column(table: pa.Table, name: str) -> np.ndarray:
    """A column as an object array, all None where the input lacks it."""
    if name not in table.column_names:
        return np.full(table.num_rows, None, object)
    return np.array(table.column(name).to_pylist(), object)


class _FileWindows:
    """The last ``window - 1`` cleaned flows of one file, carried between chunks."""

    def __init__(self, window: int, num_features: int):
        self.window = window
        self.x = np.zeros((0, num_features), np.float32)
        self.attack = np.zeros(0, bool)

    def push(self, x_NxF: np.ndarray, attack_N: np.ndarray):
        """Windows ending at the new flows: (x_WxTxF, index of each window's last flow
        among the new ones, whether any flow of the window is an attack)."""
        x = np.concatenate([self.x, x_NxF])
        attack = np.concatenate([self.attack, attack_N])
        carried, t = len(self.x), self.window  # carried <= t - 1: every window is new
        if len(x) >= t:
            x_WxTxF = np.moveaxis(sliding_window_view(x, t, axis=0), -1, 1)
            any_attack = sliding_window_view(attack, t).any(axis=-1)
        else:
            x_WxTxF, any_attack = np.zeros((0, t, x.shape[1]), np.float32), np.zeros(0, bool)
        self.x, self.attack = (
            x[len(x) - min(len(x), t - 1) :],
            attack[len(x) - min(len(x), t - 1) :],
        )
        return x_WxTxF, np.arange(len(any_attack)) + t - 1 - carried, any_attack


class OutputError(OSError):
    """The alerts could not be written (names the path and the cause)."""


class AlertWriter:
    """Alerts to ``.parquet`` or ``.jsonl``, never at the cost of an earlier output.

    A batch run writes a temporary beside the output (row groups, or one line per
    window) and ``commit`` renames it, and then the summary, into place; a failed run
    (``abort``) removes the temporary and leaves the earlier output and its summary as
    they were, and a run stopped early (``partial``) puts its rows beside an earlier
    output (``NAME.partial.parquet``) instead of over it. A live run (``live``) to
    ``.jsonl`` appends to the output itself, flushed after each batch, so it can be
    tailed; it holds an exclusive lock on it (a second live scorer is refused), starts a
    new file when the output is deleted or rotated away, and an error truncates it back to
    its last complete line. Temporaries are created with ``O_EXCL`` (``atomic.temporary``).
    """

    def __init__(self, path: str, schema_: pa.Schema, live: bool = False):
        if not path.endswith((".parquet", ".jsonl")):
            raise ValueError(f"--output must end in .parquet or .jsonl, got {path}")
        self.path, self.schema, self.rows = path, schema_, 0
        self.summary_path = path + ".summary.json"
        for p in (path, self.summary_path):
            if os.path.isdir(p):
                raise OutputError(
                    f"--output: {p} is a directory in the way; move it or name another file"
                )
        self.in_place = live and path.endswith(".jsonl")
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
            atomic.remove_stale(folder, os.path.basename(path))
            if self.in_place:
                self._open_in_place()
            else:
                self.file, self.tmp = atomic.temporary(path)
        except OSError as e:
            raise OutputError(f"cannot write {path}: {atomic.cause(e)}") from e
        self.good_bytes = self.file.tell()  # the end of the last complete batch
        self._pq = None
        if path.endswith(".parquet"):
            self._pq = pq.ParquetWriter(self.file, schema_, compression="zstd")
            self._parts: list[pa.Table] = []

    def _open_in_place(self) -> None:
        """Opens (or re-opens) the live output for appending, locked against a second
        live scorer, cut back to its last complete line."""
        self.file, self.tmp = open(self.path, "ab"), None
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise OutputError(
                f"--output {self.path} is being written by another live scorer; give each its"
                " own output"
            ) from None
        self._end_at_line()
        self.good_bytes = self.file.tell()

    def _still_there(self) -> None:
        """Live output deleted or rotated away (``mv``, logrotate): a new file at the path,
        so alerts never go to a file nobody can read."""
        try:
            same = os.path.samestat(os.stat(self.path), os.fstat(self.file.fileno()))
        except FileNotFoundError:
            same = False
        if not same:
            logging.warning(
                "%s was moved or deleted; writing alerts to a new %s", self.path, self.path
            )
            self.file.close()
            self._open_in_place()

    def _end_at_line(self) -> None:
        """An appended-to file that ends in a torn line (a killed run) is cut back to
        its last complete line, so every line stays one JSON record."""
        size = self.file.tell()
        if not size:
            return
        with open(self.path, "rb") as f:
            f.seek(max(0, size - (1 << 16)))
            tail = f.read()
        if tail.endswith(b"\n"):
            return
        keep = size - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
        logging.warning("%s: ends in an incomplete line (a killed run?); cut back to %d bytes",
                        self.path, keep)  # fmt: skip
        self.file.truncate(keep)
        self.file.seek(keep)

    def write(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        try:
            if self._pq is not None:
                self._parts.append(table)
                if sum(t.num_rows for t in self._parts) >= ROW_GROUP_ROWS:
                    self._flush_group()
            else:
                if self.in_place:
                    self._still_there()
                self.file.write("".join(json.dumps(r) + "\n" for r in table.to_pylist()).encode())
                self.file.flush()
                self.good_bytes = self.file.tell()
        except OSError as e:
            self._failed(e)
        self.rows += table.num_rows

    def _flush_group(self) -> None:
        if self._parts:
            self._pq.write_table(pa.concat_tables(self._parts))
            self._parts = []

    def _failed(self, e: OSError):
        self.abort()
        kept = (
            f"{self.path} holds the windows written before"
            if self.in_place
            else f"the earlier {self.path}, if any, is unchanged"
        )
        raise OutputError(f"cannot write {self.path}: {atomic.cause(e)}; {kept}") from e

    def commit(self, summary: dict, partial: bool = False) -> str:
        """Completes the output with every row written so far and puts it, then its
        summary (``<output>.summary.json``), in place; returns where. ``partial`` (a run
        stopped early): beside an earlier output, never over it."""
        path = self.path
        if partial and self.tmp is not None and os.path.exists(path):
            stem, suffix = os.path.splitext(path)
            path = f"{stem}.partial{suffix}"
        summary, summary_tmp = {**summary, "output": path}, None
        try:
            if self._pq is not None:
                self._flush_group()
                self._pq.close()
                self._pq = None
            self.file.close()
            summary_file, summary_tmp = atomic.temporary(path + ".summary.json")
            with summary_file:
                summary_file.write(json.dumps(summary, indent=1).encode())
            if self.tmp is not None:
                os.replace(self.tmp, path)
                self.tmp = None
            os.replace(summary_tmp, path + ".summary.json")
        except OSError as e:
            if summary_tmp is not None:
                atomic.discard(summary_tmp)
            self._failed(e)
        return path

    def abort(self) -> None:
        """After a failure: removes the temporary (an in-place file is cut back to its
        last complete batch). Never raises."""
        try:
            if self._pq is not None:
                self._pq.close()
        except (OSError, pa.ArrowException):
            pass
        self._pq = None
        try:
            if self.in_place and not self.file.closed:
                self.file.truncate(self.good_bytes)
            self.file.close()
        except OSError:
            pass
        if self.tmp is not None:
            atomic.discard(self.tmp)
            self.tmp = None


class Stop:
    """Set by SIGINT / SIGTERM: the loop finishes the chunk in hand and closes cleanly.
    A second signal gets the default behaviour (Ctrl-C twice forces the exit)."""

    def __init__(self):
        self.signal: str | None = None
        self._set = False

    def install(self) -> None:
        def handler(signum, frame):
            del frame
            # Only a flag: a lock taken in a handler could be held by the interrupted code.
            self.signal, self._set = signal.Signals(signum).name, True
            for s in (signal.SIGINT, signal.SIGTERM):
                signal.signal(s, signal.SIG_DFL)

        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, handler)

    def set(self) -> None:
        self._set = True

    def __bool__(self) -> bool:
        return self._set

    def sleep(self, seconds: float) -> None:
        """Sleeps up to ``seconds``, waking early when set."""
        end = time.monotonic() + seconds
        while not self._set and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))


class Run:
    """One scoring run: sources -> windows -> the artifact -> the writer and the summary."""

    def __init__(
        self,
        scorer: artifact.Scorer,
        writer: AlertWriter | None,
        *,
        keep_scores: bool = False,
        live: bool = False,
        batch: int = BATCH,
    ):
        self.scorer, self.writer, self.batch = scorer, writer, batch
        self.keep_scores = keep_scores  # calibration: keep every score and benign flag
        self.live = live  # --follow: record latencies
        self.features = np.asarray(scorer.features)
        self.windows: dict[str, _FileWindows] = {}
        self.pending: list[tuple] = []  # (chunk info, x_WxTxF, ...) awaiting a full batch
        self.pending_n = 0
        self.start = time.monotonic()
        self.last_log = self.start
        self.flows = 0
        self.scored = 0
        self.alerts = 0
        self.by_class: collections.Counter = collections.Counter()
        self.by_label: dict[str, collections.Counter] = {}
        self.benign_windows = collections.Counter()  # labelled windows without attack flows
        self.report = clean.CleanReport(source="total")
        self.latency: list[float] = []
        self.scores: list[np.ndarray] = []  # with keep_scores only
        self.benign: list[np.ndarray] = []

    # -- input

    def add(self, chunk: reader.Chunk) -> None:
        table = chunk.table
        self.report.merge(chunk.report)
        self.flows += chunk.report.rows_in
        if chunk.restart or chunk.source not in self.windows:
            self.windows[chunk.source] = _FileWindows(self.scorer.window, len(self.features))
        if not table.num_rows:
            return
        x = np.stack(
            [table.column(f).to_numpy(zero_copy_only=False) for f in self.features], axis=1
        ).astype(np.float32)
        labels = _column(table, schema.LABEL)
        labels = np.array([None if lb in UNLABELLED else lb for lb in labels], object)
        attack = np.array([lb is not None and schema.is_attack(lb) for lb in labels], bool)
        x_WxTxF, last_W, any_attack_W = self.windows[chunk.source].push(x, attack)
        if not len(last_W):
            return
        last = table.take(pa.array(last_W))
        info = {"file": np.full(len(last_W), chunk.source, object), "label": labels[last_W]}
        for name in (reader.ROW, *IDENTIFIERS, "dst_port"):
            info[name] = _column(last, name)
        self.pending.append((info, x_WxTxF, any_attack_W, chunk.read_at))
        self.pending_n += len(last_W)
        while self.pending_n >= self.batch:
            self._score(self.batch)

    def flush(self) -> None:
        """Scores every window waiting for a full batch (the last batch is padded)."""
        while self.pending_n:
            self._score(min(self.pending_n, self.batch))

    # -- scoring

    def _take(self, n: int):
        parts, got = [], 0
        while got < n:
            info, x, any_attack, read_at = self.pending[0]
            k = min(n - got, len(x))
            parts.append(({key: v[:k] for key, v in info.items()}, x[:k], any_attack[:k], read_at))
            if k == len(x):
                self.pending.pop(0)
            else:
                rest = {key: v[k:] for key, v in info.items()}
                self.pending[0] = (rest, x[k:], any_attack[k:], read_at)
            got += k
        self.pending_n -= n
        return parts

    def _score(self, n: int) -> None:
        parts = self._take(n)
        x = np.concatenate([p[1] for p in parts])
        padded = np.zeros((self.batch, *x.shape[1:]), np.float32)
        padded[:n] = x
        out = {k: v[:n] for k, v in self.scorer(padded).items()}
        if "probs_BxC" in out:  # the stage-2 class, once for the summary and the rows
            out["predicted_B"] = np.asarray(self.scorer.classes)[out["probs_BxC"].argmax(axis=1)]
        info = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
        any_attack = np.concatenate([p[2] for p in parts])
        read_at = np.concatenate([np.full(len(p[1]), p[3]) for p in parts])
        self._record(info, out, any_attack)
        if self.writer is not None:
            self.writer.write(self._rows(info, out))
        if self.live:  # in a batch run, time from reading to writing measures no latency
            self.latency.extend((time.monotonic() - read_at).tolist())
            self.latency = self.latency[-100_000:]

    def _record(self, info: dict, out: dict, any_attack_W: np.ndarray) -> None:
        flagged = out["flagged_B"]
        self.scored += len(flagged)
        self.alerts += int(flagged.sum())
        if self.keep_scores:
            self.scores.append(out["score_B"])
            self.benign.append(~any_attack_W)
        if "predicted_B" in out:
            self.by_class.update(out["predicted_B"][flagged].tolist())
        for lb, f, attack in zip(info["label"], flagged, any_attack_W, strict=True):
            if lb is not None:
                c = self.by_label.setdefault(lb, collections.Counter())
                c["windows"] += 1
                c["alerts"] += int(f)
                if not attack:
                    self.benign_windows["windows"] += 1
                    self.benign_windows["alerts"] += int(f)

    def _rows(self, info: dict, out: dict) -> pa.Table:
        cols = {"file": info["file"], "row": info[reader.ROW]}
        cols.update({name: info[name] for name in IDENTIFIERS})
        cols.update(dst_port=info["dst_port"], score=out["score_B"], alert=out["flagged_B"])
        if self.scorer.classes:
            cols["predicted"] = out["predicted_B"]
            cols["probability"] = out["probs_BxC"].max(axis=1)
        top = np.argsort(-out["contrib_BxF"], axis=1)[:, :TOP]
        for k in range(TOP):
            cols[f"top{k + 1}"] = self.features[top[:, k]]
            cols[f"top{k + 1}_contribution"] = np.take_along_axis(
                out["contrib_BxF"], top[:, k : k + 1], 1
            )[:, 0]
        cols["label"] = info["label"]
        sch = self.writer.schema
        return pa.table({f.name: pa.array(list(cols[f.name]), f.type) for f in sch}, schema=sch)

    # -- reporting

    def progress(
        self, done_bytes: int | None = None, total_bytes: int | None = None, force=False
    ) -> None:
        now = time.monotonic()
        if not force and now - self.last_log < PROGRESS_SECONDS:
            return
        self.last_log = now
        rate = self.flows / max(now - self.start, 1e-9)
        eta = ""
        if done_bytes and total_bytes and done_bytes < total_bytes:
            eta = f", ETA {(total_bytes - done_bytes) / (done_bytes / (now - self.start)):.0f} s"
        lat = ""
        if self.latency:
            lat = f", latency p50 {np.median(self.latency) * 1e3:.0f} ms max {max(self.latency) * 1e3:.0f} ms"
        logging.info(
            "%d flows (%.0f flows/s), %d windows scored, %d alerts%s%s",
            self.flows, rate, self.scored, self.alerts, eta, lat,
        )  # fmt: skip

    def summary(self, stopped_by: str | None = None) -> dict:
        seconds = time.monotonic() - self.start
        out = {
            "flows_read": self.flows,
            "flows_cleaned_out": self.report.rows_in - self.report.rows_out,
            "cleaning": {"dropped": dict(self.report.dropped), "fixed": dict(self.report.fixed)},
            "windows_scored": self.scored,
            "alerts": self.alerts,
            "seconds": round(seconds, 3),
            "flows_per_second": round(self.flows / max(seconds, 1e-9), 1),
            "threshold": self.scorer.threshold,
        }
        if self.scorer.classes:
            out["alerts_by_predicted_class"] = dict(self.by_class.most_common())
        if self.benign_windows:  # the windows the threshold's false-positive rate is about
            c = self.benign_windows
            out["benign_windows"] = {**c, "alert_rate": round(c["alerts"] / c["windows"], 6)}
        if self.by_label:
            out["by_true_label"] = {
                lb: {**c, "alert_rate": round(c["alerts"] / c["windows"], 6)}
                for lb, c in sorted(self.by_label.items())
            }
        if self.latency:
            lat = np.asarray(self.latency) * 1e3
            out["latency_ms"] = {
                "p50": round(float(np.median(lat)), 2),
                "p99": round(float(np.quantile(lat, 0.99)), 2),
                "max": round(float(lat.max()), 2),
                "meaning": "from reading a flow's bytes to writing its window's row",
            }
        if stopped_by:
            out["stopped_by"] = stopped_by
        return out


def render(summary: dict) -> str:
    """The summary as a few lines for a terminal."""
    lines = [
        f"{summary['windows_scored']:,} windows scored, {summary['alerts']:,} alerts"
        f" (threshold {summary['threshold']:.6g}); {summary['flows_read']:,} flows in"
        f" {summary['seconds']:.1f} s, {summary['flows_per_second']:,.0f} flows/s"
    ]
    if "warning" in summary:
        lines.append(f"warning: {summary['warning']}")
    if "alerts_by_predicted_class" in summary:
        by = summary["alerts_by_predicted_class"]
        lines.append(
            "alerts by predicted class: "
            + (", ".join(f"{c} {n:,}" for c, n in by.items()) or "none")
        )
    if "benign_windows" in summary:
        c = summary["benign_windows"]
        lines.append(
            f"benign windows (no attack flow in them): {c['alerts']:,} of {c['windows']:,}"
            f" alerted ({c['alert_rate']:.1%}; the threshold's false-positive rate is about these)"
        )
    if "by_true_label" in summary:
        lines.append(f"{'true label':<28}{'windows':>10}{'alerts':>10}{'rate':>9}")
        for label, c in summary["by_true_label"].items():
            lines.append(f"{label:<28}{c['windows']:>10,}{c['alerts']:>10,}{c['alert_rate']:>9.1%}")
    return "\n".join(lines)


def check_inputs(inputs: str, follow: bool = False) -> None:
    """Refuses an input that names nothing, before any output is opened. Live mode may
    wait for files: a directory, a glob, or a file whose folder exists."""
    if reader.expand(inputs, missing_ok=follow):
        return
    if not follow:
        raise FileNotFoundError(f"no CSV, CSV.gz or Parquet files in {inputs}")
    if os.path.isdir(inputs):
        return
    folder = inputs.rstrip(os.sep) if inputs.endswith(os.sep) else os.path.dirname(inputs)
    while glob.has_magic(folder):  # the folder a glob's files would appear in
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder or "."):  # a mistyped folder: nothing would ever appear
        raise FileNotFoundError(f"no such directory: {folder} (for --input {inputs})")


def check_output(output: str, inputs: str) -> None:
    """Refuses, before anything is read, an output that is an input or that a later run
    over ``inputs`` would read back (inside an input directory, matched by a glob), also
    through symlinks and hard links."""
    out = os.path.realpath(output)
    for path in reader.expand(inputs, missing_ok=True):
        if os.path.realpath(path) == out or (
            os.path.exists(output) and os.path.samefile(path, output)
        ):
            raise ValueError(f"--output {output} is an input file ({path}); it would be replaced")
    if not out.lower().endswith(reader.SUFFIXES):
        return  # .jsonl: never read as flows
    if os.path.isdir(inputs) and os.path.dirname(out) == os.path.realpath(inputs):
        raise ValueError(
            f"--output {output} is inside the input directory {inputs}: a later run (or"
            " --follow) would score the alerts as flows; write it elsewhere"
        )
    if glob.has_magic(inputs) and (
        fnmatch.fnmatch(out, os.path.realpath(inputs)) or fnmatch.fnmatch(output, inputs)
    ):
        raise ValueError(f"--output {output} matches the input glob {inputs}; write it elsewhere")


def _progress_bytes(sources: dict) -> tuple[int | None, int | None]:
    """(bytes read, bytes in all) for the ETA: plain CSV inputs only."""
    if not sources or any(s.kind != ".csv" for s in sources.values()):
        return None, None
    return sum(s.offset for s in sources.values()), sum(s.bytes_total for s in sources.values())


def score_files(
    scorer: artifact.Scorer,
    inputs: str,
    writer: AlertWriter | None,
    *,
    follow: bool = False,
    poll_seconds: float = 0.5,
    stop: Stop | None = None,
    block_size: int = reader.BLOCK_SIZE,
    keep_scores: bool = False,
) -> tuple[dict, Run]:
    """Scores ``inputs`` (a file, directory or glob); with ``follow``, keeps reading new
    lines and new files until ``stop``. Commits ``writer`` with the summary (or, on an
    error, aborts it: an earlier output is never lost). Returns the summary and the run.

    A file that cannot be scored (unreadable, lacking a feature) is logged and listed in
    the summary's ``files_failed``; the others go on (live mode retries it when it
    changes). In live mode a file that disappears is dropped with its windows, and taken
    up afresh if it comes back.
    """
    check_inputs(inputs, follow)
    stop = stop if stop is not None else Stop()
    run = Run(scorer, writer, keep_scores=keep_scores, live=follow)
    cleaning = scorer.cleaning
    sources: dict[str, reader.Source] = {}
    failed: dict[str, tuple[str, tuple | None]] = {}  # path -> (error, (size, mtime))

    def stamp(path: str) -> tuple | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return st.st_size, st.st_mtime_ns

    def drop(path: str, error: str | None) -> None:
        del sources[path]
        run.windows.pop(path, None)
        if error is not None:
            logging.error("%s", error)
            failed[path] = (error, stamp(path))

    try:
        while not stop:
            for path in reader.expand(inputs, missing_ok=follow):
                retry = path in failed and follow and failed[path][1] != stamp(path)
                if path not in sources and (path not in failed or retry):
                    failed.pop(path, None)
                    sources[path] = reader.Source(path, scorer.features, cleaning, block_size)
                    logging.info("scoring %s", path)
            for path, src in list(sources.items()):
                try:
                    for chunk in src.poll(final=not follow, settle=follow):
                        run.add(chunk)
                        run.progress(*_progress_bytes(sources))
                        if stop:
                            break
                except FileNotFoundError:
                    if not follow:
                        drop(path, f"{path}: disappeared while being scored")
                    else:
                        logging.warning("%s is gone; its windows are dropped", path)
                        drop(path, None)
                except ValueError as e:
                    drop(path, str(e))
                if stop:
                    break
            run.flush()
            if not follow:
                break
            run.progress()
            stop.sleep(poll_seconds)
        run.flush()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    run.progress(force=True)
    summary = run.summary(stop.signal)
    if run.report.drops_most():  # input that silently vanishes: say why, naming the column
        summary["warning"] = run.report.dropped_note()
        logging.warning("%s: %s", inputs, summary["warning"])
    if failed:
        summary["files_failed"] = {p: e for p, (e, _) in failed.items()}
    if writer is not None:
        summary["output"] = writer.commit(summary, partial=bool(stop.signal) and not follow)
    return summary, run


# Recalibration needs this many benign windows per unit of target FPR: ten expected false
# positives above the new threshold, so the rate it is chosen for is not one or two windows.
MIN_FALSE_POSITIVES = 10
# A new threshold this many times above or below the exported one is worth a second look.
THRESHOLD_MOVE_WARNING = 10.0


def calibrate(
    scorer: artifact.Scorer,
    benign: str,
    target_fpr: float,
    output_dir: str,
    overwrite: bool = False,
) -> dict:
    """Re-chooses the threshold on the operator's benign flows; writes a new artifact
    directory (same exported function, new sidecar and manifest). Windows holding a flow
    labelled as an attack, where the input is labelled, are left out and counted. Needs
    ``MIN_FALSE_POSITIVES / target_fpr`` benign windows; warns when the threshold moves
    more than ``THRESHOLD_MOVE_WARNING``-fold (an unlabelled file with attacks in it, or
    flows of another network, move it); an existing artifact at ``output_dir`` is replaced
    only with ``overwrite``."""
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"--target_fpr must be in (0, 1), got {target_fpr}")
    if os.path.realpath(output_dir) == os.path.realpath(scorer.directory):
        raise ValueError(f"--output_model {output_dir} is the input model; give a new directory")
    if os.path.lexists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
        if not overwrite:
            raise ValueError(
                f"--output_model {output_dir} exists and is not empty; give a new directory,"
                " or --overwrite to replace the artifact there"
            )
    summary, run = score_files(scorer, benign, None, keep_scores=True)
    if "files_failed" in summary:
        raise ValueError(f"cannot calibrate on {benign}: {summary['files_failed']}")
    scores = np.concatenate(run.scores) if run.scores else np.zeros(0, np.float32)
    benign_w = np.concatenate(run.benign) if run.benign else np.zeros(0, bool)
    needed = int(np.ceil(MIN_FALSE_POSITIVES / target_fpr))
    if benign_w.sum() < needed:
        raise ValueError(
            f"{benign}: {int(benign_w.sum())} benign windows; a threshold at FPR {target_fpr:g}"
            f" needs at least {needed} ({MIN_FALSE_POSITIVES} expected false positives): give"
            " more benign flows or a larger --target_fpr"
        )
    threshold = metrics.calibrate("fpr", scores[benign_w].astype(np.float64), target_fpr=target_fpr)
    record = json.loads(threshold.to_json())
    old = scorer.meta["threshold"]
    record["calibrated_on"] = (
        f"{int(benign_w.sum())} benign windows of {benign} (recalibrated by the operator;"
        f" {int((~benign_w).sum())} windows with attack-labelled flows left out); the"
        f" exported threshold was {old['value']!r} ({old.get('calibrated_on', old['method'])})"
    )
    move = max(record["value"], 1e-30) / max(float(old["value"]), 1e-30)
    if not 1 / THRESHOLD_MOVE_WARNING <= move <= THRESHOLD_MOVE_WARNING:
        logging.warning(
            "the threshold moves %.3g-fold (%.6g -> %.6g): are %s benign flows of the network"
            " this detector was trained for? Attacks in an unlabelled file raise it, flows of"
            " another network move it either way",
            move, float(old["value"]), record["value"], benign,
        )  # fmt: skip
    sidecar = {**scorer.meta, "threshold": record}
    digest = artifact.write_dir(output_dir, scorer.payload, sidecar)  # the verified bytes
    artifact.load(output_dir)  # the new directory must verify and load
    return {
        "threshold": record,
        "threshold_moved": round(move, 6),
        "windows_used": int(benign_w.sum()),
        "windows_left_out": int((~benign_w).sum()),
        "flows_read": summary["flows_read"],
        "manifest_sha256": digest,
    }
