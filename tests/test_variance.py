"""Variance adaptation (gdtx.variance): closed forms, statistics and a real batch.

The recorded ``pytorch-optimizer`` trajectories and the paper's algorithm in
NumPy are in ``tests/reference/test_msvag_reference.py``; here are the properties
a correct M-SVAG / SVAG must show whatever the reference does:

- a constant gradient has no variance: the update is the gradient itself;
- for gradients with mean ``mu`` and noise ``sigma``, M-SVAG's factor targets
  ``mu^2 / (mu^2 + rho_inf sigma^2)`` with ``rho_inf = (1 - beta) / (1 + beta)``:
  the noise of the *averaged* direction, not of one gradient;
- SVAG with the exact variance of the batch mean gives exactly
  ``mu^2 / (mu^2 + sigma^2 / B)``;
- the per-example variance helper agrees with a NumPy backprop of the digits MLP.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdtx
from tests import tiny_digits as td

# --- M-SVAG ---------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.5, 0.9, 0.99])
@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e4])
def test_constant_gradient_gives_the_gradient(beta, scale):
    grads = {"w": scale * jnp.array([1.0, -3.0, 0.25]), "b": jnp.zeros(2)}
    tx = gdtx.scale_by_msvag(beta)
    state = tx.init(grads)
    update = jax.jit(tx.update)
    for t in range(1, 31):
        updates, state = update(grads, state)
        # m_hat = g up to rounding (1 - beta^t in float32 loses about log10(1 / (1 - beta))
        # digits: 1.2e-6 measured at beta = 0.99) and gamma = 1 - O(1e-7). At t = 1 the
        # rounding of v_hat - m_hat^2 would be amplified by 1 / (1 - rho_1) = 1e4; gdtx takes
        # s_1 = 0 there, so gamma_1 = 1 to one rounding (m^2 / m^2 is 1 - 1 ulp on GPUs).
        rtol = 3e-6 if beta > 0.9 else 1e-6
        np.testing.assert_allclose(updates["w"], grads["w"], rtol=rtol, err_msg=f"t={t}")
        if t == 1:
            np.testing.assert_allclose(gdtx.msvag_gamma(state, beta)["w"], 1.0, rtol=1.2e-7)
        # a coordinate that never had a gradient: 0/0 -> gamma = 0, no step, no NaN
        np.testing.assert_array_equal(updates["b"], 0.0)
        np.testing.assert_array_equal(gdtx.msvag_gamma(state, beta)["b"], 0.0)


def _late_average_gamma(mu, sigma, beta, n=20_000, num_steps=400, seed=0):
    tx = gdtx.scale_by_msvag(beta)

    def step(state, key):
        _, state = tx.update(mu + sigma * jax.random.normal(key, (n,)), state)
        return state, jnp.mean(gdtx.msvag_gamma(state, beta))

    keys = jax.random.split(jax.random.key(seed), num_steps)
    _, gammas = jax.jit(lambda s, k: jax.lax.scan(step, s, k))(tx.init(jnp.zeros(n)), keys)
    return float(jnp.mean(gammas[num_steps // 2 :]))


@pytest.mark.parametrize(("beta", "sigma"), [(0.9, 0.5), (0.9, 0.25), (0.5, 0.25)])
def test_gamma_targets_the_variance_of_the_averaged_gradient(beta, sigma):
    # gamma = mu^2 / (mu^2 + rho sigma^2) <=> rho = (1/gamma - 1) mu^2 / sigma^2: read the
    # noise ratio the factor implies from its average (20 000 coordinates, 200 late
    # steps, mu = 1) and compare with rho_inf = (1 - beta) / (1 + beta). High
    # signal-to-noise keeps the Jensen bias of averaging a ratio small (measured:
    # 4 % at beta=0.9, sigma=0.5; 1 % at sigma=0.25). The tolerance, 10 %, rejects
    # rho = 1 - beta (the missing (1 + beta): +90 % at beta=0.9) and rho = 1 (the
    # noise of one gradient).
    mu = 1.0
    rho_inf = (1 - beta) / (1 + beta)
    gamma = _late_average_gamma(mu, sigma, beta)
    implied_rho = (1 / gamma - 1) * mu**2 / sigma**2
    assert abs(implied_rho / rho_inf - 1) < 0.10, (gamma, implied_rho, rho_inf)


def test_msvag_gamma_is_the_factor_that_was_applied(rng):
    tx = gdtx.scale_by_msvag(0.8)
    params = {"x": jnp.zeros((4, 3))}
    state = tx.init(params)
    m = np.zeros((4, 3))
    for t in range(1, 40):
        g = rng.normal(0.3, 1.0, size=(4, 3)).astype(np.float32)
        updates, state = tx.update({"x": jnp.asarray(g)}, state)
        m = 0.8 * m + 0.2 * g
        m_hat = m / (1 - 0.8**t)
        gamma = gdtx.msvag_gamma(state, 0.8)["x"]
        np.testing.assert_allclose(updates["x"], gamma * m_hat, rtol=1e-5, atol=1e-7)
        assert np.all((gamma >= 0) & (gamma <= 1))
    # Found inside a chained state too, and a state without M-SVAG is an error.
    chained = gdtx.msvag(0.1).init(params)
    assert jax.tree.structure(gdtx.msvag_gamma(chained)) == jax.tree.structure(params)
    with pytest.raises(ValueError, match="no ScaleByMsvagState"):
        gdtx.msvag_gamma(optax.adam(0.1).init(params))


def test_long_horizon_float32_stays_finite_and_gamma_in_unit_interval():
    # 20 000 float32 steps on a noisy quadratic whose leaves span 1e-6 .. 1e4 in
    # gradient scale and signal-to-noise 0 .. inf, plus a coordinate that never
    # sees a gradient. The beta^t bias-correction bug went NaN near step 500.
    beta = 0.9
    scales = {"tiny": 1e-6, "unit": 1.0, "huge": 1e4}
    noise = {"tiny": 1.0, "unit": 0.0, "huge": 3.0}
    params = {k: jnp.full((8,), 1.0) for k in scales}
    params["dead"] = jnp.full((2,), 0.5)
    tx = gdtx.msvag(1e-4, beta)  # lr * curvature = 1 on the stiffest leaf

    def loss(p):
        return sum(0.5 * scales[k] * jnp.sum(p[k] ** 2) for k in scales)

    def step(carry, key):
        p, state = carry
        g = jax.grad(loss)(p)
        keys = dict(zip(scales, jax.random.split(key, 3), strict=True))
        g = {
            k: (g[k] + noise[k] * scales[k] * jax.random.normal(keys[k], g[k].shape))
            if k in scales
            else jnp.zeros_like(g[k])
            for k in g
        }
        updates, state = tx.update(g, state, p)
        gamma = jnp.concatenate([x.ravel() for x in jax.tree.leaves(gdtx.msvag_gamma(state, beta))])
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(u)) for u in jax.tree.leaves(updates)]))
        return (optax.apply_updates(p, updates), state), (jnp.min(gamma), jnp.max(gamma), finite)

    keys = jax.random.split(jax.random.key(1), 20_000)
    (final, _), (lo, hi, finite) = jax.jit(lambda p, k: jax.lax.scan(step, (p, tx.init(p)), k))(
        params, keys
    )
    assert bool(jnp.all(finite))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(final))
    assert float(jnp.min(lo)) >= 0.0 and float(jnp.max(hi)) <= 1.0
    np.testing.assert_array_equal(final["dead"], 0.5)
    # the noiseless leaf converges as exp(-lr t) = exp(-2) = 0.135
    assert float(jnp.max(jnp.abs(final["unit"]))) < 0.2


def test_decoupled_weight_decay_is_scaled_by_the_learning_rate():
    lr, wd = 0.1, 0.5
    params = jnp.array([1.0, -2.0])
    grads = jnp.array([0.3, 0.7])
    direction, _ = gdtx.scale_by_msvag().update(grads, gdtx.scale_by_msvag().init(params))
    tx = gdtx.msvag(lr, weight_decay=wd)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates, -lr * (direction + wd * params), rtol=1e-6)


# --- SVAG ------------------------------------------------------------------------------


def test_svag_with_the_exact_variance_gives_the_exact_factor():
    # B per-example gradients mu +- a, half each, with a^2 = sigma^2 (B - 1) / B: their
    # unbiased variance is sigma^2 exactly, so the helper returns sigma^2 / B and the
    # factor must be exactly mu^2 / (mu^2 + sigma^2 / B).
    B = 8
    mu = jnp.array([2.0, -1.0, 0.5, 0.0])
    sigma2 = jnp.array([4.0, 1.0, 0.0, 3.0])
    a = jnp.sqrt(sigma2 * (B - 1) / B)
    signs = jnp.array([1.0, -1.0] * (B // 2))[:, None]
    per_example = mu[None, :] + signs * a[None, :]
    mean, variance = gdtx.batch_mean_and_variance(per_example)
    np.testing.assert_allclose(mean, mu, atol=1e-7)
    np.testing.assert_allclose(variance, sigma2 / B, rtol=1e-6)
    tx = gdtx.scale_by_svag()
    updates, _ = tx.update(mu, tx.init(mu), grad_variance=sigma2 / B)
    expected_gamma = np.array([4 / 4.5, 1 / 1.125, 1.0, 0.0])
    np.testing.assert_allclose(updates, expected_gamma * np.asarray(mu), rtol=1e-7)


def _numpy_per_example_grads(params, x, y):
    """Per-example gradients of the digits MLP's cross-entropy, by hand, in float64."""
    w1, b1 = (np.asarray(params["hidden"][k], np.float64) for k in ("w", "b"))
    w2, b2 = (np.asarray(params["out"][k], np.float64) for k in ("w", "b"))
    x = np.asarray(x, np.float64)
    h = np.tanh(x @ w1 + b1)
    z = h @ w2 + b2
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    dz2 = p - np.eye(10)[y]
    dz1 = (dz2 @ w2.T) * (1 - h**2)
    return {
        "hidden": {"w": x[:, :, None] * dz1[:, None, :], "b": dz1},
        "out": {"w": h[:, :, None] * dz2[:, None, :], "b": dz2},
    }


