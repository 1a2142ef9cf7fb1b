"""The shared battery: every alias in ``tests/registry`` passes every check here.

Each check reads the registry row; there are no per-optimizer special cases in
this file. A row's limitations (no complex support, Rosenbrock needs a
schedule) are data on the row. ``tests/test_battery_harness.py`` shows that each
check can fail: it runs them on deliberately broken toy transformations.
"""

from __future__ import annotations

import inspect
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdtx
from tests import harness, problems
from tests.harness import assert_trees_close as _assert_trees_close
from tests.harness import grads as _grads
from tests.harness import run as _run
from tests.harness import update as _update
from tests.registry import ALL_CASES

pytestmark = pytest.mark.parametrize("case", ALL_CASES, ids=str)
P = jax.sharding.PartitionSpec


def _abstract_update(case, tx, grads, state, params, *, loss):
    """The types (``jax.ShapeDtypeStruct``) of ``harness.update``'s results, traced, not compiled.

    The dtype and structure checks read only these: a jitted call has the same output
    types by construction, and tracing is what refuses a ``lax.cond`` whose branches
    disagree. Skipping XLA's compile keeps them cheap enough to run on every row.
    """
    return jax.eval_shape(
        lambda g, s, p: _update(case, tx, g, s, p, loss=loss), grads, state, params
    )


# --- convergence ---------------------------------------------------------------


def test_parabola_converges(case):
    problem = problems.parabola()
    final = _run(case, case.make(), problem)
    _assert_trees_close(final, problem.solution, 3e-2, 3e-2, f"{case} on the parabola")


def test_complex_parabola_converges(case):
    """Complex in optax's sense: a real loss, a complex minimiser, conjugated gradients."""
    if not case.supports_complex:
        pytest.skip(f"{case} does not support complex parameters (declared on its row)")
    problem = problems.parabola(jnp.complex64)
    final = _run(case, case.make(), problem)
    _assert_trees_close(final, problem.solution, 3e-2, 3e-2, f"{case} on the complex parabola")


def test_complex_rosenbrock_converges(case):
    """optax's complex Rosenbrock: ``a = 1 + 1j``, minimum at ``(a, a^2)``."""
    if not case.supports_complex:
        pytest.skip(f"{case} does not support complex parameters (declared on its row)")
    if case.rosenbrock_kwargs is None:
        pytest.skip(case.rosenbrock_skip)
    if case.complex_rosenbrock_skip:
        pytest.skip(case.complex_rosenbrock_skip)
    problem = problems.rosenbrock(jnp.complex64)
    final = _run(case, case.make(**case.rosenbrock_kwargs), problem)
    _assert_trees_close(final, problem.solution, 3e-2, 3e-2, f"{case} on the complex Rosenbrock")


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

    expected = harness.parabola_update(case)(grads, state, params)
    actual = jax.jit(
        lambda g, s, p: _update(case, tx, g, s, p, loss=problem.loss, some_unexpected_kwarg=1)
    )(grads, state, params)
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
    step_a = harness.parabola_update(case)
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

    @jax.jit
    def constant_step():
        tx = case.make()
        return _update(
            case, tx, _grads(problem, params), tx.init(params), params, loss=problem.loss
        )[0]

    # Both compiled: eager op-by-op rounding is not what this test is about (a
    # 1-ulp difference in new params shows as 1e-5 in `new - params`).
    _assert_trees_close(step(numeric), constant_step(), 1e-6, 1e-7, "traced hyperparameters")


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
        _, state = _abstract_update(
            case, tx, _grads(problem, params), state, params, loss=problem.loss
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
    updates, _ = _abstract_update(
        case, tx, _grads(problem, params), tx.init(params), params, loss=problem.loss
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

    def maybe_step(pred, state):
        return jax.lax.cond(
            pred,
            lambda s: _update(case, tx, grads, s, params, loss=problem.loss)[1],
            lambda s: s,
            state,
        )

    state = tx.init(params)
    # lax.cond refuses, while tracing, branches whose types differ.
    new_state = jax.eval_shape(maybe_step, True, state)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state), strict=True):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_complex_dtypes_are_stable(case, dtype):
    """Complex params: updates keep the dtype, the state's types survive an update and
    ``lax.cond`` (whose branches must agree), in single and double precision."""
    if not case.supports_complex:
        pytest.skip(f"{case} does not support complex parameters (declared on its row)")
    with jax.enable_x64(dtype == "complex128"):
        problem = problems.parabola(jnp.dtype(dtype))
        tx = case.make()
        params = problem.initial
        grads = harness.grads(problem, params)
        state = tx.init(params)

        def step(s):
            return _update(case, tx, grads, s, params, loss=problem.loss)

        updates, new_state = jax.eval_shape(step, state)
        assert {u.dtype for u in jax.tree.leaves(updates)} == {jnp.dtype(dtype)}
        types = [(x.shape, x.dtype) for x in jax.tree.leaves(state)]
        assert [(x.shape, x.dtype) for x in jax.tree.leaves(new_state)] == types
        assert jax.tree.structure(new_state) == jax.tree.structure(state)
        # lax.cond refuses, while tracing, branches whose types differ.
        jax.eval_shape(
            lambda pred, s: jax.lax.cond(pred, step, lambda s: (grads, s), s), True, state
        )


