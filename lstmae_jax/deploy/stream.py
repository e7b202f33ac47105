"""The scoring pass: flows from files or live logs -> windows across chunks -> the
artifact -> alert rows (``output.AlertWriter``) and a summary.

One output row per scored window, placed at its last flow (the columns: ``output``). A
window is ``window`` consecutive cleaned flows of one file, as in training; the first
``window - 1`` flows of a file end no window.

Chunking does not change the result: each file keeps its last ``window - 1`` flows
between chunks, and windows are scored in batches of one fixed shape (the last one
padded), so every window meets the same computation whatever the chunk size.

No JAX or training code here beyond the artifact's ``call``.
"""

from __future__ import annotations

import collections
import fnmatch
import glob
import os
import queue
import threading
import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from absl import logging

from lstmae_jax import atomic, console
from lstmae_jax.data import windows
from lstmae_jax.deploy import artifact
from lstmae_jax.deploy.output import IDENTIFIERS, TOP, AlertWriter
from lstmae_jax.ingest import clean, reader, schema

BATCH = 512  # windows per call of the artifact (one compiled shape)
WRITE_ROWS = 8 * BATCH  # rows built and written at once (a live pass writes at each poll)
PROGRESS_SECONDS = 10.0
# Label cells that label nothing: CICFlowMeter's live output writes "NeedManualLabel".
UNLABELLED = frozenset({"", "NeedManualLabel"})
# The input columns each output row carries (taken per chunk at the windows' last flows).
ROW_COLUMNS = (reader.ROW, *IDENTIFIERS, "dst_port")


def _concat(parts: list) -> np.ndarray | pa.Array:
    """The parts of one ``info`` column (numpy or Arrow) as one."""
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    if len(parts) == 1:
        return parts[0]
    # One type for all: a file that lacks the column gives nulls (type null) for it.
    type_ = next((p.type for p in parts if p.type != pa.null()), pa.null())
    return pa.concat_arrays([p.cast(type_) for p in parts])


