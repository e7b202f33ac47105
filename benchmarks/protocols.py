"""The data of each stage-1 protocol of ``benchmarks/detection.py``: which flows train,
which calibrate, which windows are tested, in which groups. Everything in
``../shared/data`` but the demo's generated day.

Per flow (T = 1), on days training never saw: each training day is split in time (its
first ``TRAIN_OF_DAY`` of benign flows train, the rest calibrate the threshold and stop
training early), so calibration sees every training day.

* ``cicids2017``: train on the benign heads of six 2017 day files (not Tuesday's); test
  the Tuesday day in order (FTP-, SSH-Patator) and the stratified sample of all days with
  the 7 Thursday web-attack rows (PortScan, DDoS, brute force; small: web attacks, bot);
* ``cicids2017_ddos_day``: the same heads on the 16 features of the Friday DDoS day file;
  test that day from flow 10,000 on (the heads' DDoS rows come before);
* ``cicids2017_improved``: the corrected re-extraction split by its ``Timestamp`` day:
  train on Monday's benign flows, test Tuesday, Thursday and Friday;
* ``csecicids2018``: train on the benign flows of the all-days 2018 sample; test the
  14-02-2018 brute-force day, and the sample's attacks of other days (DDoS HOIC, DoS
  Hulk, ...; small: bot, infiltration) against the 14-02 benign flows.

In sequence (T > 1):

* ``sequence``: the Friday DDoS day in order at T = 5: train on the first 80% of its first
  benign run, calibrate on the rest of that run, test every window from the end of the
  first attack run and the benign run after it (``detection_harness.sequence_cuts``);
* ``demo``: ``make demo``'s generated day (100,000 flows, seed 0) at T = 10, with its
  settings (batch 512, learning rate 0.003), split 60/20/20 in time.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import detection_harness as harness
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lstmae_jax.data import dataset, windows

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
TRAIN_OF_DAY = 0.8  # per training day: earlier benign flows train, the rest calibrate

HEADS = [  # benign heads of the 2017 day files, in day order (Tuesday's is a test day)
    "cicids2017/monday_head.parquet",
    "cicids2017/thursday_morning_webattacks_head.parquet",
    "cicids2017/thursday_afternoon_infilteration_head.parquet",
    "cicids2017/friday_morning_head.parquet",
    "cicids2017/friday_afternoon_portscan_head.parquet",
    "cicids2017/friday_afternoon_ddos_head.parquet",
]
TUESDAY = "cicids2017_tuesday_ordered/tuesday_bruteforce_ordered_subsample.parquet"
STRATIFIED = "cicids2017/stratified_sample_all_days.parquet"
WEB_ROWS = "cicids2017/thursday_webattack_rows.parquet"  # 7 web-attack flows, no benign
DDOS_DAY = "cicids2017_friday_ddos_day/friday_ddos_day_part1.parquet"
DDOS_DAY_FROM = 10_000  # its first 9,998 flows are the DDoS head, a training file
IMPROVED = "cicids2017_improved/improved_random_sample_non_wednesday.parquet"
Y2018 = [
    "csecicids2018/random_sample_all_days.parquet",
    "csecicids2018/wednesday_14_02_bruteforce_balanced_subsample.parquet",
]
SEQUENCE_T = 5
DEMO_T, DEMO_FLOWS = 10, 100_000


@dataclasses.dataclass
class Protocol:
    name: str
    flows: dataset.Flows
    window: int
    split_N: np.ndarray  # per row: 0 train, 1 validation (calibration), 2 test, -1 none
    tests: dict[str, np.ndarray]  # test group -> starts of its windows
    about: str
    config: dict  # stage-1 options of this protocol (beyond the library defaults)

    def windowed(self, kinds, ports: int = 0) -> windows.Windowed:
        """The protocol's windows (stage 1: benign training windows only), with the
        scalers of ``kinds`` fitted on the training rows (``ports``: as categories)."""
        return windows.build(
            self.flows,
            window=self.window,
            split_N=self.split_N,
            train_benign_only=True,
            scaler_kinds=tuple(kinds),
            scaler_ports=ports,
        )


def _split(n: int, train, val, test) -> np.ndarray:
    split_N = np.full(n, -1, np.int8)
    for code, rows in enumerate((train, val, test)):
        split_N[rows] = code
    return split_N


def _benign_by_day(flows: dataset.Flows, days) -> tuple[np.ndarray, np.ndarray]:
    tr, va = [], []
    for f in days:
        rows = np.flatnonzero((flows.file_N == f) & (flows.label_N == 0))
        cut = int(TRAIN_OF_DAY * len(rows))
        tr.append(rows[:cut])
        va.append(rows[cut:])
    return np.concatenate(tr), np.concatenate(va)


def _rows(flows: dataset.Flows, f: int) -> np.ndarray:
    return np.flatnonzero(flows.file_N == f)


def _per_flow(name, flows, train, val, tests, about) -> Protocol:
    split_N = _split(len(flows), train, val, np.unique(np.concatenate(list(tests.values()))))
    cfg = {"window": 1, "eval_batch_size": 2048}
    return Protocol(name, flows, 1, split_N, tests, about, cfg)


def cicids2017(_cache: str) -> Protocol:
    flows = dataset.load_flows([str(DATA / f) for f in [*HEADS, TUESDAY, STRATIFIED, WEB_ROWS]])
    train, val = _benign_by_day(flows, range(len(HEADS)))
    n = len(HEADS)
    sample = np.concatenate([_rows(flows, n + 1), _rows(flows, n + 2)])
    about = (
        "train: 6 benign 2017 day heads (not Tuesday); test: Tuesday, the stratified sample"
        " with the 7 Thursday web-attack rows"
    )
    tests = {"tuesday": _rows(flows, n), "stratified": sample}
    return _per_flow("cicids2017", flows, train, val, tests, about)


def cicids2017_ddos_day(_cache: str) -> Protocol:
    flows = dataset.load_flows([str(DATA / f) for f in [*HEADS, DDOS_DAY]])
    train, val = _benign_by_day(flows, range(len(HEADS)))
    tests = {"friday_ddos_day": _rows(flows, len(HEADS))[DDOS_DAY_FROM:]}
    about = (
        f"train: the same heads on the day file's {len(flows.features)} features; test: the"
        f" Friday DDoS day from flow {DDOS_DAY_FROM:,} on"
    )
    return _per_flow("cicids2017_ddos_day", flows, train, val, tests, about)


def cicids2017_improved(cache: str) -> Protocol:
    """The re-extraction, one Parquet file per ``Timestamp`` day (written to ``cache``)."""
    table = pq.read_table(DATA / IMPROVED)
    stamp = pc.cast(table.column("Timestamp"), "string")
    day_N = pc.utf8_slice_codeunits(stamp, 0, 10).to_numpy(zero_copy_only=False)
    days = sorted(set(day_N))
    files = []
    for d in days:
        path = os.path.join(cache, f"improved_{d}.parquet")
        pq.write_table(table.filter(day_N == d), path)
        files.append(path)
    flows = dataset.load_flows(files)
    train, val = _benign_by_day(flows, [0])
    tests = {days[i]: _rows(flows, i) for i in range(1, len(days))}
    about = f"train: benign flows of {days[0]} (Monday); test: {', '.join(days[1:])}"
    return _per_flow("cicids2017_improved", flows, train, val, tests, about)


def csecicids2018(_cache: str) -> Protocol:
    flows = dataset.load_flows([str(DATA / f) for f in Y2018])
    train, val = _benign_by_day(flows, [0])
    day = _rows(flows, 1)
    sample_attacks = np.flatnonzero((flows.file_N == 0) & (flows.label_N != 0))
    others = np.r_[sample_attacks, day[flows.label_N[day] == 0]]
    about = (
        "train: benign flows of the all-days 2018 sample; test: the 14-02-2018 day, and the"
        " sample's attacks of other days against the 14-02 benign flows"
    )
    tests = {"2018-02-14": day, "other days": others}
    return _per_flow("csecicids2018", flows, train, val, tests, about)


def sequence(_cache: str) -> Protocol:
    flows = dataset.load_flows(str(DATA / DDOS_DAY))
    train_end, first_run, select_end = harness.sequence_cuts(flows.label_N, TRAIN_OF_DAY)
    n, t = len(flows), SEQUENCE_T
    split_N = _split(
        n, np.arange(train_end), np.arange(train_end, first_run), np.arange(first_run, n)
    )
    starts = np.arange(select_end, n - t + 1)
    about = (
        f"the Friday DDoS day in order, T={t}: train rows [0, {train_end}), calibrate rows"
        f" [{train_end}, {first_run}), test windows from row {select_end:,} on"
    )
    return Protocol(
        "sequence", flows, t, split_N, {"friday_ddos_day": starts}, about, {"window": t}
    )


def demo(cache: str) -> Protocol:
    from lstmae_jax.synthetic import timeline

    path = os.path.join(cache, "demo.parquet")
    if not os.path.exists(path):
        timeline.write(timeline.generate(DEMO_FLOWS, 0), path, style="canonical")
    flows = dataset.load_flows(path)
    split_N = dataset.per_file_split(flows.file_N, (0.6, 0.2, 0.2))
    seg = windows.segment_ids(flows.file_N, split_N)
    starts = windows.window_starts(seg, DEMO_T)
    tests = {"demo": starts[split_N[starts] == 2]}
    about = (
        f"`make demo`'s generated day ({DEMO_FLOWS:,} flows, seed 0), T={DEMO_T}, split"
        " 60/20/20 in time, its settings (batch 512, learning rate 0.003)"
    )
    cfg = {"window": DEMO_T, "batch_size": 512, "learning_rate": 0.003, "eval_batch_size": 2048}
    return Protocol("demo", flows, DEMO_T, split_N, tests, about, cfg)


PER_FLOW = (cicids2017, cicids2017_ddos_day, cicids2017_improved, csecicids2018)
PROTOCOLS = {f.__name__: f for f in (*PER_FLOW, sequence, demo)}
