"""gdtx.robust_mean: closed forms, NumPy transcriptions, attacks, and a data-parallel run."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import gdtx
from gdtx.distributed import recording_exchanges
from gdtx.robust import RULES, MonnaState, monna, robust_mean
from tests import byzantine_attacks as ba
from tests import tiny_digits as td

_N = 8


def _aggregate(rule, stack, f, **kwargs):
    """Runs ``robust_mean`` on the rows of ``stack`` (a pytree, leading axis n) under vmap."""
    tx = robust_mean(rule, num_byzantine=f, axis_name="d", **kwargs)
    first = jax.tree.map(lambda x: x[0], stack)
    state = tx.init(first)
    out = jax.vmap(lambda g: tx.update(g, state)[0], axis_name="d")(stack)
    for leaf in jax.tree.leaves(out):  # every device gets the same vector
        np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[:1], leaf.shape))
    return jax.tree.map(lambda x: np.asarray(x[0]), out)


def _stack(rng, n=7, shape=(5,)):
    return rng.normal(size=(n, *shape))


# --- NumPy transcriptions (LPD-EPFL robust-collaborative-learning aggregators/*.py) ---------


def _np_trimmed_mean(x, f):
    s = np.sort(x, axis=0)
    return s[f : len(x) - f].mean(axis=0)


def _np_dist(x):
    flat = x.reshape(len(x), -1)
    return np.sqrt(((flat[:, None] - flat[None]) ** 2).sum(-1))


def _np_krum_index(x, f, squared=True):
    d = _np_dist(x) ** (2 if squared else 1)
    n = len(x)
    scores = [np.sort(np.delete(d[i], i))[: max(n - f - 1, 0)].sum() for i in range(n)]
    return int(np.argmin(scores)), np.asarray(scores)


def _np_nnm(x, f):
    d = _np_dist(x)
    return np.stack(
        [x[np.argsort(d[i], kind="stable")[: len(x) - f]].mean(0) for i in range(len(x))]
    )


def _np_cc(x, v0, tau, iters):
    v = v0.copy()
    for _ in range(iters):
        d = x - v
        norms = np.linalg.norm(d, axis=1)
        scale = np.where(norms > tau, tau / np.where(norms > 0, norms, 1.0), 1.0)
        v = v + (d * scale[:, None]).mean(0)
    return v


# --- closed forms -------------------------------------------------------------------------


@pytest.mark.parametrize("then", ["mean", "median", "trimmed_mean", "krum", "centered_clipping"])
def test_nnm_with_no_byzantine_is_the_mean(then):
    x = _stack(np.random.default_rng(0), n=6).astype(np.float32)
    kwargs = {"tau": 1e6, "iterations": 1} if then == "centered_clipping" else {}
    np.testing.assert_allclose(
        _aggregate("nnm", x, 0, then=then, **kwargs), x.mean(0), rtol=1e-5, atol=1e-6
    )


def test_median_of_an_odd_set_is_np_median():
    x = _stack(np.random.default_rng(1), n=7)
    np.testing.assert_allclose(_aggregate("median", x, 2), np.median(x, axis=0), rtol=1e-6)
    np.testing.assert_allclose(
        _aggregate("median", x, 2), np.sort(x, axis=0)[3], rtol=1e-6
    )  # the middle element


def test_median_of_an_even_set_averages_the_middle_two():
    x = _stack(np.random.default_rng(2), n=6)
    np.testing.assert_allclose(
        _aggregate("median", x, 1), np.sort(x, 0)[2:4].mean(0), rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("f", [0, 1, 3])
def test_trimmed_mean_matches_numpy(f):
    with jax.enable_x64(True):
        x = _stack(np.random.default_rng(3), n=7, shape=(4, 3))
        np.testing.assert_allclose(
            _aggregate("trimmed_mean", x, f), _np_trimmed_mean(x, f), rtol=1e-12
        )


def test_krum_uses_distances_over_all_leaves():
    """A tree of two leaves is one vector: Krum picks the same row for the tree and the concat."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(4)
        a, b = rng.normal(size=(7, 3)), rng.normal(size=(7, 2, 2))
        concat = np.concatenate([a, b.reshape(7, -1)], axis=1)
        for squared in (True, False):
            k, _ = _np_krum_index(concat, 2, squared)
            out = _aggregate("krum", {"a": a, "b": b}, 2, squared=squared)
            np.testing.assert_array_equal(out["a"], a[k])
            np.testing.assert_array_equal(out["b"], b[k])