def _typed(values: np.ndarray | pa.Array, type_: pa.DataType) -> pa.Array:
    """``values`` as an Arrow array of the output's ``type_``."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values if values.type == type_ else values.cast(type_)
    return pa.array(values, type_)


def _column(table: pa.Table, name: str) -> pa.Array:
    """A column as one Arrow array (no Python object per row), all null where the input
    lacks it."""
    if name not in table.column_names:
        return pa.nulls(table.num_rows)
    return table.column(name).combine_chunks()


class _FileWindows:
    """The last ``window - 1`` cleaned flows of one file, carried between chunks."""

    def __init__(self, window: int, num_features: int):
        self.window = window
        self.x = np.zeros((0, num_features), np.float32)
        self.attack = np.zeros(0, bool)

    def push(self, x_NxF: np.ndarray, attack_N: np.ndarray):
        """Windows ending at the new flows: (the flows x_MxF they are cut from, their
        first rows starts_W in it, the index of each window's last flow among the new
        ones, whether any flow of the window is an attack)."""
        x = np.concatenate([self.x, x_NxF])
        attack = np.concatenate([self.attack, attack_N])
        carried, t = len(self.x), self.window  # carried <= t - 1: every window is new
        starts_W = np.arange(max(len(x) - t + 1, 0))
        _, any_attack_W = windows.window_labels(attack, starts_W, t)
        keep = len(x) - min(len(x), t - 1)
        self.x, self.attack = x[keep:], attack[keep:]
        return x, starts_W, starts_W + t - 1 - carried, any_attack_W


class Run:
    """One scoring run: sources -> windows -> the artifact -> the writer and the summary."""

    def __init__(
        self,
        scorer: artifact.Scorer,
        writer: AlertWriter | None,
        *,
        keep_scores: bool = False,
        keep_rows: bool = False,
        live: bool = False,
        batch: int = BATCH,
    ):
        self.scorer, self.writer, self.batch = scorer, writer, batch
        # Flows sent per call, a fixed number as the batch is (one compiled shape); the
        # windows are cut from them on the device. A batch's windows come from few chunks,
        # each part of k windows needing k + window - 1 flows; a batch of many small parts
        # (a live pass's short polls) takes fewer windows, padded.
        self.batch_flows = 2 * batch + scorer.window
        self.keep_scores = keep_scores  # calibration: keep every score and benign flag
        # The Python API: every input row that ends no window, with (file, reason, rows):
        # "no_window" (the first window - 1 flows of a file) or the cleaning's reason.
        self.keep_rows = keep_rows
        self.unscored: list[tuple[str, str, np.ndarray]] = []
        self.live = live  # --follow: record latencies
        self.features = np.asarray(scorer.features)
        self.feature_names = pa.array(scorer.features, pa.string())  # the top features' words
        self.windows: dict[str, _FileWindows] = {}
        self.pending: list[tuple] = []  # (info, (x_MxF, starts_W), ...) awaiting a batch
        self.pending_n = 0
        # The batch on the device: its results are read (and its rows written) once the
        # next batch is dispatched, so the host prepares and writes while the device works.
        self.inflight: tuple | None = None
        self.unwritten: list[tuple] = []  # ([(info, n windows, read_at)], outputs) read back
        self.unwritten_n = 0
        # Where the pass's time goes (the summary's ``seconds_by_stage``): reading (and
        # parsing) and cleaning (in a batch pass on the reader's thread, overlapped; the
        # scoring side's wait for it is ``input_wait``), cutting windows, compiling (the
        # first call), the device (dispatching, and waiting for results the host could
        # not overlap), and building and writing the rows.
        self.stage_seconds: collections.Counter = collections.Counter()
        self.start = time.monotonic()
        self.progress = console.Progress("flows", every=PROGRESS_SECONDS)
        self.flows = 0
        self.scored = 0
        self.alerts = 0
        self.by_class: collections.Counter = collections.Counter()
        self.by_label: dict[str, collections.Counter] = {}
        self.label_ids: dict[str, int] = {}  # the labels met so far, numbered as met
        self.benign_windows = collections.Counter()  # labelled windows without attack flows
        self.report = clean.CleanReport(source="total")
        self.latency: list[float] = []
        self.scores: list[np.ndarray] = []  # with keep_scores only
        self.members: list[np.ndarray] = []  # ... each member's own score (format 4)
        self.benign: list[np.ndarray] = []

    # -- input

    def _labels(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """Each flow's label as its number in ``label_ids`` (-1 where unlabelled) and
        whether it names an attack, decided once per distinct label rather than per flow."""
        if schema.LABEL not in table.column_names:
            return np.full(table.num_rows, -1, np.int32), np.zeros(table.num_rows, bool)
        encoded = table.column(schema.LABEL).combine_chunks().cast(pa.string()).dictionary_encode()
        codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
        words = [None if w in UNLABELLED else w for w in encoded.dictionary.to_pylist()]
        ids = [
            -1 if w is None else self.label_ids.setdefault(w, len(self.label_ids)) for w in words
        ]
        attack = [w is not None and schema.is_attack(w) for w in words]
        return np.array(ids + [-1], np.int32)[codes], np.array(attack + [False], bool)[codes]

    def add(self, chunk: reader.Chunk) -> None:
        t0 = time.perf_counter()
        table = chunk.table
        if self.keep_rows:
            for reason, rows in chunk.report.dropped_rows.items():
                self.unscored += [(chunk.source, reason, r) for r in rows]
        self.report.merge(chunk.report)
        self.report.dropped_rows.clear()  # kept above when asked for, else not at all
        self.flows += chunk.report.rows_in
        if chunk.restart or chunk.source not in self.windows:
            self.windows[chunk.source] = _FileWindows(self.scorer.window, len(self.features))
        if not table.num_rows:
            return
        # Each column converted straight into float32 rows of a features-major array (one
        # pass per column; ``np.stack(...).astype`` made two copies), used transposed.
        x_FxN = np.empty((len(self.features), table.num_rows), np.float32)
        for j, f in enumerate(self.features):
            x_FxN[j] = table.column(f).to_numpy(zero_copy_only=False)
        x = x_FxN.T
        labels, attack = self._labels(table)
        x_MxF, starts_W, last_W, any_attack_W = self.windows[chunk.source].push(x, attack)
        if self.keep_rows and len(last_W) < table.num_rows:
            rows = pc.fill_null(table.column(reader.ROW), -1).to_numpy()
            self.unscored.append((chunk.source, "no_window", np.delete(rows, last_W)))
        if not len(last_W):
            return
        present = [n for n in ROW_COLUMNS if n in table.column_names]
        last = table.select(present).take(pa.array(last_W))  # not the feature columns
        info = {"file": np.full(len(last_W), chunk.source, object), "label": labels[last_W]}
        for name in ROW_COLUMNS:
            info[name] = _column(last, name)
        self.pending.append((info, (x_MxF, starts_W), any_attack_W, chunk.read_at))
        self.pending_n += len(last_W)
        self.stage_seconds["window"] += time.perf_counter() - t0
        while self.pending_n >= self.batch:
            self._score(self.batch)

    def flush(self) -> None:
        """Scores every window waiting for a full batch (the last batch is padded) and
        records the batch still on the device."""
        while self.pending_n:
            self._score(min(self.pending_n, self.batch))
        if self.inflight is not None:
            inflight, self.inflight = self.inflight, None
            self._finish(*inflight)
        t0 = time.perf_counter()
        self._write()
        self.stage_seconds["write"] += time.perf_counter() - t0

    # -- scoring

    def _take(self, n: int, x_MxF: np.ndarray, starts_B: np.ndarray):
        """Up to ``n`` pending windows, as many as their flows fit in ``x_MxF``: the flows
        copied there, each window's first row in it written to ``starts_B``. Returns the
        windows' parts (info, number of windows, any attack, read time), one per chunk
        they come from, and their number."""
        parts, got, used, t = [], 0, 0, self.scorer.window
        while got < n and self.pending:
            info, (x, starts), any_attack, read_at = self.pending[0]
            k = min(n - got, len(starts), len(x_MxF) - used - (t - 1))
            if k <= 0:
                break
            first = starts[0]  # a chunk's windows start at consecutive flows (``push``)
            x_MxF[used : used + k + t - 1] = x[first : first + k + t - 1]
            starts_B[got : got + k] = np.arange(used, used + k)
            parts.append(({key: v[:k] for key, v in info.items()}, k, any_attack[:k], read_at))
            if k == len(starts):
                self.pending.pop(0)
            else:
                rest = {key: v[k:] for key, v in info.items()}
                self.pending[0] = (rest, (x, starts[k:]), any_attack[k:], read_at)
            got, used = got + k, used + k + t - 1
        self.pending_n -= got
        return parts, got

    def _score(self, n: int) -> None:
        """Dispatches up to ``n`` windows (one batch) to the device, then records the
        batch dispatched before it."""
        t0 = time.perf_counter()
        x_MxF = np.zeros((self.batch_flows, len(self.features)), np.float32)
        starts_B = np.zeros(self.batch, np.int32)  # the padding: windows at row 0
        parts, n = self._take(n, x_MxF, starts_B)
        t1 = time.perf_counter()
        dispatched = (parts, n, self.scorer.dispatch_flows(x_MxF, starts_B, TOP))
        self.stage_seconds["window"] += t1 - t0
        # The first call traces and compiles the batch shape (or loads it from the
        # compilation cache): counted apart from the device's steady work.
        first = "compile" if "compile" not in self.stage_seconds else "device"
        self.stage_seconds[first] += time.perf_counter() - t1
        if self.inflight is not None:
            self._finish(*self.inflight)
        self.inflight = dispatched

    def _finish(self, parts: list, n: int, on_device: dict) -> None:
        t0 = time.perf_counter()
        out = {k: np.asarray(v)[:n] for k, v in on_device.items()}
        t1 = time.perf_counter()
        self.stage_seconds["device"] += t1 - t0
        if "probs_BxC" in out:  # the stage-2 class, once for the summary and the rows
            out["predicted_B"] = np.asarray(self.scorer.classes)[out["probs_BxC"].argmax(axis=1)]
        labels = np.concatenate([p[0]["label"] for p in parts])
        self._record(labels, out, np.concatenate([p[2] for p in parts]))
        # Only what the rows need (not the windows): each part's info, size, read time.
        self.unwritten.append(([(p[0], p[1], p[3]) for p in parts], out))
        self.unwritten_n += n
        if self.unwritten_n >= WRITE_ROWS:
            self._write()
        self.stage_seconds["write"] += time.perf_counter() - t1

    def _write(self) -> None:
        """Builds the rows of the batches read back so far as one table and writes it:
        a table per batch cost more to build than its rows."""
        if not self.unwritten:
            return
        batches, self.unwritten, self.unwritten_n = self.unwritten, [], 0
        parts = [p for batch, _ in batches for p in batch]  # (info, n windows, read_at)
        if self.writer is not None:
            info = {k: _concat([p[0][k] for p in parts]) for k in parts[0][0]}
            out = {k: np.concatenate([o[k] for _, o in batches]) for k in batches[0][1]}
            self.writer.write(self._rows(info, out))
        if self.live:  # in a batch run, time from reading to writing measures no latency
            read_at = np.concatenate([np.full(n, at) for _, n, at in parts])
            self.latency.extend((time.monotonic() - read_at).tolist())
            self.latency = self.latency[-100_000:]

    def _record(self, label_W: np.ndarray, out: dict, any_attack_W: np.ndarray) -> None:
        flagged = out["flagged_B"]
        self.scored += len(flagged)
        self.alerts += int(flagged.sum())
        if self.keep_scores:
            self.scores.append(out["score_B"])
            if "members_BxM" in out:
                self.members.append(out["members_BxM"])
            self.benign.append(~any_attack_W)
        if "predicted_B" in out:
            self.by_class.update(out["predicted_B"][flagged].tolist())
        labelled = label_W >= 0
        if not labelled.any():
            return
        hits = flagged[labelled]
        windows_L = np.bincount(label_W[labelled], minlength=len(self.label_ids))
        alerts_L = np.bincount(label_W[labelled], weights=hits, minlength=len(self.label_ids))
        for lb, w, a in zip(self.label_ids, windows_L.tolist(), alerts_L.tolist(), strict=True):
            if not w:
                continue
            c = self.by_label.setdefault(lb, collections.Counter())
            c["windows"] += w
            c["alerts"] += int(a)
        benign = ~any_attack_W[labelled]
        if benign.any():  # no key until there is one: the summary reports it when present
            self.benign_windows["windows"] += int(benign.sum())
            self.benign_windows["alerts"] += int((hits & benign).sum())

    def _rows(self, info: dict, out: dict) -> pa.Table:
        cols = {"file": info["file"], "row": info[reader.ROW]}
        cols.update({name: info[name] for name in IDENTIFIERS})
        cols.update(dst_port=info["dst_port"], score=out["score_B"], alert=out["flagged_B"])
        if self.scorer.classes:
            cols["predicted"] = out["predicted_B"]
            cols["probability"] = out["probs_BxC"].max(axis=1)
        for k in range(TOP):  # indices into the feature names: no string per row
            cols[f"top{k + 1}"] = pa.DictionaryArray.from_arrays(
                pa.array(out["top_feature_BxK"][:, k]), self.feature_names
            )
            cols[f"top{k + 1}_contribution"] = out["top_contrib_BxK"][:, k]
        label = info["label"]  # numbers in ``label_ids``, -1: unlabelled
        words = pa.array(list(self.label_ids), pa.string())
        cols["label"] = pa.DictionaryArray.from_arrays(pa.array(label, mask=label < 0), words)
        sch = self.writer.schema
        return pa.table({f.name: _typed(cols[f.name], f.type) for f in sch}, schema=sch)

    # -- reporting

    def report_progress(self, fraction: float | None = None, force: bool = False) -> None:
        """A progress line (at most every PROGRESS_SECONDS unless forced); ``fraction``:
        the share of the input read, for the ETA."""
        extra = f"{self.scored} windows scored, {self.alerts} alerts"
        if self.latency:
            extra += (
                f", latency p50 {np.median(self.latency) * 1e3:.0f} ms"
                f" max {max(self.latency) * 1e3:.0f} ms"
            )
        self.progress.update(self.flows, extra, fraction=fraction, force=force)

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
            "seconds_by_stage": {
                k: round(self.stage_seconds[k], 3)
                for k in ("read", "clean", "input_wait", "window", "compile", "device", "write")
            },
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
        if atomic.same_file(path, output):
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


def _timed(run: Run, src: reader.Source, chunks) -> Iterator[reader.Chunk]:
    """``chunks``, each one's reading and cleaning time added to ``run.stage_seconds``."""
    it = iter(chunks)
    while True:
        t0, c0 = time.perf_counter(), src.clean_seconds
        chunk = next(it, None)
        cleaning = src.clean_seconds - c0
        run.stage_seconds["clean"] += cleaning
        run.stage_seconds["read"] += time.perf_counter() - t0 - cleaning
        if chunk is None:
            return
        yield chunk


