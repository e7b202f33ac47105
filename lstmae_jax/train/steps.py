"""Train state, the model for a config, and the pure jitted step functions.

The steps are pure functions of ``(state, table, batch)``. The cleaned flow table lives on
the devices (replicated; it is small: 2.8M CICIDS2017 flows x 78 features x 4 B =
0.9 GB), and a batch is only the first-row indices of its windows (plus labels), so each
step moves ``B`` integers host -> device and gathers the windows on device. In a
``--share_data`` run no process holds the whole table: each cuts its part of the batch
on the host and the batch carries the windows (``batch["x"]``, ``windows.of_batch``).
The windows are scaled on the device (``represent``: each representation's
``dataset.scale``, the function the exported scorer runs), so a stage 1 with K
representations keeps one table.

Tasks: ``reconstruct`` (stage 1: mean squared error of the LSTM-AE or ensemble) and
``classify`` (stage 2 and the DNN/CNN baselines: softmax cross-entropy, optional class
weights).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lstmae_jax.config import Config
from lstmae_jax.data import dataset, windows
from lstmae_jax.model import models


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: nnx.State  # trainable parameters
    frozen: nnx.State  # parameters held fixed (stage 2 with a frozen encoder)
    rest: nnx.State  # other variables (dropout RNG state)
    opt_state: Any
    best_params: nnx.State  # early stopping restores these


@dataclasses.dataclass(frozen=True)
class Task:
    """What a run optimises; static for jit."""

    kind: str  # "reconstruct" or "classify"
    window: int
    members: int = 1  # K stage-1 networks, one per representation (reconstruct only)
    num_classes: int = 0
    class_weight_C: tuple[float, ...] = ()
    input_noise: float = 0.0  # reconstruct: std of Gaussian noise on the training inputs
    seed: int = 0  # of that noise (folded with the step number: resumable)


# --------------------------------------------------------------------------- model


def build_model(cfg: Config, num_features: int, num_classes: int, rngs: nnx.Rngs) -> nnx.Module:
    """The model named by ``cfg.model`` / ``cfg.stage``."""
    ae_cfg = models.LSTMAEConfig(
        num_features=num_features,
        window=cfg.window,
        encoder_sizes=cfg.encoder_sizes,
        decoder_sizes=cfg.decoder_sizes,
        unroll=cfg.unroll,
        dtype=cfg.dtype,
        fused_backward=cfg.lstm_backward == "fused",
    )
    if cfg.is_stage1:
        if (k := len(cfg.stage1_networks())) > 1:
            return models.LSTMAEEnsemble(ae_cfg, k, rngs=rngs)
        return models.LSTMAE(ae_cfg, rngs=rngs)
    if cfg.is_stage2:
        head = models.LatentClassifierConfig(
            latent=cfg.encoder_sizes[-1],
            num_classes=num_classes,
            hidden=cfg.classifier_hidden,
            dropout=cfg.dropout,
        )
        return models.Stage2Model(
            models.Encoder(ae_cfg, rngs=rngs), models.LatentClassifier(head, rngs=rngs)
        )
    if cfg.model == "dnn":
        return models.DNN(
            models.DNNConfig(num_features, cfg.window, num_classes, dropout=cfg.dropout), rngs=rngs
        )
    if cfg.model == "cnn":
        return models.CNN(
            models.CNNConfig(num_features, cfg.window, num_classes, dropout=cfg.dropout), rngs=rngs
        )
    raise ValueError(f"unknown model {cfg.model!r} / stage {cfg.stage}")


def clip_by_member_norm(max_norm: float, members: int) -> optax.GradientTransformation:
    """``optax.clip_by_global_norm`` for each of K stacked members on its own (every leaf
    has the leading K axis): one member's large gradients do not shrink another's step."""

    def update(updates, state, params=None):
        del params
        sq_K = sum(
            jnp.sum(jnp.square(g).reshape(members, -1), axis=1) for g in jax.tree.leaves(updates)
        )
        norm_K = jnp.sqrt(sq_K)
        scale_K = jnp.where(norm_K < max_norm, 1.0, max_norm / jnp.maximum(norm_K, 1e-30))
        shaped = lambda g: g * scale_K.reshape((members,) + (1,) * (g.ndim - 1)).astype(g.dtype)  # noqa: E731
        return jax.tree.map(shaped, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def optimizer(cfg: Config) -> optax.GradientTransformation:
    """Adam (the reference paper's; AdamW with ``weight_decay``) after global-norm
    gradient clipping (per network for a stage 1 of several, ``clip_by_member_norm``),
    with a linear warmup over ``warmup_steps``.

    The peak learning rate is an injected hyperparameter in the optimizer state, so the
    loop can lower it on a validation plateau (``set_learning_rate``) and a checkpoint
    carries it: a resumed run continues with the rate it had.
    """

    def make(learning_rate):
        adam = (
            optax.adamw(learning_rate, weight_decay=cfg.weight_decay)
            if cfg.weight_decay > 0
            else optax.adam(learning_rate)
        )
        members = len(cfg.stage1_networks()) if cfg.is_stage1 else 1
        if cfg.grad_clip <= 0:
            clip = optax.identity()
        elif members > 1:
            clip = clip_by_member_norm(cfg.grad_clip, members)
        else:
            clip = optax.clip_by_global_norm(cfg.grad_clip)
        warmup = optax.scale_by_schedule(lambda n: warmup_factor(cfg.warmup_steps, n + 1))
        return optax.chain(clip, adam, warmup)

    return optax.inject_hyperparams(make)(learning_rate=cfg.learning_rate)


def warmup_factor(warmup_steps: int, step: Any) -> Any:
    """The share of the peak learning rate that the update making ``step`` (1 for the
    first) applies: linear up to ``warmup_steps``, then 1 (``optimizer``'s schedule)."""
    return jnp.minimum(1.0, step / max(warmup_steps, 1))


def effective_learning_rate(peak: float, warmup_steps: int, step: int) -> float:
    """The rate the update making ``step`` applied: the peak held in the optimizer state
    (lowered on plateaus, ``learning_rate``) times the warm-up share."""
    return peak * float(warmup_factor(warmup_steps, step))


def learning_rate(opt_state: Any) -> float:
    """The current peak learning rate held in an ``optimizer`` state."""
    return float(jax.device_get(opt_state.hyperparams["learning_rate"]))


def set_learning_rate(opt_state: Any, value: float) -> Any:
    """``opt_state`` with its peak learning rate replaced (same dtype and sharding)."""
    old = opt_state.hyperparams["learning_rate"]
    new = jax.device_put(jnp.asarray(value, old.dtype), old.sharding)
    return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": new})


def init_state(
    model: nnx.Module, tx: optax.GradientTransformation, trainable: Any
) -> tuple[nnx.GraphDef, TrainState]:
    """Splits a fresh model into its graph and a train state at step 0."""
    graphdef, params, frozen, rest = nnx.split(model, trainable, nnx.Param, ...)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        frozen=frozen,
        rest=rest,
        opt_state=tx.init(params),
        best_params=jax.tree.map(jnp.copy, params),  # own buffers: the state is donated
    )
    return graphdef, state


def task_for(cfg: Config, num_classes: int, class_weight_C: tuple[float, ...] = ()) -> Task:
    if cfg.is_stage1:
        return Task(
            "reconstruct", cfg.window, members=len(cfg.stage1_networks()),
            input_noise=cfg.input_noise, seed=cfg.seed,
        )  # fmt: skip
    return Task("classify", cfg.window, num_classes=num_classes, class_weight_C=class_weight_C)


def trainable_filter(cfg: Config) -> Any:
    """Which parameters get gradients: all, or all but the encoder (frozen stage 2)."""
    if cfg.is_stage2:
        return models.trainable_params(cfg.freeze_encoder)
    return nnx.Param


# --------------------------------------------------------------------------- steps


def _global_norm(tree: Any) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(tree)))


