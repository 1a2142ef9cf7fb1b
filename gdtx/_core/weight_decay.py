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
) -> optax.GradientTransformationExtraArgs:
    """Builds ``direction`` + weight decay + learning rate as one :func:`gdtx.chain`.

    Args:
      direction: the descent-direction transformation (a ``scale_by_*``).
      learning_rate: a float or a schedule.
      weight_decay: a float or a schedule, >= 0.
      weight_decay_mode: ``"decoupled"``, ``"fixed"`` or ``"l2"`` (see the module docs).
      mask: which parameters decay, as in ``optax.add_decayed_weights``.
      owner: the public name of the alias, for error messages.

    Returns:
      The chained transformation.
    """
    validation.check_choice(owner, "weight_decay_mode", weight_decay_mode, WEIGHT_DECAY_MODES)
    validation.check_non_negative(owner, "learning_rate", learning_rate)
    validation.check_non_negative(owner, "weight_decay", weight_decay)
    scale_by_lr = optax.scale_by_learning_rate(learning_rate)
    if weight_decay_mode == "l2":
        parts = (optax.add_decayed_weights(weight_decay, mask), direction, scale_by_lr)
    elif weight_decay_mode == "decoupled":
        parts = (direction, optax.add_decayed_weights(weight_decay, mask), scale_by_lr)
    else:  # "fixed": the decay is added after -lr, so it must not be scaled by it.
        parts = (direction, scale_by_lr, optax.add_decayed_weights(_negated(weight_decay), mask))
    return extra_args.chain(*parts)
