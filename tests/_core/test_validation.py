"""Hyperparameter checks: concrete values are checked, traced values and schedules are not."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gdtx._core import dtypes, extra_args, validation


@pytest.mark.parametrize(
    "value, expected",
    [(0.5, 0.5), (np.float32(2), 2.0), (jnp.asarray(3.0), 3.0), (np.array([4.0]), 4.0)],
)
def test_concrete_value_reads_real_scalars(value, expected):
    assert validation.concrete_value(value) == expected


@pytest.mark.parametrize(
    "value", [optax.constant_schedule(1.0), np.ones(3), "x", 1 + 2j, True, None]
)
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
    validation.check_integer("owner", "steps", np.int32(3), 1)
    validation.check_integer("owner", "steps", jnp.asarray(3), 1)
    validation.check_integer("owner", "steps", None, 0, optional=True)
    with pytest.raises(ValueError, match=r"owner: `steps` must be an integer >= 0, got -1"):
        validation.check_integer("owner", "steps", -1, 0)
    # 2.0 used to pass and then crash `fori_loop`; NaN and inf passed too.
    for bad in (2.0, 2.5, float("nan"), float("inf"), True, "2", None):
        with pytest.raises(TypeError, match=r"owner: `steps` must be an integer, got"):
            validation.check_integer("owner", "steps", bad, 0)


def test_check_static_integer():
    assert validation.check_static_integer("owner", "m", 4, 1) == 4
    assert validation.check_static_integer("owner", "m", np.int64(4), 1) == 4
    with pytest.raises(ValueError, match=r"owner: `m` must be an integer >= 1, got 0"):
        validation.check_static_integer("owner", "m", 0, 1)
    for bad in (2.5, 4.0, True):
        with pytest.raises(TypeError, match=r"owner: `m` must be an integer, got"):
            validation.check_static_integer("owner", "m", bad, 1)
    with pytest.raises(ValueError, match=r"must be an integer in \[1, 16\], got 17"):
        validation.check_static_integer("owner", "m", 17, 1, 16)
    with pytest.raises(TypeError, match=r"`m` fixes a shape .*static_args"):
        jax.jit(lambda m: validation.check_static_integer("owner", "m", m, 1))(3)


_RANGE_CHECKS = (validation.check_decay, validation.check_non_negative, validation.check_positive)


@pytest.mark.parametrize("check", _RANGE_CHECKS)
@pytest.mark.parametrize(
    "value, shown",
    [
        ("0.5", r"'0\.5' \(a str\)"),  # was parsed by NumPy and never range-checked
        (True, r"True \(a bool\)"),  # was 1.0: b1=True gave NaN
        (None, r"None \(a NoneType\)"),  # learning_rate=None was a step of +1
        (0.5 + 0j, r"\(0\.5\+0j\) \(a complex\)"),
        (lambda count: 0.5, r"<function .*> \(a function\)"),
        ([0.5, "a"], r"\[0\.5, 'a'\] \(a list\)"),
    ],
)
def test_a_hyperparameter_that_is_not_a_real_number_is_a_type_error(check, value, shown):
    with pytest.raises(TypeError, match=rf"owner: `arg` must be a real number, got {shown}\."):
        check("owner", "arg", value)


@pytest.mark.parametrize("check", _RANGE_CHECKS)
def test_schedules_and_none_pass_only_where_allowed(check):
    check("owner", "learning_rate", optax.constant_schedule(0.5), schedule=True)
    check("owner", "cap", None, optional=True)
    with pytest.raises(TypeError, match=r"`learning_rate` must be a real number or a schedule"):
        check("owner", "learning_rate", "0.5", schedule=True)
    with pytest.raises(TypeError, match=r"`cap` must be a real number or None, got '1'"):
        check("owner", "cap", "1", optional=True)


@pytest.mark.parametrize("check", _RANGE_CHECKS)
@pytest.mark.parametrize("value", [float("inf"), -float("inf"), float("nan")])
def test_non_finite_hyperparameters_are_refused(check, value):
    with pytest.raises(ValueError, match=r"owner: `arg` must be (finite|in \[0, 1\)|>= 0|> 0)"):
        check("owner", "arg", value)


@pytest.mark.parametrize(
    "check, vector, message",
    [
        (validation.check_decay, [0.5, 1.5], r"must be in \[0, 1\), got \[0\.5, 1\.5\]"),
        (validation.check_non_negative, np.array([1.0, -1.0]), r"must be >= 0"),
        (validation.check_positive, jnp.array([1.0, 0.0]), r"must be > 0"),
        (validation.check_positive, np.array([1.0, np.inf]), r"must be finite"),
    ],
)
def test_every_entry_of_a_vector_hyperparameter_is_checked(check, vector, message):
    with pytest.raises(ValueError, match=message):
        check("owner", "arg", vector)
    check("owner", "arg", np.full(3, 0.5))


def test_check_params_refuses_integer_and_unsupported_complex_leaves():
    params = {"w": jnp.zeros(3), "b": [jnp.zeros(2, jnp.bfloat16), jnp.zeros(1, jnp.int32)]}
    with pytest.raises(
        TypeError,
        match=r"owner updates floating-point parameters only: the parameter at \['b'\]\[1\] "
        r"has dtype int32\. Cast it",
    ):
        validation.check_params("owner", params, allow_complex=True)
    complex_params = {"z": jax.ShapeDtypeStruct((2,), jnp.complex64)}
    validation.check_params("owner", complex_params, allow_complex=True)
    with pytest.raises(
        TypeError,
        match=r"owner does not support complex parameters: the parameter at \['z'\] has "
        r"dtype complex64",
    ):
        validation.check_params("owner", complex_params, allow_complex=False)
    with pytest.raises(TypeError, match=r"the parameter at \(the root\) has dtype bool"):
        validation.check_params("owner", jnp.zeros(2, bool), allow_complex=True)
    validation.check_params("owner", {}, allow_complex=False)


def test_checking_params_checks_in_the_owners_name_and_keeps_declarations():
    inner = extra_args.declare(optax.with_extra_args_support(optax.scale_by_adam()), ["value"])
    tx = validation.checking_params(inner, "owner", allow_complex=False)
    assert extra_args.required_extra_args(tx) == {"value"}
    params = {"w": jnp.zeros(4)}
    state = tx.init(params)
    with pytest.raises(TypeError, match=r"owner does not support complex parameters"):
        tx.init({"w": jnp.zeros(2, jnp.complex64)})
    with pytest.raises(ValueError, match=r"owner: the update at \['w'\] has shape \(1,\)"):
        tx.update({"w": jnp.ones(1)}, state, params, value=1.0)
    updates, _ = tx.update({"w": jnp.ones(4)}, state, params, value=1.0)
    assert updates["w"].shape == (4,)


def test_check_like_params_refuses_a_gradient_that_would_broadcast():
    params = {"w": jnp.zeros(4)}
    validation.check_like_params("owner", {"w": jnp.ones(4)}, params)
    validation.check_like_params("owner", {"w": jnp.ones(1)}, None)  # nothing to compare
    with pytest.raises(
        ValueError, match=r"owner: the update at \['w'\] has shape \(1,\), but the parameter"
    ):
        validation.check_like_params("owner", {"w": jnp.ones(1)}, params)
    with pytest.raises(ValueError, match=r"owner: the updates tree does not match the params"):
        validation.check_like_params("owner", {"v": jnp.ones(4)}, params)


def _at_least_4(owner, name, value):
    validation.check_at_least(owner, name, value, 4)


def _half_open_0_50(owner, name, value):
    validation.check_interval(owner, name, value, 0, 50, high_open=True)


def _closed_0_1(owner, name, value):
    validation.check_interval(owner, name, value, 0, 1)


@pytest.mark.parametrize(
    "check, value, message",
    [
        (_at_least_4, 3.5, r"owner: `arg` must be >= 4, got 3\.5\."),
        (_at_least_4, float("inf"), r"owner: `arg` must be finite, got inf\."),
        (_half_open_0_50, 50.0, r"owner: `arg` must be in \[0, 50\), got 50\.0\."),
        (_half_open_0_50, -1.0, r"must be in \[0, 50\), got -1\.0"),
        (_closed_0_1, 1.5, r"owner: `arg` must be in \[0, 1\], got 1\.5\."),
        (_closed_0_1, np.array([0.5, -0.1]), r"must be in \[0, 1\]"),
    ],
)
def test_range_checks_name_the_bound(check, value, message):
    with pytest.raises(ValueError, match=message):
        check("owner", "arg", value)


@pytest.mark.parametrize(
    "check, value",
    [(_at_least_4, 4), (_half_open_0_50, 0.0), (_half_open_0_50, 49.9), (_closed_0_1, 1.0)],
)
def test_range_checks_accept_their_boundaries(check, value):
    check("owner", "arg", value)


def test_check_static_real():
    assert validation.check_static_real("owner", "arg", np.float32(0.5)) == 0.5
    with pytest.raises(TypeError, match=r"owner: `arg` must be a real scalar"):
        validation.check_static_real("owner", "arg", np.ones(2))
    with pytest.raises(TypeError, match=r"owner: `arg` must be a real number"):
        validation.check_static_real("owner", "arg", "0.5")
    with pytest.raises(
        TypeError, match=r"`arg` must be a concrete number, not a traced value.*static_args"
    ):
        jax.jit(lambda x: validation.check_static_real("owner", "arg", x))(0.5)


def test_check_scalar():
    validation.check_scalar("owner", "arg", 2.0)
    with pytest.raises(ValueError, match=r"owner: `arg` must be a scalar"):
        validation.check_scalar("owner", "arg", np.ones(3))


def test_complex_numbers_are_a_value_error_as_a_knob_and_a_type_error_as_data():
    """The rule of the module docstring, in one place: a dtype knob is a choice
    (ValueError), parameters and hyperparameters are data (TypeError)."""
    with pytest.raises(ValueError, match=r"gdtx\.f: `grads_dtype` must be None or a real"):
        validation.check_dtype("gdtx.f", "grads_dtype", jnp.complex64, real=True)
    with pytest.raises(TypeError, match=r"gdtx\.f does not support complex parameters"):
        validation.check_params("gdtx.f", {"w": jnp.zeros(2, jnp.complex64)}, allow_complex=False)
    with pytest.raises(TypeError, match=r"gdtx\.f: `mu_dtype=float32` is real"):
        dtypes.check_phase_dtype("gdtx.f", "mu_dtype", jnp.zeros(2, jnp.complex64), jnp.float32)
    with pytest.raises(TypeError, match=r"gdtx\.f: `b1`"):
        validation.check_decay("gdtx.f", "b1", 0.9 + 0.1j)
