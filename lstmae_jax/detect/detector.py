"""The stage-1 detector: its members, what each was fitted on, and the one fused score.

Stage 1 is one or more *members* (``Config.stage1_members``), each
``REPRESENTATION:SCORE``, reading the windows scaled by that representation's scaler:

* a reconstruction score (``sse``, ``mae``, ``zscore``, ``mahalanobis``: ``anomaly``) of
  the network trained on that representation;
* ``latent``: the mean Euclidean distance of the network's code to its ``NEIGHBOURS``
  nearest of up to ``REFERENCES`` benign training codes (a kNN in the network's own
  space: how far the window is from benign traffic the network has seen, where a
  reconstruction can be good for a flow that is merely simple);
* ``rarity``: the squared Mahalanobis distance of the scaled flow under a Ledoit-Wolf
  Gaussian of the benign training flows (in the quantile representation a Gaussian
  copula), the mean over the window's flows: how unusual the flow is as a whole,
  whatever a network learnt.

With one member its score is the stage-1 score. With several, each member's score ``s``
becomes its benign tail probability on the benign validation windows, the conformal
p-value ``p = (1 + #{validation scores >= s}) / (n + 1)``, continued beyond the largest
validation score by an exponential tail fitted on the top 1% (at least 10) of them, so
scores past every benign one stay ordered (between validation scores the count is read
linearly, so the surprisal is continuous in the score). The fused score is a surprisal: ``fusion=min``
takes ``-log`` of the smallest p (the member that is most sure; an alarm of any member
counts, at the rate its own benign tail gives), ``fisher`` the sum of the members'
``-log p``. The threshold is then chosen on the fused scores of the same validation
windows: a new benign window's p-values are distributed as a validation window's rank
among the others (exchangeability), so the calibrated false-positive rate holds.

Contributions: each member's per-feature contributions sum to its score (reconstruction
and rarity exactly, ``anomaly``; ``latent`` has no per-feature split, so it reports its
network's squared reconstruction errors rescaled to the distance: the features that
network finds least benign); the fused contributions are those of the member that set
the score (``min``) or every member's in proportion to its surprisal (``fisher``),
rescaled to sum to the fused score.

``outputs`` is the one definition of the stage-1 score: calibration, evaluation, the
benchmarks and the exported scorer call it, under ``jax.numpy``. This module imports no
flax: the network comes in as a function (``forward``), so the scorer can load it.

Shape letters: B windows, T steps, F features, K networks, L latent, M members,
R latent references, S table entries, W windows fitted on.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import json
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lstmae_jax import compiler
from lstmae_jax.data import dataset
from lstmae_jax.detect import anomaly

KINDS = (*anomaly.SCORES, "latent", "rarity")
FUSIONS = ("min", "fisher")
REFERENCES = 4096  # latent: benign training codes kept (evenly spaced in time)
NEIGHBOURS = 5  # latent: the distance is the mean over this many nearest codes
TABLE = 4097  # p-value table: the sorted validation scores, this many entries (fixed: the
# exported function's input shape, so recalibrating on other traffic needs no re-export)
TAIL_FRACTION = 0.01  # the exponential tail is fitted on the top 1% of them ...
TAIL_MIN = 10  # ... and at least this many

HIGHEST = jax.lax.Precision.HIGHEST  # float32 products: no TF32 rounding on GPUs
Forward = Callable[[jnp.ndarray], tuple[jnp.ndarray, jnp.ndarray]]  # x_K.. -> (z, xhat)


@dataclasses.dataclass(frozen=True)
class Member:
    """One member and its fitted values (JSON, no pickle)."""

    name: str  # REPRESENTATION:SCORE
    network: int  # index of the network it reads (-1: rarity reads none)
    scaler: int  # index of its representation among the run's scalers
    mean_F: tuple[float, ...] = ()  # Gaussian kinds, rarity: the benign mean
    precision_FxF: tuple[tuple[float, ...], ...] = ()  # ... and inverse covariance
    shrinkage: float = 0.0  # Ledoit-Wolf intensity
    references_RxL: str = ""  # latent: benign training codes, float32 (``encode``)
    fitted_on: int = 0  # benign training windows (rarity: flows) the values come from
    table: tuple[float, ...] = ()  # sorted benign validation scores (``table``) ...
    table_count: tuple[int, ...] = ()  # ... and how many of them are >= each
    table_n: int = 0  # validation windows behind the table
    tail_scale: float = 0.0  # the exponential tail's scale beyond the largest

    @property
    def representation(self) -> str:
        return self.name.partition(":")[0]

    @property
    def kind(self) -> str:
        return self.name.partition(":")[2]

    def describe(self) -> str:
        if self.kind == "latent":
            what = (
                f"mean distance of the network's code to its {NEIGHBOURS} nearest of"
                f" {len(decode(self.references_RxL))} benign training codes"
            )
        elif self.kind == "rarity":
            what = (
                "squared Mahalanobis distance of the scaled flow under a Gaussian of"
                f" {self.fitted_on} benign training flows (Ledoit-Wolf)"
            )
        else:
            what = anomaly.describe(self.kind)
        return f"{self.name}: {what}"


@dataclasses.dataclass(frozen=True)
class Detector:
    """Stage 1's members, how they fuse, and the feature count (JSON, no pickle)."""

    members: tuple[Member, ...]
    fusion: str
    num_features: int

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if not self.members:
            raise ValueError("a detector needs at least one member")
        f = self.num_features
        for m in self.members:
            if m.kind not in KINDS:
                raise ValueError(f"member {m.name!r}: score must be one of {KINDS}")
            if m.kind in (*anomaly.GAUSSIAN, "rarity") and m.mean_F:
                mu, prec = np.asarray(m.mean_F), np.asarray(m.precision_FxF)
                d = len(mu)  # the scaled width: f, or more with port categories
                if mu.shape != (d,) or prec.shape != (d, d) or d < f:
                    raise ValueError(
                        f"member {m.name!r}: mean {mu.shape} / precision {prec.shape} do not"
                        f" match {f} features"
                    )
                if not (np.isfinite(mu).all() and np.isfinite(prec).all()):
                    raise ValueError(f"member {m.name!r}: non-finite fitted values")

    @property
    def fused(self) -> bool:
        """Several members: the score is a fused surprisal, not a member's own score."""
        return len(self.members) > 1

    @property
    def has_tables(self) -> bool:
        """Several members with their p-value tables fitted (``with_tables``)."""
        return self.fused and all(m.table for m in self.members)

    def spec(self) -> tuple:
        """What ``outputs`` compiles for (static): each member's (kind, network, scaler),
        and the fusion (None before the tables are fitted: the score is then the first
        member's, and only ``members_BxM`` means anything)."""
        members = tuple((m.kind, m.network, m.scaler) for m in self.members)
        return members, self.fusion if self.has_tables else None

    def arrays(self) -> list[dict[str, np.ndarray]]:
        """Each member's fitted values as float32 arrays: what ``outputs`` takes (and the
        exported scorer, from its sidecar)."""
        out = []
        for m in self.members:
            a: dict[str, np.ndarray] = {}
            if m.mean_F:
                a["mean_F"] = np.asarray(m.mean_F, np.float32)
                a["precision_FxF"] = np.asarray(m.precision_FxF, np.float32)
            if m.references_RxL:
                a["references_RxL"] = decode(m.references_RxL)
            if self.has_tables:
                a["table_S"] = np.asarray(m.table, np.float32)
                a["table_count_S"] = np.asarray(m.table_count, np.float32)
                a["table_n"] = np.asarray(m.table_n, np.float32)
                a["tail_scale"] = np.asarray(m.tail_scale, np.float32)
            out.append(a)
        return out

    def describe(self) -> str:
        parts = "; ".join(m.describe() for m in self.members)
        if not self.fused:
            return parts
        how = "the smallest" if self.fusion == "min" else "Fisher's sum over the members of"
        return (
            f"-log of {how} benign tail probability (p-values on"
            f" {self.members[0].table_n} benign validation windows) of: {parts}"
        )

    def to_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, d: dict) -> Detector:
        def tup(v):
            return tuple(tup(x) for x in v) if isinstance(v, list) else v

        members = tuple(Member(**{k: tup(v) for k, v in m.items()}) for m in d["members"])
        return cls(members, d["fusion"], d["num_features"])


