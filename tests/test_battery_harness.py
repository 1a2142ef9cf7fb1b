"""The battery's own machinery, checked on toy transformations.

These make sure the harness does what the battery relies on: a row that needs
a named mesh axis really runs under one, and a row's extra arguments reach
``update``.
"""

import jax
import jax.numpy as jnp
import optax
import pytest

from gdtx._core import extra_args
from tests import harness
from tests.registry import ALL_CASES, Case


def _psum_over(axis_name):
    def update(updates, state, params=None, **extra):
        return jax.tree.map(lambda g: jax.lax.psum(g, axis_name), updates), state

    return optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)


def test_rows_with_an_axis_name_run_under_that_axis():
    case = Case(
        name="toy_psum", factory=lambda: _psum_over("workers"), kwargs={}, axis_name="workers"
    )
    grads = {"w": jnp.arange(3.0)}
    tx = case.make()
    updates, _ = harness.update(case, tx, grads, tx.init(grads), grads, loss=None)
    assert jnp.array_equal(updates["w"], grads["w"])  # one device: psum is the identity


def test_a_collective_without_the_axis_fails_so_the_wrapper_matters():
    tx = _psum_over("workers")
    grads = {"w": jnp.arange(3.0)}
    with pytest.raises(NameError, match="workers"):
        tx.update(grads, tx.init(grads))


def test_row_extra_args_reach_update():
    def factory():
        def update(updates, state, params=None, **extra):
            (value,) = extra_args.get_required("toy", extra, ["value"])
            return optax.tree.scale(value, updates), state

        return extra_args.declare(
            optax.GradientTransformation(lambda p: optax.EmptyState(), update), ["value"]
        )

    case = Case(
        name="toy_value",
        factory=factory,
        kwargs={},
        required_extra_args=frozenset({"value"}),
        extra_args=lambda loss, params, grads: {"value": 2.0},
    )
    grads = {"w": jnp.ones(2)}
    tx = case.make()
    updates, _ = harness.update(case, tx, grads, tx.init(grads), grads, loss=None)
    assert jnp.array_equal(updates["w"], 2.0 * grads["w"])


def test_case_names_are_unique():
    names = [case.name for case in ALL_CASES]
    assert len(names) == len(set(names))
