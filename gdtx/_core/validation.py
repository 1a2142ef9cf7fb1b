"""Hyperparameter and shape checks with messages that name the culprit.

A check runs only when the value is concrete: under ``jax.jit`` or
``optax.inject_hyperparams`` hyperparameters arrive as tracers, and a
transformation must then accept them silently. Schedules (callables) are not
checked here; their values are only known step by step.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def concrete_value(value: Any) -> float | None:
    """Returns ``value`` as a Python float, or None when it cannot be inspected.

    None means: a tracer, a schedule, or something that is not a real scalar.
    """
    if callable(value) or isinstance(value, jax.core.Tracer):
        return None
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        return None
    if array.size != 1 or not np.issubdtype(array.dtype, np.number):
        return None
    if np.iscomplexobj(array):
        return None
    return float(array.reshape(()))


def _fail(owner: str, name: str, requirement: str, value: Any) -> None:
    raise ValueError(f"{owner}: `{name}` must be {requirement}, got {value!r}.")


def check_non_negative(owner: str, name: str, value: Any) -> None:
    """Raises ``ValueError`` if a concrete ``value`` is negative or NaN."""
    x = concrete_value(value)
    if x is not None and not x >= 0:
        _fail(owner, name, ">= 0", value)


def check_positive(owner: str, name: str, value: Any) -> None:
    """Raises ``ValueError`` if a concrete ``value`` is not strictly positive."""
    x = concrete_value(value)
    if x is not None and not x > 0:
        _fail(owner, name, "> 0", value)


def check_decay(owner: str, name: str, value: Any) -> None:
    """Raises ``ValueError`` unless a concrete decay rate lies in [0, 1)."""
    x = concrete_value(value)
    if x is not None and not 0 <= x < 1:
        _fail(owner, name, "in [0, 1)", value)


def check_integer(owner: str, name: str, value: Any, minimum: int) -> None:
    """Raises ``ValueError`` unless a concrete ``value`` is an integer >= ``minimum``.

    Booleans are rejected: ``True`` is an int to Python but never a count.
    """
    x = concrete_value(value)
    if isinstance(value, bool) or (x is not None and not (x == int(x) and x >= minimum)):
        _fail(owner, name, f"an integer >= {minimum}", value)


def check_static_integer(
    owner: str, name: str, value: Any, minimum: int, maximum: int | None = None
) -> int:
    """Returns ``value`` as an int; it fixes a shape, so it must be concrete.

    Raises:
      TypeError: for a tracer, saying to list ``name`` in ``inject_hyperparams``'
        ``static_args``.
      ValueError: unless ``value`` is an integer in ``[minimum, maximum]``.
    """
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{owner}: `{name}` fixes a shape and cannot be traced; with "
            f"optax.inject_hyperparams, list it in `static_args`."
        )
    bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or number < minimum or (maximum is not None and number > maximum):
        _fail(owner, name, f"an integer {bound}", value)
    return number


def check_choice(owner: str, name: str, value: Any, choices: Iterable[Any]) -> None:
    """Raises ``ValueError`` unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        _fail(owner, name, f"one of {choices}", value)


def check_dtype(owner: str, name: str, value: Any) -> None:
    """Raises ``ValueError`` unless ``value`` is None or a floating/complex dtype."""
    if value is None:
        return
    if isinstance(value, jax.Array | np.ndarray):
        # optax.inject_hyperparams turns a dtype given as a class into an array
        # when it is not listed in static_args: say so instead of JAX's warning.
        _fail(
            owner, name, "a dtype, not an array (list it in inject_hyperparams' static_args)", value
        )
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        _fail(owner, name, "None or a dtype", value)
    if not jnp.issubdtype(dtype, jnp.inexact):
        _fail(owner, name, "None or a floating-point dtype", value)


def check_like_state(owner: str, updates: Any, reference: Any, what: str = "updates") -> None:
    """Raises ``ValueError`` if ``updates`` and a params-shaped state tree differ.

    Runs at trace time (it compares static structure and shapes only), so it
    costs nothing inside a compiled step.
    """
    upd_leaves, upd_def = jax.tree.flatten_with_path(updates)
    ref_leaves, ref_def = jax.tree.flatten_with_path(reference)
    if upd_def != ref_def:
        raise ValueError(
            f"{owner}: the {what} tree does not match the parameters the state was "
            f"initialised with.\n  {what}: {upd_def}\n  state: {ref_def}"
        )
    for (path, u), (_, r) in zip(upd_leaves, ref_leaves, strict=True):
        if np.shape(u) != np.shape(r):
            raise ValueError(
                f"{owner}: {what} at {jax.tree_util.keystr(path)} has shape {np.shape(u)}, "
                f"but the state was initialised for shape {np.shape(r)}."
            )
