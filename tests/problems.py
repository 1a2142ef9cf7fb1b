"""Battery problems on nested pytrees: a dict, a tuple, a scalar leaf, a matrix, a None leaf.

Complex variants follow optax's own alias tests: the loss stays real
(``|z|^2 = z * conj(z)``), the minimiser is genuinely complex, and the harness
conjugates ``jax.grad`` before ``update`` (``tests.harness.grads``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Problem(NamedTuple):
    initial: Any
    solution: Any
    loss: Any


def _abs_sq(x):
    return (x * jnp.conj(x)).real if jnp.iscomplexobj(x) else x * x


def parabola(dtype=jnp.float32) -> Problem:
    """A separable quadratic whose minimiser is spread over a nested tree.

    With a complex ``dtype`` the minimiser is rotated off the real axis (times
    ``1 + 1j``, as in optax), so the imaginary parts must move too.
    """
    rotate = 1 + 1j if jnp.issubdtype(dtype, jnp.complexfloating) else 1

    def tree(matrix, scalar, vector, scale=1):
        return {
            "layer": {"kernel": jnp.asarray(jnp.asarray(matrix) * scale, dtype), "frozen": None},
            "extras": (
                jnp.asarray(jnp.asarray(scalar) * scale, dtype),
                jnp.asarray(jnp.asarray(vector) * scale, dtype),
            ),
        }

    initial = tree([[-1.0, 10.0, 1.0], [0.5, -3.0, 2.0]], 4.0, [1.0, -2.0])
    solution = tree([[1.0, -1.0, 1.0], [0.0, 2.0, -0.5]], -1.5, [0.25, 3.0], rotate)

    def loss(params):
        sq = jax.tree.map(lambda p, s: jnp.sum(_abs_sq(p - s)), params, solution)
        return sum(jax.tree.leaves(sq))

    return Problem(initial, solution, loss)


def rosenbrock(dtype=jnp.float32) -> Problem:
    """Rosenbrock (b=100) with its two coordinates in different branches.

    Real: ``a = 1``, minimum at ``(1, 1)``. Complex (optax's variant):
    ``a = 1 + 1j`` and ``|a - x|^2 + b |y - x^2|^2``, minimum at ``(a, a^2)``.
    """
    a = 1 + 1j if jnp.issubdtype(dtype, jnp.complexfloating) else 1.0

    def tree(x, y):
        return {"x": (jnp.asarray(x, dtype),), "y": {"v": jnp.asarray(y, dtype), "none": None}}

    initial = tree(0.0, 0.0)
    solution = tree(a, a * a)

    def loss(params):
        x, y = params["x"][0], params["y"]["v"]
        return _abs_sq(a - x) + 100.0 * _abs_sq(y - x**2)

    return Problem(initial, solution, loss)


def sum_of_squares(params: Any) -> jax.Array:
    """A loss defined on any tree, the empty one and ``optax.masked``'s included."""
    return sum((jnp.sum(_abs_sq(x)) for x in jax.tree.leaves(params)), jnp.zeros((), jnp.float32))


# Flax's FSDP example (examples/nnx_toy_examples): a (data, model) mesh, weights and
# biases sharded along `model`, the optimizer state sharded like the parameters.
FSDP_MESH_SHAPE = (("data", 2), ("model", 4))


def fsdp_specs() -> dict[str, jax.sharding.PartitionSpec]:
    P = jax.sharding.PartitionSpec
    return {"w1": P(None, "model"), "b1": P("model"), "w2": P("model", None), "scale": P()}


def fsdp() -> Problem:
    """A small MLP-shaped quadratic whose leaves divide the ``model`` axis of 4."""
    initial = {
        "w1": jnp.linspace(-1.0, 1.3, 4 * 8).reshape(4, 8),
        "b1": jnp.linspace(0.1, 1.0, 8),
        "w2": jnp.linspace(1.2, -0.7, 8 * 4).reshape(8, 4),
        "scale": jnp.asarray(2.0),
    }
    # Offsets keep every gradient entry away from zero (sign methods stay decisive).
    solution = jax.tree.map(lambda x: 0.5 * x + 3.0, initial)

    def loss(params):
        sq = jax.tree.map(lambda p, s: jnp.sum((p - s) ** 2), params, solution)
        return sum(jax.tree.leaves(sq))

    return Problem(initial, solution, loss)
