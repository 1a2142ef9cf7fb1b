"""gdtx.zeroth_order.shared_seed_spsa ("Just One Byte"), on vmap and 8 CPU devices.

- The keys follow the documented rule, rebuilt here independently: with one device
  and one sample the update is ``p z`` with ``p = z . grad L`` exactly on a quadratic,
  for every ``eps`` (real and complex leaves).
- Several steps on 4 devices equal a float64 NumPy transcription of the
  justonebyte update (MeZO scaling) for every wire; the other scalings fail.
- The estimator's mean is the gradient (z-test on a quadratic); on a cubic its bias
  is ``eps^2`` per coordinate, which the same z-test detects at ``eps = 0.5``.
- Every device ends with bitwise-identical parameters.
- The bytes per step in the compiled HLO are ``K`` scalars per device, the same for
  a 10-parameter and a 2^18-parameter model, and the directions are regenerated in
  a loop (no ``N K`` copies of the model in memory).
- The codes: log8 and the official log code equal their NumPy transcriptions; the
  stochastic byte is unbiased (z-test), the nearest-rounding byte is not below its
  range, and the gain E[Q(p) z] / g measured through the transformation is the one
  ``spsa_quantizer_gain`` computes.
- It trains a least-squares model through gdtx.data_parallel_step; no backward pass.
- Misuse raises gdtx errors naming the function.
"""

from __future__ import annotations

import math

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
from gdtx.zeroth_order import WIRES, shared_seed_spsa, spsa_quantizer_gain, spsa_wire_bytes
from gdtx.zeroth_order import _decode as decode
from gdtx.zeroth_order import _encode as encode

Z_MAX = 5.0


def _mesh(n=8):
    if len(jax.devices()) < n:
        pytest.skip(f"needs {n} devices (tests/conftest.py sets jax_num_cpu_devices)")
    return jax.make_mesh((n,), ("data",), devices=jax.devices()[:n])


# --- float64 NumPy transcriptions (/work/shared/research/ref_distributed2.py, from
# ezelikman/justonebyte @ 19ba089 app.py / app_jax.py) ------------------------------------


def np_projected_grads(loss, theta, Z, eps):
    return np.array([(loss(theta + eps * z) - loss(theta - eps * z)) / (2 * eps) for z in Z])


def np_spsa_update(theta, P_, Z, lr, eps, convention="mezo"):
    """``theta - lr c sum p z``: c = 1/M (MeZO), eps/M (app_jax.py), 1/sqrt(M) (app.py)."""
    m = P_.size
    c = {"mezo": 1.0 / m, "jax": eps / m, "torch": 1.0 / math.sqrt(m)}[convention]
    return theta - lr * c * np.einsum("nk,nkd->d", P_, Z)


def np_official_one_byte(p):
    with np.errstate(divide="ignore"):
        power = np.clip(np.round(np.log(np.abs(p)) * 16), -127, 127)
    return np.exp(power / 16) * np.sign(p)


def np_log8_encode(p):
    with np.errstate(divide="ignore"):
        c = np.clip(np.round(8 * np.log(np.abs(p))), -63, 63)
    return np.where(p == 0, 0, np.sign(p) * (c + 64)).astype(np.int8)


def np_log8_decode(q):
    q = np.asarray(q, np.float64)
    return np.where(q == 0, 0.0, np.sign(q) * np.exp((np.abs(q) - 64) / 8))


NP_WIRE = {
    "f32": lambda p: p.astype(np.float32).astype(np.float64),
    "bf16": lambda p: np.asarray(jnp.asarray(p, jnp.bfloat16), np.float64),
    "log_official": np_official_one_byte,
    "log8": lambda p: np_log8_decode(np_log8_encode(p)),
}


def documented_direction(seed, t, device, sample, shapes, dtype=jnp.float64):
    """z_{t,device,sample}: leaf l ~ normal(fold_in(fold_in(fold_in(fold_in(key, t), i), k), l))."""
    key = jax.random.PRNGKey(seed)
    for index in (t, device, sample):
        key = jax.random.fold_in(key, index)
    return [
        np.asarray(jax.random.normal(jax.random.fold_in(key, leaf), shape, dtype), np.float64)
        for leaf, shape in enumerate(shapes)
    ]


