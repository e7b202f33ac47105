"""The Python API: train, score, calibrate and ship a detector, PyOD and alibi-detect style.

    import lstmae_jax
    det = lstmae_jax.Detector(window=10, epochs=30)  # any ``Config`` field as a keyword
    det.fit("flows/")                                # paths, a pyarrow Table or a DataFrame
    result = det.score(df)                           # one row per row of df, in its order
    det.calibrate(benign_df, target_fpr=0.01)        # alibi-detect's infer_threshold
    det.export("detector/")
    same = lstmae_jax.load("detector/")              # scores alike, without training code

Data: raw CICFlowMeter flows in any of the three naming styles, dirty values and all: a
CSV, CSV.gz or Parquet file, a directory or glob of them, a list of those, a pyarrow Table
or a pandas DataFrame (an in-memory table is written to a Parquet file as it is, so it takes
the files' path). Training data goes through the converter (``ingest.convert``), scored data
through the scorer's reader (``ingest.reader``): the same parsing and cleaning as the
command line, with the artifact's cleaning policy.

One implementation with the command line: ``fit`` is ``launch/convert.py``, ``launch/train.py``
(``train_job``, stage 1 and 2) and ``launch/export.py`` (``export_scorer``); ``score`` is
``launch/score.py``'s pass (``stream.score_files``), its alert rows kept in memory instead of
written to a file, plus the rows that end no window, which the same pass records
(``keep_rows``); ``calibrate`` is ``launch/score.py --calibrate`` (``recalibrate.calibrate``).

Scoring and calibrating import only the scorer's modules (no flax, optax, orbax): ``load``
and ``score`` work where the training stack is not installed. ``fit`` imports it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lstmae_jax.deploy import artifact, output, recalibrate, stream
from lstmae_jax.ingest import reader, schema

ARTIFACT_DIR = "artifact"  # in the workdir: what ``fit`` exported
SCORED, DROPPED, NO_WINDOW = "scored", "dropped", "no_window"  # the ``status`` values
TABLE_FILE = "table.parquet"  # an in-memory table, written as is


class Detector:
    """The two-stage LSTM-AE detector: ``fit``, ``score``, ``calibrate``, ``export``.

    ``Detector(workdir=None, **config_fields)``: every field of ``lstmae_jax.config.Config``
    but ``data``, ``model`` and ``stage`` (``fit`` sets those) as a keyword, checked as the
    command line checks its flags. ``workdir`` holds the converted data, the runs, the
    checkpoints and the exported ``artifact/``; None: a new temporary directory (kept:
    ``det.workdir``). A workdir holds one model: ``fit`` with the same data resumes or
    returns the finished model, with other data it is refused (use another workdir).
    """

    def __init__(self, workdir: str | None = None, **config_fields: Any):
        from lstmae_jax.config import Config  # not on the scoring path

        names = {f.name for f in dataclasses.fields(Config)}
        if unknown := sorted(set(config_fields) - names):
            raise TypeError(f"unknown Config fields {unknown}; see lstmae_jax.config.Config")
        if fixed := sorted(set(config_fields) & {"data", "model", "stage"}):
            raise TypeError(f"{fixed}: fit() sets these (data: its argument; stage 2: stage2=)")
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in config_fields.items()}
        self.config = Config(**fields)
        self.workdir = workdir or tempfile.mkdtemp(prefix="lstmae_jax-")
        self.scorer: artifact.Scorer | None = None
        self.fit_summary: dict | None = None

    def __repr__(self) -> str:
        where = self.scorer.directory if self.scorer else "not fitted"
        return f"Detector(workdir={self.workdir!r}, artifact={where!r})"

    # -- training (imports the training stack)

    def fit(self, data: Any, *, stage2: bool | None = None) -> Detector:
        """Converts ``data``, trains stage 1 (the LSTM-AE and its threshold) and, when
        ``stage2`` (None: when the data holds more than one class), stage 2
        (the attack classifier), and exports both to ``<workdir>/artifact``. Unlabelled
        in-memory data (no label column) is taken as all benign. Returns ``self``."""
        if self.config is None:
            raise RuntimeError("a loaded detector has no training config: fit a new Detector")
        from lstmae_jax.ingest import convert
        from lstmae_jax.jobs import export, training

        cfg, work = self.config, self.workdir
        os.makedirs(work, exist_ok=True)
        with _replacing(work, ("inputs", "data")):  # a refused fit leaves the last fit's
            with _files(data, os.path.join(work, "inputs"), all_benign=True) as (paths, _):
                raw = convert.expand_inputs([p for spec in paths for p in reader.expand(spec)])
                clean = os.path.join(work, "data")
                convert.convert(raw, clean, nonfinite=cfg.nonfinite, negative=cfg.negative)
            cfg = cfg.replace(data=",".join(convert.output_path(f, clean) for f in raw))
            training.check_inputs(cfg, work)  # other data than the run's: refused here
        runs = {"stage1": _finished(training.train_job(cfg, work), "stage 1")}
        split = runs["stage1"]["data"]
        classes = set().union(*(split[s]["labels"] for s in ("train", "val", "test")))
        if stage2 or (stage2 is None and len(classes) > 1):
            runs["stage2"] = _finished(training.train_job(cfg.replace(stage=2), work), "stage 2")
        export.export_scorer(work, os.path.join(work, ARTIFACT_DIR))
        self.scorer = artifact.load(os.path.join(work, ARTIFACT_DIR))
        self.fit_summary = runs
        return self

    # -- scoring (the scorer's modules only)

    def score(self, data: Any) -> Any:
        """One result row per input row, in input order; a pandas DataFrame (with the
        caller's index) for a DataFrame, else a pyarrow Table. Columns:

        * ``row``: the input row (a table: its position, first = 0); for paths also
          ``file``, and ``row`` is the command line's (a CSV's line, header = 1; a
          Parquet file's row, first = 1); a CSV line that is no row (blank, a wrong
          number of fields) has none;
        * ``status``: ``scored``; ``dropped`` by cleaning; ``no_window``: one of the first
          T-1 flows of its file (after cleaning), which end no window of T flows;
        * ``reason``: why not scored (``nonfinite in flow_byts_s``, ``negative in ...``
          under ``negative='drop'``, ``out_of_range in dst_port``, ``unparsable in ...``,
          ``repeated_header``; ``first 9 flows of its file: a window is 10 flows``);
        * ``score``, ``alert`` (``score > threshold``), ``top_features`` and
          ``top_contributions`` (the 3 largest per-feature parts of the score), and with a
          stage 2 ``predicted_class``, ``class_probability``: of the window of T flows
          ending at the row (null unless scored).
        """
        result = self._score_table(data)
        if _is_pandas(data):
            frame = result.to_pandas()
            frame.index = data.index
            return frame
        return result

    def decision_function(self, data: Any) -> np.ndarray:
        """PyOD's name: the scores, float64 [N] for N input rows; NaN where not scored."""
        score = self._score_table(data).column("score")
        return pc.fill_null(score.cast(pa.float64()), np.nan).to_numpy()

    def predict(self, data: Any) -> np.ndarray:
        """PyOD's name: int8 [N], 1 where ``alert``, else 0 (rows not scored too: see
        ``score``)."""
        alert = self._score_table(data).column("alert")
        return pc.fill_null(alert, False).to_numpy().astype(np.int8)

    def calibrate(self, benign: Any, target_fpr: float = 0.01) -> dict:
        """Re-chooses the threshold so that ``target_fpr`` of the benign windows of
        ``benign`` (one path, directory or glob, a Table or a DataFrame; windows with an
        attack-labelled flow are left out) alert; needs ``10 / target_fpr`` windows. The
        detector uses the new artifact (in the workdir; ``export`` ships it). Returns
        ``launch/score.py --calibrate``'s summary (threshold, windows used, ...)."""
        scorer = self._fitted()
        work = self.workdir or tempfile.mkdtemp(prefix="lstmae_jax-")
        self.workdir = work
        os.makedirs(work, exist_ok=True)
        new = tempfile.mkdtemp(prefix="calibrated-", dir=work)
        with _files(benign) as (paths, _):
            if len(paths) != 1:
                raise TypeError("calibrate takes one path, directory or glob, or one table")
            result = recalibrate.calibrate(scorer, paths[0], target_fpr, new)
        self.scorer = artifact.load(new)
        return result

    def export(self, directory: str) -> str:
        """Writes the artifact (the exported function, sidecar and manifest; see README
        "Deploy") to ``directory``, new or an earlier artifact; returns the manifest's
        SHA-256 (``load(..., manifest_sha256=)`` and ``launch/score.py`` can insist on it)."""
        scorer = self._fitted()
        return artifact.write_dir(directory, scorer.payload, scorer.meta)

    # -- what the artifact says

    @property
    def threshold(self) -> float:
        return self._fitted().threshold

    @property
    def features(self) -> list[str]:
        return self._fitted().features

    @property
    def window(self) -> int:
        return self._fitted().window

    @property
    def classes(self) -> list[str] | None:
        return self._fitted().classes

    def _fitted(self) -> artifact.Scorer:
        if self.scorer is None:
            raise RuntimeError("this Detector is not fitted: call fit() first, or load()")
        return self.scorer

    def _score_table(self, data: Any) -> pa.Table:
        scorer = self._fitted()
        with _files(data) as (paths, rows_in):
            result = _align([self._score_one(scorer, spec) for spec in paths], scorer.window)
            if rows_in is None:
                return result
        # A table: its rows are the Parquet file's rows 1..N, every one accounted for.
        if not np.array_equal(result.column("row").to_numpy(), np.arange(1, rows_in + 1)):
            raise AssertionError("the scoring pass did not account for every row of the table")
        row = pc.subtract(result.column("row"), 1)
        return result.drop_columns(["file"]).set_column(0, "row", row)

    @staticmethod
    def _score_one(scorer: artifact.Scorer, spec: str) -> tuple[pa.Table, stream.Run]:
        sink = _Collect(output.output_schema(scorer.classes))
        summary, run = stream.score_files(scorer, spec, sink, keep_rows=True)
        if failed := summary.get("files_failed"):
            raise ValueError("; ".join(failed.values()))
        return sink.table(), run


