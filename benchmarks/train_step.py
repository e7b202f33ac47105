"""Training-step throughput of the LSTM-AE against peers measured in the same run.

    python benchmarks/train_step.py [--batch_size=512] [--window=10] [--features=77]

Contenders, all the reference design (encoder LSTM(64), RepeatVector(T), decoder
LSTM(32), per-step Dense), MSE loss, one Adam step, float32:

* ``lstmae_jax``: this project's model and jitted step (hoisted input projection, fused
  gates, decoder input projected once).
* ``flax_rnn``: the same architecture built from Flax's own ``nnx.RNN(OptimizedLSTMCell)``
  (the decoder input repeated T times and projected at every step), same optimizer,
  jitted the same way.
* ``torch``: ``torch.nn.LSTM`` (when the ``peers`` extra is installed), eager, on CPU.

Compilation and warm-up are excluded; each contender runs ``--steps`` steps after
``--warmup``. Writes ``benchmarks/results/train_step.json`` and prints ratios.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import sys
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from flax import nnx

from lstmae_jax import config, steps, windows

_BATCH = flags.DEFINE_integer("batch_size", 512, "Windows per step.")
_WINDOW = flags.DEFINE_integer("window", 10, "T.")
_FEATURES = flags.DEFINE_integer("features", 77, "F.")
_STEPS = flags.DEFINE_integer("steps", 50, "Timed steps per contender.")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed steps first.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Interleaved runs per contender; the best counts.")
_OUT = flags.DEFINE_string("output", "benchmarks/results/train_step.json", "JSON result path.")


class FlaxRNNAE(nnx.Module):
    """The reference LSTM-AE from Flax's stock recurrent layers (the peer)."""

    def __init__(self, f: int, rngs: nnx.Rngs):
        self.enc = nnx.RNN(nnx.OptimizedLSTMCell(f, 64, rngs=rngs), return_carry=True)
        self.dec = nnx.RNN(nnx.OptimizedLSTMCell(64, 32, rngs=rngs))
        self.out = nnx.Linear(32, f, rngs=rngs)

    def __call__(self, x_BxTxF):
        (_, h_BxH), _ = self.enc(x_BxTxF)
        z_BxTxH = jnp.repeat(h_BxH[:, None], x_BxTxF.shape[1], axis=1)
        return self.out(self.dec(z_BxTxH))


def _time_jax(step_fn, state, table, batches) -> float:
    for b in batches[: _WARMUP.value]:
        state, m = step_fn(state, table, b)
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for b in batches[_WARMUP.value :]:
        state, m = step_fn(state, table, b)
    jax.block_until_ready((state, m))
    return time.perf_counter() - t0


def bench_ours(table, batches) -> float:
    cfg = config.Config(window=_WINDOW.value)
    model = steps.build_model(cfg, table.shape[1], 2, nnx.Rngs(0))
    tx = steps.optimizer(cfg)
    graphdef, state = steps.init_state(model, tx, nnx.Param)
    train_step, _ = steps.make_steps(graphdef, tx, steps.task_for(cfg, 2), nnx.Param)
    return _time_jax(jax.jit(train_step, donate_argnums=0), state, table, batches)


def bench_flax_rnn(table, batches) -> float:
    model = FlaxRNNAE(table.shape[1], nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(1e-3)
    window = _WINDOW.value

    def step(state, table, batch):
        params, rest, opt_state = state
        x = table[batch["starts"][:, None] + jnp.arange(window)]

        model = nnx.merge(graphdef, params, rest)  # the carry initialiser draws from rngs

        def loss_fn(m):
            return jnp.mean((m(x) - x) ** 2)

        loss, g = nnx.value_and_grad(loss_fn)(model)
        updates, opt_state = tx.update(g, opt_state, params)
        rest = nnx.state(model, nnx.Not(nnx.Param))
        return (optax.apply_updates(params, updates), rest, opt_state), loss

    state = (params, rest, tx.init(params))
    return _time_jax(jax.jit(step, donate_argnums=0), state, table, batches)


def bench_torch(table_np, batches) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    f, window = table_np.shape[1], _WINDOW.value

    class AE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = torch.nn.LSTM(f, 64, batch_first=True)
            self.dec = torch.nn.LSTM(64, 32, batch_first=True)
            self.out = torch.nn.Linear(32, f)

        def forward(self, x):
            _, (h, _) = self.enc(x)
            return self.out(self.dec(h[-1][:, None].expand(-1, x.shape[1], -1))[0])

    model, table = AE(), torch.from_numpy(table_np)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    offsets = torch.arange(window)

    def step(b):
        x = table[torch.from_numpy(np.asarray(b["starts"]))[:, None] + offsets]
        opt.zero_grad()
        loss = torch.mean((model(x) - x) ** 2)
        loss.backward()
        opt.step()

    for b in batches[: _WARMUP.value]:
        step(b)
    t0 = time.perf_counter()
    for b in batches[_WARMUP.value :]:
        step(b)
    return time.perf_counter() - t0


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv):
    del argv
    rng = np.random.default_rng(0)
    n, f, window, batch = 200_000, _FEATURES.value, _WINDOW.value, _BATCH.value
    table_np = rng.standard_normal((n, f)).astype(np.float32)
    starts = windows.window_starts(np.zeros(n, np.int64), window)
    order = windows.BatchOrder(len(starts), batch, seed=0)
    total = _WARMUP.value + _STEPS.value
    host = [
        {"starts": starts[order.next()].astype(np.int32), "label": np.zeros(batch, np.int32)}
        for _ in range(total)
    ]
    device = jax.devices()[0]
    table = jax.device_put(table_np, device)
    batches = [jax.device_put(b, device) for b in host]
    timed = _STEPS.value * batch
    runs: dict[str, list[float]] = {"lstmae_jax": [], "flax_rnn": [], "torch": []}
    for _ in range(_REPEATS.value):  # interleaved, best of each: robust to a busy machine
        runs["lstmae_jax"].append(timed / bench_ours(table, batches))
        runs["flax_rnn"].append(timed / bench_flax_rnn(table, batches))
        t = bench_torch(table_np, host)
        if t is not None:
            runs["torch"].append(timed / t)
    results = {k: max(v) for k, v in runs.items() if v}
    report = {
        "benchmark": "LSTM-AE train step (encoder 64, decoder 32, MSE, Adam), windows/s",
        "shape": {"batch": batch, "window": window, "features": f},
        "windows_per_s": {k: round(v, 1) for k, v in results.items()},
        "windows_per_s_all_runs": {k: [round(x, 1) for x in v] for k, v in runs.items() if v},
        # > 1: lstmae_jax is that many times faster than the peer.
        "speedup_of_ours": {
            k: round(results["lstmae_jax"] / v, 2) for k, v in results.items() if k != "lstmae_jax"
        },
        "lstm_input_projection": "hoisted" if jax.default_backend() != "cpu" else "per step (CPU)",
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "device": str(device),
            "cpu_model": _cpu_model(),
            "load_average": os.getloadavg(),
            "python": sys.version.split()[0],
            "jax": jax.__version__,
            "flax": flax.__version__,
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    path = pathlib.Path(_OUT.value)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    app.run(main)
