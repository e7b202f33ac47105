"""Scoring files and live streams with the artifact (deploy.stream, deploy.output,
deploy.recalibrate and launch/score.py)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lstmae_jax import atomic, compiler, console
from lstmae_jax.data import dataset, windows
from lstmae_jax.deploy import artifact, output, recalibrate, stream
from lstmae_jax.ingest import convert, reader
from lstmae_jax.synthetic import timeline

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCORE = os.path.join(REPO, "launch", "score.py")
# Run launch/score.py with the training stack unimportable: the scorer must not need it.
NO_TRAINING = (
    "import sys, runpy\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('flax', 'optax', 'orbax'):\n"
    "            raise ImportError(f'{name} is blocked: the scorer must not import it')\n"
    "sys.meta_path.insert(0, Block())\n"
    "sys.argv = ['score.py'] + sys.argv[1:]\n"
    "import atexit, os\n"
    "if os.environ.get('MODULES_OUT'):\n"
    "    atexit.register(lambda: open(os.environ['MODULES_OUT'], 'w').write("
    "'\\n'.join(sorted(sys.modules))))\n"
    f"runpy.run_path({SCORE!r}, run_name='__main__')\n"
)
# The project modules the scorer may load: no model, training or checkpoint code.
SCORER_MODULES = {  # and the package folders they live in (their __init__ is a docstring)
    "atomic", "compiler", "console",
    "cli", "cli.entry", "cli.score",  # the command: absl flags, main, run
    "data", "data.dataset", "data.windows",  # the scaler's arrays and the window cut
    "deploy", "deploy.artifact", "deploy.output", "deploy.recalibrate", "deploy.stream",
    "detect", "detect.anomaly", "detect.detector", "detect.metrics",  # the members' arrays
    "ingest", "ingest.clean", "ingest.rawparse", "ingest.reader", "ingest.schema",
}  # fmt: skip


@pytest.fixture(scope="module")
def flows_csv(tmp_path_factory):
    """Held-back flows (another seed than training) as a CSE-CIC-IDS2018-style CSV."""
    path = tmp_path_factory.mktemp("flows") / "held_back.csv"
    timeline.write(timeline.generate(1200, seed=7), str(path), style="csecicids2018")
    return path


def _score(scorer, path, out, **kw):
    live = kw.get("follow", False)
    writer = output.AlertWriter(str(out), output.output_schema(scorer.classes), live=live)
    summary, _ = stream.score_files(scorer, str(path), writer, **kw)
    return summary


def _read(path):
    if str(path).endswith(".parquet"):
        return pq.read_table(path).to_pylist()
    # A live output may end in a line being written: only whole lines are records.
    return [json.loads(line) for line in open(path) if line.endswith("\n")]


def _rows_so_far(path) -> int:
    """Complete rows of a ``.jsonl`` a live scorer is still appending to (its last line
    may be half-written at the moment it is read)."""
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as f:
        return f.read().count(b"\n")


def test_scores_equal_the_artifact_on_the_cleaned_windows(artifact_dir, flows_csv, tmp_path):
    scorer = artifact.load(str(artifact_dir))
    summary = _score(scorer, flows_csv, tmp_path / "a.parquet")
    rows = _read(tmp_path / "a.parquet")
    # The reference: the converter's cleaning, then every window of the file.
    convert.convert([str(flows_csv)], str(tmp_path / "pq"))
    flows = dataset.load_flows(str(tmp_path / "pq"), features=scorer.features)
    t = scorer.window
    starts = np.arange(len(flows) - t + 1)
    ref = scorer(windows.gather(flows.x_NxF, starts, t))
    assert len(rows) == len(starts) == summary["windows_scored"]
    np.testing.assert_allclose([r["score"] for r in rows], ref["score_B"], rtol=1e-5)
    assert [r["alert"] for r in rows] == ref["flagged_B"].tolist()
    labels = flows.classes
    assert [r["label"] for r in rows] == [labels[c] for c in flows.label_N[starts + t - 1]]
    first = rows[0]
    assert first["file"] == str(flows_csv) and first["row"] == t + 1  # header = line 1
    assert first["timestamp"] and first["top1"] in scorer.features
    assert first["predicted"] in scorer.classes and 0 < first["probability"] <= 1
    assert summary["alerts"] == sum(r["alert"] for r in rows)
    assert set(summary["by_true_label"]) == set(labels[c] for c in flows.label_N[starts + t - 1])
    assert sum(summary["alerts_by_predicted_class"].values()) == summary["alerts"]
    assert summary["flows_per_second"] > 0


def test_rows_are_those_of_one_uncompiled_batch_at_a_time(
    artifact_dir, flows_csv, tmp_path, monkeypatch
):
    """The pipelined pass (the compiled call, batch k+1 dispatched before batch k is read
    back) writes the rows, bit for bit, of the pass before it: each batch of ``BATCH``
    windows padded and sent through ``Exported.call``, and read back, one at a time.
    Both under XLA's default options (``Exported.call`` alone compiles with those; the
    project's, `compiler.options`, only change matmul rounding: tests/test_compiler.py)."""
    monkeypatch.setattr(compiler, "options", lambda: {})
    scorer = artifact.load(str(artifact_dir))
    summary = _score(scorer, flows_csv, tmp_path / "a.parquet")
    rows = _read(tmp_path / "a.parquet")
    convert.convert([str(flows_csv)], str(tmp_path / "pq"))
    flows = dataset.load_flows(str(tmp_path / "pq"), features=scorer.features)
    x = windows.gather(flows.x_NxF, np.arange(len(flows) - scorer.window + 1), scorer.window)
    score, alert, top1 = [], [], []
    for i in range(0, len(x), stream.BATCH):
        padded = np.zeros((stream.BATCH, *x.shape[1:]), np.float32)
        padded[: len(x[i : i + stream.BATCH])] = x[i : i + stream.BATCH]
        out = {k: np.asarray(v) for k, v in scorer._exported.call(padded, scorer.params).items()}
        n = min(stream.BATCH, len(x) - i)
        score += out["score_B"][:n].tolist()
        alert += out["flagged_B"][:n].tolist()
        top1 += [scorer.features[j] for j in out["contrib_BxF"][:n].argmax(axis=1)]
    assert len(x) > 2 * stream.BATCH  # several batches, one in flight behind another
    assert [r["score"] for r in rows] == score
    assert [r["alert"] for r in rows] == alert and [r["top1"] for r in rows] == top1
    stages = summary["seconds_by_stage"]
    assert set(stages) == {"read", "clean", "input_wait", "window", "compile", "device", "write"}
    assert all(v >= 0 for v in stages.values()) and stages["device"] > 0


