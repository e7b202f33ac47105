"""Train state, the model for a config, and the pure jitted step functions.

The steps are pure functions of ``(state, table, batch)``. The scaled flow table lives on
the devices (replicated; it is small: 2.8M CICIDS2017 flows x 78 features x 4 B =
0.9 GB), and a batch is only the first-row indices of its windows (plus labels), so each
step moves ``B`` integers host -> device and gathers the windows on device. In a
``--share_data`` run no process holds the whole table: each cuts its part of the batch
on the host and the batch carries the windows (``batch["x"]``, ``windows.of_batch``).

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
from lstmae_jax.data import windows
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
    members: int = 1  # ensemble size K (reconstruct only)
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
        if cfg.ensemble > 1:
            return models.LSTMAEEnsemble(ae_cfg, cfg.ensemble, rngs=rngs)
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


def optimizer(cfg: Config) -> optax.GradientTransformation:
    """Adam (the reference paper's; AdamW with ``weight_decay``) after global-norm
    gradient clipping, with a linear warmup over ``warmup_steps``.

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
        clip = optax.clip_by_global_norm(cfg.grad_clip) if cfg.grad_clip > 0 else optax.identity()
        warm = max(cfg.warmup_steps, 1)
        warmup = optax.scale_by_schedule(lambda n: jnp.minimum(1.0, (n + 1) / warm))
        return optax.chain(clip, adam, warmup)

    return optax.inject_hyperparams(make)(learning_rate=cfg.learning_rate)


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
            "reconstruct", cfg.window, members=cfg.ensemble, input_noise=cfg.input_noise,
            seed=cfg.seed,
        )  # fmt: skip
    return Task("classify", cfg.window, num_classes, class_weight_C)


def trainable_filter(cfg: Config) -> Any:
    """Which parameters get gradients: all, or all but the encoder (frozen stage 2)."""
    if cfg.is_stage2:
        return models.trainable_params(cfg.freeze_encoder)
    return nnx.Param


# --------------------------------------------------------------------------- steps


def _global_norm(tree: Any) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(tree)))


def per_window_loss(
    model: nnx.Module, x_BxTxF: jax.Array, y_B: jax.Array, task: Task, noisy_BxTxF=None
):
    """(loss_B, weight_B): per-window loss and its weight in the batch mean.

    Reconstruction: mean squared error over T and F (an ensemble's K x B x T x F output:
    also the mean over members); with ``noisy_BxTxF`` the model reconstructs ``x`` from
    it (a denoising autoencoder).
    """
    if task.kind == "reconstruct":
        xhat = model(x_BxTxF if noisy_BxTxF is None else noisy_BxTxF)
        axes = (1, 2) if xhat.ndim == 3 else (0, 2, 3)
        return jnp.mean((xhat - x_BxTxF) ** 2, axis=axes), jnp.ones(y_B.shape, jnp.float32)
    logits_BxC = model(x_BxTxF)
    loss_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxC, y_B)
    weight_B = (
        jnp.asarray(task.class_weight_C, jnp.float32)[y_B]
        if task.class_weight_C
        else jnp.ones_like(loss_B)
    )
    return loss_B, weight_B


@dataclasses.dataclass(frozen=True)
class ValidationLoss:
    """A batch's summed loss over its valid windows and their summed weight, for
    ``inference.batches`` (validation goes through the one batched apply)."""

    task: Task

    def __call__(self, model: nnx.Module, x_BxTxF: jax.Array, batch: dict, args) -> dict:
        loss_B, weight_B = per_window_loss(model, x_BxTxF, batch["label"], self.task)
        w_B = weight_B * batch["valid"]
        return {"loss_sum": jnp.sum(loss_B * w_B), "weight_sum": jnp.sum(w_B)}


def make_train_step(
    graphdef: nnx.GraphDef, tx: optax.GradientTransformation, task: Task, trainable: Any
):
    """The pure ``train_step(state, table, batch) -> (state, metrics)``.

    The model is rebuilt from its state inside the step (``nnx.merge``) and differentiated
    with ``nnx.value_and_grad`` w.r.t. the ``trainable`` parameters only, which also
    carries the dropout RNG updates out of the gradient trace.
    """

    def train_step(state: TrainState, table_NxF: jax.Array, batch: dict) -> tuple[TrainState, dict]:
        model = nnx.merge(graphdef, state.params, state.frozen, state.rest)
        model.train()
        x_BxTxF = windows.of_batch(table_NxF, batch, task.window)
        noisy = None
        if task.kind == "reconstruct" and task.input_noise > 0:
            key = jax.random.fold_in(jax.random.key(task.seed), state.step)
            noisy = x_BxTxF + task.input_noise * jax.random.normal(key, x_BxTxF.shape)

        def loss_fn(model):
            loss_B, weight_B = per_window_loss(model, x_BxTxF, batch["label"], task, noisy)
            # x K: the members' losses summed, so each member's gradient is its own.
            return task.members * jnp.sum(loss_B * weight_B) / jnp.sum(weight_B)

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
