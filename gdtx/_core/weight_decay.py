"""Weight decay in the three modes that the reference implementations use.

Confusing two of them gives errors of order one, so every gdtx alias with
weight decay builds its chain here and states which mode its reference uses.

=============  ====================================  ===============================
mode           parameter step                        place in the chain
=============  ====================================  ===============================
"decoupled"    ``p <- p (1 - lr wd) - lr u``          between scaling and learning rate
"fixed"        ``p <- p (1 - wd) - lr u``             after the learning rate
"l2"           ``g <- g + wd p`` before the moments   before the scaling
=============  ====================================  ===============================

``weight_decay`` may be a float or a schedule; ``mask`` works as in
``optax.add_decayed_weights`` (a tree of booleans, or a callable returning one).
The decay transformation is always present, even at ``weight_decay=0``, so that
the state's structure does not depend on a value that may be traced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optax

from gdtx._core import extra_args, validation

WEIGHT_DECAY_MODES = ("decoupled", "fixed", "l2")


def _negated(weight_decay: optax.ScalarOrSchedule) -> optax.ScalarOrSchedule:
    if callable(weight_decay):
        return lambda count: -weight_decay(count)
    return -weight_decay


def chain_with_weight_decay(
    direction: optax.GradientTransformation,
    *,
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: optax.ScalarOrSchedule,
    weight_decay_mode: str,
    mask: Any | Callable[[optax.Params], Any] | None,
    owner: str,
    allow_complex: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """Builds ``direction`` + weight decay + learning rate as one :func:`gdtx.chain`.

    Args:
      direction: the descent-direction transformation (a ``scale_by_*``).
      learning_rate: a float or a schedule.
      weight_decay: a float or a schedule, >= 0.
      weight_decay_mode: ``"decoupled"``, ``"fixed"`` or ``"l2"`` (see the module docs).
      mask: which parameters decay, as in ``optax.add_decayed_weights``.
      owner: the public name of the alias, for error messages.
      allow_complex: whether the alias supports complex parameters; ``init``
        refuses integer parameters always, and complex ones unless this is set
        (with a ``TypeError`` naming ``owner`` and the leaf).

    Returns:
      The chained transformation.
    """
    validation.check_choice(owner, "weight_decay_mode", weight_decay_mode, WEIGHT_DECAY_MODES)
    validation.check_non_negative(owner, "learning_rate", learning_rate, schedule=True)
    validation.check_non_negative(owner, "weight_decay", weight_decay, schedule=True)
    scale_by_lr = optax.scale_by_learning_rate(learning_rate)
    if weight_decay_mode == "l2":
        parts = (_decayed_weights(weight_decay, mask, owner), direction, scale_by_lr)
    elif weight_decay_mode == "decoupled":
        parts = (direction, _decayed_weights(weight_decay, mask, owner), scale_by_lr)
    else:  # "fixed": the decay is added after -lr, so it must not be scaled by it.
        parts = (direction, scale_by_lr, _decayed_weights(_negated(weight_decay), mask, owner))
    chained = extra_args.chain(*parts)
    return validation.checking_params(chained, owner, allow_complex=allow_complex)


def _decayed_weights(
    weight_decay: optax.ScalarOrSchedule, mask: Any, owner: str
) -> optax.GradientTransformation:
    """``optax.add_decayed_weights`` that needs ``params`` only when it decays.

    The transformation is always in the chain (its state must not depend on a
    value that may be traced), but a concrete ``weight_decay=0`` means there is
    nothing to add, and then ``update`` works without params, as
    ``optax.adabelief(lr).update(grads, state)`` does.
    """
    inner = optax.add_decayed_weights(weight_decay, mask)
    no_decay = not callable(weight_decay) and validation.concrete_value(weight_decay) == 0.0

    def update_fn(updates, state, params=None):
        if params is None:
            if no_decay:
                return updates, state
            raise ValueError(
                f"{owner}: weight decay needs the parameters: call "
                f"`update(updates, state, params)`, or set `weight_decay=0`."
            )
        return inner.update(updates, state, params)

    return optax.GradientTransformation(inner.init, update_fn)
