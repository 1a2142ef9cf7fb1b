"""The dtype policy shared by every stateful transformation.

- Each moment a transformation keeps has its own dtype knob (``mu_dtype``,
  ``nu_dtype``, ...). ``None`` means "the dtype of the parameter".
- Arithmetic runs in at least float32, so bfloat16 parameters do not mean
  bfloat16 accumulation (optax #1552); float64 stays float64 under x64.
- Updates come back in the gradients' dtype; state goes back to its own dtype.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def canonical_dtype(dtype: Any) -> Any:
    """Returns the canonical JAX dtype for ``dtype`` (None stays None)."""
    return None if dtype is None else jax.dtypes.canonicalize_dtype(dtype)


def compute_dtype(*arrays: Any) -> Any:
    """The dtype to do arithmetic in: the operands' result type, at least float32."""
    return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def zeros_like_params(params: Any, dtype: Any) -> Any:
    """Zeros shaped like ``params`` in ``dtype`` (or each leaf's own dtype if None).

    Works on ``jax.ShapeDtypeStruct`` leaves too (abstract ``init``) and keeps
    ``None`` leaves as ``None``.
    """
    return optax.tree.zeros_like(params, dtype=canonical_dtype(dtype))
