"""Training and scoring throughput of the LSTM-AE against PyTorch and Flax, same run.

    python benchmarks/throughput.py [--quick] [--output=FILE] [--dtype=float32|bfloat16]

The reference model: encoder LSTM(64), RepeatVector(T), decoder LSTM(32), per-step
Dense back to F; T=10, F=77, float32 unless ``--dtype``. One process, contenders
interleaved (every repeat runs each once; the best repeat counts, which is robust to a
busy machine), compilation timed apart from the rates.

Training (forward, backward, Adam; windows gathered on the device from a flow table, as
the trainer does), windows/s:

* ``lstmae_jax``: the project's own jitted train step (``steps.make_train_step``) with the
  library's LSTM defaults, no input noise and no gradient clipping (the work the peers
  do); variants of it, one technique changed each (see ``VARIANTS``), and
  ``lstmae_jax_trainer_defaults``: the step ``launch/train.py`` runs by default
  (denoising noise, clipping).
* ``flax_rnn``: the same model from ``nnx.RNN(OptimizedLSTMCell)``, same optimizer.
* ``torch``: ``torch.nn.LSTM`` + ``torch.optim.Adam``, eager (cuDNN on a GPU), and
  ``torch_compile`` (``torch.compile`` of the same step) where it compiles.

Scoring (forward only, raw flows -> anomaly score), windows/s at the large batch:

* ``lstmae_jax_scorer``: ``export.scoring_function`` (scaler, LSTM-AE, the z-score
  error model, contributions, threshold), called through a ``jax.export`` round trip,
  as ``artifact.Scorer`` does; ``lstmae_jax_model``: the in-process scaler, model and score
  only (the torch peer's work).
* ``torch``: the same computation (scaler, model, z-score) under ``inference_mode``.

Also: the machine's float32 matmul rate (XLA, large square matmuls, the best of the
project's compiler options and XLA's defaults) and each contender's share of that
roofline, from the model's matmul FLOPs per window (``roofline.matmul_flops_per_window``:
the training step's for training rows, the forward's for scoring rows). Writes JSON with
top-level ``ratios`` (ours / torch).
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import resource
import time

import jax
import jax.numpy as jnp
import machine
import numpy as np
import optax
import roofline
import throughput_report
import torch_lstmae
from absl import app, flags, logging
from flax import nnx

from lstmae_jax import compiler, config
from lstmae_jax.data import dataset, windows
from lstmae_jax.detect import detector, inference
from lstmae_jax.jobs import export
from lstmae_jax.model import models
from lstmae_jax.train import steps

_QUICK = flags.DEFINE_bool("quick", False, "Fewer repeats and shorter timings (< 2 min on CPU).")
_OUT = flags.DEFINE_string(
    "output", "", "JSON path (default benchmarks/results/throughput_<backend>.json)."
)
_BATCHES = flags.DEFINE_list(
    "batch_sizes", ["256", "512"], "Training batches besides the large one."
)
_LARGE = flags.DEFINE_integer("large_batch", 0, "Large batch (0: 4096 on CPU, 65536 on GPU).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Matmul dtype of ours.")
_REPEATS = flags.DEFINE_integer("repeats", 0, "Interleaved repeats (0: 2 with --quick, else 4).")
_SECONDS = flags.DEFINE_float("seconds", 0.0, "Timed seconds per measurement (0: auto).")
_TORCH_COMPILE = flags.DEFINE_bool("torch_compile", True, "Also time torch.compile.")
_VARIANTS = flags.DEFINE_bool("variants", True, "Time the one-technique variants of ours.")
_BF16 = flags.DEFINE_bool(
    "bf16_check", False, "Also time ours with bfloat16 matmuls and compare its training loss."
)
_LOSS_STEPS = flags.DEFINE_integer("loss_steps", 300, "Steps of the bfloat16 loss comparison.")

T, F, ENC, DEC = 10, 77, 64, 32
STEPS_PER_CALL = 8  # the repeated-step variant
# Ours with one technique changed from the library default (name -> Config overrides).
# Where a default is backend-dependent (the hoisted projection), the variant flips it.
VARIANTS = {
    "lstmae_jax_unroll1": {"unroll": 1},
    "lstmae_jax_fused_backward": {"lstm_backward": "fused"},
    "lstmae_jax_flip_hoist": {"_flip_hoist": True},
    f"lstmae_jax_{STEPS_PER_CALL}_steps_per_call": {"steps_per_call": STEPS_PER_CALL},
}


# ------------------------------------------------------------------------- helpers


def _best_rate(run, batch: int, calls: int, seconds: float) -> tuple[float, int]:
    """Windows/s of ``run(calls)`` (which blocks), with ``calls`` grown to fill ``seconds``."""
    t0 = time.perf_counter()
    run(calls)
    dt = time.perf_counter() - t0
    if dt < seconds:
        calls = max(calls, int(calls * seconds / max(dt, 1e-6)))
        t0 = time.perf_counter()
        run(calls)
        dt = time.perf_counter() - t0
    return calls * batch / dt, calls


def _device_memory(compiled) -> int | None:
    """Bytes XLA plans for one call: arguments + outputs + temporaries (aliased once)."""
    try:
        m = compiled.memory_analysis()
        return int(
            m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
            + m.temp_size_in_bytes
        )  # fmt: skip
    except Exception:  # not every backend reports it
        return None


def _machine() -> dict:
    """``machine.machine_info`` in this benchmark's historic layout (``cpu_cores``, the
    versions nested), so new results compare with the committed ones; plus the backend."""
    dev = jax.devices()[0]
    m = machine.machine_info(("jax", "flax", "optax", "torch"))
    return {
        "backend": jax.default_backend(),
        "device": dev.device_kind,
        "devices": jax.device_count(),
        "cpu_model": m["cpu_model"],
        "cpu_cores": m["cpu_count"],
        "cpus_usable": m["cpus_usable"],
        "platform": m["platform"],
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "versions": {k: m[k] for k in ("python", "jax", "flax", "optax", "torch")},
    }


# ---------------------------------------------------------------------- contenders


class Data:
    """A random flow table on the device and pools of window-start batches."""

    def __init__(self, rows: int = 200_000, pool: int = 8):
        rng = np.random.default_rng(0)
        self.table_np = rng.standard_normal((rows, F)).astype(np.float32)
        self.table = jnp.asarray(self.table_np)
        self._rng, self._rows, self._pool = rng, rows, pool
        self._host: dict[int, list[np.ndarray]] = {}

    def starts(self, batch: int) -> list[np.ndarray]:
        if batch not in self._host:
            self._host[batch] = [
                self._rng.integers(0, self._rows - T, batch).astype(np.int32)
                for _ in range(self._pool)
            ]
        return self._host[batch]


def _jax_train_runner(step, state, table, batches, windows_per_call: int):
    """(run(calls), compile_s, device_bytes, windows per call) of a jitted ``step(state,
    table, batch) -> (state, metrics)``, cycling through ``batches``, state donated."""
    t0 = time.perf_counter()
    compiled = compiler.jit(step, donate_argnums=0).lower(state, table, batches[0]).compile()
    compile_s = time.perf_counter() - t0
    holder = {"state": state}

    def run(calls):
        st = holder["state"]
        for i in range(calls):
            st, out = compiled(st, table, batches[i % len(batches)])
        jax.block_until_ready(out)
        holder["state"] = st

    return run, compile_s, _device_memory(compiled), windows_per_call


def ours_train(d: Data, batch: int, overrides: dict, dtype: str):
    """(run(calls), compile_s, device_bytes, windows per call) of the project's train step."""
    overrides = dict(overrides)
    flip_hoist = overrides.pop("_flip_hoist", False)
    base = {"input_noise": 0.0, "grad_clip": 0.0, "warmup_steps": 1, "dtype": dtype}
    base["members"] = ()  # the reference design: one network, as the peers train
    cfg = config.Config(window=T, batch_size=batch, **{**base, **overrides})
    per_call = cfg.steps_per_call
    model = steps.build_model(cfg, F, 2, nnx.Rngs(0))
    if flip_hoist:
        for layer in [*model.encoder.layers, *model.decoder.layers]:
            layer.hoist = not layer.hoist
    tx = steps.optimizer(cfg)
    graphdef, state = steps.init_state(model, tx, nnx.Param)
    task = steps.task_for(cfg, 2)
    train_step = steps.make_train_step(graphdef, tx, task, nnx.Param, [_identity()])
    fn = steps.repeat_step(train_step, per_call) if per_call > 1 else train_step
    batches = []
    for i, s in enumerate(d.starts(batch)):
        if per_call > 1:
            group = [d.starts(batch)[(i + j) % len(d.starts(batch))] for j in range(per_call)]
            b = {"starts": np.stack(group), "label": np.zeros((per_call, batch), np.int32)}
        else:
            b = {"starts": s, "label": np.zeros(batch, np.int32)}
        batches.append(jax.device_put(b))
    return _jax_train_runner(fn, state, d.table, batches, batch * per_call)


