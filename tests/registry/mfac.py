"""Registry rows for the M-FAC family (gdtx.mfac).

Small windows keep the battery fast. ``damping`` is large for two reasons: a
deterministic quadratic's gradients shrink to zero, and near the minimum the step
is ``lr g / damping``, which must stay below the curvature's stability limit; and
successive gradients of a deterministic problem are nearly parallel, so with a
small damping the ``m x m`` solve is ill-conditioned and float32 rounding
(which differs between eager and jitted code) would exceed the battery's 1e-6.
"""

import gdtx
from tests.registry.case import Case, same_plumbing_as

_STATIC = ("num_grads", "grads_dtype", "mu_dtype", "max_window_bytes")
_INVALID = (
    ({"learning_rate": -1e-3}, r"gdtx\.mfac: `learning_rate` must be >= 0, got -0\.001"),
    ({"num_grads": 0}, r"gdtx\.mfac: `num_grads` must be an integer >= 1, got 0"),
    ({"num_grads": 2.5}, r"gdtx\.mfac: `num_grads` must be an integer, got 2\.5"),
    ({"num_grads": True}, r"gdtx\.mfac: `num_grads` must be an integer, got True"),
    ({"damping": "1e-5"}, r"gdtx\.mfac: `damping` must be a real number, got '1e-5'"),
    ({"damping": float("inf")}, r"gdtx\.mfac: `damping` must be finite, got inf"),
    ({"damping": 0.0}, r"gdtx\.mfac: `damping` must be > 0, got 0\.0"),
    ({"damping": -1e-5}, r"`damping` must be > 0, got -1e-05"),
    ({"momentum": 1.0}, r"`momentum` must be in \[0, 1\), got 1\.0"),
    ({"weight_decay": -1e-4}, r"`weight_decay` must be >= 0"),
    ({"grads_dtype": "int32"}, r"`grads_dtype` must be None or a floating-point dtype"),
    (
        {"grads_dtype": "complex64"},
        r"gdtx\.mfac: `grads_dtype` must be None or a real floating-point dtype, got .complex64.",
    ),
    ({"mu_dtype": "int32"}, r"gdtx\.mfac: `mu_dtype` must be None or a floating-point dtype"),
    ({"max_window_bytes": 0}, r"`max_window_bytes` must be > 0, got 0"),
)
_MFAC = {
    "factory": gdtx.mfac,
    "static_args": _STATIC,
    "dtype_knobs": {"grads_dtype": ("grads",)},
    # Complex M-FAC would need a Hermitian window (K = G G^H, a complex Cholesky)
    # that the official code does not define: init refuses complex params.
    "supports_complex": False,
    "invalid": _INVALID,
}


CASES = (
    Case(
        name="mfac",
        kwargs={"learning_rate": 0.5, "num_grads": 4, "damping": 10.0},
        # Rosenbrock's valley needs the small-damping regime, where M-FAC acts on
        # the window's curvature rather than as gradient descent with lr / damping.
        rosenbrock_kwargs={"learning_rate": 0.01, "damping": 1.0},
        **_MFAC,
    ),
    # Eviction, momentum and coupled weight decay together (the official options).
    Case(
        name="mfac_momentum_wd",
        slow_tier_checks=same_plumbing_as("mfac"),
        kwargs={
            "learning_rate": 0.5,
            "num_grads": 8,
            "damping": 10.0,
            "momentum": 0.9,
            "weight_decay": 1e-4,
            # The window in the params' dtype here (None), so that both knobs have
            # the battery's default (the params' dtype) and each can be checked to
            # leave the other's field alone; the official float32 window is the
            # "mfac" row's.
            "grads_dtype": None,
        },
        **{
            **_MFAC,
            "dtype_knobs": {"grads_dtype": ("grads",), "mu_dtype": ("ema",)},
        },
    ),
)
