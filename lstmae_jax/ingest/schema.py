"""One canonical schema for CICFlowMeter flow records, and the maps onto it.

Three naming styles exist in the wild:

* ``cicids2017``: CICIDS2017 as released (MachineLearningCVE / TrafficLabelling CSVs):
  long names, most with a stray leading space (``" Destination Port"``), and
  ``Fwd Header Length`` twice (the second copy is a CICFlowMeter bug; pandas names it
  ``Fwd Header Length.1``).
* ``cicids2017_improved``: the corrected re-extraction by Engelen et al. (2021):
  ``Total Fwd Packet``, ``FWD Init Win Bytes``, plus ``Fwd/Bwd RST Flags``, ``ICMP Code``,
  ``ICMP Type``, ``Total TCP Flow Time`` and ``Attempted Category``.
* ``csecicids2018``: CSE-CIC-IDS2018 short names (``Dst Port``, ``Tot Fwd Pkts``).

Names are matched after stripping whitespace and lower-casing, so stray spaces and case
never matter. Each canonical feature has a *kind* that drives cleaning and scaling:

* ``count``, ``bytes``, ``time``, ``rate``: non-negative by definition; a negative value is
  a sentinel or a timer artefact (``Init_Win_bytes_*`` = -1 means "no packet seen";
  ``Flow Duration`` = -1 is a clock glitch) and is clamped to 0 or the row is dropped;
  log1p before standardisation because they are heavy-tailed.
* ``flag``, ``ratio``: small non-negative numbers; standardised only. A negative value
  cannot be a count of flags or a ratio of counts, so it takes the same clamp-or-drop
  policy as the kinds above.
* ``port``, ``protocol``, ``code``: identifiers used as numbers; standardised only. ICMP
  code/type use -1 for "not ICMP", which is kept (it is a category, not a sentinel error).
  A value outside ``RANGES`` (a port of -5 or 70000) names no port at all, and no clamp
  would repair it: the row is dropped as ``out_of_range``.

Identifier columns (flow id, IPs, source port, timestamp) are metadata: kept by the
converter, never model features.
"""

from __future__ import annotations

import re

STYLES = ("cicids2017", "cicids2017_improved", "csecicids2018")