def test_chunk_size_does_not_change_the_result(artifact_dir, flows_csv, tmp_path, monkeypatch):
    scorer = artifact.load(str(artifact_dir))
    taken, take = [], stream.Run._take  # the windows of each batch

    def counted(run, *args):
        parts, n = take(run, *args)
        taken.append(n)
        return parts, n

    monkeypatch.setattr(stream.Run, "_take", counted)
    _score(scorer, flows_csv, tmp_path / "one.jsonl")
    assert taken[:2] == [stream.BATCH] * 2
    taken.clear()
    _score(scorer, flows_csv, tmp_path / "many.jsonl", block_size=500)  # ~1 flow a chunk
    # ... each chunk's windows needing window - 1 flows more: a batch's flows fill first.
    assert 0 < taken[0] < stream.BATCH
    one, many = _read(tmp_path / "one.jsonl"), _read(tmp_path / "many.jsonl")
    assert len(one) > 1000 and one == many


def test_parquet_and_csv_inputs_score_alike(artifact_dir, flows_csv, tmp_path, monkeypatch):
    scorer = artifact.load(str(artifact_dir))
    table = timeline.generate(1200, seed=7)
    timeline.write(table, str(tmp_path / "held_back.parquet"), style="csecicids2018")
    _score(scorer, flows_csv, tmp_path / "csv.jsonl")
    _score(scorer, tmp_path / "held_back.parquet", tmp_path / "pq.jsonl")
    a, b = _read(tmp_path / "csv.jsonl"), _read(tmp_path / "pq.jsonl")
    assert [r["score"] for r in a] == [r["score"] for r in b]
    assert [r["row"] for r in a] == [r["row"] + 1 for r in b]  # CSV lines count the header
    monkeypatch.setattr(reader, "PARQUET_BATCH_ROWS", 97)  # windows across Parquet chunks
    _score(scorer, tmp_path / "held_back.parquet", tmp_path / "pq97.jsonl")
    assert _read(tmp_path / "pq97.jsonl") == b


def test_missing_feature_columns_are_named(artifact_dir, flows_csv, tmp_path):
    scorer = artifact.load(str(artifact_dir))
    lines = flows_csv.read_text().splitlines()
    header = lines[0].split(",")
    drop = header.index("Flow Duration")
    cut = [",".join(c for i, c in enumerate(line.split(",")) if i != drop) for line in lines]
    bad = tmp_path / "no_duration.csv"
    bad.write_text("\n".join(cut) + "\n")
    good = tmp_path / "zz_good.csv"
    good.write_bytes(flows_csv.read_bytes())
    summary = _score(scorer, f"{tmp_path}/*.csv", tmp_path / "x.jsonl")
    (error,) = summary["files_failed"].values()
    assert error.startswith(f"{bad}: lacks feature columns") and "'Flow Duration'" in error
    rows = _read(tmp_path / "x.jsonl")  # one bad file does not cost the others their rows
    assert len(rows) > 1000 and {r["file"] for r in rows} == {str(good)}