def load(directory: str, manifest_sha256: str | None = None) -> Detector:
    """A detector from an exported artifact: ``score``, ``calibrate`` and ``export`` as a
    fitted ``Detector``, with only the scorer's code (``deploy.artifact.load`` verifies
    the manifest first; ``manifest_sha256``: refuse any other manifest)."""
    det = Detector.__new__(Detector)
    det.config, det.workdir, det.fit_summary = None, None, None
    det.scorer = artifact.load(directory, manifest_sha256)
    return det


# ---------------------------------------------------------------------------- helpers


class _Collect:
    """What ``stream.score_files`` needs of ``output.AlertWriter``, keeping in memory only
    the columns ``score`` returns (``KEPT``, the file name dictionary-encoded: ``schema``).

    The scorer writes one small table per batch of windows. Kept as they come, thousands
    of them pin Arrow's allocator pages that the reader's freed buffers share: at 10M
    flows that held 1 KB per flow of RSS for 0.14 KB of results. So every ``COMPACT_ROWS``
    rows the small tables are copied into one contiguous table and freed at once."""

    COMPACT_ROWS = 1 << 16

    KEPT = ("file", "row", "score", "alert", "predicted", "probability") + tuple(
        f"top{k}{suffix}" for k in range(1, output.TOP + 1) for suffix in ("", "_contribution")
    )

    def __init__(self, schema_: pa.Schema):
        kept = [f for f in schema_ if f.name in self.KEPT]
        self.schema = pa.schema(
            [pa.field("file", pa.dictionary(pa.int32(), pa.string()))]
            + [f for f in kept if f.name != "file"]
        )  # the scoring pass builds its rows to this schema: no file name per row
        self.tables: list[pa.Table] = []  # compacted, COMPACT_ROWS rows or more each
        self.recent: list[pa.Table] = []  # as written, fewer than COMPACT_ROWS rows
        self.recent_rows = 0

    def write(self, table: pa.Table) -> None:
        self.recent.append(table)
        self.recent_rows += table.num_rows
        if self.recent_rows >= self.COMPACT_ROWS:
            self._compact()

    def _compact(self) -> None:
        if self.recent:  # one copy per column; the file dictionaries unified
            self.tables.append(pa.concat_tables(self.recent).combine_chunks())
        self.recent, self.recent_rows = [], 0

    def commit(self, summary: dict, partial: bool = False) -> None:
        return None

    def abort(self) -> None:
        self.tables, self.recent, self.recent_rows = [], [], 0

    def table(self) -> pa.Table:
        self._compact()
        if not self.tables:
            return self.schema.empty_table()
        return pa.concat_tables(self.tables)