# ------------------------------------------------------------------------ scoring


def member_scores(spec: tuple, arrays: Sequence[dict], scalers, xs, z_KxBxL, err_KxBxF):
    """(score_MxB, contrib_MxBxF): each member's raw score and contributions (of the F
    features: port categories folded back, ``dataset.fold``). ``scalers``: each
    representation's arrays, ``xs``: the windows in it (x_BxTxD), ``z_KxBxL`` and
    ``err_KxBxD``: each network's codes and reconstruction errors."""
    scores, contribs = [], []
    for (kind, k, r), a in zip(spec[0], arrays, strict=True):
        if kind == "rarity":
            d = xs[r] - a["mean_F"]  # B x T x F
            pd = jnp.einsum("btf,fg->btg", d, a["precision_FxF"], precision=HIGHEST)
            c_BxF = (d * pd).mean(axis=1)
            s_B = c_BxF.sum(axis=-1)
        elif kind == "latent":
            s_B = latent_distance(z_KxBxL[k], a["references_RxL"])
            e2_BxF = err_KxBxF[k] ** 2
            c_BxF = e2_BxF * (s_B / jnp.maximum(e2_BxF.sum(axis=-1), 1e-30))[:, None]
        else:
            s_B, c_BxF = anomaly.score(err_KxBxF[k], kind, a.get("mean_F"), a.get("precision_FxF"))
        scores.append(s_B)
        contribs.append(dataset.fold(c_BxF, **scalers[r], xp=jnp))
    return jnp.stack(scores), jnp.stack(contribs)


