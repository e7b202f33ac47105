"""The Python API: train, score, calibrate and ship a detector, PyOD and alibi-detect style.

    import lstmae_jax
    with lstmae_jax.Detector(window=10, epochs=30) as det:  # any ``Config`` field
        det.fit("monday.csv")                      # paths, a Table, a DataFrame, numpy
        result = det.score(df)                     # one row per row of df, in its order
        det.decision_function(df), det.predict(df) # PyOD's names
        det.infer_threshold(benign_df, fpr=0.01)   # alibi-detect's name (calibrate)
        det.export("detector/")
    same = lstmae_jax.load("detector/")            # scores alike, without training code

Data: raw CICFlowMeter flows in any of the three naming styles, dirty values and all: a
CSV, CSV.gz or Parquet file, a directory or glob of them, a list of those, a pyarrow Table,
a pandas DataFrame or a 2-D numpy array with ``feature_names=`` (an in-memory table is
written to a Parquet file as it is, so it takes the files' path; a column that mixes
numbers and text is read as text, as a CSV's is, so a cell that is no number is dropped and
counted). Training data goes through the converter (``ingest.convert``), scored data
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
import logging
import math
import os
import shutil
import sys
import tempfile
import weakref
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
TABLE_NAME = "the input table"  # how errors and logs name it (not its temporary file)
FIXED = ("data", "model", "stage")  # Config fields that ``fit`` sets
ATTACK = "Attack"  # the class of label 1 when ``y`` is 0/1 (PyOD's outlier label)


class Detector:
    """The two-stage LSTM-AE detector: ``fit``, ``score``, ``calibrate``, ``export``, with
    PyOD's and alibi-detect's names beside them.

    ``Detector(workdir=None, *, verbose=1, contamination=None, **config_fields)``:

    * ``config_fields``: every field of ``lstmae_jax.config.Config`` but ``data``,
      ``model`` and ``stage`` (``fit`` sets those), type-checked here and range-checked
      as the command line checks its flags.
    * ``workdir`` holds the converted data, the runs, the checkpoints and the exported
      ``artifact/``; a workdir holds one model: ``fit`` with the same data resumes or
      returns the finished model, with other data it is refused. None: a temporary
      directory made by ``fit`` and removed by ``close()`` (or ``with``, or when the
      detector is garbage-collected); the fitted detector keeps scoring from memory.
    * ``verbose``: 0 silent (errors only), 1 one line per stage and per epoch (rate, loss,
      val_loss, ETA) on stderr, 2 every log line of the command line's.
    * ``contamination``: PyOD's threshold rule, the share of normal traffic that alerts: the
      same as ``threshold="fpr", target_fpr=contamination``, computed on held-out benign
      windows (PyOD takes the quantile of the training scores, attacks included).
    """

    def __init__(
        self,
        workdir: str | os.PathLike | None = None,
        *,
        verbose: int = 1,
        contamination: float | None = None,
        **config_fields: Any,
    ):
        self._empty()
        self.set_params(
            workdir=workdir, verbose=verbose, contamination=contamination, **config_fields
        )

    def _empty(self) -> None:
        """The state before a fit (or a load): the constructor's and ``load``'s start."""
        self._params: dict[str, Any] = {}
        self.scorer: artifact.Scorer | None = None
        self.fit_summary: dict | None = None
        self.calibration_: dict | None = None  # the last ``calibrate``'s summary
        self._owned: str | None = None  # a temporary workdir this detector made
        self._cleanup: weakref.finalize | None = None
        self._fit_input: tuple[list[str], int | None] | None = None
        self._fit_scores: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._fit_names: list[str] | None = None  # a numpy fit's feature_names

    # -- sklearn's estimator protocol (so ``sklearn.base.clone`` works)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's arguments: ``workdir``, ``verbose``, ``contamination`` and
        every ``Config`` field (the value given, else its default)."""
        del deep  # no nested estimators
        return dict(self._params)

    def set_params(self, **params: Any) -> Detector:
        """Sets constructor arguments (checked as the constructor checks them); a fitted
        detector keeps its model until the next ``fit``. Returns ``self``."""
        from lstmae_jax.config import Config  # not on the scoring path

        self._trainable()
        names = {f.name for f in dataclasses.fields(Config)} - set(FIXED)
        if unknown := sorted(set(params) - names - {"workdir", "verbose", "contamination"}):
            if fixed := sorted(set(unknown) & set(FIXED)):
                raise TypeError(f"{fixed}: fit() sets these (data: its argument; stage 2: stage2=)")
            raise TypeError(f"unknown Config fields {unknown}; see lstmae_jax.config.Config")
        defaults = _defaults()
        merged = {**defaults, **self._params, **params}
        _check_types({k: merged[k] for k in names | {"verbose", "contamination"}})
        workdir = merged["workdir"]
        if workdir is not None and not isinstance(workdir, (str, os.PathLike)):
            raise TypeError(f"Detector(workdir={workdir!r}): a path or None")
        fields = {
            k: tuple(v) if isinstance(v, list) else v for k, v in merged.items() if k in names
        }
        if (c := merged["contamination"]) is not None:
            if not 0.0 < c <= 0.5:
                raise ValueError(f"Detector(contamination={c!r}): PyOD's range is (0, 0.5]")
            allowed = (defaults["target_fpr"], c)  # target_fpr left as it is, or the same
            if merged["threshold"] != "fpr" or merged["target_fpr"] not in allowed:
                raise ValueError(
                    "contamination= is threshold='fpr', target_fpr=contamination: give one"
                    " of the two rules"
                )
            fields["target_fpr"] = float(c)
        self.config = Config(**fields)  # the range checks: one ValueError naming the option
        self._params = merged
        return self

    def _trainable(self) -> None:
        if getattr(self, "config", ...) is None:  # ``load``'s: no config to train with
            raise RuntimeError("a loaded detector has no training config: fit a new Detector")

    # -- the workdir and its lifecycle

    @property
    def workdir(self) -> str | None:
        """The folder of the converted data, runs and artifact (None: not made yet)."""
        given = self._params.get("workdir") if self._params else None
        return os.fspath(given) if given is not None else self._owned

    def _work(self) -> str:
        """The workdir, made now (a temporary one, removed by ``close``) if none was given."""
        if self.workdir is None:
            self._owned = tempfile.mkdtemp(prefix="lstmae_jax-")
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._owned, True)
        os.makedirs(self.workdir, exist_ok=True)
        return self.workdir

    def close(self) -> None:
        """Removes the temporary workdir this detector made (a given ``workdir`` is the
        caller's and stays). A fitted detector still scores, calibrates and exports."""
        if self._cleanup is not None:
            self._cleanup()  # rmtree, once
        self._cleanup, self._owned, self._fit_input = None, None, None

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "fitted" if self.scorer else "not fitted"
        return f"Detector(workdir={self.workdir!r}, {where})"

    # -- training (imports the training stack)

    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        stage2: bool | None = None,
        feature_names: Sequence[str] | None = None,
    ) -> Detector:
        """Converts ``X``, trains stage 1 (the LSTM-AE and its threshold) and, when
        ``stage2`` (None: when the data holds more than one class), stage 2 (the attack
        classifier), and exports both to ``<workdir>/artifact``. ``y``: a label per row of
        an in-memory ``X`` (strings, or PyOD's 0 = normal / 1 = outlier), replacing any
        label column; unlabelled in-memory data is taken as all benign. Returns ``self``."""
        self._trainable()
        from lstmae_jax.ingest import convert
        from lstmae_jax.jobs import export, training

        cfg, work = self.config, self._work()
        with _verbosity(self._params["verbose"]):
            say = _Say(self._params["verbose"])
            with _replacing(work, ("inputs", "data")):  # a refused fit leaves the last fit's
                inputs = os.path.join(work, "inputs")
                with _files(X, inputs, all_benign=True, y=y, names=feature_names) as files:
                    paths, rows_in = files
                    raw = convert.expand_inputs([p for spec in paths for p in reader.expand(spec)])
                    say(
                        f"converting {len(raw)} file(s)"
                        if rows_in is None
                        else f"converting {rows_in} rows"
                    )
                    clean = os.path.join(work, "data")
                    convert.convert(raw, clean, nonfinite=cfg.nonfinite, negative=cfg.negative)
                cfg = cfg.replace(data=",".join(convert.output_path(f, clean) for f in raw))
                training.check_inputs(cfg, work)  # other data than the run's: refused here
            say("stage 1: the autoencoder")
            runs = {"stage1": _finished(training.train_job(cfg, work, say.epoch), "stage 1")}
            split = runs["stage1"]["data"]
            classes = set().union(*(split[s]["labels"] for s in ("train", "val", "test")))
            if stage2 or (stage2 is None and len(classes) > 1):
                say("stage 2: the attack classifier")
                s2 = training.train_job(cfg.replace(stage=2), work, say.epoch)
                runs["stage2"] = _finished(s2, "stage 2")
            export.export_scorer(
                work,
                os.path.join(work, ARTIFACT_DIR),
                data_name=_provenance(rows_in, raw, bool(self._owned)),
                workdir_name="a temporary workdir (removed)" if self._owned else None,
            )
            self.scorer = artifact.load(os.path.join(work, ARTIFACT_DIR))
            say(f"fitted: threshold {self.scorer.threshold:.6g}")
        self.fit_summary = runs
        self._fit_input = (paths, rows_in)
        self._fit_names = list(feature_names) if feature_names is not None else None
        self._fit_scores = None
        return self

    def fit_predict(self, X: Any, y: Any = None, **fit_args: Any) -> np.ndarray:
        """PyOD's name: ``fit(X, y, ...)``, then ``labels_``."""
        return self.fit(X, y, **fit_args).labels_

    # -- scoring (the scorer's modules only)

    def score(self, data: Any, *, feature_names: Sequence[str] | None = None) -> Any:
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
        result = self._score_table(data, feature_names)
        if _is_pandas(data):
            frame = result.to_pandas()
            frame.index = data.index
            return frame
        return result

    def decision_function(
        self, X: Any, *, feature_names: Sequence[str] | None = None
    ) -> np.ndarray:
        """PyOD's name: the scores, float64 [N] for N input rows; NaN where not scored."""
        return _scores(self._score_table(X, feature_names))

    def predict(
        self,
        X: Any,
        return_confidence: bool = False,
        *,
        feature_names: Sequence[str] | None = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """PyOD's name: int8 [N], 1 where ``alert``, else 0 (rows not scored too: see
        ``score``); ``return_confidence``: also ``predict_confidence``'s [N]."""
        result = self._score_table(X, feature_names)
        labels = _alerts(result)
        if return_confidence:
            return labels, self._confidence(_scores(result), labels)
        return labels

    def predict_proba(
        self,
        X: Any,
        method: str = "linear",
        return_confidence: bool = False,
        *,
        feature_names: Sequence[str] | None = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """PyOD's name and rules: float64 [N, 2], the probabilities of normal and outlier,
        from the scores scaled by the fit data's (``decision_scores_``): ``linear``
        min-max, ``unify`` by the Gaussian error function of the standardised score (Kriegel
        et al. 2011). NaN rows where not scored. Needs this session's ``fit``."""
        result = self._score_table(X, feature_names)
        scores, alerts = _scores(result), _alerts(result)
        ref = self._reference("predict_proba")
        if method == "linear":
            span = float(ref.max() - ref.min()) or 1.0
            outlier = (scores - ref.min()) / span
        elif method == "unify":
            std = float(ref.std()) or 1.0
            outlier = _erf((scores - ref.mean()) / (std * math.sqrt(2.0)))
        else:
            raise ValueError(f"method must be 'linear' or 'unify', got {method!r}")
        outlier = np.clip(outlier, 0.0, 1.0)
        probs = np.stack([1.0 - outlier, outlier], axis=1)
        if return_confidence:
            return probs, self._confidence(scores, alerts)
        return probs

    def predict_confidence(
        self, X: Any, *, feature_names: Sequence[str] | None = None
    ) -> np.ndarray:
        """PyOD's name and rule (ExCeeD, Perini et al. 2020): for each row, the probability
        that its prediction would stay the same with other fit data, from its score's rank
        among the fit data's scores and the share of them that alert. NaN where not
        scored. Needs this session's ``fit``."""
        result = self._score_table(X, feature_names)
        return self._confidence(_scores(result), _alerts(result))

    def _confidence(self, scores: np.ndarray, alert: np.ndarray) -> np.ndarray:
        ref = self._reference("confidence")
        n = ref.size
        share = float(
            np.mean(self.labels_[~np.isnan(self.decision_scores_)])
        )  # PyOD's contamination
        below = np.searchsorted(np.sort(ref), scores, side="right")  # #{ref <= score}
        posterior = (1.0 + below) / (2.0 + n)
        confidence = 1.0 - _binom_cdf(n - int(n * share), n, posterior)
        confidence = np.where(alert == 1, confidence, 1.0 - confidence)
        return np.where(np.isnan(scores), np.nan, confidence)

    def calibrate(
        self,
        benign: Any,
        target_fpr: float = 0.01,
        *,
        feature_names: Sequence[str] | None = None,
    ) -> float:
        """Re-chooses the threshold so that ``target_fpr`` of the benign windows of
        ``benign`` (one path, directory or glob, a Table, a DataFrame or numpy; windows
        with an attack-labelled flow are left out) alert; needs ``10 / target_fpr``
        windows. Returns the new threshold; the detector uses it at once (in memory;
        ``export`` ships it); ``calibration_`` holds ``launch/score.py --calibrate``'s
        summary (windows used, the move, ...). Writes nothing that stays."""
        scorer = self._fitted()
        with _verbosity(self._params.get("verbose", 1) if self._params else 1):
            with tempfile.TemporaryDirectory(prefix="lstmae_jax-calibrated-") as tmp:
                new = os.path.join(tmp, "artifact")
                names = feature_names or self._names_for(benign)
                with _files(benign, names=names) as (paths, rows_in):
                    if len(paths) != 1:
                        raise TypeError("calibrate takes one path, directory or glob, or one table")
                    named = f"{TABLE_NAME} ({rows_in} rows)" if rows_in is not None else None
                    result = recalibrate.calibrate(scorer, paths[0], target_fpr, new, name=named)
                self.scorer = artifact.load(new)  # held in memory: the folder can go
                self._fit_scores = None  # the fit data's alerts (and fused scores) move
        self.calibration_ = result
        return float(result["threshold"]["value"])

    def infer_threshold(
        self, X: Any, fpr: float = 0.01, *, feature_names: Sequence[str] | None = None
    ) -> Detector:
        """alibi-detect's name: ``calibrate(X, target_fpr=fpr)``; returns ``self``."""
        self.calibrate(X, target_fpr=fpr, feature_names=feature_names)
        return self

    def export(self, directory: str) -> str:
        """Writes the artifact (the exported function, sidecar and manifest; see
        docs/deploy.md) to ``directory``, new or an earlier artifact; returns the manifest's
        SHA-256 (``load(..., manifest_sha256=)`` and ``launch/score.py`` can insist on it)."""
        scorer = self._fitted()
        return artifact.write_dir(directory, scorer.payload, scorer.meta)

    # -- what the artifact says (PyOD's fitted attributes beside)

    @property
    def threshold(self) -> float:
        return self._fitted().threshold

    threshold_ = threshold  # PyOD's name

    @property
    def features(self) -> list[str]:
        """The model's features (canonical names, after cleaning)."""
        return self._fitted().features

    feature_names_in_ = features  # sklearn's name

    @property
    def n_features_in_(self) -> int:
        return len(self._fitted().features)

    @property
    def window(self) -> int:
        return self._fitted().window

    @property
    def classes(self) -> list[str] | None:
        return self._fitted().classes

    @property
    def decision_scores_(self) -> np.ndarray:
        """PyOD's name: the scores of the fit data's rows, float64 [N] in its order (NaN
        where not scored), computed on first use and kept."""
        return self._scored_fit_data()[0]

    @property
    def labels_(self) -> np.ndarray:
        """PyOD's name: int8 [N], 1 where the fit data's rows alert (``decision_scores_``
        above ``threshold_``)."""
        return self._scored_fit_data()[2]

    def _scored_fit_data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The fit data's scores, those of its scored rows (the reference of PyOD's
        probability and confidence rules), and its alerts."""
        self._fitted()
        if self._fit_scores is None:
            if self._fit_input is None:
                raise AttributeError(
                    "the fit data's scores (decision_scores_, labels_, predict_proba) need"
                    " this session's fit; a loaded or closed detector has none"
                )
            result = self._score_paths(*self._fit_input)
            scores = _scores(result)
            self._fit_scores = (scores, scores[~np.isnan(scores)], _alerts(result))
        return self._fit_scores

    def _reference(self, what: str) -> np.ndarray:
        ref = self._scored_fit_data()[1]
        if ref.size == 0:
            raise ValueError(f"{what}: no row of the fit data was scored")
        return ref

    def _fitted(self) -> artifact.Scorer:
        if self.scorer is None:
            raise RuntimeError("this Detector is not fitted: call fit() first, or load()")
        return self.scorer

    def _names_for(self, data: Any) -> Sequence[str] | None:
        """A numpy array given without ``feature_names``: the names of the numpy array
        ``fit`` took, or the model's features, whichever has its width."""
        if isinstance(data, np.ndarray) and data.ndim == 2 and self.scorer is not None:
            for names in (self._fit_names, self.scorer.features):
                if names is not None and data.shape[1] == len(names):
                    return names
        return None

    def _score_table(self, data: Any, names: Sequence[str] | None = None) -> pa.Table:
        self._fitted()
        with _files(data, names=names or self._names_for(data)) as (paths, rows_in):
            return self._score_paths(paths, rows_in)

    def _score_paths(self, paths: list[str], rows_in: int | None) -> pa.Table:
        scorer = self._fitted()
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
    the manifest first; ``manifest_sha256``: refuse any other manifest). The fit data's
    scores (``decision_scores_``, ``predict_proba``) are not in an artifact."""
    det = Detector.__new__(Detector)
    det._empty()
    det.config = None  # no training config: it scores, calibrates and exports
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


def _provenance(rows_in: int | None, raw: list[str], temporary: bool) -> str | None:
    """How the artifact names the training data: an in-memory table, or the caller's files
    when the converted copies are in a temporary workdir (None: those copies' paths)."""
    if rows_in is not None:
        return f"{TABLE_NAME} ({rows_in} rows)"
    return ",".join(os.path.abspath(f) for f in raw) if temporary else None


def _finished(summary: dict, name: str) -> dict:
    if summary["preempted"]:
        raise RuntimeError(f"{name} stopped before the end (a signal): fit again to resume")
    return summary


def _is_pandas(data: Any) -> bool:
    return type(data).__module__.split(".")[0] == "pandas" and hasattr(data, "columns")


@contextlib.contextmanager
def _files(
    data: Any,
    folder: str | None = None,
    all_benign: bool = False,
    y: Any = None,
    names: Sequence[str] | None = None,
) -> Iterator[tuple[list[str], int | None]]:
    """``data`` as path specs (file, directory or glob), and the row count of an in-memory
    table, written to ``folder`` (None: a temporary removed afterwards). ``all_benign``:
    an unlabelled table gets the label Benign (training); ``y``: labels for its rows;
    ``names``: a numpy array's column names. Errors and log lines name the caller's
    table (``TABLE_NAME``), not the temporary file."""
    if isinstance(data, (str, os.PathLike)) or (
        isinstance(data, Sequence)
        and not isinstance(data, str)
        and data
        and all(isinstance(d, (str, os.PathLike)) for d in data)
    ):
        if y is not None:
            raise TypeError("y= labels rows of an in-memory table; files carry a label column")
        specs = [os.fspath(data)] if isinstance(data, (str, os.PathLike)) else data
        yield [os.fspath(d) for d in specs], None
        return
    table = _table(data, names)
    if y is not None:
        table = _with_labels(table, y)
    elif all_benign and not any(
        schema.canonical_name(n) == schema.LABEL for n in table.column_names
    ):
        table = table.append_column(schema.LABEL, pa.array([schema.BENIGN] * table.num_rows))
    with contextlib.ExitStack() as stack:
        if folder is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="lstmae_jax-"))
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, TABLE_FILE)
        pq.write_table(table, path, compression="none")
        stack.enter_context(_renamed_in_logs(path, TABLE_NAME))
        try:
            yield [path], table.num_rows
        except ValueError as e:  # name the caller's table, not the temporary file
            raise ValueError(str(e).replace(path, TABLE_NAME)) from e