def test_non_finite_and_negative_values_follow_the_cleaning_policy(
    artifact_dir, flows_csv, tmp_path
):
    scorer = artifact.load(str(artifact_dir))
    assert scorer.meta["cleaning"] == {"nonfinite": "drop", "negative": "clamp"}
    lines = flows_csv.read_text().splitlines()
    header = lines[0].split(",")
    rate, dur = header.index("Flow Byts/s"), header.index("Flow Duration")
    for k, value, col in ((5, "Infinity", rate), (6, "NaN", rate), (7, "-1", dur)):
        cells = lines[k].split(",")
        cells[col] = value
        lines[k] = ",".join(cells)
    dirty = tmp_path / "dirty.csv"
    dirty.write_text("\n".join(lines) + "\n")
    summary = _score(scorer, dirty, tmp_path / "d.jsonl")
    assert summary["cleaning"]["dropped"]["nonfinite"] >= 2
    assert summary["cleaning"]["fixed"]["flow_duration:negative->0"] >= 1
    rows = _read(tmp_path / "d.jsonl")
    assert all(np.isfinite(r["score"]) for r in rows)
    assert 5 + 1 not in {r["row"] for r in rows}  # the dropped flow's line ends no window


def test_follow_scores_a_growing_csv_as_it_grows(artifact_dir, flows_csv, tmp_path):
    scorer = artifact.load(str(artifact_dir))
    lines = flows_csv.read_text().splitlines(keepends=True)
    live = tmp_path / "live.csv"
    live.write_text("".join(lines[:50]))
    stop = console.Stop()
    result = {}

    def follow():
        result["summary"] = _score(
            scorer, live, tmp_path / "live.jsonl", follow=True, poll_seconds=0.05, stop=stop
        )

    thread = threading.Thread(target=follow)
    thread.start()
    with open(live, "a") as f:  # CICFlowMeter appends flows; the last line comes in halves
        for i in range(50, len(lines) - 1, 137):
            f.write("".join(lines[i : min(i + 137, len(lines) - 1)]))
            f.flush()
            time.sleep(0.05)
        half = len(lines[-1]) // 2
        f.write(lines[-1][:half])
        f.flush()
        time.sleep(0.3)  # a poll sees the partial line and must wait for its newline
        f.write(lines[-1][half:])
    _score(scorer, flows_csv, tmp_path / "once.jsonl")
    expected = len(_read(tmp_path / "once.jsonl"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _rows_so_far(tmp_path / "live.jsonl") < expected:
        time.sleep(0.1)
    stop.set()
    thread.join(timeout=60)
    assert not thread.is_alive()
    live_rows = [{**r, "file": None} for r in _read(tmp_path / "live.jsonl")]
    once_rows = [{**r, "file": None} for r in _read(tmp_path / "once.jsonl")]
    assert live_rows == once_rows
    assert result["summary"]["latency_ms"]["max"] >= result["summary"]["latency_ms"]["p50"] > 0


def test_follow_picks_up_new_files_in_a_directory(artifact_dir, flows_csv, tmp_path):
    scorer = artifact.load(str(artifact_dir))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    stop = console.Stop()
    thread = threading.Thread(
        target=_score,
        args=(scorer, inbox, tmp_path / "dir.jsonl"),
        kwargs={"follow": True, "poll_seconds": 0.05, "stop": stop},
    )
    thread.start()
    time.sleep(0.3)
    tmp = inbox / ".partial"
    tmp.write_bytes(flows_csv.read_bytes())
    os.replace(tmp, inbox / "a.csv")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _rows_so_far(tmp_path / "dir.jsonl") <= 1000:
        time.sleep(0.1)
    stop.set()
    thread.join(timeout=60)
    rows = _read(tmp_path / "dir.jsonl")
    assert len(rows) > 1000 and {r["file"] for r in rows} == {str(inbox / "a.csv")}


def _run_score(*args, timeout=240, env_extra=None):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env_extra or {})}
    env.pop("XLA_FLAGS", None)
    return subprocess.run(
        [sys.executable, "-c", NO_TRAINING, *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO,
    )  # fmt: skip


def test_launcher_scores_without_training_code(artifact_dir, flows_csv, tmp_path):
    out, modules = tmp_path / "alerts.parquet", tmp_path / "modules.txt"
    proc = _run_score(
        f"--model={artifact_dir}", f"--input={flows_csv}", f"--output={out}",
        env_extra={"MODULES_OUT": str(modules)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = modules.read_text().split()
    ours = {m.removeprefix("lstmae_jax.") for m in loaded if m.startswith("lstmae_jax.")}
    assert ours == SCORER_MODULES
    assert not {m.split(".")[0] for m in loaded} & {"flax", "optax", "orbax", "torch"}
    summary = json.loads((tmp_path / "alerts.parquet.summary.json").read_text())
    assert summary["windows_scored"] == pq.read_metadata(out).num_rows > 1000
    assert "alerts_by_predicted_class" in summary and "by_true_label" in summary
    assert "flows/s" in proc.stderr  # the progress line
    bad = _run_score(f"--model={tmp_path}", f"--input={flows_csv}", f"--output={out}")
    assert bad.returncode == 1 and "MANIFEST.json: missing" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_live_mode_stops_cleanly_on_sigterm(artifact_dir, flows_csv, tmp_path):
    lines = flows_csv.read_text().splitlines(keepends=True)
    live, out = tmp_path / "live.csv", tmp_path / "live.jsonl"
    (tmp_path / "ref.csv").write_text("".join(lines[:400]))
    _score(artifact.load(str(artifact_dir)), tmp_path / "ref.csv", tmp_path / "ref.jsonl")
    expected = [{**r, "file": None} for r in _read(tmp_path / "ref.jsonl")]
    live.write_text("".join(lines[:20]))
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", NO_TRAINING, f"--model={artifact_dir}", f"--input={live}",
         f"--output={out}", "--follow", "--poll_seconds=0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    try:
        with open(live, "a") as f:  # another process appends as CICFlowMeter would
            f.write("".join(lines[20:400]))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if out.exists() and len(out.read_text().splitlines()) >= len(expected):
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    rows = _read(out)  # every line whole
    assert [{**r, "file": None} for r in rows] == expected
    summary = json.loads((tmp_path / "live.jsonl.summary.json").read_text())
    assert "windows scored" in stdout  # the closing lines
    assert summary["stopped_by"] == "SIGTERM" and summary["windows_scored"] == len(rows)
    assert summary["latency_ms"]["p50"] > 0


def test_recalibration_writes_a_new_verified_artifact(artifact_dir, tmp_path):
    benign = timeline.generate(1500, seed=11, attack_fraction=0.0)
    path = timeline.write(benign, str(tmp_path / "benign.csv"), style="csecicids2018")
    new = tmp_path / "recalibrated"
    proc = _run_score(
        f"--model={artifact_dir}", f"--calibrate={path}", "--target_fpr=0.05",
        f"--output_model={new}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout[proc.stdout.index("{") :])
    scorer = artifact.load(str(new))
    old = artifact.load(str(artifact_dir))
    assert scorer.threshold == result["threshold"]["value"] != old.threshold
    assert result["threshold"]["params"]["benign_fpr"] <= 0.05
    assert "benign windows of" in scorer.meta["threshold"]["calibrated_on"]
    assert (new / artifact.ARTIFACT).read_bytes() == (artifact_dir / artifact.ARTIFACT).read_bytes()
    # The new threshold does what it says on those flows.
    _score(scorer, path, tmp_path / "b.jsonl")
    rows = _read(tmp_path / "b.jsonl")
    assert result["windows_used"] == len(rows) > 1000 and result["windows_left_out"] == 0
    flagged = np.mean([r["alert"] for r in rows])
    assert flagged == pytest.approx(result["threshold"]["params"]["benign_fpr"], abs=1e-9)
    same = _run_score(
        f"--model={artifact_dir}", f"--calibrate={path}", f"--output_model={artifact_dir}"
    )
    assert same.returncode == 1 and "is the input model" in same.stderr


def _follow(scorer, inputs, out, stop):
    thread = threading.Thread(
        target=_score,
        args=(scorer, inputs, out),
        kwargs={"follow": True, "poll_seconds": 0.05, "stop": stop},
    )
    thread.start()
    return thread


def _wait_rows(out, n, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _rows_so_far(out) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{out}: fewer than {n} rows after {seconds} s")


def test_a_rotated_csv_starts_fresh_windows(artifact_dir, flows_csv, tmp_path):
    # CICFlowMeter rotation: the file is replaced by one holding only the header at first.
    scorer = artifact.load(str(artifact_dir))
    lines = flows_csv.read_text().splitlines(keepends=True)
    live, out = tmp_path / "live.csv", tmp_path / "live.jsonl"
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "first.csv").write_text("".join(lines[:200]))
    (tmp_path / "ref" / "second.csv").write_text(lines[0] + "".join(lines[500:700]))
    first = _score(scorer, tmp_path / "ref" / "first.csv", tmp_path / "r1.jsonl")
    second = _score(scorer, tmp_path / "ref" / "second.csv", tmp_path / "r2.jsonl")
    live.write_text("".join(lines[:200]))
    stop = console.Stop()
    thread = _follow(scorer, live, out, stop)
    try:
        _wait_rows(out, first["windows_scored"])
        (tmp_path / "new.csv").write_text(lines[0])
        os.replace(tmp_path / "new.csv", live)  # another inode, header only
        time.sleep(0.3)
        with open(live, "a") as f:
            f.write("".join(lines[500:700]))
        _wait_rows(out, first["windows_scored"] + second["windows_scored"])
    finally:
        stop.set()
        thread.join(timeout=60)
    rows = [{**r, "file": None} for r in _read(out)]
    expected = [
        {**r, "file": None} for r in _read(tmp_path / "r1.jsonl") + _read(tmp_path / "r2.jsonl")
    ]
    assert rows == expected  # no window reaches across the rotation


def test_live_mode_survives_deleted_and_half_written_files(artifact_dir, flows_csv, tmp_path):
    scorer = artifact.load(str(artifact_dir))
    inbox, out = tmp_path / "inbox", tmp_path / "dir.jsonl"
    inbox.mkdir()
    timeline.write(timeline.generate(600, seed=8), str(tmp_path / "whole.parquet"))
    whole = (tmp_path / "whole.parquet").read_bytes()
    stop = console.Stop()
    thread = _follow(scorer, inbox, out, stop)
    try:
        (inbox / "a.csv").write_bytes(flows_csv.read_bytes())
        _wait_rows(out, 1000)
        (inbox / "a.csv").unlink()  # rotated away: dropped, no crash
        (inbox / "b.parquet").write_bytes(whole[: len(whole) // 2])  # still being written
        time.sleep(0.5)
        (inbox / "b.parquet").write_bytes(whole)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            r["file"].endswith("b.parquet") for r in _read(out)
        ):
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()
    files = {r["file"] for r in _read(out)}
    assert files == {str(inbox / "a.csv"), str(inbox / "b.parquet")}


def test_empty_label_cells_are_unlabelled_flows_not_dropped(artifact_dir, flows_csv, tmp_path):
    scorer = artifact.load(str(artifact_dir))
    lines = flows_csv.read_text().splitlines()
    assert lines[0].rstrip().endswith("Label")
    blank = [lines[0]] + [line[: line.rindex(",") + 1] for line in lines[1:300]]
    (tmp_path / "blank.csv").write_text("\n".join(blank) + "\n")
    (tmp_path / "full.csv").write_text("\n".join(lines[:300]) + "\n")
    a = _score(scorer, tmp_path / "blank.csv", tmp_path / "a.jsonl")
    b = _score(scorer, tmp_path / "full.csv", tmp_path / "b.jsonl")
    assert a["windows_scored"] == b["windows_scored"] and "by_true_label" not in a
    assert [r["score"] for r in _read(tmp_path / "a.jsonl")] == [
        r["score"] for r in _read(tmp_path / "b.jsonl")
    ]


# -- issue 16: nothing a user already has is lost or silently wrong


def test_an_output_that_is_an_input_is_refused_before_reading(artifact_dir, flows_csv, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    flows = inbox / "f.parquet"
    timeline.write(timeline.generate(300, seed=3), str(flows))
    before = flows.read_bytes()
    os.symlink(flows, tmp_path / "link.parquet")
    refused = {  # output -> input: each would replace an input or be read back as flows
        str(flows): str(flows),
        str(tmp_path / "link.parquet"): str(flows),
        str(inbox / "alerts.parquet"): str(inbox),
        str(inbox / "alerts.parquet") + "": str(inbox / "*.parquet"),
    }
    for out, inputs in refused.items():
        with pytest.raises(ValueError, match="--output"):
            stream.check_output(out, inputs)
    stream.check_output(str(inbox / "alerts.jsonl"), str(inbox))  # .jsonl is never input
    proc = _run_score(f"--model={artifact_dir}", f"--input={flows}", f"--output={flows}")
    assert proc.returncode == 1 and "is an input file" in proc.stderr.splitlines()[-1]
    assert "Traceback" not in proc.stderr and flows.read_bytes() == before


def _full_disk(monkeypatch):
    """Every temporary the scorer opens is /dev/full: each write fails with ENOSPC."""
    real = atomic.temporary

    def temporary(path):
        f, tmp = real(path)
        f.close()
        return open("/dev/full", "wb"), tmp

    monkeypatch.setattr(atomic, "temporary", temporary)


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_a_full_disk_keeps_the_earlier_output_and_its_summary(
    artifact_dir, flows_csv, tmp_path, monkeypatch, suffix
):
    scorer = artifact.load(str(artifact_dir))
    out = tmp_path / f"alerts{suffix}"
    _score(scorer, flows_csv, out)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    assert len(before) == 2  # the output and its summary
    _full_disk(monkeypatch)
    with pytest.raises(output.OutputError, match=r"No space left on device \(ENOSPC\)") as e:
        _score(scorer, flows_csv, out)
    assert str(out) in str(e.value) and "unchanged" in str(e.value)
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temporary left


def test_a_full_disk_ends_the_launcher_with_one_line(artifact_dir, flows_csv, tmp_path):
    out = tmp_path / "alerts.parquet"
    out.write_bytes(b"an earlier output")

    small_files = (  # a file-size limit: writes past 20 kB fail with EFBIG
        "import resource, signal\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, "-c", small_files + NO_TRAINING, f"--model={artifact_dir}",
         f"--input={flows_csv}", f"--output={out}"],
        capture_output=True, text=True, timeout=240, env=env, cwd=REPO,
    )  # fmt: skip
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and last.startswith(f"error: cannot write {out}"), proc.stderr[
        -2000:
    ]
    assert "(EFBIG)" in last and "Traceback" not in proc.stderr
    assert os.listdir(tmp_path) == ["alerts.parquet"] and out.read_bytes() == b"an earlier output"


def test_a_planted_symlink_at_the_old_temporary_name_is_not_followed(
    artifact_dir, flows_csv, tmp_path
):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    os.symlink(victim, tmp_path / f".alerts.parquet.{os.getpid()}.tmp")  # the old name
    _score(artifact.load(str(artifact_dir)), flows_csv, tmp_path / "alerts.parquet")
    assert victim.read_text() == "keep me" and len(_read(tmp_path / "alerts.parquet")) > 1000


def test_output_problems_are_one_line_and_stale_temporaries_go(artifact_dir, flows_csv, tmp_path):
    schema_ = output.output_schema(None)
    (tmp_path / "dir.parquet").mkdir()
    with pytest.raises(output.OutputError, match="is a directory"):
        output.AlertWriter(str(tmp_path / "dir.parquet"), schema_)
    stale = tmp_path / f".alerts.parquet.{2**22 + 1}.ab12cd.tmp"  # a killed --follow run's
    stale.write_bytes(b"partial")
    output.AlertWriter(str(tmp_path / "alerts.parquet"), schema_).abort()
    assert sorted(os.listdir(tmp_path)) == ["dir.parquet"]


def test_a_header_in_another_column_order_is_read_with_its_columns(
    artifact_dir, flows_csv, tmp_path
):
    # Issue 16: the rows after it were read with line 1's mapping; every window alerted.
    scorer = artifact.load(str(artifact_dir))
    lines = flows_csv.read_text().splitlines()

    def reverse(line):
        return ",".join(line.split(",")[::-1])

    mixed = [*lines[:600], reverse(lines[0]), *map(reverse, lines[600:])]
    (tmp_path / "mixed.csv").write_text("\n".join(mixed) + "\n")
    (tmp_path / "a.csv").write_text("\n".join(lines[:600]) + "\n")
    (tmp_path / "b.csv").write_text("\n".join([lines[0], *lines[600:]]) + "\n")
    got = _score(scorer, tmp_path / "mixed.csv", tmp_path / "m.jsonl")
    assert got["cleaning"]["fixed"].get("reordered_header") == 1
    assert got["cleaning"]["dropped"].get("repeated_header") == 1
    ref = [_score(scorer, tmp_path / n, tmp_path / f"{n}.jsonl") for n in ("a.csv", "b.csv")]
    scores = [r["score"] for r in _read(tmp_path / "m.jsonl")]
    a, b = (_read(tmp_path / f"{n}.jsonl") for n in ("a.csv", "b.csv"))
    # The windows of each part are those of its own file (plus the ones that span the header).
    assert scores[: len(a)] == [r["score"] for r in a]
    assert scores[-len(b) :] == [r["score"] for r in b]
    assert got["alerts"] <= ref[0]["alerts"] + ref[1]["alerts"] + scorer.window


def test_follow_restarts_a_file_rewritten_larger_within_one_poll(flows_csv, tmp_path):
    # Same inode, larger size: looked like an append, and the new content's first rows were
    # skipped. The bytes already read are compared, and the file starts over.
    lines = flows_csv.read_text().splitlines(keepends=True)
    path = tmp_path / "live.csv"
    path.write_text("".join(lines[:50]))
    features = ["flow_duration", "tot_fwd_pkts"]
    src = reader.Source(str(path), features, {"nonfinite": "drop", "negative": "clamp"})
    first = list(src.poll())
    assert sum(c.table.num_rows for c in first) == 49
    inode = os.stat(path).st_ino
    with open(path, "r+") as f:  # truncated and rewritten in place, larger
        f.truncate(0)
        f.write("".join([lines[0], *lines[300:400]]))
    assert os.stat(path).st_ino == inode
    chunks = list(src.poll())
    fresh = list(reader.Source(str(path), features, src.cleaning).poll())
    assert chunks[0].restart and not chunks[0].table.num_rows
    assert pa.concat_tables([c.table for c in chunks[1:]]).equals(
        pa.concat_tables([c.table for c in fresh])
    )  # the new content from its first flow, as a new reader reads it


def test_an_empty_input_is_refused_as_the_converter_refuses_it(artifact_dir, tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    summary = _score(artifact.load(str(artifact_dir)), tmp_path / "empty.csv", tmp_path / "a.jsonl")
    assert "empty file (0 bytes" in summary["files_failed"][str(tmp_path / "empty.csv")]
    with pytest.raises(ValueError, match="empty file \\(0 bytes"):
        convert.convert_file(str(tmp_path / "empty.csv"), str(tmp_path / "out"))


def test_recalibration_refuses_too_few_windows_and_an_existing_artifact(artifact_dir, tmp_path):
    scorer = artifact.load(str(artifact_dir))
    benign = timeline.generate(1500, seed=11, attack_fraction=0.0)
    path = timeline.write(benign, str(tmp_path / "benign.csv"), style="csecicids2018")
    with pytest.raises(ValueError, match=r"needs at least 10000 \(10 expected false positives"):
        recalibrate.calibrate(scorer, path, 0.001, str(tmp_path / "new"))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="exists and is not empty"):
        recalibrate.calibrate(scorer, path, 0.05, str(tmp_path / "taken"))
    with pytest.raises(ValueError, match="not a detector artifact's"):  # --overwrite or not
        recalibrate.calibrate(scorer, path, 0.05, str(tmp_path / "taken"), overwrite=True)
    assert os.listdir(tmp_path / "taken") == ["notes.txt"]
    recalibrate.calibrate(scorer, path, 0.05, str(tmp_path / "new"))
    with pytest.raises(ValueError, match="--overwrite"):
        recalibrate.calibrate(scorer, path, 0.05, str(tmp_path / "new"))
    result = recalibrate.calibrate(scorer, path, 0.02, str(tmp_path / "new"), overwrite=True)
    assert artifact.load(str(tmp_path / "new")).threshold == result["threshold"]["value"]


def test_recalibration_warns_when_the_threshold_moves_far(
    artifact_dir, tmp_path, caplog, monkeypatch
):
    scorer = artifact.load(str(artifact_dir))
    benign = timeline.generate(1500, seed=11, attack_fraction=0.0)
    path = timeline.write(benign, str(tmp_path / "benign.csv"), style="csecicids2018")
    caplog.set_level("WARNING")
    monkeypatch.setattr(recalibrate, "THRESHOLD_MOVE_WARNING", 1e30)
    recalibrate.calibrate(scorer, path, 0.05, str(tmp_path / "a"))
    assert not [r for r in caplog.records if "-fold" in r.getMessage()]
    monkeypatch.setattr(recalibrate, "THRESHOLD_MOVE_WARNING", 1.0 + 1e-12)  # any move is far
    result = recalibrate.calibrate(scorer, path, 0.05, str(tmp_path / "b"))
    (warning,) = [r.getMessage() for r in caplog.records if "-fold" in r.getMessage()]
    assert f"{result['threshold_moved']:.3g}-fold" in warning and "benign.csv" in warning


def test_input_that_vanishes_in_cleaning_is_a_warning_naming_the_column(
    artifact_dir, flows_csv, tmp_path
):
    # Issue 16: every row dropped as non-finite gave rc 0 and "0 windows" without a word.
    lines = flows_csv.read_text().splitlines()
    col = [c.strip() for c in lines[0].split(",")].index("Flow Duration")

    def nan(line):
        cells = line.split(",")
        cells[col] = "NaN"
        return ",".join(cells)

    (tmp_path / "nan.csv").write_text("\n".join([lines[0], *map(nan, lines[1:400])]) + "\n")
    summary = _score(artifact.load(str(artifact_dir)), tmp_path / "nan.csv", tmp_path / "a.jsonl")
    assert summary["windows_scored"] == 0
    assert summary["warning"] == (
        "399 of 399 rows (100%) dropped as nonfinite, 399 of them for column 'flow_duration'"
    )
    assert "warning: 399 of 399 rows" in stream.render(summary)


# -- found by probing after the issue-16 fixes (each failed before its fix)


def test_a_directory_in_the_way_of_the_summary_is_refused_before_anything(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"earlier")
    (tmp_path / "a.parquet.summary.json").mkdir()
    with pytest.raises(output.OutputError, match="a.parquet.summary.json is a directory"):
        output.AlertWriter(str(tmp_path / "a.parquet"), output.output_schema(None))
    assert (tmp_path / "a.parquet").read_bytes() == b"earlier"
    assert sorted(os.listdir(tmp_path)) == ["a.parquet", "a.parquet.summary.json"]


def test_a_stopped_batch_run_puts_its_rows_beside_an_earlier_output(
    artifact_dir, flows_csv, tmp_path
):
    scorer = artifact.load(str(artifact_dir))
    out = tmp_path / "a.parquet"
    _score(scorer, flows_csv, out)
    before = out.read_bytes()
    stop = console.Stop()
    stop.signal = "SIGTERM"
    stop.set()  # stopped before the first chunk: a partial (empty) run
    summary = _score(scorer, flows_csv, out, stop=stop)
    assert out.read_bytes() == before
    assert summary["output"] == str(tmp_path / "a.partial.parquet")
    assert pq.read_metadata(tmp_path / "a.partial.parquet").num_rows == 0
    assert (tmp_path / "a.partial.parquet.summary.json").exists()


def test_a_live_jsonl_deleted_or_rotated_is_started_again(tmp_path):
    out = tmp_path / "live.jsonl"
    schema_ = pa.schema([("score", pa.float32())])
    writer = output.AlertWriter(str(out), schema_, live=True)
    writer.write(pa.table({"score": [1.0]}, schema=schema_))
    os.rename(out, tmp_path / "live.jsonl.1")  # logrotate
    writer.write(pa.table({"score": [2.0]}, schema=schema_))
    out.unlink()  # deleted
    writer.write(pa.table({"score": [3.0]}, schema=schema_))
    writer.commit({})
    assert _read(tmp_path / "live.jsonl.1") == [{"score": 1.0}]
    assert _read(out) == [{"score": 3.0}]  # 2.0 went to the file deleted by the user


def test_a_second_live_scorer_on_one_jsonl_is_refused(tmp_path):
    schema_ = pa.schema([("score", pa.float32())])
    first = output.AlertWriter(str(tmp_path / "live.jsonl"), schema_, live=True)
    with pytest.raises(output.OutputError, match="another live scorer"):
        output.AlertWriter(str(tmp_path / "live.jsonl"), schema_, live=True)
    first.commit({})
    output.AlertWriter(str(tmp_path / "live.jsonl"), schema_, live=True).commit({})


def test_follow_reads_a_parquet_file_again_when_it_is_replaced(tmp_path):
    features = ["flow_duration", "tot_fwd_pkts"]
    cleaning = {"nonfinite": "drop", "negative": "clamp"}
    path = tmp_path / "x.parquet"
    timeline.write(timeline.generate(200, seed=1), str(path))
    src = reader.Source(str(path), features, cleaning)

    def settled():  # polls as live mode does, until the file has held still once
        return list(src.poll(settle=True)) + list(src.poll(settle=True))

    def rows(chunks):
        return sum(c.table.num_rows for c in chunks)

    def fresh():  # what a new reader reads from the file now
        return rows(reader.Source(str(path), features, cleaning).poll(final=True))

    assert rows(settled()) == fresh() > 150
    assert not settled()  # read once
    timeline.write(timeline.generate(300, seed=2), str(tmp_path / ".new"))
    os.replace(tmp_path / ".new", path)  # an atomic replacement
    chunks = settled()
    assert chunks[0].restart and rows(chunks) == fresh() > 250


def test_inputs_that_can_never_be_read_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory: nodir"):
        stream.check_inputs("nodir/*.csv", follow=True)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        stream.check_inputs(str(tmp_path / "nodir2") + os.sep, follow=True)
    os.mkfifo(tmp_path / "fifo.csv")
    with pytest.raises(ValueError, match="not a regular file"):
        stream.check_inputs(str(tmp_path / "fifo.csv"))
    timeline.write(timeline.generate(50, seed=1), str(tmp_path / "f.parquet"))
    os.rename(tmp_path / "f.parquet", tmp_path / "f.csv")
    src = reader.Source(str(tmp_path / "f.csv"), ["flow_duration"], {})
    with pytest.raises(ValueError, match="Parquet data in a file not named .parquet"):
        list(src.poll(final=True))


def test_the_rows_before_an_unreadable_header_are_scored(artifact_dir, flows_csv, tmp_path):
    scorer = artifact.load(str(artifact_dir))
    lines = flows_csv.read_text().splitlines()
    without = ",".join(c for c in lines[0].split(",") if c.strip() != "Flow Duration")
    (tmp_path / "f.csv").write_text("\n".join([*lines[:300], without, "1,2,3"]) + "\n")
    summary = _score(scorer, tmp_path / "f.csv", tmp_path / "a.jsonl")
    (error,) = summary["files_failed"].values()
    assert "f.csv: line 301" in error and "Flow Duration" in error
    (tmp_path / "head.csv").write_text("\n".join(lines[:300]) + "\n")
    head = _score(scorer, tmp_path / "head.csv", tmp_path / "h.jsonl")
    assert summary["windows_scored"] == head["windows_scored"] > 250  # the rows above it
    # A header inside a labelled file without the Label column: labels are optional.
    unlabelled = ",".join(c for c in lines[0].split(",") if c.strip() != "Label")
    rows = [",".join(r.split(",")[:-1]) for r in lines[300:600]]
    (tmp_path / "g.csv").write_text("\n".join([*lines[:300], unlabelled, *rows]) + "\n")
    summary = _score(scorer, tmp_path / "g.csv", tmp_path / "b.jsonl")
    assert "files_failed" not in summary and summary["flows_read"] == 600


def test_launcher_flags_that_cannot_work_are_refused(artifact_dir, flows_csv, tmp_path):
    out = tmp_path / "a.jsonl"
    busy = _run_score(
        f"--model={artifact_dir}", f"--input={flows_csv}", f"--output={out}", "--follow",
        "--poll_seconds=-1",
    )  # fmt: skip
    assert busy.returncode == 1 and "--poll_seconds must be > 0" in busy.stderr
    both = _run_score(
        f"--model={artifact_dir}", f"--calibrate={flows_csv}", f"--output_model={tmp_path}/m",
        f"--input={flows_csv}", f"--output={out}",
    )  # fmt: skip
    assert both.returncode == 1 and "drop --input, --output" in both.stderr
    assert not out.exists() and not (tmp_path / "m").exists()