def test_multi_krum_and_nnm_and_cc_match_numpy():
    with jax.enable_x64(True):
        rng = np.random.default_rng(5)
        x = rng.normal(size=(7, 6))
        _, scores = _np_krum_index(x, 2)
        chosen = np.argsort(scores, kind="stable")[:3]
        np.testing.assert_allclose(
            _aggregate("multi_krum", x, 2, num_selected=3), x[chosen].mean(0), rtol=1e-12
        )
        np.testing.assert_allclose(
            _aggregate("multi_krum", x, 2),
            x[np.argsort(scores, kind="stable")[:5]].mean(0),
            rtol=1e-12,
        )
        mixed = _np_nnm(x, 2)
        np.testing.assert_allclose(
            _aggregate("nnm", x, 2, then="trimmed_mean"), _np_trimmed_mean(mixed, 2), rtol=1e-12
        )
        np.testing.assert_allclose(
            _aggregate("centered_clipping", x, 2, tau=0.5, iterations=3),
            _np_cc(x, np.zeros(6), 0.5, 3),
            rtol=1e-12,
        )


def test_centered_clipping_starts_from_the_last_aggregate():
    x = np.random.default_rng(6).normal(size=(5, 4)).astype(np.float32)
    tx = robust_mean("centered_clipping", num_byzantine=1, axis_name="d", tau=0.3, iterations=1)
    state = tx.init(x[0])
    step = jax.vmap(lambda g, s: tx.update(g, s), axis_name="d", in_axes=(0, None))
    u1, s1 = step(x, state)
    s1 = jax.tree.map(lambda a: a[0], s1)
    np.testing.assert_allclose(s1.prev, u1[0])
    u2, _ = step(x, s1)
    np.testing.assert_allclose(u2[0], _np_cc(x, np.asarray(u1[0]), 0.3, 1), rtol=1e-5)


def test_krum_picks_the_honest_cluster_and_never_a_nan_vector():
    rng = np.random.default_rng(7)
    honest = 1.0 + 0.1 * rng.normal(size=(5, 4))
    byz = 50.0 + 0.01 * rng.normal(size=(2, 4))  # a tight Byzantine pair, far away
    pool = np.concatenate([honest, byz]).astype(np.float32)
    for squared in (True, False):
        out = _aggregate("krum", pool, 2, squared=squared)
        assert any(np.array_equal(out, h) for h in pool[:5]), out
    pool[-1] = np.nan
    assert np.all(np.isfinite(_aggregate("krum", pool, 2)))
    assert np.all(np.isfinite(_aggregate("nnm", pool, 2)))
    assert np.all(np.isfinite(_aggregate("trimmed_mean", pool, 2)))


# --- attacks: 8 devices, f adversaries -----------------------------------------------------


_ATTACKS = {
    "sign_flip": ba.sign_flip,
    "large_noise": functools.partial(ba.large_noise, sigma=100.0),
    "alie": ba.alie,
    "foe": ba.foe,
}
_ROBUST = [
    ("median", {}),
    ("trimmed_mean", {}),
    ("krum", {}),
    ("multi_krum", {}),
    ("centered_clipping", {"tau": 1.0, "iterations": 10}),
    ("nnm", {"then": "trimmed_mean"}),
    ("nnm", {"then": "krum"}),
    ("nnm", {"then": "median"}),
]


@pytest.mark.parametrize("attack", sorted(_ATTACKS))
@pytest.mark.parametrize("f", [1, 2, 3])
def test_rules_stay_near_the_honest_mean_under_attack(attack, f):
    """Honest rows ``mu + 0.3 N(0, 1)`` with ``||mu|| ~ 36``; the plain mean moves by ~||mu||f/n."""
    rng = np.random.default_rng(10 + f)
    d = 20
    mu = 8.0 * rng.normal(size=d)
    honest = mu + 0.3 * rng.normal(size=(_N - f, d))
    pool = np.concatenate([honest, _ATTACKS[attack](honest, rng, f)]).astype(np.float32)
    target = honest.mean(0)
    spread = np.sqrt(((honest - target) ** 2).sum(1)).max()  # an honest vector's distance
    plain = np.linalg.norm(_aggregate("mean", pool, f) - target)
    if attack in ("sign_flip", "large_noise"):  # ALIE and FOE hide: the mean moves less
        assert plain > 3 * spread, plain
    for rule, kwargs in _ROBUST:
        if rule == "centered_clipping":  # from the honest region, as after a few steps
            kwargs = {**kwargs}
        err = np.linalg.norm(_aggregate(rule, pool, f, **kwargs) - target)
        bound = 1.5 * spread
        if rule == "centered_clipping":
            # from v0 = 0 (first step) with tau = 1: 10 iterations move at most 10 tau
            err = np.linalg.norm(
                _cc_from(pool, target + 0.5 * rng.normal(size=d), f, **kwargs) - target
            )
        assert err < bound, (rule, kwargs, err, bound, plain)