def test_multisteps_first_update_is_zero(case):
    problem = problems.parabola()
    tx = optax.MultiSteps(case.make(), every_k_schedule=4)
    params = problem.initial
    updates, _ = jax.jit(lambda g, s, p: _update(case, tx, g, s, p, loss=problem.loss))(
        _grads(problem, params), tx.init(params), params
    )
    for u in jax.tree.leaves(updates):
        np.testing.assert_array_equal(np.asarray(u, np.float32), 0.0)


# --- parameters a row must refuse ------------------------------------------------------


def test_complex_params_are_refused_at_init(case):
    """A row without complex support says so at ``init``, naming itself and the leaf."""
    if case.supports_complex:
        pytest.skip(f"{case} supports complex parameters: the complex checks run instead")
    params = problems.parabola().initial
    params["layer"]["kernel"] = params["layer"]["kernel"].astype(jnp.complex64)
    with pytest.raises(TypeError, match=case.owner_pattern) as info:
        case.make().init(params)
    assert "['layer']['kernel']" in str(info.value), "the message must name the leaf"


def test_integer_params_are_refused_at_init(case):
    """gdtx updates floating-point parameters: an int32 leaf is a TypeError at ``init``."""
    params = problems.parabola().initial
    scalar, vector = params["extras"]
    params["extras"] = (scalar, vector.astype(jnp.int32))
    with pytest.raises(TypeError, match=case.owner_pattern) as info:
        case.make().init(params)
    assert "['extras'][1]" in str(info.value), "the message must name the leaf"


def test_a_gradient_of_the_wrong_shape_raises(case):
    """A ``(1,)`` gradient for a ``(4,)`` parameter is refused, never broadcast."""
    params = {"w": jnp.linspace(1.0, 2.0, 4)}
    tx = case.make()
    state = tx.init(params)
    with pytest.raises(ValueError, match=case.owner_pattern):
        _update(case, tx, {"w": jnp.ones(1)}, state, params, loss=problems.sum_of_squares)


# --- empty subtrees: optax.masked and optax.multi_transform ----------------------------


def test_empty_tree(case):
    """``init({})`` and ``update({}, state, {})`` work (a transformation with nothing to do)."""
    tx = case.make()
    state = tx.init({})
    updates, _ = _update(case, tx, {}, state, {}, loss=problems.sum_of_squares)
    assert updates == {}


def test_masked_with_an_all_false_mask_passes_updates_through(case):
    """``optax.masked`` with nothing selected: the row sees empty subtrees, eagerly and jitted."""
    params = problems.parabola().initial
    grads = jax.grad(problems.sum_of_squares)(params)
    mask = jax.tree.map(lambda _: False, params)
    tx = optax.masked(case.make(), mask, mask_compatible_extra_args=True)
    state = tx.init(params)

    def step(g, s, p):
        return _update(case, tx, g, s, p, loss=problems.sum_of_squares)

    for how, fn in (("eagerly", step), ("under jit", jax.jit(step))):
        updates, new_state = fn(grads, state, params)
        _assert_trees_close(updates, grads, 0, 0, f"masked-out updates, {how}")
        assert jax.tree.structure(new_state) == jax.tree.structure(state)


