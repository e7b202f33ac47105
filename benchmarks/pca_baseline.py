"""Per-flow PCA reconstruction detector (numpy): the linear peer of the LSTM-AE's stage 1.

Fitted on the same scaled benign training flows as the autoencoder; the score of a flow
is its mean absolute reconstruction error over features (the LSTM-AE's score at T=1), so
the same threshold rule (1% FPR on benign validation flows) applies unchanged.

Shape letters: N flows, F features, P principal components.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class PCADetector:
    mean_F: np.ndarray
    components_PxF: np.ndarray  # orthonormal rows
    explained: float  # fraction of training variance the P components hold

    @property
    def num_components(self) -> int:
        return len(self.components_PxF)

    def scores(self, x_NxF: np.ndarray) -> np.ndarray:
        """score_N: mean absolute error of the rank-P reconstruction, per flow."""
        xc = x_NxF.astype(np.float64) - self.mean_F
        recon = (xc @ self.components_PxF.T) @ self.components_PxF
        return np.mean(np.abs(xc - recon), axis=1)


def fit(x_NxF: np.ndarray, variance: float = 0.95) -> PCADetector:
    """Keeps the fewest components that explain ``variance`` of the training variance.

    The rule is fixed in advance (no tuning against attacks): with benign data only, more
    components always lower the benign error, so held-out benign data cannot choose P.
    """
    if not 0.0 < variance <= 1.0:
        raise ValueError(f"variance must be in (0, 1], got {variance}")
    x = x_NxF.astype(np.float64)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    ratio = np.cumsum(s**2) / max(np.sum(s**2), 1e-300)
    p = int(np.searchsorted(ratio, variance - 1e-12) + 1)
    p = min(p, len(s))
    return PCADetector(mean, vt[:p], float(ratio[p - 1]))
