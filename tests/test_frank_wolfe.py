"""Frank-Wolfe and 1-SFW (gdtx.frank_wolfe): LMO closed forms, feasibility, rates, unbiasedness.

Closed forms and rates from games.md §4.4–4.5, with NumPy float64 references
written here (CI has no access to the spec's reference file).
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gdtx._core.extra_args import required_extra_args
from gdtx.frank_wolfe import (
    deterministic_frank_wolfe,
    frank_wolfe_gap,
    hessian_vector_product,
    lmo_l1_ball,
    lmo_l2_ball,
    lmo_linf_ball,
    lmo_nuclear_ball,
    lmo_simplex,
    one_sample_frank_wolfe,
)

# --- NumPy oracles (games.md §4.4) ------------------------------------------------------------


def np_l1(d, r):
    v = np.zeros_like(d)
    i = int(np.argmax(np.abs(d)))
    v.flat[i] = -r * np.sign(d.flat[i])
    return v


def np_l2(d, r):
    n = np.linalg.norm(d)
    return np.zeros_like(d) if n == 0 else -r * d / n


def np_linf(d, r):
    return np.where(d > 0, -r, r)


def np_simplex(d, r):
    v = np.zeros_like(d)
    v.flat[int(np.argmin(d))] = r
    return v


def np_nuclear(D, r):
    U, s, Vt = np.linalg.svd(D, full_matrices=False)
    return np.zeros_like(D) if s[0] == 0 else -r * np.outer(U[:, 0], Vt[0])


# --- each LMO equals its closed form and is optimal -------------------------------------------


def test_lmos_equal_their_closed_forms_and_are_optimal():
    rng = np.random.default_rng(2)
    n, draws = 5, 100
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=n)))
    with jax.enable_x64(True):
        for r in (0.7, 2.3):
            ds = rng.standard_normal((draws, n))
            Ds = rng.standard_normal((draws, 4, 3))

            def batch(oracle, x):
                return np.asarray(jax.jit(jax.vmap(oracle))(jnp.asarray(x)))

            out = {
                np_l1: batch(lmo_l1_ball(r), ds),
                np_l2: batch(lmo_l2_ball(r), ds),
                np_linf: batch(lmo_linf_ball(r), ds),
                np_simplex: batch(lmo_simplex(r), ds),
            }
            nuclear = batch(lmo_nuclear_ball(r), Ds)
            power = batch(lmo_nuclear_ball(r, power_iterations=300), Ds)
            vertices = np.concatenate([r * np.eye(n), -r * np.eye(n)])
            for i, (d, D) in enumerate(zip(ds, Ds, strict=True)):
                for closed, v in out.items():
                    np.testing.assert_allclose(v[i], closed(d, r), rtol=1e-12, atol=1e-14)
                # Optimal: vertex enumeration (l1: +-r e_i; linf: all sign patterns),
                # Cauchy-Schwarz (l2), the smallest entry (simplex).
                np.testing.assert_allclose(out[np_l1][i] @ d, (vertices @ d).min(), rtol=1e-12)
                np.testing.assert_allclose(out[np_linf][i] @ d, (r * signs @ d).min(), rtol=1e-12)
                np.testing.assert_allclose(out[np_l2][i] @ d, -r * np.linalg.norm(d), rtol=1e-12)
                np.testing.assert_allclose(out[np_simplex][i] @ d, r * d.min(), rtol=1e-12)
                V = nuclear[i]
                s = np.linalg.svd(D, compute_uv=False)
                np.testing.assert_allclose((V * D).sum(), -r * s[0], rtol=1e-12)
                np.testing.assert_allclose(np.linalg.svd(V, compute_uv=False).sum(), r, rtol=1e-12)
                np.testing.assert_allclose(V, np_nuclear(D, r), atol=1e-12)
                np.testing.assert_allclose(power[i], V, atol=1e-6)


def test_lmos_on_trees_global_and_per_leaf():
    jit = jax.jit  # one compiled call each: eager per-leaf loops dispatch op by op
    d = {"a": jnp.array([0.5, -3.0]), "b": (jnp.array([[1.0, 4.0]]),)}
    # Global: one ball for the whole tree; per leaf: the product of the leaves' balls.
    np.testing.assert_array_equal(jit(lmo_l1_ball(2.0))(d)["b"][0], [[0.0, -2.0]])
    np.testing.assert_array_equal(jit(lmo_l1_ball(2.0))(d)["a"], [0.0, 0.0])
    np.testing.assert_array_equal(jit(lmo_l1_ball(2.0, per_leaf=True))(d)["a"], [0.0, 2.0])
    norm = math.sqrt(0.25 + 9 + 1 + 16)
    np.testing.assert_allclose(jit(lmo_l2_ball(1.0))(d)["a"], [-0.5 / norm, 3.0 / norm], rtol=1e-6)
    np.testing.assert_allclose(
        jit(lmo_l2_ball(1.0, per_leaf=True))(d)["b"][0], [[-1 / 17**0.5, -4 / 17**0.5]], rtol=1e-6
    )
    simplex = jit(lmo_simplex(3.0))(d)
    assert float(sum(jnp.sum(x) for x in jax.tree.leaves(simplex))) == 3.0
    np.testing.assert_array_equal(simplex["a"], [0.0, 3.0])
    # Ties go to the first entry in tree order; zero directions as in games.md §4.4.
    tie = {"a": jnp.array([1.0, -1.0]), "b": jnp.array([1.0])}
    np.testing.assert_array_equal(jit(lmo_l1_ball())(tie)["a"], [-1.0, 0.0])
    np.testing.assert_array_equal(jit(lmo_l1_ball())(tie)["b"], [0.0])
    zero = jnp.zeros(3)
    np.testing.assert_array_equal(jit(lmo_l1_ball())(zero), 0.0)
    np.testing.assert_array_equal(jit(lmo_l2_ball())(zero), 0.0)
    np.testing.assert_array_equal(jit(lmo_linf_ball())(zero), 1.0)
    np.testing.assert_array_equal(jit(lmo_nuclear_ball())(jnp.zeros((2, 2))), 0.0)
    # bfloat16 directions: the oracle's answer comes back in at least float32.
    assert jit(lmo_l2_ball())(jnp.ones(2, jnp.bfloat16)).dtype == jnp.float32


def test_frank_wolfe_gap_bounds_the_suboptimality():
    c = jnp.array([3.0, 4.0])
    x = jnp.array([0.2, -0.1])
    d = x - c
    v = lmo_l2_ball(1.0)(d)
    gap = frank_wolfe_gap(d, x, v)
    F = lambda z: 0.5 * jnp.sum((z - c) ** 2)  # noqa: E731
    assert float(F(x) - F(c / 5.0)) <= float(gap) + 1e-6
    assert float(frank_wolfe_gap(d, v, v)) == 0.0


# --- feasibility for every oracle -------------------------------------------------------------


def _norm_checks():
    def nuclear(x):
        return float(jnp.sum(jnp.linalg.svd(x, compute_uv=False)))

    return [
        ("l1", lmo_l1_ball(1.5), lambda x: float(jnp.sum(jnp.abs(x))) <= 1.5 * (1 + 1e-6)),
        ("l2", lmo_l2_ball(1.5), lambda x: float(jnp.linalg.norm(x)) <= 1.5 * (1 + 1e-6)),
        ("linf", lmo_linf_ball(1.5), lambda x: float(jnp.max(jnp.abs(x))) <= 1.5 * (1 + 1e-6)),
        (
            "simplex",
            lmo_simplex(1.5),
            lambda x: bool(jnp.all(x >= -1e-7)) and abs(float(jnp.sum(x)) - 1.5) <= 1e-5,
        ),
        ("nuclear", lmo_nuclear_ball(1.5), lambda x: nuclear(x) <= 1.5 * (1 + 1e-5)),
    ]


@pytest.mark.parametrize(
    "name, lmo, feasible", _norm_checks(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_iterates_stay_feasible(name, lmo, feasible):
    """A noisy quadratic whose minimiser lies outside every set: each iterate is in K."""
    rng = np.random.default_rng(5)
    c = jnp.asarray(rng.standard_normal((3, 4)) * 3.0)
    x0 = jnp.zeros((3, 4)).at[0, 0].set(1.5) if name == "simplex" else jnp.zeros((3, 4))
    tx = one_sample_frank_wolfe(lmo)
    key = jax.random.PRNGKey(0)

    def sample_loss(z):
        return lambda x: 0.5 * jnp.sum((1 + z) * (x - c) ** 2)

    @jax.jit
    def step(carry, _):
        x, state, key = carry
        key, sub = jax.random.split(key)
        loss = sample_loss(0.5 * jax.random.normal(sub, (3, 4)))
        u, state = tx.update(jax.grad(loss)(x), state, x, hvp_fn=hessian_vector_product(loss))
        x = optax.apply_updates(x, u)
        return (x, state, key), x

    _, xs = jax.lax.scan(step, (x0, tx.init(x0), key), length=300)
    for x in np.asarray(xs)[::10]:
        assert feasible(jnp.asarray(x)), (name, x)


# --- rates and the degenerate case ------------------------------------------------------------


def _ball_problem(n=10, seed=3):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal(n)
    c *= 3.0 / np.linalg.norm(c)  # |c| = 3 > r = 1: the optimum is on the sphere
    return c, c / 3.0


def _run_fw(tx, x0, grad, steps, **extra):
    def step(carry, _):
        x, state = carry
        u, state = tx.update(grad(x), state, x, **extra)
        x = optax.apply_updates(x, u)
        return (x, state), x

    (_, state), xs = jax.jit(lambda x: jax.lax.scan(step, (x, tx.init(x)), length=steps))(x0)
    return xs, state


def test_frank_wolfe_gap_rate_on_a_quadratic_over_the_l2_ball():
    """games.md §4.5.4: F = |x - c|^2/2, r = 1, L = 1, D = 2, h_1 = F(0) - F*.

    eta_t = 1/(t+1): h_{T+1} <= (h_1 + L D^2 ln(T+1)/2)/(T+1);
    gamma_k = 2/(k+2): h_k <= 2LD^2/(k+2).
    """
    c, xstar = _ball_problem()
    with jax.enable_x64(True):
        F = lambda x: 0.5 * np.sum((x - c) ** 2, axis=-1)  # noqa: E731
        grad = lambda x: x - jnp.asarray(c)  # noqa: E731
        h1 = F(np.zeros(10)) - F(xstar)
        L, D, T = 1.0, 2.0, 2000
        t = np.arange(1, T + 1)
        xs, _ = _run_fw(
            deterministic_frank_wolfe(lmo_l2_ball(1.0), step_size=lambda k: 1.0 / (k + 2)),
            jnp.zeros(10),
            grad,
            T,
        )
        h = F(np.asarray(xs)) - F(xstar)  # h[t-1] = h_{t+1}
        assert np.all(h <= (h1 + 0.5 * L * D**2 * np.log(t + 1)) / (t + 1) + 1e-12)
        xs, _ = _run_fw(deterministic_frank_wolfe(lmo_l2_ball(1.0)), jnp.zeros(10), grad, T)
        h = F(np.asarray(xs)) - F(xstar)  # h[k-1] = h_k, k = 1..T
        assert np.all(h <= 2 * L * D**2 / (t + 2) + 1e-12)
        assert h[-1] < 1e-4  # and it gets there


def test_deterministic_one_sample_fw_is_frank_wolfe():
    """games.md §4.5.3: exact gradient and HVP => d_t = grad F(x_t), same iterates as FW."""
    c, _ = _ball_problem()
    with jax.enable_x64(True):
        H = jnp.diag(jnp.linspace(0.5, 2.0, 10))
        loss = lambda x: 0.5 * (x - c) @ H @ (x - c)  # noqa: E731
        grad = jax.grad(loss)
        fw_xs, _ = _run_fw(
            deterministic_frank_wolfe(lmo_l2_ball(1.0), step_size=lambda k: 1.0 / (k + 2)),
            jnp.zeros(10),
            grad,
            500,
        )
        for correction, extra in (
            ("hvp", {"hvp_fn": hessian_vector_product(loss)}),
            ("difference", {"grad_fn": grad}),
        ):
            tx = one_sample_frank_wolfe(lmo_l2_ball(1.0), correction=correction)
            assert required_extra_args(tx) == set(extra)
            xs, state = _run_fw(tx, jnp.zeros(10), grad, 500, **extra)
            np.testing.assert_allclose(xs, fw_xs, atol=1e-12)
            np.testing.assert_allclose(state.mu, grad(state.prev_params), atol=1e-12)
        # momentum = 1 is FW too, whatever the correction.
        tx = one_sample_frank_wolfe(lmo_l2_ball(1.0), momentum=1.0)
        xs, _ = _run_fw(tx, jnp.zeros(10), grad, 500, hvp_fn=lambda p, v: jnp.full_like(v, 1e3))
        np.testing.assert_allclose(xs, fw_xs, atol=1e-12)


def test_schedules_match_the_defaults_of_the_paper():
    """Defaults: rho_t = 1/t, eta_t = 1/(t+1) with t = count + 1 (1-SFW); 2/(k+2) (FW)."""
    with jax.enable_x64(True):
        lmo = lambda d: jax.tree.map(jnp.zeros_like, d)  # noqa: E731 - v = 0: the step is -eta x
        x = jnp.ones(1)
        fw, sfw = deterministic_frank_wolfe(lmo), one_sample_frank_wolfe(lmo)
        s_fw, s_sfw = fw.init(x), sfw.init(x)
        zero_hvp = lambda p, v: jnp.zeros_like(v)  # noqa: E731
        for count in range(6):
            u, s_fw = fw.update(jnp.ones(1), s_fw, x)
            np.testing.assert_allclose(-u, 2.0 / (count + 2))
            g = jnp.array([float(count + 1)])  # the sample's gradient at step t
            u, s_sfw = sfw.update(g, s_sfw, x, hvp_fn=zero_hvp)
            np.testing.assert_allclose(-u, 1.0 / (count + 2))
            t = count + 1
            # d_t = (1 - 1/t) d_{t-1} + g_t / t: the running mean of 1..t
            np.testing.assert_allclose(s_sfw.mu, (t + 1) / 2.0)


def test_the_momentum_estimator_is_unbiased_on_a_quadratic():
    """E d_t = grad F(x_t) for f(x; z) = x'(I + diag z1)x/2 - (c - z2)'x (z-test, fixed seed).

    The iterates are fixed (a given path x_1..x_T), the randomness is the samples
    z_t and the interpolation points a_t; 4000 independent runs, t = 8.
    """
    n, T, runs = 3, 8, 4000
    rng = np.random.default_rng(11)
    c = rng.standard_normal(n)
    path = jnp.asarray(rng.uniform(-0.5, 0.5, (T, n)))

    def estimate(key):
        tx = one_sample_frank_wolfe(lmo_l2_ball(1.0), seed=0)
        state = tx.init(path[0])
        state = state._replace(key=jax.random.fold_in(key, 1))
        for t in range(T):
            z1, z2 = jax.random.normal(jax.random.fold_in(key, 10 + t), (2, n))
            loss = lambda x, z1=z1, z2=z2: 0.5 * x @ ((1 + z1) * x) - (c - z2) @ x  # noqa: E731
            _, state = tx.update(
                jax.grad(loss)(path[t]), state, path[t], hvp_fn=hessian_vector_product(loss)
            )
        return state.mu

    d = np.asarray(jax.jit(jax.vmap(estimate))(jax.random.split(jax.random.PRNGKey(3), runs)))
    truth = np.asarray(path[-1]) - c  # grad F(x_T) with E z = 0
    z = (d.mean(0) - truth) / (d.std(0, ddof=1) / math.sqrt(runs))
    assert np.all(np.abs(z) < 4.0), z
    # and the estimator is not the plain last gradient: its variance is smaller.
    assert np.all(d.std(0) < 1.0)


@pytest.mark.slow
def test_stochastic_gap_falls_like_a_power_of_t():
    """games.md §4.5.5: mean gap over 20 seeds, slope <= -0.4 in log T from 100 to 3000."""
    c, xstar = _ball_problem()
    gaps = {}
    with jax.enable_x64(True):
        for T in (100, 3000):

            def final(key, T=T):
                tx = one_sample_frank_wolfe(lmo_l2_ball(1.0))

                def step(carry, t):
                    x, state = carry
                    z1, z2 = jax.random.normal(jax.random.fold_in(key, t), (2, 10))
                    loss = lambda x: 0.5 * x @ ((1 + z1) * x) - (c - z2) @ x  # noqa: E731
                    u, state = tx.update(
                        jax.grad(loss)(x), state, x, hvp_fn=hessian_vector_product(loss)
                    )
                    return (optax.apply_updates(x, u), state), None

                x0 = jnp.zeros(10)
                (x, _), _ = jax.lax.scan(step, (x0, tx.init(x0)), jnp.arange(T))
                return 0.5 * jnp.sum((x - c) ** 2) - 0.5 * np.sum((xstar - c) ** 2)

            keys = jax.random.split(jax.random.PRNGKey(100), 20)
            gaps[T] = float(jnp.mean(jax.jit(jax.vmap(final))(keys)))
    slope = math.log(gaps[3000] / gaps[100]) / math.log(30)
    assert slope <= -0.4, (gaps, slope)


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, error, pattern",
    [
        (
            lambda: lmo_l2_ball(0.0),
            ValueError,
            r"gdtx\.lmo_l2_ball: `radius` must be > 0, got 0\.0",
        ),
        (lambda: lmo_l1_ball(-1.0), ValueError, r"gdtx\.lmo_l1_ball: `radius` must be > 0"),
        (lambda: lmo_linf_ball(0), ValueError, r"gdtx\.lmo_linf_ball: `radius` must be > 0"),
        (lambda: lmo_simplex(-2.0), ValueError, r"gdtx\.lmo_simplex: `radius` must be > 0"),
        (lambda: lmo_nuclear_ball(0.0), ValueError, r"gdtx\.lmo_nuclear_ball: `radius` must be"),
        (lambda: lmo_nuclear_ball(power_iterations=0), ValueError, r"`power_iterations` must be"),
        (lambda: lmo_l2_ball("1"), TypeError, r"gdtx\.lmo_l2_ball: `radius` must be a real number"),
        (
            lambda: one_sample_frank_wolfe(1.0),
            TypeError,
            r"gdtx\.one_sample_frank_wolfe: `lmo` must be a linear minimisation oracle.*got 1\.0"
            r".*gdtx\.lmo_l2_ball\(radius\)",
        ),
        (lambda: deterministic_frank_wolfe("l2"), TypeError, r"`lmo` must be a linear minimis"),
        (lambda: deterministic_frank_wolfe(lmo_l2_ball(), step_size=1.5), ValueError, r"\(0, 1\]"),
        (lambda: one_sample_frank_wolfe(lmo_l2_ball(), momentum=0.0), ValueError, r"`momentum`"),
    ],
)
def test_bad_input_names_the_function_the_argument_and_the_value(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


def test_missing_hvp_and_params_and_non_matrix_leaves():
    tx = one_sample_frank_wolfe(lmo_l2_ball())
    x = jnp.zeros(2)
    with pytest.raises(TypeError, match=r"gdtx\.one_sample_frank_wolfe requires .*`hvp_fn`"):
        tx.update(x, tx.init(x), x)
    with pytest.raises(ValueError, match=r"gdtx\.one_sample_frank_wolfe needs the current param"):
        tx.update(x, tx.init(x), None, hvp_fn=lambda p, v: v)
    diff = one_sample_frank_wolfe(lmo_l2_ball(), correction="difference")
    with pytest.raises(TypeError, match=r"`grad_fn`"):
        diff.update(x, diff.init(x), x)
    with pytest.raises(ValueError, match=r"gdtx\.lmo_nuclear_ball: the leaf at \['v'\] has shape"):
        lmo_nuclear_ball()({"v": jnp.ones(3)})