def latent_distance(z_BxL, references_RxL):
    """Mean Euclidean distance of each code to its ``NEIGHBOURS`` nearest references. The
    nearest are found with |z|^2 + |r|^2 - 2 z.r (one matmul), then measured directly as
    |z - r|: the expansion loses digits to cancellation exactly where it matters, near a
    reference (a window seen in training is at distance ~0)."""
    d2_BxR = (
        (z_BxL**2).sum(axis=1)[:, None]
        + (references_RxL**2).sum(axis=1)[None, :]
        - 2.0 * jnp.einsum("bl,rl->br", z_BxL, references_RxL, precision=HIGHEST)
    )
    k = min(NEIGHBOURS, references_RxL.shape[0])
    _, nearest_BxK = jax.lax.top_k(-d2_BxR, k)
    diff_BxKxL = z_BxL[:, None, :] - references_RxL[nearest_BxK]
    return jnp.sqrt((diff_BxKxL**2).sum(axis=-1)).mean(axis=1)


def surprisal(s_B, table_S, table_count_S, table_n, tail_scale):
    """-log p of scores ``s_B`` against a member's table (``table``): p = (1 + #{validation
    scores >= s}) / (n + 1), the count read off the table (exact at its entries: all the
    scores up to ``TABLE``, else the top ``TABLE`` / 2 and more) and linear between them,
    so the surprisal is continuous in the score (float noise cannot move it a whole rank);
    beyond the largest score it grows by (s - max) / tail_scale."""
    size = table_S.shape[0]
    hi = jnp.clip(jnp.searchsorted(table_S, s_B, side="left"), 1, size - 1)
    t_lo, t_hi = table_S[hi - 1], table_S[hi]
    c_lo, c_hi = table_count_S[hi - 1], table_count_S[hi]
    frac = jnp.clip((t_hi - s_B) / jnp.where(t_hi > t_lo, t_hi - t_lo, 1.0), 0.0, 1.0)
    count = jnp.where(s_B <= table_S[0], table_n, c_hi + frac * (c_lo - c_hi))
    inside = -jnp.log((1.0 + count) / (table_n + 1.0))
    at_max = -jnp.log((1.0 + table_count_S[-1]) / (table_n + 1.0))
    beyond = at_max + (s_B - table_S[-1]) / tail_scale
    return jnp.where(s_B > table_S[-1], beyond, inside)


