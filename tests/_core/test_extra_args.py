"""Declared extra arguments: what a transformation requires, also through chains."""

import jax.numpy as jnp
import optax
import pytest

import gdtx
from gdtx._core import extra_args


def _needs_value():
    """A toy transformation that scales updates by the ``value`` extra argument."""

    def update(updates, state, params=None, **extra):
        (value,) = extra_args.get_required("toy.scale_by_value", extra, ["value"])
        return optax.tree.scale(value, updates), state

    return extra_args.declare(
        optax.GradientTransformation(lambda p: optax.EmptyState(), update), ["value"]
    )


def test_declared_requirements_are_read_back():
    assert gdtx.required_extra_args(_needs_value()) == {"value"}


def test_undeclared_transformations_require_nothing():
    assert gdtx.required_extra_args(optax.sgd(0.1)) == frozenset()
    assert gdtx.required_extra_args(gdtx.adabelief(0.1)) == frozenset()


def test_gdtx_chain_unions_the_requirements():
    other = extra_args.declare(optax.identity(), ["grad_variance"])
    tx = gdtx.chain(optax.clip_by_global_norm(1.0), _needs_value(), other, optax.sgd(1.0))
    assert gdtx.required_extra_args(tx) == {"value", "grad_variance"}
    nested = gdtx.chain(tx, optax.identity())
    assert gdtx.required_extra_args(nested) == {"value", "grad_variance"}


def test_plain_optax_chain_carries_no_declaration_but_still_raises():
    tx = optax.chain(_needs_value(), optax.sgd(1.0))
    assert gdtx.required_extra_args(tx) == frozenset()  # documented limitation
    params = jnp.ones(2)
    with pytest.raises(TypeError, match=r"toy\.scale_by_value requires the extra argument `value`"):
        tx.update(params, tx.init(params), params)


def test_a_missing_argument_is_a_type_error_naming_it():
    tx = gdtx.chain(_needs_value())
    params = jnp.ones(2)
    with pytest.raises(TypeError, match=r"requires the extra argument `value`"):
        tx.update(params, tx.init(params), params, other=1)


def test_given_arguments_are_used_and_unknown_ones_ignored():
    tx = gdtx.chain(_needs_value())
    params = jnp.ones(2)
    updates, _ = tx.update(params, tx.init(params), params, value=3.0, unknown="ignored")
    assert jnp.array_equal(updates, 3.0 * params)


def test_chain_refuses_what_is_not_a_transformation():
    with pytest.raises(
        TypeError, match=r"gdtx\.chain: argument 1 must be an optax GradientTransformation.*got 1"
    ):
        gdtx.chain(optax.sgd(0.1), 1)


def test_a_missing_extra_argument_names_the_fix_for_linen():
    tx = extra_args.declare(
        optax.GradientTransformationExtraArgs(
            lambda p: optax.EmptyState(),
            lambda u, s, p=None, **kw: (extra_args.get_required("gdtx.x", kw, ["value_fn"]), s),
        ),
        ["value_fn"],
    )
    with pytest.raises(TypeError, match=r"gdtx\.flax\.apply_gradients\(state, grads=grads"):
        tx.update({}, tx.init({}))
