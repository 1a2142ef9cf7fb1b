"""Registry rows for the sharpness family (gdtx.sharpness): SALR, SAM, ASAM.

The rows build ``value_fn`` / ``grad_fn`` from the loss of the battery problem
being solved (the first argument of a row's ``extra_args`` builder).
"""

import jax
import jax.numpy as jnp
import optax

import gdtx
from tests.registry.case import Case, same_plumbing_as


def _value_fn(loss, params, grads):
    del params, grads
    return {"value_fn": loss}


def _grad_fn(loss, params, grads):
    # grad_fn returns what `update` receives: for complex leaves the conjugated
    # jax.grad (optax's convention, as the battery's harness.grads does).
    del params, grads

    def grad_fn(p):
        return jax.tree.map(lambda g: jnp.conj(g) if jnp.iscomplexobj(g) else g, jax.grad(loss)(p))

    return {"grad_fn": grad_fn}


def salr_sgd(
    learning_rate,
    *,
    momentum=None,
    ascent_steps=5,
    descent_steps=5,
    step_size=1e-3,
    every=1,
    history=256,
    max_multiplier=None,
    dead_band=None,
    per_example=False,
):
    """SALR around SGD (the authors' combination)."""
    return gdtx.salr(
        optax.sgd(learning_rate, momentum=momentum),
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


def sam_sgd(learning_rate, rho=0.05, *, momentum=None, adaptive=False, eps=1e-12):
    """SAM / ASAM around SGD."""
    return gdtx.sam(optax.sgd(learning_rate, momentum=momentum), rho, adaptive=adaptive, eps=eps)


# Rosenbrock's valley, real and complex (optax's variant, whose curvature at the
# minimum is twice the real one), in the battery's 10k steps: plain SGD at 1e-3
# ends 0.12 short of the complex minimum, and larger rates oscillate; heavy ball
# at 3e-4 reaches both to ~1e-3. SAM's fixed point sits O(rho * curvature) away
# from the minimum of this narrow valley (rho = 0.005 ends 0.08 short); rho = 1e-3
# is within tolerance.
_ROSENBROCK = {"learning_rate": 3e-4, "momentum": 0.9}
# SALR's estimate is a difference of two float32 losses, F(theta+) - F(theta-),
# so it carries a rounding error of about eps32 |F| / S relative: on the FSDP
# problem (|F| = 608) the default step 1e-3 gives S = 0.49 and 1.2e-4 relative
# error, and reordering the loss's sums (a sharded vs an unsharded step) moves S
# by as much. A step of 5e-2 makes S 50x larger (2.5e-6), within the battery's 1e-5.
_STEP_SIZE = 5e-2


_SALR_INVALID = (
    ({"step_size": 0.0}, r"gdtx\.salr: `step_size` must be > 0, got 0\.0"),
    ({"ascent_steps": -1}, r"gdtx\.salr: `ascent_steps` must be an integer >= 0, got -1"),
    ({"descent_steps": 2.5}, r"gdtx\.salr: `descent_steps` must be an integer, got 2\.5"),
    ({"every": 0}, r"`every` must be an integer >= 1, got 0"),
    ({"history": 0}, r"`history` must be an integer >= 1, got 0"),
    ({"history": 2.0}, r"gdtx\.salr: `history` must be an integer, got 2\.0"),
    ({"ascent_steps": 2.0}, r"gdtx\.salr: `ascent_steps` must be an integer, got 2\.0"),
    ({"every": float("nan")}, r"gdtx\.salr: `every` must be an integer, got nan"),
    ({"step_size": float("inf")}, r"gdtx\.salr: `step_size` must be finite, got inf"),
    ({"dead_band": "1"}, r"gdtx\.salr: `dead_band` must be a real number or None"),
    ({"per_example": 1}, r"gdtx\.salr: `per_example` must be True or False, got 1"),
    ({"max_multiplier": -5.0}, r"`max_multiplier` must be > 0, got -5\.0"),
    ({"dead_band": 50.0}, r"`dead_band` must be in \[0, 50\), got 50\.0"),
)
_SALR = {
    "required_extra_args": frozenset({"value_fn"}),
    "extra_args": _value_fn,
    # history fixes a shape; the walk lengths may be traced (fori_loop) but need not.
    "static_args": ("history", "per_example"),
    "invalid": _SALR_INVALID,
    # The walk, the median and the scaling extend to complex parameters in optax's
    # sense (ascent along conj(jax.grad), norms with |g|^2); the inner must too.
    "supports_complex": True,
}
_SAM_INVALID = (
    ({"rho": -0.1}, r"gdtx\.sam: `rho` must be >= 0, got -0\.1"),
    ({"eps": -1.0}, r"gdtx\.sam: `eps` must be >= 0, got -1\.0"),
    ({"rho": float("inf")}, r"gdtx\.sam: `rho` must be finite, got inf"),
    ({"rho": "0.05"}, r"gdtx\.sam: `rho` must be a real number"),
    ({"adaptive": "yes"}, r"gdtx\.sam: `adaptive` must be True or False"),
)
_SAM = {
    "factory": sam_sgd,
    "required_extra_args": frozenset({"grad_fn"}),
    "extra_args": _grad_fn,
    "static_args": ("adaptive",),
    "invalid": _SAM_INVALID,
    # e = rho T^2 g / |T g| with |g|^2 = sum |g_i|^2 and T = |w| real: complex as in optax.
    "supports_complex": True,
    "owner": "gdtx.sam",
    "unvalidated_args": {"learning_rate": "forwarded to optax.sgd"},
}

CASES = (
    Case(
        name="salr_sgd",
        factory=salr_sgd,
        kwargs={"learning_rate": 0.1, "step_size": _STEP_SIZE},
        rosenbrock_kwargs=_ROSENBROCK,
        owner="gdtx.salr",
        unvalidated_args={"learning_rate": "forwarded to optax.sgd"},
        **_SALR,
    ),
    # The authors' code's options: estimate every 2nd step, 49-51 percentile band, cap 5.
    Case(
        name="salr_adabelief_code_options",
        factory=salr_adabelief,
        kwargs={
            "learning_rate": 1e-2,
            "every": 2,
            "dead_band": 1.0,
            "max_multiplier": 5.0,
            "step_size": _STEP_SIZE,
        },
        dtype_knobs={"mu_dtype": ("mu",), "nu_dtype": ("nu",)},
        **_SALR,
    ),
    Case(
        name="sam_sgd",
        kwargs={"learning_rate": 0.1, "rho": 0.05},
        rosenbrock_kwargs={**_ROSENBROCK, "rho": 1e-3},
        **_SAM,
    ),
    Case(
        name="asam_sgd",
        kwargs={"learning_rate": 0.1, "rho": 0.05, "adaptive": True},
        slow_tier_checks=same_plumbing_as("sam_sgd"),
        rosenbrock_kwargs={**_ROSENBROCK, "rho": 1e-3},
        **_SAM,
    ),
)