def _ahead(run: Run, chunks: Iterator[reader.Chunk], depth: int = 2) -> Iterator[reader.Chunk]:
    """``chunks`` read by a thread up to ``depth`` chunks ahead: Arrow's reading, parsing
    and cleaning release the GIL, so the next chunk is read while this one is windowed,
    scored and written. An error reading comes out where its chunk would have, and the
    thread stops when the caller does. ``run.stage_seconds["input_wait"]``: the time this
    side waited for a chunk (``read`` and ``clean`` are then the thread's own time)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    quit_ = threading.Event()
    end = object()

    def put(item) -> bool:
        while not quit_.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            put(end)
        except BaseException as e:  # noqa: BLE001 - raised again on the caller's side
            put(e)

    thread = threading.Thread(target=produce, name="lstmae-reader", daemon=True)
    thread.start()
    try:
        while True:
            t0 = time.perf_counter()
            item = q.get()
            run.stage_seconds["input_wait"] += time.perf_counter() - t0
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        quit_.set()
        thread.join()


def _fraction_read(sources: dict) -> float | None:
    """The share of the input's bytes read, for the ETA: plain CSV inputs only."""
    if not sources or any(s.kind != ".csv" for s in sources.values()):
        return None
    total = sum(s.bytes_total for s in sources.values())
    return sum(s.offset for s in sources.values()) / total if total else None