# canonical name -> (kind, 2017 as released, 2017 improved, 2018 short). None: absent.
_FEATURES: tuple[tuple[str, str, str | None, str | None, str | None], ...] = (
    ("dst_port", "port", "Destination Port", "Dst Port", "Dst Port"),
    ("protocol", "protocol", "Protocol", "Protocol", "Protocol"),
    ("flow_duration", "time", "Flow Duration", "Flow Duration", "Flow Duration"),
    ("tot_fwd_pkts", "count", "Total Fwd Packets", "Total Fwd Packet", "Tot Fwd Pkts"),
    ("tot_bwd_pkts", "count", "Total Backward Packets", "Total Bwd packets", "Tot Bwd Pkts"),
    (
        "totlen_fwd_pkts",
        "bytes",
        "Total Length of Fwd Packets",
        "Total Length of Fwd Packet",
        "TotLen Fwd Pkts",
    ),
    (
        "totlen_bwd_pkts",
        "bytes",
        "Total Length of Bwd Packets",
        "Total Length of Bwd Packet",
        "TotLen Bwd Pkts",
    ),
    (
        "fwd_pkt_len_max",
        "bytes",
        "Fwd Packet Length Max",
        "Fwd Packet Length Max",
        "Fwd Pkt Len Max",
    ),
    (
        "fwd_pkt_len_min",
        "bytes",
        "Fwd Packet Length Min",
        "Fwd Packet Length Min",
        "Fwd Pkt Len Min",
    ),
    (
        "fwd_pkt_len_mean",
        "bytes",
        "Fwd Packet Length Mean",
        "Fwd Packet Length Mean",
        "Fwd Pkt Len Mean",
    ),
    (
        "fwd_pkt_len_std",
        "bytes",
        "Fwd Packet Length Std",
        "Fwd Packet Length Std",
        "Fwd Pkt Len Std",
    ),
    (
        "bwd_pkt_len_max",
        "bytes",
        "Bwd Packet Length Max",
        "Bwd Packet Length Max",
        "Bwd Pkt Len Max",
    ),
    (
        "bwd_pkt_len_min",
        "bytes",
        "Bwd Packet Length Min",
        "Bwd Packet Length Min",
        "Bwd Pkt Len Min",
    ),
    (
        "bwd_pkt_len_mean",
        "bytes",
        "Bwd Packet Length Mean",
        "Bwd Packet Length Mean",
        "Bwd Pkt Len Mean",
    ),
    (
        "bwd_pkt_len_std",
        "bytes",
        "Bwd Packet Length Std",
        "Bwd Packet Length Std",
        "Bwd Pkt Len Std",
    ),
    ("flow_byts_s", "rate", "Flow Bytes/s", "Flow Bytes/s", "Flow Byts/s"),
    ("flow_pkts_s", "rate", "Flow Packets/s", "Flow Packets/s", "Flow Pkts/s"),
    ("flow_iat_mean", "time", "Flow IAT Mean", "Flow IAT Mean", "Flow IAT Mean"),
    ("flow_iat_std", "time", "Flow IAT Std", "Flow IAT Std", "Flow IAT Std"),
    ("flow_iat_max", "time", "Flow IAT Max", "Flow IAT Max", "Flow IAT Max"),
    ("flow_iat_min", "time", "Flow IAT Min", "Flow IAT Min", "Flow IAT Min"),
    ("fwd_iat_tot", "time", "Fwd IAT Total", "Fwd IAT Total", "Fwd IAT Tot"),
    ("fwd_iat_mean", "time", "Fwd IAT Mean", "Fwd IAT Mean", "Fwd IAT Mean"),
    ("fwd_iat_std", "time", "Fwd IAT Std", "Fwd IAT Std", "Fwd IAT Std"),
    ("fwd_iat_max", "time", "Fwd IAT Max", "Fwd IAT Max", "Fwd IAT Max"),
    ("fwd_iat_min", "time", "Fwd IAT Min", "Fwd IAT Min", "Fwd IAT Min"),
    ("bwd_iat_tot", "time", "Bwd IAT Total", "Bwd IAT Total", "Bwd IAT Tot"),
    ("bwd_iat_mean", "time", "Bwd IAT Mean", "Bwd IAT Mean", "Bwd IAT Mean"),
    ("bwd_iat_std", "time", "Bwd IAT Std", "Bwd IAT Std", "Bwd IAT Std"),
    ("bwd_iat_max", "time", "Bwd IAT Max", "Bwd IAT Max", "Bwd IAT Max"),
    ("bwd_iat_min", "time", "Bwd IAT Min", "Bwd IAT Min", "Bwd IAT Min"),
    ("fwd_psh_flags", "flag", "Fwd PSH Flags", "Fwd PSH Flags", "Fwd PSH Flags"),
    ("bwd_psh_flags", "flag", "Bwd PSH Flags", "Bwd PSH Flags", "Bwd PSH Flags"),
    ("fwd_urg_flags", "flag", "Fwd URG Flags", "Fwd URG Flags", "Fwd URG Flags"),
    ("bwd_urg_flags", "flag", "Bwd URG Flags", "Bwd URG Flags", "Bwd URG Flags"),
    ("fwd_rst_flags", "flag", None, "Fwd RST Flags", None),
    ("bwd_rst_flags", "flag", None, "Bwd RST Flags", None),
    ("fwd_header_len", "bytes", "Fwd Header Length", "Fwd Header Length", "Fwd Header Len"),
    ("bwd_header_len", "bytes", "Bwd Header Length", "Bwd Header Length", "Bwd Header Len"),
    ("fwd_pkts_s", "rate", "Fwd Packets/s", "Fwd Packets/s", "Fwd Pkts/s"),
    ("bwd_pkts_s", "rate", "Bwd Packets/s", "Bwd Packets/s", "Bwd Pkts/s"),
    ("pkt_len_min", "bytes", "Min Packet Length", "Packet Length Min", "Pkt Len Min"),
    ("pkt_len_max", "bytes", "Max Packet Length", "Packet Length Max", "Pkt Len Max"),
    ("pkt_len_mean", "bytes", "Packet Length Mean", "Packet Length Mean", "Pkt Len Mean"),
    ("pkt_len_std", "bytes", "Packet Length Std", "Packet Length Std", "Pkt Len Std"),
    ("pkt_len_var", "bytes", "Packet Length Variance", "Packet Length Variance", "Pkt Len Var"),
    ("fin_flag_cnt", "flag", "FIN Flag Count", "FIN Flag Count", "FIN Flag Cnt"),
    ("syn_flag_cnt", "flag", "SYN Flag Count", "SYN Flag Count", "SYN Flag Cnt"),
    ("rst_flag_cnt", "flag", "RST Flag Count", "RST Flag Count", "RST Flag Cnt"),
    ("psh_flag_cnt", "flag", "PSH Flag Count", "PSH Flag Count", "PSH Flag Cnt"),
    ("ack_flag_cnt", "flag", "ACK Flag Count", "ACK Flag Count", "ACK Flag Cnt"),
    ("urg_flag_cnt", "flag", "URG Flag Count", "URG Flag Count", "URG Flag Cnt"),
    # CICFlowMeter's "CWE" is a typo for the TCP CWR flag; the re-extraction fixed it.
    ("cwr_flag_cnt", "flag", "CWE Flag Count", "CWR Flag Count", "CWE Flag Count"),
    ("ece_flag_cnt", "flag", "ECE Flag Count", "ECE Flag Count", "ECE Flag Cnt"),
    ("down_up_ratio", "ratio", "Down/Up Ratio", "Down/Up Ratio", "Down/Up Ratio"),
    ("pkt_size_avg", "bytes", "Average Packet Size", "Average Packet Size", "Pkt Size Avg"),
    (
        "fwd_seg_size_avg",
        "bytes",
        "Avg Fwd Segment Size",
        "Fwd Segment Size Avg",
        "Fwd Seg Size Avg",
    ),
    (
        "bwd_seg_size_avg",
        "bytes",
        "Avg Bwd Segment Size",
        "Bwd Segment Size Avg",
        "Bwd Seg Size Avg",
    ),
    ("fwd_byts_b_avg", "bytes", "Fwd Avg Bytes/Bulk", "Fwd Bytes/Bulk Avg", "Fwd Byts/b Avg"),
    ("fwd_pkts_b_avg", "count", "Fwd Avg Packets/Bulk", "Fwd Packet/Bulk Avg", "Fwd Pkts/b Avg"),
    ("fwd_blk_rate_avg", "rate", "Fwd Avg Bulk Rate", "Fwd Bulk Rate Avg", "Fwd Blk Rate Avg"),
    ("bwd_byts_b_avg", "bytes", "Bwd Avg Bytes/Bulk", "Bwd Bytes/Bulk Avg", "Bwd Byts/b Avg"),
    ("bwd_pkts_b_avg", "count", "Bwd Avg Packets/Bulk", "Bwd Packet/Bulk Avg", "Bwd Pkts/b Avg"),
    ("bwd_blk_rate_avg", "rate", "Bwd Avg Bulk Rate", "Bwd Bulk Rate Avg", "Bwd Blk Rate Avg"),
    ("subflow_fwd_pkts", "count", "Subflow Fwd Packets", "Subflow Fwd Packets", "Subflow Fwd Pkts"),
    ("subflow_fwd_byts", "bytes", "Subflow Fwd Bytes", "Subflow Fwd Bytes", "Subflow Fwd Byts"),
    ("subflow_bwd_pkts", "count", "Subflow Bwd Packets", "Subflow Bwd Packets", "Subflow Bwd Pkts"),
    ("subflow_bwd_byts", "bytes", "Subflow Bwd Bytes", "Subflow Bwd Bytes", "Subflow Bwd Byts"),
    (
        "init_fwd_win_byts",
        "bytes",
        "Init_Win_bytes_forward",
        "FWD Init Win Bytes",
        "Init Fwd Win Byts",
    ),
    (
        "init_bwd_win_byts",
        "bytes",
        "Init_Win_bytes_backward",
        "Bwd Init Win Bytes",
        "Init Bwd Win Byts",
    ),
    ("fwd_act_data_pkts", "count", "act_data_pkt_fwd", "Fwd Act Data Pkts", "Fwd Act Data Pkts"),
    ("fwd_seg_size_min", "bytes", "min_seg_size_forward", "Fwd Seg Size Min", "Fwd Seg Size Min"),
    ("active_mean", "time", "Active Mean", "Active Mean", "Active Mean"),
    ("active_std", "time", "Active Std", "Active Std", "Active Std"),
    ("active_max", "time", "Active Max", "Active Max", "Active Max"),
    ("active_min", "time", "Active Min", "Active Min", "Active Min"),
    ("idle_mean", "time", "Idle Mean", "Idle Mean", "Idle Mean"),
    ("idle_std", "time", "Idle Std", "Idle Std", "Idle Std"),
    ("idle_max", "time", "Idle Max", "Idle Max", "Idle Max"),
    ("idle_min", "time", "Idle Min", "Idle Min", "Idle Min"),
    ("icmp_code", "code", None, "ICMP Code", None),
    ("icmp_type", "code", None, "ICMP Type", None),
    ("total_tcp_flow_time", "time", None, "Total TCP Flow Time", None),
)