def test_per_example_variance_on_a_digits_batch_matches_numpy(tiny_digits):
    params = td.init_params(jax.random.key(0))
    x, y = tiny_digits.x_train[:64], tiny_digits.y_train[:64]
    B = x.shape[0]

    def example_loss(p, xi, yi):
        return td.loss(p, xi[None], yi[None])

    per_example_grad = jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0))
    # Full float32 matmuls: GPUs default to TF32 (a ~1e-3 relative error in every gradient).
    with jax.default_matmul_precision("highest"):
        mean, variance = jax.jit(lambda p: gdtx.batch_mean_and_variance(per_example_grad(p, x, y)))(
            params
        )
    ref = _numpy_per_example_grads(params, x, y)
    for layer in ("hidden", "out"):
        for name in ("w", "b"):
            g = ref[layer][name]
            ref_var = np.var(g, axis=0, ddof=1) / B
            np.testing.assert_allclose(mean[layer][name], g.mean(axis=0), rtol=1e-4, atol=1e-7)
            np.testing.assert_allclose(
                variance[layer][name], ref_var, rtol=1e-3, atol=1e-6 * ref_var.max()
            )
    # and SVAG's step on that batch is gamma * g with the NumPy numbers
    tx = gdtx.scale_by_svag()
    updates, _ = tx.update(mean, tx.init(params), grad_variance=variance)
    g = ref["out"]["w"].mean(axis=0)
    var = np.var(ref["out"]["w"], axis=0, ddof=1) / B
    np.testing.assert_allclose(updates["out"]["w"], g**2 / (g**2 + var) * g, rtol=1e-3, atol=1e-8)