def test_multi_transform_with_an_unused_label(case):
    """``optax.multi_transform`` where the row's label selects no parameter."""
    params = problems.parabola().initial
    grads = jax.grad(problems.sum_of_squares)(params)
    labels = jax.tree.map(lambda _: "b", params)
    tx = optax.multi_transform(
        {"a": case.make(), "b": optax.sgd(0.1)}, labels, mask_compatible_extra_args=True
    )
    step = jax.jit(lambda g, s, p: _update(case, tx, g, s, p, loss=problems.sum_of_squares))
    updates, _ = step(grads, tx.init(params), params)
    _assert_trees_close(updates, optax.tree.scale(-0.1, grads), 1e-7, 0, "the other label's sgd")


# --- collectives -------------------------------------------------------------------------


def test_collective_state_initialised_inside_shard_map_can_be_scanned(case):
    """The data-parallel pattern: ``init`` inside ``jax.shard_map``, steps in ``lax.scan``.

    Two workers, each differentiating its own copy of the params; the state's
    types (replicated or varying over the axis) must not change from step to step.
    """
    if case.axis_name is None:
        pytest.skip(f"{case} needs no mesh axis")
    mesh = jax.make_mesh((2,), (case.axis_name,), devices=jax.devices()[:2])
    problem = problems.parabola()
    final = harness.run_in_shard_map(case, case.make(), problem, mesh, num_steps=3)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(final))
    assert problem.loss(final) < problem.loss(problem.initial)


def test_collective_outside_its_axis_names_the_owner_and_the_axis(case):
    """Outside ``shard_map`` the update fails with gdtx's message, not JAX's NameError."""
    if case.axis_name is None:
        pytest.skip(f"{case} needs no mesh axis")
    problem = problems.parabola()
    params = problem.initial
    tx = case.make()
    step = jax.jit(lambda g, s, p: tx.update(g, s, p, **case.extra_args(problem.loss, p, g)))
    try:
        step(_grads(problem, params), tx.init(params), params)
    except NameError as error:
        pytest.fail(f"JAX's raw NameError reached the user: {error}")
    except Exception as error:  # noqa: BLE001 - any gdtx error type, checked below
        message = str(error)
    else:
        pytest.fail(f"{case} ran outside any binding of {case.axis_name!r}")
    assert re.search(case.owner_pattern, message), f"the owner is not named: {message}"
    quoted = "['\"`]" + re.escape(case.axis_name) + "['\"`]"
    assert re.search(quoted, message), f"the axis is not named: {message}"


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
    _, state = _abstract_update(
        case, tx, _grads(problem, problem.initial), state, problem.initial, loss=problem.loss
    )
    counts = [c for _, c in optax.tree.get_all_with_path(state, "count")]
    # A count inside per-device state (DiLoCo's inner Adam) carries the
    # leading device axis of per-device leaves: one device here.
    per_device = [False] * len(counts)
    if case.axis_name:
        specs = harness.state_specs(case, tx, problem.initial)
        per_device = [s != P() for _, s in optax.tree.get_all_with_path(specs, "count")]
    for count, local in zip(counts, per_device, strict=True):
        shape = (1,) if local else ()
        assert (count.shape, count.dtype) == (shape, jnp.int32), count


def test_donated_step_runs(case):
    problem = problems.parabola()
    tx = case.make()

    def step(params, state):
        updates, state = _update(
            case, tx, _grads(problem, params), state, params, loss=problem.loss
        )
        return optax.apply_updates(params, updates), state

    def plain(params, state):  # the row's shared compiled update, without donation
        updates, state = harness.parabola_update(case)(_grads(problem, params), state, params)
        return optax.apply_updates(params, updates), state

    expected = plain(*jax.tree.map(jnp.copy, (problem.initial, tx.init(problem.initial))))
    donated = jax.jit(step, donate_argnums=(0, 1))
    params = jax.tree.map(jnp.copy, problem.initial)
    actual = donated(params, tx.init(params))
    actual = donated(*actual)  # the donated outputs can be donated again
    expected = plain(*expected)
    _assert_trees_close(actual, expected, 1e-6, 1e-7, "donated step")


def _spec_tuple(spec):
    """A PartitionSpec as a tuple without trailing Nones (``P("model", None) == P("model")``)."""
    entries = tuple(spec)
    while entries and entries[-1] is None:
        entries = entries[:-1]
    return entries