# --- the keys and the estimator, exactly -------------------------------------------------------


@pytest.mark.parametrize("eps", [1e-1, 1.0, 10.0])
def test_one_sample_is_p_z_with_p_the_directional_derivative(eps):
    """Quadratic: ``p = z . grad L`` for every eps, with z rebuilt from the documented keys."""
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        a = rng.normal(size=(5, 5))
        A = a @ a.T + np.eye(5)
        b = rng.normal(size=5)
        params = {"m": jnp.asarray(rng.normal(size=(2, 2))), "v": jnp.asarray(rng.normal(size=1))}

        def loss(p):
            x = jnp.concatenate([p["m"].reshape(-1), p["v"]])
            return 0.5 * x @ A @ x + b @ x

        tx = shared_seed_spsa(eps, axis_name="d", seed=7)
        state = tx.init(params)._replace(count=jnp.asarray(3, jnp.int32))  # step t = 3
        u, new_state = jax.vmap(
            lambda _: tx.update(params, state, params, value_fn=loss), axis_name="d"
        )(jnp.zeros(1))
        z = documented_direction(7, 3, 0, 0, [(2, 2), (1,)])
        x = np.concatenate([np.asarray(params["m"]).reshape(-1), np.asarray(params["v"])])
        grad = A @ x + b
        zf = np.concatenate([z[0].reshape(-1), z[1]])
        p = float(np.float32(zf @ grad))  # the default wire sends float32
        np.testing.assert_allclose(np.asarray(u["m"][0]), p * z[0], rtol=1e-9)
        np.testing.assert_allclose(np.asarray(u["v"][0]), p * z[1], rtol=1e-9)
        assert int(new_state.count[0]) == 4


def test_complex_leaves_estimate_optax_complex_gradient():
    """z = a + ib: ``p = Re(conj(G) . z)`` with G = conj(jax.grad) (optax's complex gradient)."""
    with jax.enable_x64(True):
        c = jnp.asarray([1.0 - 2.0j, 0.5 + 1.0j, -1.0j])
        w = jnp.asarray([2.0, 1.0, 3.0])
        theta = jnp.asarray([0.3 + 0.1j, -1.0 + 0.0j, 0.2 - 0.7j])

        def loss(p):
            return jnp.sum(w * jnp.abs(p - c) ** 2)

        tx = shared_seed_spsa(0.5, axis_name="d", seed=3)
        u, _ = jax.vmap(
            lambda _: tx.update(theta, tx.init(theta), theta, value_fn=loss), axis_name="d"
        )(jnp.zeros(1))
        key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(3), 0), 0)
        ab = jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, 0), 0), (2, 3))
        z = np.asarray(ab[0]) + 1j * np.asarray(ab[1])
        G = np.conj(np.asarray(jax.grad(loss)(theta)))
        p = float(np.float32(np.real(np.conj(G) @ z)))  # float32 on the wire
        np.testing.assert_allclose(np.asarray(u[0]), p * z, rtol=1e-9)


# --- equality with the float64 reference ------------------------------------------------------


def _logistic(p, x, y):
    logits = x @ p["w"] + p["b"]
    return jnp.mean(jnp.logaddexp(0.0, logits) - y * logits)


def _np_logistic(theta, x, y):
    w, b = theta[:3], theta[3]
    logits = x @ w + b
    return np.mean(np.logaddexp(0.0, logits) - y * logits)


