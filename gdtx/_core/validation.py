"""Hyperparameter, parameter and shape checks with messages that name the culprit.

A hyperparameter is a real number: a Python or NumPy int or float, or a real
array (every entry is checked). Where an argument is documented to take a
schedule (``learning_rate``, ``weight_decay``), a callable is accepted too, and
where it is documented as optional, ``None``. Anything else (a string, a
boolean, ``None`` where no default means "off", a complex number) is a
``TypeError`` at construction; a real value out of range, or not finite, is a
``ValueError``.

A range check runs only when the value is concrete: under ``jax.jit`` or
``optax.inject_hyperparams`` hyperparameters arrive as tracers, and a
transformation must then accept them silently. Schedules are not range-checked;
their values are only known step by step.

Parameters are checked once, at ``init`` (:func:`check_params`): gdtx updates
floating-point parameters, and complex ones only where the method's math extends
to them in optax's sense (``|g|^2 = g * conj(g)``).

Which error, for complex numbers in particular: a *knob* that picks a dtype
(``mu_dtype``, ``grads_dtype``) is a choice, and a dtype outside its allowed set
(an integer dtype; a complex one for a real-only buffer) is a ``ValueError``, as
is a string outside :func:`check_choice`'s options. *Data* the method cannot take
is a ``TypeError`` at ``init``: integer parameters, complex parameters for a
real-only method, and a real state dtype that would drop a complex parameter's
phase (:func:`gdtx._core.dtypes.check_phase_dtype`). A complex *hyperparameter*
value is a ``TypeError`` (not a real number, above).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdtx._core import extra_args


def _describe(value: Any) -> str:
    return f"{value!r} (a {type(value).__name__})"


def real_values(
    owner: str, name: str, value: Any, *, schedule: bool = False, optional: bool = False
) -> np.ndarray | None:
    """Returns the concrete entries of a real hyperparameter as a float64 array.

    Returns None when the value cannot be inspected yet: a tracer, a schedule
    (only with ``schedule=True``) or ``None`` (only with ``optional=True``).

    Raises:
      TypeError: for anything that is not a real number (or a schedule / None
        where allowed), naming ``owner``, ``name`` and the value.
    """
    if isinstance(value, jax.core.Tracer):
        return None
    if value is None and optional:
        return None
    if callable(value) and schedule:
        return None
    expected = "a real number" + (" or a schedule" if schedule else "")
    expected += " or None" if optional else ""
    if isinstance(value, bool | np.bool_ | str | bytes) or value is None or callable(value):
        raise TypeError(f"{owner}: `{name}` must be {expected}, got {_describe(value)}.")
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        array = None
    if array is None or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise TypeError(f"{owner}: `{name}` must be {expected}, got {_describe(value)}.")
    return array.astype(np.float64)


def concrete_value(value: Any) -> float | None:
    """Returns a concrete real scalar ``value`` as a Python float, else None.

    None means: a tracer, a schedule, or something that is not a real scalar.
    For checks, use :func:`real_values`, which refuses what this ignores.
    """
    if callable(value) or isinstance(value, jax.core.Tracer | bool | str | bytes):
        return None
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        return None
    if array.size != 1 or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        return None
    return float(array.reshape(()))


def _fail(owner: str, name: str, requirement: str, value: Any) -> None:
    raise ValueError(f"{owner}: `{name}` must be {requirement}, got {value!r}.")


def _check_range(
    owner: str,
    name: str,
    value: Any,
    in_range: Callable[[np.ndarray], np.ndarray],
    requirement: str,
    *,
    schedule: bool,
    optional: bool,
    finite: bool = True,
) -> None:
    x = real_values(owner, name, value, schedule=schedule, optional=optional)
    if x is None:
        return
    if not np.all(in_range(x)):  # NaN fails every comparison
        _fail(owner, name, requirement, value)
    if finite and not np.all(np.isfinite(x)):
        _fail(owner, name, "finite", value)


def check_non_negative(
    owner: str, name: str, value: Any, *, schedule: bool = False, optional: bool = False
) -> None:
    """Raises unless ``value`` is a real number >= 0 and finite (every entry).

    ``TypeError`` for a non-number, ``ValueError`` for a negative, NaN or
    infinite value. Tracers pass; schedules and None pass where allowed.
    """
    _check_range(owner, name, value, lambda x: x >= 0, ">= 0", schedule=schedule, optional=optional)


def check_positive(
    owner: str, name: str, value: Any, *, schedule: bool = False, optional: bool = False
) -> None:
    """Raises unless ``value`` is a real number > 0 and finite (every entry)."""
    _check_range(owner, name, value, lambda x: x > 0, "> 0", schedule=schedule, optional=optional)


def check_decay(
    owner: str, name: str, value: Any, *, schedule: bool = False, optional: bool = False
) -> None:
    """Raises unless ``value`` is a real number in [0, 1) (every entry)."""
    _check_range(
        owner,
        name,
        value,
        lambda x: (0 <= x) & (x < 1),
        "in [0, 1)",
        schedule=schedule,
        optional=optional,
    )


def check_at_least(
    owner: str, name: str, value: Any, minimum: float, *, optional: bool = False
) -> None:
    """Raises unless ``value`` is a real number >= ``minimum`` and finite (every entry)."""
    _check_range(
        owner,
        name,
        value,
        lambda x: x >= minimum,
        f">= {minimum:g}",
        schedule=False,
        optional=optional,
    )


def check_interval(
    owner: str,
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    high_open: bool = False,
    optional: bool = False,
) -> None:
    """Raises unless every entry of ``value`` is in ``[low, high]`` (``[low, high)``)."""
    bracket = ")" if high_open else "]"
    _check_range(
        owner,
        name,
        value,
        lambda x: (low <= x) & ((x < high) if high_open else (x <= high)),
        f"in [{low:g}, {high:g}{bracket}",
        schedule=False,
        optional=optional,
    )


def check_scalar(owner: str, name: str, value: Any) -> None:
    """Raises ``ValueError`` unless ``value`` is a scalar (a tracer's shape counts too)."""
    if np.ndim(value) != 0:
        raise ValueError(f"{owner}: `{name}` must be a scalar, got {value!r}.")


def check_static_real(owner: str, name: str, value: Any) -> float:
    """Returns ``value`` as a float; it fixes a shape or a host-side table, so it must be concrete.

    Raises:
      TypeError: for a tracer, saying to list ``name`` in ``inject_hyperparams``'
        ``static_args``; for anything that is not a real scalar.
    """
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{owner}: `{name}` must be a concrete number, not a traced value (it is "
            f"used when the step is built); with optax.inject_hyperparams, list it in "
            f"`static_args`."
        )
    real_values(owner, name, value)
    number = concrete_value(value)
    if number is None:
        raise TypeError(f"{owner}: `{name}` must be a real scalar, got {value!r}.")
    return number


def check_moments(owner: str, b1: Any, b2: Any, eps: Any, mu_dtype: Any, nu_dtype: Any) -> None:
    """The checks every Adam-type builder makes: decays, ``eps`` and the moments' dtypes."""
    check_decay(owner, "b1", b1)
    check_decay(owner, "b2", b2)
    check_non_negative(owner, "eps", eps)
    check_dtype(owner, "mu_dtype", mu_dtype)
    check_dtype(owner, "nu_dtype", nu_dtype)


def _is_integer_number(value: Any) -> bool:
    if isinstance(value, bool | np.bool_):
        return False
    if isinstance(value, int | np.integer):
        return True
    return isinstance(value, np.ndarray | jax.Array) and (
        value.ndim == 0 and jnp.issubdtype(value.dtype, jnp.integer)
    )


def check_integer(
    owner: str, name: str, value: Any, minimum: int, *, optional: bool = False
) -> None:
    """Raises unless ``value`` is an integer >= ``minimum`` (tracers pass).

    An integer is a Python or NumPy int or an integer-dtype scalar array:
    ``2.0`` is a float, and ``True`` is an int to Python but never a count
    (both ``TypeError``).
    """
    if isinstance(value, jax.core.Tracer) or (value is None and optional):
        return
    if not _is_integer_number(value):
        raise TypeError(f"{owner}: `{name}` must be an integer, got {_describe(value)}.")
    if int(value) < minimum:
        _fail(owner, name, f"an integer >= {minimum}", value)


def check_static_integer(
    owner: str, name: str, value: Any, minimum: int, maximum: int | None = None
) -> int:
    """Returns ``value`` as an int; it fixes a shape, so it must be concrete.

    Raises:
      TypeError: for a tracer, saying to list ``name`` in ``inject_hyperparams``'
        ``static_args``; for anything that is not an integer (``2.0``, ``True``).
      ValueError: unless ``value`` is an integer in ``[minimum, maximum]``.
    """
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{owner}: `{name}` fixes a shape and cannot be traced; with "
            f"optax.inject_hyperparams, list it in `static_args`."
        )
    if not _is_integer_number(value):
        raise TypeError(f"{owner}: `{name}` must be an integer, got {_describe(value)}.")
    number = operator.index(value) if not hasattr(value, "item") else int(value.item())
    bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    if number < minimum or (maximum is not None and number > maximum):
        _fail(owner, name, f"an integer {bound}", value)
    return number


