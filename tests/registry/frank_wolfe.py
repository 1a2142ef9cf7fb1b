"""Registry rows for the Frank-Wolfe family (gdtx.frank_wolfe).

The battery's problems are unconstrained, so the rows solve them over an ℓ2 ball
(of the whole tree) that contains the initial point and the minimiser in its
interior; Frank-Wolfe then converges to the unconstrained minimiser, slowly
(``F - F* = O(1/t)`` or ``O(log t / t)``) but within the battery's tolerance in
its 10 000 steps on the parabola. Rosenbrock is skipped: its valley is curved,
and Frank-Wolfe's sublinear rate with these step sizes does not reach 3e-2 of
``(1, 1)`` in 10 000 steps (the feasible set would also have to be chosen for it).
The constrained behaviour (feasibility, gap rates, the estimator) is tested in
``tests/test_frank_wolfe.py``.
"""

from __future__ import annotations

from gdtx.frank_wolfe import (
    deterministic_frank_wolfe,
    hessian_vector_product,
    lmo_l2_ball,
    one_sample_frank_wolfe,
)
from tests.registry.case import Case

# The parabola starts at |x0| = 11.7 with its minimiser at |x*| = 4.3.
_BALL = lmo_l2_ball(12.0)
_ROSENBROCK_SKIP = (
    "Frank-Wolfe's sublinear rate does not reach 3e-2 of Rosenbrock's minimum in 10 000 "
    "steps (see tests/registry/frank_wolfe.py)"
)


def _hvp_fn(loss, params, grads):
    del params, grads
    return {"hvp_fn": hessian_vector_product(loss)}


CASES = (
    Case(
        name="deterministic_frank_wolfe_l2",
        factory=deterministic_frank_wolfe,
        kwargs={"lmo": _BALL},
        rosenbrock_kwargs=None,
        rosenbrock_skip=_ROSENBROCK_SKIP,
        # inject_hyperparams would call the oracle as if it were a schedule.
        static_args=("lmo",),
        owner="gdtx.deterministic_frank_wolfe",
        invalid=(
            ({"lmo": 3.0}, r"gdtx\.deterministic_frank_wolfe: `lmo` must be a linear minimi"),
            ({"step_size": 1.5}, r"`step_size` must be in \(0, 1\]"),
        ),
    ),
    Case(
        name="one_sample_frank_wolfe_l2",
        factory=one_sample_frank_wolfe,
        kwargs={"lmo": _BALL},
        rosenbrock_kwargs=None,
        rosenbrock_skip=_ROSENBROCK_SKIP,
        static_args=("lmo", "correction", "seed"),
        required_extra_args=frozenset({"hvp_fn"}),
        extra_args=_hvp_fn,
        dtype_knobs={"mu_dtype": ("mu",)},
        owner="gdtx.one_sample_frank_wolfe",
        invalid=(
            ({"lmo": None}, r"gdtx\.one_sample_frank_wolfe: `lmo` must be a linear minimi"),
            ({"step_size": 0.0}, r"`step_size` must be in \(0, 1\]"),
            ({"momentum": 2.0}, r"`momentum` must be in \(0, 1\]"),
            ({"correction": "exact"}, r"`correction` must be one of"),
            ({"seed": -1}, r"`seed` must be an integer >= 0"),
        ),
    ),
)