@pytest.mark.parametrize(
    "wire",
    [
        "f32",
        "log8",
        pytest.param("bf16", marks=pytest.mark.slow),
        pytest.param("log_official", marks=pytest.mark.slow),
    ],
)
def test_steps_equal_the_float64_reference_under_shard_map(wire):
    """4 devices, K = 3, three steps of SGD on a logistic loss, per-device data, float64."""
    n, k, lr, eps, seed = 4, 3, 0.5, 1e-2, 11
    mesh = _mesh(n)
    rng = np.random.default_rng(2)
    with jax.enable_x64(True):
        x = rng.normal(size=(n, 6, 3))
        y = (rng.uniform(size=(n, 6)) < 0.5).astype(np.float64)
        theta = rng.normal(size=4)
        tx = optax.chain(
            shared_seed_spsa(eps, k, axis_name="data", seed=seed, wire=wire), optax.sgd(lr)
        )

        def step(params, state, xb, yb):
            value_fn = lambda p: _logistic(p, xb[0], yb[0])  # noqa: E731
            u, state = tx.update(params, state, params, value_fn=value_fn)
            return optax.apply_updates(params, u), state

        fn = jax.jit(
            jax.shard_map(
                step, mesh=mesh, in_specs=(P(), P(), P("data"), P("data")), out_specs=(P(), P())
            )
        )
        params = {"w": jnp.asarray(theta[:3]), "b": jnp.asarray(theta[3])}
        state = tx.init(params)
        sharded = NamedSharding(mesh, P("data"))
        xs, ys = jax.device_put((jnp.asarray(x), jnp.asarray(y)), sharded)

        def directions(t, order):
            rows = []
            for i in range(n):
                row = []
                for s in range(k):
                    # leaves in tree order: "b" (leaf 0) before "w" (leaf 1)
                    zb, zw = documented_direction(seed, t, *order(i, s), [(), (3,)])
                    row.append(np.concatenate([zw, zb[None]]))  # theta = (w, b)
                rows.append(row)
            return np.array(rows)  # (N, K, 4)

        def reference(theta, Z):
            Pm = np.array(
                [
                    np_projected_grads(lambda q, i=i: _np_logistic(q, x[i], y[i]), theta, Z[i], eps)
                    for i in range(n)
                ]
            )
            return NP_WIRE[wire](Pm)

        for t in range(3):
            params, state = fn(params, state, xs, ys)
            Z = directions(t, lambda i, s: (i, s))
            Phat = reference(theta, Z)
            new = np_spsa_update(theta, Phat, Z, lr, eps)
            got = np.concatenate([np.asarray(params["w"]), np.asarray(params["b"])[None]])
            np.testing.assert_allclose(got, new, rtol=1e-10, atol=1e-12, err_msg=f"step {t}")
            # the tolerance catches the official scripts' scalings and a swapped key order
            for convention in ("jax", "torch"):
                wrong = np_spsa_update(theta, Phat, Z, lr, eps, convention)
                assert not np.allclose(got, wrong, rtol=1e-10, atol=1e-12), convention
            if t == 0:
                Zs = directions(t, lambda i, s: (s, i))
                swapped = np_spsa_update(theta, reference(theta, Zs), Zs, lr, eps)
                assert not np.allclose(got, swapped, rtol=1e-10, atol=1e-12)
            theta = new
        assert int(state[0].count) == 3


# --- unbiasedness: the z-test ---------------------------------------------------------------


def _mean_update(loss_of, targets, theta, eps, num_samples, steps, wire="f32"):
    """Updates of ``steps`` consecutive steps at fixed ``theta`` on N = len(targets) devices."""
    tx = shared_seed_spsa(eps, num_samples, axis_name="d", wire=wire)

    def one(state, _):
        def device(target):
            return tx.update(theta, state, theta, value_fn=lambda p: loss_of(p, target))

        u, new = jax.vmap(device, axis_name="d")(targets)
        return jax.tree.map(lambda s: s[0], new), u[0]

    _, us = jax.jit(lambda s: jax.lax.scan(one, s, length=steps))(tx.init(theta))
    return np.asarray(us, np.float64)  # (steps, d)


def _z_scores(samples, expected):
    """Per coordinate; a constant sample scores 0 if it is the expectation, else inf."""
    mean = samples.mean(0)
    se = samples.std(0, ddof=1) / math.sqrt(samples.shape[0])
    gap = mean - expected
    safe = np.where(se > 0, se, 1.0)
    return np.where(se > 0, gap / safe, np.where(np.isclose(gap, 0, atol=0), 0.0, np.inf))


