"""gdtx.local_sgd (periodic averaging / MFL, DiLoCo) on 8 simulated CPU devices.

References are float64 NumPy transcriptions of the updates (MFL's rule, and
maxtext's DiLoCo sync with optax's Nesterov trace, as in
``/work/shared/research/ref_distributed2.py``), fed the same per-device
quadratic gradients ``g_i(w) = A_i w - b_i``. The per-device parameters are
carried by hand under ``jax.shard_map`` (leading axis N, ``P("data")``), and
through ``gdtx.data_parallel_step`` on the tiny digits MLP.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import gdtx
from gdtx._core.hlo import hlo_collectives
from gdtx.distributed import recording_exchanges
from gdtx.local_sgd import (
    LocalPeriodicAverageState,
    PeriodicAverageState,
    average_params,
    diloco,
    periodic_average,
)
from tests import tiny_digits as td

N, D = 8, 5


def _mesh(n=N):
    if jax.default_backend() != "cpu" or len(jax.devices()) < n:
        pytest.skip("needs 8 simulated CPU devices")
    return jax.make_mesh((n,), ("data",), devices=jax.devices()[:n])


def _problem(n=N, seed=0):
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(n, D, D))
    a = np.einsum("nij,nkj->nik", m, m) / D + np.eye(D)
    b = rng.normal(size=(n, D))
    w0 = rng.normal(size=D)
    return a, b, w0


# --- float64 NumPy references -------------------------------------------------------------


def _ref_mfl(a, b, w0, *, eta, gamma, tau, steps):
    """MFL: d_i = gamma d_i + g_i(w_i), w_i -= eta d_i; every tau steps average w and d."""
    n = len(a)
    w = np.broadcast_to(w0, (n, D)).copy()
    d = np.zeros((n, D))
    out = []
    for t in range(1, steps + 1):
        g = np.einsum("nij,nj->ni", a, w) - b
        d = gamma * d + g
        w = w - eta * d
        if t % tau == 0:
            w[:] = w.mean(0)
            d[:] = d.mean(0)
        out.append(w.copy())
    return out


def _ref_diloco(a, b, w0, *, inner_lr, lr, mu, H, steps, nesterov=True):
    """Inner SGD on each replica; every H steps maxtext's outer Nesterov step."""
    n = len(a)
    w = np.broadcast_to(w0, (n, D)).copy()
    outer, trace = w0.copy(), np.zeros(D)
    out = []
    for t in range(1, steps + 1):
        w = w - inner_lr * (np.einsum("nij,nj->ni", a, w) - b)
        if t % H == 0:
            delta = outer - w.mean(0)
            trace = delta + mu * trace
            outer = outer - lr * (delta + mu * trace if nesterov else trace)
            w[:] = outer
        out.append(w.copy())
    return out


def _ref_heavy_ball(a, b, w0, *, eta, gamma, steps):
    w, d, out = w0.copy(), np.zeros(D), []
    for _ in range(steps):
        d = gamma * d + (np.einsum("nij,j->ni", a, w) - b).mean(0)
        w = w - eta * d
        out.append(np.broadcast_to(w, (len(a), D)).copy())
    return out


# --- the hand-written per-device shard_map loop ----------------------------------------------


def _run(tx, a, b, w0, steps):
    n = len(a)
    mesh = _mesh(n)
    w0 = jnp.asarray(w0)
    specs = gdtx.per_device_specs(jax.eval_shape(tx.init, w0), "data")
    state = jax.jit(jax.shard_map(tx.init, mesh=mesh, in_specs=P(), out_specs=specs))(w0)

    def step(w, state, a, b):
        w = w[0]
        grads = a[0] @ w - b[0]
        updates, state = tx.update(grads, state, w)
        return optax.apply_updates(w, updates)[None], state

    fn = jax.jit(
        jax.shard_map(
            step,
            mesh=mesh,
            in_specs=(P("data"), specs, P("data"), P("data")),
            out_specs=(P("data"), specs),
        )
    )
    sharded = NamedSharding(mesh, P("data"))
    w = jax.device_put(jnp.broadcast_to(w0, (n, D)), sharded)
    a, b = jax.device_put(jnp.asarray(a), sharded), jax.device_put(jnp.asarray(b), sharded)
    out = []
    for _ in range(steps):
        w, state = fn(w, state, a, b)
        out.append(np.asarray(w))
    return out, state