def fuse(spec: tuple, arrays: Sequence[dict], score_MxB, contrib_MxBxF):
    """(score_B, contrib_BxF): the stage-1 score from the members' (module docstring)."""
    if score_MxB.shape[0] == 1 or spec[1] is None:
        return score_MxB[0], contrib_MxBxF[0]
    xp = jnp
    L_MxB = xp.stack(
        [
            surprisal(s, a["table_S"], a["table_count_S"], a["table_n"], a["tail_scale"])
            for s, a in zip(score_MxB, arrays, strict=True)
        ]
    )
    # Each member's contributions rescaled to its surprisal (they sum to its score).
    share_MxB = xp.where(score_MxB > 0, L_MxB / xp.where(score_MxB > 0, score_MxB, 1.0), 0.0)
    weighted_MxBxF = contrib_MxBxF * share_MxB[:, :, None]
    if spec[1] == "fisher":
        return L_MxB.sum(axis=0), weighted_MxBxF.sum(axis=0)
    best_B = xp.argmax(L_MxB, axis=0)
    take = xp.take_along_axis
    return take(L_MxB, best_B[None], 0)[0], take(weighted_MxBxF, best_B[None, :, None], 0)[0]


def outputs(forward: Forward | None, x_BxTxF, scalers: Sequence[dict], spec: tuple, arrays) -> dict:
    """The stage-1 score of raw (cleaned) windows: ``score_B``, ``contrib_BxF`` (summing to
    it) and ``members_BxM`` (each member's raw score). ``scalers``: each representation's
    ``Scaler.arrays``, the networks' first; ``forward``: x_KxBxTxF -> (z_KxBxL,
    xhat_KxBxTxF) of the K networks (None when no member reads one)."""
    xs = [dataset.scale(x_BxTxF, **a, xp=jnp) for a in scalers]
    z = err = None
    if forward is not None:
        num_networks = 1 + max(k for _, k, _ in spec[0])
        x_KxBxTxF = jnp.stack(xs[:num_networks])
        z, xhat = forward(x_KxBxTxF)
        err = anomaly.errors(x_KxBxTxF, xhat)
    score_MxB, contrib_MxBxF = member_scores(spec, arrays, scalers, xs, z, err)
    score_B, contrib_BxF = fuse(spec, arrays, score_MxB, contrib_MxBxF)
    return {"score_B": score_B, "contrib_BxF": contrib_BxF, "members_BxM": score_MxB.T}


# ------------------------------------------------------------------------ fitting