def _table(data: Any, names: Sequence[str] | None) -> pa.Table:
    """An in-memory input as a pyarrow Table, column by column: a column Arrow cannot type
    (numbers and text mixed) is read as text, as a CSV's cells are, so the reader drops
    and counts the cells that are no number; a complex column is refused by name. A
    second column of the same name (CICIDS2017's ``Fwd Header Length``) gets pandas' ".1"."""
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if isinstance(data, pa.Table):
        columns = list(zip(map(str, data.column_names), data.columns, strict=True))
    elif _is_pandas(data):
        columns = [(str(n), data.iloc[:, i]) for i, n in enumerate(data.columns)]
    elif isinstance(data, np.ndarray):
        if data.ndim != 2:
            raise ValueError(f"a numpy array of flows is 2-D [rows, columns], got {data.shape}")
        if names is None:
            raise TypeError(
                "a numpy array needs feature_names= (its columns' CICFlowMeter names, any"
                " naming style)"
            )
        if len(names) != data.shape[1]:
            raise ValueError(f"{len(names)} feature_names for {data.shape[1]} columns")
        columns = [(str(n), data[:, i]) for i, n in enumerate(names)]
    else:
        raise TypeError(
            "expected a path, a list of paths, a pyarrow Table, a pandas DataFrame or a"
            f" 2-D numpy array of CICFlowMeter flows, got {type(data).__name__}"
        )
    out_names, arrays, seen = [], [], set()
    for name, col in columns:
        out_names.append(f"{name}.1" if name in seen else name)
        seen.add(name)
        arrays.append(col if isinstance(col, (pa.Array, pa.ChunkedArray)) else _column(name, col))
    return pa.table(arrays, names=out_names)


