"""Registry rows for local SGD with periodic averaging (gdtx.local_sgd: MFL and DiLoCo).

Under the battery's one-device ``shard_map`` on ``"data"`` (as the other
collective rows). The rows synchronise every step (``every=1``): the
parameters then stay replicated, so the battery's and the data-parallel
tests' replicated-parameter loops apply unchanged; ``every > 1`` (per-device
parameters) is tested in tests/test_local_sgd.py.
"""

import optax

from gdtx.local_sgd import diloco, periodic_average
from tests.registry.case import Case

_AXIS = "data"


def mfl_sgd(learning_rate, momentum=0.9, every=1):
    """MFL: ``periodic_average`` of heavy-ball SGD, averaging parameters and momentum."""
    return periodic_average(optax.sgd(learning_rate, momentum=momentum), every, _AXIS)


def diloco_adam(learning_rate, outer_learning_rate=0.7, outer_momentum=0.9, every=1):
    """DiLoCo: inner Adam, outer Nesterov SGD on the averaged pseudo-gradient."""
    return diloco(
        optax.adam(learning_rate),
        axis_name=_AXIS,
        every=every,
        outer_learning_rate=outer_learning_rate,
        outer_momentum=outer_momentum,
    )


CASES = (
    Case(
        name="mfl_sgd",
        factory=mfl_sgd,
        kwargs={"learning_rate": 0.1},
        # 0.1 trains the tiny digits model in tests/test_data_parallel.py's 80 steps;
        # heavy-ball SGD above 3e-3 diverges on Rosenbrock (as optax.sgd does)
        rosenbrock_kwargs={"learning_rate": 1e-3},
        static_args=("every",),
        unvalidated_args={
            "learning_rate": "forwarded to optax.sgd",
            "momentum": "forwarded to optax.sgd",
        },
        axis_name=_AXIS,
        owner="gdtx.periodic_average",
        invalid=(
            ({"every": 0}, r"gdtx\.periodic_average: `every` must be an integer >= 1, got 0"),
            ({"every": 1.5}, r"gdtx\.periodic_average: `every` must be an integer"),
        ),
    ),
    Case(
        name="diloco_adam",
        factory=diloco_adam,
        # With every=1 the outer Nesterov momentum acts on Adam's steps: the
        # paper's 0.9 overshoots the battery's problems; 0.5 converges on the
        # parabola, plain outer SGD on Rosenbrock.
        kwargs={"learning_rate": 1e-2, "outer_learning_rate": 0.7, "outer_momentum": 0.5},
        rosenbrock_kwargs={"outer_momentum": 0.0},
        static_args=("every",),
        unvalidated_args={"learning_rate": "forwarded to optax.adam"},
        axis_name=_AXIS,
        owner="gdtx.diloco",
        invalid=(
            ({"every": 0}, r"gdtx\.diloco: `every` must be an integer >= 1, got 0"),
            ({"outer_learning_rate": -0.5}, r"gdtx\.diloco: `outer_learning_rate`"),
            ({"outer_momentum": 1.0}, r"gdtx\.diloco: `outer_momentum`"),
        ),
    ),
)
