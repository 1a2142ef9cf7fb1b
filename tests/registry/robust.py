"""Registry rows for robust aggregation (gdtx.robust).

A robust aggregate is not an optimizer: each row chains ``robust_mean`` with
``optax.adam`` (the battery needs a learning rate) and runs under the battery's
one-device ``shard_map`` on the axis ``"data"`` (two devices in the scan test),
so ``num_byzantine`` is 0 there (it must be < n/2).
"""

import optax

import gdtx
from gdtx.robust import robust_mean
from tests.registry.case import Case

_AXIS = "data"


def robust_nnm_adam(learning_rate, then="trimmed_mean", num_byzantine=0):
    """``robust_mean("nnm", then=...)`` followed by Adam."""
    tx = robust_mean("nnm", num_byzantine=num_byzantine, axis_name=_AXIS, then=then)
    return gdtx.chain(tx, optax.adam(learning_rate))


def robust_cc_adam(learning_rate, tau=1.0, iterations=3, num_byzantine=0):
    """``robust_mean("centered_clipping")`` and Adam (its state holds the last aggregate)."""
    tx = robust_mean(
        "centered_clipping",
        num_byzantine=num_byzantine,
        axis_name=_AXIS,
        tau=tau,
        iterations=iterations,
    )
    return gdtx.chain(tx, optax.adam(learning_rate))


def robust_krum_adam(learning_rate, num_byzantine=0, squared=True):
    """``robust_mean("krum")`` followed by Adam."""
    tx = robust_mean("krum", num_byzantine=num_byzantine, axis_name=_AXIS, squared=squared)
    return gdtx.chain(tx, optax.adam(learning_rate))


_OWNER = "gdtx.robust_mean"
_COMMON_INVALID = (
    ({"num_byzantine": -1}, r"gdtx\.robust_mean: `num_byzantine` must be an integer >= 0"),
    ({"num_byzantine": 1.0}, r"gdtx\.robust_mean: `num_byzantine` must be an integer"),
)

CASES = (
    Case(
        name="robust_mean_nnm",
        factory=robust_nnm_adam,
        kwargs={"learning_rate": 1e-2},
        static_args=("then", "num_byzantine"),
        unvalidated_args={"learning_rate": "forwarded to optax.adam"},
        axis_name=_AXIS,
        owner=_OWNER,
        invalid=(
            *_COMMON_INVALID,
            ({"then": "nnm"}, r"gdtx\.robust_mean: `then` must be one of"),
            ({"then": "average"}, r"gdtx\.robust_mean: `then` must be one of"),
        ),
    ),
    Case(
        name="robust_mean_centered_clipping",
        factory=robust_cc_adam,
        kwargs={"learning_rate": 1e-2},
        static_args=("iterations", "num_byzantine"),
        unvalidated_args={"learning_rate": "forwarded to optax.adam"},
        axis_name=_AXIS,
        owner=_OWNER,
        invalid=(
            *_COMMON_INVALID,
            ({"tau": 0.0}, r"gdtx\.robust_mean: `tau` must be > 0"),
            ({"tau": -1.0}, r"gdtx\.robust_mean: `tau` must be > 0"),
            ({"iterations": 0}, r"gdtx\.robust_mean: `iterations` must be an integer >= 1"),
        ),
    ),
    Case(
        name="robust_mean_krum",
        factory=robust_krum_adam,
        kwargs={"learning_rate": 1e-2},
        slow_tier_checks={
            "test_state_sharding_follows_params": (
                "robust_mean_nnm gathers the same way and places the same state"
            )
        },
        static_args=("num_byzantine", "squared"),
        unvalidated_args={"learning_rate": "forwarded to optax.adam"},
        axis_name=_AXIS,
        owner=_OWNER,
        invalid=(*_COMMON_INVALID, ({"squared": "yes"}, r"gdtx\.robust_mean: `squared`")),
    ),
)

# No battery row for gdtx.robust.monna: its update needs each device's own
# parameters (``per_device_params``) and returns a different update per device,
# while the battery's harness runs replicated parameters; its tests are in
# tests/test_robust.py (closed forms and a float64 transcription under shard_map).