def test_quadratic_mean_is_the_gradient_z_test():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(4, 4))
    A = jnp.asarray(a @ a.T / 4 + np.eye(4), jnp.float32)
    targets = jnp.asarray(rng.normal(size=(4, 4)), jnp.float32)
    theta = jnp.asarray(rng.normal(size=4), jnp.float32)

    def loss_of(p, target):
        r = p - target
        return 0.5 * r @ A @ r

    us = _mean_update(loss_of, targets, theta, 1e-3, 8, 1000)
    grad = np.mean([np.asarray(A) @ (np.asarray(theta) - np.asarray(t)) for t in targets], 0)
    z = _z_scores(us, grad)
    assert np.all(np.abs(z) < Z_MAX), z
    # the test has power: a 20% error in the scaling is rejected
    assert np.any(np.abs(_z_scores(us, 1.2 * grad)) > Z_MAX)


def test_cubic_bias_is_eps_squared_and_the_z_test_sees_it():
    """L = sum(x^3)/3 + b.x: E[p z] = x^2 + b + eps^2 (E[z^4] = 3), so the bias -> 0 as eps -> 0."""
    b = jnp.asarray([0.5, -1.0, 0.25], jnp.float32)
    theta = jnp.asarray([0.8, -0.4, 1.2], jnp.float32)
    targets = jnp.zeros((2, 3), jnp.float32)

    def loss_of(p, target):
        return jnp.sum((p - target) ** 3) / 3 + b @ p

    grad = np.asarray(theta) ** 2 + np.asarray(b)
    big = _mean_update(loss_of, targets, theta, 0.5, 16, 1000)
    assert np.all(np.abs(_z_scores(big, grad + 0.25)) < Z_MAX)
    assert np.any(np.abs(_z_scores(big, grad)) > Z_MAX)  # a biased estimate is caught
    small = _mean_update(loss_of, targets, theta, 1e-2, 16, 1000)
    assert np.all(np.abs(_z_scores(small, grad)) < Z_MAX)


# --- replication ------------------------------------------------------------------------------


@pytest.mark.parametrize("wire", ["f32", "log8_stochastic"])
def test_every_device_ends_with_identical_params(wire):
    mesh = _mesh(8)
    rng = np.random.default_rng(4)
    data = jnp.asarray(rng.normal(size=(8, 16, 5)), jnp.float32)
    tx = optax.chain(shared_seed_spsa(1e-2, 2, axis_name="data", wire=wire), optax.sgd(0.1))
    params = {"w": jnp.zeros((5, 2)), "b": jnp.zeros(2)}

    def run(params, x):
        state = tx.init(params)

        def step(carry, _):
            params, state = carry

            def value_fn(p):
                return jnp.mean(
                    jnp.sum(jnp.tanh(x[0] @ p["w"] + p["b"][None]) ** 2, 1) - x[0][:, :2] @ p["b"]
                )

            u, state = tx.update(params, state, params, value_fn=value_fn)
            return (optax.apply_updates(params, u), state), None

        (params, _), _ = jax.lax.scan(step, (params, state), length=5)
        return jax.tree.map(lambda p: p[None], params)  # each device's own copy

    fn = jax.jit(jax.shard_map(run, mesh=mesh, in_specs=(P(), P("data")), out_specs=P("data")))
    out = fn(params, jax.device_put(data, NamedSharding(mesh, P("data"))))
    for leaf in jax.tree.leaves(out):
        leaf = np.asarray(leaf)
        assert np.any(leaf != 0)
        for i in range(1, 8):
            np.testing.assert_array_equal(leaf[i], leaf[0])


