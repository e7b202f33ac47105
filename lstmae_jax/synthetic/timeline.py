"""Generated CICFlowMeter flows with attack episodes: the embedded default data.

``generate`` lays out a timeline and simulates its flows (``synthetic_flows``: flow kinds
and their packet-level simulation, with the CICFlowMeter quirks kept). Benign flows (web,
DNS, NTP, SSH, mail, keepalives and stray single packets) arrive as a Poisson process;
attack episodes (PortScan, DoS Hulk, DDoS, SSH-Patator, FTP-Patator, Bot beacons) are dense
bursts placed after the first ``clean_prefix`` of the flows, so a temporal split can train
on benign-only traffic. Attack rates are compressed against CICIDS2017 (where a Patator run
is ~2 flows/s) so that each episode is a run of mostly-attack flows with benign flows
interleaved.

``write`` (from ``synthetic_io``, re-exported here) writes the canonical Parquet (cleaned by
``clean.canonicalize``, exactly what the converter makes of the raw CSV) or imitations of
the raw 2017 / 2018 CSV files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lstmae_jax.ingest import schema
from lstmae_jax.synthetic import flow as flows
from lstmae_jax.synthetic.flow import (
    ACTIVITY_TIMEOUT_US,
    ATTACK_PROFILES,
    BENIGN_PROFILES,
    FLOW_TIMEOUT_US,
)
from lstmae_jax.synthetic.writers import FORMATS, METADATA_KEY, WRITE_STYLES, raw_header, write

# The public API, re-exports included: callers need only ``synthetic``.
__all__ = [
    "ACTIVITY_TIMEOUT_US", "ATTACK_PROFILES", "BENIGN_PROFILES", "DEFAULT_ATTACK_FRACTION",
    "DEFAULT_ATTACK_MIX", "FLOW_TIMEOUT_US", "FORMATS", "METADATA_KEY", "WRITE_STYLES",
    "generate", "raw_header", "write",
]  # fmt: skip

_CHUNK = 1 << 16  # flows simulated per numpy pass; bounds memory, fixed for determinism
DEFAULT_ATTACK_MIX = {"DoS Hulk": 0.30, "DDoS": 0.25, "PortScan": 0.25, "SSH-Patator": 0.07,
                      "FTP-Patator": 0.08, "Bot": 0.05}  # fmt: skip
DEFAULT_ATTACK_FRACTION = 0.25
_FIRST_ATTACK = len(BENIGN_PROFILES)


def _episodes(n_attack, mix, per_kind, rng) -> list[tuple[str, int]]:
    """(label, flows) per episode: flows split by the mix, then into episodes.

    Episodes come in rounds, each round one episode of every label in random order, so
    every attack recurs across the timeline and a temporal split sees each label in its
    train, validation and test parts (with the default 3 rounds).
    """
    labels = [label for label, w in mix.items() if w > 0]
    w = np.array([mix[label] for label in labels], dtype=np.float64)
    exact = w / w.sum() * n_attack
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(counts - exact, kind="stable")[: n_attack - counts.sum()]] += 1
    rounds: list[list[tuple[str, int]]] = [[] for _ in range(per_kind)]
    for label, c in zip(labels, counts, strict=True):
        e = int(min(per_kind, c))
        if e:
            split = 1 + rng.multinomial(c - e, rng.dirichlet(np.full(e, 4.0)))
            for r, size in enumerate(split):
                rounds[r].append((label, int(size)))
    return [ep for r in rounds for ep in (r[i] for i in rng.permutation(len(r)))]


def _plan(num_flows, rng, attack_fraction, mix, per_kind, clean_prefix, benign_rate):
    """Flow start times (s), profile ids, round-robin slots and episode ids, time-ordered."""
    n_clean = int(np.ceil(clean_prefix * num_flows))
    n_attack = min(round(attack_fraction * num_flows), max(0, num_flows - n_clean - 1))
    n_benign = num_flows - n_attack
    t_benign = np.cumsum(rng.exponential(1.0 / benign_rate, n_benign))
    w = np.array([b.weight for b in BENIGN_PROFILES])
    kinds = [rng.choice(len(w), size=n_benign, p=w / w.sum())]
    times, slots, eps = [t_benign], [np.full(n_benign, -1)], [np.full(n_benign, -1)]
    episodes = _episodes(n_attack, mix, per_kind, rng) if n_attack else []
    if episodes:
        # Episodes go after benign flow n_clean, so rows 0..n_clean are all benign. Rates
        # are raised together if the episodes would not fit in 80% of the time left.
        t0 = t_benign[n_clean]
        window = max(t_benign[-1] - t0, 1.0 / benign_rate)  # tiny tables: allow overhang
        dur = np.array([c / ATTACK_PROFILES[label].weight for label, c in episodes])
        dur /= max(1.0, dur.sum() / (0.8 * window))
        gaps = rng.dirichlet(np.ones(len(episodes) + 1)) * (window - dur.sum())
        starts = t0 + np.cumsum(gaps[:-1]) + np.r_[0.0, np.cumsum(dur)[:-1]]
        names = list(ATTACK_PROFILES)
        for e, ((label, c), s, d) in enumerate(zip(episodes, starts, dur, strict=True)):
            i = np.arange(c)
            if ATTACK_PROFILES[label].periodic:  # fixed interval, +-5% jitter
                times.append(s + d * (i + 0.5 + rng.uniform(-0.05, 0.05, c)) / c)
            else:  # Poisson arrivals conditioned to fill [s, s + d]
                g = np.cumsum(rng.exponential(1.0, c + 1))
                times.append(s + d * g[:-1] / g[-1])
            kinds.append(np.full(c, _FIRST_ATTACK + names.index(label)))
            slots.append(i)
            eps.append(np.full(c, e))
    t = np.concatenate(times)
    order = np.argsort(t, kind="stable")  # ties: benign first
    cat = [np.concatenate(a)[order] for a in (kinds, slots, eps)]
    return t[order], *cat, episodes


def _iso(t_us: np.ndarray) -> pa.Array:
    """Sorted datetime64[us] -> ISO strings with microseconds (8x numpy's own formatting)."""
    day, rest = np.divmod(t_us.astype(np.int64), 86_400_000_000)
    sec, frac = np.divmod(rest, 1_000_000)
    days = np.arange(day[0], day[-1] + 1).astype("datetime64[D]")
    date = pa.array(np.datetime_as_string(days)).take(pa.array(day - day[0]))
    hms = pa.array([f"{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}" for i in range(86_400)])
    micro = pc.utf8_lpad(pc.cast(pa.array(frac), pa.string()), 6, "0")
    return pc.binary_join_element_wise(date, "T", hms.take(pa.array(sec)), ".", micro, "")


def generate(
    num_flows: int,
    seed: int,
    *,
    start: str = "2017-07-07T08:00:00",
    attack_fraction: float = DEFAULT_ATTACK_FRACTION,
    attack_mix: Mapping[str, float] | None = None,
    episodes_per_kind: int = 3,
    clean_prefix: float = 0.3,
    benign_rate: float = 20.0,
) -> pa.Table:
    """``num_flows`` time-ordered flows in the canonical schema, raw values as the meter writes.

    Columns: metadata (``timestamp`` ISO with microseconds, ``src_ip``, ``dst_ip``,
    ``src_port``, ``flow_id``; strings, as ``clean.canonicalize`` returns them), the
    features of the 2017 release plus ``protocol`` (float64), ``label``. Values are raw:
    NaN/inf rates on zero-duration flows, -1 windows; ``write`` cleans for Parquet.

    ``attack_fraction`` of the flows (at most ``1 - clean_prefix``) are attacks, split by
    ``attack_mix`` (label -> weight; default ``DEFAULT_ATTACK_MIX``) into
    ``episodes_per_kind`` episodes per label, all after the first ``clean_prefix`` of the
    rows. Benign flows arrive at ``benign_rate`` per second. The same arguments give the
    same table. The schema metadata ``METADATA_KEY`` lists the episodes (rows, times).
    """
    mix = dict(DEFAULT_ATTACK_MIX if attack_mix is None else attack_mix)
    unknown = sorted(set(mix) - set(ATTACK_PROFILES))
    if unknown:
        raise ValueError(f"unknown attack labels {unknown}; known: {sorted(ATTACK_PROFILES)}")
    if num_flows < 1 or episodes_per_kind < 1 or benign_rate <= 0:
        raise ValueError("num_flows, episodes_per_kind and benign_rate must be positive")
    if not 0.0 <= clean_prefix < 1.0 or not 0.0 <= attack_fraction <= 1.0 - clean_prefix:
        raise ValueError(
            f"need 0 <= clean_prefix < 1 and 0 <= attack_fraction <= 1 - clean_prefix, got "
            f"{clean_prefix=}, {attack_fraction=}"
        )
    if attack_fraction > 0 and not any(w > 0 for w in mix.values()):
        raise ValueError("attack_mix has no positive weight")
    rng = np.random.default_rng([seed, 0])
    t, kind, slot, ep, episodes = _plan(
        num_flows, rng, attack_fraction, mix, episodes_per_kind, clean_prefix, benign_rate
    )
    cols: dict[str, np.ndarray] = {}
    for c, lo in enumerate(range(0, num_flows, _CHUNK)):
        chunk = flows.simulate(kind[lo : lo + _CHUNK], np.random.default_rng([seed, 1, c]))
        for name, v in chunk.items():
            cols.setdefault(name, np.empty(num_flows))[lo : lo + len(v)] = v

    draw = rng.integers(0, 1 << 30, size=(5, num_flows))
    src_ip, dst_ip, sport, cols["dst_port"], cols["protocol"] = flows.endpoints(kind, slot, draw)
    t_us = np.datetime64(start, "us") + np.rint(t * 1e6).astype("timedelta64[us]")
    stamps = _iso(t_us)
    int_str = [
        pa.array(cols[c].astype(np.int64)).cast(pa.string()) for c in ("dst_port", "protocol")
    ]
    out = {
        "timestamp": stamps,
        "src_ip": src_ip,
        "dst_ip": dst_ip,
        "src_port": sport,
        "flow_id": pc.binary_join_element_wise(src_ip, dst_ip, sport, *int_str, "-"),
    }
    for f in schema.FEATURES:
        if schema.spelling(f, "cicids2017") is not None:
            out[f] = pa.array(cols[f])
    out[schema.LABEL] = pa.array([pr.label for pr in flows.PROFILES]).take(pa.array(kind))

    info = []
    for e, (label, c) in enumerate(episodes):
        rows = np.flatnonzero(ep == e)
        info.append({"label": label, "flows": c, "first_row": int(rows[0]),
                     "last_row": int(rows[-1]), "start": str(t_us[rows[0]]),
                     "end": str(t_us[rows[-1]])})  # fmt: skip
    meta = {"seed": seed, "num_flows": num_flows, "start": start,
            "attack_fraction": attack_fraction, "attack_mix": mix,
            "clean_prefix": clean_prefix, "benign_rate": benign_rate,
            "episodes": sorted(info, key=lambda d: d["first_row"])}  # fmt: skip
    return pa.table(out).replace_schema_metadata({METADATA_KEY: json.dumps(meta)})
