"""The stage-1 peers of ``benchmarks/detection.py``: detectors a user would pick instead.

Each peer is fitted on the same scaled benign training windows as the LSTM-AE, scores
the same windows, and gets the same threshold rule (1% FPR on the same benign
validation windows). A window is represented either by its last flow (``flow``: what a
per-flow detector sees) or by all its T flows flattened (``window``: T x F numbers).

* ``pca``: reconstruction error of the principal components holding 95% of the
  training variance (numpy, ``pca_baseline``);
* ``iforest``: scikit-learn's Isolation Forest (200 trees);
* ``knn``: mean distance to the 5 nearest benign training windows (scikit-learn), the
  strongest simple peer seen per flow;
* ``pyod_ae``: PyOD's ``AutoEncoder`` (torch; 10 epochs, batch 256) on the same representations;
* ``pyod_lstm``: PyOD's ``LSTMAD`` (Malhotra et al. 2015: next-flow prediction, error
  scored by Mahalanobis distance) on the flow sequence itself;

the PyOD peers only when the ``peers`` extra is installed (``pip install -e '.[peers]'``),
skipped otherwise.

Shape letters: N flows, W windows, T steps, F features, D = F or T*F.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pca_baseline

from lstmae_jax.data import windows

Scorer = Callable[[np.ndarray], np.ndarray]  # x_WxD -> score_W (higher: more anomalous)
KNN_NEIGHBOURS = 5
KNN_MAX_TRAIN = 50_000  # brute-force distances stay bounded; evenly spaced rows


def represent(x_NxF: np.ndarray, starts_W: np.ndarray, window: int, how: str) -> np.ndarray:
    """x_WxD: the window's last flow (``flow``) or its T flows flattened (``window``)."""
    if how == "flow":
        return x_NxF[starts_W + window - 1]
    return windows.gather(x_NxF, starts_W, window).reshape(len(starts_W), -1)


def _pca(train_WxD: np.ndarray) -> Scorer:
    return pca_baseline.fit(train_WxD).scores


def _iforest(train_WxD: np.ndarray) -> Scorer:
    from sklearn.ensemble import IsolationForest

    model = IsolationForest(n_estimators=200, random_state=0).fit(train_WxD)
    return lambda x: -model.score_samples(x)


def _knn(train_WxD: np.ndarray) -> Scorer:
    from sklearn.neighbors import NearestNeighbors

    if len(train_WxD) > KNN_MAX_TRAIN:
        keep = np.linspace(0, len(train_WxD) - 1, KNN_MAX_TRAIN).round().astype(np.int64)
        train_WxD = train_WxD[keep]
    nn = NearestNeighbors(n_neighbors=KNN_NEIGHBOURS).fit(train_WxD)
    return lambda x: nn.kneighbors(x)[0].mean(axis=1)


def _pyod_ae(train_WxD: np.ndarray) -> Scorer:
    from pyod.models.auto_encoder import AutoEncoder

    model = AutoEncoder(epoch_num=10, batch_size=256, verbose=0, random_state=0)
    model.fit(train_WxD)
    return model.decision_function


def pyod_lstm_rows(x_NxF: np.ndarray, train_rows: np.ndarray, window: int) -> np.ndarray:
    """score_N of PyOD's ``LSTMAD`` (next-flow prediction error, Mahalanobis), trained on
    the contiguous benign training rows and run over every flow in order; a window is
    scored by its last flow, predicted from the ``window`` flows before it."""
    from pyod.models.ts_lstm import LSTMAD

    model = LSTMAD(window_size=window, epochs=10, batch_size=256, contamination=0.01)
    model.fit(x_NxF[train_rows])
    return np.asarray(model.decision_function(x_NxF), np.float64)


def available() -> list[str]:
    """The peers that can run here (PyOD's need the ``peers`` extra)."""
    names = ["pca", "iforest", "knn"]
    try:
        import pyod  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return names
    return [*names, "pyod_ae", "pyod_lstm"]


def fit(name: str, train_WxD: np.ndarray) -> Scorer:
    """Peer ``name`` fitted on benign training windows (represented as the scorer expects)."""
    if name == "pca":
        return _pca(train_WxD)
    if name == "iforest":
        return _iforest(train_WxD)
    if name == "knn":
        return _knn(train_WxD)
    if name == "pyod_ae":
        return _pyod_ae(train_WxD)
    raise ValueError(f"unknown peer {name!r}")


def run_all(
    x_NxF: np.ndarray,
    window: int,
    starts: dict[str, np.ndarray],
    evaluate: Callable[[np.ndarray, np.ndarray], dict],
    train_rows: np.ndarray | None = None,
    names: list[str] | None = None,
) -> dict:
    """Fits every peer on ``starts['train']``, thresholds on ``starts['val']`` and scores
    ``starts['test']`` (``evaluate(benign_val_scores, test_scores) -> metrics``), for both
    representations (T = 1 has one). ``train_rows`` (contiguous benign training flows)
    enables the sequence peer ``pyod_lstm``; sampled files have no sequences."""
    out = {}
    hows = ("flow",) if window == 1 else ("flow", "window")
    for name in names or available():
        if name == "pyod_lstm":
            if train_rows is None or window == 1:
                continue
            t0 = time.perf_counter()
            s_N = pyod_lstm_rows(x_NxF, train_rows, window)
            rec = evaluate(s_N[starts["val"] + window - 1], s_N[starts["test"] + window - 1])
            rec["seconds"] = round(time.perf_counter() - t0, 1)
            out["pyod_lstm_sequence"] = rec
            print(f"  peer pyod_lstm_sequence: ROC AUC {rec['roc_auc']:.4f}", flush=True)
            continue
        for how in hows:
            t0 = time.perf_counter()
            rep = {k: represent(x_NxF, s, window, how) for k, s in starts.items()}
            scorer = fit(name, rep["train"])
            rec = evaluate(scorer(rep["val"]), scorer(rep["test"]))
            rec["seconds"] = round(time.perf_counter() - t0, 1)
            out[f"{name}_{how}"] = rec
            print(f"  peer {name}_{how}: ROC AUC {rec['roc_auc']:.4f}", flush=True)
    return out
