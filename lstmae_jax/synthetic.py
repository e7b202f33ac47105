"""Generated CICFlowMeter flows with attack episodes: the embedded default data.

``generate`` simulates every flow packet by packet (direction, payload bytes, arrival time,
TCP flags), then reduces the packets to the CICFlowMeter features the way the meter does,
so the features are consistent by construction: totals are sums, means are totals over
counts, standard deviations are sample (n-1) ones, rates are amounts per second of a
duration in microseconds, active/idle periods split at the 5 s activity timeout.
Quirks of the 2017 release that are kept on purpose (checked on the shared samples):

* single-packet flows have duration 0, so ``flow_byts_s`` is NaN (no payload) or inf and
  ``flow_pkts_s`` is inf, while the per-direction packet rates are 0;
* ``init_*_win_byts`` is -1 for a direction without packets and for UDP;
* the flow-wide packet-length statistics count the first packet twice, so
  ``pkt_len_mean = (bytes + first) / (n + 1)`` and ``pkt_size_avg = (bytes + first) / n``;
* subflow fields equal the totals; bulk fields are 0.

Deliberate departures: header bytes are constant per flow, so ``fwd_header_len =
tot_fwd_pkts * fwd_seg_size_min`` (real files vary per packet, e.g. SYN options); flag
counts are true counts (the 2017 release holds only 0/1 there); a flow ends at the 120 s
flow timeout and its later packets are dropped (the meter would open a new flow).

Traffic: benign kinds (web over HTTPS and HTTP, DNS, NTP, SSH, mail, keepalives and stray
single packets) arrive as a Poisson process; attack episodes (PortScan, DoS Hulk, DDoS,
SSH-Patator, FTP-Patator, Bot beacons) are dense bursts placed after the first
``clean_prefix`` of the flows, so a temporal split can train on benign-only traffic. Attack
rates are compressed against CICIDS2017 (where a Patator run is ~2 flows/s) so that each
episode is a run of mostly-attack flows with benign flows interleaved.

``write`` writes the canonical Parquet (cleaned by ``clean.canonicalize``, exactly what the
converter makes of the raw CSV) or imitations of the raw 2017 / 2018 CSV files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from lstmae_jax import clean, schema

ACTIVITY_TIMEOUT_US = 5_000_000  # CICFlowMeter: a gap above this ends an active period
FLOW_TIMEOUT_US = 120_000_000  # CICFlowMeter: a flow ends this long after its first packet
_CHUNK = 1 << 16  # flows simulated per numpy pass; bounds memory, fixed for determinism
_W = 12  # width of padded choice tables: even odds for choices of 1, 2, 3, 4 or 6 values


@dataclasses.dataclass(frozen=True)
class _Profile:
    """One kind of flow. Sizes are payload bytes, times microseconds; (median, log-sigma)."""

    label: str
    weight: float  # benign: share of benign flows; attack: flows/s inside an episode
    ports: tuple[int, ...]  # destination ports; (0,) draws any port (scans)
    pkts: tuple[float, float, int, int]  # packets per flow: median, log-sigma, min, max
    fwd: tuple[float, float, float, int]  # client->server: P(payload), median, sigma, max
    bwd: tuple[float, float, float, int]  # server->client, same fields
    iat: tuple[float, float]  # packet inter-arrival time: median, log-sigma
    src: str  # address pools (_POOLS)
    dst: str
    proto: int = 6
    p_bwd: float = 0.5  # P(packet after the first is server->client); -1: alternate
    handshake: bool = True  # SYN, SYN-ACK without payload open the flow
    scan: bool = False  # the answer to the SYN is RST-ACK (closed port)
    p_idle: float = 0.0  # P(a gap is an idle period longer than the activity timeout)
    p_fin: float = 0.7  # P(last packet carries FIN)
    p_rst: float = 0.0  # P(last packet carries RST, when not FIN)
    win_fwd: tuple[int, ...] = (29200, 64240, 65535, 8192)  # initial TCP window
    win_bwd: tuple[int, ...] = (28960, 65160, 64240, 1040)
    hdr: tuple[int, ...] = (20, 32)  # header bytes per packet
    periodic: bool = False  # episode flows at fixed intervals, round robin over src hosts


_UDP = dict(proto=17, p_bwd=-1.0, handshake=False, p_fin=0.0, win_fwd=(-1,), win_bwd=(-1,))
# fmt: off
BENIGN_PROFILES = (
    # label, share, ports, packets, fwd payload, bwd payload, IAT, src pool, dst pool
    _Profile("Benign", 0.28, (443,), (14, 1.0, 3, 300), (0.35, 250, 1.0, 1460),  # HTTPS
             (0.7, 900, 0.8, 1460), (15_000, 2.2), "lan", "web", p_idle=0.004, p_rst=0.1),
    _Profile("Benign", 0.08, (80, 8080), (8, 0.9, 3, 200), (0.4, 400, 0.6, 1460),  # HTTP
             (0.6, 1100, 0.6, 1460), (10_000, 2.0), "lan", "web", p_rst=0.1),
    _Profile("Benign", 0.30, (53,), (2, 0.25, 2, 6), (1.0, 38, 0.25, 512),  # DNS
             (1.0, 120, 0.5, 512), (700, 1.0), "lan", "dns", **_UDP),
    _Profile("Benign", 0.03, (123,), (2, 0.0, 2, 2), (1.0, 48, 0.0, 48),  # NTP
             (1.0, 48, 0.0, 48), (25_000, 0.5), "lan", "web", **_UDP),
    _Profile("Benign", 0.02, (22,), (60, 1.0, 12, 400), (0.9, 52, 0.6, 1460),  # SSH
             (0.9, 90, 0.9, 1460), (40_000, 2.0), "lan", "servers", p_idle=0.02, p_fin=0.9,
             win_fwd=(29200, 64240), win_bwd=(28960, 65160), hdr=(32,)),
    _Profile("Benign", 0.04, (25, 587, 993, 143), (20, 0.7, 6, 200),  # mail
             (0.6, 300, 1.2, 1460), (0.6, 150, 1.0, 1460), (30_000, 1.8), "lan", "web",
             p_fin=0.8),
    # Keepalives and the tails of long connections that the meter cut into flows.
    _Profile("Benign", 0.245, (443, 5223, 80, 993), (3, 0.5, 2, 12), (0.3, 1, 1.0, 80),
             (0.3, 30, 1.0, 200), (1_500_000, 1.5), "lan", "web", p_bwd=0.45,
             handshake=False, p_idle=0.25, p_fin=0.3, p_rst=0.1,
             win_fwd=(251, 1026, 254, 501), win_bwd=(235, 1040, 980, 2052)),
    # Stray single packets (late ACK/RST after a close): the zero-duration flows.
    _Profile("Benign", 0.005, (443, 80), (1, 0.0, 1, 1), (0.3, 1, 0.0, 1), (0.0, 1, 0.0, 1),
             (1, 0.0), "lan", "web", handshake=False, p_fin=0.3, p_rst=0.5,
             win_fwd=(251, 1026), win_bwd=(-1,)),
)
ATTACK_PROFILES = {  # label, flows/s in an episode, ...
    # SYN to any port, RST-ACK back from the closed port (6 bytes: the meter counts the
    # Ethernet padding as payload, as the 2017 files show).
    "PortScan": _Profile("PortScan", 300, (0,), (2, 0.15, 1, 2), (0.0, 1, 0.0, 1),
                         (0.9, 6, 0.0, 6), (45, 0.5), "attacker", "victim", p_bwd=1.0,
                         scan=True, p_fin=0.0, win_fwd=(1024, 29200), win_bwd=(0,),
                         hdr=(24, 40)),
    # HTTP GET floods with unique URLs: one request, a page back.
    "DoS Hulk": _Profile("DoS Hulk", 200, (80,), (8, 0.35, 4, 24), (0.25, 380, 0.15, 1460),
                         (0.55, 1200, 0.4, 1460), (4_000, 1.6), "attacker", "victim",
                         p_bwd=0.45, p_fin=0.5, p_rst=0.3, win_fwd=(29200,),
                         win_bwd=(28960,), hdr=(32,)),
    # LOIC HTTP from many sources: tiny requests, the same ~11.6 kB answer.
    "DDoS": _Profile("DDoS", 150, (80,), (8, 0.25, 4, 14), (0.3, 20, 0.1, 60),
                     (0.8, 2900, 0.05, 5840), (150_000, 2.0), "ddos_src", "victim", p_bwd=0.45,
                     p_fin=0.3, p_rst=0.4, win_fwd=(256, 8192), win_bwd=(229,), hdr=(20,)),
    # One failed login per connection.
    "SSH-Patator": _Profile("SSH-Patator", 40, (22,), (24, 0.15, 12, 40), (0.7, 64, 0.6, 1460),
                            (0.7, 100, 0.7, 1460), (12_000, 1.4), "attacker", "victim",
                            p_fin=0.95, win_fwd=(29200,), win_bwd=(28960, 247), hdr=(32,)),
    "FTP-Patator": _Profile("FTP-Patator", 40, (21,), (14, 0.15, 8, 24), (0.6, 14, 0.3, 64),
                            (0.6, 32, 0.4, 128), (25_000, 1.2), "attacker", "victim",
                            p_fin=0.95, win_fwd=(29200,), win_bwd=(28960, 227), hdr=(32,)),
    # 16 infected hosts, each beaconing to the C2 once a second.
    "Bot": _Profile("Bot", 16, (8080,), (6, 0.1, 5, 8), (0.35, 210, 0.1, 1460),
                    (0.35, 130, 0.1, 1460), (180_000, 0.5), "infected", "c2", p_fin=1.0,
                    win_fwd=(8192,), win_bwd=(237,), hdr=(20,), periodic=True),
}
DEFAULT_ATTACK_MIX = {"DoS Hulk": 0.30, "DDoS": 0.25, "PortScan": 0.25, "SSH-Patator": 0.07,
                      "FTP-Patator": 0.08, "Bot": 0.05}
# fmt: on
_PROFILES = (*BENIGN_PROFILES, *ATTACK_PROFILES.values())


def _pools() -> dict[str, list[str]]:
    ext = np.random.default_rng(2017).integers(1, 255, size=(300, 4))  # fixed, not the seed
    ext[:, 0] = np.array([13, 23, 31, 52, 64, 91, 104, 151, 172, 199])[ext[:, 0] % 10]
    lan = [f"192.168.10.{i}" for i in range(5, 45)]
    return {
        "lan": lan, "web": [".".join(map(str, r)) for r in ext[:280]],
        "dns": ["192.168.10.3"], "servers": ["192.168.10.50", "192.168.10.51", "192.168.10.8"],
        "victim": ["192.168.10.50"], "attacker": ["172.16.0.1"],
        "ddos_src": [".".join(map(str, r)) for r in ext[280:]] + ["172.16.0.1"],
        "infected": lan[:16], "c2": ["205.174.165.73"],
    }  # fmt: skip


_POOLS = _pools()
_IPS = pa.array([ip for pool in _POOLS.values() for ip in pool])
_POOL_AT = dict(zip(_POOLS, np.cumsum([0] + [len(p) for p in _POOLS.values()])[:-1], strict=True))


def _param_table() -> dict[str, np.ndarray]:
    """Profile parameters as arrays indexed by profile id (one row per profile)."""
    cols: dict[str, list] = {}
    for p in _PROFILES:
        row = dict(med=p.pkts[0], sig=p.pkts[1], nmin=p.pkts[2], nmax=p.pkts[3],
                   p_bwd=p.p_bwd, hs=p.handshake, scan=p.scan, tcp=p.proto == 6,
                   iat_med=p.iat[0], iat_sig=p.iat[1], p_idle=p.p_idle, p_fin=p.p_fin,
                   p_rst=p.p_rst, proto=p.proto, src_at=_POOL_AT[p.src],
                   src_n=len(_POOLS[p.src]), dst_at=_POOL_AT[p.dst], dst_n=len(_POOLS[p.dst]),
                   ports=np.resize(p.ports, _W), win_fwd=np.resize(p.win_fwd, _W),
                   win_bwd=np.resize(p.win_bwd, _W), hdr=np.resize(p.hdr, _W))  # fmt: skip
        for i, c in enumerate(("p", "med", "sig", "max")):  # [forward, backward]
            row[f"size_{c}"] = (p.fwd[i], p.bwd[i])
        for k, v in row.items():
            cols.setdefault(k, []).append(v)
    return {k: np.array(v) for k, v in cols.items()}


_P = _param_table()


def _stats(x: np.ndarray, seg: np.ndarray, num: int) -> dict[str, np.ndarray]:
    """Per-segment count, sum, mean, sample std, max, min of ``x`` (0 for empty segments).

    ``seg`` must be sorted (values of one segment contiguous), as packets of a flow are.
    """
    cnt = np.bincount(seg, minlength=num)
    tot = np.bincount(seg, weights=x, minlength=num)
    zero = np.zeros(num)
    mean = np.divide(tot, cnt, out=zero.copy(), where=cnt > 0)
    dev = x - mean[seg]  # two passes: exact enough for microsecond times squared
    ss = np.bincount(seg, weights=dev * dev, minlength=num)
    std = np.sqrt(np.divide(ss, cnt - 1, out=zero.copy(), where=cnt > 1))
    mx, mn, nz = zero.copy(), zero.copy(), cnt > 0
    starts = (np.cumsum(cnt) - cnt)[nz]
    if len(x):
        mx[nz] = np.maximum.reduceat(x, starts)
        mn[nz] = np.minimum.reduceat(x, starts)
    return {"cnt": cnt, "tot": tot, "mean": mean, "std": std, "max": mx, "min": mn}


def _simulate(kind: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Packets for flows of the given profile ids, reduced to CICFlowMeter features."""
    F, p = len(kind), _P
    n = np.clip(np.rint(p["med"][kind] * np.exp(p["sig"][kind] * rng.standard_normal(F))),
                p["nmin"][kind], p["nmax"][kind]).astype(np.int64)  # fmt: skip
    first = np.cumsum(n) - n
    flow = np.repeat(np.arange(F), n)
    pos = np.arange(len(flow)) - first[flow]
    k = kind[flow]
    u = rng.random((4, len(flow)))
    z = rng.standard_normal((2, len(flow)))

    hs = p["hs"][k]
    bwd = np.where(p["p_bwd"][k] < 0, pos % 2 == 1, u[0] < p["p_bwd"][k])
    bwd = (bwd | (hs & (pos == 1))) & (pos > 0)  # the first packet defines forward
    kd = 2 * k + bwd
    pick = {c: p[f"size_{c}"].ravel()[kd] for c in ("p", "med", "sig", "max")}
    size = np.clip(np.rint(pick["med"] * np.exp(pick["sig"] * z[0])), 1, pick["max"])
    opening = hs & ((pos == 0) | ((pos == 1) & ~p["scan"][k]))  # SYN, SYN-ACK: no payload
    size = np.where((u[1] < pick["p"]) & ~opening, size, 0.0)
    iat = np.minimum(np.floor(p["iat_med"][k] * np.exp(p["iat_sig"][k] * z[1])), 60e6)
    idle = u[2] < p["p_idle"][k]
    iat = np.where(idle, np.floor(5.5e6 + 24.5e6 * u[3]), iat)
    iat[pos == 0] = 0.0
    t = np.cumsum(iat)
    t -= t[first][flow]  # integer microseconds since the flow's first packet, exact
    keep = t < FLOW_TIMEOUT_US  # the meter ends a flow there; later packets are dropped
    if not keep.all():
        flow, pos, k, bwd, size, iat, t = (a[keep] for a in (flow, pos, k, bwd, size, iat, t))
        n = np.bincount(flow, minlength=F)
        first = np.cumsum(n) - n
    fwd, hs, last = ~bwd, p["hs"][k], first + n - 1

    # TCP flags: SYN (and SYN-ACK, or RST-ACK from a closed port) open the flow, every
    # packet but the first SYN acknowledges, payload is pushed, the last packet may close.
    tcp, scan = p["tcp"][k], p["scan"][k]
    end = rng.random(F)
    fin_f = end < p["p_fin"][kind]
    rst_f = ~fin_f & (end < p["p_fin"][kind] + p["p_rst"][kind])
    is_last = np.zeros(len(flow), dtype=bool)
    is_last[last] = True
    flag = {
        "fin": tcp & is_last & fin_f[flow],
        "syn": hs & ((pos == 0) | ((pos == 1) & ~scan)),
        "rst": tcp & ((is_last & rst_f[flow]) | (scan & (pos == 1))),
        "psh": tcp & (size > 0) & ~(scan & (pos == 1)),  # padding is not pushed data
        "ack": tcp & ~(hs & (pos == 0)),
    }

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(flow, weights=mask, minlength=F)

    nf = count(fwd)
    nb = n - nf
    sf = _stats(size[fwd], flow[fwd], F)
    sb = _stats(size[bwd], flow[bwd], F)
    # Flow-wide lengths: CICFlowMeter adds the first packet to these statistics twice.
    l1 = size[first]
    total = sf["tot"] + sb["tot"]
    mean_all = (total + l1) / (n + 1)
    dev = size - mean_all[flow]
    var_all = (np.bincount(flow, weights=dev * dev, minlength=F) + (l1 - mean_all) ** 2) / n
    fi = _stats(iat[pos > 0], flow[pos > 0], F)

    def dir_iat(mask: np.ndarray) -> dict[str, np.ndarray]:
        tm, fm = t[mask], flow[mask]
        same = fm[1:] == fm[:-1]
        return _stats(np.diff(tm)[same], fm[1:][same], F)

    fw_iat, bw_iat = dir_iat(fwd), dir_iat(bwd)
    # Active/idle: a gap above the activity timeout is an idle period and closes the
    # active period before it (recorded when longer than 0), as CICFlowMeter does.
    gap = (iat > ACTIVITY_TIMEOUT_US) & (pos > 0)
    idle_s = _stats(iat[gap], flow[gap], F)
    pstart = np.flatnonzero(gap | (pos == 0))
    pend = np.r_[pstart[1:], len(flow)] - 1
    span = t[pend] - t[pstart]
    closed = np.r_[gap[pstart[1:]], False] & (span > 0)
    act = _stats(span[closed], flow[pstart][closed], F)

    dur = t[last]
    has_dur = dur > 0
    per_s = 1e6 / np.where(has_dur, dur, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 and x/0 are the point
        zero_rate = np.where(total > 0, np.inf, np.nan)
    win = rng.integers(0, _W, size=(3, F))
    hdr = p["hdr"][kind, win[2]].astype(np.float64)
    out = {
        "flow_duration": dur, "tot_fwd_pkts": nf, "tot_bwd_pkts": nb,
        "totlen_fwd_pkts": sf["tot"], "totlen_bwd_pkts": sb["tot"],
        "fwd_pkt_len_max": sf["max"], "fwd_pkt_len_min": sf["min"],
        "fwd_pkt_len_mean": sf["mean"], "fwd_pkt_len_std": sf["std"],
        "bwd_pkt_len_max": sb["max"], "bwd_pkt_len_min": sb["min"],
        "bwd_pkt_len_mean": sb["mean"], "bwd_pkt_len_std": sb["std"],
        "flow_byts_s": np.where(has_dur, total * per_s, zero_rate),
        "flow_pkts_s": np.where(has_dur, n * per_s, np.inf),
        "fwd_pkts_s": np.where(has_dur, nf * per_s, 0.0),
        "bwd_pkts_s": np.where(has_dur, nb * per_s, 0.0),
        "fwd_header_len": nf * hdr, "bwd_header_len": nb * hdr,
        "pkt_len_min": np.where(nb > 0, np.minimum(sf["min"], sb["min"]), sf["min"]),
        "pkt_len_max": np.maximum(sf["max"], sb["max"]),
        "pkt_len_mean": mean_all, "pkt_len_std": np.sqrt(var_all), "pkt_len_var": var_all,
        "down_up_ratio": np.floor(nb / nf), "pkt_size_avg": (total + l1) / n,
        "fwd_seg_size_avg": sf["mean"], "bwd_seg_size_avg": sb["mean"],
        "subflow_fwd_pkts": nf, "subflow_fwd_byts": sf["tot"],
        "subflow_bwd_pkts": nb, "subflow_bwd_byts": sb["tot"],
        "init_fwd_win_byts": p["win_fwd"][kind, win[0]],
        "init_bwd_win_byts": np.where(nb > 0, p["win_bwd"][kind, win[1]], -1),
        "fwd_act_data_pkts": count(fwd & (size > 0)), "fwd_seg_size_min": hdr,
        "fwd_psh_flags": count(fwd & flag["psh"]), "bwd_psh_flags": count(bwd & flag["psh"]),
    }  # fmt: skip
    for name, s in (("flow_iat", fi), ("fwd_iat", fw_iat), ("bwd_iat", bw_iat),
                    ("active", act), ("idle", idle_s)):  # fmt: skip
        for stat in ("mean", "std", "max", "min"):
            out[f"{name}_{stat}"] = s[stat]
    out["fwd_iat_tot"], out["bwd_iat_tot"] = fw_iat["tot"], bw_iat["tot"]
    for f in ("fin", "syn", "rst", "psh", "ack"):
        out[f"{f}_flag_cnt"] = count(flag[f])
    zeros = np.zeros(F)  # never set: URG, CWR, ECE flags, bulk transfers (0 in the real data)
    for f in ("fwd_urg_flags", "bwd_urg_flags", "urg_flag_cnt", "cwr_flag_cnt", "ece_flag_cnt",
              "fwd_byts_b_avg", "fwd_pkts_b_avg", "fwd_blk_rate_avg", "bwd_byts_b_avg",
              "bwd_pkts_b_avg", "bwd_blk_rate_avg"):  # fmt: skip
        out[f] = zeros
    return out


DEFAULT_ATTACK_FRACTION = 0.25
METADATA_KEY = b"synthetic"  # schema metadata: JSON with the arguments and the episodes
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
        chunk = _simulate(kind[lo : lo + _CHUNK], np.random.default_rng([seed, 1, c]))
        for name, v in chunk.items():
            cols.setdefault(name, np.empty(num_flows))[lo : lo + len(v)] = v

    draw = rng.integers(0, 1 << 30, size=(5, num_flows))
    src = _P["src_at"][kind] + np.where(slot >= 0, slot, draw[0]) % _P["src_n"][kind]
    dst = _P["dst_at"][kind] + draw[1] % _P["dst_n"][kind]
    port = _P["ports"][kind, draw[2] % _W]
    cols["dst_port"] = np.where(port == 0, 1 + draw[3] % 65535, port).astype(np.float64)
    cols["protocol"] = _P["proto"][kind].astype(np.float64)
    sport = pa.array(32768 + draw[4] % 28232).cast(pa.string())  # Linux ephemeral range
    src_ip, dst_ip = _IPS.take(pa.array(src)), _IPS.take(pa.array(dst))
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
    out[schema.LABEL] = pa.array([pr.label for pr in _PROFILES]).take(pa.array(kind))

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


# ----------------------------------------------------------------------------- writing

WRITE_STYLES = ("canonical", "cicids2017", "csecicids2018")
FORMATS = ("parquet", "csv")
# The 2017 header has a leading space on every name except the first of each group.
_NO_SPACE_2017 = frozenset({
    "Total Length of Fwd Packets", "Bwd Packet Length Max", "Flow Bytes/s", "Fwd IAT Total",
    "Bwd IAT Total", "Fwd PSH Flags", "Fwd Packets/s", "FIN Flag Count", "Fwd Avg Bytes/Bulk",
    "Bwd Avg Bulk Rate", "Subflow Fwd Packets", "Init_Win_bytes_forward", "Active Mean",
    "Idle Mean",
})  # fmt: skip
_LABELS_2017 = {schema.BENIGN: "BENIGN"} | {
    f"Web Attack - {a}": f"Web Attack \u2013 {a}" for a in ("Brute Force", "XSS", "Sql Injection")
}
_LABELS_2018 = {
    "DoS Hulk": "DoS attacks-Hulk", "DoS GoldenEye": "DoS attacks-GoldenEye",
    "DoS slowloris": "DoS attacks-Slowloris", "DoS Slowhttptest": "DoS attacks-SlowHTTPTest",
    "DDoS": "DDoS attacks-LOIC-HTTP", "FTP-Patator": "FTP-BruteForce",
    "SSH-Patator": "SSH-Bruteforce", "Web Attack - Brute Force": "Brute Force -Web",
    "Web Attack - XSS": "Brute Force -XSS", "Web Attack - Sql Injection": "SQL Injection",
    "Infiltration": "Infilteration",
}  # fmt: skip


def raw_header(style: str) -> list[tuple[str, str]]:
    """(raw name, canonical column) of a release's CSV header, in its order.

    ``cicids2017``: MachineLearningCVE (no identifiers, no Protocol), ``Fwd Header Length``
    twice. ``csecicids2018``: ``Dst Port``, ``Protocol``, ``Timestamp``, then the features.
    """
    if style == "cicids2017":
        cols = []
        for f in schema.FEATURES:
            sp = schema.spelling(f, style)
            if sp is not None and f != "protocol":
                cols.append((sp if sp in _NO_SPACE_2017 else " " + sp, f))
            if f == "bwd_seg_size_avg":
                cols.append((" Fwd Header Length", "fwd_header_len"))
        return [*cols, (" Label", schema.LABEL)]
    if style == "csecicids2018":
        head = [("Dst Port", "dst_port"), ("Protocol", "protocol"), ("Timestamp", "timestamp")]
        rest = [(schema.spelling(f, style), f) for f in schema.FEATURES
                if schema.spelling(f, style) is not None and f not in ("dst_port", "protocol")]  # fmt: skip
        return [*head, *rest, ("Label", schema.LABEL)]
    raise ValueError(f"no raw header for style {style!r}")


def _is_float(name: str) -> bool:
    """Whether the releases store a feature as a real number (the rest are integers)."""
    return name.endswith(("_mean", "_std", "_var", "_s")) or name in (
        "pkt_size_avg", "fwd_seg_size_avg", "bwd_seg_size_avg")  # fmt: skip


def _raw_column(table: pa.Table, raw: str, name: str, style: str, fmt: str) -> pa.Array:
    col = table.column(name).combine_chunks()
    if name == schema.LABEL:
        names = _LABELS_2017 if style == "cicids2017" else _LABELS_2018
        uniq = pc.unique(col)
        mapped = pa.array([names.get(v, v) for v in uniq.to_pylist()], pa.string())
        return mapped.take(pc.index_in(col, uniq))
    if name == "timestamp":  # ISO -> dd/mm/yyyy HH:MM:SS
        part = [pc.utf8_slice_codeunits(col, a, b) for a, b in ((8, 10), (5, 7), (0, 4), (11, 19))]
        date = pc.binary_join_element_wise(*part[:3], "/")
        return pc.binary_join_element_wise(date, part[3], " ")
    v = col.to_numpy(zero_copy_only=False).astype(np.float64)
    if not _is_float(name):
        if not np.array_equal(v, np.rint(v)):  # also catches NaN and inf
            raise ValueError(f"column {name} ({raw!r}) must hold whole numbers to be written")
        return pa.array(v.astype(np.int64))
    if fmt == "parquet" or np.isfinite(v).all():
        return pa.array(v)
    text = pc.cast(pa.array(v), pa.string())  # shortest repr: the round trip is exact
    return pc.replace_substring(pc.replace_substring(text, "inf", "Infinity"), "nan", "NaN")


def _atomic_write(path: str, write_to) -> None:
    """Writes through a temporary file beside ``path``, renamed over it when complete."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write_to(f)
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write(
    table: pa.Table,
    path: str,
    *,
    style: str = "canonical",
    fmt: str | None = None,
    nonfinite: str = "drop",
    negative: str = "clamp",
) -> str:
    """Writes flows atomically; returns ``path``. ``fmt`` None: ``csv`` if path ends so.

    ``canonical``: the table as the converter would store it (``clean.canonicalize`` with
    the given policies; the episode metadata is kept). ``cicids2017`` / ``csecicids2018``:
    the release's header, integer columns as integers, labels in the release's spelling,
    non-finite rates as ``Infinity``/``NaN`` in CSV (IEEE values in Parquet, where the
    duplicated 2017 column is named ``Fwd Header Length.1`` as in the shared samples).
    CSV text is UTF-8: the 2017 en dash is a character, not the cp1252 byte 0x96.
    """
    fmt = fmt or ("csv" if path.endswith(".csv") else "parquet")
    if style not in WRITE_STYLES or fmt not in FORMATS:
        raise ValueError(f"style must be in {WRITE_STYLES} and fmt in {FORMATS}: {style}, {fmt}")
    if style == "canonical":
        meta = (table.schema.metadata or {}).get(METADATA_KEY)
        out, report = clean.canonicalize(
            table, source="generated", nonfinite=nonfinite, negative=negative
        )
        if meta is not None:
            note = "first_row/last_row count rows of the generated table, before cleaning"
            info = json.loads(meta) | {"clean": report.to_json(), "note": note}
            out = out.replace_schema_metadata({METADATA_KEY: json.dumps(info)})
        header = out.column_names
    else:
        cols = raw_header(style)
        if fmt == "parquet":  # a Parquet schema cannot hold two equal names usefully
            dup = [i for i, (r, _) in enumerate(cols) if r == " Fwd Header Length"][1:]
            cols = [(r + ".1" if i in dup else r, n) for i, (r, n) in enumerate(cols)]
        arrays = [_raw_column(table, r, n, style, fmt) for r, n in cols]
        header = [r for r, _ in cols]
        out = pa.Table.from_arrays(arrays, names=header)

    def write_to(f) -> None:
        if fmt == "parquet":
            pq.write_table(out, f, compression="zstd")
        else:
            f.write((",".join(header) + "\n").encode())  # the releases quote nothing
            options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
            pa_csv.write_csv(out, f, options)

    _atomic_write(path, write_to)
    return path
