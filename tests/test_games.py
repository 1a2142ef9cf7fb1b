"""CGD and ACGD (gdtx.games): closed forms from games.md §2.3 and §3.3, errors, the CG loop.

Closed forms are derived in the spec and re-derived here in NumPy float64; the
comparison against a transcription of the official ACGD code is in
``tests/reference/test_games_reference.py``.
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gdtx._core.extra_args import required_extra_args
from gdtx.games import ACGDState, CGDState, acgd, cgd, conjugate_gradient
from tests.hlo_steps import N, compile_step


def _bilinear(a):
    a = jnp.asarray(a)
    return lambda p: p["x"] @ a @ p["y"]


def _quadratic_game(P, B, Q, a, b):
    """f = x'Px/2 + x'By - y'Qy/2 + a'x + b'y (x minimises, y maximises)."""

    def f(p):
        x, y = p["x"], p["y"]
        return 0.5 * x @ P @ x + x @ B @ y - 0.5 * y @ Q @ y + a @ x + b @ y

    return f


def _run(tx, f, params, num_steps):
    def step(carry, _):
        params, state = carry
        updates, state = tx.update(jax.grad(f)(params), state, params, value_fn=f)
        return (optax.apply_updates(params, updates), state), params

    (params, state), history = jax.jit(
        lambda p: jax.lax.scan(step, (p, tx.init(p)), length=num_steps)
    )(params)
    return params, state, history


def _step(tx, f):
    """A jitted ``update`` with ``value_fn=f`` (eager CG loops dispatch op by op)."""
    return jax.jit(lambda g, s, p: tx.update(g, s, p, value_fn=f))


def _dense_cgd(P, B, Q, a, b, x, y, eta_x, eta_y):
    """games.md §2.2, zero sum: note the plus signs."""
    gx, gy = P @ x + B @ y + a, B.T @ x - Q @ y + b
    nx, ny = B.shape
    dx = -np.linalg.solve(np.eye(nx) / eta_x + eta_y * B @ B.T, gx + eta_y * B @ gy)
    dy = np.linalg.solve(np.eye(ny) / eta_y + eta_x * B.T @ B, gy - eta_x * B.T @ gx)
    return dx, dy


# --- f = x y: GDA spirals out, CGD contracts by 1/sqrt(1 + eta^2) every step ------------


_SLOW = pytest.mark.slow  # the other solve orders: the same two code paths, fixed


@pytest.mark.parametrize(
    "solve", ["alternating", pytest.param("min", marks=_SLOW), pytest.param("max", marks=_SLOW)]
)
@pytest.mark.parametrize("eta", [0.2, 3.0, pytest.param(0.05, marks=_SLOW)])
def test_cgd_contracts_on_xy_where_gda_spirals_out(eta, solve):
    with jax.enable_x64(True):
        f = lambda p: p["x"] * p["y"]  # noqa: E731
        start = {"x": jnp.array(0.7), "y": jnp.array(-1.3)}
        _, _, history = _run(cgd(eta, solve=solve), f, start, 12)
        radius = np.hypot(np.asarray(history["x"]), np.asarray(history["y"]))
        np.testing.assert_allclose(radius[1:] / radius[:-1], 1 / math.sqrt(1 + eta**2), rtol=1e-12)
        # Simultaneous GDA (both gradients at the old point) expands by sqrt(1 + eta^2).
        gda = optax.sgd(eta)
        z = dict(start)
        state = gda.init(z)
        for _ in range(5):
            g = jax.grad(f)(z)
            u, state = gda.update({"x": g["x"], "y": -g["y"]}, state)
            new = optax.apply_updates(z, u)
            ratio = np.hypot(new["x"], new["y"]) / np.hypot(z["x"], z["y"])
            np.testing.assert_allclose(ratio, math.sqrt(1 + eta**2), rtol=1e-12)
            z = new