def _flax_like_specs(case, state, params, param_specs, *, window="after"):
    """Where ``nnx.Optimizer`` puts each state leaf: like the parameter it mirrors.

    A state leaf mirrors a parameter when its path ends with the parameter's path.
    With the parameter's shape it gets the parameter's spec; with one extra leading
    axis (M-FAC's window, a collective's per-device leaves) ``P(lead, *spec)``, where
    ``lead`` is the row's axis for per-device fields (``gdtx.per_device_specs``) and
    None otherwise. With ``window="leading"`` a window that is not per-device gets the
    parameter's spec itself, read from its first axis on (what copying the param's
    sharding names onto the state does: ``b1``'s ``(m, 8)`` window becomes
    ``P("model")``), where those axes divide. Every other leaf (counts, keys) is
    replicated, or per-device.
    """
    is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)  # noqa: E731
    mesh_sizes = dict(problems.FSDP_MESH_SHAPE)
    if case.axis_name is None:
        default = jax.tree.map(lambda _: P(), state)
    else:
        default = gdtx.per_device_specs(state, case.axis_name)
    mirrored = [
        (path, leaf.shape, param_specs[path[-1].key])
        for path, leaf in jax.tree.leaves_with_path(params)
    ]

    def place(path, leaf, base):
        for param_path, shape, spec in mirrored:
            if tuple(path[-len(param_path) :]) != tuple(param_path):
                continue
            if leaf.shape == shape:
                return spec, True
            if leaf.shape[1:] == shape and leaf.ndim == len(shape) + 1:
                if window == "leading" and not len(base) and _divides(mesh_sizes, spec, leaf):
                    return spec, True
                return P(base[0] if len(base) else None, *spec), True
        return base, False

    leaves, treedef = jax.tree.flatten_with_path(state)
    bases = jax.tree.leaves(default, is_leaf=is_spec)
    placed = [place(path, leaf, base) for (path, leaf), base in zip(leaves, bases, strict=True)]
    specs = jax.tree.unflatten(treedef, [spec for spec, _ in placed])
    mirrors = jax.tree.unflatten(treedef, [m for _, m in placed])
    return specs, mirrors


def _divides(mesh_sizes, spec, leaf):
    return all(name is None or leaf.shape[i] % mesh_sizes[name] == 0 for i, name in enumerate(spec))


def _assert_placed(when, state, specs, mirrors):
    for (path, leaf), spec, mirror in zip(
        jax.tree.leaves_with_path(state),
        jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)),
        jax.tree.leaves(mirrors),
        strict=True,
    ):
        if mirror:
            got = jax.typeof(leaf).sharding.spec
            assert _spec_tuple(got) == _spec_tuple(spec), (
                f"{when}: state{jax.tree_util.keystr(path)} is sharded as {got}, not {spec}"
            )


_NUM_SHARDED_STEPS = 3


# The placements each row is checked in: (mesh axis type, where a window's spec goes).
# The default suite runs the Explicit mesh, which checks the placement of every state leaf
# as well as the numbers; the Auto placements (numbers only) run in the slow tier.
_SHARDED_VARIANTS = (
    pytest.param((jax.sharding.AxisType.Explicit, "after"), id="explicit"),
    pytest.param((jax.sharding.AxisType.Auto, "after"), id="auto", marks=pytest.mark.slow),
    pytest.param(
        (jax.sharding.AxisType.Auto, "leading"), id="auto_window_leading", marks=pytest.mark.slow
    ),
)


def _unsharded_fsdp_run(case, problem, workers):
    """``(initial_state, (params, state), updates)`` after the unsharded steps.

    Computed once per row and process (``harness.per_row``): the placements share it.
    """

    def build():
        tx, params = case.make(), problem.initial
        initial_state = harness.init_fn(case, tx, params, workers)(params)
        step = harness.step_fn(case, tx, problem.loss, params, workers)
        expected = (params, initial_state)
        for _ in range(_NUM_SHARDED_STEPS):
            *expected, expected_updates = step(*expected)
        return initial_state, expected, expected_updates

    return harness.per_row(case, "unsharded_fsdp_run", build)