def _finished(summary: dict, name: str) -> dict:
    if summary["preempted"]:
        raise RuntimeError(f"{name} stopped before the end (a signal): fit again to resume")
    return summary


def _is_pandas(data: Any) -> bool:
    return type(data).__module__.split(".")[0] == "pandas" and hasattr(data, "columns")


@contextlib.contextmanager
def _files(
    data: Any, folder: str | None = None, all_benign: bool = False
) -> Iterator[tuple[list[str], int | None]]:
    """``data`` as path specs (file, directory or glob), and the row count of an in-memory
    table, written to ``folder`` (None: a temporary removed afterwards). ``all_benign``:
    an unlabelled table gets the label Benign (training)."""
    if isinstance(data, (str, os.PathLike)):
        yield [os.fspath(data)], None
        return
    if isinstance(data, Sequence) and data and all(isinstance(d, (str, os.PathLike)) for d in data):
        yield [os.fspath(d) for d in data], None
        return
    if _is_pandas(data):
        data = pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if not isinstance(data, pa.Table):
        raise TypeError(
            "expected a path, a list of paths, a pyarrow Table or a pandas DataFrame of"
            f" CICFlowMeter flows, got {type(data).__name__}"
        )
    names, seen = [], set()
    for name in map(str, data.column_names):  # a second "Fwd Header Length": pandas' ".1"
        names.append(f"{name}.1" if name in seen else name)
        seen.add(name)
    data = data.rename_columns(names)
    if all_benign and not any(schema.canonical_name(n) == schema.LABEL for n in names):
        data = data.append_column(schema.LABEL, pa.array([schema.BENIGN] * data.num_rows))
    with contextlib.ExitStack() as stack:
        if folder is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="lstmae_jax-"))
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, TABLE_FILE)
        pq.write_table(data, path, compression="none")
        try:
            yield [path], data.num_rows
        except ValueError as e:  # name the caller's table, not the temporary file
            raise ValueError(str(e).replace(path, "the input table")) from e