def test_batch_mean_and_variance_needs_two_examples():
    with pytest.raises(ValueError, match="at least 2 examples along axis 0, got 1"):
        gdtx.batch_mean_and_variance({"w": jnp.ones((1, 3))})


@pytest.mark.parametrize("factory", [gdtx.scale_by_svag, lambda: gdtx.svag(0.1)])
def test_svag_requires_grad_variance(factory):
    tx = factory()
    assert gdtx.required_extra_args(tx) == {"grad_variance"}
    g = jnp.ones(3)
    with pytest.raises(TypeError, match="`grad_variance`"):
        tx.update(g, tx.init(g), g)
    with pytest.raises(ValueError, match="grad_variance"):
        tx.update(g, tx.init(g), g, grad_variance=jnp.ones(4))


# --- learning a real model ---------------------------------------------------------------


def _train(tx, data, num_steps=300, batch_size=32, per_example=False):
    params = td.init_params(jax.random.key(0))
    xs, ys = td.batches(data, batch_size, num_steps, seed=1)

    def example_loss(p, xi, yi):
        return td.loss(p, xi[None], yi[None])

    def step(carry, batch):
        p, state = carry
        x, y = batch
        if per_example:
            pe = jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0))(p, x, y)
            g, var = gdtx.batch_mean_and_variance(pe)
            updates, state = tx.update(g, state, p, grad_variance=var)
        else:
            updates, state = tx.update(jax.grad(td.loss)(p, x, y), state, p)
        return (optax.apply_updates(p, updates), state), None

    (params, _), _ = jax.jit(lambda p, b: jax.lax.scan(step, (p, tx.init(p)), b))(params, (xs, ys))
    return float(td.accuracy(params, data.x_test, data.y_test))


