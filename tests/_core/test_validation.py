"""Hyperparameter checks: concrete values are checked, traced values and schedules are not."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gdtx._core import validation


@pytest.mark.parametrize(
    "value, expected",
    [(0.5, 0.5), (np.float32(2), 2.0), (jnp.asarray(3.0), 3.0), (np.array([4.0]), 4.0)],
)
def test_concrete_value_reads_real_scalars(value, expected):
    assert validation.concrete_value(value) == expected


@pytest.mark.parametrize("value", [optax.constant_schedule(1.0), np.ones(3), "x", 1 + 2j])
def test_concrete_value_is_none_for_what_cannot_be_checked(value):
    assert validation.concrete_value(value) is None


def test_checks_are_silent_on_traced_values():
    @jax.jit
    def f(x):
        validation.check_decay("owner", "b1", x)
        validation.check_non_negative("owner", "eps", x)
        validation.check_positive("owner", "k", x)
        return x

    assert f(5.0) == 5.0  # 5.0 would fail every check above if it were concrete


@pytest.mark.parametrize(
    "check, value, message",
    [
        (validation.check_decay, 1.0, r"owner: `arg` must be in \[0, 1\), got 1\.0\."),
        (validation.check_decay, -0.5, r"must be in \[0, 1\), got -0\.5"),
        (validation.check_decay, float("nan"), r"must be in \[0, 1\), got nan"),
        (validation.check_non_negative, -1e-8, r"owner: `arg` must be >= 0, got -1e-08\."),
        (validation.check_positive, 0, r"owner: `arg` must be > 0, got 0\."),
    ],
)
def test_checks_name_the_owner_the_argument_and_the_value(check, value, message):
    with pytest.raises(ValueError, match=message):
        check("owner", "arg", value)


@pytest.mark.parametrize(
    "check, value",
    [
        (validation.check_decay, 0.0),
        (validation.check_decay, 0.999),
        (validation.check_non_negative, 0.0),
        (validation.check_positive, 1e-30),
    ],
)
def test_checks_accept_the_boundary_values_they_allow(check, value):
    check("owner", "arg", value)


def test_check_choice():
    validation.check_choice("owner", "mode", "a", ("a", "b"))
    with pytest.raises(ValueError, match=r"`mode` must be one of \('a', 'b'\), got 'c'"):
        validation.check_choice("owner", "mode", "c", ("a", "b"))


@pytest.mark.parametrize("dtype", [None, jnp.bfloat16, "float32", jnp.complex64])
def test_check_dtype_accepts_inexact_dtypes(dtype):
    validation.check_dtype("owner", "mu_dtype", dtype)


@pytest.mark.parametrize("dtype", [jnp.int32, "bool"])
def test_check_dtype_rejects_integer_dtypes(dtype):
    with pytest.raises(ValueError, match=r"`mu_dtype` must be None or a floating-point dtype"):
        validation.check_dtype("owner", "mu_dtype", dtype)


def test_check_like_state_names_the_path_and_both_shapes():
    state = {"a": jnp.zeros(3), "b": (jnp.zeros((2, 2)),)}
    validation.check_like_state("owner", {"a": jnp.ones(3), "b": (jnp.ones((2, 2)),)}, state)
    with pytest.raises(
        ValueError,
        match=r"owner: updates at \['b'\]\[0\] has shape \(2, 3\), "
        r"but the state was initialised for shape \(2, 2\)",
    ):
        validation.check_like_state("owner", {"a": jnp.ones(3), "b": (jnp.ones((2, 3)),)}, state)
    with pytest.raises(ValueError, match="tree does not match"):
        validation.check_like_state("owner", {"a": jnp.ones(3)}, state)


def test_check_dtype_explains_a_dtype_turned_into_an_array():
    with pytest.raises(ValueError, match=r"`mu_dtype` must be a dtype, not an array .*static_args"):
        validation.check_dtype("owner", "mu_dtype", jnp.asarray(1.0))


def test_check_integer():
    validation.check_integer("owner", "steps", 3, 0)
    validation.check_integer("owner", "steps", 3.0, 1)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match=r"owner: `steps` must be an integer >= 0, got"):
            validation.check_integer("owner", "steps", bad, 0)


def test_check_static_integer():
    assert validation.check_static_integer("owner", "m", 4, 1) == 4
    for bad, bound in ((0, ">= 1"), (2.5, ">= 1"), (True, ">= 1")):
        with pytest.raises(ValueError, match=rf"owner: `m` must be an integer {bound}, got"):
            validation.check_static_integer("owner", "m", bad, 1)
    with pytest.raises(ValueError, match=r"must be an integer in \[1, 16\], got 17"):
        validation.check_static_integer("owner", "m", 17, 1, 16)
    with pytest.raises(TypeError, match=r"`m` fixes a shape .*static_args"):
        jax.jit(lambda m: validation.check_static_integer("owner", "m", m, 1))(3)