def _close(got, want, tol=1e-12):
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


def test_every_one_with_state_averaging_is_synchronous_heavy_ball():
    a, b, w0 = _problem()
    with jax.enable_x64(True):
        tx = periodic_average(optax.sgd(0.1, momentum=0.9), 1, "data")
        got, state = _run(tx, a, b, w0, 30)
    assert type(state) is PeriodicAverageState
    _close(got, _ref_heavy_ball(a, b, w0, eta=0.1, gamma=0.9, steps=30))


@pytest.mark.parametrize("tau", [3, 4])
def test_mfl_matches_the_reference(tau):
    a, b, w0 = _problem()
    with jax.enable_x64(True):
        tx = periodic_average(optax.sgd(0.1, momentum=0.9), tau, "data")
        got, state = _run(tx, a, b, w0, 13)
    assert type(state) is LocalPeriodicAverageState
    _close(got, _ref_mfl(a, b, w0, eta=0.1, gamma=0.9, tau=tau, steps=13))
    # between syncs the devices differ; at a sync they agree
    assert np.ptp(got[tau], axis=0).max() > 1e-6
    assert np.ptp(got[tau - 1], axis=0).max() < 1e-12


def test_weights_only_averaging_is_another_method():
    """MFL averages the momentum too; average_state=False must differ from it."""
    a, b, w0 = _problem()
    with jax.enable_x64(True):
        tx = periodic_average(optax.sgd(0.1, momentum=0.9), 3, "data", average_state=False)
        got, _ = _run(tx, a, b, w0, 7)
    want = _ref_mfl(a, b, w0, eta=0.1, gamma=0.9, tau=3, steps=7)
    assert np.abs(got[-1] - want[-1]).max() > 1e-6


def test_diloco_h1_lr1_no_momentum_is_synchronous_sgd():
    a, b, w0 = _problem()
    with jax.enable_x64(True):
        tx = diloco(
            optax.sgd(0.1), axis_name="data", every=1, outer_learning_rate=1.0, outer_momentum=0.0
        )
        got, _ = _run(tx, a, b, w0, 20)
    _close(got, _ref_heavy_ball(a, b, w0, eta=0.1, gamma=0.0, steps=20))


@pytest.mark.parametrize("H", [2, 5])
def test_diloco_lr1_no_momentum_is_periodic_averaging(H):
    a, b, w0 = _problem()
    with jax.enable_x64(True):
        tx = diloco(
            optax.sgd(0.1), axis_name="data", every=H, outer_learning_rate=1.0, outer_momentum=0.0
        )
        got, _ = _run(tx, a, b, w0, 12)
        plain, _ = _run(periodic_average(optax.sgd(0.1), H, "data"), a, b, w0, 12)
    _close(got, _ref_mfl(a, b, w0, eta=0.1, gamma=0.0, tau=H, steps=12))
    _close(got, plain)


@pytest.mark.parametrize("nesterov", [True, False])
def test_diloco_outer_step_matches_the_reference(nesterov):
    a, b, w0 = _problem()
    with jax.enable_x64(True):
        tx = diloco(
            optax.sgd(0.05),
            axis_name="data",
            every=3,
            outer_learning_rate=0.7,
            outer_momentum=0.9,
            nesterov=nesterov,
        )
        got, state = _run(tx, a, b, w0, 12)
    want = _ref_diloco(a, b, w0, inner_lr=0.05, lr=0.7, mu=0.9, H=3, steps=12, nesterov=nesterov)
    _close(got, want)
    np.testing.assert_allclose(np.asarray(state.anchor), want[-1][0], rtol=1e-12, atol=1e-12)


def test_diloco_keeps_the_inner_state_at_a_sync():
    """Inner momentum is not reset nor averaged at a DiLoCo sync (paper §6.1, maxtext)."""
    a, b, w0 = _problem()
    with jax.enable_x64(True):
        tx = periodic_average(optax.sgd(0.1, momentum=0.5), 2, "data", outer=optax.sgd(1.0))
        _, state = _run(tx, a, b, w0, 2)
    trace = np.asarray(state.inner[0].trace)
    assert trace.shape == (N, D) and np.ptp(trace, axis=0).max() > 1e-6


