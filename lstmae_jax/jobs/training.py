"""One training job from a config: load, window, fit, calibrate (stage 1), summarize.

It writes the run directory ``rundir.run_name(cfg)`` of the workdir (the layout:
``rundir``); stage 2 starts from a finished stage 1's encoder, scaler and features.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable

import jax
import numpy as np
from absl import logging

from lstmae_jax import atomic, config
from lstmae_jax.config import Config
from lstmae_jax.data import dataset, inputs, shares, windows
from lstmae_jax.detect import calibration
from lstmae_jax.jobs import rundir
from lstmae_jax.train import collective, lock, loop, monitor


def _has_checkpoints(run_dir: str) -> bool:
    ckpt_dir = rundir.checkpoints(run_dir)
    return os.path.isdir(ckpt_dir) and any(n.isdigit() for n in os.listdir(ckpt_dir))


def check_inputs(cfg: Config, workdir: str) -> None:
    """Refuses (ValueError) ``cfg.data`` if ``workdir``'s run of ``cfg`` was started on
    other data (unless ``cfg.allow_data_change``); writes nothing. What ``train_job``
    checks first, for a caller that must know before it replaces files."""
    _check_inputs(cfg, rundir.path(workdir, rundir.run_name(cfg)), None, write=False)


def _check_inputs(cfg: Config, run_dir: str, stage1_dir: str | None, write: bool = True) -> None:
    """Fingerprints ``cfg.data``: a resume (and a stage 2) on other data than the run
    (stage 1) was started on is refused unless ``cfg.allow_data_change``."""
    now = inputs.fingerprints(cfg.data)
    resuming = _has_checkpoints(run_dir)
    changed = inputs.check_resume(
        run_dir, now, resuming=resuming, allow_change=cfg.allow_data_change
    )
    stage1_inputs = inputs.load(stage1_dir) if stage1_dir else None
    if stage1_inputs is not None and not cfg.allow_data_change:
        if diffs := inputs.differences(stage1_inputs, now):
            raise ValueError(
                f"stage 2's data is not what stage 1 in {stage1_dir} was trained on:"
                f" {inputs.summary(diffs)}; train stage 1 on it first (or pass"
                " --allow_data_change)"
            )
    if write and changed and jax.process_index() == 0:  # one writer across hosts
        inputs.save(run_dir, now)


def _check_classes(name: str, label_W: np.ndarray, classes) -> None:
    """A classifier trained on one class reaches loss 0 and answers that class always."""
    found = [classes[c] for c in np.unique(label_W)]
    if len(found) < 2:
        raise ValueError(
            f"{name}: the training windows hold one class ({', '.join(map(repr, found))}) in"
            f" {len(label_W)} windows; a classifier needs at least 2 classes (give it data"
            " with benign and attack flows)"
        )


def _all(cfg: Config, features, scalers) -> windows.Windowed:
    """All of ``cfg.data``, windowed, with its scalers (fitted, or stage 1's given)."""
    flows = dataset.load_flows(
        cfg.data, features=features, nonfinite=cfg.nonfinite, negative=cfg.negative
    )
    logging.info(
        "loaded %d flows, %d features, classes %s", len(flows), len(flows.features), flows.classes
    )
    return windows.for_config(cfg, flows, scalers=scalers)


def _share(cfg: Config, features, scalers) -> windows.Windowed:
    """``--share_data``: this process's share of ``cfg.data`` (``shares.plan``), with the
    classes, split and scaler of the whole list, agreed with the other processes."""
    p, parts = jax.process_index(), jax.process_count()
    try:
        files = dataset.list_parquet(cfg.data)
        flows = dataset.load_flows(
            files,
            features=features,
            nonfinite=cfg.nonfinite,
            negative=cfg.negative,
            row_groups=shares.plan(files, parts)[p],
        )
        mine = {"classes": flows.classes, "pieces": flows.pieces, "error": None}
    except (OSError, ValueError) as e:  # told to every process, or the others would wait
        mine = {"error": f"process {p}: {type(e).__name__}: {e}"}
    each = collective.allgather_json(mine)
    if errors := [e["error"] for e in each if e["error"]]:
        raise ValueError("--share_data: loading failed: " + "; ".join(errors))
    flows = shares.relabel(flows, shares.union_classes([e["classes"] for e in each]))
    pieces = [[tuple(piece) for piece in e["pieces"]] for e in each]
    split_N, piece_N = shares.split_codes(cfg.split, cfg.split_fractions, pieces, p)
    total = sum(n for mine in pieces for *_, n in mine)
    logging.info(
        "process %d/%d loaded its share: %d of %d flows, %d features, classes %s",
        p, parts, len(flows), total, len(flows.features), flows.classes,
    )  # fmt: skip

    def fit(x_NxF, features, kind, clip, rows):  # the scaler of every share's training rows
        stats = collective.allgather_arrays(shares.statistics(x_NxF, features, kind, rows))
        return shares.merge(stats, features, kind, clip)

    return windows.for_config(
        cfg, flows, scalers=scalers, split_N=split_N, segment_N=piece_N, fit=fit
    )


# What each process may set for itself: who it is, where it finds the coordinator, and
# how it names the data (paths may differ between hosts; the files' fingerprints may not).
PER_PROCESS = frozenset({"process_id", "coordinator_address", "num_processes", "data"})


def _what_i_run(cfg: Config, workdir: str, refused: str | None) -> dict:
    """This process's config and day list: each file by its path under the files' common
    folder (hosts may mount the data elsewhere) with its fingerprint, in order."""
    try:
        found = inputs.fingerprints(cfg.data)["files"]
    except (OSError, ValueError) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    paths = list(found)
    root = (
        os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0] if paths else "")
    )
    files = [[os.path.relpath(path, root), fp] for path, fp in found.items()]
    config_ = {k: v for k, v in cfg.to_json().items() if k not in PER_PROCESS}
    config_["workdir"] = os.path.abspath(workdir)  # one folder that every host sees
    config_ = json.loads(json.dumps(config_))
    return {"config": config_, "files": files, "error": None, "refused": refused}


