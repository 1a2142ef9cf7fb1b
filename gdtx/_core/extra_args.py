"""Declared extra arguments.

optax passes extra keyword arguments (``value``, ``grad_fn``, ...) through
``update(updates, state, params, **extra_args)``, but nothing says which ones a
transformation *needs*. gdtx records that in a registry keyed by the
transformation's ``update`` function (an optax transformation is a NamedTuple
and carries no metadata of its own):

- :func:`declare` registers what a transformation requires;
- :func:`required_extra_args` reads it, also through :func:`chain`;
- :func:`get_required` fetches the values inside ``update`` and raises a
  ``TypeError`` naming the missing argument and the transformation.

Unknown extra arguments are always accepted and ignored.

What is not seen: a plain ``optax.chain`` (and any other optax wrapper) makes a
new ``update`` function that is not registered, so ``required_extra_args`` of it
is the empty set even when an element requires something. The element itself
still raises its ``TypeError`` when the argument is missing. Use
:func:`gdtx.chain` to keep the declaration visible.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import optax

_REQUIRED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def declare(
    tx: optax.GradientTransformation, required: Iterable[str]
) -> optax.GradientTransformationExtraArgs:
    """Records that ``tx.update`` needs the extra arguments ``required``.

    Args:
      tx: a transformation whose ``update`` takes ``**extra_args``.
      required: the names of the extra arguments it cannot work without.

    Returns:
      ``tx`` as a ``GradientTransformationExtraArgs`` (the same functions).
    """
    tx = optax.GradientTransformationExtraArgs(tx.init, tx.update)
    _REQUIRED[tx.update] = frozenset(required)
    return tx


def required_extra_args(tx: optax.GradientTransformation) -> frozenset[str]:
    """The extra arguments that ``tx.update`` requires.

    Args:
      tx: any optax transformation.

    Returns:
      The declared names, the union over the elements of a :func:`gdtx.chain`,
      and the empty set for a transformation that declared nothing (including a
      plain ``optax.chain``, which carries no declaration: see the module notes).

    Examples:
      SAM needs a ``grad_fn`` at every update; a :func:`gdtx.chain` keeps saying so,
      a plain ``optax.chain`` cannot:

      >>> import optax, gdtx
      >>> sorted(gdtx.required_extra_args(gdtx.adabelief(1e-3)))
      []
      >>> sam = gdtx.sam(optax.sgd(0.1))
      >>> sorted(gdtx.required_extra_args(gdtx.chain(optax.clip(1.0), sam)))
      ['grad_fn']
      >>> sorted(gdtx.required_extra_args(optax.chain(optax.clip(1.0), sam)))
      []

    References:
      optax's extra-arguments protocol, ``optax.GradientTransformationExtraArgs``
      (https://optax.readthedocs.io/en/latest/api/transformations.html).
    """
    try:
        return _REQUIRED.get(tx.update, frozenset())
    except TypeError:  # an update that cannot be weakly referenced
        return frozenset()


def get_required(owner: str, extra: Mapping[str, Any], names: Iterable[str]) -> tuple[Any, ...]:
    """Returns the values of the required extra arguments ``names``, in order.

    Raises:
      TypeError: naming the first missing argument and ``owner``.
    """
    values = []
    for name in names:
        if extra.get(name) is None:
            raise TypeError(
                f"{owner} requires the extra argument `{name}`: call "
                f"`update(updates, state, params, {name}=...)` (with nnx.Optimizer: "
                f"`optimizer.update(model, grads, {name}=...)`; with a Linen TrainState, "
                f"whose `apply_gradients` cannot pass it on: "
                f"`gdtx.flax.apply_gradients(state, grads=grads, {name}=...)`)."
            )
        values.append(extra[name])
    return tuple(values)


def chain(*transforms: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """``optax.chain`` that keeps the elements' declared extra arguments visible.

    Args:
      *transforms: the transformations to apply in order.

    Returns:
      The same transformation as ``optax.chain(*transforms)``, registered so that
      :func:`gdtx.required_extra_args` returns the union of the elements'.

    Examples:
      >>> import optax, gdtx
      >>> tx = gdtx.chain(optax.clip_by_global_norm(1.0), gdtx.adabelief(1e-3))
      >>> gdtx.required_extra_args(tx)
      frozenset()

    References:
      ``optax.chain`` (https://optax.readthedocs.io/en/latest/api/combining_optimizers.html),
      whose updates this returns unchanged.
    """
    for position, t in enumerate(transforms):
        if not (callable(getattr(t, "init", None)) and callable(getattr(t, "update", None))):
            raise TypeError(
                f"gdtx.chain: argument {position} must be an optax GradientTransformation "
                f"(an object with `init` and `update`), got {t!r} (a {type(t).__name__})."
            )
    required = frozenset().union(*(required_extra_args(t) for t in transforms))
    return declare(optax.chain(*transforms), required)
