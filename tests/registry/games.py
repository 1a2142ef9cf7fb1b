"""Registry rows for the games family (gdtx.games): CGD and ACGD.

The battery's problems are single-player losses, and a two-player game has no
minimiser to converge to. The rows play them as the degenerate game in which the
maximiser has no parameters: ``{"x": params, "y": {}}`` with ``f = loss(x)``.
Then ``B = 0``, CGD is gradient descent and ACGD is RMSProp with a bias-corrected
rate, and every battery check (convergence, tracing, dtypes, sharding, masking,
validation) runs through the real update: the joint tree, both CG systems (the
maximiser's is empty on odd steps), warm starts and ``value_fn``. The game-specific
behaviour (coupling through ``B``, the Nash step, the contraction on ``x·y``) is
tested in ``tests/test_games.py`` and ``tests/reference/test_games_reference.py``.
"""

from __future__ import annotations

import functools

import optax

from gdtx._core import extra_args
from gdtx.games import acgd, cgd
from tests.registry.case import Case


def _single_player(factory):
    """``factory`` seen by the battery: params ``p`` are the game ``{"x": p, "y": {}}``."""

    @functools.wraps(factory)
    def make(*args, **kwargs):
        inner = factory(*args, **kwargs)

        def init(params):
            return inner.init({"x": params, "y": {}})

        def update(updates, state, params=None, **extra):
            value_fn = extra.pop("value_fn", None)
            game_fn = None if value_fn is None else (lambda q: value_fn(q["x"]))
            joint = None if params is None else {"x": params, "y": {}}
            new, state = inner.update(
                {"x": updates, "y": {}}, state, joint, value_fn=game_fn, **extra
            )
            return new["x"], state

        tx = optax.GradientTransformationExtraArgs(init, update)
        return extra_args.declare(tx, extra_args.required_extra_args(inner))

    return make


def _value_fn(loss, params, grads):
    del params, grads
    return {"value_fn": loss}


_COMMON = {
    "required_extra_args": frozenset({"value_fn"}),
    "extra_args": _value_fn,
}

CASES = (
    Case(
        name="cgd_single_player",
        factory=_single_player(cgd),
        kwargs={"learning_rate": 0.1},
        rosenbrock_kwargs={"learning_rate": 1e-3},
        static_args=("solve",),
        owner="gdtx.cgd",
        invalid=(
            ({"learning_rate": -0.1}, r"gdtx\.cgd: `learning_rate` must be > 0, got -0\.1"),
            ({"max_learning_rate": 0.0}, r"gdtx\.cgd: `max_learning_rate` must be > 0"),
            ({"tol": -1.0}, r"gdtx\.cgd: `tol` must be >= 0, got -1\.0"),
            ({"atol": -1.0}, r"gdtx\.cgd: `atol` must be >= 0, got -1\.0"),
            ({"max_cg_iters": 0}, r"gdtx\.cgd: `max_cg_iters` must be an integer >= 1"),
            ({"solve": "x"}, r"gdtx\.cgd: `solve` must be one of"),
        ),
        **_COMMON,
    ),
    Case(
        name="acgd_single_player",
        factory=_single_player(acgd),
        kwargs={"learning_rate": 0.05},
        rosenbrock_kwargs={"learning_rate": 1e-3},
        dtype_knobs={"nu_dtype": ("nu",)},
        owner="gdtx.acgd",
        invalid=(
            ({"learning_rate": 0.0}, r"gdtx\.acgd: `learning_rate` must be > 0, got 0\.0"),
            ({"b2": 1.0}, r"gdtx\.acgd: `b2` must be in \[0, 1\), got 1\.0"),
            ({"eps": -1e-5}, r"gdtx\.acgd: `eps` must be >= 0"),
            ({"tol": -1.0}, r"gdtx\.acgd: `tol` must be >= 0"),
            ({"max_cg_iters": 0}, r"gdtx\.acgd: `max_cg_iters` must be an integer >= 1"),
        ),
        **_COMMON,
    ),
)
