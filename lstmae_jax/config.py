"""The one config system: a frozen dataclass, each option declared once with its help.

``launch/train.py`` turns every field into an absl flag (``define_flags``), so an option
exists in exactly one place, and ``--flagfile`` works as usual. Library functions take
the dataclass (or explicit arguments), never flags. ``smoke()`` is the tiny variant that
drives tests and CI.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import re
from typing import Any

from absl import flags


def _opt(
    default: Any,
    help: str,  # noqa: A002 - "help" reads best in the table
    *,
    resume_may_change: bool = False,
    stage2_from_stage1: bool = False,
    choices: tuple = (),
) -> Any:
    """A config field. ``resume_may_change``: a resume may give another value (it does not
    change what was computed so far: coordinates of a multi-host run, logging, speed-only
    options, when to stop, what is fitted after training). ``stage2_from_stage1``: stage 2
    must use stage 1's value (stage 1's encoder and scaler saw that data, split, cleaning).
    ``choices``: the values allowed, if only some are."""
    metadata = {
        "help": help,
        "resume_may_change": resume_may_change,
        "stage2_from_stage1": stage2_from_stage1,
        "choices": choices,
    }
    default = tuple(default) if isinstance(default, (list, tuple)) else default
    return dataclasses.field(default=default, metadata=metadata)


SCALERS = ("quantile", "standard", "log", "robust", "minmax")
RECONSTRUCTION_SCORES = ("mae", "sse", "zscore", "mahalanobis")
MEMBER_SCORES = (*RECONSTRUCTION_SCORES, "latent", "rarity")
FUSIONS = ("min", "fisher")
# ``--members=auto``: chosen by the worst family on days training never saw
# (``benchmarks/detection.py --parts=stage1``, docs/results.md).
AUTO_MEMBERS = {True: ("log:latent", "log:rarity"), False: ("log:sse",)}


@dataclasses.dataclass(frozen=True)
class Config:
    # -- data
    data: str = _opt(
        "",
        "Parquet file, directory, glob, or comma-separated list in time order.",
        stage2_from_stage1=True,
    )
    features: tuple[str, ...] = _opt(
        (),
        "Canonical feature names; empty: all common to every file.",
        stage2_from_stage1=True,
    )
    nonfinite: str = _opt(
        "drop",
        "Inf/NaN feature values: drop the row, or zero the value.",
        stage2_from_stage1=True,
        choices=("drop", "zero"),
    )
    negative: str = _opt(
        "clamp",
        "Negative values in non-negative columns: clamp to 0, or drop row.",
        stage2_from_stage1=True,
        choices=("clamp", "drop"),
    )
    window: int = _opt(
        10, "T, flows per window (1 = per-flow mode for sampled files).", stage2_from_stage1=True
    )
    stride: int = _opt(
        1, "Rows between the starts of consecutive windows.", stage2_from_stage1=True
    )
    split: str = _opt(
        "per_file",
        "temporal (leakage-free: earliest rows of the whole list train), per_file (the same"
        " inside each file, so every day has train, validation and test rows) or random"
        " (stratified).",
        stage2_from_stage1=True,
        choices=("temporal", "per_file", "random"),
    )
    split_fractions: tuple[float, ...] = _opt(
        (0.6, 0.2, 0.2), "Train, validation, test fractions.", stage2_from_stage1=True
    )
    scaler: str = _opt(
        "quantile",
        "quantile (benign training quantiles -> normal scores), standard (log1p of"
        " heavy-tailed features + z-score), log (log1p of every non-negative magnitude,"
        " flags and ratios too, + z-score), robust (log1p + median/IQR) or minmax ([0, 1]).",
        stage2_from_stage1=True,
        choices=SCALERS,
    )
    input_clip: float = _opt(0.0, "Clip scaled inputs to [-c, c] (0: no clipping).")
    port_categories: int = _opt(
        0,
        "K > 0: the K most frequent destination ports of the benign training flows (and"
        " other ports below 1024, registered, ephemeral) become one-hot columns in every"
        " representation instead of dst_port's number; contributions fold back to dst_port.",
        stage2_from_stage1=True,
    )
    stage1_benign_only: bool = _opt(True, "Stage 1 trains on windows with no attack flow only.")
    allow_data_change: bool = _opt(
        False,
        "Resume although an input file changed, appeared or vanished since the run started"
        " (refused otherwise).",
        resume_may_change=True,
    )
    # -- model
    model: str = _opt(
        "lstm_ae",
        "lstm_ae (two-stage), dnn or cnn (baselines).",
        choices=("lstm_ae", "dnn", "cnn"),
    )
    stage: int = _opt(1, "lstm_ae only: 1 = autoencoder, 2 = classifier on the latent code.")
    encoder_sizes: tuple[int, ...] = _opt(
        (64,),
        "LSTM-AE encoder layer sizes; the last is the latent.",
        stage2_from_stage1=True,
    )
    decoder_sizes: tuple[int, ...] = _opt(
        (32,), "LSTM-AE decoder layer sizes.", stage2_from_stage1=True
    )
    unroll: int = _opt(
        0,
        "lax.scan unroll of the LSTM layers (0: auto, min(window, 16)); speed only.",
        resume_may_change=True,
    )
    lstm_backward: str = _opt(
        "autodiff",
        "LSTM gradients: autodiff (lax.scan's transpose) or fused (weight gradients as large"
        " matmuls after the backward scan, as cuDNN does); speed only.",
        resume_may_change=True,
        choices=("autodiff", "fused"),
    )
    dtype: str = _opt(
        "float32",
        "Matmul operands: float32 or bfloat16 (parameters and LSTM state stay float32).",
        choices=("float32", "bfloat16"),
    )
    classifier_hidden: tuple[int, ...] = _opt(
        (64,), "Hidden sizes of the stage-2 latent classifier."
    )
    freeze_encoder: bool = _opt(
        True, "Stage 2 keeps the stage-1 encoder fixed (else fine-tunes it)."
    )
    task: str = _opt(
        "multiclass",
        "Classifiers: multiclass (attack names) or binary.",
        choices=("multiclass", "binary"),
    )
    class_weights: bool = _opt(False, "Weight the cross-entropy by inverse class frequency.")
    dropout: float = _opt(0.1, "Dropout rate of the classifier heads and baselines.")
    # -- anomaly score (stage 1)
    score: str = _opt(
        "sse",
        "sse (sum of squared per-feature errors), mae (mean abs. error), zscore or"
        " mahalanobis (diagonal / full Gaussian on the per-feature error vector): the"
        " reconstruction score of the --scaler network.",
        resume_may_change=True,
        choices=RECONSTRUCTION_SCORES,
    )
    members: tuple[str, ...] = _opt(
        ("auto",),
        "Stage 1: more detectors fused with the --scaler network's --score, each"
        " REPRESENTATION:SCORE (a --scaler choice; a reconstruction score, latent: distance"
        " of the code to benign codes, or rarity: Mahalanobis distance of the scaled flow);"
        " auto: log:latent,log:rarity at --window=1, log:sse above; empty: none.",
    )
    fusion: str = _opt(
        "min",
        "How fused members combine, each turned into its benign tail probability p on the"
        " validation windows: min (the smallest p) or fisher (the sum of -log p).",
        resume_may_change=True,
        choices=FUSIONS,
    )
    # -- anomaly threshold (stage 1)
    threshold: str = _opt(
        "fpr",
        "fpr (target FPR on benign val), quantile, or fixed (the paper's).",
        resume_may_change=True,
        choices=("fpr", "quantile", "fixed"),
    )
    target_fpr: float = _opt(
        0.01,
        "threshold=fpr: the false-positive rate allowed on benign val.",
        resume_may_change=True,
    )
    threshold_quantile: float = _opt(
        0.99, "threshold=quantile: quantile of benign val scores.", resume_may_change=True
    )
    threshold_value: float = _opt(
        0.1, "threshold=fixed: the value (the paper's MAE threshold).", resume_may_change=True
    )
    # -- training
    batch_size: int = _opt(256, "Global batch size (split across all devices).")
    eval_batch_size: int = _opt(1024, "Global batch size for evaluation.", resume_may_change=True)
    steps_per_call: int = _opt(
        1,
        "Train steps per jitted call (lax.scan over stacked batches; same results); speed only.",
        resume_may_change=True,
    )
    epochs: int = _opt(
        100,
        "Maximum epochs (a cap: early stopping normally ends training).",
        resume_may_change=True,
    )
    learning_rate: float = _opt(1e-3, "Adam learning rate (peak, after warmup).")
    warmup_steps: int = _opt(100, "Linear learning-rate warmup from 0 over this many steps.")
    lr_patience: int = _opt(2, "Epochs without validation improvement before the LR drops.")
    lr_decay: float = _opt(0.3, "Factor the LR is multiplied by on a validation plateau.")
    grad_clip: float = _opt(1.0, "Clip gradients to this global norm (0: no clipping).")
    weight_decay: float = _opt(0.0, "Decoupled weight decay (AdamW); 0: plain Adam.")
    input_noise: float = _opt(
        1.0, "Stage 1: std of Gaussian noise on the scaled inputs (denoising AE; 0: off)."
    )
    patience: int = _opt(
        6, "Early stopping: epochs without validation improvement.", resume_may_change=True
    )
    min_delta: float = _opt(1e-3, "Relative val-loss decrease that counts as improvement.")
    seed: int = _opt(0, "Seed of initialisation, data order and random splits.")
    # -- logging and checkpoints
    log_every_steps: int = _opt(50, "Steps between JSONL metric lines.", resume_may_change=True)
    tensorboard: bool = _opt(
        False,
        "Also write the metrics.jsonl records as TensorBoard events in the run directory's"
        " tensorboard/ (needs the tensorboard extra).",
        resume_may_change=True,
    )
    checkpoint_every_steps: int = _opt(
        500, "Steps between checkpoints (also saved every epoch).", resume_may_change=True
    )
    keep_checkpoints: int = _opt(
        3, "Latest checkpoints kept (the best one is kept as well).", resume_may_change=True
    )
    # -- several hosts
    distributed: bool = _opt(
        False, "Call jax.distributed.initialize (multi-host).", resume_may_change=True
    )
    coordinator_address: str = _opt(
        "", "host:port of process 0 (empty: auto-detect).", resume_may_change=True
    )
    num_processes: int = _opt(0, "Number of processes (0: auto-detect).", resume_may_change=True)
    process_id: int = _opt(-1, "This process's id (-1: auto-detect).", resume_may_change=True)
    share_data: bool = _opt(
        False,
        "Multi-host: each process loads only its share of --data (Parquet row groups dealt"
        " out in turn) instead of all of it; classes, split and scaler are computed across"
        " processes (docs/training.md, 'Several hosts').",
    )

    @property
    def is_stage1(self) -> bool:
        """The LSTM-AE (or its ensemble): trained on reconstruction, scored for anomalies."""
        return self.model == "lstm_ae" and self.stage == 1

    @property
    def is_stage2(self) -> bool:
        """The classifier on a trained stage 1's latent code."""
        return self.model == "lstm_ae" and self.stage == 2

    def __post_init__(self) -> None:
        """Rejects bad values now, not after an hour of training."""
        for f in dataclasses.fields(self):
            allowed = f.metadata["choices"]
            if allowed and getattr(self, f.name) not in allowed:
                raise ValueError(f"--{f.name}={getattr(self, f.name)!r}: expected one of {allowed}")
        checks = {
            "stage": self.stage in (1, 2),
            "window": self.window >= 1,
            "stride": self.stride >= 1,
            "unroll": self.unroll >= 0,
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "eval_batch_size": self.eval_batch_size >= 1,
            "steps_per_call": self.steps_per_call >= 1,
            "learning_rate": math.isfinite(self.learning_rate) and self.learning_rate > 0,
            "patience": self.patience >= 1,
            "lr_patience": self.lr_patience >= 1,
            "warmup_steps": self.warmup_steps >= 0,
            "lr_decay": 0.0 < self.lr_decay <= 1.0,
            "grad_clip": self.grad_clip >= 0.0,
            "weight_decay": self.weight_decay >= 0.0,
            "min_delta": 0.0 <= self.min_delta < 1.0,
            "input_clip": self.input_clip >= 0.0,
            "port_categories": self.port_categories >= 0,
            "input_noise": self.input_noise >= 0.0,
            "target_fpr": 0.0 <= self.target_fpr < 1.0,
            "threshold_quantile": 0.0 <= self.threshold_quantile <= 1.0,
            "dropout": 0.0 <= self.dropout < 1.0,
            "split_fractions": len(self.split_fractions) == 3
            and min(self.split_fractions) >= 0
            and abs(sum(self.split_fractions) - 1.0) < 1e-9,
            "encoder_sizes": len(self.encoder_sizes) >= 1 and min(self.encoder_sizes) >= 1,
            "decoder_sizes": len(self.decoder_sizes) >= 1 and min(self.decoder_sizes) >= 1,
        }
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"--{key}={getattr(self, key)!r} is out of range")
        self._check_members()
        if self.share_data and self.port_categories:
            raise ValueError(
                "--share_data with --port_categories is not supported yet: the most frequent"
                " ports would have to be counted across processes"
            )
        if self.share_data and self.split == "random":
            raise ValueError(
                "--share_data needs --split=temporal or per_file: a random split of windows"
                " needs every window on every process"
            )
        interval = min(self.log_every_steps, self.checkpoint_every_steps)
        if self.steps_per_call > interval:  # every K-step call must fit between them
            raise ValueError(
                f"--steps_per_call={self.steps_per_call} must be <= --log_every_steps and"
                f" --checkpoint_every_steps (here {interval})"
            )

    def _check_members(self) -> None:
        if self.members == ("auto",):
            return
        for m in self.members:
            rep, _, kind = m.partition(":")
            if rep not in SCALERS or kind not in MEMBER_SCORES:
                raise ValueError(
                    f"--members: {m!r} is not REPRESENTATION:SCORE (representations"
                    f" {SCALERS}, scores {MEMBER_SCORES}), nor auto"
                )
        if "auto" in self.members:
            raise ValueError("--members=auto stands alone")

    def stage1_members(self) -> tuple[str, ...]:
        """Stage 1's members, in order: the --scaler network's --score first, then
        --members (``auto`` resolved by the window), each once."""
        extra = AUTO_MEMBERS[self.window == 1] if self.members == ("auto",) else self.members
        out = [f"{self.scaler}:{self.score}"]
        out += [m for m in extra if m not in out]
        return tuple(out)

    def stage1_networks(self) -> tuple[str, ...]:
        """The representation of each stage-1 network: one per representation a
        reconstruction or latent member reads, the --scaler one first (stage 2 builds on
        it); trained together, vmapped."""
        reps = [m.partition(":")[0] for m in self.stage1_members() if not m.endswith(":rarity")]
        return tuple(dict.fromkeys(reps))

    def representations(self) -> tuple[str, ...]:
        """The scalers a run fits on its training rows, in order: the networks' (for a
        classifier, --scaler's), then any only a rarity member reads."""
        if not self.is_stage1:
            return (self.scaler,)
        reps = [m.partition(":")[0] for m in self.stage1_members()]
        return tuple(dict.fromkeys([*self.stage1_networks(), *reps]))

    def replace(self, **kw: Any) -> Config:
        return dataclasses.replace(self, **kw)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Config:
        d = dict(d)
        if "members" not in d and "model" in d:  # saved before stage 1 had members
            if d.pop("ensemble", 1) > 1:
                raise ValueError(
                    "this run is an ensemble of seeds (--ensemble, removed): train it again"
                )
            d.pop("ensemble_score", None)
            d["members"] = []  # it was one network, scored by --score alone
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(d) - set(fields)
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1, sort_keys=True)