def disagreements(each: list[dict]) -> list[str]:
    """What the processes' ``_what_i_run`` records disagree on, each phrase naming the
    process (compared with process 0) and the option or file."""
    out = [
        f"process {p} cannot read --data: {e['error']}" for p, e in enumerate(each) if e["error"]
    ]
    if out:
        return out
    first = each[0]
    for p, e in enumerate(each[1:], start=1):
        for k, v in first["config"].items():
            if e["config"].get(k) != v:
                out.append(f"--{k} is {v!r} on process 0, {e['config'].get(k)!r} on process {p}")
        mine, theirs = (
            {name: json.dumps(fp, sort_keys=True) for name, fp in r["files"]} for r in (first, e)
        )
        out += [
            f"{n} is in --data on process 0, not on process {p}" for n in mine if n not in theirs
        ]
        out += [
            f"{n} is in --data on process {p}, not on process 0" for n in theirs if n not in mine
        ]
        out += [
            f"{n} differs between process 0 and process {p} (another size or content)"
            for n in mine
            if n in theirs and mine[n] != theirs[n]
        ]
        if not out and list(mine) != list(theirs):
            out.append(f"process {p} lists the --data files in another order than process 0")
    return out


def _check_agreement(cfg: Config, workdir: str, refused: str | None) -> None:
    """Several processes: every one must run the same config on the same files in the same
    workdir, or the split, the scaler and the share of each would silently differ; and a
    process that cannot start (process 0 without the workdir's lock, ``refused``) stops
    all. Checked before anything is written; every process refuses with the same line."""
    if jax.process_count() == 1:
        if refused:
            raise ValueError(refused)
        return
    local, count = jax.local_device_count(), jax.process_count()
    if jax.device_count() != local * count:  # each process feeds as many rows: refused first
        raise ValueError(
            f"process {jax.process_index()} drives {local} devices, but the {count} processes"
            f" have {jax.device_count()} in all: every process must drive as many"
        )
    each = collective.allgather_json(_what_i_run(cfg, workdir, refused))
    if stopped := [f"process {p}: {e['refused']}" for p, e in enumerate(each) if e.get("refused")]:
        raise ValueError("; ".join(stopped))
    if diffs := disagreements(each):
        more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise ValueError(
            f"the {jax.process_count()} processes of this run disagree, so none trains: "
            + "; ".join(diffs[:3])
            + more
            + "; give every process the same flags and the same --data files"
        )


