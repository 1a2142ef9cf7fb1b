"""Battery problems on nested pytrees: a dict, a tuple, a scalar leaf, a matrix, a None leaf."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Problem(NamedTuple):
    initial: Any
    solution: Any
    loss: Any


def parabola(dtype=jnp.float32) -> Problem:
    """A separable quadratic whose minimiser is spread over a nested tree."""

    def tree(matrix, scalar, vector):
        return {
            "layer": {"kernel": jnp.asarray(matrix, dtype), "frozen": None},
            "extras": (jnp.asarray(scalar, dtype), jnp.asarray(vector, dtype)),
        }

    initial = tree([[-1.0, 10.0, 1.0], [0.5, -3.0, 2.0]], 4.0, [1.0, -2.0])
    solution = tree([[1.0, -1.0, 1.0], [0.0, 2.0, -0.5]], -1.5, [0.25, 3.0])

    def loss(params):
        sq = jax.tree.map(lambda p, s: jnp.sum(jnp.abs(p - s) ** 2), params, solution)
        return sum(jax.tree.leaves(sq))

    return Problem(initial, solution, loss)


def rosenbrock(dtype=jnp.float32) -> Problem:
    """Rosenbrock (a=1, b=100) with its two coordinates in different branches."""
    initial = {"x": (jnp.asarray(0.0, dtype),), "y": {"v": jnp.asarray(0.0, dtype), "none": None}}
    solution = {"x": (jnp.asarray(1.0, dtype),), "y": {"v": jnp.asarray(1.0, dtype), "none": None}}

    def loss(params):
        x, y = params["x"][0], params["y"]["v"]
        return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2

    return Problem(initial, solution, loss)


def sharded_params(num_devices: int) -> dict[str, Any]:
    """Parameters whose leading axes divide ``num_devices`` (for sharding checks)."""
    return {
        "kernel": jnp.linspace(-1.0, 1.0, num_devices * 4).reshape(num_devices, 4),
        "bias": jnp.linspace(0.0, 1.0, num_devices),
        "scale": jnp.asarray(2.0),
    }