def check_choice(owner: str, name: str, value: Any, choices: Iterable[Any]) -> None:
    """Raises ``ValueError`` unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if isinstance(value, jax.core.Tracer) or value not in choices:
        _fail(owner, name, f"one of {choices}", value)


def check_flags(owner: str, **flags: Any) -> None:
    """Raises ``TypeError`` unless each flag is a Python (or NumPy) bool.

    A string such as ``"False"`` is truthy and would switch a variant on; a
    traced flag (``optax.inject_hyperparams`` without ``static_args``) cannot
    choose a branch.
    """
    for name, value in flags.items():
        if isinstance(value, bool | np.bool_):
            continue
        if isinstance(value, jax.core.Tracer):
            raise TypeError(
                f"{owner}: `{name}` selects a variant and cannot be traced; with "
                f"optax.inject_hyperparams, list it in `static_args`."
            )
        raise TypeError(
            f"{owner}: `{name}` must be a bool, got {value!r} (a {type(value).__name__})."
        )


def check_dtype(owner: str, name: str, value: Any, *, real: bool = False) -> None:
    """Raises ``ValueError`` unless ``value`` is None or a floating/complex dtype.

    ``real=True`` refuses complex dtypes too (a buffer whose math is real-only).
    """
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
    if real and jnp.issubdtype(dtype, jnp.complexfloating):
        _fail(owner, name, "None or a real floating-point dtype", value)


def _leaf_dtype(leaf: Any) -> Any | None:
    dtype = getattr(leaf, "dtype", None)
    if dtype is None and isinstance(leaf, int | float | complex | np.generic):
        dtype = np.result_type(leaf)
    return None if dtype is None else jnp.dtype(dtype)


def check_params(owner: str, params: Any, *, allow_complex: bool, what: str = "parameter") -> None:
    """Raises ``TypeError`` unless every leaf of ``params`` is floating-point.

    Complex leaves pass only with ``allow_complex`` (methods whose math extends
    to complex numbers in optax's sense). Leaves without a dtype (placeholders
    of ``optax.tree_map_params``) are not inspected. Runs at trace time only.

    Args:
      owner: the public name of the transformation, for the message.
      params: the tree ``init`` received (arrays or ``jax.ShapeDtypeStruct``).
      allow_complex: whether complex leaves are supported.
      what: what the leaves are, for the message.
    """
    for path, leaf in jax.tree.flatten_with_path(params)[0]:
        dtype = _leaf_dtype(leaf)
        if dtype is None or jnp.issubdtype(dtype, jnp.floating):
            continue
        where = jax.tree_util.keystr(path) or "(the root)"
        if jnp.issubdtype(dtype, jnp.complexfloating):
            if allow_complex:
                continue
            raise TypeError(
                f"{owner} does not support complex parameters: the {what} at {where} has "
                f"dtype {dtype}. Optimise its real and imaginary parts as separate real "
                f"leaves (e.g. store `jnp.stack([p.real, p.imag])`), or leave it out with "
                f"`optax.masked` / `optax.multi_transform`."
            )
        raise TypeError(
            f"{owner} updates floating-point parameters only: the {what} at {where} has "
            f"dtype {dtype}. Cast it (e.g. `p.astype(jnp.float32)`), or leave it out with "
            f"`optax.masked` / `optax.multi_transform`."
        )


def checking_params(
    tx: optax.GradientTransformation, owner: str, *, allow_complex: bool
) -> optax.GradientTransformationExtraArgs:
    """``tx`` whose ``init`` and ``update`` first check their inputs in ``owner``'s name.

    ``init`` runs :func:`check_params`; ``update`` runs :func:`check_like_params`
    (when params are given), so a wrong tree or shape is reported with the name
    of the alias the user called rather than of an element inside its chain.
    The declared extra arguments of ``tx`` stay visible. Trace-time checks only.
    """

    def init_fn(params):
        check_params(owner, params, allow_complex=allow_complex)
        return tx.init(params)

    def update_fn(updates, state, params=None, **extra):
        check_like_params(owner, updates, params)
        return tx.update(updates, state, params, **extra)

    checked = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return extra_args.declare(checked, extra_args.required_extra_args(tx))


def _check_same_tree(owner: str, updates: Any, reference: Any, tree_msg, leaf_msg) -> None:
    """Compares structure, then shapes leaf by leaf (trace time: static information only)."""
    upd_leaves, upd_def = jax.tree.flatten_with_path(updates)
    ref_leaves, ref_def = jax.tree.flatten_with_path(reference)
    if upd_def != ref_def:
        raise ValueError(f"{owner}: {tree_msg(upd_def, ref_def)}")
    for (path, u), (_, r) in zip(upd_leaves, ref_leaves, strict=True):
        if np.shape(u) != np.shape(r):
            where = jax.tree_util.keystr(path)
            raise ValueError(f"{owner}: {leaf_msg(where, np.shape(u), np.shape(r))}")


def check_like_state(owner: str, updates: Any, reference: Any, what: str = "updates") -> None:
    """Raises ``ValueError`` if ``updates`` and a params-shaped state tree differ.

    Runs at trace time (it compares static structure and shapes only), so it
    costs nothing inside a compiled step.
    """
    _check_same_tree(
        owner,
        updates,
        reference,
        lambda got, want: (
            f"the {what} tree does not match the parameters the state was "
            f"initialised with.\n  {what}: {got}\n  state: {want}"
        ),
        lambda where, got, want: (
            f"{what} at {where} has shape {got}, but the state was initialised for shape {want}."
        ),
    )


def check_like_params(owner: str, updates: Any, params: Any | None) -> None:
    """Raises ``ValueError`` if ``params`` is given and differs from ``updates``.

    For transformations that keep no params-shaped state: without it, a
    ``(1,)`` gradient for a ``(4,)`` parameter would silently broadcast.
    Structure and shapes only, at trace time.
    """
    if params is None:
        return
    _check_same_tree(
        owner,
        updates,
        params,
        lambda got, want: (
            f"the updates tree does not match the params tree.\n  updates: {got}\n  params:  {want}"
        ),
        lambda where, got, want: (
            f"the update at {where} has shape {got}, but the parameter has shape {want}."
        ),
    )


def check_state_type(owner: str, state: Any, expected_type: type) -> None:
    """Raises ``TypeError`` unless ``state`` is an ``expected_type`` (at trace time).

    A state of another optimizer (a checkpoint restored into the wrong
    transformation, states of a chain passed in the wrong order) would otherwise
    fail deep inside ``update`` with an ``AttributeError`` on a field name.
    """
    if isinstance(state, expected_type):
        return
    raise TypeError(
        f"{owner}: `state` is a {type(state).__name__}, expected a "
        f"{expected_type.__name__}; was it initialised by another optimizer (or restored "
        f"from another optimizer's checkpoint)? Pass the state that this "
        f"transformation's `init` returned."
    )