def test_cgd_on_xy_is_the_scaled_rotation():
    """games.md §2.3.1: (x', y') = [[1, -eta], [eta, 1]] (x, y) / (1 + eta^2)."""
    with jax.enable_x64(True):
        eta = 0.4
        f = lambda p: p["x"] * p["y"]  # noqa: E731
        tx = cgd(eta)
        step = _step(tx, f)
        for x, y in ((1.0, 0.0), (0.0, 1.0), (0.3, -2.0)):
            p = {"x": jnp.array(x), "y": jnp.array(y)}
            u, _ = step(jax.grad(f)(p), tx.init(p), p)
            expected = np.array([x - eta * y, eta * x + y]) / (1 + eta**2)
            np.testing.assert_allclose([x + u["x"], y + u["y"]], expected, rtol=1e-14, atol=1e-15)


# --- x'Ay and quadratic games: the dense closed form, the Nash point ----------------------


@pytest.mark.parametrize(
    "solve", ["alternating", pytest.param("min", marks=_SLOW), pytest.param("max", marks=_SLOW)]
)
def test_cgd_step_equals_the_dense_closed_form(solve):
    rng = np.random.default_rng(0)
    nx, ny = 4, 3
    P = rng.standard_normal((nx, nx))
    Q = rng.standard_normal((ny, ny))
    P, Q = P @ P.T, Q @ Q.T
    B = rng.standard_normal((nx, ny))
    a, b = rng.standard_normal(nx), rng.standard_normal(ny)
    with jax.enable_x64(True):
        for game in ((0 * P, B, 0 * Q, 0 * a, 0 * b), (P, B, Q, a, b)):
            f = _quadratic_game(*map(jnp.asarray, game))
            tx = cgd(0.3, 0.7, tol=1e-30, atol=0.0, solve=solve)
            p = {
                "x": jnp.asarray(rng.standard_normal(nx)),
                "y": jnp.asarray(rng.standard_normal(ny)),
            }
            state, step = tx.init(p), _step(tx, f)
            for _ in range(3):  # both halves of the alternation, warm-started
                u, state = step(jax.grad(f)(p), state, p)
                dx, dy = _dense_cgd(*game, np.asarray(p["x"]), np.asarray(p["y"]), 0.3, 0.7)
                np.testing.assert_allclose(u["x"], dx, rtol=1e-10, atol=1e-12)
                np.testing.assert_allclose(u["y"], dy, rtol=1e-10, atol=1e-12)
                p = optax.apply_updates(p, u)
            assert isinstance(state, CGDState) and 1 <= int(state.cg_iters) <= max(nx, ny)


def test_cgd_on_a_bilinear_game_contracts_by_the_smallest_singular_value():
    """games.md §2.3.2: |z_k| falls like (1 + eta^2 s_min^2)^(-k/2) (square full-rank A)."""
    rng = np.random.default_rng(1)
    A = rng.standard_normal((3, 3)) + 2 * np.eye(3)
    s_min = np.linalg.svd(A, compute_uv=False).min()
    eta = 0.5
    with jax.enable_x64(True):
        p = {"x": jnp.asarray(rng.standard_normal(3)), "y": jnp.asarray(rng.standard_normal(3))}
        tx = cgd(eta, tol=1e-30, atol=0.0)
        _, _, history = _run(tx, _bilinear(A), p, 200)
        norms = np.sqrt(np.sum(np.asarray(history["x"]) ** 2 + np.asarray(history["y"]) ** 2, 1))
        factor = 1 / math.sqrt(1 + eta**2 * s_min**2)
        assert np.all(norms[1:] <= factor * norms[:-1] * (1 + 1e-10))  # operator norm
        rate = (norms[-1] / norms[100]) ** (1 / 99)
        np.testing.assert_allclose(rate, factor, rtol=1e-6)  # spectral radius