@pytest.mark.parametrize("placement", _SHARDED_VARIANTS)
def test_state_sharding_follows_params(case, placement):
    """FSDP as in Flax's example: the update is right for state sharded like the params.

    An 8-device ``(data=2, model=4)`` mesh; params sharded along ``model`` and the
    state placed as ``nnx.Optimizer`` places it (:func:`_flax_like_specs`). Three
    jitted steps must give the unsharded steps' numbers (float32 rounding), on an
    Auto and on an Explicit mesh. On the Explicit mesh, where shardings are types,
    ``init`` and ``update`` must also keep every params-mirroring state leaf sharded
    like its parameter. The update must be right for whatever sharding the state
    arrives in: the ``"leading"`` placement (Auto mesh) shards M-FAC's window along
    its first axis (see :func:`_flax_like_specs`); rows without a window-shaped
    state skip it (the same placement as ``"after"``). The unsharded reference is
    computed once per row and process for its placements.

    Collective rows keep their axis (``data``) as the workers' axis: the harness's
    ``shard_map`` makes it manual and leaves ``model`` to the compiler. Their
    unsharded reference is the same two workers on a 1-D ``data`` mesh, so
    stochastic compressors draw the same keys in both runs; each worker
    differentiates its own copy of the params, as in data-parallel training.
    """
    devices = jax.devices()
    if len(devices) < 8:
        pytest.skip("needs 8 devices (tests/conftest.py sets jax_num_cpu_devices)")
    data_name, data_size = problems.FSDP_MESH_SHAPE[0]
    problem = problems.fsdp()
    tx = case.make()
    params = problem.initial

    if case.axis_name is None:
        workers = None
    else:
        assert case.axis_name == data_name, "collective rows vote over the `data` axis"
        workers = jax.make_mesh((data_size,), (data_name,), devices=devices[:data_size])
    axis_type, window = placement
    shapes = jax.eval_shape(harness.init_fn(case, tx, params, workers), params)
    specs = problems.fsdp_specs()
    state_placement = _flax_like_specs(case, shapes, params, specs, window=window)
    if window == "leading" and state_placement == _flax_like_specs(case, shapes, params, specs):
        pytest.skip(f"{case} has no window-shaped state: the same placement as 'after'")
    initial_state, expected, expected_updates = _unsharded_fsdp_run(case, problem, workers)
    actual, actual_updates = _sharded_run(
        case, tx, problem, initial_state, workers, axis_type, state_placement
    )
    what = f"{case} on a {axis_type} (data, model) mesh, window {window!r}, vs unsharded"
    _assert_trees_close(actual_updates, expected_updates, 1e-5, 1e-6, f"{what}: updates")
    _assert_trees_close(actual, expected, 1e-5, 1e-6, f"{what}: (params, state)")


def _sharded_run(case, tx, problem, initial_state, workers, axis_type, placement):
    """``_NUM_SHARDED_STEPS`` steps on the (data, model) mesh from the placed state.

    Returns ``((params, state), updates)`` of the last step; on an Explicit mesh it
    also checks that ``init`` and every ``update`` keep the placement.
    """
    state_specs, mirrors = placement
    names, sizes = zip(*problems.FSDP_MESH_SHAPE, strict=True)
    mesh = jax.make_mesh(sizes, names, axis_types=(axis_type,) * len(names))

    def put(tree, specs):
        is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)  # noqa: E731
        shardings = jax.tree.map(
            lambda s: jax.sharding.NamedSharding(mesh, s), specs, is_leaf=is_spec
        )
        return jax.device_put(jax.device_get(tree), shardings)

    params = problem.initial
    sharded_params = put(params, problems.fsdp_specs())
    explicit = axis_type == jax.sharding.AxisType.Explicit
    with jax.set_mesh(mesh):
        if explicit:
            fresh = harness.init_fn(case, tx, params, mesh if workers else None)(sharded_params)
            _assert_placed("init", fresh, state_specs, mirrors)
        actual = (sharded_params, put(initial_state, state_specs))
        sharded_step = harness.step_fn(case, tx, problem.loss, params, mesh if workers else None)
        for _ in range(_NUM_SHARDED_STEPS):
            *actual, actual_updates = sharded_step(*actual)
        if explicit:
            _assert_placed("update", actual[1], state_specs, mirrors)
    return actual, actual_updates


# --- validation ---------------------------------------------------------------------


