"""The battery's own machinery, checked on toy transformations.

These make sure the harness does what the battery relies on: a row that needs
a named mesh axis really runs under one, and a row's extra arguments reach
``update``; and that each battery check can fail, on a toy transformation
broken in the way the check is about.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
import pytest

from gdtx._core import extra_args, trees, validation
from tests import harness
from tests import test_battery as battery
from tests.registry import ALL_CASES, Case
from tests.registry.case import PLUMBING_CHECKS

P = jax.sharding.PartitionSpec


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


def test_slow_tier_checks_name_battery_checks():
    checks = {name for name in dir(battery) if name.startswith("test_")}
    assert set(PLUMBING_CHECKS) <= checks
    for case in ALL_CASES:
        unknown = set(case.slow_tier_checks) - checks
        assert not unknown, f"{case}: slow_tier_checks names no battery check: {unknown}"


def test_rows_with_the_same_plumbing_have_the_same_factory():
    rows = {case.name: case for case in ALL_CASES}
    checked = 0
    for case in ALL_CASES:
        for reason in set(case.slow_tier_checks.values()):
            if reason.startswith("same factory as "):
                other = rows[reason.removeprefix("same factory as ").split(",")[0]]
                assert other.factory is case.factory, f"{case} vs {other}"
                assert not other.slow_tier_checks, f"{other} must run the checks by default"
                checked += 1
    assert checked, "no row uses registry.case.same_plumbing_as: this test checks nothing"


# --- each battery check can fail: deliberately broken toy transformations ---------------
#
# ``_toy_rms`` is a correct small RMSProp (validated, complex in optax's sense, shapes
# checked, empty trees fine); each mutant breaks one property, and the battery check
# for that property must catch it.

_OWNER = "gdtx.toy"


class _ToyState(NamedTuple):
    count: jax.Array
    nu: optax.Updates


def _toy_rms(
    learning_rate=0.1,
    decay=0.9,
    *,
    abs_sq=True,
    refuse_complex=False,
    refuse_integers=True,
    check_shapes=True,
    validate=True,
    empty_ok=True,
    replicate_state=False,
    sharding_dependent=False,
    nu_dtype=None,
    ignore_nu_dtype=False,
    nu_in_float32=False,
    updates_in_float32=False,
):
    if validate:
        validation.check_non_negative(_OWNER, "learning_rate", learning_rate, schedule=True)
        validation.check_decay(_OWNER, "decay", decay)
    else:  # the mutant parses what it is given: "0.1" and True pass
        learning_rate, decay = float(learning_rate), float(decay)

    def zeros(p):
        # The mutant keeps nu in the param's dtype, as g * g needs for complex g.
        z = jnp.zeros_like(p, jnp.real(jnp.zeros((), p.dtype)).dtype if abs_sq else p.dtype)
        if nu_dtype is not None and not ignore_nu_dtype:
            z = z.astype(nu_dtype)
        mesh = jax.typeof(z).sharding.mesh
        return jax.sharding.reshard(z, P()) if replicate_state and not mesh.empty else z

    def init(params):
        if refuse_integers or refuse_complex:
            for path, leaf in jax.tree.leaves_with_path(params):
                where = jax.tree_util.keystr(path)
                if refuse_complex and jnp.iscomplexobj(leaf):
                    raise TypeError(f"{_OWNER} does not support complex parameters: {where}")
                if refuse_integers and jnp.issubdtype(leaf.dtype, jnp.integer):
                    raise TypeError(f"{_OWNER} updates floating-point parameters: {where}")
        return _ToyState(jnp.zeros([], jnp.int32), jax.tree.map(zeros, params))

    def update(updates, state, params=None, **extra):
        del extra
        if check_shapes:
            validation.check_like_state(_OWNER, updates, state.nu)
        if not empty_ok:  # the old unzip: transposing an empty tree of tuples fails
            jax.tree.transpose(
                jax.tree.structure(updates), jax.tree.structure((0, 0)), jax.tree.leaves(updates)
            )
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate

        def leaf(g, state_nu):
            nu = state_nu
            sq = (g * jnp.conj(g)).real if abs_sq else g * g
            nu = decay * nu + (1 - decay) * sq
            step = -lr * g / (jnp.sqrt(nu) + 1e-8)
            if sharding_dependent and any(jax.typeof(g).sharding.spec):
                step = 2 * step
            # The dtype mutants return float32 (complex64) where the row must keep the
            # gradient's or the state's own dtype.
            single = jnp.complex64 if jnp.iscomplexobj(g) else jnp.float32
            step = step.astype(single if updates_in_float32 else g.dtype)
            return step, nu.astype(jnp.float32 if nu_in_float32 else state_nu.dtype)

        new_updates, nu = trees.unzip(jax.tree.map(leaf, updates, state.nu), updates, 2)
        return new_updates, _ToyState(optax.safe_increment(state.count), nu)

    return optax.GradientTransformationExtraArgs(init, update)


def _toy_case(supports_complex=True, **mutation):
    def factory(learning_rate=0.1, decay=0.9, nu_dtype=None):
        return _toy_rms(learning_rate, decay, nu_dtype=nu_dtype, **mutation)

    return Case(
        name="toy_rms",
        factory=factory,
        kwargs={"learning_rate": 0.01},
        static_args=("nu_dtype",),
        dtype_knobs={"nu_dtype": ("nu",)},
        supports_complex=supports_complex,
        owner=_OWNER,
        invalid=(({"decay": 1.5}, r"gdtx\.toy: `decay` must be in \[0, 1\)"),),
    )


_CAUGHT = (AssertionError, pytest.fail.Exception)
# The FSDP check's placements: (axis type, window), Explicit first.
_PLACEMENTS = [param.values[0] for param in battery._SHARDED_VARIANTS]


def test_the_correct_toy_passes_the_new_checks():
    case = _toy_case()
    battery.test_complex_parabola_converges(case)
    battery.test_integer_params_are_refused_at_init(case)
    battery.test_a_gradient_of_the_wrong_shape_raises(case)
    battery.test_hyperparameters_must_be_real_numbers(case)
    battery.test_learning_rate_and_weight_decay_may_be_schedules(case)
    battery.test_invalid_hyperparameters_raise(case)
    battery.test_empty_tree(case)
    battery.test_masked_with_an_all_false_mask_passes_updates_through(case)
    battery.test_multi_transform_with_an_unused_label(case)
    battery.test_complex_params_are_refused_at_init(
        _toy_case(supports_complex=False, refuse_complex=True)
    )
    for placement in _PLACEMENTS[:2]:  # the toy has no window: "leading" is "after"
        battery.test_state_sharding_follows_params(case, placement)
    battery.test_counts_are_int32_scalars(case)
    for dtype in (jnp.bfloat16, jnp.float32):
        battery.test_updates_keep_the_gradient_dtype(case, dtype)
        battery.test_state_is_stable_under_lax_cond(case, dtype)
        for knob_dtype in (jnp.bfloat16, jnp.float32):
            battery.test_dtype_knobs_set_the_state_dtype(case, dtype, knob_dtype)
    for dtype in ("complex64", "complex128"):
        battery.test_complex_dtypes_are_stable(case, dtype)


# The dtype checks read traced types (jax.eval_shape), not compiled results: each must
# still catch a row that changes a dtype.


def test_ignoring_a_dtype_knob_is_caught():
    with pytest.raises(_CAUGHT, match="nu_dtype"):
        battery.test_dtype_knobs_set_the_state_dtype(
            _toy_case(ignore_nu_dtype=True), jnp.float32, jnp.bfloat16
        )


def test_float32_updates_for_bfloat16_gradients_are_caught():
    with pytest.raises(_CAUGHT):
        battery.test_updates_keep_the_gradient_dtype(
            _toy_case(updates_in_float32=True), jnp.bfloat16
        )


def test_a_state_dtype_that_drifts_is_caught_under_lax_cond():
    with pytest.raises(TypeError, match="cond branches must have equal output types"):
        battery.test_state_is_stable_under_lax_cond(_toy_case(nu_in_float32=True), jnp.bfloat16)


@pytest.mark.parametrize("mutation", ["nu_in_float32", "updates_in_float32"])
def test_complex128_leaves_rounded_to_single_precision_are_caught(mutation):
    with pytest.raises(_CAUGHT):
        battery.test_complex_dtypes_are_stable(_toy_case(**{mutation: True}), "complex128")


def test_squaring_a_complex_gradient_is_caught():
    with pytest.raises(_CAUGHT):
        battery.test_complex_parabola_converges(_toy_case(abs_sq=False))


def test_silently_accepting_complex_params_is_caught():
    with pytest.raises(_CAUGHT):
        battery.test_complex_params_are_refused_at_init(_toy_case(supports_complex=False))


def test_accepting_integer_params_is_caught():
    with pytest.raises(_CAUGHT):
        battery.test_integer_params_are_refused_at_init(_toy_case(refuse_integers=False))


def test_broadcasting_a_one_element_gradient_is_caught():
    with pytest.raises(_CAUGHT):
        battery.test_a_gradient_of_the_wrong_shape_raises(_toy_case(check_shapes=False))


def test_accepting_a_string_hyperparameter_is_caught():
    with pytest.raises(_CAUGHT, match=r"learning_rate='0\.1': accepted"):
        battery.test_hyperparameters_must_be_real_numbers(_toy_case(validate=False))


def test_a_type_error_satisfies_an_invalid_entry():
    case = dataclasses.replace(
        _toy_case(), invalid=(({"decay": "x"}, r"gdtx\.toy: `decay` must be a real number"),)
    )
    battery.test_invalid_hyperparameters_raise(case)


@pytest.mark.parametrize(
    "check",
    [
        battery.test_empty_tree,
        battery.test_masked_with_an_all_false_mask_passes_updates_through,
        battery.test_multi_transform_with_an_unused_label,
    ],
    ids=lambda f: f.__name__,
)
def test_crashing_on_an_empty_tree_is_caught(check):
    with pytest.raises(ValueError, match="leaves|PyTreeDef|tree"):
        check(_toy_case(empty_ok=False))


def test_replicating_the_state_on_a_sharded_mesh_is_caught():
    explicit = _PLACEMENTS[0]
    with pytest.raises(_CAUGHT, match="sharded as"):
        battery.test_state_sharding_follows_params(_toy_case(replicate_state=True), explicit)


def test_an_update_that_depends_on_the_sharding_is_caught():
    # The mutant reads the sharding from the type, which only an Explicit mesh sets.
    explicit = _PLACEMENTS[0]
    with pytest.raises(_CAUGHT, match="vs unsharded"):
        battery.test_state_sharding_follows_params(_toy_case(sharding_dependent=True), explicit)


# Collective toys: a mean over the axis, with per-device state typed right or wrong.


def _bound(axis_name):
    try:
        jax.lax.axis_size(axis_name)
    except NameError:
        return False
    return True


def _toy_mean(axis_name, *, cast_state=True, name_the_axis=True):
    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        if cast_state and _bound(axis_name):  # per-device state is varying in shard_map
            zeros = jax.tree.map(lambda z: jax.lax.pcast(z, axis_name, to="varying"), zeros)
        return _ToyState(jnp.zeros([], jnp.int32), zeros)

    def update(updates, state, params=None, **extra):
        del params, extra
        if name_the_axis and not _bound(axis_name):
            raise ValueError(f"{_OWNER}: call update inside jax.shard_map over {axis_name!r}")
        mean = jax.tree.map(lambda g: jax.lax.pmean(g, axis_name), updates)
        return optax.tree.scale(-0.1, mean), _ToyState(optax.safe_increment(state.count), updates)

    return optax.GradientTransformationExtraArgs(init, update)


def _collective_case(**mutation):
    return Case(
        name="toy_mean",
        factory=lambda: _toy_mean("data", **mutation),
        kwargs={},
        axis_name="data",
        owner=_OWNER,
    )


def test_the_correct_collective_toy_passes():
    case = _collective_case()
    battery.test_collective_state_initialised_inside_shard_map_can_be_scanned(case)
    battery.test_collective_outside_its_axis_names_the_owner_and_the_axis(case)


def test_state_that_changes_type_in_scan_is_caught():
    with pytest.raises(TypeError, match="carry"):
        battery.test_collective_state_initialised_inside_shard_map_can_be_scanned(
            _collective_case(cast_state=False)
        )


def test_a_raw_unbound_axis_error_is_caught():
    with pytest.raises(_CAUGHT, match="raw NameError"):
        battery.test_collective_outside_its_axis_names_the_owner_and_the_axis(
            _collective_case(name_the_axis=False)
        )