def test_a_tuple_of_axes_is_the_flat_axis():
    """(a, b) = (2, 2) under shard_map: row-major indices, the same update as 4 on one axis."""
    _mesh(4)
    targets = jnp.asarray(np.random.default_rng(8).normal(size=(4, 3)), jnp.float32)
    theta = jnp.zeros(3)

    def run(mesh, axis, spec):
        tx = shared_seed_spsa(1e-2, 2, axis_name=axis)

        def device(t):
            weights = jnp.arange(1.0, 4.0)
            loss = lambda p: jnp.sum(weights * (p - t[0]) ** 2)  # noqa: E731
            return tx.update(theta, tx.init(theta), theta, value_fn=loss)[0]

        fn = jax.jit(jax.shard_map(device, mesh=mesh, in_specs=spec, out_specs=P()))
        return np.asarray(fn(jax.device_put(targets, NamedSharding(mesh, spec))))

    flat = run(jax.make_mesh((4,), ("d",), devices=jax.devices()[:4]), "d", P("d"))
    mesh2 = jax.make_mesh((2, 2), ("a", "b"), devices=jax.devices()[:4])
    nested = run(mesh2, ("a", "b"), P(("a", "b")))
    np.testing.assert_array_equal(nested, flat)
    assert np.any(flat != 0)


# --- the wire -------------------------------------------------------------------------------


def _compiled(tx, size, mesh):
    params = {"w": jnp.zeros((size,), jnp.float32), "b": jnp.zeros((3,), jnp.float32)}

    def step(params, x):
        def value_fn(p):
            return jnp.sum((p["w"][:3] + p["b"] - x[0]) ** 2) + 1e-3 * jnp.sum(p["w"] ** 2)

        return tx.update(params, tx.init(params), params, value_fn=value_fn)[0]

    fn = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P("data")), out_specs=P()))
    x = jax.device_put(jnp.ones((8, 3)), NamedSharding(mesh, P("data")))
    with recording_exchanges() as log:
        lowered = fn.lower(params, x)
    compiled = lowered.compile()
    return hlo_collectives(compiled.as_text()), log, compiled


@pytest.mark.parametrize("wire", WIRES)
def test_bytes_per_step_are_k_scalars_whatever_the_model(wire):
    mesh = _mesh(8)
    k = 3
    tx = shared_seed_spsa(1e-3, k, axis_name="data", wire=wire)
    itemsize = {"f32": 4, "bf16": 2, "log_official": 2}.get(wire, 1)
    sizes = (10, 1 << 18) if wire in ("f32", "log8") else (10,)
    for size in sizes:
        found, log, compiled = _compiled(tx, size, mesh)
        assert len(found) == 1 and found[0].op.removesuffix("-start") == "all-gather", found
        assert found[0].operand_bytes == k * itemsize and found[0].group_size == 8
        assert [(e.op, e.operand_bytes, e.num_devices) for e in log] == [
            ("all-gather", k * itemsize, 8)
        ]
        wire_bytes = spsa_wire_bytes(k, 8, wire)
        assert wire_bytes == {
            "sent": k * itemsize,
            "received": 7 * k * itemsize,
            "gathered": 8 * k * itemsize,
        }
        assert log[0].wire_bytes == wire_bytes["received"]
        if size > 1000:
            # N K = 24 directions of 1 MiB are regenerated one at a time in a loop
            temp = compiled.memory_analysis().temp_size_in_bytes
            assert temp < 8 * 4 * size, temp


# --- the codes ----------------------------------------------------------------------------------


def _code_inputs():
    rng = np.random.default_rng(5)
    p = np.concatenate(
        [
            np.sign(rng.normal(size=400)) * np.exp(rng.uniform(-10, 10, size=400)),
            [0.0, 1e-9, -1e-9, 1e6, -1e6, 1.0, -1.0, 3.7e-4],
        ]
    )
    return p


@pytest.mark.parametrize("wire", ["log8", "log_official"])
def test_log_codes_equal_their_transcriptions(wire):
    p = _code_inputs()
    with jax.enable_x64(True):
        q = encode(jnp.asarray(p), wire)
        got = np.asarray(decode(q, wire, jnp.float64))
    np.testing.assert_allclose(got, NP_WIRE[wire](p), rtol=1e-12)
    if wire == "log8":
        np.testing.assert_array_equal(np.asarray(q), np_log8_encode(p))
        assert q.dtype == jnp.int8
    else:
        assert q.dtype == jnp.int16 and int(jnp.max(jnp.abs(q))) <= 255
    steps, top = (8, 63) if wire == "log8" else (16, 127)
    inside = (np.abs(p) >= math.exp(-top / steps)) & (np.abs(p) <= math.exp(top / steps))
    rel = np.abs(got[inside] / p[inside] - 1)
    assert np.all(rel <= math.exp(1 / (2 * steps)) - 1 + 1e-12)
    assert np.all(np.sign(got) == np.sign(p))
    assert got[np.abs(p) == 1e6][0] == pytest.approx(math.exp(top / steps), rel=1e-14)  # saturates
    assert got[p == 1e-9][0] == pytest.approx(math.exp(-top / steps), rel=1e-14)  # rounded *up*
    nan = decode(encode(jnp.asarray([jnp.nan, 1.0]), wire), wire)
    assert bool(jnp.isnan(nan[0])) and float(nan[1]) == 1.0