FEATURES: tuple[str, ...] = tuple(f[0] for f in _FEATURES)
KIND: dict[str, str] = {f[0]: f[1] for f in _FEATURES}
# Kinds that are non-negative by definition: a negative value is a sentinel or an artefact
# (cleaned by the ``negative`` policy).
NONNEGATIVE_KINDS = frozenset({"count", "bytes", "time", "rate", "flag", "ratio"})
# Heavy-tailed kinds: the scaler applies log1p before standardising.
LOG_KINDS = frozenset({"count", "bytes", "time", "rate"})
# Identifier kinds and their valid values (inclusive); rows outside are dropped.
RANGES: dict[str, tuple[float, float]] = {
    "port": (0, 65535),
    "protocol": (0, 255),
    "code": (-1, 255),  # ICMP code/type; -1 = not ICMP
}

# Metadata columns: canonical name -> spellings seen (all styles).
METADATA: dict[str, tuple[str, ...]] = {
    "flow_id": ("Flow ID",),
    "src_ip": ("Source IP", "Src IP"),
    "src_port": ("Source Port", "Src Port"),
    "dst_ip": ("Destination IP", "Dst IP"),
    "timestamp": ("Timestamp",),
    "source_row_id": ("id",),
    "attempted_category": ("Attempted Category",),
}
LABEL = "label"
LABEL_SPELLINGS = ("Label",)
# The duplicated "Fwd Header Length" of CICIDS2017 (second copy). It always equals the
# first copy in the released files; the converter checks that and then drops it.
DUPLICATE_FWD_HEADER = "fwd_header_len_dup"
_DUPLICATE_SPELLINGS = ("Fwd Header Length.1", "Fwd Header Length_1")


