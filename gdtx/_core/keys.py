"""The carried PRNG key of the stochastic collectives: one key per step and per device.

Private plumbing of :func:`gdtx.compressed_mean`, :func:`gdtx.error_feedback`,
:func:`gdtx.diana` and :func:`gdtx.artemis`. Their state carries a raw
``uint32`` threefry key (``jax.random.PRNGKey(seed)``, see
:func:`check_seed`); every step :func:`next_keys` splits it into the key to
carry and the step's key, and folds this device's index into the latter, and
:func:`rounding_key` turns that key into the one the compressor draws its
rounding bits with (:data:`KEY_IMPLS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from gdtx._core import validation
from gdtx._core.collectives import axis_index

# The PRNGs a compressor may round with (``key_impl``): JAX's default, or XLA's
# RngBitGenerator seeded from the threefry step key.
KEY_IMPLS = ("threefry2x32", "rbg")


def check_seed(owner: str, seed: Any) -> None:
    """Raises unless ``seed`` (of the carried key) is an integer >= 0, naming ``owner``."""
    validation.check_integer(owner, "seed", seed, 0)


def check_key_impl(owner: str, key_impl: Any) -> None:
    """Raises ``ValueError`` unless ``key_impl`` is one of :data:`KEY_IMPLS`, naming ``owner``."""
    validation.check_choice(owner, "key_impl", key_impl, KEY_IMPLS)


def next_keys(
    state_key: jax.Array, axis_name: str | Sequence[str] | None
) -> tuple[jax.Array, jax.Array]:
    """(the key to carry, this step's key): ``split`` the carried key; per device, ``fold_in``.

    The carried key is split every step, so step keys never repeat (a key from
    ``fold_in(key, count)`` would repeat forever once the int32 ``count``
    saturates at 2**31 - 1). The carried key is the same on every device; each
    device folds in its index along the axis (row-major over a tuple of axes),
    so the workers' keys are independent. With ``axis_name=None`` the step's
    key is the second half of the split.
    """
    keys = jax.random.split(state_key)
    carry, step = keys[0], keys[1]
    return carry, step if axis_name is None else jax.random.fold_in(step, axis_index(axis_name))


def rounding_key(step_key: jax.Array, key_impl: str) -> jax.Array:
    """The key the compressor draws with: the raw threefry step key, or one of ``key_impl``.

    An ``rbg`` key is seeded with four words drawn from the step key, so the
    device index folded into it (and the per-step split) carry over.
    """
    if key_impl == "threefry2x32":
        return step_key
    words = jax.random.bits(step_key, (4,), jnp.uint32)
    return jax.random.wrap_key_data(words, impl=key_impl)