def test_one_device_is_the_inner_optimizer_alone():
    a, b, w0 = _problem(n=1)
    inner = optax.adam(0.05)
    with jax.enable_x64(True):
        got, _ = _run(
            diloco(inner, axis_name="data", every=3, outer_learning_rate=1.0, outer_momentum=0.0),
            a,
            b,
            w0,
            10,
        )
        got2, _ = _run(periodic_average(inner, 4, "data"), a, b, w0, 10)
        w, s, want = jnp.asarray(w0), inner.init(jnp.asarray(w0)), []
        for _ in range(10):
            u, s = inner.update(jnp.asarray(a[0]) @ w - b[0], s, w)
            w = w + u
            want.append(np.asarray(w)[None])
    _close(got, want)
    _close(got2, want)


@pytest.mark.parametrize("outer", [None, "sgd"])
def test_the_f32_all_reduce_is_only_in_the_conditional_branch(outer):
    mesh = _mesh()
    w0 = jnp.zeros(1000, jnp.float32)
    tx = periodic_average(
        optax.sgd(0.1, momentum=0.9), 4, "data", outer=optax.sgd(0.7) if outer else None
    )
    specs = gdtx.per_device_specs(jax.eval_shape(tx.init, w0), "data")
    state = jax.jit(jax.shard_map(tx.init, mesh=mesh, in_specs=P(), out_specs=specs))(w0)

    def step(w, state, g):
        u, state = tx.update(g[0], state, w[0])
        return (w[0] + u)[None], state

    fn = jax.jit(
        jax.shard_map(
            step,
            mesh=mesh,
            in_specs=(P("data"), specs, P("data")),
            out_specs=(P("data"), specs),
        )
    )
    w = jax.device_put(jnp.zeros((N, 1000), jnp.float32), NamedSharding(mesh, P("data")))
    with recording_exchanges() as log:
        hlo = fn.lower(w, state, w).compile().as_text()
    found = hlo_collectives(hlo)
    n_arrays = 2 if outer is None else 1  # params (+ momentum with average_state)
    # (XLA may combine the two all-reduces into one)
    assert sum(c.operand_bytes for c in found) == 4000 * n_arrays, found
    assert all(c.op == "all-reduce" and c.dtypes == ("f32",) for c in found), found
    assert [e.operand_bytes for e in log] == [4000] * n_arrays
    # every all-reduce sits in a computation called by the conditional, not in the entry
    entry = hlo[hlo.index("ENTRY") :]
    entry = entry[: entry.index("\n}\n")] if "\n}\n" in entry else entry
    assert "all-reduce" not in entry and "conditional(" in entry


def _loss_fn(params, batch):
    x, y = batch
    return td.loss(params, x, y)


def test_data_parallel_step_trains_and_equals_the_hand_written_loop(tiny_digits):
    mesh = _mesh()
    tx = periodic_average(optax.sgd(0.1, momentum=0.9), 4, "data")
    xs, ys = td.batches(tiny_digits, 64, 60)
    init, step, exchanges = gdtx.data_parallel_step(_loss_fn, tx, mesh, donate=False)
    params0 = td.init_params(jax.random.PRNGKey(0))
    params, state = params0, init(params0)
    history, metrics = [], []
    for i in range(60):
        params, state, m = step(params, state, (xs[i], ys[i]))
        history.append(jax.device_get(params))
        metrics.append(m)
    assert all(np.shape(x)[0] == N for x in jax.tree.leaves(params))
    model = average_params(history[-1])
    start = float(td.loss(params0, tiny_digits.x_test, tiny_digits.y_test))
    final = float(td.loss(model, tiny_digits.x_test, tiny_digits.y_test))
    assert final < 0.5 * start, (start, final)
    # bytes: one f32 all-reduce of params and momentum per sync (2410 params each)
    n = 2410
    assert metrics[0]["payload_bytes"] == 2 * 4 * n
    assert metrics[0]["bytes_sent"] == pytest.approx(2 * 2 * (N - 1) / N * 4 * n)
    assert len(exchanges(params, state, (xs[0], ys[0]))) == 2 * len(jax.tree.leaves(params0))

    # the hand-written loop: per-device params, each device its own batch slice
    specs = gdtx.per_device_specs(jax.eval_shape(tx.init, params0), "data")
    ref_state = jax.jit(jax.shard_map(tx.init, mesh=mesh, in_specs=P(), out_specs=specs))(params0)

    def ref_step(p, s, x, y):
        p = jax.tree.map(lambda v: v[0], p)
        u, s = tx.update(jax.grad(td.loss)(p, x, y), s, p)
        return jax.tree.map(lambda v: v[None], optax.apply_updates(p, u)), s

    fn = jax.jit(
        jax.shard_map(
            ref_step,
            mesh=mesh,
            in_specs=(P("data"), specs, P("data"), P("data")),
            out_specs=(P("data"), specs),
        )
    )
    sharded = NamedSharding(mesh, P("data"))
    p = jax.tree.map(lambda v: jnp.broadcast_to(v, (N, *v.shape)), params0)
    p = jax.device_put(p, sharded)
    for i in range(6):
        x, y = jax.device_put(xs[i], sharded), jax.device_put(ys[i], sharded)
        p, ref_state = fn(p, ref_state, x, y)
        for got, want in zip(jax.tree.leaves(history[i]), jax.tree.leaves(p), strict=True):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)
    # after step 4 (a sync) all devices hold the same model
    assert max(float(np.ptp(x, axis=0).max()) for x in jax.tree.leaves(history[3])) < 1e-6
    assert max(float(np.ptp(x, axis=0).max()) for x in jax.tree.leaves(history[4])) > 1e-6