def represent(x_BxTxF: jax.Array, scalers: Any, task: Task) -> jax.Array:
    """The model's input from raw (cleaned) windows: each stage-1 network's representation
    stacked, x_KxBxTxF, or a classifier's one, x_BxTxF. ``scalers``: ``Scaler.arrays``
    of each representation (the first K for K networks), as ``dataset.scale`` takes them."""
    if task.kind == "reconstruct":
        return jnp.stack([dataset.scale(x_BxTxF, **a, xp=jnp) for a in scalers[: task.members]])
    return dataset.scale(x_BxTxF, **scalers[0], xp=jnp)


def per_window_loss(model: nnx.Module, x, y_B: jax.Array, task: Task, noisy=None):
    """(loss_KxB, weight_B): per-window loss of each of K networks (K = 1 for a
    classifier) and the window's weight in the batch mean; ``x`` is ``represent``'s.

    Reconstruction: each network's mean squared error over T and F; with ``noisy`` the
    networks reconstruct ``x`` from it (a denoising autoencoder).
    """
    if task.kind == "reconstruct":
        _, xhat_KxBxTxF = models.encode_decode(model, x if noisy is None else noisy)
        return jnp.mean((xhat_KxBxTxF - x) ** 2, axis=(2, 3)), jnp.ones(y_B.shape, jnp.float32)
    logits_BxC = model(x)
    loss_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxC, y_B)
    weight_B = (
        jnp.asarray(task.class_weight_C, jnp.float32)[y_B]
        if task.class_weight_C
        else jnp.ones_like(loss_B)
    )
    return loss_B[None], weight_B