def test_stochastic_byte_is_unbiased_and_the_nearest_byte_is_not():
    """E[decode] over 4000 rounding keys: within a z-test of p for the stochastic code,
    up to 280% off for the nearest-rounding one below its range (1e-4 -> 3.8e-4)."""
    p = jnp.asarray([1e-6, -1e-4, 3e-4, 0.0101, -0.5, 1.0, 7.3, -123.0, 2000.0], jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    codes = jax.jit(jax.vmap(lambda k: encode(p, "log8_stochastic", k)))(keys)
    assert codes.dtype == jnp.int8
    samples = np.asarray(decode(codes, "log8_stochastic"), np.float64)
    z = _z_scores(samples, np.asarray(p, np.float64))
    assert np.all(np.abs(z) < Z_MAX), z
    nearest = np.asarray(decode(encode(p, "log8"), "log8"), np.float64)
    assert np.isclose(nearest[1], -math.exp(-63 / 8), rtol=1e-6)  # -1e-4 -> -3.8e-4
    # the same z-test rejects the nearest-rounding code as an estimate of p
    wrong = samples - np.asarray(p, np.float64) + nearest
    assert np.any(np.abs(_z_scores(wrong, np.asarray(p, np.float64))) > Z_MAX)
    assert (
        float(decode(encode(jnp.zeros(1), "log8_stochastic", keys[0]), "log8_stochastic")[0]) == 0
    )


@pytest.mark.parametrize(
    ("wire", "sigma"), [("log8", 2e-4), ("log8", 1.0), ("log8_stochastic", 2e-4)]
)
def test_measured_gain_matches_spsa_quantizer_gain(wire, sigma):
    """On a quadratic with ||grad|| = sigma, E[u] = gain(sigma) grad (Stein's lemma)."""
    g = np.array([0.6, -0.8], np.float32) * sigma  # ||g|| = sigma
    theta = jnp.zeros(2)
    targets = jnp.zeros((4, 2))

    def loss_of(p, target):
        return jnp.asarray(g) @ (p - target)  # linear: p = z . g exactly

    us = _mean_update(loss_of, targets, theta, 1.0, 64, 400, wire=wire)
    gain = spsa_quantizer_gain(wire, sigma)
    z = _z_scores(us, gain * g)
    assert np.all(np.abs(z) < Z_MAX), (gain, us.mean(0) / g, z)
    if wire == "log8" and sigma < 1e-3:
        assert gain > 1.5  # the bias is large here, and visible:
        assert np.all(np.abs(_z_scores(us, g)) > Z_MAX)
    else:
        assert abs(gain - 1) < 1e-3


def test_quantizer_gain_table():
    """The numbers docs/zeroth_order.md quotes (float64 quadrature)."""
    assert spsa_quantizer_gain("f32", 1.0) == pytest.approx(1.0, abs=1e-6)
    assert spsa_quantizer_gain("log8_stochastic", 1e-6) == pytest.approx(1.0, abs=1e-6)
    assert spsa_quantizer_gain("log8_stochastic", 1e4) < 0.3  # saturation above e^{63/8}
    lowest = math.exp(-63 / 8)
    for sigma in (1e-6, 1e-5):  # far below the range: the floor dominates
        expected = lowest * math.sqrt(2 / math.pi) / sigma
        assert spsa_quantizer_gain("log8", sigma) == pytest.approx(expected, rel=2e-2)
    for sigma in (1e-2, 0.3, 1.0, 30.0):
        assert abs(spsa_quantizer_gain("log8", sigma) - 1) < 1e-3


# --- training through data_parallel_step ---------------------------------------------------


def test_trains_least_squares_through_data_parallel_step():
    mesh = _mesh(8)
    rng = np.random.default_rng(6)
    w_true = rng.normal(size=5)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = (x @ w_true).astype(np.float32)

    def loss_fn(w, batch):
        xb, yb = batch
        return jnp.mean((xb @ w - yb) ** 2)

    k = 4
    # gdtx.chain keeps the declared value_fn visible to the builder (optax.chain hides it)
    tx = gdtx.chain(
        shared_seed_spsa(1e-3, k, axis_name="data", wire="log8_stochastic"), optax.sgd(0.05)
    )
    init, step, exchanges = gdtx.data_parallel_step(loss_fn, tx, mesh, donate=False)
    w = jnp.zeros(5, jnp.float32)
    state = init(w)
    hlo = step.lower(w, state, (x, y)).compile().as_text()
    found = hlo_collectives(hlo)
    # the scalars and the builder's 4-byte loss mean: no model-sized collective
    assert sum(c.operand_bytes for c in found) == k + 4, found
    start = float(loss_fn(w, (x, y)))
    for _ in range(150):
        # one step in flight at a time: queued steps of 8 simulated CPU devices were seen
        # to deadlock in XLA's collective rendezvous (not specific to this transformation)
        w, state, metrics = jax.block_until_ready(step(w, state, (x, y)))
    assert metrics["payload_bytes"] == k
    assert metrics["bytes_sent"] == 7 * k
    final = float(loss_fn(jax.device_get(w), (x, y)))
    assert final < 1e-3 * start, (start, final)


@pytest.mark.slow
@pytest.mark.parametrize("wire", ["f32", "log8_stochastic"])
def test_learns_tiny_digits_through_data_parallel_step(wire, tiny_digits):
    """The 2410-parameter MLP, 8 devices x 16 samples, 200 steps: test loss 2.42 -> ~0.3."""
    from tests import tiny_digits as td

    mesh = _mesh(8)
    tx = gdtx.chain(
        shared_seed_spsa(1e-3, 16, axis_name="data", wire=wire), optax.sgd(0.02, momentum=0.9)
    )
    init, step, _ = gdtx.data_parallel_step(lambda p, b: td.loss(p, *b), tx, mesh)
    params = td.init_params(jax.random.PRNGKey(0))
    start = float(td.loss(params, tiny_digits.x_test, tiny_digits.y_test))
    xs, ys = td.batches(tiny_digits, 64, 200)
    state = init(params)
    for x, y in zip(xs, ys, strict=True):
        params, state, metrics = jax.block_until_ready(step(params, state, (x, y)))
    params = jax.device_get(params)
    final = float(td.loss(params, tiny_digits.x_test, tiny_digits.y_test))
    assert final < 0.2 * start, (start, final)
    assert float(td.accuracy(params, tiny_digits.x_test, tiny_digits.y_test)) > 0.85
    assert metrics["bytes_sent"] == 7 * 16 * (4 if wire == "f32" else 1)


def test_no_backward_pass():
    """A loss that refuses differentiation still works: SPSA only evaluates it; and in
    data_parallel_step the builder's unused gradient is removed by XLA (a marker op of the
    backward pass is absent from the compiled step, present with optax.sgd)."""

    @jax.custom_vjp
    def refuses(x):
        return jnp.sum(x**2)

    def bwd(res, g):
        raise AssertionError("differentiated")

    refuses.defvjp(lambda x: (refuses(x), x), bwd)
    tx = shared_seed_spsa(1e-2, 2, axis_name="d")
    u, _ = jax.vmap(
        lambda _: tx.update(jnp.ones(3), tx.init(jnp.ones(3)), jnp.ones(3), value_fn=refuses),
        axis_name="d",
    )(jnp.zeros(2))
    assert bool(jnp.all(jnp.isfinite(u))) and u.shape == (2, 3)

    @jax.custom_vjp
    def marked(w):
        return w

    marked.defvjp(lambda w: (w, None), lambda _, g: (jax.lax.cbrt(g),))

    def loss_fn(w, batch):
        xb, yb = batch
        return jnp.mean((xb @ marked(w) - yb) ** 2)

    mesh = _mesh(8)
    batch = (np.ones((16, 5), np.float32), np.ones(16, np.float32))
    found = {}
    for name, opt in (("spsa", gdtx.chain(tx_data(), optax.sgd(0.1))), ("sgd", optax.sgd(0.1))):
        init, step, _ = gdtx.data_parallel_step(loss_fn, opt, mesh, donate=False)
        w = jnp.zeros(5)
        found[name] = "cbrt" in step.lower(w, init(w), batch).compile().as_text()
    assert found == {"spsa": False, "sgd": True}


def tx_data():
    return shared_seed_spsa(1e-3, 2, axis_name="data")


# --- misuse ---------------------------------------------------------------------------------


def test_misuse_raises_errors_naming_the_function():
    owner = r"gdtx\.shared_seed_spsa"
    with pytest.raises(ValueError, match=owner + r": `epsilon` must be > 0, got 0"):
        shared_seed_spsa(0.0, axis_name="d")
    with pytest.raises(ValueError, match=owner + r": `epsilon` must be > 0, got -1"):
        shared_seed_spsa(-1.0, axis_name="d")
    with pytest.raises(TypeError, match=owner + r": `epsilon`"):
        shared_seed_spsa("1e-3", axis_name="d")
    with pytest.raises(ValueError, match=owner + r": `num_samples` must be an integer >= 1"):
        shared_seed_spsa(1e-3, 0, axis_name="d")
    with pytest.raises(ValueError, match=owner + r": `wire` must be one of \('f32'"):
        shared_seed_spsa(1e-3, axis_name="d", wire="int8")
    with pytest.raises(TypeError, match=owner + r": `axis_name` must be"):
        shared_seed_spsa(1e-3, axis_name=None)
    with pytest.raises(ValueError, match=owner + r": `seed` must be an integer >= 0"):
        shared_seed_spsa(1e-3, axis_name="d", seed=-2)
    tx = shared_seed_spsa(1e-3, axis_name="data")
    theta = jnp.ones(3)
    loss = lambda p: jnp.sum(p**2)  # noqa: E731
    with pytest.raises(ValueError, match=owner + r": the mesh axis 'data' .* is not bound"):
        tx.update(theta, tx.init(theta), theta, value_fn=loss)
    vmapped = lambda f: jax.vmap(f, axis_name="data")(jnp.zeros(2))  # noqa: E731
    with pytest.raises(TypeError, match=owner + r" requires the extra argument `value_fn`"):
        vmapped(lambda _: tx.update(theta, tx.init(theta), theta))
    with pytest.raises(TypeError, match=owner + r": `update` needs `params`"):
        vmapped(lambda _: tx.update(theta, tx.init(theta), value_fn=loss))
    with pytest.raises(TypeError, match=owner + r": the extra argument `value_fn` must be a"):
        vmapped(lambda _: tx.update(theta, tx.init(theta), theta, value_fn=1.0))
    with pytest.raises(TypeError, match=owner + r": `value_fn` must return a real scalar"):
        vmapped(lambda _: tx.update(theta, tx.init(theta), theta, value_fn=lambda p: p))
    with pytest.raises(ValueError, match=owner + r": the update at .* has shape \(2,\)"):
        vmapped(lambda _: tx.update(jnp.ones(2), tx.init(theta), theta, value_fn=loss))
    with pytest.raises(TypeError, match=owner + r" updates floating-point parameters only"):
        tx.init(jnp.ones(3, jnp.int32))
    with pytest.raises(
        TypeError, match=owner + r": wire='log8_stochastic' rounds at random: pass `key`"
    ):
        encode(jnp.ones(2), "log8_stochastic")
    with pytest.raises(ValueError, match=r"gdtx\.spsa_wire_bytes: `wire` must be one of"):
        spsa_wire_bytes(1, 8, "f16")
    assert gdtx.required_extra_args(tx) == frozenset({"value_fn"})