def _key(name: str) -> str:
    """Matching key: whitespace stripped and collapsed, lower-case."""
    return re.sub(r"\s+", " ", name.strip()).lower()


_ALIASES: dict[str, str] = {}
_STYLE_OF: dict[str, set[str]] = {}
for _name, _kind, *_spellings in _FEATURES:
    for _style, _sp in zip(STYLES, _spellings, strict=True):
        if _sp is not None:
            _ALIASES[_key(_sp)] = _name
            _STYLE_OF.setdefault(_key(_sp), set()).add(_style)
    _ALIASES[_key(_name)] = _name  # canonical names map to themselves
for _name, _spellings in METADATA.items():
    for _sp in (*_spellings, _name):
        _ALIASES[_key(_sp)] = _name
for _sp in (*LABEL_SPELLINGS, LABEL):
    _ALIASES[_key(_sp)] = LABEL
for _sp in (*_DUPLICATE_SPELLINGS, DUPLICATE_FWD_HEADER):
    _ALIASES[_key(_sp)] = DUPLICATE_FWD_HEADER


def canonical_name(raw: str) -> str | None:
    """Canonical name of a raw column name, or None if the column is unknown."""
    return _ALIASES.get(_key(raw))


def canonical_names(raw_names: list[str]) -> list[str | None]:
    """Canonical names for a header, position by position.

    A second occurrence of a name that maps to ``fwd_header_len`` (the raw CICIDS2017
    CSV header has ``Fwd Header Length`` twice) becomes ``DUPLICATE_FWD_HEADER``. Any
    other repeated canonical name is an error, because silently keeping one copy could
    pick the wrong column.
    """
    out: list[str | None] = []
    seen: dict[str, str] = {}
    for raw in raw_names:
        name = canonical_name(raw)
        if name == "fwd_header_len" and name in seen:
            name = DUPLICATE_FWD_HEADER
        if name is not None and name in seen:
            raise ValueError(
                f"columns {seen[name]!r} and {raw!r} both map to canonical column {name!r}"
            )
        if name is not None:
            seen[name] = raw
        out.append(name)
    return out


def detect_style(raw_names: list[str]) -> str:
    """Which naming style a header is in (the one matching most of its feature names)."""
    votes = dict.fromkeys(STYLES, 0)
    for raw in raw_names:
        for style in _STYLE_OF.get(_key(raw), ()):
            votes[style] += 1
    # Tie-break toward the style whose distinctive names appear ("Tot Fwd Pkts" etc.):
    # most names are shared by all three, so the max is decided by the distinctive ones.
    best = max(STYLES, key=lambda s: votes[s])
    if votes[best] == 0:
        return "unknown"
    return best


# ---------------------------------------------------------------------------- labels