def sections(cls: type = Config) -> list[tuple[str, list[str]]]:
    """The options grouped by purpose, as the class declares them under its ``# -- title``
    comments: (title, field names) in order (``--help`` lists them so). Without the
    source (a build that ships bytecode only), one group of every option."""
    names = [f.name for f in dataclasses.fields(cls)]
    try:
        source = inspect.getsource(cls)
    except OSError:
        return [("options", names)]
    groups: list[tuple[str, list[str]]] = [("options", [])]
    for line in source.splitlines():
        if title := re.match(r" {4}# -- (.+)", line):
            groups.append((title.group(1), []))
        elif (field := re.match(r" {4}(\w+):", line)) and field.group(1) in names:
            groups[-1][1].append(field.group(1))
    return [(title, fields) for title, fields in groups if fields]


def resume_may_change() -> frozenset[str]:
    """The options a resume may change (fields marked ``resume_may_change``)."""
    return frozenset(f.name for f in dataclasses.fields(Config) if f.metadata["resume_may_change"])


def stage2_from_stage1(cfg: Config) -> list[str]:
    """The options stage 2 must share with stage 1 (fields marked ``stage2_from_stage1``,
    and the seed where it draws a random split)."""
    names = [f.name for f in dataclasses.fields(Config) if f.metadata["stage2_from_stage1"]]
    return names + (["seed"] if cfg.split == "random" else [])