def test_cgd_converges_to_the_nash_point_of_a_quadratic_game():
    rng = np.random.default_rng(2)
    nx, ny = 4, 3
    P = rng.standard_normal((nx, nx))
    Q = rng.standard_normal((ny, ny))
    P, Q = P @ P.T + 0.5 * np.eye(nx), Q @ Q.T + 0.5 * np.eye(ny)
    B = rng.standard_normal((nx, ny))
    a, b = rng.standard_normal(nx), rng.standard_normal(ny)
    kkt = np.block([[P, B], [B.T, -Q]])
    nash = np.linalg.solve(kkt, -np.concatenate([a, b]))
    with jax.enable_x64(True):
        f = _quadratic_game(*map(jnp.asarray, (P, B, Q, a, b)))
        p = {"x": jnp.zeros(nx), "y": jnp.zeros(ny)}
        final, _, _ = _run(cgd(0.05), f, p, 3000)
        np.testing.assert_allclose(final["x"], nash[:nx], atol=1e-9)
        np.testing.assert_allclose(final["y"], nash[nx:], atol=1e-9)


def test_acgd_contracts_on_a_bilinear_game():
    """games.md §3.3.4: with any positive rates ACGD is unit-step CGD in rescaled coordinates."""
    rng = np.random.default_rng(1)
    A = rng.standard_normal((3, 3)) + 2 * np.eye(3)
    with jax.enable_x64(True):
        p = {"x": jnp.asarray(rng.standard_normal(3)), "y": jnp.asarray(rng.standard_normal(3))}
        final, state, _ = _run(acgd(0.01), _bilinear(A), p, 3000)
        before = np.sqrt(sum(float(jnp.sum(v**2)) for v in p.values()))
        after = np.sqrt(sum(float(jnp.sum(v**2)) for v in final.values()))
        assert after < 1e-3 * before, (before, after)
        assert isinstance(state, ACGDState) and int(state.count) == 3000


@pytest.mark.slow
def test_acgd_settles_within_two_learning_rates_of_the_nash():
    """games.md §3.3.5: constant-rate ACGD ends in an O(lr) neighbourhood (test <= 2 lr)."""
    rng = np.random.default_rng(1)
    nx, ny = 5, 4
    P = rng.standard_normal((nx, nx))
    Q = rng.standard_normal((ny, ny))
    P, Q = 0.1 * P @ P.T, 0.1 * Q @ Q.T
    B = rng.standard_normal((nx, ny))
    a, b = rng.standard_normal(nx), rng.standard_normal(ny)
    nash = np.linalg.solve(np.block([[P, B], [B.T, -Q]]), -np.concatenate([a, b]))
    with jax.enable_x64(True):
        f = _quadratic_game(*map(jnp.asarray, (P, B, Q, a, b)))
        for lr in (0.01, 0.003):
            final, _, _ = _run(acgd(lr), f, {"x": jnp.zeros(nx), "y": jnp.zeros(ny)}, 20_000)
            error = np.abs(np.concatenate([final["x"], final["y"]]) - nash).max()
            assert error <= 2 * lr, (lr, error)


# --- the CG loop: warm start, iteration count, no dense Hessian ---------------------------


def test_conjugate_gradient_matches_a_dense_solve_and_counts_iterations():
    rng = np.random.default_rng(3)
    M = rng.standard_normal((6, 6))
    A = M @ M.T + np.eye(6)
    b = rng.standard_normal(6)
    with jax.enable_x64(True):

        @jax.jit
        def solve(x0, tol, max_iters):
            return conjugate_gradient(
                lambda v: jnp.asarray(A) @ v,
                jnp.asarray(b),
                x0,
                tol=tol,
                atol=0.0,
                max_iters=max_iters,
            )

        x, its = solve(jnp.zeros(6), 1e-28, 100)
        np.testing.assert_allclose(x, np.linalg.solve(A, b), rtol=1e-10)
        assert 6 <= int(its) <= 8
        # Started at the solution it does nothing; capped, it stops at the cap.
        assert int(solve(x, 1e-12, 100)[1]) == 0
        assert int(solve(jnp.zeros(6), 0.0, 2)[1]) == 2