@contextlib.contextmanager
def _replacing(work: str, names: Sequence[str]) -> Iterator[None]:
    """The folders ``names`` of ``work`` (the last fit's copies of its data) are set aside
    while the body writes new ones; if the body raises (a refused or failed conversion, data
    the run was not started on) the new ones are removed and the old ones put back, else
    the old ones are removed. A fit killed in between leaves them aside; the next fit
    puts them back first."""
    aside = {os.path.join(work, n): os.path.join(work, f".previous-{n}") for n in names}
    for path, old in aside.items():
        if os.path.exists(old):  # left by a fit that was killed
            shutil.rmtree(path, ignore_errors=True)
            os.replace(old, path)
    for path, old in aside.items():
        if os.path.exists(path):
            os.replace(path, old)
    try:
        yield
    except BaseException:
        for path, old in aside.items():
            shutil.rmtree(path, ignore_errors=True)
            if os.path.exists(old):
                os.replace(old, path)
        raise
    for old in aside.values():
        shutil.rmtree(old, ignore_errors=True)


def _why(key: str, window: int) -> tuple[str, str]:
    """(status, reason) of a ``Run.unscored`` key."""
    if key == "no_window":
        return NO_WINDOW, f"first {window - 1} flows of its file: a window is {window} flows"
    reason, _, column = key.partition(":")  # "nonfinite:flow_byts_s", "repeated_header"
    return DROPPED, f"{reason} in {column}" if column else reason