BENIGN = "Benign"
# Normalised label (lower-case key) -> (canonical label, attack family).
_LABELS: dict[str, tuple[str, str]] = {
    "benign": (BENIGN, "Benign"),
    # CICIDS2017 as released
    "dos hulk": ("DoS Hulk", "DoS"),
    "dos goldeneye": ("DoS GoldenEye", "DoS"),
    "dos slowloris": ("DoS slowloris", "DoS"),
    "dos slowhttptest": ("DoS Slowhttptest", "DoS"),
    "ddos": ("DDoS", "DDoS"),
    "portscan": ("PortScan", "PortScan"),
    "ftp-patator": ("FTP-Patator", "BruteForce"),
    "ssh-patator": ("SSH-Patator", "BruteForce"),
    "bot": ("Bot", "Bot"),
    "web attack - brute force": ("Web Attack - Brute Force", "WebAttack"),
    "web attack - xss": ("Web Attack - XSS", "WebAttack"),
    "web attack - sql injection": ("Web Attack - Sql Injection", "WebAttack"),
    "infiltration": ("Infiltration", "Infiltration"),
    "heartbleed": ("Heartbleed", "Heartbleed"),
    # CICIDS2017 improved (Engelen et al.)
    "botnet": ("Bot", "Bot"),
    "infiltration - portscan": ("Infiltration - Portscan", "Infiltration"),
    # CSE-CIC-IDS2018
    "ddos attacks-loic-http": ("DDoS attacks-LOIC-HTTP", "DDoS"),
    "ddos attack-hoic": ("DDOS attack-HOIC", "DDoS"),
    "ddos attack-loic-udp": ("DDOS attack-LOIC-UDP", "DDoS"),
    "dos attacks-goldeneye": ("DoS attacks-GoldenEye", "DoS"),
    "dos attacks-hulk": ("DoS attacks-Hulk", "DoS"),
    "dos attacks-slowhttptest": ("DoS attacks-SlowHTTPTest", "DoS"),
    "dos attacks-slowloris": ("DoS attacks-Slowloris", "DoS"),
    "ftp-bruteforce": ("FTP-BruteForce", "BruteForce"),
    "ssh-bruteforce": ("SSH-Bruteforce", "BruteForce"),
    "brute force -web": ("Brute Force -Web", "WebAttack"),
    "brute force -xss": ("Brute Force -XSS", "WebAttack"),
    "sql injection": ("SQL Injection", "WebAttack"),
    "infilteration": ("Infilteration", "Infiltration"),
}
FAMILIES = (
    "Benign",
    "DoS",
    "DDoS",
    "PortScan",
    "BruteForce",
    "WebAttack",
    "Bot",
    "Infiltration",
    "Heartbleed",
    "Attempted",
    "Other",
)

# Dashes as found in the wild: the cp1252 en dash, its UTF-8 mojibake, and U+FFFD left
# behind by a lossy re-encoding of the same en dash.
_DASHES = re.compile("\u2013|\u2014|\u00e2\u20ac\u201c|\ufffd|\u0096")


def normalize_label(raw: str) -> str:
    """Canonical label: trimmed, dashes repaired, case of known labels unified.

    Unknown labels are kept (trimmed, dashes repaired) rather than rejected: a new attack
    name in a new release should still load, and shows up in the converter's label counts.
    The improved 2017 release's ``"<attack> - Attempted"`` labels are kept as they are.
    """
    text = re.sub(r"\s+", " ", _DASHES.sub("-", raw)).strip()
    key = (
        re.sub(r"\s*-\s*", " - ", text.lower())
        if text.lower().startswith("web attack")
        else text.lower()
    )
    known = _LABELS.get(key)
    return known[0] if known else text


def family(label: str) -> str:
    """Attack family of a canonical label (``Other`` for labels not in the table)."""
    if label.lower().endswith("- attempted"):
        return "Attempted"
    known = _LABELS.get(label.lower())
    return known[1] if known else "Other"


def is_attack(label: str) -> bool:
    return label != BENIGN


_SPELLING: dict[tuple[str, str], str] = {}
for _name, _kind, *_spellings in _FEATURES:
    for _style, _sp in zip(STYLES, _spellings, strict=True):
        if _sp is not None:
            _SPELLING[(_name, _style)] = _sp


def spelling(name: str, style: str) -> str | None:
    """How a canonical feature is spelled in a style (None: the style lacks it).

    Without the stray leading spaces of the 2017 release; writers that imitate it add them.
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    return _SPELLING.get((name, style))