def test_warm_start_saves_cg_iterations():
    """The stored scaled solution is a good start when the game moves slowly."""
    rng = np.random.default_rng(4)
    n = 20
    M = rng.standard_normal((n, n)) / math.sqrt(n)
    with jax.enable_x64(True):
        f = _bilinear(M)
        p = {"x": jnp.asarray(rng.standard_normal(n)), "y": jnp.asarray(rng.standard_normal(n))}
        tx = cgd(0.5, tol=1e-16, atol=0.0)
        step = _step(tx, f)

        def iterations(warm):
            state, params, total = tx.init(p), p, 0
            for _ in range(20):
                if not warm:
                    state = state._replace(warm_start=optax.tree.zeros_like(state.warm_start))
                u, state = step(jax.grad(f)(params), state, params)
                params = optax.apply_updates(params, u)
                total += int(state.cg_iters)
            return total, params

        warm_total, warm_params = iterations(True)
        cold_total, cold_params = iterations(False)
        assert warm_total < cold_total, (warm_total, cold_total)
        np.testing.assert_allclose(warm_params["x"], cold_params["x"], rtol=1e-6, atol=1e-9)


def test_a_large_player_needs_no_dense_hessian():
    """200 000 parameters per player: a dense mixed Hessian would take 160 GB."""
    n = 200_000
    f = lambda p: jnp.sum(p["x"] * p["y"])  # noqa: E731
    p = {"x": jnp.linspace(-1.0, 1.0, n), "y": jnp.linspace(1.0, 0.0, n)}
    tx = cgd(0.5)
    u, state = jax.jit(lambda p: tx.update(jax.grad(f)(p), tx.init(p), p, value_fn=f))(p)
    expected_x = (p["x"] - 0.5 * p["y"]) / 1.25 - p["x"]
    np.testing.assert_allclose(u["x"], expected_x, rtol=1e-5, atol=1e-6)
    assert int(state.cg_iters) == 1  # B B' = I: one CG iteration


def test_nested_players_and_schedules():
    """Players are trees; a schedule is evaluated at the 0-based count."""
    f = lambda p: p["x"]["a"] @ p["y"]["b"][0] + jnp.sum(p["x"]["c"]) * p["y"]["b"][1]  # noqa: E731
    p = {"x": {"a": jnp.ones(2), "c": jnp.ones((2, 2))}, "y": {"b": (jnp.ones(2), jnp.array(2.0))}}
    const = cgd(0.1)
    sched = cgd(optax.constant_schedule(0.1), lambda count: 0.1 + 0.0 * count)
    ua, _ = _step(const, f)(jax.grad(f)(p), const.init(p), p)
    ub, _ = _step(sched, f)(jax.grad(f)(p), sched.init(p), p)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), ua, ub)
    assert jax.tree.structure(ua) == jax.tree.structure(p)


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", [cgd, acgd], ids=["cgd", "acgd"])
def test_missing_objective_is_a_type_error_naming_it(factory):
    tx = factory(0.1)
    assert required_extra_args(tx) == {"value_fn"}
    p = {"x": jnp.ones(2), "y": jnp.ones(2)}
    with pytest.raises(TypeError, match=rf"gdtx\.{factory.__name__} requires .*`value_fn`"):
        tx.update(p, tx.init(p), p)
    with pytest.raises(ValueError, match=rf"gdtx\.{factory.__name__} needs the current parameters"):
        tx.update(p, tx.init(p), None, value_fn=lambda q: 0.0)


@pytest.mark.parametrize("factory", [cgd, acgd], ids=["cgd", "acgd"])
def test_params_must_be_the_joint_tree(factory):
    tx = factory(0.1)
    with pytest.raises(TypeError, match=rf'gdtx\.{factory.__name__}: .*`\{{"x": minimiser_params'):
        tx.init((jnp.ones(2), jnp.ones(2)))
    with pytest.raises(TypeError, match=r"with keys \['g', 'x'\]"):
        tx.init({"x": jnp.ones(2), "g": jnp.ones(2)})


