"""Registry rows for the belief family (gdtx.belief)."""

import gdtx
from tests.registry.case import Case, same_plumbing_as

_FLAGS = ("amsgrad", "rectify", "degenerated_to_sgd", "nesterov", "weight_decay_mode")
_KNOBS = {"mu_dtype": ("mu",), "nu_dtype": ("nu", "nu_max")}
_INVALID = (
    ({"learning_rate": -1e-3}, r"gdtx\.adabelief: `learning_rate` must be >= 0, got -0\.001"),
    ({"b1": 1.0}, r"gdtx\.adabelief: `b1` must be in \[0, 1\), got 1\.0"),
    ({"b2": -0.1}, r"`b2` must be in \[0, 1\), got -0\.1"),
    ({"eps": -1e-8}, r"`eps` must be >= 0, got -1e-08"),
    ({"eps_root": -1.0}, r"`eps_root` must be >= 0"),
    ({"weight_decay": -1e-4}, r"`weight_decay` must be >= 0"),
    ({"weight_decay_mode": "adamw"}, r"`weight_decay_mode` must be one of .*got 'adamw'"),
    ({"mu_dtype": "int32"}, r"`mu_dtype` must be None or a floating-point dtype"),
)
_BELIEF = {
    "factory": gdtx.adabelief,
    "static_args": _FLAGS,
    "dtype_knobs": _KNOBS,
    "invalid": _INVALID,
    # |g - m|^2 in optax's sense (tests/test_belief.py checks a float64 transcription).
    "supports_complex": True,
}

CASES = (
    Case(name="adabelief", kwargs={"learning_rate": 1e-2}, **_BELIEF),
    # The official package's defaults: rectification on.
    Case(
        name="adabelief_rectified",
        kwargs={"learning_rate": 1e-2, "rectify": True},
        slow_tier_checks=same_plumbing_as("adabelief"),
        **_BELIEF,
    ),
    Case(
        name="adabelief_amsgrad",
        kwargs={"learning_rate": 1e-2, "amsgrad": True},
        slow_tier_checks=same_plumbing_as("adabelief"),
        **_BELIEF,
    ),
    Case(
        name="adabelief_nesterov",
        kwargs={"learning_rate": 1e-2, "nesterov": True},
        slow_tier_checks=same_plumbing_as("adabelief"),
        **_BELIEF,
    ),
)