def _column(name: str, values: Any) -> pa.Array:
    """One column of a DataFrame or numpy array as Arrow, or its cells as text."""
    cells = np.asarray(values)
    if cells.dtype.kind == "c" or (
        cells.dtype == object and any(isinstance(v, complex) for v in cells)
    ):
        row = next(i for i, v in enumerate(cells) if isinstance(v, (complex, np.complexfloating)))
        raise ValueError(
            f"{TABLE_NAME}: column {name!r} holds complex numbers (row {row}: {cells[row]!r});"
            " flow features are real numbers"
        )
    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.array([None if _missing(v) else str(v) for v in cells], pa.string())


def _missing(v: Any) -> bool:
    return (
        v is None or (isinstance(v, float) and v != v) or type(v).__name__ in ("NAType", "NaTType")
    )


def _with_labels(table: pa.Table, y: Any) -> pa.Table:
    """``table`` with ``y`` as its label column (any label column it had replaced): text
    as given; PyOD's integers 0 (normal) and 1 (outlier) as Benign and Attack, k as
    "Attack k"."""
    labels = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
    if labels.ndim != 1 or len(labels) != table.num_rows:
        raise ValueError(f"y has shape {labels.shape}: one label per row, {table.num_rows} rows")
    if labels.dtype.kind in "biuf":
        if labels.dtype.kind == "f" and not np.all(
            np.isfinite(labels) & (labels == np.round(labels))
        ):
            raise ValueError("y: numeric labels must be whole numbers (0 normal, 1 outlier)")
        ints = labels.astype(np.int64)
        text = [schema.BENIGN if k == 0 else ATTACK if k == 1 else f"{ATTACK} {k}" for k in ints]
    else:
        if bad := [i for i, v in enumerate(labels) if _missing(v)][:1]:
            raise ValueError(f"y: row {bad[0]} has no label")
        text = [str(v) for v in labels]
    keep = [i for i, n in enumerate(table.column_names) if schema.canonical_name(n) != schema.LABEL]
    return table.select(keep).append_column(schema.LABEL, pa.array(text, pa.string()))