LOOP_STEPS = 300  # steps of each timed run of the trainer's own loop (no epoch end inside)


def _loop_steps(d: Data, batch: int) -> int:
    """The steps of one run of ``ours_loop`` (fewer than LOOP_STEPS at a large batch)."""
    return min(LOOP_STEPS, (len(d.table_np) - 40_000) // batch - 1)


def ours_loop(d: Data, batch: int, overrides: dict, dtype: str) -> dict:
    """The trainer's own loop (``loop.fit``: batch order, host -> device, dispatch ahead,
    metric reads every sixth of its steps (50 at B=512), progress, checkpoint policy)
    running the step that ``ours_train`` times, on the same table: its rate is the median of its metric lines'
    ``windows_per_s`` after the first (which holds the compilation). One fresh run (its
    own compile, a temporary run directory) per call."""
    import tempfile

    from lstmae_jax.train import loop

    feats = tuple(f"f{i}" for i in range(F))
    identity = dataset.Scaler(features=feats, log=(False,) * F, mean=(0.0,) * F, std=(1.0,) * F)
    n = len(d.table_np)
    train = np.arange(0, n - 40_000, dtype=np.int64)  # more than LOOP_STEPS batches
    starts = {
        "train": train,
        "val": np.arange(n - 30_000, n - 28_000),
        "test": np.arange(n - 20_000, n - 19_000),
    }
    zeros = {k: np.zeros(len(v), np.int32) for k, v in starts.items()}
    data = windows.Windowed(
        x_NxF=d.table_np, label_N=np.zeros(n, np.int32), window=T, starts=starts, label=zeros,
        any_attack={k: np.zeros(len(v), bool) for k, v in starts.items()}, classes=("Benign",),
        features=feats, scalers=(identity,),
    )  # fmt: skip
    base = {"input_noise": 0.0, "grad_clip": 0.0, "warmup_steps": 1, "dtype": dtype}
    steps_ = _loop_steps(d, batch)
    cfg = config.Config(
        window=T, batch_size=batch, members=(), epochs=1, log_every_steps=max(steps_ // 6, 1),
        checkpoint_every_steps=10_000, eval_batch_size=1024, **{**base, **overrides},
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="loop-") as run_dir:
        loop.fit(cfg, run_dir, data, max_steps=steps_)
        lines = [json.loads(x) for x in open(os.path.join(run_dir, "metrics.jsonl"))]
    rates = [x["windows_per_s"] for x in lines if "windows_per_s" in x][1:]
    compile_s = next(x["compile_time_s"] for x in lines if "compile_time_s" in x)
    return {"rate": float(np.median(rates)), "compile_s": compile_s, "steps": steps_}


class FlaxRNNAE(nnx.Module):
    """The reference LSTM-AE from Flax's stock recurrent layers (the peer)."""

    def __init__(self, f: int, rngs: nnx.Rngs):
        self.enc = nnx.RNN(nnx.OptimizedLSTMCell(f, ENC, rngs=rngs), return_carry=True)
        self.dec = nnx.RNN(nnx.OptimizedLSTMCell(ENC, DEC, rngs=rngs))
        self.out = nnx.Linear(DEC, f, rngs=rngs)

    def __call__(self, x_BxTxF):
        (_, h_BxH), _ = self.enc(x_BxTxF)
        z_BxTxH = jnp.repeat(h_BxH[:, None], x_BxTxF.shape[1], axis=1)
        return self.out(self.dec(z_BxTxH))


def flax_train(d: Data, batch: int):
    model = FlaxRNNAE(F, nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(1e-3)

    def step(state, table, starts_B):
        params, rest, opt_state = state
        x = windows.gather(table, starts_B, T)  # the trainer's window cut, on the device
        model = nnx.merge(graphdef, params, rest)
        loss, g = nnx.value_and_grad(lambda m: jnp.mean((m(x) - x) ** 2))(model)
        updates, opt_state = tx.update(g, opt_state, params)
        rest = nnx.state(model, nnx.Not(nnx.Param))
        return (optax.apply_updates(params, updates), rest, opt_state), loss

    state = (params, rest, tx.init(params))
    batches = [jax.device_put(s) for s in d.starts(batch)]
    return _jax_train_runner(step, state, d.table, batches, batch)


def _torch_sync(torch, device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def torch_train(torch, d: Data, batch: int, compiled: bool):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = torch_lstmae.autoencoder(torch, F, ENC, DEC).to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    table = torch.from_numpy(d.table_np).to(device)
    offsets = torch.arange(T, device=device)
    batches = [torch.from_numpy(s).long().to(device) for s in d.starts(batch)]

    def step(starts):
        x = table[starts[:, None] + offsets]
        opt.zero_grad(set_to_none=True)
        loss = torch.mean((model(x) - x) ** 2)
        loss.backward()
        opt.step()
        return loss

    fn = torch.compile(step) if compiled else step
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    fn(batches[0])  # torch.compile compiles here; eager warms up
    fn(batches[1])
    _torch_sync(torch, device)
    compile_s = time.perf_counter() - t0

    def run(calls):
        for i in range(calls):
            loss = fn(batches[i % len(batches)])
        _torch_sync(torch, device)
        del loss

    mem = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    return run, compile_s, mem, batch


def _detector() -> detector.Detector:
    """One network scored by the z-score of its error vector (what the torch peer does)."""
    rng = np.random.default_rng(1)
    mean_F, std_F = rng.uniform(0.1, 0.5, F), rng.uniform(0.05, 0.2, F)
    precision = np.diag(1.0 / std_F**2)
    member = detector.Member("standard:zscore", 0, 0, tuple(mean_F), tuple(map(tuple, precision)))
    return detector.Detector((member,), "min", F)


def _identity() -> dict:
    """The arrays of a scaler that leaves the (already scaled) table as it is: the steps
    scale on the device, and the peers train on the same numbers without scaling."""
    zeros, ones = np.zeros(F, np.float32), np.ones(F, np.float32)
    return {"log_F": zeros, "mean_F": zeros, "std_F": ones, "clip": np.float32(0.0)}


def _scaler() -> dataset.Scaler:
    rng = np.random.default_rng(2)
    log = tuple(bool(b) for b in rng.random(F) < 0.6)
    return dataset.Scaler(
        tuple(f"f{i}" for i in range(F)),
        log,
        tuple(rng.uniform(0, 2, F)),
        tuple(rng.uniform(0.5, 2, F)),
    )


def _raw_batch(batch: int) -> np.ndarray:
    return np.abs(np.random.default_rng(3).standard_normal((batch, T, F))).astype(np.float32) * 10


def ours_score(batch: int, through_export: bool):
    ae = models.LSTMAE(models.LSTMAEConfig(num_features=F, window=T), rngs=nnx.Rngs(0))
    ae.eval()
    det = _detector()
    if through_export:
        fn = export.scoring_function(ae, det.spec())
        params = {
            "threshold": np.float32(1.0),
            "scalers": [_scaler().arrays()],
            "members": det.arrays(),
        }
        (b,) = jax.export.symbolic_shape("b")
        spec = jax.ShapeDtypeStruct((b, T, F), jnp.float32)
        params_spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
        exported = jax.export.export(jax.jit(fn))(spec, params_spec)
        deserialized = jax.export.deserialize(exported.serialize())

        def call(x):  # sidecar values as inputs, as launch/score.py passes them
            return deserialized.call(x, params)
    else:
        graphdef, state = nnx.split(ae)

        scalers, spec, arrays = [_scaler().arrays()], det.spec(), det.arrays()

        def call(x):  # the same work as the torch peer: scaler, model, score
            model = nnx.merge(graphdef, state)
            forward = functools.partial(models.encode_decode, model)
            return detector.outputs(forward, x, scalers, spec, arrays)["score_B"]

    x = jax.device_put(_raw_batch(batch))
    jitted = compiler.jit(call)
    t0 = time.perf_counter()
    compiled = jitted.lower(x).compile()
    compile_s = time.perf_counter() - t0

    def run(calls):
        for _ in range(calls):
            out = compiled(x)
        jax.block_until_ready(out)

    return run, compile_s, _device_memory(compiled), batch


def torch_score(torch, batch: int):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = torch_lstmae.autoencoder(torch, F, ENC, DEC).to(device).eval()
    sc, member = _scaler(), _detector().members[0]
    log = torch.tensor(sc.log, device=device)
    mean, std = (torch.tensor(v, dtype=torch.float32, device=device) for v in (sc.mean, sc.std))
    mu = torch.tensor(member.mean_F, dtype=torch.float32, device=device)
    prec = torch.tensor(
        np.diag(np.asarray(member.precision_FxF)), dtype=torch.float32, device=device
    )
    x = torch.from_numpy(_raw_batch(batch)).to(device)

    def score(x):
        with torch.inference_mode():
            z = (torch.where(log, torch.log1p(x.clamp(min=0)), x) - mean) / std
            err = torch.mean(torch.abs(model(z) - z), dim=1)
            return torch.sum((err - mu) ** 2 * prec, dim=-1)

    t0 = time.perf_counter()
    score(x)
    _torch_sync(torch, device)
    compile_s = time.perf_counter() - t0

    def run(calls):
        for _ in range(calls):
            out = score(x)
        _torch_sync(torch, device)
        del out

    return run, compile_s, None, batch


def dtype_loss_effect(num_steps: int, batch: int = 256) -> dict:
    """The reconstruction loss after ``num_steps`` Adam steps on generated flows (scaled as
    the trainer scales them), float32 against bfloat16 matmuls, same seed and batches."""
    from lstmae_jax.ingest import schema
    from lstmae_jax.synthetic import timeline

    flows = timeline.generate(40_000, seed=0)
    features = [f for f in schema.FEATURES if f in flows.column_names][:F]
    x = np.stack([flows[f].to_numpy().astype(np.float64) for f in features], axis=1)
    x = x[np.isfinite(x).all(axis=1)]  # the generator writes some inf/NaN, as the meter does
    x = dataset.fit_scaler(x, features).transform(x)
    table = jnp.asarray(x, jnp.float32)
    rng = np.random.default_rng(0)
    starts = [rng.integers(0, len(x) - T, batch).astype(np.int32) for _ in range(num_steps)]
    out = {"steps": num_steps, "batch": batch, "features": len(features)}
    for dtype in ("float32", "bfloat16"):
        cfg = config.Config(window=T, batch_size=batch, input_noise=0.0, dtype=dtype, members=())
        model = steps.build_model(cfg, len(features), 2, nnx.Rngs(0))
        tx = steps.optimizer(cfg)
        graphdef, state = steps.init_state(model, tx, nnx.Param)
        task = steps.task_for(cfg, 2)
        train_step = compiler.jit(
            steps.make_train_step(graphdef, tx, task, nnx.Param, [_identity()])
        )
        for s in starts:
            state, m = train_step(state, table, {"starts": s, "label": np.zeros(batch, np.int32)})
        # The final loss on fixed held-out windows, in float32 arithmetic for both.
        held = rng.integers(0, len(x) - T, 4096).astype(np.int32)
        ((ev, _),) = inference.batches(
            graphdef, (state.params, state.frozen, state.rest), steps.ValidationLoss(task),
            table, held, T, 4096, label_W=np.zeros(4096, np.int32), args=[_identity()],
        )  # fmt: skip
        out[f"loss_{dtype}"] = float(ev["loss_sum_K"].sum() / ev["weight_sum"])
    out["bfloat16_over_float32"] = round(out["loss_bfloat16"] / out["loss_float32"], 4)
    return out


# ----------------------------------------------------------------------------- main


def main(argv):
    del argv
    try:
        import torch

        torch.set_num_threads(machine.usable_cpus())  # as many as XLA's pool (`taskset` honoured)
    except ImportError:
        torch = None
        logging.warning("torch is not installed (pip install -e '.[peers]'): no torch peer")
    gpu = jax.default_backend() == "gpu"
    large = _LARGE.value or (65536 if gpu else 4096)
    quick = _QUICK.value
    repeats = _REPEATS.value or (2 if quick else 4)
    seconds = _SECONDS.value or (0.4 if quick else 1.5)
    train_batches = sorted({int(b) for b in _BATCHES.value} | {large})
    d = Data(rows=max(200_000, 2 * large))

    # name -> batch -> factory; built lazily so a failing peer costs only its own row.
    train: dict[str, dict[int, object]] = {}
    for b in train_batches:
        train.setdefault("lstmae_jax", {})[b] = lambda b=b: ours_train(d, b, {}, _DTYPE.value)
        if _VARIANTS.value and (not quick or b == 512):
            for name, ov in VARIANTS.items():
                train.setdefault(name, {})[b] = lambda b=b, ov=ov: ours_train(
                    d, b, ov, _DTYPE.value
                )
        if _BF16.value and _DTYPE.value != "bfloat16":
            train.setdefault("lstmae_jax_bfloat16", {})[b] = lambda b=b: ours_train(
                d, b, {}, "bfloat16"
            )
        if b != large or not quick:
            train.setdefault("lstmae_jax_trainer_defaults", {})[b] = lambda b=b: ours_train(
                d, b, {"input_noise": 1.0, "grad_clip": 1.0, "warmup_steps": 100}, _DTYPE.value
            )
            train.setdefault("flax_rnn", {})[b] = lambda b=b: flax_train(d, b)
        if torch is not None:
            train.setdefault("torch", {})[b] = lambda b=b: torch_train(torch, d, b, False)
            if _TORCH_COMPILE.value and not quick:
                train.setdefault("torch_compile", {})[b] = lambda b=b: torch_train(
                    torch, d, b, True
                )
    score = {
        "lstmae_jax_scorer": lambda: ours_score(large, True),
        "lstmae_jax_model": lambda: ours_score(large, False),
    }
    if torch is not None:
        score["torch"] = lambda: torch_score(torch, large)

    rows: dict[str, dict] = {}
    runners = {}
    for kind, table in (("train", train), ("score", {k: {large: v} for k, v in score.items()})):
        for name, by_batch in table.items():
            for b, factory in by_batch.items():
                key = f"{kind}/{name}/{b}"
                try:
                    run, compile_s, mem, per_call = factory()
                except Exception as e:  # e.g. torch.compile without a C++ toolchain
                    logging.warning("%s: %s: %s", key, type(e).__name__, e)
                    rows[key] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
                    continue
                run(1)  # the first execution of an executable pays one-off costs
                runners[key] = (run, per_call)
                rows[key] = {
                    "kind": kind, "contender": name, "batch": b, "compile_s": round(compile_s, 2),
                    "device_bytes": mem, "rates": [],
                }  # fmt: skip
                print(f"ready {key} (compile {compile_s:.1f}s)", flush=True)
    gemm_n = 8192 if gpu else 2048
    sgemm: list[float] = []
    calls = dict.fromkeys(runners, 1)
    out = _OUT.value or f"benchmarks/results/throughput_{jax.default_backend()}.json"
    path = pathlib.Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = {
        "quick": quick,
        "repeats": repeats,
        "seconds_per_measurement": seconds,
        "train_batches": train_batches,
        "score_batch": large,
        "dtype": _DTYPE.value,
        "lstm_defaults": {
            "unroll": config.Config.unroll,
            "lstm_backward": config.Config.lstm_backward,
            "hoist": jax.default_backend() != "cpu",
        },
    }
    t_start = time.perf_counter()
    for r in range(repeats):
        for key, (run, per_call) in runners.items():
            rate, calls[key] = _best_rate(run, per_call, calls[key], seconds)
            rows[key]["rates"].append(round(rate, 1))
        sgemm.append(roofline.sgemm_gflops(gemm_n, seconds / 2))
        # Written after every repeat: a run cut short (a time limit) keeps what it measured.
        report = _report(rows, sgemm, train_batches, large, settings, f"{r + 1}/{repeats}")
        path.write_text(json.dumps(report, indent=1) + "\n")
        print(f"repeat {r + 1}/{repeats} done ({time.perf_counter() - t_start:.0f}s)", flush=True)
    # The trainer's own loop, beside the step it runs: a fresh run each repeat,
    # interleaved over the batches, each right after as many steps of the bare step (the
    # rows above) timed again, so that loop and step meet the same machine state (runs
    # minutes apart differed by up to 10% on this 2-core host with neither changed).
    loops = {b: {} for b in train_batches if b != large or not quick}
    if not quick:
        loops.setdefault(512, {})[STEPS_PER_CALL] = None
    for r in range(repeats):
        for b, extra in loops.items():
            step_run, per_call = runners.get(f"train/lstmae_jax/{b}", (None, None))
            if step_run is not None:
                t0, n = time.perf_counter(), _loop_steps(d, b)
                step_run(n)
                row = rows.setdefault(
                    f"train/lstmae_jax_step_beside_loop/{b}",
                    {"kind": "train", "contender": "lstmae_jax_step_beside_loop", "batch": b,
                     "rates": [], "compile_s": rows[f"train/lstmae_jax/{b}"]["compile_s"],
                     "device_bytes": None},
                )  # fmt: skip
                row["rates"].append(round(n * per_call / (time.perf_counter() - t0), 1))
            for k in (1, *extra):
                name = "lstmae_jax_loop" if k == 1 else f"lstmae_jax_loop_{k}_steps_per_call"
                got = ours_loop(d, b, {"steps_per_call": k} if k > 1 else {}, _DTYPE.value)
                row = rows.setdefault(
                    f"train/{name}/{b}",
                    {"kind": "train", "contender": name, "batch": b, "rates": [],
                     "compile_s": round(got["compile_s"], 2), "device_bytes": None},
                )  # fmt: skip
                row["rates"].append(round(got["rate"], 1))
        report = _report(rows, sgemm, train_batches, large, settings, f"{repeats}/{repeats}")
        path.write_text(json.dumps(report, indent=1) + "\n")
        print(f"loop repeat {r + 1}/{repeats} done", flush=True)
    if _BF16.value:
        report["bfloat16_loss_check"] = dtype_loss_effect(_LOSS_STEPS.value)
        path.write_text(json.dumps(report, indent=1) + "\n")
    print(throughput_report.render(report))
    print(f"wrote {path}")


def _report(rows, sgemm, train_batches, large, settings, repeats_done) -> dict:
    """The JSON report from the rates measured so far."""
    gflops = max(sgemm)
    flops = roofline.matmul_flops_per_window(T, F, ENC, DEC)
    train_roofline = gflops * 1e9 / flops["train"]
    forward_roofline = gflops * 1e9 / flops["forward"]  # scoring: the forward's matmuls
    for row in rows.values():
        if "rates" not in row:
            continue
        row["windows_per_s"] = max(row["rates"])
        top = train_roofline if row["kind"] == "train" else forward_roofline
        row["roofline_share"] = round(row["windows_per_s"] / top, 3)

    def rate(kind, name, b):
        return rows.get(f"{kind}/{name}/{b}", {}).get("windows_per_s")

    def ratio(a, b):
        return round(a / b, 3) if a and b else None

    ratios = {
        f"train_vs_torch_b{b}": ratio(rate("train", "lstmae_jax", b), rate("train", "torch", b))
        for b in train_batches
    }
    ratios["score_vs_torch"] = ratio(
        rate("score", "lstmae_jax_scorer", large), rate("score", "torch", large)
    )
    ratios["score_model_vs_torch"] = ratio(
        rate("score", "lstmae_jax_model", large), rate("score", "torch", large)
    )
    for b in train_batches:
        ratios[f"train_vs_torch_compile_b{b}"] = ratio(
            rate("train", "lstmae_jax", b), rate("train", "torch_compile", b)
        )
        ratios[f"train_vs_flax_rnn_b{b}"] = ratio(
            rate("train", "lstmae_jax", b), rate("train", "flax_rnn", b)
        )
        # The trainer's own loop: against the bare step it runs (timed beside it), and
        # against torch.
        ratios[f"loop_vs_step_b{b}"] = ratio(
            rate("train", "lstmae_jax_loop", b), rate("train", "lstmae_jax_step_beside_loop", b)
        )
        ratios[f"loop_vs_torch_b{b}"] = ratio(
            rate("train", "lstmae_jax_loop", b), rate("train", "torch", b)
        )
    k = f"lstmae_jax_loop_{STEPS_PER_CALL}_steps_per_call"
    ratios[f"loop_{STEPS_PER_CALL}_steps_vs_step_b512"] = ratio(
        rate("train", k, 512), rate("train", f"lstmae_jax_{STEPS_PER_CALL}_steps_per_call", 512)
    )
    return {
        "benchmark": "LSTM-AE throughput: encoder 64, decoder 32, T=10, F=77; windows/s",
        "machine": _machine(),
        "settings": settings,
        "repeats_done": repeats_done,
        "matmul_flops_per_window": flops,
        "sgemm_gflops": round(gflops, 1),
        "train_roofline_windows_per_s": round(train_roofline, 1),
        "scoring_roofline_windows_per_s": round(forward_roofline, 1),
        "peak_host_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "ratios": {k: v for k, v in ratios.items() if v is not None},
        "bfloat16_loss_check": None,
        "results": rows,
        "date": time.strftime("%Y-%m-%d"),
    }


if __name__ == "__main__":
    app.run(main)
