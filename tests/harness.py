"""How the battery drives a registry row: one update, a scanned run, tree comparisons.

Collective rows (``case.axis_name`` set) run under ``jax.shard_map`` over that
axis: a one-device mesh for the ordinary checks (:func:`update`, :func:`run`),
and, where a check needs several workers or a second mesh axis, the row's axis
made manual and every other axis left to the compiler (:func:`step_fn`). There
each device differentiates with respect to its own copy of the parameters
(``jax.lax.pcast(..., to="varying")``), as a data-parallel user does, and
per-device state is carried with ``gdtx.per_device_specs``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gdtx
from tests import problems
from tests.registry import ALL_CASES, Case

NUM_STEPS = 10_000
P = jax.sharding.PartitionSpec


def conj(tree):
    """Conjugates the complex leaves of ``tree`` (the others are returned as they are)."""
    return jax.tree.map(lambda x: jnp.conj(x) if jnp.iscomplexobj(x) else x, tree)


def grads(problem, params):
    """The gradient ``update`` expects: ``jax.grad``, conjugated for complex leaves.

    For a real loss of complex ``z``, ``jax.grad`` returns ``conj(dL/dz*)``; optax's
    own alias tests conjugate it so that ``p - lr * g`` descends.
    """
    return conj(jax.grad(problem.loss)(params))


def one_device_mesh(axis_name: str) -> jax.sharding.Mesh:
    return jax.make_mesh((1,), (axis_name,), devices=jax.devices()[:1])


def update(case: Case, tx, grads, state, params, *, loss, **more):
    """``tx.update`` with the row's extra args, under its mesh axis if it needs one.

    ``loss`` is the battery problem's objective (``loss(params) -> scalar``): rows
    whose transformation re-evaluates it (``value_fn``, ``grad_fn``) build their
    extra arguments from it.
    """
    extra = {**case.extra_args(loss, params, grads), **more}
    if case.axis_name is None:
        return tx.update(grads, state, params, **extra)
    fn = jax.shard_map(
        lambda g, s, p: tx.update(g, s, p, **extra),
        mesh=one_device_mesh(case.axis_name),
        in_specs=P(),
        out_specs=P(),
    )
    # Compiled even when called eagerly: shard_map run op by op is slower than
    # compiling it by an order of magnitude.
    return jax.jit(fn)(grads, state, params)


_PER_ROW: dict[tuple[str, str], object] = {}


def per_row(case: Case, what: str, build):
    """``build()``, computed once per registry row and process under the name ``what``.

    A test's own row (tests/test_battery_harness.py's toys, which share a name across
    mutants) is built every time, never cached.
    """
    if not any(case is row for row in ALL_CASES):
        return build()
    key = (case.name, what)
    if key not in _PER_ROW:
        _PER_ROW[key] = build()
    return _PER_ROW[key]


def parabola_update(case: Case):
    """``jax.jit`` of :func:`update` for ``case.make()`` on ``problems.parabola()``.

    ``(grads, state, params) -> (updates, state)``, compiled once per row and process:
    several battery checks compare a variant of the row (injected or scheduled
    hyperparameters, an unknown keyword, a donated step) with this plain update, and
    each compiling its own copy cost the default suite a compile per check and row.
    """

    def build():
        tx, loss = case.make(), problems.parabola().loss
        return jax.jit(lambda g, s, p: update(case, tx, g, s, p, loss=loss))

    return per_row(case, "parabola_update", build)


def run(case: Case, tx, problem, num_steps: int = NUM_STEPS):
    """``num_steps`` jitted steps in one ``lax.scan``; returns the final params."""

    def step(carry, _):
        params, state = carry
        updates, state = update(case, tx, grads(problem, params), state, params, loss=problem.loss)
        return (optax.apply_updates(params, updates), state), None

    @jax.jit
    def run(params):
        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), length=num_steps)
        return params

    return run(problem.initial)


def _per_device(case: Case, params):
    """Each worker's own copy of replicated params (what it differentiates)."""
    return jax.tree.map(lambda p: jax.lax.pcast(p, case.axis_name, to="varying"), params)


def _local_step(case: Case, tx, loss, params, state, *, per_device: bool):
    at = _per_device(case, params) if per_device else params
    g = conj(jax.grad(loss)(at))
    updates, state = tx.update(g, state, params, **case.extra_args(loss, params, g))
    return optax.apply_updates(params, updates), state, updates


def state_specs(case: Case, tx, params):
    """``shard_map`` specs of the row's state: per-device fields along its axis."""
    return gdtx.per_device_specs(jax.eval_shape(tx.init, params), case.axis_name)


def run_in_shard_map(case: Case, tx, problem, mesh, num_steps: int):
    """A collective row as a data-parallel user writes it: one ``shard_map`` holding
    ``init`` and a ``lax.scan`` of ``num_steps`` steps; returns the final params."""

    def body(params):
        def step(carry, _):
            params, state, _ = _local_step(case, tx, problem.loss, *carry, per_device=True)
            return (params, state), None

        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), length=num_steps)
        return params

    fn = jax.shard_map(body, mesh=mesh, in_specs=P(), out_specs=P())
    return jax.jit(fn)(problem.initial)


def init_fn(case: Case, tx, params, mesh=None):
    """A jitted ``tx.init``; collective rows initialise inside ``shard_map`` on ``mesh``."""
    if case.axis_name is None or mesh is None:
        return jax.jit(tx.init)
    fn = jax.shard_map(
        tx.init,
        mesh=mesh,
        in_specs=P(),
        out_specs=state_specs(case, tx, params),
        axis_names={case.axis_name},
    )
    return jax.jit(fn)


def step_fn(case: Case, tx, loss, params, mesh=None):
    """A jitted gradient step ``(params, state) -> (params, state, updates)`` on ``loss``.

    Collective rows run under ``shard_map`` with their axis of ``mesh`` manual and
    the other axes (``model``) automatic; ``params`` only fixes the state's specs.
    """
    if case.axis_name is None or mesh is None:
        return jax.jit(lambda p, s: _local_step(case, tx, loss, p, s, per_device=False))
    specs = state_specs(case, tx, params)
    fn = jax.shard_map(
        lambda p, s: _local_step(case, tx, loss, p, s, per_device=True),
        mesh=mesh,
        in_specs=(P(), specs),
        out_specs=(P(), specs, P()),
        axis_names={case.axis_name},
    )
    return jax.jit(fn)


def assert_trees_close(actual, expected, rtol, atol, what=""):
    def check(path, a, e):
        np.testing.assert_allclose(
            np.asarray(a, np.float64 if not jnp.iscomplexobj(a) else np.complex128),
            np.asarray(e, np.float64 if not jnp.iscomplexobj(e) else np.complex128),
            rtol=rtol,
            atol=atol,
            err_msg=f"{what} at {jax.tree_util.keystr(path)}",
        )

    jax.tree.map_with_path(check, actual, expected)