def score_files(
    scorer: artifact.Scorer,
    inputs: str,
    writer: AlertWriter | None,
    *,
    follow: bool = False,
    poll_seconds: float = 0.5,
    stop: console.Stop | None = None,
    block_size: int = reader.BLOCK_SIZE,
    keep_scores: bool = False,
    keep_rows: bool = False,
) -> tuple[dict, Run]:
    """Scores ``inputs`` (a file, directory or glob); with ``follow``, keeps reading new
    lines and new files until ``stop``. Commits ``writer`` with the summary (or, on an
    error, aborts it: an earlier output is never lost). Returns the summary and the run.

    A file that cannot be scored (unreadable, lacking a feature) is logged and listed in
    the summary's ``files_failed``; the others go on (live mode retries it when it
    changes). In live mode a file that disappears is dropped with its windows, and taken
    up afresh if it comes back.

    ``keep_scores`` (calibration): ``run.scores`` and ``run.benign`` hold every window's
    score and whether it is benign. ``keep_rows`` (the Python API): ``run.unscored`` lists
    the input rows that end no window, and why (``Run``).
    """
    check_inputs(inputs, follow)
    stop = stop if stop is not None else console.Stop()
    run = Run(scorer, writer, keep_scores=keep_scores, keep_rows=keep_rows, live=follow)
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
                    chunks = _timed(run, src, src.poll(final=not follow, settle=follow))
                    for chunk in chunks if follow else _ahead(run, chunks):
                        run.add(chunk)
                        run.report_progress(_fraction_read(sources))
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
            run.report_progress()
            stop.sleep(poll_seconds)
        run.flush()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    run.report_progress(force=True)
    summary = run.summary(stop.signal)
    if run.report.drops_most():  # input that silently vanishes: say why, naming the column
        summary["warning"] = run.report.dropped_note()
        logging.warning("%s: %s", inputs, summary["warning"])
    if failed:
        summary["files_failed"] = {p: e for p, (e, _) in failed.items()}
    if writer is not None:
        summary["output"] = writer.commit(summary, partial=bool(stop.signal) and not follow)
    return summary, run