def table(scores_W: np.ndarray) -> tuple[tuple[float, ...], tuple[int, ...], int, float]:
    """(table, counts, n, tail_scale) of a member's benign validation scores: ``TABLE``
    sorted scores (all n of them, padded with the largest; or, beyond ``TABLE``, the top
    ``TABLE`` / 2 and the rest at geometrically spaced ranks, so the tail the threshold
    sits in stays exact and the bulk is within 0.5%), how many scores are >= each, n, and
    the mean excess of the top ``TAIL_FRACTION`` (at least ``TAIL_MIN``) over the next one
    down: the scale of the exponential tail beyond the largest."""
    s = np.sort(np.asarray(scores_W, np.float64))
    n = len(s)
    if n == 0:
        raise ValueError("a p-value table needs benign validation windows; there are none")
    top = min(max(TAIL_MIN, int(np.ceil(TAIL_FRACTION * n))), n - 1)
    scale = float(np.mean(s[n - top :] - s[n - top - 1])) if top > 0 else 0.0
    # A tail of ties (or one window) has no spread: fall back to the scores' own, then 1.
    if not scale > 0:
        scale = float(np.std(s)) or max(abs(float(s[-1])), 1.0)
    if n <= TABLE:
        pos = np.arange(n)
    else:  # counts from the top: 1 .. TABLE/2 exactly, then geometric up to n
        half = TABLE // 2
        from_top = np.r_[np.arange(1, half + 1), np.geomspace(half + 1, n, TABLE - half)]
        pos = np.unique(n - np.unique(from_top.round().astype(np.int64)))
    pos = np.r_[pos, np.full(TABLE - len(pos), n - 1)]
    kept = s[pos]
    counts = n - np.searchsorted(s, kept, side="left")
    return tuple(kept.tolist()), tuple(int(c) for c in counts), n, scale


def with_tables(detector: Detector, scores_MxW: np.ndarray) -> Detector:
    """``detector`` with each member's p-value table fitted on benign validation scores
    (nothing for one member: its own score is the stage-1 score)."""
    if not detector.fused:
        return detector
    members = []
    for m, s_W in zip(detector.members, scores_MxW, strict=True):
        t, counts, n, scale = table(s_W)
        members.append(
            dataclasses.replace(m, table=t, table_count=counts, table_n=n, tail_scale=scale)
        )
    return dataclasses.replace(detector, members=tuple(members))


def fused_scores(det: Detector, members_WxM: np.ndarray) -> np.ndarray:
    """score_W: ``det``'s fused score from its members' scores (``fuse``, the function the
    scorer runs, under ``jax.numpy``): how calibration and recalibration score windows
    whose member scores they hold."""
    m = np.asarray(members_WxM, np.float32).T
    dummy = np.zeros((*m.shape, 1), np.float32)  # contributions are not needed here
    score, _ = _fuse_jitted()(det.spec(), det.arrays(), m, dummy)
    return np.asarray(score)


@functools.cache
def _fuse_jitted():
    """``fuse`` jitted once per process (the spec static), at first use: `compiler.options`
    looks at the backend. A fresh ``jit`` per call compiled on every call."""
    return compiler.jit(fuse, static_argnums=0)


def references(z_WxL: np.ndarray) -> str:
    """The latent references: at most ``REFERENCES`` benign training codes, evenly spaced
    in time, encoded (``encode``)."""
    z = np.asarray(z_WxL, np.float32)
    if len(z) > REFERENCES:
        z = z[np.linspace(0, len(z) - 1, REFERENCES).round().astype(np.int64)]
    return encode(z)


def encode(a: np.ndarray) -> str:
    """A float32 matrix as text for JSON: ``ROWSxCOLS:`` then its little-endian bytes in
    base64 (exact, and a quarter of the size of decimal text: thousands of codes stay a
    few MB)."""
    a = np.ascontiguousarray(a, "<f4")
    rows, cols = a.shape
    return f"{rows}x{cols}:" + base64.b64encode(a.tobytes()).decode("ascii")


def decode(text: str) -> np.ndarray:
    """``encode``'s matrix back (ValueError on text that is not one)."""
    shape, sep, data = text.partition(":")
    try:
        rows, cols = (int(v) for v in shape.split("x"))
        raw = base64.b64decode(data.encode("ascii"), validate=True)
    except (ValueError, binascii.Error) as e:
        raise ValueError(f"not an encoded float32 matrix: {text[:40]!r}...") from e
    if not sep or rows < 1 or cols < 1 or len(raw) != 4 * rows * cols:
        raise ValueError(f"an encoded {shape} float32 matrix holds {len(raw)} bytes")
    return np.frombuffer(raw, "<f4").reshape(rows, cols).astype(np.float32)
