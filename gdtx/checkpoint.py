"""Saving and restoring optimizer state with Orbax, NamedTuples intact.

Generic serialisation turns an optimizer state's NamedTuples
(``ScaleByBeliefState``, ``optax.ScaleByAdamState``, ...) into plain tuples or
lists (jax-ml/jax#3759, google/flax#4423), after which ``tx.update`` fails.
Restoring *against a target* keeps them: Orbax rebuilds the target's tree
structure and fills in the leaves. The target needs no memory:
``jax.eval_shape(tx.init, params)`` describes the state without computing it.

This module needs ``orbax-checkpoint`` (``pip install "gdtx[flax]"``); it is
not imported by ``import gdtx``.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import optax

__all__ = ["abstract_opt_state", "abstract_train_state", "restore_opt_state"]


def _with_sharding(abstract: Any) -> Any:
    """Gives every ShapeDtypeStruct a sharding, so Orbax knows where to put it.

    ``jax.eval_shape`` keeps the input shardings where it can; a leaf without
    one (e.g. the step ``count``) goes on the default device.
    """
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def fix(x):
        sharding = getattr(x, "sharding", None) or default
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    return jax.tree.map(fix, abstract)


def abstract_opt_state(tx: optax.GradientTransformation, params: Any) -> Any:
    """The shape of ``tx.init(params)`` without computing it: a restore target.

    Args:
      tx: the optimizer whose state is restored (built as when it was saved).
      params: the parameters (arrays or ``jax.ShapeDtypeStruct``).

    Returns:
      ``jax.eval_shape(tx.init, params)`` with a sharding on every leaf: the
      state's NamedTuples with ``jax.ShapeDtypeStruct`` leaves.

    Examples:
      >>> import jax.numpy as jnp, gdtx
      >>> from gdtx.checkpoint import abstract_opt_state
      >>> abstract = abstract_opt_state(gdtx.adabelief(1e-3), {"w": jnp.zeros(3)})
      >>> type(abstract[0]).__name__, abstract[0].mu["w"].shape
      ('ScaleByBeliefState', (3,))
    """
    return _with_sharding(jax.eval_shape(tx.init, params))


def abstract_train_state(tx: optax.GradientTransformation, params: Any, **others: Any) -> Any:
    """A restore target ``{"params": ..., "opt_state": ..., **others}``.

    Args:
      tx: the optimizer whose state is restored.
      params: the parameters (arrays or ``jax.ShapeDtypeStruct``).
      **others: further entries saved beside them (a PRNG key's data, a step
        counter, ...), given as arrays of the right shape and dtype.

    Returns:
      A dict of the same structure with ``jax.ShapeDtypeStruct`` leaves.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> from gdtx.checkpoint import abstract_train_state
      >>> target = abstract_train_state(optax.adam(1e-3), {"w": jnp.zeros(2)}, step=jnp.int32(0))
      >>> sorted(target), target["step"].dtype
      (['opt_state', 'params', 'step'], dtype('int32'))
    """
    shapes = jax.eval_shape(lambda p, o: (p, o), params, others)
    return {
        "params": _with_sharding(shapes[0]),
        "opt_state": abstract_opt_state(tx, params),
        **_with_sharding(shapes[1]),
    }


def restore_opt_state(
    path: str | os.PathLike, tx: optax.GradientTransformation, params: Any
) -> Any:
    """Restores an optimizer state saved with ``orbax.checkpoint.StandardCheckpointer``.

    Args:
      path: the checkpoint directory given to ``StandardCheckpointer().save``.
      tx: the optimizer, built with the same structure as when it was saved.
      params: the parameters the state belongs to (arrays or shapes).

    Returns:
      The optimizer state, with its own NamedTuple types (not tuples).

    Examples:
      >>> import os, tempfile, jax.numpy as jnp, orbax.checkpoint as ocp, gdtx
      >>> from gdtx.checkpoint import restore_opt_state
      >>> tx, params = gdtx.adabelief(1e-3), {"w": jnp.ones(3)}
      >>> path = os.path.join(tempfile.mkdtemp(), "opt_state")
      >>> with ocp.StandardCheckpointer() as ckptr:
      ...     ckptr.save(path, tx.init(params))
      >>> state = restore_opt_state(path, tx, params)
      >>> type(state[0]).__name__, int(state[0].count)
      ('ScaleByBeliefState', 0)

    References:
      jax-ml/jax#3759 and google/flax#4423 (NamedTuples lost in serialisation);
      Orbax, https://orbax.readthedocs.io (``StandardRestore`` with a target).
    """
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(os.fspath(path), abstract_opt_state(tx, params))