def test_data_parallel_step_with_every_one_keeps_params_replicated(tiny_digits):
    mesh = _mesh()
    tx = periodic_average(optax.sgd(0.1, momentum=0.9), 1, "data")
    init, step, _ = gdtx.data_parallel_step(_loss_fn, tx, mesh, donate=False)
    params0 = td.init_params(jax.random.PRNGKey(0))
    params, state, _ = step(
        params0, init(params0), (tiny_digits.x_train[:64], tiny_digits.y_train[:64])
    )
    assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, params0)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (
            lambda: periodic_average(optax.sgd(0.1), 0, "data"),
            ValueError,
            r"gdtx\.periodic_average: `every` must be an integer >= 1, got 0",
        ),
        (
            lambda: periodic_average(optax.sgd(0.1), 2.0, "data"),
            TypeError,
            r"gdtx\.periodic_average: `every` must be an integer",
        ),
        (
            lambda: periodic_average("sgd", 2, "data"),
            TypeError,
            r"gdtx\.periodic_average: `inner` must be an optax GradientTransformation",
        ),
        (
            lambda: periodic_average(optax.sgd(0.1), 2, "data", outer=0.7),
            TypeError,
            r"gdtx\.periodic_average: `outer` must be an optax GradientTransformation",
        ),
        (
            lambda: periodic_average(optax.sgd(0.1), 2, 3),
            TypeError,
            r"gdtx\.periodic_average: `axis_name` must be",
        ),
        (
            lambda: periodic_average(optax.sgd(0.1), 2, "data", average_state=1),
            TypeError,
            r"gdtx\.periodic_average: `average_state`",
        ),
        (
            lambda: diloco(optax.sgd(0.1), axis_name="data", outer_learning_rate=-1.0),
            ValueError,
            r"gdtx\.diloco: `outer_learning_rate`",
        ),
        (
            lambda: diloco(optax.sgd(0.1), axis_name="data", outer_momentum=1.5),
            ValueError,
            r"gdtx\.diloco: `outer_momentum`",
        ),
        (
            lambda: diloco(optax.sgd(0.1), axis_name="data", every=0),
            ValueError,
            r"gdtx\.diloco: `every`",
        ),
    ],
)
def test_misuse_is_refused_at_construction(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_update_outside_the_axis_and_without_params_is_refused():
    tx = periodic_average(optax.sgd(0.1), 2, "data")
    w = jnp.zeros(3)
    with pytest.raises(ValueError, match=r"gdtx\.periodic_average: the mesh axis 'data'"):
        tx.update(w, tx.init(w), w)
    with pytest.raises(ValueError, match=r"gdtx\.periodic_average: `update` needs `params`"):
        jax.vmap(lambda g: tx.update(g, tx.init(g), None), axis_name="data")(w[None])