def train_job(cfg: Config, workdir: str, on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Trains the model named by ``cfg`` on ``cfg.data``; returns (and writes) a summary.
    ``on_epoch``: called with each epoch's report (``loop.fit``).

    Holds ``workdir``'s lock (process 0) for the whole job: one trainer per workdir."""
    if not cfg.data:
        raise ValueError("--data is required (a Parquet file, directory or glob)")
    if cfg.tensorboard:  # every process: all stop here rather than wait on process 0
        monitor.check_tensorboard()
    with contextlib.ExitStack() as held:  # the workdir's lock (process 0), for the whole job
        refused = None
        if jax.process_index() == 0:
            try:
                held.enter_context(lock.WorkdirLock(workdir))
            except ValueError as e:  # told to every process, or the others would wait
                refused = str(e)
        _check_agreement(cfg, workdir, refused)
        return _train_job(cfg, workdir, on_epoch)


def _train_job(cfg: Config, workdir: str, on_epoch: Callable[[dict], None] | None) -> dict:
    run_dir = rundir.path(workdir, rundir.run_name(cfg))
    stage1_dir = None
    scalers, init, meta_extra = None, None, {}
    features = cfg.features or None
    if cfg.is_stage2:
        stage1_dir = rundir.path(workdir, rundir.STAGE1)
        why = rundir.unfinished(workdir, rundir.STAGE1)
        if why == rundir.NOT_TRAINED:
            raise FileNotFoundError(
                f"stage 2 needs a trained stage 1 in {stage1_dir}; run --stage=1 first"
            )
        if why is not None:
            raise FileNotFoundError(
                f"stage 1 in {stage1_dir} did not finish ({why}: preempted or"
                " interrupted); re-run --stage=1 with the same flags to resume it first"
            )
        s1_meta = rundir.latest_meta(stage1_dir)
        s1_cfg = Config.from_json(s1_meta["config"])
        # Same data, split and cleaning as stage 1, or stage 1's encoder and scaler would
        # have seen stage 2's validation and test rows.
        for key in config.stage2_from_stage1(cfg):
            if getattr(s1_cfg, key) != getattr(cfg, key):
                raise ValueError(
                    f"stage 2 --{key}={getattr(cfg, key)} differs from stage 1's {getattr(s1_cfg, key)}"
                )
        features = s1_meta["features"]
        scalers = rundir.scalers(s1_meta)[:1]  # the first network's: its encoder's input
        init = rundir.stage1_encoder_init(stage1_dir)
        meta_extra["stage1_dir"] = os.path.abspath(stage1_dir)
    _check_inputs(cfg, run_dir, stage1_dir)
    windowed = (_share if cfg.share_data else _all)(cfg, features, scalers)
    each = collective.allgather_json(windowed.summary()) if cfg.share_data else None
    data_summary = shares.summed(each) if each else windowed.summary()
    logging.info("windows: %s", json.dumps(data_summary))
    os.makedirs(run_dir, exist_ok=True)
    if jax.process_index() == 0:  # the full config in a file, one line in the log
        atomic.write_bytes(os.path.join(run_dir, rundir.CONFIG), (cfg.dumps() + "\n").encode())
        logging.info("config: %s", os.path.join(run_dir, rundir.CONFIG))
    labels = None
    if cfg.task == "binary":
        labels = {s: (v != 0).astype(np.int32) for s, v in windowed.label.items()}
    if not cfg.is_stage1:
        names = ("Benign", "Attack") if cfg.task == "binary" else windowed.classes
        train_labels = (labels or windowed.label)["train"]
        if cfg.share_data:  # the classes of every process's training windows
            train_labels = np.array(
                sum(collective.allgather_json(np.unique(train_labels).tolist()), [])
            )
        _check_classes(rundir.run_name(cfg), train_labels, names)
    meta_extra["data"] = data_summary
    result = loop.fit(
        cfg, run_dir, windowed, labels=labels, init=init, meta_extra=meta_extra, on_epoch=on_epoch
    )
    threshold, score = None, None
    if cfg.is_stage1 and not result.preempted:
        gather = collective.concat() if cfg.share_data else None
        # The trainer's table on one host; several: each calibrates on its own device
        # (the trainer's spans every process's, and calibration must not wait on them).
        table = result.table if jax.process_count() == 1 else None
        calibrated = calibration.calibrate(
            cfg, result.model, windowed, run_dir, result.steps, table, gather
        )
        threshold, score = calibrated["threshold"], calibrated["error_model"].describe()
        if cfg.tensorboard:
            calibrated_at = {
                "eval/threshold": threshold["value"],
                "eval/val_fpr": threshold["params"].get("benign_fpr"),
            }
            monitor.write_scalars(run_dir, result.steps, calibrated_at, "calibration")
    summary = {
        "run_dir": run_dir,
        "model": rundir.run_name(cfg),
        "steps": result.steps,
        "best_val_loss": result.best_val_loss,
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        "ended": result.ended,
        "preempted": result.preempted,
        "resumed_from": result.resumed_from,
        "score": score,
        "threshold": threshold,
        "data": data_summary,
    }
    if jax.process_index() == 0:  # one writer across hosts
        atomic.write_json(os.path.join(run_dir, rundir.SUMMARY), summary)
    return summary
