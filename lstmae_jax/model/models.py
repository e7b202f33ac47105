"""LSTM autoencoder, latent classifier (stage 2), and the DNN / CNN baselines.

Shape letters are those of `lstmae_jax.model.lstm`: B batch, T time (window), F features,
H hidden, L latent (last encoder size), C classes, K ensemble members.

Each model takes one frozen dataclass config, built from the run's `Config` by
`lstmae_jax.train.steps.build_model`. Models with dropout are built in training mode (NNX
default); evaluate through `nnx.view(model, deterministic=True)` or `model.eval()`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from lstmae_jax.model.lstm import LSTM

# Dense / Conv kernels start as in Keras (the paper's framework), like `LSTM.w_ih`.
_KERNEL_INIT = nnx.initializers.glorot_uniform()


def _linear(din: int, dout: int, *, rngs: nnx.Rngs, dtype: jnp.dtype | None = None) -> nnx.Linear:
    return nnx.Linear(din, dout, dtype=dtype, kernel_init=_KERNEL_INIT, rngs=rngs)


# --------------------------------------------------------------------------- configs


@dataclasses.dataclass(frozen=True)
class LSTMAEConfig:
    num_features: int  # F
    window: int  # T the data pipeline uses; the model itself accepts any T
    encoder_sizes: tuple[int, ...] = (64,)  # LSTM widths; the last one is the latent L
    decoder_sizes: tuple[int, ...] = (32,)  # LSTM widths after RepeatVector
    unroll: int = 0  # lax.scan unroll of every LSTM layer (speed only); 0: min(window, 16)
    dtype: str = "float32"  # matmul dtype; parameters and LSTM state stay float32
    fused_backward: bool = False  # LSTM gradients by `lstm._fused_bwd` (speed only)

    @property
    def latent(self) -> int:
        return self.encoder_sizes[-1]


@dataclasses.dataclass(frozen=True)
class LatentClassifierConfig:
    latent: int  # L, the autoencoder's encoder_sizes[-1]
    num_classes: int  # C; 2 for benign / attack
    hidden: tuple[int, ...] = (64,)  # ReLU layers before the logits
    dropout: float = 0.1  # after each hidden layer


@dataclasses.dataclass(frozen=True)
class DNNConfig:
    num_features: int  # F
    window: int  # T; the input is the flattened T*F window
    num_classes: int  # C
    dropout: float = 0.2


@dataclasses.dataclass(frozen=True)
class CNNConfig:
    num_features: int  # F
    window: int  # T
    num_classes: int  # C
    dropout: float = 0.2

    @property
    def conv_axis(self) -> str:
        """The convolved axis: "features" (T channels) when window == 1, else "time" (F
        channels). With T = 1 a time convolution only ever sees its centre tap, so it
        degenerates to a per-flow MLP (the DNN baseline again); per-flow 1-D CNN baselines
        in the NIDS literature convolve over the feature vector."""
        return "features" if self.window == 1 else "time"


# The baselines' fixed shapes (no flag reaches them; the comparison is with these).
DNN_HIDDEN = (128, 64, 32)  # the DNN's ReLU layers, each followed by dropout
CNN_CHANNELS = (64, 64)  # the CNN's Conv1D(CNN_KERNEL_SIZE, SAME) -> ReLU layers
CNN_KERNEL_SIZE = 3
CNN_HIDDEN = 64  # Dense -> ReLU -> dropout after global max pooling


# ------------------------------------------------------------------------ autoencoder


# Full unrolling lets XLA fuse across steps: a faster training step for a longer compile;
# past ~16 steps compile time grows faster than the rate. Measured in
# `benchmarks/throughput.py`; see docs/results.md, "Performance".
MAX_AUTO_UNROLL = 16


def _lstm_options(config: LSTMAEConfig) -> dict:
    unroll = config.unroll or min(config.window, MAX_AUTO_UNROLL)
    return dict(unroll=unroll, dtype=jnp.dtype(config.dtype), fused_backward=config.fused_backward)


class Encoder(nnx.Module):
    """Stacked LSTMs; intermediate layers return sequences, the last its final h: z_BxL."""

    def __init__(self, config: LSTMAEConfig, *, rngs: nnx.Rngs):
        sizes = (config.num_features, *config.encoder_sizes)
        self.layers = nnx.List(
            [
                LSTM(i, o, rngs=rngs, **_lstm_options(config))
                for i, o in zip(sizes[:-1], sizes[1:], strict=True)
            ]
        )

    def __call__(self, x_BxTxF: jax.Array) -> jax.Array:
        h = x_BxTxF
        for n, layer in enumerate(self.layers):
            _, h = layer(h, return_sequences=n < len(self.layers) - 1)
        return h  # z_BxL


class Decoder(nnx.Module):
    """RepeatVector(T) -> stacked LSTMs (sequences) -> per-step Dense back to F."""

    def __init__(self, config: LSTMAEConfig, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(config.dtype)
        sizes = (config.latent, *config.decoder_sizes)
        self.layers = nnx.List(
            [
                LSTM(i, o, rngs=rngs, **_lstm_options(config))
                for i, o in zip(sizes[:-1], sizes[1:], strict=True)
            ]
        )
        self.out = _linear(sizes[-1], config.num_features, dtype=dtype, rngs=rngs)

    def __call__(self, z_BxL: jax.Array, num_steps: int) -> jax.Array:
        # The first layer's input is z at every step: project it once (`LSTM.repeat`)
        # instead of materialising B x T x L and projecting T copies.
        first, *rest = self.layers
        _, h_BxTxH = first.repeat(z_BxL, num_steps)
        for layer in rest:
            _, h_BxTxH = layer(h_BxTxH)
        return self.out(h_BxTxH).astype(jnp.float32)  # xhat_BxTxF


class LSTMAE(nnx.Module):
    """LSTM autoencoder. Default (the paper's Keras reference): LSTM(64) -> z_Bx64 ->
    RepeatVector(T) -> LSTM(32, return_sequences) -> TimeDistributed(Dense(F))."""

    def __init__(self, config: LSTMAEConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.encoder = Encoder(config, rngs=rngs)
        self.decoder = Decoder(config, rngs=rngs)

    def encode(self, x_BxTxF: jax.Array) -> jax.Array:
        return self.encoder(x_BxTxF)  # z_BxL

    def __call__(self, x_BxTxF: jax.Array) -> jax.Array:
        return self.decoder(self.encode(x_BxTxF), x_BxTxF.shape[1])  # xhat_BxTxF

    def encode_decode(self, x_BxTxF: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(z_BxL, xhat_BxTxF) in one pass: the code and the reconstruction."""
        z_BxL = self.encode(x_BxTxF)
        return z_BxL, self.decoder(z_BxL, x_BxTxF.shape[1])


# ------------------------------------------------------------------------------ MLPs


class _MLP(nnx.Module):
    """Linear -> ReLU -> Dropout per hidden size, then Linear to the logits."""

    def __init__(
        self, din: int, hidden: Sequence[int], dout: int, dropout: float, *, rngs: nnx.Rngs
    ):
        sizes = (din, *hidden)
        pairs = zip(sizes[:-1], sizes[1:], strict=True)
        self.hidden = nnx.List([_linear(i, o, rngs=rngs) for i, o in pairs])
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.logits = _linear(sizes[-1], dout, rngs=rngs)

    def __call__(self, x_BxD: jax.Array) -> jax.Array:
        for layer in self.hidden:
            x_BxD = self.dropout(jax.nn.relu(layer(x_BxD)))
        return self.logits(x_BxD)


class LatentClassifier(nnx.Module):
    """Stage 2 head: an MLP on the latent z_BxL -> logits_BxC."""

    def __init__(self, config: LatentClassifierConfig, *, rngs: nnx.Rngs):
        self.mlp = _MLP(config.latent, config.hidden, config.num_classes, config.dropout, rngs=rngs)

    def __call__(self, z_BxL: jax.Array) -> jax.Array:
        return self.mlp(z_BxL)


# Stage 2's head parameters (paths start with "encoder" or "head").
HEAD_PARAMS = nnx.All(nnx.Param, nnx.PathContains("head"))


def trainable_params(freeze_encoder: bool) -> nnx.filterlib.Filter:
    """The stage-2 parameters to differentiate, e.g. `nnx.DiffState(0, trainable_params(True))`."""
    return HEAD_PARAMS if freeze_encoder else nnx.Param


class Stage2Model(nnx.Module):
    """Autoencoder encoder + latent classifier: x_BxTxF -> logits_BxC.

    Freeze the encoder by differentiating only `trainable_params(True)` (encoder
    gradients are then absent).
    """

    def __init__(self, encoder: Encoder, head: LatentClassifier):
        self.encoder = encoder
        self.head = head

    def __call__(self, x_BxTxF: jax.Array) -> jax.Array:
        return self.head(self.encoder(x_BxTxF))


# ------------------------------------------------------------------------- baselines


class DNN(nnx.Module):
    """MLP on the flattened window: B x (T*F) -> 128 -> 64 -> 32 (ReLU, dropout) -> C."""

    def __init__(self, config: DNNConfig, *, rngs: nnx.Rngs):
        self.config = config
        din = config.window * config.num_features
        self.mlp = _MLP(din, DNN_HIDDEN, config.num_classes, config.dropout, rngs=rngs)

    def __call__(self, x_BxTxF: jax.Array) -> jax.Array:
        return self.mlp(x_BxTxF.reshape(x_BxTxF.shape[0], -1))


class CNN(nnx.Module):
    """[Conv1D(64, k=3, SAME) -> ReLU] x 2 -> global max pool -> Dense(64) -> ReLU -> C."""

    def __init__(self, config: CNNConfig, *, rngs: nnx.Rngs):
        self.config = config
        in_channels = config.num_features if config.conv_axis == "time" else config.window
        chans, k = (in_channels, *CNN_CHANNELS), (CNN_KERNEL_SIZE,)
        self.convs = nnx.List(
            [
                nnx.Conv(i, o, k, padding="SAME", kernel_init=_KERNEL_INIT, rngs=rngs)
                for i, o in zip(chans[:-1], chans[1:], strict=True)
            ]
        )
        self.dense = _linear(chans[-1], CNN_HIDDEN, rngs=rngs)
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs)
        self.logits = _linear(CNN_HIDDEN, config.num_classes, rngs=rngs)

    def __call__(self, x_BxTxF: jax.Array) -> jax.Array:
        # Conv input is B x length x channels: time-major as given, or features as length.
        h = x_BxTxF if self.config.conv_axis == "time" else jnp.swapaxes(x_BxTxF, 1, 2)
        for conv in self.convs:
            h = jax.nn.relu(conv(h))
        pooled = jnp.max(h, axis=1)
        return self.logits(self.dropout(jax.nn.relu(self.dense(pooled))))  # logits_BxC