def test_invalid_hyperparameters_raise(case):
    # Every row validates something: a row without `invalid` entries would
    # leave its error messages untested.
    assert case.invalid, f"{case} declares no invalid hyperparameters (Case.invalid)"
    for override, pattern in case.invalid:
        with pytest.raises((ValueError, TypeError), match=pattern):
            case.make(**override)


def _is_real_number(value):
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _numeric_hyperparameters(case):
    """``(name, value, default)`` of each real-number argument of the row's factory.

    Read from ``inspect.signature(case.factory)``: an argument whose value in the
    row (``case.kwargs``, else its default) is a real number. String, boolean and
    dtype arguments (static choices) are not numbers and are not listed.
    """
    parameters = inspect.signature(case.factory).parameters
    stale = set(case.unvalidated_args) - set(parameters)
    assert not stale, f"{case}: unvalidated_args names no argument of the factory: {stale}"
    for name, parameter in parameters.items():
        if name in case.unvalidated_args or name.endswith("_dtype"):
            continue
        value = case.kwargs.get(name, parameter.default)
        if _is_real_number(value):
            yield name, value, parameter.default


def _out_of_range_values(case, name):
    """Real values of ``name`` that the row's ``invalid`` entries say are out of range."""
    for override, _ in case.invalid:
        if set(override) == {name} and _is_real_number(override[name]):
            yield override[name]


def test_hyperparameters_must_be_real_numbers(case):
    """A hyperparameter is a real number; anything else fails at construction.

    For every real-number argument of the factory (found by signature, not listed
    by hand): a string, a boolean, and ``None`` (unless ``None`` is the default)
    are ``TypeError``s; ``inf`` and ``NaN`` ``ValueError``s; for an integer
    argument (an int default), ``2.5`` is a ``TypeError`` and a non-finite float
    may be either; a vector with one out-of-range entry (taken from the row's
    ``invalid``) is a ``ValueError``. Each message names the public function the
    user called (``case.owner_pattern``) and the argument, in backticks.
    """
    failures = []
    checked = 0
    for name, value, default in _numeric_hyperparameters(case):
        integer = isinstance(value, int | np.integer)
        number = (ValueError, TypeError) if integer else ValueError
        bad = [("0.1", TypeError), (True, TypeError), (math.inf, number), (math.nan, number)]
        if default is not None:
            bad.append((None, TypeError))
        if integer:
            bad.append((2.5, TypeError))
        else:
            bad += [
                (np.asarray([value, out], np.float32), ValueError)
                for out in _out_of_range_values(case, name)
            ]
        for wrong, expected in bad:
            checked += 1
            try:
                case.make(**{name: wrong})
            except expected as error:
                message = str(error)
                if not re.search(case.owner_pattern, message) or f"`{name}`" not in message:
                    failures.append(
                        f"{name}={wrong!r}: the message names neither "
                        f"{case.owner_pattern} nor `{name}`: {message}"
                    )
            except Exception as error:  # noqa: BLE001 - reported below
                failures.append(
                    f"{name}={wrong!r}: {type(error).__name__}, not {expected}: {error}"
                )
            else:
                failures.append(f"{name}={wrong!r}: accepted, expected {expected}")
    if not checked:
        pytest.skip(f"{case} has no real-number hyperparameters")
    assert not failures, f"{case}:\n" + "\n".join(failures)


def test_learning_rate_and_weight_decay_may_be_schedules(case):
    """``optax.constant_schedule(x)`` behaves as ``x`` where a schedule is documented."""
    parameters = inspect.signature(case.factory).parameters
    schedules = {}
    for name in ("learning_rate", "weight_decay"):
        value = case.kwargs.get(name, parameters[name].default if name in parameters else None)
        if name in parameters and _is_real_number(value):
            schedules[name] = optax.constant_schedule(value)
    if not schedules:
        pytest.skip(f"{case} takes no learning_rate or weight_decay")
    problem = problems.parabola()
    params = problem.initial
    grads = _grads(problem, params)

    tx = case.make(**schedules)
    step = jax.jit(lambda g, s, p: _update(case, tx, g, s, p, loss=problem.loss)[0])
    expected, _ = harness.parabola_update(case)(grads, case.make().init(params), params)
    actual = step(grads, tx.init(params), params)
    _assert_trees_close(actual, expected, 1e-6, 1e-7, f"{case} with constant schedules")
