"""Recorded hyperparameters: what a gdtx builder was built with.

An optax transformation is a NamedTuple of two functions and carries no
metadata. A wrapper that must agree with its inner transformation
(:func:`gdtx.rectify` needs the inner's ``b1`` and ``b2``) reads them here,
keyed, as :mod:`gdtx._core.extra_args` keys declared arguments, by the
transformation's ``update`` function:

- :func:`record` is called by a builder on the transformation it returns;
- :func:`recorded` returns what was recorded: an empty mapping for a
  transformation that no gdtx builder made (or that a later wrapper replaced).
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Mapping
from typing import Any

import optax

_RECORDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def record(tx: optax.GradientTransformation, **hyperparameters: Any) -> Any:
    """Records ``hyperparameters`` for ``tx`` and returns ``tx`` unchanged."""
    _RECORDED[tx.update] = types.MappingProxyType(dict(hyperparameters))
    return tx


def recorded(tx: Any) -> Mapping[str, Any]:
    """The hyperparameters recorded for ``tx`` (empty when none were)."""
    try:
        return _RECORDED.get(tx.update, types.MappingProxyType({}))
    except (AttributeError, TypeError):  # not a transformation, or not weak-referenceable
        return types.MappingProxyType({})
