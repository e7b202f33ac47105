"""The Python API (lstmae_jax.api): fit, aligned scores equal to launch/score.py's, load
without training code, calibrate, export; PyOD's and alibi-detect's names and habits
(``BaseDetector``'s fitted attributes, ``predict_proba`` and ``predict_confidence`` by its
rules, sklearn ``clone``), the detector's lifecycle, and input errors of its own."""

import importlib.util
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import lstmae_jax
from lstmae_jax.deploy import artifact, stream
from lstmae_jax.ingest import schema
from lstmae_jax.synthetic import timeline

pd = pytest.importorskip("pandas")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = {  # config.smoke's sizes: trains both stages in seconds
    "window": 4,
    "encoder_sizes": (8,),
    "decoder_sizes": (8,),
    "classifier_hidden": (8,),
    "batch_size": 32,
    "eval_batch_size": 32,
    "epochs": 2,
    "log_every_steps": 2,
    "checkpoint_every_steps": 4,
}
# Rows of the dirty table (2018 raw naming) and what each is given: (column, value).
DIRTY = {
    10: ("Flow Byts/s", float("inf")),  # nonfinite: dropped
    11: ("Flow Pkts/s", float("nan")),  # nonfinite: dropped
    20: ("Dst Port", 70000.0),  # out of range: dropped
    30: ("Init Fwd Win Byts", -1.0),  # negative: clamped, scored
    40: ("Flow Duration", "abc"),  # no number: dropped
}


def _env() -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    return env


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """Both stages fitted once on a generated table in the raw CICIDS2017 naming (leading
    spaces, ``Fwd Header Length`` twice, no ``Protocol``; ``Infinity`` rates, ``-1``s)."""
    work = tmp_path_factory.mktemp("api")
    path = str(work / "train.parquet")
    timeline.write(timeline.generate(3000, seed=1), path, style="cicids2017")
    return lstmae_jax.Detector(str(work / "run"), **SMOKE).fit(pq.read_table(path))


@pytest.fixture(scope="module")
def dirty(tmp_path_factory):
    """Held-back flows in the raw CSE-CIC-IDS2018 naming, the rows of ``DIRTY`` spoiled."""
    path = tmp_path_factory.mktemp("dirty") / "raw.parquet"
    timeline.write(timeline.generate(600, seed=7), str(path), style="csecicids2018")
    table = pq.read_table(path)
    for i, (name, value) in DIRTY.items():
        col = table.column(name).to_pylist()
        if isinstance(value, str):
            col = [str(v) for v in col]
        col[i] = value
        table = table.set_column(table.column_names.index(name), name, pa.array(col))
    pq.write_table(table, path)
    return table, path


