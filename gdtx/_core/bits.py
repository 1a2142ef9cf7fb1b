"""Bit packing of fixed-width codes into uint32 words: what a compressed payload puts on the wire.

Private plumbing of :mod:`gdtx.compression` (QSGD, TernGrad, the scaled sign).
A code of ``width`` bits (``width`` divides 32) per coordinate, ``32 // width``
codes a word: coordinate ``i`` sits in bits ``[width * (i mod (32 / width)),
width * (i mod (32 / width) + 1))`` of word ``i // (32 / width)``, the first
coordinate in the low bits. The last word is padded with zero codes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def pack(codes: jax.Array, width: int) -> jax.Array:
    """``ceil(n * width / 32)`` uint32 words holding the ``n`` codes (each ``< 2**width``)."""
    per_word = 32 // width
    n = codes.size
    grouped = jnp.pad(codes.astype(jnp.uint32), (0, -n % per_word)).reshape(-1, per_word)
    shifts = (jnp.arange(per_word, dtype=jnp.uint32) * jnp.uint32(width))[None, :]
    # The fields do not overlap, so the sum is a bitwise or.
    return jnp.sum(grouped << shifts, axis=1, dtype=jnp.uint32)


def unpack(words: jax.Array, width: int, n: int) -> jax.Array:
    """The first ``n`` codes of ``words`` (as packed by :func:`pack`), as uint32."""
    per_word = 32 // width
    shifts = (jnp.arange(per_word, dtype=jnp.uint32) * jnp.uint32(width))[None, :]
    fields = (words[:, None] >> shifts) & jnp.uint32(2**width - 1)
    return fields.reshape(-1)[:n]


def num_words(n: int, width: int) -> int:
    """The uint32 words :func:`pack` returns for ``n`` codes of ``width`` bits."""
    return -(-n * width // 32)