@pytest.mark.parametrize(
    ("name", "make", "per_example"),
    [("msvag", lambda: gdtx.msvag(0.5), False), ("svag", lambda: gdtx.svag(0.5), True)],
)
def test_learns_digits(tiny_digits, name, make, per_example):
    accuracy = _train(make(), tiny_digits, per_example=per_example)
    assert accuracy > 0.9, (name, accuracy)


# --- M-SSD ------------------------------------------------------------------------------


def _numpy_m_ssd(grads, params, lr, beta, bias_correction=False):
    """The paper's Algorithm 1: p <- p - lr sign(m), m an EMA of the gradients."""
    m = np.zeros_like(params)
    out = [params.copy()]
    for t, g in enumerate(grads, start=1):
        m = beta * m + (1 - beta) * g
        direction = m / (1 - beta**t) if bias_correction else m
        params = params - lr * np.sign(direction)
        out.append(params.copy())
    return np.stack(out)


@pytest.mark.parametrize("beta", [0.5, 0.9])
def test_m_ssd_is_the_papers_algorithm_1(rng, beta):
    # Gradients with a small mean and large noise, so that the sign of the average
    # and the sign of the current gradient disagree often.
    lr, num_steps = 0.01, 200
    grads = rng.normal(0.2, 1.0, size=(num_steps, 6))
    p0 = rng.normal(size=6)
    tx = gdtx.m_ssd(lr, beta)
    with jax.enable_x64(True):
        p, state = jnp.asarray(p0), tx.init(jnp.asarray(p0))
        trajectory = [np.asarray(p)]
        for g in grads:
            updates, state = tx.update(jnp.asarray(g), state, p)
            p = optax.apply_updates(p, updates)
            trajectory.append(np.asarray(p))
    trajectory = np.stack(trajectory)
    np.testing.assert_allclose(trajectory, _numpy_m_ssd(grads, p0, lr, beta), rtol=0, atol=1e-12)
    # A bias correction cannot change a sign ...
    np.testing.assert_array_equal(
        _numpy_m_ssd(grads, p0, lr, beta, bias_correction=True), _numpy_m_ssd(grads, p0, lr, beta)
    )
    # ... but dropping the momentum (signSGD) does: the comparison above can fail.
    assert np.max(np.abs(trajectory - _numpy_m_ssd(grads, p0, lr, 0.0))) > 0.1


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"weight_decay": 0.1}, {"weight_decay": 0.1, "weight_decay_mode": "l2"}],
    ids=["plain", "decoupled", "l2"],
)
def test_m_ssd_is_signum(rng, kwargs):
    # M-SSD is built on gdtx.sign.scale_by_signum; with the same decay it is gdtx.signum.
    a, b = gdtx.m_ssd(0.05, 0.8, **kwargs), gdtx.signum(0.05, 0.8, **kwargs)
    params = {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}
    state_a, state_b = a.init(params), b.init(params)
    assert jax.tree.structure(state_a) == jax.tree.structure(state_b)
    assert optax.tree.get(state_a, "ScaleBySignumState") is not None
    pa = pb = params
    for _ in range(50):
        g = {"w": jnp.asarray(rng.normal(0.1, 1.0, size=(3, 2)), jnp.float32)}
        ua, state_a = a.update(g, state_a, pa)
        ub, state_b = b.update(g, state_b, pb)
        pa, pb = optax.apply_updates(pa, ua), optax.apply_updates(pb, ub)
    np.testing.assert_array_equal(pa["w"], pb["w"])