def smoke(**overrides: Any) -> Config:
    """A tiny config for tests and CI: small model, few steps."""
    base = Config(
        window=4,
        encoder_sizes=(8,),
        decoder_sizes=(8,),
        classifier_hidden=(8,),
        batch_size=16,
        eval_batch_size=32,
        epochs=2,
        log_every_steps=2,
        checkpoint_every_steps=4,
        keep_checkpoints=2,
    )
    return base.replace(**overrides)


# --------------------------------------------------------------------- absl flags


def define_flags(cls: type = Config, flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Declares one absl flag per field of ``cls`` (same name, default and help)."""
    for f in dataclasses.fields(cls):
        kw = {"flag_values": flag_values}
        help_ = f.metadata["help"]
        if f.type == "bool":
            flags.DEFINE_bool(f.name, f.default, help_, **kw)
        elif f.type == "int":
            flags.DEFINE_integer(f.name, f.default, help_, **kw)
        elif f.type == "float":
            flags.DEFINE_float(f.name, f.default, help_, **kw)
        elif f.type == "str":
            flags.DEFINE_string(f.name, f.default, help_, **kw)
        else:  # tuples: comma-separated lists
            flags.DEFINE_list(f.name, [str(v) for v in f.default], help_, **kw)


def from_flags(cls: type = Config, flag_values: flags.FlagValues = flags.FLAGS) -> Config:
    """Builds the config from parsed absl flags."""
    values = {}
    for f in dataclasses.fields(cls):
        v = flag_values[f.name].value
        try:
            if f.type.startswith("tuple[int"):
                v = tuple(int(x) for x in v)
            elif f.type.startswith("tuple[float"):
                v = tuple(float(x) for x in v)
            elif f.type.startswith("tuple[str"):
                v = tuple(v)
        except ValueError:
            kind = "integers" if f.type.startswith("tuple[int") else "numbers"
            raise ValueError(f"--{f.name}={','.join(v)}: expected comma-separated {kind}") from None
        values[f.name] = v
    return cls(**values)


def markdown_table(cls: type = Config) -> str:
    """The options as a Markdown table (docs/training.md's copy is checked against this)."""
    rows = ["| flag | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(cls):
        default = ",".join(str(v) for v in f.default) if isinstance(f.default, tuple) else f.default
        rows.append(f"| `--{f.name}` | `{default}` | {f.metadata['help']} |")
    return "\n".join(rows)