# -------------------------------------------------------------------------- ensemble


class LSTMAEEnsemble(nnx.Module):
    """K LSTM-AEs (one per stage-1 representation, ``Config.stage1_networks``) with their
    parameters stacked on a leading K axis.

    One ``nnx.vmap`` runs all members in one program, so they train in one jitted step:
    xhat_KxBxTxF = model(x_KxBxTxF), member k reconstructing its own input x_k (its
    representation of the same windows). The training loss sums the members' losses, and
    gradients are clipped per member (``steps.clip_by_member_norm``), so each member gets
    exactly the update it would get alone.
    """

    def __init__(self, config: LSTMAEConfig, members: int, *, rngs: nnx.Rngs):
        if members < 1:
            raise ValueError(f"an ensemble needs >= 1 member, got {members}")
        self.config = config
        self.num_members = members

        @nnx.split_rngs(splits=members)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def create(rngs: nnx.Rngs) -> LSTMAE:
            return LSTMAE(config, rngs=rngs)

        self.members = create(rngs)

    def __call__(self, x_KxBxTxF: jax.Array) -> jax.Array:
        return self.encode_decode(x_KxBxTxF)[1]  # xhat_KxBxTxF

    def encode_decode(self, x_KxBxTxF: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(z_KxBxL, xhat_KxBxTxF): each member's code and reconstruction of its input.

        ``jax.vmap`` over the split state rather than ``nnx.vmap``: the same program, and it
        also runs where the parameters are constants of a trace (the exported scorer)."""
        graphdef, state = nnx.split(self.members)

        def apply(member_state: nnx.State, x: jax.Array) -> tuple[jax.Array, jax.Array]:
            return nnx.merge(graphdef, member_state).encode_decode(x)

        return jax.vmap(apply)(state, x_KxBxTxF)

    def member_state(self, k: int) -> nnx.State:
        """Member k's state, unstacked (e.g. to give stage 2 one member's encoder)."""
        return jax.tree.map(lambda a: a[k], nnx.state(self.members))


def encode_decode(model: nnx.Module, x_KxBxTxF: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(z_KxBxL, xhat_KxBxTxF) of a stage-1 model: an ``LSTMAEEnsemble`` of K networks, or
    one ``LSTMAE`` (K = 1), each given its own representation of the windows."""
    if isinstance(model, LSTMAEEnsemble):
        return model.encode_decode(x_KxBxTxF)
    z_BxL, xhat_BxTxF = model.encode_decode(x_KxBxTxF[0])
    return z_BxL[None], xhat_BxTxF[None]
