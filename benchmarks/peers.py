"""The stage-1 peers: detectors a user would pick instead, each on each representation.

Each peer is fitted on the same benign training windows as stage 1, scores the same
windows, and is summarised the same way (``detection_report``). A peer is one detector on
one representation, ``NAME/REPRESENTATION``:

* representations: ``log`` (log1p of every non-negative magnitude, then z-scored: the
  library's ``log`` scaler) and ``quantile`` (each feature through its benign training
  quantiles to a normal score: the library's ``quantile`` scaler), each fitted on the
  benign training rows; a window is its last flow at T = 1 and its T flows flattened
  (T x F numbers) above;
* ``pca``: squared reconstruction error of the principal components holding 95% of the
  training variance (numpy; the fewest components that do, fixed in advance: benign data
  alone cannot choose P, since more components always lower the benign error);
* ``iforest``: scikit-learn's Isolation Forest (200 trees, seed 0);
* ``knn``: mean distance to the 5 nearest benign training windows (scikit-learn; at most
  ``KNN_MAX_TRAIN`` of them, evenly spaced);
* ``pyod_ae``: PyOD's ``AutoEncoder`` (torch; 10 epochs, batch 256, seed 0), only when
  the ``peers`` extra is installed (``pip install -e '.[peers]'``), skipped otherwise.

Shape letters: N flows, W windows, T steps, F features, D = F or T*F.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from lstmae_jax.data import dataset, windows

Scorer = Callable[[np.ndarray], np.ndarray]  # x_WxD -> score_W (higher: more anomalous)
REPRESENTATIONS = ("log", "quantile")
KNN_NEIGHBOURS = 5
KNN_MAX_TRAIN = 50_000  # brute-force distances stay bounded
PCA_VARIANCE = 0.95


@dataclasses.dataclass(frozen=True)
class PCA:
    mean_D: np.ndarray
    components_PxD: np.ndarray  # orthonormal rows

    def __call__(self, x_WxD: np.ndarray) -> np.ndarray:
        xc = x_WxD.astype(np.float64) - self.mean_D
        recon = (xc @ self.components_PxD.T) @ self.components_PxD
        return np.sum((xc - recon) ** 2, axis=1)


def fit_pca(x_WxD: np.ndarray, variance: float = PCA_VARIANCE) -> PCA:
    """The fewest principal components that explain ``variance`` of the training variance."""
    x = x_WxD.astype(np.float64)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    ratio = np.cumsum(s**2) / max(np.sum(s**2), 1e-300)
    p = min(int(np.searchsorted(ratio, variance - 1e-12) + 1), len(s))
    return PCA(mean, vt[:p])


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


FIT = {"pca": fit_pca, "iforest": _iforest, "knn": _knn, "pyod_ae": _pyod_ae}


def available(quick: bool = False) -> list[str]:
    """The peers that can run here (PyOD's needs the ``peers`` extra; not in a quick run)."""
    names = ["pca", "iforest", "knn"]
    if quick:
        return names
    try:
        import pyod  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return names
    return [*names, "pyod_ae"]


def represent(x_NxF: np.ndarray, starts_W: np.ndarray, window: int) -> np.ndarray:
    """x_WxD: each window's flows flattened (its one flow at T = 1)."""
    return windows.gather(x_NxF, starts_W, window).reshape(len(starts_W), -1)


def scores(
    name: str,
    representation: str,
    flows: dataset.Flows,
    train_rows: np.ndarray,
    train_W: np.ndarray,
    score_W: np.ndarray,
    window: int,
) -> np.ndarray:
    """score_W of peer ``name`` on ``representation`` (its scaler fitted on the benign
    training rows ``train_rows``), fitted on the windows ``train_W``, scoring ``score_W``."""
    scaler = dataset.fit_scaler(flows.x_NxF, flows.features, representation, rows=train_rows)
    x = scaler.transform(flows.x_NxF)
    model = FIT[name](represent(x, train_W, window))
    out = np.empty(len(score_W), np.float64)
    for a in range(0, len(score_W), 65536):  # bounded memory for the kNN distances
        out[a : a + 65536] = model(represent(x, score_W[a : a + 65536], window))
    return out
