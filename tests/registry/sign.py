"""Registry rows for the sign family (gdtx.sign)."""

import optax

import gdtx
from tests.registry.case import Case, same_plumbing_as

_INVALID = (
    ({"learning_rate": -1e-3}, r"`learning_rate` must be >= 0, got -0\.001"),
    ({"weight_decay": -1e-4}, r"`weight_decay` must be >= 0"),
    ({"weight_decay_mode": "fixed"}, r"`weight_decay_mode` must be one of .*got 'fixed'"),
    ({"learning_rate": "0.1"}, r"`learning_rate` must be a real number or a schedule"),
    ({"learning_rate": None}, r"`learning_rate` must be a real number or a schedule"),
)
_MOMENTUM_INVALID = (
    ({"beta": 1.0}, r"gdtx\.signum: `beta` must be in \[0, 1\), got 1\.0"),
    ({"beta": -0.1}, r"`beta` must be in \[0, 1\), got -0\.1"),
    ({"mu_dtype": "int32"}, r"`mu_dtype` must be None or a floating-point dtype"),
    ({"beta": True}, r"gdtx\.signum: `beta` must be a real number, got True"),
)
# Constant-step sign methods circle Rosenbrock's valley at the step size: a
# decaying step is the documented remedy (optax's battery skips them instead).
_ROSENBROCK = {"learning_rate": optax.cosine_decay_schedule(1e-2, 10_000, alpha=1e-3)}

CASES = (
    Case(
        name="sign_sgd",
        factory=gdtx.sign_sgd,
        kwargs={"learning_rate": 1e-2},
        rosenbrock_kwargs=None,
        rosenbrock_skip=(
            "signSGD without momentum zig-zags across Rosenbrock's curved valley: every "
            "step is a corner of the lr-cube and the sign of dL/dx flips each step, so even "
            "with a cosine schedule it stalls at (0.93, 0.86) (optax's battery skips it too)"
        ),
        static_args=("weight_decay_mode",),
        # sign(z) = z / |z| for complex z, as optax.sign_sgd and pytorch-optimizer (torch.sgn).
        supports_complex=True,
        invalid=_INVALID,
    ),
    Case(
        name="signum",
        factory=gdtx.signum,
        kwargs={"learning_rate": 1e-2, "beta": 0.9},
        rosenbrock_kwargs=_ROSENBROCK,
        static_args=("weight_decay_mode",),
        dtype_knobs={"mu_dtype": ("mu",)},
        supports_complex=True,
        invalid=_INVALID + _MOMENTUM_INVALID,
    ),
    Case(
        name="signum_l2",
        factory=gdtx.signum,
        slow_tier_checks=same_plumbing_as("signum"),
        kwargs={"learning_rate": 1e-2, "weight_decay": 1e-4, "weight_decay_mode": "l2"},
        rosenbrock_kwargs={**_ROSENBROCK, "weight_decay": 0.0},
        static_args=("weight_decay_mode",),
        dtype_knobs={"mu_dtype": ("mu",)},
        supports_complex=True,
        invalid=_INVALID + _MOMENTUM_INVALID,
    ),
    Case(
        name="signum_vote",
        factory=gdtx.signum_vote,
        kwargs={"learning_rate": 1e-2, "beta": 0.9, "axis_name": "data"},
        rosenbrock_kwargs=_ROSENBROCK,
        static_args=("axis_name", "wire"),
        dtype_knobs={"mu_dtype": ("mu",)},
        axis_name="data",
        invalid=(
            ({"learning_rate": -1e-3}, r"gdtx\.signum_vote: `learning_rate` must be >= 0"),
            ({"beta": 1.0}, r"gdtx\.signum_vote: `beta` must be in \[0, 1\), got 1\.0"),
            ({"wire": "int4"}, r"gdtx\.signum_vote: `wire` must be one of .*got 'int4'"),
            ({"mu_dtype": "int8"}, r"`mu_dtype` must be None or a floating-point dtype"),
            ({"beta": "0.9"}, r"gdtx\.signum_vote: `beta` must be a real number, got '0\.9'"),
            ({"axis_name": 0}, r"gdtx\.signum_vote: `axis_name` must be a mesh axis name"),
        ),
        # The wire carries signs of real numbers: complex parameters are refused at init.
        supports_complex=False,
    ),
)