# --- issue 14: complex parameters, integer parameters, types, states, masking ----------


def test_msvag_on_complex_uses_the_squared_modulus():
    # A constant complex gradient has no variance: gamma = 1 and the step is g itself
    # (with g * g in place of |g|^2, gamma came out complex and the step turned).
    with jax.enable_x64(True):
        g = jnp.array([1 + 1j, -2 + 0.5j, 0.3 - 3j])
        tx = gdtx.scale_by_msvag()
        state = tx.init(g)
        for _ in range(3):
            updates, state = tx.update(g, state)
        np.testing.assert_allclose(updates, g, rtol=1e-9)
        gamma = gdtx.msvag_gamma(state)
        assert gamma.dtype == jnp.float64
        np.testing.assert_allclose(gamma, 1.0, rtol=1e-9)
        assert np.all(np.imag(np.asarray(state.nu)) == 0)


def test_svag_on_complex_is_the_real_factor_times_g():
    with jax.enable_x64(True):
        g = jnp.array([3 + 4j, 1j, 0j])
        var = jnp.array([25.0, 1.0, 0.0])
        updates, _ = gdtx.scale_by_svag().update(g, gdtx.scale_by_svag().init(g), grad_variance=var)
        np.testing.assert_allclose(updates, [0.5 * (3 + 4j), 0.5j, 0], rtol=1e-12)


def test_batch_mean_and_variance_of_complex_gradients_is_real():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3)) + 1j * rng.normal(size=(6, 3))
    with jax.enable_x64(True):
        mean, var = gdtx.batch_mean_and_variance({"z": jnp.asarray(x)})
        var = np.asarray(var["z"])
        np.testing.assert_allclose(mean["z"], x.mean(axis=0), rtol=1e-12)
    assert var.dtype == np.float64
    expected = np.sum(np.abs(x - x.mean(axis=0)) ** 2, axis=0) / (6 * 5)
    np.testing.assert_allclose(var, expected, rtol=1e-12)


def test_m_ssd_refuses_complex_params_at_init():
    params = {"w": jnp.ones(2), "z": jnp.ones(2, jnp.complex64)}
    with pytest.raises(TypeError, match=r"gdtx\.m_ssd does not support complex .*\['z'\]"):
        gdtx.m_ssd(0.1).init(params)


@pytest.mark.parametrize(
    ("factory", "owner"),
    [
        (lambda: gdtx.msvag(0.1), "gdtx.msvag"),
        (gdtx.scale_by_msvag, "gdtx.scale_by_msvag"),
        (lambda: gdtx.svag(0.1), "gdtx.svag"),
        (gdtx.scale_by_svag, "gdtx.scale_by_svag"),
        (lambda: gdtx.m_ssd(0.1), "gdtx.m_ssd"),
    ],
    ids=["msvag", "scale_by_msvag", "svag", "scale_by_svag", "m_ssd"],
)
def test_integer_params_are_refused_at_init(factory, owner):
    with pytest.raises(TypeError, match=re.escape(owner) + r" .*\['n'\].*int32"):
        factory().init({"w": jnp.ones(2), "n": jnp.arange(2)})


@pytest.mark.parametrize("alias", [gdtx.msvag, gdtx.svag, gdtx.m_ssd], ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"learning_rate": None}, TypeError, r"`learning_rate` must be a real number or a sch"),
        ({"learning_rate": "0.1"}, TypeError, r"`learning_rate` must be a real number"),
        ({"learning_rate": -np.inf}, ValueError, r"`learning_rate` must be >= 0"),
        ({"weight_decay": None}, TypeError, r"`weight_decay` must be a real number"),
        ({"weight_decay": np.array([0.1, -1.0])}, ValueError, r"`weight_decay` must be >= 0"),
    ],
)
def test_hyperparameters_are_real_numbers(alias, kwargs, error, pattern):
    with pytest.raises(error, match=rf"gdtx\.{alias.__name__}: " + pattern):
        alias(**{"learning_rate": 0.1, **kwargs})