@dataclasses.dataclass(frozen=True)
class ValidationLoss:
    """A batch's summed loss of each network over its valid windows and their summed
    weight, for ``inference.batches`` (validation goes through the one batched apply);
    its ``args`` are the scalers' arrays (``represent``)."""

    task: Task

    def __call__(self, model: nnx.Module, x_BxTxF: jax.Array, batch: dict, scalers) -> dict:
        x = represent(x_BxTxF, scalers, self.task)
        loss_KxB, weight_B = per_window_loss(model, x, batch["label"], self.task)
        w_B = weight_B * batch["valid"]
        return {"loss_sum_K": jnp.sum(loss_KxB * w_B, axis=1), "weight_sum": jnp.sum(w_B)}


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    task: Task,
    trainable: Any,
    scalers: Any,
):
    """The pure ``train_step(state, table, batch) -> (state, metrics)``.

    The model is rebuilt from its state inside the step (``nnx.merge``) and differentiated
    with ``nnx.value_and_grad`` w.r.t. the ``trainable`` parameters only, which also
    carries the dropout RNG updates out of the gradient trace. ``scalers``: the arrays
    of each representation (``represent``), constants of the compiled step.
    """

    def train_step(state: TrainState, table_NxF: jax.Array, batch: dict) -> tuple[TrainState, dict]:
        model = nnx.merge(graphdef, state.params, state.frozen, state.rest)
        model.train()
        x = represent(windows.of_batch(table_NxF, batch, task.window), scalers, task)
        noisy = None
        if task.kind == "reconstruct" and task.input_noise > 0:
            key = jax.random.fold_in(jax.random.key(task.seed), state.step)
            noisy = x + task.input_noise * jax.random.normal(key, x.shape)

        def loss_fn(model):
            loss_KxB, weight_B = per_window_loss(model, x, batch["label"], task, noisy)
            # The networks' mean losses summed: each network's gradient is its own.
            return jnp.sum(jnp.sum(loss_KxB * weight_B, axis=1) / jnp.sum(weight_B))

        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, trainable))(model)
        _, _, _, rest = nnx.split(model, trainable, nnx.Param, ...)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = state.replace(step=state.step + 1, params=params, rest=rest, opt_state=opt_state)
        return new, {"loss": loss / task.members, "grad_norm": _global_norm(grads)}

    return train_step


def repeat_step(train_step, num_steps: int):
    """``num_steps`` train steps in one call: ``(state, table, batches) -> (state, metrics)``.

    ``batches`` holds ``num_steps`` batches stacked on a leading axis; ``lax.scan`` runs
    ``train_step`` over them, so the result is that of ``num_steps`` separate calls (same
    step counter, same noise keys) and ``metrics`` are stacked per step. Saves one
    dispatch and one host round trip per step (see ``benchmarks/throughput.py``).
    """

    def many(state: TrainState, table_NxF: jax.Array, batches: dict) -> tuple[TrainState, dict]:
        lead = {v.shape[0] for v in jax.tree.leaves(batches)}
        if lead != {num_steps}:
            raise ValueError(f"expected {num_steps} stacked batches, got leading axes {lead}")
        return jax.lax.scan(lambda s, b: train_step(s, table_NxF, b), state, batches)

    return many


# ---------------------------------------------------------------------------- loop
