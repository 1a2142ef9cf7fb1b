"""Registry rows for the adaptive family (gdtx.adaptive).

The battery is the costliest part of the suite, so the rows are the aliases'
defaults plus the wrapper composed with another family; the other settings
(``degenerated_to_sgd=False``, the L2 and fixed decay modes, ``rectify`` around
``optax.scale_by_adam``) are replayed against the recorded references instead.
"""

import optax

import gdtx
from tests.registry.case import Case


def _invalid(owner, extra=()):
    return (
        ({"learning_rate": -1e-3}, rf"gdtx\.{owner}: `learning_rate` must be >= 0, got -0\.001"),
        ({"b1": 1.0}, rf"gdtx\.{owner}: `b1` must be in \[0, 1\), got 1\.0"),
        ({"b2": -0.1}, r"`b2` must be in \[0, 1\), got -0\.1"),
        ({"eps": -1e-8}, r"`eps` must be >= 0, got -1e-08"),
        ({"weight_decay": -1e-4}, r"`weight_decay` must be >= 0"),
        ({"weight_decay_mode": "adamw"}, r"`weight_decay_mode` must be one of .*got 'adamw'"),
        ({"mu_dtype": "int32"}, r"`mu_dtype` must be None or a floating-point dtype"),
        ({"nu_dtype": "int32"}, r"`nu_dtype` must be None or a floating-point dtype"),
        *extra,
    )


_KNOBS = {"mu_dtype": ("mu",), "nu_dtype": ("nu",)}

_DIFFGRAD = {
    "factory": gdtx.diffgrad,
    "static_args": ("weight_decay_mode",),
    "dtype_knobs": {**_KNOBS, "prev_grad_dtype": ("prev_grad",)},
    "supports_complex": True,
    "invalid": _invalid("diffgrad", (({"eps_root": -1.0}, r"`eps_root` must be >= 0"),)),
}

_RADAM = {
    "factory": gdtx.radam,
    "static_args": ("degenerated_to_sgd", "weight_decay_mode"),
    "dtype_knobs": _KNOBS,
    "supports_complex": True,
    "invalid": _invalid(
        "radam", (({"threshold": 3.0}, r"gdtx\.radam: `threshold` must be >= 4, got 3\.0"),)
    ),
}


def rectified_belief(
    learning_rate, b1=0.9, b2=0.999, threshold=5.0, *, mu_dtype=None, nu_dtype=None
):
    """``rectify(gdtx.scale_by_belief())`` with a learning rate."""
    inner = gdtx.scale_by_belief(b1, b2, mu_dtype=mu_dtype, nu_dtype=nu_dtype)
    return gdtx.chain(
        gdtx.rectify(inner, b1=b1, b2=b2, threshold=threshold),
        optax.scale_by_learning_rate(learning_rate),
    )


CASES = (
    Case(name="diffgrad", kwargs={"learning_rate": 1e-2}, **_DIFFGRAD),
    Case(name="radam", kwargs={"learning_rate": 1e-2}, **_RADAM),
    Case(
        name="rectify_belief",
        factory=rectified_belief,
        kwargs={"learning_rate": 1e-2},
        dtype_knobs=_KNOBS,
        supports_complex=True,
        unvalidated_args={"learning_rate": "forwarded to optax.scale_by_learning_rate"},
        invalid=(
            ({"threshold": 3.0}, r"gdtx\.rectify: `threshold` must be >= 4, got 3\.0"),
            ({"threshold": float("inf")}, r"gdtx\.rectify: `threshold` must be finite"),
            # the inner transformation is built (and checked) first
            ({"b2": 1.0}, r"gdtx\.scale_by_belief: `b2` must be in \[0, 1\), got 1\.0"),
        ),
    ),
    Case(
        name="adagrad_norm",
        factory=gdtx.adagrad_norm,
        kwargs={"learning_rate": 1.0},
        supports_complex=True,
        invalid=(
            ({"learning_rate": -1.0}, r"gdtx\.adagrad_norm: `learning_rate` must be >= 0"),
            (
                {"initial_accumulator_value": -1.0},
                r"gdtx\.adagrad_norm: `initial_accumulator_value` must be >= 0, got -1",
            ),
            ({"eps": -1e-8}, r"`eps` must be >= 0, got -1e-08"),
        ),
    ),
)
