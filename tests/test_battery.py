"""The shared battery: every alias in ``tests/registry`` passes every check here.

Each check reads the registry row; there are no per-optimizer special cases in
this file. A row's limitations (no complex support, Rosenbrock needs a
schedule) are data on the row.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdtx
from tests import problems
from tests.harness import assert_trees_close as _assert_trees_close
from tests.harness import grads as _grads
from tests.harness import run as _run
from tests.harness import update as _update
from tests.registry import ALL_CASES

pytestmark = pytest.mark.parametrize("case", ALL_CASES, ids=str)


# --- convergence ---------------------------------------------------------------


def test_parabola_converges(case):
    problem = problems.parabola()
    final = _run(case, case.make(), problem)
    _assert_trees_close(final, problem.solution, 3e-2, 3e-2, f"{case} on the parabola")


def test_complex_parabola_converges(case):
    if not case.supports_complex:
        pytest.skip(f"{case} does not support complex parameters (declared on its row)")
    problem = problems.parabola(jnp.complex64)
    final = _run(case, case.make(), problem)
    _assert_trees_close(final, problem.solution, 3e-2, 3e-2, f"{case} on the complex parabola")


def test_rosenbrock_converges(case):
    if case.rosenbrock_kwargs is None:
        pytest.skip(case.rosenbrock_skip)
    problem = problems.rosenbrock()
    final = _run(case, case.make(**case.rosenbrock_kwargs), problem)
    _assert_trees_close(final, problem.solution, 3e-2, 3e-2, f"{case} on Rosenbrock")


# --- compilation, extra args, hyperparameter injection ----------------------------


def test_no_retrace_on_second_call(case):
    problem = problems.parabola()
    tx = case.make()
    traces = []

    @jax.jit
    def step(params, state):
        traces.append(None)  # runs once per trace, never at execution
        updates, state = _update(
            case, tx, _grads(problem, params), state, params, loss=problem.loss
        )
        return optax.apply_updates(params, updates), state

    initial = (problem.initial, tx.init(problem.initial))
    if case.axis_name is not None:
        # harness.update returns arrays on its one-device mesh: start there too, or
        # the second call sees a new placement and traces again for that reason alone.
        mesh = jax.make_mesh((1,), (case.axis_name,), devices=jax.devices()[:1])
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        initial = jax.device_put(initial, sharding)
    params, state = step(*initial)
    step(params, state)
    assert len(traces) == 1, "the second step retraced: the state's types drifted"


def test_unexpected_extra_args_are_ignored(case):
    problem = problems.parabola()
    tx = case.make()
    params = problem.initial
    grads = _grads(problem, params)
    state = tx.init(params)
    expected = _update(case, tx, grads, state, params, loss=problem.loss)
    actual = _update(case, tx, grads, state, params, loss=problem.loss, some_unexpected_kwarg=1)
    _assert_trees_close(actual, expected, 0, 0, "with an unknown extra arg")


def test_required_extra_args_are_declared(case):
    tx = case.make()
    assert gdtx.required_extra_args(tx) == case.required_extra_args
    problem = problems.parabola()
    params = problem.initial
    for name in case.required_extra_args:
        extra = dict(case.extra_args(problem.loss, params, _grads(problem, params)))
        del extra[name]
        with pytest.raises(TypeError, match=re.escape(f"`{name}`")):
            tx.update(_grads(problem, params), tx.init(params), params, **extra)


def test_inject_hyperparams_gives_the_same_updates(case):
    problem = problems.parabola()
    plain = case.make()
    injected = optax.inject_hyperparams(case.factory, static_args=case.static_args)(**case.kwargs)
    params_a = params_b = problem.initial
    state_a, state_b = plain.init(params_a), injected.init(params_b)
    step_a = jax.jit(lambda g, s, p: _update(case, plain, g, s, p, loss=problem.loss))
    step_b = jax.jit(lambda g, s, p: _update(case, injected, g, s, p, loss=problem.loss))
    for _ in range(5):
        updates_a, state_a = step_a(_grads(problem, params_a), state_a, params_a)
        updates_b, state_b = step_b(_grads(problem, params_b), state_b, params_b)
        params_a = optax.apply_updates(params_a, updates_a)
        params_b = optax.apply_updates(params_b, updates_b)
    # Params are O(1): a few float32 ulps (1.2e-7 at 1.0) may differ where XLA folds a
    # constant hyperparameter but not a traced one.
    _assert_trees_close(params_b, params_a, 1e-6, 5e-7, "inject_hyperparams")


def test_traced_hyperparameters_are_accepted(case):
    problem = problems.parabola()
    params = problem.initial
    numeric = {k: v for k, v in case.kwargs.items() if isinstance(v, float)}

    @jax.jit
    def step(hparams):
        tx = case.make(**hparams)
        return _update(
            case, tx, _grads(problem, params), tx.init(params), params, loss=problem.loss
        )[0]

    expected = _update(
        case,
        case.make(),
        _grads(problem, params),
        case.make().init(params),
        params,
        loss=problem.loss,
    )
    _assert_trees_close(step(numeric), expected[0], 1e-6, 1e-7, "traced hyperparameters")


# --- dtypes ------------------------------------------------------------------------


def _state_field_dtypes(state, field):
    return {
        x.dtype
        for x in jax.tree.leaves(optax.tree.get_all_with_path(state, field))
        if hasattr(x, "dtype")
    }


@pytest.mark.parametrize("param_dtype", [jnp.bfloat16, jnp.float32], ids=["bf16", "f32"])
@pytest.mark.parametrize("knob_dtype", [jnp.bfloat16, jnp.float32], ids=["bf16", "f32"])
def test_dtype_knobs_set_the_state_dtype(case, param_dtype, knob_dtype):
    if not case.dtype_knobs:
        pytest.skip(f"{case} declares no dtype knobs")
    problem = problems.parabola(param_dtype)
    params = problem.initial
    for knob, fields in case.dtype_knobs.items():
        tx = case.make(**{knob: knob_dtype})
        state = tx.init(params)
        _, state = jax.jit(lambda g, s, p: _update(case, tx, g, s, p, loss=problem.loss))(  # noqa: B023
            _grads(problem, params), state, params
        )
        # A field may be absent in a configuration (nu_max without AMSGrad), but
        # every knob must set at least one field.
        found_by_field = {field: _state_field_dtypes(state, field) for field in fields}
        assert any(found_by_field.values()), f"{knob} sets none of {fields}"
        for field, found in found_by_field.items():
            assert found <= {jnp.dtype(knob_dtype)}, f"{knob}={knob_dtype} -> {field}: {found}"
        others = [f for k, fs in case.dtype_knobs.items() if k != knob for f in fs]
        for field in others:
            found = _state_field_dtypes(state, field)
            assert found <= {jnp.dtype(param_dtype)}, f"{knob} changed {field}: {found}"


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32], ids=["bf16", "f32"])
def test_updates_keep_the_gradient_dtype(case, dtype):
    problem = problems.parabola(dtype)
    tx = case.make()
    params = problem.initial
    updates, _ = jax.jit(lambda g, s, p: _update(case, tx, g, s, p, loss=problem.loss))(
        _grads(problem, params), tx.init(params), params
    )
    dtypes = {u.dtype for u in jax.tree.leaves(updates)}
    assert dtypes == {jnp.dtype(dtype)}


@pytest.mark.parametrize(
    "dtype", [jnp.float16, jnp.bfloat16, jnp.float32], ids=["f16", "bf16", "f32"]
)
def test_state_is_stable_under_lax_cond(case, dtype):
    problem = problems.parabola(dtype)
    tx = case.make()
    params = problem.initial
    grads = _grads(problem, params)

    @jax.jit
    def maybe_step(pred, state):
        return jax.lax.cond(
            pred,
            lambda s: _update(case, tx, grads, s, params, loss=problem.loss)[1],
            lambda s: s,
            state,
        )

    state = tx.init(params)
    new_state = maybe_step(True, state)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state), strict=True):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)


def test_multisteps_first_update_is_zero(case):
    problem = problems.parabola()
    tx = optax.MultiSteps(case.make(), every_k_schedule=4)
    params = problem.initial
    updates, _ = jax.jit(lambda g, s, p: _update(case, tx, g, s, p, loss=problem.loss))(
        _grads(problem, params), tx.init(params), params
    )
    for u in jax.tree.leaves(updates):
        np.testing.assert_array_equal(np.asarray(u, np.float32), 0.0)


# --- init, buffers and sharding --------------------------------------------------------


def test_init_on_shape_dtype_structs(case):
    params = problems.parabola().initial
    abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
    tx = case.make()
    expected = jax.eval_shape(tx.init, params)
    actual = jax.eval_shape(tx.init, abstract)
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    assert jax.tree.leaves(actual) == jax.tree.leaves(expected)


def test_counts_are_int32_scalars(case):
    problem = problems.parabola()
    tx = case.make()
    state = tx.init(problem.initial)
    _, state = _update(
        case, tx, _grads(problem, problem.initial), state, problem.initial, loss=problem.loss
    )
    counts = [c for _, c in optax.tree.get_all_with_path(state, "count")]
    for count in counts:
        assert (count.shape, count.dtype) == ((), jnp.int32), count


def test_donated_step_runs(case):
    problem = problems.parabola()
    tx = case.make()

    def step(params, state):
        updates, state = _update(
            case, tx, _grads(problem, params), state, params, loss=problem.loss
        )
        return optax.apply_updates(params, updates), state

    expected = step(*jax.tree.map(jnp.copy, (problem.initial, tx.init(problem.initial))))
    donated = jax.jit(step, donate_argnums=(0, 1))
    params = jax.tree.map(jnp.copy, problem.initial)
    actual = donated(params, tx.init(params))
    actual = donated(*actual)  # the donated outputs can be donated again
    expected = step(*expected)
    _assert_trees_close(actual, expected, 1e-6, 1e-7, "donated step")


def _leaves_with_path_by(trees):
    for when, tree in trees.items():
        for path, leaf in jax.tree.leaves_with_path(tree):
            yield (when, path), leaf


def test_state_sharding_follows_params(case):
    if case.axis_name is not None:
        pytest.skip("collective rows keep per-device state; their family tests check its layout")
    devices = jax.devices()
    if len(devices) < 8:
        pytest.skip("needs 8 devices (tests/conftest.py sets jax_num_cpu_devices)")
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    P = jax.sharding.PartitionSpec
    specs = {"kernel": P("data", None), "bias": P("data"), "scale": P()}
    params = jax.tree.map(
        lambda x, s: jax.device_put(x, jax.sharding.NamedSharding(mesh, s)),
        problems.sharded_params(8),
        specs,
    )
    tx = case.make()

    def loss(p):
        return sum(jnp.sum(x**2) for x in jax.tree.leaves(p))

    with jax.set_mesh(mesh):
        initial = jax.jit(tx.init)(params)
        _, updated = jax.jit(lambda g, s, p: _update(case, tx, g, s, p, loss=loss))(
            jax.grad(loss)(params), initial, params
        )
    # Every params-shaped state array (moments, residuals, previous gradients...),
    # whatever its field name, must be sharded like the parameter it mirrors.
    # A state leaf mirrors a parameter when its path ends with that parameter's key
    # and it has the parameter's shape (M-FAC's (m, ...) windows do not: their own
    # tests check them).
    checked = 0
    both = {"init": initial, "update": updated}
    for (when, path), leaf in _leaves_with_path_by(both):
        name = getattr(path[-1], "key", None) if path else None
        if name in specs and specs[name] != P() and leaf.shape == params[name].shape:
            got = jax.typeof(leaf).sharding.spec
            assert got == specs[name], (
                f"{when} state{jax.tree_util.keystr(path)} is sharded as {got}, not {specs[name]}"
            )
            checked += 1
    if not checked:
        pytest.skip(f"{case} keeps no params-shaped state")


# --- validation ---------------------------------------------------------------------


def test_invalid_hyperparameters_raise(case):
    if not case.invalid:
        pytest.skip(f"{case} declares no invalid hyperparameters")
    for override, pattern in case.invalid:
        with pytest.raises(ValueError, match=pattern):
            case.make(**override)
