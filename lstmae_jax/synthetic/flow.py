"""Flow kinds (profiles) and their packet-level simulation, reduced to CICFlowMeter features.

``simulate`` makes every flow packet by packet (direction, payload bytes, arrival time,
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

Kinds: benign (web over HTTPS and HTTP, DNS, NTP, SSH, mail, keepalives and stray single
packets) and attacks (PortScan, DoS Hulk, DDoS, SSH-Patator, FTP-Patator, Bot beacons), each
a ``_Profile`` of packet counts, sizes, timing, flags and address pools. When flows happen
is ``synthetic``'s job.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

ACTIVITY_TIMEOUT_US = 5_000_000  # CICFlowMeter: a gap above this ends an active period
FLOW_TIMEOUT_US = 120_000_000  # CICFlowMeter: a flow ends this long after its first packet
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
# fmt: on
# A flow's kind is its index here: the benign profiles, then the attacks in their order.
PROFILES = (*BENIGN_PROFILES, *ATTACK_PROFILES.values())


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
    for p in PROFILES:
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


def simulate(kind: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
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


def endpoints(
    kind: np.ndarray, slot: np.ndarray, draw: np.ndarray
) -> tuple[pa.Array, pa.Array, pa.Array, np.ndarray, np.ndarray]:
    """(src_ip, dst_ip, src_port strings; dst_port, protocol float64) of flows of these kinds.

    Addresses come from the profiles' pools, the source round robin by ``slot`` where it is
    >= 0 (periodic episodes), else drawn. ``draw``: random integers, shape (5, flows).
    """
    src = _P["src_at"][kind] + np.where(slot >= 0, slot, draw[0]) % _P["src_n"][kind]
    dst = _P["dst_at"][kind] + draw[1] % _P["dst_n"][kind]
    port = _P["ports"][kind, draw[2] % _W]
    dst_port = np.where(port == 0, 1 + draw[3] % 65535, port).astype(np.float64)
    protocol = _P["proto"][kind].astype(np.float64)
    sport = pa.array(32768 + draw[4] % 28232).cast(pa.string())  # Linux ephemeral range
    return _IPS.take(pa.array(src)), _IPS.take(pa.array(dst)), sport, dst_port, protocol
