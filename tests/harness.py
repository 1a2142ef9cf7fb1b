"""How the battery drives a registry row: one update, a scanned run, tree comparisons."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tests.registry import Case

NUM_STEPS = 10_000


def grads(problem, params):
    return jax.grad(problem.loss)(params)


def update(case: Case, tx, grads, state, params, *, loss, **more):
    """``tx.update`` with the row's extra args, under its mesh axis if it needs one.

    ``loss`` is the battery problem's objective (``loss(params) -> scalar``): rows
    whose transformation re-evaluates it (``value_fn``, ``grad_fn``) build their
    extra arguments from it.
    """
    extra = {**case.extra_args(loss, params, grads), **more}
    if case.axis_name is None:
        return tx.update(grads, state, params, **extra)
    mesh = jax.make_mesh((1,), (case.axis_name,), devices=jax.devices()[:1])
    spec = jax.sharding.PartitionSpec()
    fn = jax.shard_map(
        lambda g, s, p: tx.update(g, s, p, **extra), mesh=mesh, in_specs=spec, out_specs=spec
    )
    # Compiled even when called eagerly: shard_map run op by op is slower than
    # compiling it by an order of magnitude.
    return jax.jit(fn)(grads, state, params)


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
