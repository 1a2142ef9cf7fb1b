"""Registry rows for shared-seed zeroth-order updates (gdtx.zeroth_order).

``shared_seed_spsa`` returns a gradient estimate built from loss values only
(``value_fn``, here the battery problem's loss), so each row chains it with
``optax.sgd`` (MeZO's pairing) and runs under the battery's one-device
``shard_map`` on ``"data"`` (two devices in the scan test). The gradients the
battery passes are ignored: only their dtype and shapes are used.

``epsilon = 1``: on the battery's quadratics the central difference is exact for
every ``epsilon`` (``p = z . grad L``), and a small one divides float32 rounding
of the loss by ``2 epsilon``: with ``1e-3`` a traced and a constant
hyperparameter (``inject_hyperparams``) differ by 3e-5 after five steps, above the
battery's float32 tolerance, for reasons of arithmetic rather than of the method.
"""

import optax

import gdtx
from gdtx.zeroth_order import shared_seed_spsa
from tests.registry.case import Case, same_plumbing_as

_AXIS = "data"


def spsa_sgd(learning_rate, epsilon=1.0, num_samples=4, seed=0, wire="f32"):
    """``shared_seed_spsa`` followed by plain SGD."""
    tx = shared_seed_spsa(epsilon, num_samples, axis_name=_AXIS, seed=seed, wire=wire)
    return gdtx.chain(tx, optax.sgd(learning_rate))


def _value_fn(loss, params, grads):
    del params, grads
    return {"value_fn": loss}


_OWNER = "gdtx.shared_seed_spsa"
_COMMON = {
    "factory": spsa_sgd,
    "static_args": ("num_samples", "seed", "wire"),
    "unvalidated_args": {"learning_rate": "forwarded to optax.sgd"},
    "required_extra_args": frozenset({"value_fn"}),
    "extra_args": _value_fn,
    "axis_name": _AXIS,
    "owner": _OWNER,
    "supports_complex": True,
    "rosenbrock_kwargs": None,
    "rosenbrock_skip": (
        "SGD on a zeroth-order estimate: stability needs lr < 2 / (L (1 + (d + 1)/K)) with "
        "L ~ 1000 at Rosenbrock's minimum, and then the valley (curvature ~ 0.4) takes far "
        "more than the battery's 10^4 steps; the parabola and tests/test_zeroth_order.py "
        "cover convergence"
    ),
    "invalid": (
        ({"epsilon": 0.0}, r"gdtx\.shared_seed_spsa: `epsilon` must be > 0, got 0\.0"),
        ({"epsilon": -1e-3}, r"gdtx\.shared_seed_spsa: `epsilon` must be > 0"),
        ({"epsilon": float("nan")}, r"gdtx\.shared_seed_spsa: `epsilon` must be > 0"),
        ({"num_samples": 0}, r"gdtx\.shared_seed_spsa: `num_samples` must be an integer >= 1"),
        ({"num_samples": 2.0}, r"gdtx\.shared_seed_spsa: `num_samples` must be an integer"),
        ({"seed": -1}, r"gdtx\.shared_seed_spsa: `seed` must be an integer >= 0, got -1"),
        ({"wire": "int8"}, r"gdtx\.shared_seed_spsa: `wire` must be one of"),
    ),
}

ROWS = (
    Case(name="shared_seed_spsa", kwargs={"learning_rate": 0.05}, **_COMMON),
    Case(
        name="shared_seed_spsa_log8_stochastic",
        kwargs={"learning_rate": 0.05, "wire": "log8_stochastic"},
        slow_tier_checks=same_plumbing_as("shared_seed_spsa"),
        **_COMMON,
    ),
)

# tests/test_data_parallel.py's tiny-digits test leaves these rows out (its hand-written
# reference step passes no value_fn); its 2-D mesh test runs them.
CASES: tuple[Case, ...] = ROWS
