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


def real_dtype(dtype: Any) -> Any:
    """The real dtype of the same precision: complex64 -> float32, float32 stays."""
    return jnp.finfo(dtype).dtype


def abs_sq(x: jax.Array) -> jax.Array:
    """``|x|^2`` as a real array: ``x * x`` for real ``x``, ``Re(x conj(x))`` for complex.

    The squared modulus is what every second moment, variance and norm needs for
    complex numbers (optax's ``numerics.abs_sq``); ``x * x`` of a complex ``x`` is
    not it (its real part can be negative and it carries a phase).
    """
    if jnp.iscomplexobj(x):
        return jnp.real(x * jnp.conj(x))
    return x * x


def as_real(x: jax.Array, dtype: Any) -> jax.Array:
    """A stored magnitude (real values, possibly in a complex dtype) as real ``dtype``.

    Magnitude moments (``nu``) of complex parameters are stored in the
    parameter's complex dtype by default, as optax does, with a zero imaginary
    part: read back their real part without a ``ComplexWarning``.
    """
    return (jnp.real(x) if jnp.iscomplexobj(x) else x).astype(dtype)


def check_phase_dtype(owner: str, name: str, params: Any, dtype: Any) -> None:
    """Raises ``TypeError`` if a real ``dtype`` would hold a complex leaf's phase.

    Moments that carry the gradient's phase (``mu``, a previous gradient) cannot
    be stored in a real dtype for a complex parameter: the cast would drop the
    imaginary part. Magnitude moments (``nu``) may be real: do not check those.
    """
    if dtype is None or jnp.issubdtype(dtype, jnp.complexfloating):
        return
    for path, leaf in jax.tree.flatten_with_path(params)[0]:
        leaf_dtype = getattr(leaf, "dtype", None)
        if leaf_dtype is not None and jnp.issubdtype(leaf_dtype, jnp.complexfloating):
            where = jax.tree_util.keystr(path) or "(the root)"
            raise TypeError(
                f"{owner}: `{name}={jnp.dtype(dtype).name}` is real, but the parameter at "
                f"{where} is {jnp.dtype(leaf_dtype).name}: a real `{name}` would drop the "
                f"imaginary part of the gradient. Use a complex dtype (e.g. "
                f"`{name}=jnp.complex64`) or None (the parameter's dtype)."
            )


def checking_phase_dtypes(
    tx: optax.GradientTransformation, owner: str, **knobs: Any
) -> optax.GradientTransformationExtraArgs:
    """``tx`` whose ``init`` first runs :func:`check_phase_dtype` for each knob, as ``owner``.

    For aliases, so that the message names the function the user called;
    ``update`` is ``tx.update`` itself (declared extra arguments stay visible).
    """

    def init_fn(params):
        for name, dtype in knobs.items():
            check_phase_dtype(owner, name, params, canonical_dtype(dtype))
        return tx.init(params)

    return optax.GradientTransformationExtraArgs(init_fn, tx.update)
