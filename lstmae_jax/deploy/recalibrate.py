"""Re-choose a detector artifact's threshold on the operator's benign flows.

Scores the flows with ``stream.score_files`` and writes a new artifact directory (the same
exported function, a new sidecar and manifest). A detector of several members also gets
its members' p-value tables refitted on those flows (from each member's own score, which
the artifact returns), so every member's benign tail is the operator's network's; the
threshold is then chosen on the fused scores that gives. No training code here: the
artifact's ``call`` and ``detector.fuse`` under ``jax.numpy``.
"""

from __future__ import annotations

import os

import numpy as np
from absl import logging

from lstmae_jax import atomic
from lstmae_jax.deploy import artifact, stream
from lstmae_jax.detect import detector, metrics

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
    name: str | None = None,
) -> dict:
    """Re-chooses the threshold on the operator's benign flows; writes a new artifact
    directory (same exported function, new sidecar and manifest). Windows holding a flow
    labelled as an attack, where the input is labelled, are left out and counted. Needs
    ``MIN_FALSE_POSITIVES / target_fpr`` benign windows; warns when the threshold moves
    more than ``THRESHOLD_MOVE_WARNING``-fold (an unlabelled file with attacks in it, or
    flows of another network, move it); an existing artifact at ``output_dir`` is replaced
    only with ``overwrite``. ``name``: how the sidecar and messages name ``benign`` (the
    Python API's in-memory table, not its temporary file)."""
    name = name or benign
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"--target_fpr must be in (0, 1), got {target_fpr}")
    if atomic.same_file(output_dir, scorer.directory):
        raise ValueError(f"--output_model {output_dir} is the input model; give a new directory")
    if os.path.lexists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
        if not overwrite:
            raise ValueError(
                f"--output_model {output_dir} exists and is not empty; give a new directory,"
                " or --overwrite to replace the artifact there"
            )
    summary, run = stream.score_files(scorer, benign, None, keep_scores=True)
    if "files_failed" in summary:
        raise ValueError(f"cannot calibrate on {benign}: {summary['files_failed']}")
    scores = np.concatenate(run.scores) if run.scores else np.zeros(0, np.float32)
    benign_w = np.concatenate(run.benign) if run.benign else np.zeros(0, bool)
    needed = int(np.ceil(MIN_FALSE_POSITIVES / target_fpr))
    if benign_w.sum() < needed:
        raise ValueError(
            f"{name}: {int(benign_w.sum())} benign windows; a threshold at FPR {target_fpr:g}"
            f" needs at least {needed} ({MIN_FALSE_POSITIVES} expected false positives): give"
            " more benign flows or a larger --target_fpr"
        )
    sidecar = dict(scorer.meta)
    det = artifact.detector_of(scorer.meta)
    if det is not None and det.fused:  # the members' tables, then the fused scores
        members_WxM = np.concatenate(run.members)[benign_w]
        det = detector.with_tables(det, members_WxM.T)
        scores = detector.fused_scores(det, members_WxM)
        sidecar["detector"] = det.to_json()
        sidecar["score"] = det.describe()  # names the windows its p-values now come from
    else:
        scores = scores[benign_w]
    threshold = metrics.calibrate("fpr", scores.astype(np.float64), target_fpr=target_fpr)
    record = threshold.to_json()
    old = scorer.meta["threshold"]
    record["calibrated_on"] = (
        f"{int(benign_w.sum())} benign windows of {name} (recalibrated by the operator;"
        f" {int((~benign_w).sum())} windows with attack-labelled flows left out); the"
        f" exported threshold was {old['value']!r} ({old.get('calibrated_on', old['method'])})"
    )
    move = max(record["value"], 1e-30) / max(float(old["value"]), 1e-30)
    if not 1 / THRESHOLD_MOVE_WARNING <= move <= THRESHOLD_MOVE_WARNING:
        logging.warning(
            "the threshold moves %.3g-fold (%.6g -> %.6g): are %s benign flows of the network"
            " this detector was trained for? Attacks in an unlabelled file raise it, flows of"
            " another network move it either way",
            move, float(old["value"]), record["value"], name,
        )  # fmt: skip
    sidecar["threshold"] = record
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