@pytest.mark.parametrize("beta", [True, "0.9", np.array([0.5, 1.0])])
def test_beta_is_a_real_number_in_range(beta):
    error = ValueError if isinstance(beta, np.ndarray) else TypeError
    for alias in (gdtx.msvag, gdtx.m_ssd):
        with pytest.raises(error, match=rf"gdtx\.{alias.__name__}: `beta` must be"):
            alias(0.1, beta=beta)


@pytest.mark.parametrize("alias", [gdtx.msvag, gdtx.svag, gdtx.m_ssd], ids=lambda f: f.__name__)
def test_update_without_params_at_zero_weight_decay(alias):
    grads = {"w": jnp.array([1.0, -2.0])}
    extra = {"grad_variance": {"w": jnp.ones(2)}} if alias is gdtx.svag else {}
    tx = alias(0.1)
    without, _ = tx.update(grads, tx.init(grads), **extra)
    with_params, _ = tx.update(grads, tx.init(grads), grads, **extra)
    np.testing.assert_array_equal(without["w"], with_params["w"])


def test_a_state_of_another_optimizer_names_the_transformation():
    params = jnp.ones(3)
    belief = gdtx.adabelief(0.1).init(params)
    with pytest.raises(
        TypeError, match=r"gdtx\.msvag: `state` is a ScaleByBeliefState, expected a "
    ):
        gdtx.msvag(0.1).update(params, belief, params)
    with pytest.raises(TypeError, match=r"gdtx\.svag: `state` is a ScaleByBeliefState"):
        gdtx.svag(0.1).update(params, belief, params, grad_variance=params)


def test_svag_compares_gradients_with_params():
    # SVAG keeps no params-shaped state: a (1,) gradient must not broadcast onto (4,).
    params = {"w": jnp.ones(4)}
    tx = gdtx.svag(0.1)
    with pytest.raises(ValueError, match=r"gdtx\.svag: the update at \['w'\]"):
        tx.update({"w": jnp.ones(1)}, tx.init(params), params, grad_variance={"w": jnp.ones(1)})


@pytest.mark.parametrize("mask_compatible_extra_args", [False, True])
def test_svag_can_be_masked(mask_compatible_extra_args):
    # optax.masked hands extra arguments through unmasked by default: grad_variance
    # for the whole tree is accepted, its masked-out entries dropped.
    params = {"a": jnp.array([1.0, -2.0]), "b": jnp.array([3.0, 4.0, 5.0])}
    grads = {"a": jnp.array([0.5, -1.0]), "b": jnp.array([1.0, 2.0, 3.0])}
    var = {"a": jnp.array([0.25, 1.0]), "b": jnp.ones(3)}
    masked = optax.masked(
        gdtx.svag(0.1),
        {"a": True, "b": False},
        mask_compatible_extra_args=mask_compatible_extra_args,
    )
    updates, _ = masked.update(grads, masked.init(params), params, grad_variance=var)
    plain = gdtx.svag(0.1)
    expected, _ = plain.update(
        {"a": grads["a"]},
        plain.init({"a": params["a"]}),
        {"a": params["a"]},
        grad_variance={"a": var["a"]},
    )
    np.testing.assert_array_equal(updates["a"], expected["a"])
    np.testing.assert_array_equal(updates["b"], grads["b"])  # passed through


def test_svag_grad_variance_of_another_tree_says_how_to_fix_it():
    params = {"a": jnp.ones(2)}
    tx = gdtx.svag(0.1)
    with pytest.raises(ValueError, match=r"`grad_variance` must be shaped like the gradients"):
        tx.update(params, tx.init(params), params, grad_variance={"c": jnp.ones(2)})


def test_python_number_leaves_work():
    params = {"a": 1.0, "b": jnp.ones(1)}
    grads = {"a": 0.5, "b": jnp.full(1, 0.5)}
    for tx, extra in (
        (gdtx.msvag(0.1), {}),
        (gdtx.svag(0.1), {"grad_variance": {"a": 0.1, "b": jnp.full(1, 0.1)}}),
    ):
        updates, _ = tx.update(grads, tx.init(params), params, **extra)
        np.testing.assert_allclose(updates["a"], updates["b"][0], rtol=1e-6)