def _align(parts: list[tuple[pa.Table, stream.Run]], window: int) -> pa.Table:
    """The scored windows' rows and the unscored rows of each pass, in file and row order.
    Built with Arrow kernels and integer indices (no Python object per row), so the
    memory is about the result's own."""
    scored = pa.concat_tables([t for t, _ in parts])  # one schema: ``_Collect.schema``
    unscored = [u for _, run in parts for u in run.unscored]
    # The file of each scored row as an index into ``files`` (first appearance first),
    # from each chunk's dictionary: no file name per row.
    order: dict[str, int] = {}
    scored_file = []
    for chunk in scored.column("file").chunks:
        lut = [order.setdefault(f, len(order)) for f in chunk.dictionary.to_pylist()]
        scored_file.append(np.asarray(lut, np.int32)[chunk.indices.to_numpy()])
    for f, *_ in unscored:
        order.setdefault(f, len(order))
    files = list(order)
    file_idx = np.concatenate(
        scored_file
        + [np.zeros(0, np.int32)]
        + [np.full(len(rows), order[f], np.int32) for f, _, rows in unscored]
    )
    row = np.concatenate(
        [pc.fill_null(scored.column("row"), -1).to_numpy()] + [rows for *_, rows in unscored]
    ).astype(np.int64)
    counts = [scored.num_rows] + [len(rows) for *_, rows in unscored]
    labels = [(SCORED, None)] + [_why(key, window) for _, key, _ in unscored]
    perm = np.lexsort((row, file_idx))
    kind = np.repeat(np.arange(len(labels), dtype=np.int32), counts)[perm]  # into labels
    take = np.concatenate([np.arange(scored.num_rows), np.full(len(row) - scored.num_rows, -1)])
    take = take[perm]
    done = take >= 0
    got = scored.select(
        [n for n in ("score", "alert", "predicted", "probability") if n in scored.column_names]
    ).take(pa.array(take, mask=~done))
    k, n_hits = output.TOP, int(done.sum())
    offsets = pa.array(np.concatenate([[0], np.cumsum(done * k)]).astype(np.int32))
    # The top features of the scored rows, in order, interleaved: row i's j-th is at i*k + j.
    interleave = (take[done][:, None] + np.arange(k) * scored.num_rows).ravel()

    def per_row(fmt: str, type_: pa.DataType) -> pa.Array:
        stacked = pa.concat_arrays(
            [scored.column(fmt.format(j)).combine_chunks().cast(type_) for j in range(1, k + 1)]
        )
        values = stacked.take(pa.array(interleave)) if n_hits else pa.array([], type_)
        return pa.ListArray.from_arrays(offsets, values, mask=pa.array(~done))

    def text(codes: np.ndarray, words: list) -> pa.Array:
        return pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(words, pa.string())).cast(
            pa.string()
        )

    cols = {
        "file": text(file_idx[perm], files),
        "row": pa.array(row[perm]),
        "status": text(kind, [s for s, _ in labels]),
        "reason": text(kind, [r for _, r in labels]),
        "score": got.column("score"),
        "alert": got.column("alert"),
        "top_features": per_row("top{}", pa.string()),
        "top_contributions": per_row("top{}_contribution", pa.float32()),
    }
    if "predicted" in scored.column_names:
        cols["predicted_class"] = got.column("predicted")
        cols["class_probability"] = got.column("probability")
    return pa.table(cols)
