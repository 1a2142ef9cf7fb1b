"""Per-leaf moment estimates and the per-step scalars the adaptive families share.

Every Adam-like transformation in gdtx keeps exponential moving averages of the
gradient (``m``) and of its squared magnitude (``v``), does its arithmetic in a
compute dtype derived from the leaf (:mod:`gdtx._core.dtypes`), and needs a few
scalars per step (decays cast to that dtype, bias corrections) that do not
depend on the element. These helpers are that common part, written once:

- :func:`moment_dtypes`: the compute dtype of a leaf and its real part.
- :func:`ema` and :func:`ema_abs_sq`: the two moment updates, in the order the
  reference fixtures were recorded with (changing it changes the last ulp).
- :func:`per_compute_dtype`: builds a step's scalars once per compute dtype, not
  once per leaf, so a 100-leaf model traces one set of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp

from gdtx._core import dtypes

T = TypeVar("T")


def moment_dtypes(g: Any, m: Any, v: Any) -> tuple[Any, Any]:
    """``(cdt, rdt)``: the arithmetic dtype of a leaf (complex for complex ``g``) and its real part.

    For real inputs both are ``compute_dtype(g, m, v)``; ``v`` is a magnitude,
    real-valued even when stored in a complex dtype.
    """
    cdt = dtypes.compute_dtype(g, m)
    rdt = dtypes.compute_dtype(dtypes.real_dtype(cdt), v.real)
    return jnp.promote_types(cdt, rdt), rdt


def ema(decay: jax.Array, prev: jax.Array, new: jax.Array, dtype: Any) -> jax.Array:
    """``decay * prev + (1 - decay) * new``, with the stored ``prev`` read in ``dtype``."""
    return decay * prev.astype(dtype) + (1 - decay) * new


def ema_abs_sq(decay: jax.Array, prev: jax.Array, new: jax.Array, real_dtype: Any) -> jax.Array:
    """``decay * prev + (1 - decay) * |new|^2``: the real second moment (complex ``new`` too)."""
    return decay * dtypes.as_real(prev, real_dtype) + (1 - decay) * dtypes.abs_sq(new)


def per_compute_dtype(make: Callable[[Any], T]) -> Callable[[Any], T]:
    """Wraps ``make(dtype)`` so that it runs once per distinct dtype (inside one step).

    Call it inside ``update`` (the scalars depend on the step count) and pass the
    result to the per-leaf function, which asks for the dtype it computes in.
    """
    cache: dict[Any, T] = {}

    def scalars(dtype: Any) -> T:
        key = jnp.dtype(dtype)
        if key not in cache:
            cache[key] = make(key)
        return cache[key]

    return scalars
