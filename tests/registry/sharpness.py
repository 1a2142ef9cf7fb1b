"""Registry rows for the sharpness family (gdtx.sharpness): SALR, SAM, ASAM.

The rows build ``value_fn`` / ``grad_fn`` from the loss of the battery problem
being solved (the first argument of a row's ``extra_args`` builder).
"""

import jax
import optax

import gdtx
from tests.registry.case import Case


def _value_fn(loss, params, grads):
    del params, grads
    return {"value_fn": loss}


def _grad_fn(loss, params, grads):
    del params, grads
    return {"grad_fn": jax.grad(loss)}


def salr_sgd(
    learning_rate,
    *,
    ascent_steps=5,
    descent_steps=5,
    step_size=1e-3,
    every=1,
    history=256,
    max_multiplier=None,
    dead_band=None,
    per_example=False,
):
    """SALR around plain SGD (the authors' combination)."""
    return gdtx.salr(
        optax.sgd(learning_rate),
        ascent_steps=ascent_steps,
        descent_steps=descent_steps,
        step_size=step_size,
        every=every,
        history=history,
        max_multiplier=max_multiplier,
        dead_band=dead_band,
        per_example=per_example,
    )


def salr_adabelief(
    learning_rate,
    *,
    mu_dtype=None,
    nu_dtype=None,
    ascent_steps=5,
    descent_steps=5,
    step_size=1e-3,
    every=1,
    history=256,
    max_multiplier=None,
    dead_band=None,
    per_example=False,
):
    """SALR around AdaBelief; the dtype knobs reach the inner state."""
    return gdtx.salr(
        gdtx.adabelief(learning_rate, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        ascent_steps=ascent_steps,
        descent_steps=descent_steps,
        step_size=step_size,
        every=every,
        history=history,
        max_multiplier=max_multiplier,
        dead_band=dead_band,
        per_example=per_example,
    )


def sam_sgd(learning_rate, rho=0.05, *, adaptive=False, eps=1e-12):
    """SAM / ASAM around plain SGD."""
    return gdtx.sam(optax.sgd(learning_rate), rho, adaptive=adaptive, eps=eps)


_SALR_INVALID = (
    ({"step_size": 0.0}, r"gdtx\.salr: `step_size` must be > 0, got 0\.0"),
    ({"ascent_steps": -1}, r"gdtx\.salr: `ascent_steps` must be an integer >= 0, got -1"),
    ({"descent_steps": 2.5}, r"`descent_steps` must be an integer >= 0, got 2\.5"),
    ({"every": 0}, r"`every` must be an integer >= 1, got 0"),
    ({"history": 0}, r"`history` must be an integer >= 1, got 0"),
    ({"max_multiplier": -5.0}, r"`max_multiplier` must be > 0, got -5\.0"),
    ({"dead_band": 50.0}, r"`dead_band` must be in \[0, 50\), got 50\.0"),
)
_SALR = {
    "required_extra_args": frozenset({"value_fn"}),
    "extra_args": _value_fn,
    # history fixes a shape; the walk lengths may be traced (fori_loop) but need not.
    "static_args": ("history", "per_example"),
    "invalid": _SALR_INVALID,
}
_SAM_INVALID = (
    ({"rho": -0.1}, r"gdtx\.sam: `rho` must be >= 0, got -0\.1"),
    ({"eps": -1.0}, r"gdtx\.sam: `eps` must be >= 0, got -1\.0"),
)
_SAM = {
    "factory": sam_sgd,
    "required_extra_args": frozenset({"grad_fn"}),
    "extra_args": _grad_fn,
    "static_args": ("adaptive",),
    "invalid": _SAM_INVALID,
}

CASES = (
    Case(
        name="salr_sgd",
        factory=salr_sgd,
        kwargs={"learning_rate": 0.1},
        rosenbrock_kwargs={"learning_rate": 1e-3},
        **_SALR,
    ),
    # The authors' code's options: estimate every 2nd step, 49-51 percentile band, cap 5.
    Case(
        name="salr_adabelief_code_options",
        factory=salr_adabelief,
        kwargs={"learning_rate": 1e-2, "every": 2, "dead_band": 1.0, "max_multiplier": 5.0},
        dtype_knobs={"mu_dtype": ("mu",), "nu_dtype": ("nu",)},
        reads=("grad", "param", "mu", "nu"),
        writes=("param", "mu", "nu"),
        **_SALR,
    ),
    Case(
        name="sam_sgd",
        kwargs={"learning_rate": 0.1, "rho": 0.05},
        # SAM's fixed point sits O(rho * curvature) away from the minimum of this
        # narrow valley (rho = 0.005 ends 0.08 short of it); rho = 1e-3 is within tolerance.
        rosenbrock_kwargs={"learning_rate": 1e-3, "rho": 1e-3},
        **_SAM,
    ),
    Case(
        name="asam_sgd",
        kwargs={"learning_rate": 0.1, "rho": 0.05, "adaptive": True},
        # SAM's fixed point sits O(rho * curvature) away from the minimum of this
        # narrow valley (rho = 0.005 ends 0.08 short of it); rho = 1e-3 is within tolerance.
        rosenbrock_kwargs={"learning_rate": 1e-3, "rho": 1e-3},
        **_SAM,
    ),
)