@pytest.mark.parametrize(
    ("factory", "kwargs", "error", "pattern"),
    [
        (
            cgd,
            {"learning_rate": 0.0},
            ValueError,
            r"gdtx\.cgd: `learning_rate` must be > 0, got 0\.0",
        ),
        (
            cgd,
            {"learning_rate": 0.1, "max_learning_rate": -1.0},
            ValueError,
            r"`max_learning_rate` must be > 0",
        ),
        (cgd, {"learning_rate": 0.1, "tol": -1.0}, ValueError, r"`tol` must be >= 0, got -1\.0"),
        (
            cgd,
            {"learning_rate": 0.1, "max_cg_iters": 0},
            ValueError,
            r"`max_cg_iters` must be an integer >= 1",
        ),
        (
            cgd,
            {"learning_rate": 0.1, "max_cg_iters": 2.0},
            TypeError,
            r"`max_cg_iters` must be an integer",
        ),
        (cgd, {"learning_rate": 0.1, "solve": "both"}, ValueError, r"`solve` must be one of"),
        (acgd, {"b2": 1.0}, ValueError, r"gdtx\.acgd: `b2` must be in \[0, 1\), got 1\.0"),
        (acgd, {"eps": -1e-5}, ValueError, r"gdtx\.acgd: `eps` must be >= 0"),
        (
            acgd,
            {"learning_rate": "1e-3"},
            TypeError,
            r"gdtx\.acgd: `learning_rate` must be a real number",
        ),
    ],
)
def test_bad_hyperparameters_name_the_function_and_the_argument(factory, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        factory(**kwargs)


# --- the compiled, donated step (issue 21) ----------------------------------------------


def _two_player_step_text(tx):
    """HLO of the donated ``jit(update + apply_updates)`` on a coupled game, N-leaf players."""

    def f(p):
        x, y = p["x"], p["y"]
        return jnp.sum(x * y) + 0.5 * jnp.sum(x * x) - 0.5 * jnp.sum(y * y)

    params = {"x": jnp.linspace(-1.0, 1.0, N), "y": jnp.linspace(1.0, -0.5, N)}
    return compile_step(tx, params, jax.grad(f)(params), extra={"value_fn": f}).as_text()


def _entry_lines(text):
    return text[text.index("\nENTRY") :].splitlines()


def _leaf_arrays(shape_text):
    return len(re.findall(rf"f32\[{N}\]", shape_text))


@pytest.mark.parametrize(("factory", "loops"), [(cgd, 2), (acgd, 4)], ids=["cgd", "acgd"])
def test_the_alternating_step_moves_the_params_from_the_scaled_solutions(factory, loops):
    # The lax.cond of the alternating solve returns the scaled solutions z only:
    # Δx = -sqrt(L_x) z_x and Δy = sqrt(L_y) z_y are formed after it, inside the
    # loops of optax.apply_updates, and ACGD's rates are traced inside each branch.
    # Returned by the cond, the moves were written out and read back (2 more
    # leaf-sized results); ACGD's rates, its operands, 2 more entry loops.
    text = _two_player_step_text(factory(0.1))
    (cond,) = [line for line in _entry_lines(text) if " conditional(" in line]
    assert _leaf_arrays(cond.split(" conditional(")[0]) == 2  # z_x, z_y
    fusions = [line for line in _entry_lines(text) if re.search(r"= f32\[\d+\]\S* fusion\(", line)]
    assert len(fusions) == loops  # the moved params, and ACGD's new second moments


def test_conjugate_gradient_copies_no_vector():
    # The body updates the direction first (p <- r + beta p), so no loop reads the
    # old p after the one that overwrites it in place, and p starts in b's buffer
    # (0 b + r = r) rather than in a second copy of r. Updated last, p was copied
    # every iteration (x's update still read it); started as r, once more.
    a = jnp.linspace(1.0, 2.0, N)

    def solve(g, x0):
        matvec = lambda v: a * v  # noqa: E731
        return conjugate_gradient(matvec, 0.5 * g, x0, tol=1e-12, atol=0.0, max_iters=N)

    text = jax.jit(solve, donate_argnums=1).lower(a, jnp.zeros(N)).compile().as_text()
    assert re.findall(rf"f32\[{N}\]\S* copy\(", text) == []
    x, _ = jax.jit(solve)(a, jnp.zeros(N))
    np.testing.assert_allclose(x, 0.5, rtol=1e-5)