def _cc_from(pool, v0, f, tau, iterations):
    tx = robust_mean(
        "centered_clipping", num_byzantine=f, axis_name="d", tau=tau, iterations=iterations
    )
    state = tx.init(pool[0])._replace(prev=jnp.asarray(v0, jnp.float32))
    return np.asarray(jax.vmap(lambda g: tx.update(g, state)[0], axis_name="d")(pool)[0])


# --- validation ---------------------------------------------------------------------------


def test_num_byzantine_of_half_the_devices_is_refused_when_traced():
    tx = robust_mean("nnm", num_byzantine=4, axis_name="d")
    x = jnp.ones((8, 3))
    state = tx.init(x[0])
    with pytest.raises(ValueError, match=r"gdtx\.robust_mean: `num_byzantine` .*n = 8.*got 4"):
        jax.vmap(lambda g: tx.update(g, state)[0], axis_name="d")(x)
    jax.vmap(
        lambda g: robust_mean("nnm", num_byzantine=3, axis_name="d").update(g, state)[0],
        axis_name="d",
    )(x)


def test_bad_construction_arguments():
    with pytest.raises(ValueError, match=r"gdtx\.robust_mean: `rule` must be one of"):
        robust_mean("geomed", num_byzantine=1, axis_name="d")
    with pytest.raises(TypeError, match=r"gdtx\.robust_mean: `num_byzantine` must be an integer"):
        robust_mean("median", num_byzantine=1.0, axis_name="d")
    with pytest.raises(TypeError, match=r"gdtx\.robust_mean: `axis_name`"):
        robust_mean("median", num_byzantine=1, axis_name=None)
    with pytest.raises(ValueError, match=r"gdtx\.robust_mean: `tau` must be a scalar"):
        robust_mean("centered_clipping", num_byzantine=1, axis_name="d", tau=np.ones(2))
    tx = robust_mean("median", num_byzantine=1, axis_name="d")
    with pytest.raises(TypeError, match=r"gdtx\.robust_mean"):
        tx.init({"w": jnp.ones(3, jnp.int32)})
    with pytest.raises(TypeError, match=r"gdtx\.robust_mean"):
        tx.init({"w": jnp.ones(3, jnp.complex64)})
    state = tx.init({"w": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"gdtx\.robust_mean"):
        jax.vmap(lambda g: tx.update(g, state, {"w": jnp.ones(3)}), axis_name="d")(
            {"w": jnp.ones((4, 2))}
        )
    assert set(RULES) >= {"nnm", "median", "trimmed_mean", "krum", "multi_krum"}


# --- under shard_map and data_parallel_step -----------------------------------------------


def test_replicated_under_shard_map_and_declares_the_gather():
    mesh = jax.make_mesh((_N,), ("data",), devices=jax.devices()[:_N])
    tx = robust_mean("nnm", num_byzantine=2, axis_name="data")
    grads = {"w": jnp.arange(_N * 3.0).reshape(_N, 3), "b": jnp.arange(_N * 1.0)}
    state = tx.init({"w": jnp.zeros(3), "b": jnp.zeros([])})

    def local(g):
        return tx.update(jax.tree.map(lambda x: x[0], g), state)[0]

    fn = jax.shard_map(local, mesh=mesh, in_specs=P("data"), out_specs=P())
    grads = jax.device_put(grads, jax.sharding.NamedSharding(mesh, P("data")))
    with recording_exchanges() as log:
        out = fn(grads)
    assert [(e.op, e.operand_bytes, e.num_devices) for e in log] == [
        ("all-gather", 4, _N),
        ("all-gather", 12, _N),
    ]
    x = np.concatenate([np.asarray(grads["b"])[:, None], np.asarray(grads["w"])], axis=1)
    expected = _np_trimmed_mean(_np_nnm(x, 2), 2)
    np.testing.assert_allclose(out["b"], expected[0], rtol=1e-5)
    np.testing.assert_allclose(out["w"], expected[1:], rtol=1e-5)


def _digits_run(data, tx, num_bad, steps=60):
    mesh = jax.make_mesh((_N,), ("data",), devices=jax.devices()[:_N])

    def loss_fn(params, batch):
        x, y, w = batch  # w = -4 on the adversaries' slices: an amplified sign flip
        return jnp.mean(w * td.per_example_loss(params, x, y))

    init, step, _ = gdtx.data_parallel_step(loss_fn, tx, mesh)
    params = td.init_params(jax.random.PRNGKey(0))
    state = init(params)
    xs, ys = td.batches(data, 8 * _N, steps, seed=1)
    w = jnp.where(jnp.arange(8 * _N) >= 8 * (_N - num_bad), -4.0, 1.0)
    metrics = None
    for t in range(steps):
        params, state, metrics = step(params, state, (xs[t], ys[t], w))
    params = jax.device_get(params)  # host copies: evaluate off the mesh
    return float(td.accuracy(params, data.x_test, data.y_test)), metrics


def test_data_parallel_digits_with_two_sign_flippers(tiny_digits):
    sgd = optax.sgd(0.5, momentum=0.9)
    honest, _ = _digits_run(tiny_digits, sgd, 0)
    attacked, _ = _digits_run(tiny_digits, sgd, 2)
    robust, metrics = _digits_run(
        tiny_digits, optax.chain(robust_mean("nnm", num_byzantine=2, axis_name="data"), sgd), 2
    )
    n_params = 64 * 32 + 32 + 32 * 10 + 10
    assert metrics["payload_bytes"] == 4 * n_params
    assert metrics["bytes_sent"] == (_N - 1) * 4 * n_params
    assert honest > 0.8, honest
    assert attacked < honest - 0.3, (attacked, honest)
    assert robust > honest - 0.08, (robust, honest)


# --- the attack fixtures' traced form ------------------------------------------------------


@pytest.mark.parametrize("attack", ["sign_flip", "alie", "foe"])
def test_byzantine_transform_sends_the_numpy_attack(attack):
    """The in-chain fixture replaces the last rows by the NumPy attack on the honest rows."""
    x = np.random.default_rng(8).normal(size=(_N, 5)).astype(np.float32)
    tx = ba.byzantine("d", code=ba.CODES[attack], num_bad=3)
    state = tx.init(x[0])
    out = np.asarray(jax.vmap(lambda g: tx.update(g, state)[0], axis_name="d")(x))
    np.testing.assert_array_equal(out[:5], x[:5])
    expected = ba.ATTACKS[attack](x[:5].astype(np.float64), None, 3)
    np.testing.assert_allclose(out[5:], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attack", ["sign_flip", "alie"])
def test_monna_fixture_forges_the_attack_model(attack):
    """The Byzantine devices' half-step models are the attack of the honest ones: one MoNNA
    round equals the NumPy round with those models as the Byzantine vectors."""
    rng = np.random.default_rng(9)
    f, honest, lr, beta = 2, _N - 2, 0.5, 0.9
    thetas = rng.normal(size=(_N, 4)).astype(np.float32)
    grads = rng.normal(size=(_N, 4)).astype(np.float32)
    tx = ba.monna_under_attack(
        lr, beta, num_byzantine=f, axis_name="d", code=ba.CODES[attack], num_bad=f
    )

    def step(p, g):
        return tx.update(g, tx.init(p), p)[0]

    new = thetas + np.asarray(jax.vmap(step, axis_name="d")(thetas, grads))
    t64, g64 = thetas.astype(np.float64), grads.astype(np.float64)
    x_honest = t64[:honest] - lr * g64[:honest]  # zero momentum: m = g
    byz = ba.ATTACKS[attack](x_honest, None, f)
    expected, _ = _np_monna_step(
        t64[:honest],
        np.zeros((honest, 4)),
        g64[:honest],
        byz,
        lr=lr,
        beta=beta,
        dampening=0.0,
        f=f,
    )
    np.testing.assert_allclose(new[:honest], expected, rtol=1e-5, atol=1e-5)


# --- MoNNA ---------------------------------------------------------------------------------


def _np_monna_step(thetas, moms, grads, byz, *, lr, beta, dampening, f):
    """One MoNNA round for the honest workers (LPD peerToPeer.py; ref_distributed2.monna_step).

    ``m_j = beta m_j + (1 - dampening) g_j``, ``x_j = theta_j - lr m_j``, then
    ``theta_j`` = the mean of the ``len(pool) - f`` vectors of ``pool`` (all honest
    half-step models and the Byzantine ``byz``) nearest ``x_j`` (cva.py, stable sort).
    """
    moms = beta * moms + (1.0 - dampening) * grads
    half = thetas - lr * moms
    pool = np.concatenate([half, byz])
    new = []
    for j in range(len(half)):
        order = np.argsort(np.linalg.norm(pool - half[j], axis=1), kind="stable")
        new.append(pool[order[: len(pool) - f]].mean(0))
    return np.stack(new), moms


def _monna_vmap(tx, thetas, grads, state=None):
    if state is None:
        state = jax.vmap(tx.init, axis_name="d")(thetas)
    u, s = jax.vmap(lambda g, st, p: tx.update(g, st, p), axis_name="d")(grads, state, thetas)
    return np.asarray(thetas + u), s


def test_monna_with_no_byzantine_is_exact_averaging_of_the_half_step_models():
    with jax.enable_x64(True):
        rng = np.random.default_rng(20)
        thetas, grads = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
        tx = monna(0.3, 0.9, num_byzantine=0, axis_name="d")  # dampening = beta
        new, state = _monna_vmap(tx, thetas, grads)
        mom = 0.1 * grads
        np.testing.assert_allclose(new, np.broadcast_to((thetas - 0.3 * mom).mean(0), new.shape))
        np.testing.assert_allclose(np.asarray(state.mu)[:, 0], mom, rtol=1e-12)


def test_monna_with_one_far_byzantine_gives_the_honest_mean():
    with jax.enable_x64(True):
        rng = np.random.default_rng(21)
        thetas, grads = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
        thetas[6] = 1e3  # the Byzantine model, far from every honest one
        tx = monna(0.5, 0.0, num_byzantine=1, axis_name="d", dampening=0.0)
        new, _ = _monna_vmap(tx, thetas, grads)
        honest_half = thetas[:6] - 0.5 * grads[:6]
        np.testing.assert_allclose(new[:6], np.broadcast_to(honest_half.mean(0), (6, 3)))


def _zero_last(honest, sharding):
    def zero(m):  # on the host: slicing an Explicit-sharded array reshards the slice
        m = np.array(m)
        m[honest:] = 0.0
        return jax.device_put(m, sharding)

    return zero


def test_monna_equals_the_reference_under_shard_map():
    """Three steps on 8 devices, 2 Byzantine (they hold fixed models), float64, shared draws."""
    mesh = jax.make_mesh((_N,), ("data",), devices=jax.devices()[:_N])
    f, honest, d = 2, _N - 2, 5
    schedule = lambda t: 0.75 / (t // 2 + 1)  # noqa: E731 - LPD's step-wise decay, faster
    with jax.enable_x64(True):
        rng = np.random.default_rng(22)
        thetas = rng.normal(size=(honest, d))
        moms = np.zeros((honest, d))
        byz = 0.6 * rng.normal(size=(f, d))  # near enough that some are averaged
        tx = monna(schedule, 0.9, num_byzantine=f, axis_name="data", dampening=0.5)
        state = tx.init({"a": jnp.zeros(2), "b": jnp.zeros(3)})  # two leaves, one distance
        # per-device mu: (1, ...) per device inside shard_map, (N, ...) outside
        mu = jax.tree.map(lambda m: jnp.repeat(m, _N, axis=0), state.mu)
        state = state._replace(mu=jax.device_put(mu, jax.sharding.NamedSharding(mesh, P("data"))))

        def local(p, g, s):
            p0, g0 = jax.tree.map(lambda x: x[0], (p, g))
            u, s = tx.update(g0, s, p0)
            return jax.tree.map(lambda x: x[None], u), s

        specs = MonnaState(count=P(), mu=P("data"))
        fn = jax.jit(
            jax.shard_map(
                local,
                mesh=mesh,
                in_specs=(P("data"), P("data"), specs),
                out_specs=(P("data"), specs),
            )
        )
        sharded = jax.sharding.NamedSharding(mesh, P("data"))
        for t in range(3):
            grads = rng.normal(size=(honest, d))
            full_p = np.concatenate([thetas, byz])
            full_g = np.concatenate([grads, np.zeros((f, d))])
            split = lambda x: {"a": jnp.asarray(x[:, :2]), "b": jnp.asarray(x[:, 2:])}  # noqa: E731
            state = state._replace(  # the Byzantine devices' momentum stays 0
                mu=jax.tree.map(_zero_last(honest, sharded), state.mu)
            )
            u, state = fn(*jax.device_put((split(full_p), split(full_g)), sharded), state)
            new = full_p + np.concatenate([np.asarray(u["a"]), np.asarray(u["b"])], axis=1)
            thetas, moms = _np_monna_step(
                thetas, moms, grads, byz, lr=schedule(t), beta=0.9, dampening=0.5, f=f
            )
            np.testing.assert_allclose(new[:honest], thetas, rtol=1e-12, atol=1e-14)
        assert int(state.count) == 3


def test_monna_declares_per_device_params_and_the_gather():
    assert MonnaState.per_device_params is True
    assert MonnaState.per_device_fields == ("mu",)
    tx = monna(0.1, num_byzantine=1, axis_name="d")
    x = jnp.ones((4, 3))
    with recording_exchanges() as log:
        _monna_vmap(tx, x, x)
    assert [(e.op, e.operand_bytes, e.num_devices) for e in log] == [("all-gather", 12, 4)]


def test_monna_trains_through_data_parallel_step_with_per_device_models(tiny_digits):
    """The builder carries MoNNA's per-device models: f = 0 is exact consensus every step,
    f = 2 lets the devices drift apart, and two sign flippers do not stop training."""
    mesh = jax.make_mesh((_N,), ("data",), devices=jax.devices()[:_N])

    def loss_fn(params, batch):
        x, y, w = batch  # w = -4 on the adversaries' slices: an amplified sign flip
        return jnp.mean(w * td.per_example_loss(params, x, y))

    def run(f, num_bad, steps=40):
        tx = monna(0.5, 0.9, num_byzantine=f, axis_name="data", dampening=0.0)
        init, step, _ = gdtx.data_parallel_step(loss_fn, tx, mesh, donate=False)
        params = td.init_params(jax.random.PRNGKey(0))
        state = init(params)
        xs, ys = td.batches(tiny_digits, 8 * _N, steps, seed=1)
        w = jnp.where(jnp.arange(8 * _N) >= 8 * (_N - num_bad), -4.0, 1.0)
        spreads = []
        for t in range(steps):
            params, state, metrics = step(params, state, (xs[t], ys[t], w))
            host = jax.device_get(params)
            spreads.append(max(float(np.ptp(x, axis=0).max()) for x in jax.tree.leaves(host)))
        assert all(np.shape(x)[0] == _N for x in jax.tree.leaves(host))  # one model per device
        honest = jax.tree.map(lambda x: x[0], host)  # device 0 is honest
        return float(td.accuracy(honest, tiny_digits.x_test, tiny_digits.y_test)), spreads, metrics

    consensus, spreads, metrics = run(0, 0)
    assert max(spreads) < 1e-5, max(spreads)  # f = 0: every device holds the mean model
    n_params = 64 * 32 + 32 + 32 * 10 + 10
    assert metrics["payload_bytes"] == 4 * n_params  # the half-step model, all-gathered
    assert metrics["bytes_sent"] == (_N - 1) * 4 * n_params
    robust, spreads, _ = run(2, 2)
    assert max(spreads) > 1e-3  # with f > 0 each device averages its own neighbours
    assert consensus > 0.8, consensus
    assert robust > consensus - 0.1, (robust, consensus)


def test_monna_misuse():
    with pytest.raises(ValueError, match=r"gdtx\.monna: `beta` must be in \[0, 1\)"):
        monna(0.1, 1.0, num_byzantine=0, axis_name="d")
    with pytest.raises(ValueError, match=r"gdtx\.monna: `learning_rate` must be > 0"):
        monna(-0.1, num_byzantine=0, axis_name="d")
    with pytest.raises(ValueError, match=r"gdtx\.monna: `rule` must be one of"):
        monna(0.1, num_byzantine=0, axis_name="d", rule="cva")
    with pytest.raises(TypeError, match=r"gdtx\.monna: `num_byzantine` must be an integer"):
        monna(0.1, num_byzantine=0.5, axis_name="d")
    tx = monna(0.1, num_byzantine=2, axis_name="d")
    x = jnp.ones((4, 3))
    with pytest.raises(ValueError, match=r"gdtx\.monna: `num_byzantine` must be < n/2.*n = 4"):
        _monna_vmap(tx, x, x)
    state = jax.vmap(tx.init, axis_name="d")(x)
    with pytest.raises(ValueError, match=r"gdtx\.monna: `update` needs `params`"):
        jax.vmap(lambda g, s: tx.update(g, s), axis_name="d")(x, state)