def _cli_score(model, inputs, out):
    proc = subprocess.run(
        [sys.executable, "launch/score.py", f"--model={model}", f"--input={inputs}",
         f"--output={out}"],
        capture_output=True, text=True, timeout=300, env=_env(), cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return pq.read_table(out).to_pylist()


def test_fit_trains_both_stages_and_exports(detector):
    assert detector.classes[0] == "Benign" and len(detector.classes) > 2
    assert detector.window == 4 and detector.threshold > 0
    assert set(detector.fit_summary) == {"stage1", "stage2"}
    artifact.load(os.path.join(detector.workdir, "artifact"))  # verifies


def test_score_lines_up_with_the_callers_rows_and_says_why(detector, dirty):
    table, _ = dirty
    frame = table.to_pandas()
    frame.index = frame.index + 1000  # the caller's own index comes back
    result = detector.score(frame)
    assert len(result) == len(frame) and (result.index == frame.index).all()
    assert result["row"].tolist() == list(range(len(frame)))
    status = dict(zip(result["row"], result["status"], strict=True))
    reason = dict(zip(result["row"], result["reason"], strict=True))
    assert reason[10] == "nonfinite in flow_byts_s" and reason[11] == "nonfinite in flow_pkts_s"
    assert reason[20] == "out_of_range in dst_port"
    assert reason[40] == "unparsable in flow_duration"
    assert {status[i] for i in (10, 11, 20, 40)} == {"dropped"}
    assert status[30] == "scored" and pd.isna(reason[30])  # clamped, kept
    first = "first 3 flows of its file: a window is 4 flows"
    assert [status[i] for i in range(4)] == ["no_window"] * 3 + ["scored"]
    assert reason[0] == first
    dropped = result[result["status"] == "dropped"]  # the generator's Infinity rates too
    assert len(dropped) >= 4 and dropped["reason"].str.match(r"^\w+ in \w+$").all()
    assert (result["status"] == "scored").sum() == len(frame) - len(dropped) - 3
    scored = result[result["status"] == "scored"]
    assert scored["score"].notna().all() and scored["predicted_class"].isin(detector.classes).all()
    assert all(len(t) == 3 and set(t) <= set(detector.features) for t in scored["top_features"])
    assert ((scored["score"] > detector.threshold) == scored["alert"].astype(bool)).all()
    unscored = result[result["status"] != "scored"]
    assert unscored["score"].isna().all() and unscored["alert"].isna().all()
    # A dropped row leaves no gap: the window ending at row 12 holds rows 7-9 and 12.
    assert status[12] == "scored"
    short = detector.score(timeline.generate(3, seed=5))  # fewer flows than a window
    assert short.column("status").to_pylist() == ["no_window"] * 3
    assert short.column("row").to_pylist() == [0, 1, 2] and short.column("score").null_count == 3
    np.testing.assert_array_equal(detector.decision_function(frame), result["score"].to_numpy())
    np.testing.assert_array_equal(
        detector.predict(frame),
        (result["alert"] == True).to_numpy().astype(np.int8),  # noqa: E712
    )


def test_scores_equal_the_command_line_row_by_row(detector, dirty, tmp_path):
    table, path = dirty
    cli = _cli_score(detector.scorer.directory, path, tmp_path / "alerts.parquet")
    api = detector.score(table).to_pylist()  # the in-memory table
    by_path = detector.score(str(path)).to_pylist()  # the same file, as a path
    assert [r["row"] + 1 for r in api] == [r["row"] for r in by_path] == list(range(1, 601))
    assert {r["file"] for r in by_path} == {str(path)}
    api_scored = [r for r in api if r["status"] == "scored"]
    assert len(cli) == len(api_scored) > 500
    path_scored = [r for r in by_path if r["status"] == "scored"]
    for c, a, p in zip(cli, api_scored, path_scored, strict=True):
        assert c["row"] == a["row"] + 1 == p["row"]
        assert c["score"] == a["score"] == p["score"]  # the same pass: equal to the bit
        assert c["alert"] == a["alert"] and c["predicted"] == a["predicted_class"]
        assert c["probability"] == a["class_probability"]
        assert [c["top1"], c["top2"], c["top3"]] == a["top_features"] == p["top_features"]
        assert c["top1_contribution"] == a["top_contributions"][0]


def test_a_csv_path_scores_as_the_command_line_scores_it(detector, tmp_path):
    path = tmp_path / "flows.csv"
    timeline.write(timeline.generate(400, seed=3), str(path), style="cicids2017")
    cli = _cli_score(detector.scorer.directory, path, tmp_path / "alerts.parquet")
    api = detector.score([str(path)])
    assert pc.min(api.column("row")).as_py() == 2  # line numbers: the header is line 1
    scored = api.filter(pc.equal(api.column("status"), "scored")).to_pylist()
    assert [(r["row"], r["score"]) for r in scored] == [(r["row"], r["score"]) for r in cli]


def test_results_are_compacted_as_they_come_and_equal(detector, tmp_path, monkeypatch):
    """The in-memory sink copies its per-batch tables into one table every COMPACT_ROWS
    rows (so thousands of small ones do not pin allocator pages), row for row the tables
    it was given."""
    for day in range(2):
        timeline.write(timeline.generate(900, seed=20 + day), str(tmp_path / f"d{day}.parquet"))
    written, kept = [], []
    collect = lstmae_jax.api._Collect
    write, table = collect.write, collect.table

    def spy_write(sink, t):
        assert t.schema == sink.schema  # the pass builds the kept columns only
        written.append(t)
        write(sink, t)

    def spy_table(sink):
        out = table(sink)
        kept.append(([(t.num_rows, t.column("score").num_chunks) for t in sink.tables], out))
        return out

    monkeypatch.setattr(collect, "write", spy_write)
    monkeypatch.setattr(collect, "table", spy_table)
    monkeypatch.setattr(collect, "COMPACT_ROWS", 600)
    monkeypatch.setattr(stream, "WRITE_ROWS", stream.BATCH)  # a table per batch here
    result = detector.score(str(tmp_path))
    ((tables, got),) = kept  # the directory is one pass

    def as_text(t):  # the file dictionaries differ between the tables written
        return t.set_column(0, "file", t.column("file").cast(pa.string()))

    assert as_text(got).equals(as_text(pa.concat_tables(written)))  # the rows as written
    batches = [t.num_rows for t in written]  # windows cross files; the last batch is short
    assert (
        batches[:3] == [stream.BATCH] * 3
        and sum(batches) == pc.sum(pc.equal(result["status"], "scored")).as_py()
    )
    assert tables == [(2 * stream.BATCH, 1), (sum(batches) - 2 * stream.BATCH, 1)]
    assert set(got.column("file").chunk(0).dictionary.to_pylist()) == {
        str(tmp_path / "d0.parquet"), str(tmp_path / "d1.parquet")
    }  # fmt: skip
    # A pass that scores nothing (a file shorter than a window) joins the others.
    timeline.write(timeline.generate(3, seed=5), str(tmp_path / "short.parquet"))
    short = detector.score([str(tmp_path / "short.parquet"), str(tmp_path / "d0.parquet")])
    assert short.column("status").to_pylist()[:3] == ["no_window"] * 3
    rows = [pq.read_metadata(tmp_path / f).num_rows for f in ("short.parquet", "d0.parquet")]
    assert short.num_rows == sum(rows) and rows[0] == 3


def _scorer_modules() -> set:
    """The project modules launch/score.py may load (tests/deploy/test_stream.py's list)."""
    path = os.path.join(REPO, "tests", "deploy", "test_stream.py")
    spec = importlib.util.spec_from_file_location("_test_stream", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SCORER_MODULES


LOAD_AND_SCORE = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('flax', 'optax', 'orbax'):
            raise ImportError(f'{name} is blocked: scoring must not import it')
sys.meta_path.insert(0, Block())
import pyarrow.parquet as pq
import lstmae_jax
det = lstmae_jax.load(sys.argv[1])
pq.write_table(det.score(pq.read_table(sys.argv[2])), sys.argv[3])
open(sys.argv[4], 'w').write('\\n'.join(sorted(sys.modules)))
"""


def test_load_scores_like_the_detector_without_training_code(detector, dirty, tmp_path):
    detector.export(str(tmp_path / "shipped"))
    out, modules = tmp_path / "scores.parquet", tmp_path / "modules.txt"
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_AND_SCORE, str(tmp_path / "shipped"), str(dirty[1]),
         str(out), str(modules)],
        capture_output=True, text=True, timeout=300, env=_env(), cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert pq.read_table(out).equals(detector.score(dirty[0]))
    loaded = modules.read_text().split()
    ours = {m.removeprefix("lstmae_jax.") for m in loaded if m.startswith("lstmae_jax.")}
    command = {"cli", "cli.entry", "cli.score"}  # the command's flags: not the API's
    assert ours == (_scorer_modules() - command) | {"api"}  # the scoring pass, and this module
    assert not {m.split(".")[0] for m in loaded} & {"flax", "optax", "orbax"}


def test_calibrate_moves_the_threshold_to_the_target_fpr(detector, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    os.makedirs(tmp_path / "tmp")
    shipped = tmp_path / "shipped"
    detector.export(str(shipped))
    det = lstmae_jax.load(str(shipped))
    benign = timeline.generate(1500, seed=11, attack_fraction=0.0)
    assert det.calibrate(benign, target_fpr=0.05) == det.threshold != detector.threshold
    assert os.listdir(tmp_path / "tmp") == []  # nothing left behind
    result = det.calibration_
    assert result["threshold"]["calibrated_on"].startswith(
        f"{result['windows_used']} benign windows of the input table (1500 rows)"
    )
    scored = det.score(benign).filter(pc.field("status") == "scored")
    rate = pc.mean(scored.column("alert").cast(pa.float64())).as_py()
    assert rate == pytest.approx(result["threshold"]["params"]["benign_fpr"], abs=1e-9)
    assert rate <= 0.05 and result["windows_used"] == scored.num_rows
    assert artifact.load(str(shipped)).threshold == detector.threshold  # untouched
    det.export(str(tmp_path / "again"))  # the calibrated artifact ships
    assert lstmae_jax.load(str(tmp_path / "again")).threshold == det.threshold
    with pytest.raises(RuntimeError, match="no training config"):
        det.fit(benign)
    assert det.infer_threshold(benign, fpr=0.1) is det  # alibi-detect's name
    assert det.threshold < result["threshold"]["value"]


def test_a_refused_fit_changes_nothing(detector):
    """A second fit on the same workdir with other data is refused before training, and
    the workdir's copies of the first fit's data are what they were (a later evaluate
    still finds the run's data); a fit killed while they were set aside gets them back."""
    from lstmae_jax.data import inputs

    work = detector.workdir
    before = {
        (name, f): open(os.path.join(work, name, f), "rb").read()
        for name in ("inputs", "data")
        for f in os.listdir(os.path.join(work, name))
    }
    run = os.path.join(work, "stage1")
    data = ",".join(sorted(inputs.load(run)["files"]))
    assert inputs.mismatch(run, data, data) is None
    other = timeline.generate(900, seed=7)
    with pytest.raises(ValueError, match="was started on other data"):
        detector.fit(other)
    after = {
        (name, f): open(os.path.join(work, name, f), "rb").read()
        for name in ("inputs", "data")
        for f in os.listdir(os.path.join(work, name))
    }
    assert after == before
    assert not [n for n in os.listdir(work) if n.startswith(".previous-")]
    assert inputs.mismatch(run, data, data) is None
    # Killed with the copies aside (and a half-written new one in place): the next fit,
    # refused again, puts the old ones back.
    os.replace(os.path.join(work, "inputs"), os.path.join(work, ".previous-inputs"))
    os.makedirs(os.path.join(work, "inputs"))
    open(os.path.join(work, "inputs", "table.parquet"), "wb").write(b"half")
    with pytest.raises(ValueError, match="was started on other data"):
        detector.fit(other)
    assert (
        open(os.path.join(work, "inputs", "table.parquet"), "rb").read()
        == before[("inputs", "table.parquet")]
    )


def test_bad_arguments_are_one_clear_error(detector, tmp_path):
    with pytest.raises(TypeError, match="unknown Config fields"):
        lstmae_jax.Detector(windw=4)
    with pytest.raises(TypeError, match="fit\\(\\) sets these"):
        lstmae_jax.Detector(data="x.parquet")
    with pytest.raises(ValueError, match="--window=0 is out of range"):
        lstmae_jax.Detector(window=0)
    with pytest.raises(RuntimeError, match="not fitted"):
        lstmae_jax.Detector(str(tmp_path)).score("x.csv")
    with pytest.raises(TypeError, match="a pandas DataFrame or a 2-D numpy array"):
        detector.score({"flow_duration": [1.0]})
    with pytest.raises(TypeError, match="a numpy array needs feature_names="):
        detector.score(np.zeros((3, 4)))
    lacking = timeline.generate(50, seed=2).drop_columns(["flow_duration"])  # canonical names
    with pytest.raises(ValueError, match="^the input table: lacks .*'flow_duration'"):
        detector.score(lacking)


# ------------------------------------------------------------ PyOD and alibi-detect habits


def _pyod_like(detector):
    """PyOD's own rules, where pyod is installed (the benchmarks' peers extra): its
    ``BaseDetector`` with our fit data's scores and threshold."""
    base = pytest.importorskip("pyod.models.base")

    class Fitted(base.BaseDetector):
        def __init__(self, contamination):
            super().__init__(contamination=contamination)

        def fit(self, X, y=None):
            return self

        def decision_function(self, X):
            return X

    ref = detector.decision_scores_
    ref = ref[~np.isnan(ref)]
    pyod = Fitted(
        contamination=float(detector.labels_[~np.isnan(detector.decision_scores_)].mean())
    )
    pyod.decision_scores_, pyod.threshold_ = ref, detector.threshold_
    pyod.labels_ = (ref > detector.threshold_).astype(int)
    pyod._mu, pyod._sigma, pyod._classes = ref.mean(), ref.std(), 2
    return pyod


def test_the_fitted_attributes_are_pyods(detector, dirty):
    scores, labels = detector.decision_scores_, detector.labels_
    assert scores.shape == labels.shape == (3000,)  # one per row of the fit data
    assert np.isnan(scores[:3]).all() and np.isnan(scores).mean() < 0.05  # window 4, dirty rows
    assert labels.dtype == np.int8 and labels.sum() == (scores > detector.threshold_).sum()
    assert detector.threshold_ == detector.threshold
    assert detector.n_features_in_ == len(detector.feature_names_in_) == len(detector.features)

    table, _ = dirty
    got = detector.decision_function(table)
    scored = ~np.isnan(got)
    for method in ("linear", "unify"):
        probs, conf = detector.predict_proba(table, method=method, return_confidence=True)
        assert probs.shape == (table.num_rows, 2)
        assert np.isnan(probs[~scored]).all() and np.isnan(conf[~scored]).all()
        assert np.allclose(probs[scored].sum(axis=1), 1.0)
        assert ((probs[scored] >= 0) & (probs[scored] <= 1)).all()
        order = np.argsort(got[scored])  # the outlier probability rises with the score
        assert (np.diff(probs[scored][order, 1]) >= -1e-12).all()
    labels, conf = detector.predict(table, return_confidence=True)
    assert (labels == detector.predict(table)).all()
    assert np.array_equal(conf, detector.predict_confidence(table), equal_nan=True)
    assert ((conf[scored] >= 0) & (conf[scored] <= 1)).all()

    pyod = _pyod_like(detector)  # skips here without pyod: the rules as PyOD computes them
    x = got[scored]
    for method in ("linear", "unify"):
        want = pyod.predict_proba(x, method=method)
        assert np.allclose(detector.predict_proba(table, method=method)[scored], want, atol=1e-9)
    np.testing.assert_allclose(conf[scored], pyod.predict_confidence(x), atol=1e-9)


def test_sklearn_clone_and_params():
    base = pytest.importorskip("sklearn.base")
    det = lstmae_jax.Detector(window=5, encoder_sizes=(16, 8), contamination=0.05, verbose=0)
    twin = base.clone(det)
    assert twin.get_params() == det.get_params() and twin is not det
    assert twin.config == det.config and twin.config.target_fpr == 0.05
    assert twin.set_params(window=7) is twin and twin.config.window == 7 and det.config.window == 5
    with pytest.raises(ValueError, match="give one of the two rules"):
        lstmae_jax.Detector(contamination=0.05, threshold="quantile")
    with pytest.raises(ValueError, match=r"PyOD's range is \(0, 0.5\]"):
        lstmae_jax.Detector(contamination=0.7)
    with pytest.raises(TypeError, match="unknown Config fields"):
        twin.set_params(windw=3)


def test_options_are_typed_at_construction():
    for given, says in [
        ({"window": "4"}, "window takes a whole number, got str"),
        ({"window": 2.5}, "window takes a whole number, got float"),
        ({"window": True}, "window takes a whole number, got bool"),
        ({"encoder_sizes": 8}, r"encoder_sizes takes a tuple of whole numbers, e.g. \(64, 32\)"),
        ({"learning_rate": "1e-3"}, "learning_rate takes a number, got str"),
        ({"tensorboard": 1}, "tensorboard takes True or False, got int"),
        ({"members": "log:sse"}, "members takes a tuple of strings"),
        ({"workdir": 3}, "a path or None"),
    ]:
        with pytest.raises(TypeError, match=says):
            lstmae_jax.Detector(**given)
    with pytest.raises(ValueError, match="verbose=3"):
        lstmae_jax.Detector(verbose=3)
    assert lstmae_jax.Detector(window=np.int64(6), learning_rate=1).config.window == 6


def test_numpy_y_and_the_lifecycle(tmp_path, monkeypatch, capfd):
    """``fit_predict(X, y)`` on a numpy array with ``feature_names=`` and PyOD's 0/1
    labels, silent at ``verbose=0``; the temporary workdir goes with ``with``; a
    detector never fitted makes nothing."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    flows = timeline.generate(1500, seed=3).to_pandas()
    y = (flows.pop("label") != schema.BENIGN).astype(int).to_numpy()
    X = flows.to_numpy()  # object: numbers, and the timestamps as text
    lstmae_jax.Detector()  # never fitted: no folder
    assert os.listdir(tmp_path) == []
    with lstmae_jax.Detector(verbose=0, **SMOKE) as det:
        labels = det.fit_predict(X, y, feature_names=list(flows.columns), stage2=True)
        work = det.workdir
        assert os.path.dirname(work) == str(tmp_path) and os.listdir(tmp_path) == [
            os.path.basename(work)
        ]
        assert det.classes == [schema.BENIGN, "Attack"]  # PyOD's 1 = outlier
        assert np.array_equal(labels, det.labels_) and labels.shape == (1500,)
        same = det.decision_function(X, feature_names=list(flows.columns))
        assert np.array_equal(same, det.decision_scores_, equal_nan=True)
    assert os.listdir(tmp_path) == []  # the temporary workdir is gone ...
    assert np.array_equal(det.decision_function(flows), same, equal_nan=True)  # ... it scores
    err = capfd.readouterr().err
    assert "lstmae_jax:" not in err and "INFO" not in err, err[-2000:]
    assert np.array_equal(det.decision_function(X), same, equal_nan=True)  # fit's names
    assert det.infer_threshold(X, fpr=0.05) is det  # numpy, alibi-detect's way
    assert det.calibration_["windows_used"] > 1000
    with pytest.raises(TypeError, match="needs feature_names="):
        det.decision_function(X[:, :5])
    with pytest.raises(ValueError, match="one label per row, 1500 rows"):
        lstmae_jax.Detector(verbose=0).fit(X, y[:10], feature_names=list(flows.columns))


def test_verbose_1_says_each_epoch(tmp_path, capfd):
    train = timeline.generate(1500, seed=4)
    lstmae_jax.Detector(str(tmp_path / "run"), **SMOKE).fit(train)
    err = capfd.readouterr().err
    epochs = [line for line in err.splitlines() if "epoch " in line and "lstmae_jax:" in line]
    assert len(epochs) == 4, err  # 2 epochs, 2 stages
    assert re.search(r"epoch 2/2: step \d+/\d+, [\d,]+ windows/s, loss [\d.e+-]+, val_loss", err)
    assert "ETA <=" in err and "lstmae_jax: stage 2: the attack classifier" in err


def test_mixed_and_bad_columns_are_the_projects_errors(detector):
    frame = timeline.generate(300, seed=8).to_pandas()
    duration = frame["flow_duration"].astype(object)
    duration[10], duration[11] = "abc", "12.5"  # text among numbers: read as a CSV reads it
    frame["flow_duration"] = duration
    label = frame["label"].astype(object)
    label[5] = 3  # a number among the class names
    frame["label"] = label
    result = detector.score(frame)
    assert (
        result.loc[10, "status"] == "dropped"
        and result.loc[10, "reason"] == "unparsable in flow_duration"
    )
    assert result.loc[11, "status"] == "scored"  # "12.5" is a number
    complex_ = timeline.generate(50, seed=8).to_pandas()
    complex_["flow_duration"] = complex_["flow_duration"].astype(complex)
    with pytest.raises(
        ValueError, match=r"^the input table: column 'flow_duration' holds complex numbers \(row 0"
    ):
        detector.score(complex_)
    with pytest.raises(ValueError, match=r"numpy array of flows is 2-D"):
        detector.score(np.zeros(4))


def test_logs_name_the_callers_table(detector, dirty, caplog):
    table, _ = dirty
    with caplog.at_level("INFO", logger="absl"):
        detector.score(table)
    said = [r.getMessage() for r in caplog.records]
    assert any("the input table" in m for m in said), said
    assert not any(api_table in m for m in said for api_table in ("table.parquet",)), said
