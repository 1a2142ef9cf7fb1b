"""Flax helpers for transformations that need extra arguments (``value_fn``, ``grad_fn``).

Not imported by ``import gdtx`` (Flax is an optional dependency): use
``import gdtx.flax``.

- NNX. ``nnx.Optimizer.update(model, grads, **kwargs)`` forwards ``kwargs`` to
  ``tx.update``, but the parameters ``tx`` sees are the *pure* state of the
  ``wrt`` variables, not a module, so a ``value_fn`` must merge them back into
  the model (the split/merge that Flax issue #4545 calls "very hacky").
  :func:`nnx_value_fn` and :func:`nnx_grad_fn` do it once, for a loss that takes
  the module.
- Linen. ``TrainState.apply_gradients(grads=..., **kwargs)`` treats ``kwargs`` as
  fields to replace, never as arguments of ``tx.update`` (Flax PR #4471 is
  open). :func:`apply_gradients` is the same step with the extra arguments
  forwarded.

The functions returned by the NNX helpers work on a copy of the model: a loss
that mutates module state (batch statistics, RNG counters) does so on the copy,
which is discarded, so the look-around of SALR and SAM does not move the
model's state. Call them on the model *inside* the jitted step (as in the
examples), so that the split happens on the traced model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax
from flax import nnx

__all__ = ["apply_gradients", "nnx_grad_fn", "nnx_value_fn"]


def nnx_value_fn(
    model: nnx.Module,
    loss_fn: Callable[[nnx.Module], jax.Array],
    *,
    wrt: Any = nnx.Param,
) -> Callable[[Any], jax.Array]:
    """Turns a loss of an NNX module into a ``value_fn`` of its parameters.

    Args:
      model: the module; its structure and non-``wrt`` state are captured now.
      loss_fn: ``module -> loss`` with the batch closed over (a scalar for
        ``value_fn``, or the ``(B,)`` per-example losses for SALR's
        ``per_example_value_fn``).
      wrt: the filter of the variables the optimizer updates; the same filter as
        ``nnx.Optimizer(..., wrt=...)``.

    Returns:
      ``value_fn(params)``, where ``params`` is the pure state of the ``wrt``
      variables, as ``nnx.Optimizer.update`` passes it to ``tx.update``.

    Examples:
      >>> import jax.numpy as jnp, optax, gdtx, gdtx.flax
      >>> from flax import nnx
      >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
      >>> x, y = jnp.ones((4, 2)), jnp.zeros((4, 1))
      >>> loss_fn = lambda m: jnp.mean((m(x) - y) ** 2)
      >>> value_fn = gdtx.flax.nnx_value_fn(model, loss_fn)
      >>> params = nnx.as_pure(nnx.state(model, nnx.Param))
      >>> bool(value_fn(params) == loss_fn(model))
      True

    References:
      Flax issue #4545, https://github.com/google/flax/issues/4545
    """
    graphdef, _, rest = nnx.split(model, wrt, ...)

    def value_fn(params):
        return loss_fn(nnx.merge(graphdef, params, rest, copy=True))

    return value_fn


def nnx_grad_fn(
    model: nnx.Module,
    loss_fn: Callable[[nnx.Module], jax.Array],
    *,
    wrt: Any = nnx.Param,
) -> Callable[[Any], Any]:
    """Turns a scalar loss of an NNX module into a ``grad_fn`` of its parameters.

    Args:
      model: the module; its structure and non-``wrt`` state are captured now.
      loss_fn: ``module -> scalar loss`` with the batch closed over.
      wrt: the filter of the variables the optimizer updates.

    Returns:
      ``grad_fn(params)``: the gradient of the loss with respect to the pure
      ``wrt`` state, in that state's structure (what :func:`gdtx.sam` needs).

    Examples:
      >>> import jax.numpy as jnp, optax, gdtx, gdtx.flax
      >>> from flax import nnx
      >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
      >>> x, y = jnp.ones((4, 2)), jnp.zeros((4, 1))
      >>> loss_fn = lambda m: jnp.mean((m(x) - y) ** 2)
      >>> optimizer = nnx.Optimizer(model, gdtx.sam(optax.sgd(0.1)), wrt=nnx.Param)
      >>> grads = nnx.grad(loss_fn)(model)
      >>> _ = optimizer.update(model, grads, grad_fn=gdtx.flax.nnx_grad_fn(model, loss_fn))
      >>> int(optimizer.step[...])
      1

    References:
      Flax issue #4545, https://github.com/google/flax/issues/4545
    """
    return jax.grad(nnx_value_fn(model, loss_fn, wrt=wrt))


def apply_gradients(state: Any, *, grads: Any, **extra_args: Any) -> Any:
    """``TrainState.apply_gradients`` that forwards extra arguments to ``tx.update``.

    Same step as Flax's (``step + 1``, ``tx.update``, ``optax.apply_updates``,
    including the ``OVERWRITE_WITH_GRADIENT`` collection), but ``extra_args`` go
    to ``state.tx.update`` instead of ``state.replace``.

    Args:
      state: a ``flax.training.train_state.TrainState`` (or a subclass).
      grads: gradients shaped like ``state.params``.
      **extra_args: extra arguments of the transformation, e.g. ``value_fn=...``.

    Returns:
      The updated state.

    Examples:
      >>> import jax, jax.numpy as jnp, optax, gdtx, gdtx.flax
      >>> from flax.training import train_state
      >>> loss = lambda p: jnp.sum(p["w"] ** 2)
      >>> state = train_state.TrainState.create(
      ...     apply_fn=None, params={"w": jnp.ones(2)}, tx=gdtx.salr(optax.sgd(0.1)))
      >>> state = gdtx.flax.apply_gradients(state, grads=jax.grad(loss)(state.params),
      ...                                   value_fn=loss)
      >>> print(state.params["w"], float(state.opt_state.multiplier))
      [0.8 0.8] 1.0

    References:
      Flax PR #4471, https://github.com/google/flax/pull/4471
    """
    from flax.training.train_state import OVERWRITE_WITH_GRADIENT

    overwrite = OVERWRITE_WITH_GRADIENT in grads
    grads_with_opt = grads["params"] if overwrite else grads
    params_with_opt = state.params["params"] if overwrite else state.params
    updates, opt_state = state.tx.update(
        grads_with_opt, state.opt_state, params_with_opt, **extra_args
    )
    new_params = optax.apply_updates(params_with_opt, updates)
    if overwrite:
        new_params = {
            "params": new_params,
            OVERWRITE_WITH_GRADIENT: grads[OVERWRITE_WITH_GRADIENT],
        }
    return state.replace(step=state.step + 1, params=new_params, opt_state=opt_state)
