"""A tiny convolutional network for the 8x8 digits."""

from __future__ import annotations

import jax
from flax import nnx


class CNN(nnx.Module):
    """Two 3x3 convolutions and a dense head.

    8x8x1 -> conv(16) -> 8x8x16 -> conv(32, stride 2) -> 4x4x32 -> 512 -> 10.
    About 10k parameters with the default features: it trains in seconds on a
    2-core CPU.
    """

    def __init__(
        self,
        *,
        features: tuple[int, int] = (16, 32),
        num_classes: int = 10,
        rngs: nnx.Rngs,
    ):
        f1, f2 = features
        self.conv1 = nnx.Conv(1, f1, kernel_size=(3, 3), rngs=rngs)
        # A strided convolution halves the resolution instead of a pooling layer.
        self.conv2 = nnx.Conv(f1, f2, kernel_size=(3, 3), strides=2, rngs=rngs)
        self.head = nnx.Linear(4 * 4 * f2, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps images (N, 8, 8, 1) to logits (N, num_classes)."""
        x = nnx.relu(self.conv1(x))
        x = nnx.relu(self.conv2(x))
        x = x.reshape(x.shape[0], -1)
        return self.head(x)


class Linear(nnx.Module):
    """A linear model ``x -> x.w + b`` with a scalar output, initialised at zero.

    Zero initialisation makes the problem's starting point independent of the
    seed: every optimizer starts at ``w = 0`` (loss ``log 2`` for logistic).
    """

    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.dense = nnx.Linear(dim, 1, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps features (N, D) to scores (N,)."""
        return self.dense(x)[:, 0]


class Block(nnx.Module):
    """A pre-LayerNorm Transformer block: causal self-attention, then an MLP."""

    def __init__(self, d_model: int, num_heads: int, dropout: float, *, rngs: nnx.Rngs):
        self.ln1 = nnx.LayerNorm(d_model, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(
            num_heads=num_heads, in_features=d_model, decode=False, rngs=rngs
        )
        self.ln2 = nnx.LayerNorm(d_model, rngs=rngs)
        self.mlp_in = nnx.Linear(d_model, 4 * d_model, rngs=rngs)
        self.mlp_out = nnx.Linear(4 * d_model, d_model, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x, mask, *, deterministic: bool, rngs: nnx.Rngs | None):
        h = self.attn(self.ln1(x), mask=mask, deterministic=True)
        x = x + self.dropout(h, deterministic=deterministic, rngs=rngs)
        h = self.mlp_out(nnx.gelu(self.mlp_in(self.ln2(x))))
        return x + self.dropout(h, deterministic=deterministic, rngs=rngs)


class CharTransformer(nnx.Module):
    """A small decoder-only Transformer over bytes (vocabulary 256).

    Learned token and position embeddings, ``num_layers`` pre-LN blocks with
    causal attention, a final LayerNorm and an untied output projection.
    Dropout (on the residual branches) draws from the ``rngs`` passed at call
    time, so the model itself holds no random state and the training loop owns
    the key (and checkpoints it).
    """

    def __init__(
        self,
        *,
        vocab_size: int = 256,
        max_len: int,
        d_model: int,
        num_heads: int,
        num_layers: int,
        dropout: float,
        rngs: nnx.Rngs,
    ):
        self.embed = nnx.Embed(vocab_size, d_model, rngs=rngs)
        self.pos = nnx.Embed(max_len, d_model, rngs=rngs)
        self.blocks = nnx.List(
            [Block(d_model, num_heads, dropout, rngs=rngs) for _ in range(num_layers)]
        )
        self.ln = nnx.LayerNorm(d_model, rngs=rngs)
        self.out = nnx.Linear(d_model, vocab_size, rngs=rngs)

    def __call__(
        self, tokens: jax.Array, *, deterministic: bool = True, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        """Maps tokens (N, T) to next-token logits (N, T, vocab_size)."""
        x = self.embed(tokens) + self.pos(jax.numpy.arange(tokens.shape[1]))[None]
        mask = nnx.make_causal_mask(tokens)
        for block in self.blocks:
            x = block(x, mask, deterministic=deterministic, rngs=rngs)
        return self.out(self.ln(x))