@contextlib.contextmanager
def _renamed_in_logs(path: str, name: str) -> Iterator[None]:
    """Log records of the body name ``name`` where they would name ``path``."""

    def rename(record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if path in text:
            record.msg, record.args = text.replace(path, name), None
        return True

    absl_logger = logging.getLogger("absl")
    absl_logger.addFilter(rename)
    try:
        yield
    finally:
        absl_logger.removeFilter(rename)


def _defaults() -> dict[str, Any]:
    """The constructor's arguments and their defaults (``get_params``' keys)."""
    from lstmae_jax.config import Config

    fields = {f.name: f.default for f in dataclasses.fields(Config) if f.name not in FIXED}
    return {"workdir": None, "verbose": 1, "contamination": None, **fields}


_KINDS = {  # a Config field's type, as the dataclass spells it -> (accepted, what to say)
    "int": ((int, np.integer), "a whole number"),
    "float": ((int, float, np.integer, np.floating), "a number"),
    "str": ((str,), "a string"),
    "bool": ((bool, np.bool_), "True or False"),
}


def _check_types(values: dict[str, Any]) -> None:
    """Each option's Python type, as its flag's parser would insist: a ``TypeError`` naming
    the option (``window="4"``, ``window=2.5``, ``window=True``, ``encoder_sizes=8``). The
    types are the dataclass's strings (``"int"``, ``"tuple[int, ...]"``), as
    ``config.define_flags`` reads them."""
    from lstmae_jax.config import Config

    types = {f.name: f.type for f in dataclasses.fields(Config)}
    types.update(verbose="int", contamination="float")
    for name, value in values.items():
        type_ = types[name]
        if name == "contamination" and value is None:
            continue
        if name == "verbose" and value not in (0, 1, 2):
            raise ValueError(f"Detector(verbose={value!r}): 0, 1 or 2")
        if type_.startswith("tuple["):
            kind = type_.removeprefix("tuple[").split(",")[0]
            accepted, what = _KINDS[kind]
            ok = isinstance(value, (tuple, list)) and all(_is(v, accepted) for v in value)
            what = f"a tuple of {what.removeprefix('a ')}s, e.g. {_EXAMPLES[kind]}"
        else:
            accepted, what = _KINDS[type_]
            ok = _is(value, accepted)
        if not ok:
            raise TypeError(
                f"Detector({name}={value!r}): {name} takes {what}, got {type(value).__name__}"
            )


_EXAMPLES = {"int": "(64, 32)", "float": "(0.6, 0.2, 0.2)", "str": '("quantile:sse",)'}


def _is(value: Any, accepted: tuple[type, ...]) -> bool:
    """``isinstance``, but a bool is no number (``window=True`` is a mistake)."""
    if isinstance(value, (bool, np.bool_)) and bool not in accepted:
        return False
    return isinstance(value, accepted)


@contextlib.contextmanager
def _verbosity(verbose: int) -> Iterator[None]:
    """absl's logger at the level of ``verbose`` for the body: 0 errors only, 1 warnings
    (absl's default outside ``app.run``), 2 every INFO line the commands print. The
    logger's own level is put back after, exactly (NOTSET stays NOTSET)."""
    absl_logger = logging.getLogger("absl")
    old = absl_logger.level
    absl_logger.setLevel({0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO}[verbose])
    try:
        yield
    finally:
        absl_logger.setLevel(old)


class _Say:
    """``verbose=1``'s lines on stderr: one per stage and one per epoch."""

    def __init__(self, verbose: int):
        self.on = verbose == 1

    def __call__(self, line: str) -> None:
        if self.on:
            print(f"lstmae_jax: {line}", file=sys.stderr, flush=True)

    def epoch(self, r: dict) -> None:
        eta = f", {r['eta']}" if r["eta"] else ""
        loss = "" if r["loss"] is None else f"loss {r['loss']:.4g}, "
        self(
            f"  epoch {r['epoch']}/{r['epochs']}: step {r['step']}/{r['steps']},"
            f" {r['windows_per_s']:,.0f} windows/s, {loss}val_loss {r['val_loss']:.4g}"
            f"{' (best)' if r['improved'] else ''}{eta}"
        )


def _scores(result: pa.Table) -> np.ndarray:
    return pc.fill_null(result.column("score").cast(pa.float64()), np.nan).to_numpy()


def _alerts(result: pa.Table) -> np.ndarray:
    """int8 [N]: 1 where ``alert`` (the artifact's own ``score > threshold``), else 0."""
    return (
        pc.fill_null(result.column("alert"), False).to_numpy(zero_copy_only=False).astype(np.int8)
    )


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _binom_cdf(k: int, n: int, p: np.ndarray) -> np.ndarray:
    """P(Binomial(n, p) <= k), float64, by the regularised incomplete beta function
    ``I_{1-p}(n - k, k + 1)`` (``jax.scipy.special.betainc``)."""
    if k >= n:
        return np.ones_like(p, dtype=np.float64)
    import jax
    from jax.scipy.special import betainc

    q = np.nan_to_num(1.0 - p, nan=0.5).astype(np.float64)
    x64 = jax.enable_x64 if hasattr(jax, "enable_x64") else jax.experimental.enable_x64
    with x64(True):  # float64, as PyOD's scipy.stats.binom
        return np.asarray(betainc(float(n - k), float(k + 1), q), np.float64)


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
