"""SALR, SAM and ASAM against closed forms and hand-computed steps.

No official implementation can serve as a reference: the authors' SALR code
implements a different estimator (see ``gdtx.salr``'s warning and
``/docs/sharpness.md``), and the SAM references are PyTorch optimizers whose
two-call protocol gdtx folds into one ``update``. So every expected value here is
a closed form of the paper's Algorithm 2 or a NumPy transcription of a formula,
and the closed forms are shown to reject the plausible convention mistakes.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdtx

# --- the sharpness estimate: closed forms --------------------------------------------


def _quadratic(a):
    return lambda x: 0.5 * a * jnp.sum(x**2)


def _jit_update(tx):
    """``tx.update`` under jit, with the loss function as a static argument."""
    return jax.jit(tx.update, static_argnames=("value_fn", "grad_fn"))


# (a, x0, descent n1, ascent n2, S) for f = a x^2 / 2 with gamma = 0.01, derived by hand:
# r >= n1 gamma: S = a/2 [(r + n2 g)^2 - (r - n1 g)^2]; r < n1 gamma: the descent end
# alternates around 0 (d = rho or gamma - rho by the parity of n1 - floor(r / gamma)).
_ONE_D = [
    (4.0, 1.0, 5, 5, 0.4),
    (4.0, 1.0, 3, 5, 0.3232),
    (4.0, 1.0, 5, 3, 0.3168),
    (4.0, 1.0, 1, 1, 0.08),
    (4.0, -1.0, 5, 5, 0.4),
    (4.0, 1e-3, 5, 5, 0.00504),
    (0.5, 1e-3, 5, 5, 0.00063),
    (4.0, 1e-3, 4, 4, 0.00336),
    (4.0, 0.023, 4, 4, 0.00792),
    (4.0, 0.0, 5, 5, 0.0),
    (4.0, 1.0, 0, 5, 0.2050),
    (4.0, 1.0, 5, 0, 0.1950),
]


@pytest.mark.parametrize(("a", "x0", "n1", "n2", "expected"), _ONE_D)
def test_one_dimensional_closed_forms(a, x0, n1, n2, expected):
    with jax.enable_x64(True):
        s = gdtx.sharpness_estimate(
            _quadratic(a),
            jnp.array([x0]),
            ascent_steps=n2,
            descent_steps=n1,
            step_size=0.01,
        )
        np.testing.assert_allclose(float(s), expected, rtol=1e-10, atol=1e-15)


def test_any_quadratic_with_one_step_each_way_gives_twice_the_gradient_norm():
    # f(x + h) - f(x - h) = 2 grad f(x) . h exactly for a quadratic; h = gamma g / |g|.
    a = np.array([[10.0, 2.0], [2.0, 1.0]])
    b = np.array([0.3, -0.1])
    x = np.array([1.0, -2.0])
    with jax.enable_x64(True):

        def f(p):
            return 0.5 * p["x"] @ (jnp.asarray(a) @ p["x"]) + jnp.asarray(b) @ p["x"] + 7.0

        for gamma in (1e-3, 0.05, 0.3):
            s = gdtx.sharpness_estimate(
                f, {"x": jnp.asarray(x)}, ascent_steps=1, descent_steps=1, step_size=gamma
            )
            expected = 2 * gamma * np.linalg.norm(a @ x + b)
            np.testing.assert_allclose(float(s), expected, rtol=1e-12)


def test_norms_are_global_over_the_parameter_tree():
    # The same quadratic split over two leaves gives the same estimate as one vector.
    a = np.array([3.0, 0.5, 8.0])
    x = np.array([0.7, -1.2, 0.4])
    with jax.enable_x64(True):
        whole = gdtx.sharpness_estimate(
            lambda p: 0.5 * jnp.sum(jnp.asarray(a) * p**2), jnp.asarray(x), step_size=0.02
        )
        split = gdtx.sharpness_estimate(
            lambda p: 0.5 * (a[0] * p["u"] ** 2 + jnp.sum(jnp.asarray(a[1:]) * p["v"] ** 2)),
            {"u": jnp.asarray(x[0]), "v": jnp.asarray(x[1:])},
            step_size=0.02,
        )
        np.testing.assert_allclose(float(split), float(whole), rtol=1e-12)


def test_per_example_and_batch_normalisation():
    # f_1 = x_1^2 / 2, f_2 = 9 x_2^2 / 2 at x = (1, 1), gamma = 0.01, one step each way:
    # S = 2 gamma gbar . ubar with ubar the mean of the unit gradients (0.05) or the unit
    # mean gradient (0.02 sqrt(20.5)).
    def per_example(x):
        return jnp.stack([0.5 * x[0] ** 2, 4.5 * x[1] ** 2])

    with jax.enable_x64(True):
        x = jnp.array([1.0, 1.0])
        kw = {"ascent_steps": 1, "descent_steps": 1, "step_size": 0.01}
        s_pe = gdtx.sharpness_estimate(per_example, x, per_example=True, **kw)
        s_batch = gdtx.sharpness_estimate(lambda p: jnp.mean(per_example(p)), x, **kw)
        np.testing.assert_allclose(float(s_pe), 0.05, rtol=1e-12)
        np.testing.assert_allclose(float(s_batch), 0.02 * math.sqrt(20.5), rtol=1e-12)
        # A batch of one: the two walks coincide.
        one = gdtx.sharpness_estimate(
            lambda p: per_example(p)[1:], x, per_example=True, step_size=0.01
        )
        ref = gdtx.sharpness_estimate(lambda p: per_example(p)[1], x, step_size=0.01)
        np.testing.assert_allclose(float(one), float(ref), rtol=1e-12)


def test_per_example_zero_gradient_example_does_not_poison_the_direction():
    # Example 2 is stationary: its unit gradient is 0 (not NaN), so the mean direction
    # is half of example 1's, and S = 2 * (gamma / 2) * |g_1| / 2 for a linear f_1.
    def per_example(x):
        return jnp.stack([3.0 * x[0], 0.0 * x[0]])

    with jax.enable_x64(True):
        s = gdtx.sharpness_estimate(
            per_example,
            jnp.array([0.2]),
            per_example=True,
            ascent_steps=1,
            descent_steps=1,
            step_size=0.1,
        )
        # ends at 0.2 +- 0.05: mean loss difference = (3 * 0.1) / 2.
        np.testing.assert_allclose(float(s), 0.15, rtol=1e-12)


@pytest.mark.parametrize("c", [0.01, 3.0, 250.0])
def test_sharpness_is_homogeneous_in_the_loss(c):
    rng = np.random.default_rng(1)
    m = rng.normal(size=(3, 3))
    a = m @ m.T + np.eye(3)
    x0 = rng.normal(size=3)
    with jax.enable_x64(True):
        x = jnp.asarray(x0)

        def f(p):
            return 0.5 * p @ (jnp.asarray(a) @ p)

        kw = {"ascent_steps": 4, "descent_steps": 2, "step_size": 0.05}
        base = gdtx.sharpness_estimate(f, x, **kw)
        scaled = gdtx.sharpness_estimate(lambda p: c * f(p), x, **kw)
        np.testing.assert_allclose(float(scaled), c * float(base), rtol=1e-10)


def test_eigenvector_start_reduces_to_one_dimension():
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    eigenvalues = np.array([0.5, 4.0, 30.0])
    a = q @ np.diag(eigenvalues) @ q.T
    with jax.enable_x64(True):
        for k, lam in enumerate(eigenvalues):
            x = 0.8 * q[:, k]
            s = gdtx.sharpness_estimate(
                lambda p: 0.5 * p @ (jnp.asarray(a) @ p), jnp.asarray(x), step_size=0.01
            )
            one_d = gdtx.sharpness_estimate(_quadratic(lam), jnp.array([0.8]), step_size=0.01)
            np.testing.assert_allclose(float(s), float(one_d), rtol=1e-9)


# --- the closed forms reject plausible convention mistakes ---------------------------


def _walk(a, x0, n1, n2, gamma, *, normalise=True, chained=False, accumulate=False):
    """NumPy transcription of the 1-D walk with switchable mistakes."""

    def grad(x):
        return a * x

    def step(x, sign, acc):
        g = grad(x) + acc
        d = np.sign(g) if normalise else g
        return x + sign * gamma * d, (g if accumulate else 0.0)

    up, acc = x0, 0.0
    for _ in range(n2):
        up, acc = step(up, 1.0, acc)
    down, acc = (up if chained else x0), 0.0
    for _ in range(n1):
        down, acc = step(down, -1.0, acc)
    return 0.5 * a * up**2 - 0.5 * a * down**2


_MUTANTS = {
    "paper": {},
    "raw gradient steps": {"normalise": False},
    "descent chained after the ascent": {"chained": True},
    "accumulated gradients": {"accumulate": True, "normalise": False},
    "ascent and descent counts swapped": {"swap": True},
}


@pytest.mark.parametrize("mutant", list(_MUTANTS), ids=str)
def test_closed_forms_reject_convention_mistakes(mutant):
    options = dict(_MUTANTS[mutant])
    swap = options.pop("swap", False)
    errors = []
    for a, x0, n1, n2, expected in _ONE_D:
        if swap:
            n1, n2 = n2, n1
        got = _walk(a, x0, n1, n2, 0.01, **options)
        errors.append(abs(got - expected) / max(abs(expected), 1e-12))
    if mutant == "paper":
        assert max(errors) < 1e-9, errors
    else:
        assert max(errors) > 1e-3, f"the closed forms do not catch: {mutant}"


# --- the multiplier rule ---------------------------------------------------------------


def _official_rule(s, history, dead_band, cap):
    """The authors' code: band at the 50 -+ w percentiles, ratio to the median, cap."""
    hist = np.asarray(history, np.float64)
    if dead_band is not None and np.percentile(hist, 50 - dead_band) <= s <= np.percentile(
        hist, 50 + dead_band
    ):
        m = 1.0
    else:
        m = s / np.percentile(hist, 50)
    return min(m, cap) if cap is not None else m


def test_multiplier_follows_the_authors_rule_on_a_hand_made_sequence():
    # Values chosen so that the band (s equal to the median), the cap (s >> median) and
    # even counts (median = mean of the two middle values) all occur.
    sequence = [0.4, 0.24, 0.24, 3.0, 0.24, 0.1, 0.5, 0.24, 9.0, 0.3, 0.24, 0.05, 0.2]
    size = 16
    for dead_band, cap in [(None, None), (1.0, 5.0), (10.0, None), (None, 2.0)]:
        seen = []
        hits = {"band": 0, "cap": 0}
        for s in sequence:
            seen.append(s)
            buffer = np.zeros(size, np.float32)
            buffer[: len(seen)] = seen[::-1]  # order must not matter
            got = gdtx.salr_multiplier(
                jnp.float32(s),
                jnp.asarray(buffer),
                len(seen),
                max_multiplier=cap,
                dead_band=dead_band,
            )
            expected = _official_rule(s, seen, dead_band, cap)
            np.testing.assert_allclose(float(got), expected, rtol=1e-6, err_msg=f"{seen}")
            raw = s / np.median(seen)
            hits["band"] += dead_band is not None and expected == 1.0 and raw != 1.0
            hits["cap"] += cap is not None and raw > cap
        if dead_band is not None and dead_band >= 10:
            # With the code's 1-point band and a short history, the band only ever
            # contains the median itself; the 10-point band is hit off the median.
            assert hits["band"] > 0, "the sequence never hits the dead band"
        if cap is not None:
            assert hits["cap"] > 0, "the sequence never hits the cap"


@pytest.mark.parametrize(
    ("s", "history", "expected", "why"),
    [
        (-0.5, [1.0, 2.0, -0.5], 0.0, "S < 0: no step rather than a negative rate"),
        (0.0, [1.0, 2.0, 0.0], 0.0, "S = 0"),
        (1.0, [0.0, 0.0, 1.0], 1.0, "zero median: the ratio means nothing, keep the base rate"),
        (-3.0, [-1.0, -2.0, -3.0], 1.0, "negative median"),
        (1e30, [1e-30, 1e-30, 1e30], 1.0, "median 1e-30 > 0 but S / median overflows float32"),
        (float("nan"), [1.0, 2.0, 3.0], 1.0, "NaN estimate"),
        (float("inf"), [1.0, 2.0, 3.0], 1.0, "infinite estimate"),
    ],
)
def test_multiplier_is_never_negative_or_infinite(s, history, expected, why):
    buffer = jnp.asarray(history + [0.0] * 5, jnp.float32)
    got = float(gdtx.salr_multiplier(jnp.float32(s), buffer, len(history)))
    assert got == expected, why
    capped = gdtx.salr_multiplier(jnp.float32(s), buffer, len(history), max_multiplier=0.5)
    assert float(capped) == min(expected, 0.5), why


def test_worked_run_on_a_quadratic():
    # SALR-SGD on 2 x^2 from x = 1, eta_0 = 0.1, gamma = 0.01, 5 + 5 steps (hand-derived:
    # S_k = 2 * 5 * gamma * |f'(x_k)| and m_k = S_k / median(S_1..S_k)).
    tx = gdtx.salr(optax.sgd(0.1), step_size=0.01)
    f = _quadratic(4.0)
    with jax.enable_x64(True):
        update = _jit_update(tx)
        params = jnp.array([1.0])
        state = tx.init(params)
        rows = []
        for _ in range(4):
            x = float(params[0])
            updates, state = update(jax.grad(f)(params), state, params, value_fn=f)
            params = optax.apply_updates(params, updates)
            rows.append((x, float(state.sharpness), float(state.multiplier)))
    expected = [(1.0, 0.4, 1.0), (0.6, 0.24, 0.75), (0.42, 0.168, 0.7)]
    expected.append((0.3024, 0.12096, 0.12096 / ((0.168 + 0.24) / 2)))
    np.testing.assert_allclose(rows, expected, rtol=1e-6)


def test_convex_run_keeps_the_multiplier_at_most_one():
    # On a convex quadratic S only decreases along the run, so S_k <= median.
    a = jnp.array([10.0, 1.0, 0.1])

    def f(x):
        return 0.5 * jnp.sum(a * x**2)

    tx = gdtx.salr(optax.sgd(0.05))

    @jax.jit
    def run(params):
        def step(carry, _):
            params, state = carry
            updates, state = tx.update(jax.grad(f)(params), state, params, value_fn=f)
            return (optax.apply_updates(params, updates), state), (
                state.sharpness,
                state.multiplier,
            )

        _, trace = jax.lax.scan(step, (params, tx.init(params)), length=300)
        return trace

    sharpness, multiplier = run(jnp.array([1.0, -2.0, 3.0]))
    assert np.all(np.diff(np.asarray(sharpness)) <= 1e-7)
    assert np.all(np.asarray(multiplier) <= 1.0 + 1e-6)
    assert float(multiplier[-1]) < 0.9  # and it does bite


def test_sharper_loss_at_the_same_point_gets_a_larger_multiplier():
    # S is exactly linear in the curvature at a fixed point, so after a history of
    # estimates on a, an estimate on 3a gives three times the multiplier.
    tx = gdtx.salr(optax.sgd(0.0), step_size=0.01)
    update = _jit_update(tx)
    params = jnp.array([0.5])
    state = tx.init(params)
    for _ in range(3):
        _, state = update(jnp.zeros(1), state, params, value_fn=_quadratic(2.0))
    base = float(state.sharpness)
    _, state = update(jnp.zeros(1), state, params, value_fn=_quadratic(6.0))
    np.testing.assert_allclose(float(state.sharpness), 3 * base, rtol=1e-5)
    # history (S, S, S, 3S): median S -> multiplier 3; two more 3S: median 2S -> 1.5
    np.testing.assert_allclose(float(state.multiplier), 3.0, rtol=1e-5)
    for _ in range(2):
        _, state = update(jnp.zeros(1), state, params, value_fn=_quadratic(6.0))
    np.testing.assert_allclose(float(state.multiplier), 1.5, rtol=1e-5)


def test_history_is_a_window_of_the_last_estimates():
    tx = gdtx.salr(optax.sgd(0.0), step_size=0.01, ascent_steps=1, descent_steps=1, history=3)
    params = jnp.array([1.0])
    state = tx.init(params)
    curvatures = [1.0, 2.0, 3.0, 4.0, 0.5]  # S = 2 gamma a |x| = 0.02 a
    update = jax.jit(lambda s, a: tx.update(jnp.zeros(1), s, params, value_fn=_quadratic(a)))
    for a in curvatures:
        _, state = update(state, a)
    assert int(state.history_count) == 5
    np.testing.assert_allclose(sorted(np.asarray(state.history)), [0.01, 0.06, 0.08], rtol=1e-5)
    # median of the window (0.06, 0.08, 0.01) is 0.06, not the full history's 0.04.
    np.testing.assert_allclose(float(state.multiplier), 0.01 / 0.06, rtol=1e-5)


def test_non_finite_estimates_are_not_recorded():
    tx = gdtx.salr(optax.sgd(1.0), step_size=0.01, ascent_steps=1, descent_steps=1)
    params = jnp.array([1.0])
    state = tx.init(params)
    _, state = tx.update(jnp.ones(1), state, params, value_fn=_quadratic(1.0))
    updates, state = tx.update(
        jnp.ones(1), state, params, value_fn=lambda x: jnp.sum(x) / jnp.sum(x - x)
    )
    assert int(state.history_count) == 1
    assert float(state.multiplier) == 1.0
    np.testing.assert_array_equal(updates, [-1.0])


def test_every_k_steps_reuses_the_multiplier_and_skips_the_walk():
    f = _quadratic(4.0)
    tx = gdtx.salr(optax.sgd(0.1), step_size=0.01, every=3)
    params = jnp.array([1.0])
    state = tx.init(params)
    nan_fn = lambda x: jnp.full((), jnp.nan) * jnp.sum(x)  # noqa: E731
    step = jax.jit(lambda g, s, p, fn_is_nan: tx.update(g, s, p, value_fn=f))
    step_nan = jax.jit(lambda g, s, p: tx.update(g, s, p, value_fn=nan_fn))
    seen = []
    for k in range(7):
        due = k % 3 == 0
        # Off steps get a NaN value_fn: it must never be evaluated (lax.cond).
        if due:
            updates, state = step(jax.grad(f)(params), state, params, False)
        else:
            updates, state = step_nan(jax.grad(f)(params), state, params)
        assert np.all(np.isfinite(updates)), k
        params = optax.apply_updates(params, updates)
        seen.append((float(state.sharpness), float(state.multiplier), int(state.history_count)))
    assert [c for _, _, c in seen] == [1, 1, 1, 2, 2, 2, 3]
    assert seen[1][:2] == seen[0][:2] and seen[2][:2] == seen[0][:2]
    assert seen[3][0] != seen[0][0]


@pytest.mark.parametrize(
    "inner",
    [
        lambda lr: optax.adam(lr),
        lambda lr: gdtx.adabelief(lr),
        lambda lr: optax.sgd(lr, momentum=0.9),
    ],
    ids=["adam", "adabelief", "momentum"],
)
def test_scaling_the_update_is_scaling_the_learning_rate(inner):
    # The documented equivalence: the state of these optimizers does not depend on the
    # learning rate, so SALR's u_k = m_k inner(g_k) is inner with rate eta_0 m_k.
    rng = np.random.default_rng(3)
    a = jnp.asarray(rng.uniform(0.5, 5.0, size=4))

    def f(x):
        return 0.5 * jnp.sum(a * (x - 1.0) ** 2) + 0.1 * jnp.sum(x**4)

    lr = 0.05
    tx = gdtx.salr(inner(lr), step_size=0.01, history=8)
    ref = optax.inject_hyperparams(inner)(lr)
    update = jax.jit(lambda g, s, p: tx.update(g, s, p, value_fn=f))
    ref_update = jax.jit(ref.update)
    params = ref_params = jnp.asarray(rng.normal(size=4))
    state, ref_state = tx.init(params), ref.init(ref_params)
    multipliers = []
    for _ in range(30):
        updates, state = update(jax.grad(f)(params), state, params)
        params = optax.apply_updates(params, updates)
        multipliers.append(float(state.multiplier))
        ref_state.hyperparams["lr"] = jnp.asarray(lr * multipliers[-1])
        ref_updates, ref_state = ref_update(jax.grad(f)(ref_params), ref_state, ref_params)
        ref_params = optax.apply_updates(ref_params, ref_updates)
    assert len(set(np.round(multipliers, 4))) > 5  # the multiplier actually varies
    np.testing.assert_allclose(params, ref_params, rtol=2e-5, atol=1e-6)


def test_salr_does_not_move_the_parameters_it_measures_at():
    # The walk works on copies: with a zero inner step the parameters stay put exactly.
    tx = gdtx.salr(optax.sgd(0.0))
    params = {"w": jnp.array([0.3, -0.7]), "b": jnp.array(2.0)}

    def f(p):
        return jnp.sum(p["w"] ** 2) + p["b"] ** 2

    updates, _ = tx.update(jax.grad(f)(params), tx.init(params), params, value_fn=f)
    assert all(float(jnp.max(jnp.abs(u))) == 0.0 for u in jax.tree.leaves(updates))


def test_bfloat16_parameters_are_walked_in_float32():
    # In bfloat16, 1 + 1e-3 == 1: the walk would not move and S would be 0.
    f = _quadratic(4.0)
    s16 = gdtx.sharpness_estimate(f, jnp.array([1.0], jnp.bfloat16))
    s32 = gdtx.sharpness_estimate(f, jnp.array([1.0], jnp.float32))
    np.testing.assert_allclose(float(s16), float(s32), rtol=1e-2)
    assert float(s16) > 0


# --- SAM and ASAM ----------------------------------------------------------------------


def _sam_reference(a, x, steps, lr, rho, adaptive, eps=1e-12):
    """NumPy transcription of davda54/sam's two calls with SGD, on f = x A x / 2."""
    x = np.array(x, np.float64)
    for _ in range(steps):
        g = a @ x
        t = np.abs(x) if adaptive else np.ones_like(x)
        e = rho * t * t * g / (np.linalg.norm(t * g) + eps)
        x = x - lr * (a @ (x + e))
    return x


@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
def test_sam_matches_hand_computed_steps(adaptive):
    a = np.array([[3.0, 1.0], [1.0, 2.0]])
    x0 = np.array([1.0, -0.5])
    rho, lr = 0.1, 0.2
    # Two steps written out by hand for SAM: g0 = A x0 = (2.5, 0), e0 = (0.1, 0),
    # x1 = x0 - 0.2 A (1.1, -0.5) = (0.44, -0.52).
    if not adaptive:
        np.testing.assert_allclose(_sam_reference(a, x0, 1, lr, rho, False), [0.44, -0.52])
    tx = gdtx.sam(optax.sgd(lr), rho, adaptive=adaptive)

    def f(x):
        return 0.5 * x @ (jnp.asarray(a) @ x)

    with jax.enable_x64(True):
        params = jnp.asarray(x0)
        state = tx.init(params)
        for _ in range(2):
            updates, state = tx.update(jax.grad(f)(params), state, params, grad_fn=jax.grad(f))
            params = optax.apply_updates(params, updates)
        expected = _sam_reference(a, x0, 2, lr, rho, adaptive)
        np.testing.assert_allclose(params, expected, rtol=1e-12)
        # ...and the tolerance separates SAM from ASAM and from plain SGD.
        other = _sam_reference(a, x0, 2, lr, rho, not adaptive)
        sgd = _sam_reference(a, x0, 2, lr, 0.0, False)
        assert np.max(np.abs(other - expected)) > 1e-4
        assert np.max(np.abs(sgd - expected)) > 1e-4


def test_sam_norm_is_global_over_the_tree():
    # grad_fn = identity, so SGD(1) returns minus the point it was evaluated at.
    params = {"u": jnp.array([3.0]), "v": jnp.array([4.0])}
    tx = gdtx.sam(optax.sgd(1.0), rho=1.0, eps=0.0)
    updates, _ = tx.update(params, tx.init(params), params, grad_fn=lambda p: p)
    np.testing.assert_allclose(updates["u"], [-3.6])  # 3 + 3 / 5
    np.testing.assert_allclose(updates["v"], [-4.8])


def _nan_grad_fn(params):
    return jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), params)


@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
@pytest.mark.parametrize("transform", ["eager", "jit", "vmap"])
def test_zero_gradient_gives_no_perturbation_and_no_nan(adaptive, transform):
    # optax.contrib.sam divides by the norm without eps and blends branches arithmetically:
    # a zero gradient gives NaN there. Here the ascent branch is not taken, so even a
    # grad_fn that returns NaN cannot leak.
    tx = gdtx.sam(optax.sgd(0.1), 0.05, adaptive=adaptive)
    params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
    zeros = jax.tree.map(jnp.zeros_like, params)

    def step(g, p):
        return tx.update(g, tx.init(p), p, grad_fn=_nan_grad_fn)[0]

    if transform == "jit":
        step = jax.jit(step)
    if transform == "vmap":
        batched = jax.tree.map(lambda x: jnp.stack([x, x]), (zeros, params))
        updates = jax.vmap(step)(*batched)
    else:
        updates = step(zeros, params)
    for u in jax.tree.leaves(updates):
        np.testing.assert_array_equal(u, np.zeros_like(u))


def test_asam_with_zero_weights_takes_no_perturbation():
    # T g = |w| g = 0 at w = 0 even though g != 0: no division by eps alone.
    tx = gdtx.sam(optax.sgd(1.0), 0.05, adaptive=True)
    params = jnp.zeros(3)
    grads = jnp.array([1.0, 2.0, 3.0])
    updates, _ = tx.update(grads, tx.init(params), params, grad_fn=_nan_grad_fn)
    np.testing.assert_array_equal(updates, -grads)


def test_rho_zero_is_the_inner_optimizer_and_never_calls_grad_fn():
    tx = gdtx.sam(optax.sgd(0.5), rho=0.0)
    params = jnp.array([1.0, 2.0])
    grads = jnp.array([0.3, -0.1])
    updates, _ = jax.jit(lambda g, p: tx.update(g, tx.init(p), p, grad_fn=_nan_grad_fn))(
        grads, params
    )
    np.testing.assert_allclose(updates, -0.5 * grads)


def test_tiny_gradient_gives_a_tiny_finite_perturbation():
    params = jnp.array([1.0, 1.0])
    grads = jnp.array([1e-15, 0.0])
    tx = gdtx.sam(optax.sgd(1.0), 0.05)
    updates, _ = tx.update(grads, tx.init(params), params, grad_fn=lambda p: p)
    # The ascent is taken (|g| > 0) but |g| = 1e-15 << eps = 1e-12: e = rho g / (|g| +
    # eps) ~ 5e-5 is tiny and finite, where dividing by |g| alone would give (rho, 0).
    e = 0.05 * 1e-15 / (1e-15 + 1e-12)
    np.testing.assert_allclose(updates, [-(1.0 + e), -1.0], rtol=1e-7)
    assert e < 1e-4


# --- declared extra arguments ----------------------------------------------------------


@pytest.mark.parametrize(
    ("tx", "name", "owner"),
    [
        (gdtx.salr(optax.sgd(0.1)), "value_fn", "gdtx.salr"),
        (gdtx.salr(optax.sgd(0.1), per_example=True), "per_example_value_fn", "gdtx.salr"),
        (gdtx.sam(optax.sgd(0.1)), "grad_fn", "gdtx.sam"),
    ],
    ids=["salr", "salr_per_example", "sam"],
)
def test_missing_extra_argument_raises_naming_it(tx, name, owner):
    params = jnp.ones(2)
    with pytest.raises(TypeError, match=rf"^{owner} requires the extra argument `{name}`"):
        tx.update(params, tx.init(params), params, some_other_arg=1)
    assert gdtx.required_extra_args(tx) == {name}


def test_per_example_salr_does_not_accept_a_batch_value_fn_in_its_place():
    tx = gdtx.salr(optax.sgd(0.1), per_example=True)
    params = jnp.ones(2)
    with pytest.raises(TypeError, match="`per_example_value_fn`"):
        tx.update(params, tx.init(params), params, value_fn=jnp.sum)


def test_declarations_compose_through_wrappers_and_gdtx_chain():
    inner = gdtx.salr(optax.sgd(0.1))
    assert gdtx.required_extra_args(gdtx.sam(inner)) == {"grad_fn", "value_fn"}
    chained = gdtx.chain(optax.clip_by_global_norm(1.0), gdtx.sam(optax.sgd(0.1)))
    assert gdtx.required_extra_args(chained) == {"grad_fn"}


def test_salr_in_an_optax_chain_with_a_transformation_that_ignores_extra_args():
    f = _quadratic(2.0)
    params = jnp.array([1.0, -1.0])
    chained = optax.chain(optax.clip_by_global_norm(1.0), gdtx.salr(optax.sgd(0.1)))
    alone = gdtx.salr(optax.sgd(0.1))
    g = jax.grad(f)(params)
    updates, _ = chained.update(g, chained.init(params), params, value_fn=f, unrelated=3)
    clipped = g / jnp.linalg.norm(g)
    expected, _ = alone.update(clipped, alone.init(params), params, value_fn=f)
    np.testing.assert_allclose(updates, expected, rtol=1e-6)


def test_sam_forwards_its_extra_arguments_to_the_inner_transformation():
    # SAM around SALR: SALR receives value_fn through SAM's update.
    f = _quadratic(2.0)
    tx = gdtx.sam(gdtx.salr(optax.sgd(0.1), step_size=0.01), rho=0.05)
    params = jnp.array([1.0])
    updates, state = tx.update(
        jax.grad(f)(params), tx.init(params), params, grad_fn=jax.grad(f), value_fn=f
    )
    np.testing.assert_allclose(float(state.inner_state.sharpness), 0.2, rtol=1e-5)
    np.testing.assert_allclose(updates, [-0.1 * 2.0 * 1.05], rtol=1e-6)


def test_inject_hyperparams_over_salr_and_sam():
    f = _quadratic(3.0)
    params = jnp.array([0.8, -0.4])
    injected = optax.inject_hyperparams(gdtx.salr, static_args=("history",))(
        optax.sgd(0.1), step_size=0.02, max_multiplier=1.5, dead_band=2.0, history=4
    )
    plain = gdtx.salr(optax.sgd(0.1), step_size=0.02, max_multiplier=1.5, dead_band=2.0, history=4)
    sam_injected = optax.inject_hyperparams(gdtx.sam)(optax.sgd(0.1), rho=0.05)
    sam_plain = gdtx.sam(optax.sgd(0.1), rho=0.05)
    for a, b, kw in [
        (injected, plain, {"value_fn": f}),
        (sam_injected, sam_plain, {"grad_fn": jax.grad(f)}),
    ]:
        pa = pb = params
        sa, sb = a.init(pa), b.init(pb)
        step_a = jax.jit(lambda g, s, p, a=a, kw=kw: a.update(g, s, p, **kw))
        for _ in range(6):
            ua, sa = step_a(jax.grad(f)(pa), sa, pa)
            ub, sb = b.update(jax.grad(f)(pb), sb, pb, **kw)
            pa, pb = optax.apply_updates(pa, ua), optax.apply_updates(pb, ub)
        np.testing.assert_allclose(pa, pb, rtol=1e-6)


def test_salr_needs_params():
    tx = gdtx.salr(optax.sgd(0.1))
    with pytest.raises(ValueError, match="gdtx.salr needs the current parameters"):
        tx.update(jnp.ones(1), tx.init(jnp.ones(1)), None, value_fn=jnp.sum)


def test_inner_must_be_a_transformation():
    with pytest.raises(TypeError, match="`inner` must be an optax transformation"):
        gdtx.salr(0.1)
    with pytest.raises(TypeError, match="`inner` must be an optax transformation"):
        gdtx.sam(optax.sgd)


# --- issue 14: complex parameters, types, empty and masked subtrees, shapes --------------

_A = jnp.asarray([1 + 1j, -0.5 + 2j, 0.3 - 1j], jnp.complex64)
_Z0 = jnp.asarray([0.2 - 0.1j, 1.0 + 0.5j, -0.4 + 0.3j], jnp.complex64)


def _complex_loss(p):
    z = p["z"]
    weights = jnp.asarray([1.0, 3.0, 0.5])
    return jnp.sum(weights * jnp.abs(z - _A) ** 2) + 0.1 * jnp.sum(jnp.abs(z) ** 4)


def _split_loss(p):  # the same loss of the real and imaginary parts as two real leaves
    return _complex_loss({"z": p["x"] + 1j * p["y"]})


def _conj_grad(loss):
    # What `update` receives for complex leaves (optax's convention), and what
    # grad_fn must return: jax.grad, conjugated.
    return lambda p: jax.tree.map(jnp.conj, jax.grad(loss)(p))


def test_complex_sharpness_estimate_equals_the_real_split():
    # Before: the walk moved along jax.grad itself, which for a complex leaf is the
    # conjugate of the ascent direction (S = 0.81 here instead of 1.33).
    for per_example in (False, True):
        if per_example:
            complex_fn = lambda p: jnp.stack([_complex_loss(p), 2 * _complex_loss(p)])  # noqa: E731
            split_fn = lambda p: jnp.stack([_split_loss(p), 2 * _split_loss(p)])  # noqa: E731
        else:
            complex_fn, split_fn = _complex_loss, _split_loss
        kw = {"step_size": 0.01, "per_example": per_example}
        s_complex = gdtx.sharpness_estimate(complex_fn, {"z": _Z0}, **kw)
        s_split = gdtx.sharpness_estimate(split_fn, {"x": _Z0.real, "y": _Z0.imag}, **kw)
        np.testing.assert_allclose(float(s_complex), float(s_split), rtol=1e-5)
        assert float(s_split) > 1.0


@pytest.mark.parametrize("method", ["salr", "sam"])
def test_complex_trajectory_equals_the_real_split(method):
    def make():
        if method == "salr":
            return gdtx.salr(optax.sgd(0.05), step_size=0.01), "value_fn"
        return gdtx.sam(optax.sgd(0.05), rho=0.1), "grad_fn"

    finals = []
    for loss, params in (
        (_complex_loss, {"z": _Z0}),
        (_split_loss, {"x": _Z0.real, "y": _Z0.imag}),
    ):
        tx, name = make()
        fn = loss if name == "value_fn" else _conj_grad(loss)
        step = jax.jit(lambda g, s, p, tx=tx, name=name, fn=fn: tx.update(g, s, p, **{name: fn}))
        state = tx.init(params)
        for _ in range(40):
            updates, state = step(_conj_grad(loss)(params), state, params)
            params = optax.apply_updates(params, updates)
        finals.append(params)
    (complex_final,), split = jax.tree.leaves(finals[0]), finals[1]
    np.testing.assert_allclose(complex_final, split["x"] + 1j * split["y"], rtol=2e-5, atol=1e-6)


def test_asam_scales_a_complex_leaf_by_its_modulus():
    # T = |w| element-wise (the modulus, real): e = rho T^2 g / |T g|, |.| over |g_i|^2.
    w = jnp.asarray([3 + 4j, -1j], jnp.complex64)
    g = jnp.asarray([1 - 1j, 2 + 0.5j], jnp.complex64)
    tx = gdtx.sam(optax.sgd(1.0), rho=0.5, adaptive=True, eps=0.0)
    # grad_fn = identity: the update is minus the perturbed point.
    updates, _ = tx.update(g, tx.init(w), w, grad_fn=lambda p: p)
    t = np.abs(np.asarray(w))
    tg = t * np.asarray(g)
    expected = np.asarray(w) + 0.5 * t * tg / np.sqrt(np.sum(np.abs(tg) ** 2))
    np.testing.assert_allclose(-np.asarray(updates), expected, rtol=1e-6)


_TXS = {
    "salr": (lambda: gdtx.salr(optax.sgd(0.1), history=4), "value_fn", "gdtx.salr"),
    "sam": (lambda: gdtx.sam(optax.sgd(0.1)), "grad_fn", "gdtx.sam"),
    "asam": (lambda: gdtx.sam(optax.sgd(0.1), adaptive=True), "grad_fn", "gdtx.sam"),
}


def _never_called(_):
    raise AssertionError("the look-around function must not be called here")


@pytest.mark.parametrize("name", list(_TXS))
def test_integer_params_are_refused_at_init(name):
    make, _, owner = _TXS[name]
    with pytest.raises(TypeError, match=rf"{owner}\b.*\['n'\].*int32"):
        make().init({"w": jnp.ones(2), "n": jnp.ones(2, jnp.int32)})
    with pytest.raises(TypeError, match=r"gdtx\.sharpness_estimate\b.*int32"):
        gdtx.sharpness_estimate(jnp.sum, jnp.ones(2, jnp.int32))


@pytest.mark.parametrize("name", list(_TXS))
def test_empty_subtrees_skip_the_look_around(name):
    make, fn_name, _ = _TXS[name]
    tx = make()
    for update in (tx.update, _jit_update(tx)):
        updates, _ = update({}, tx.init({}), {}, **{fn_name: _never_called})
        assert updates == {}
    params = {"w": jnp.ones(3), "b": jnp.ones(2)}
    grads = {"w": jnp.full(3, 0.5), "b": jnp.full(2, -0.5)}
    masked = optax.masked(tx, {"w": False, "b": False}, mask_compatible_extra_args=True)
    updates, _ = masked.update(grads, masked.init(params), params, **{fn_name: _never_called})
    assert all(np.array_equal(updates[k], grads[k]) for k in grads)
    multi = optax.multi_transform(
        {"a": tx, "b": optax.sgd(1.0)}, {"w": "b", "b": "b"}, mask_compatible_extra_args=True
    )
    updates, _ = multi.update(grads, multi.init(params), params, **{fn_name: _never_called})
    assert all(np.array_equal(updates[k], -grads[k]) for k in grads)


@pytest.mark.parametrize("name", list(_TXS))
def test_a_partial_mask_is_refused_with_the_fix_and_the_fix_works(name):
    # Inside optax.masked, value_fn / grad_fn would receive MaskedNodes in place of
    # the unselected leaves (the user's function of the whole tree fails on them).
    make, fn_name, owner = _TXS[name]
    params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([0.5])}
    loss = lambda p: jnp.sum(p["w"] ** 2) + 3 * jnp.sum(p["b"] ** 2)  # noqa: E731
    fn = loss if fn_name == "value_fn" else jax.grad(loss)
    mask = {"w": True, "b": False}
    grads = jax.grad(loss)(params)
    outside = optax.masked(make(), mask, mask_compatible_extra_args=True)
    with pytest.raises(
        ValueError,
        match=rf"{owner} inside optax\.masked.*`{fn_name}`.*{owner}\(optax\.masked\(inner, mask\)",
    ):
        outside.update(grads, outside.init(params), params, **{fn_name: fn})
    # The fix named in the message: the mask inside. The look-around sees the whole
    # tree; the selected leaves get the inner update, the others pass SAM's / SALR's
    # gradient through (as optax.masked passes its input), for the user to route.
    inner_tx = {
        "salr": lambda i: gdtx.salr(i, history=4),
        "sam": gdtx.sam,
        "asam": lambda i: gdtx.sam(i, adaptive=True),
    }
    tx = inner_tx[name](optax.masked(optax.sgd(0.1), mask))
    updates, _ = _jit_update(tx)(grads, tx.init(params), params, **{fn_name: fn})
    full = {
        "salr": lambda: gdtx.salr(optax.sgd(0.1), history=4),
        "sam": lambda: gdtx.sam(optax.sgd(0.1)),
        "asam": lambda: gdtx.sam(optax.sgd(0.1), adaptive=True),
    }[name]()
    expected, _ = full.update(grads, full.init(params), params, **{fn_name: fn})
    np.testing.assert_allclose(updates["w"], expected["w"], rtol=1e-6)
    np.testing.assert_allclose(updates["b"], -expected["b"] / 0.1, rtol=1e-6)


@pytest.mark.parametrize("name", list(_TXS))
def test_a_gradient_of_the_wrong_shape_is_refused(name):
    # Before: a (1,) gradient for a (4,) parameter was broadcast.
    make, fn_name, owner = _TXS[name]
    params = {"w": jnp.linspace(1.0, 2.0, 4)}
    fn = (
        (lambda p: jnp.sum(p["w"] ** 2))
        if fn_name == "value_fn"
        else jax.grad(lambda p: jnp.sum(p["w"] ** 2))
    )
    tx = make()
    with pytest.raises(ValueError, match=rf"{owner}: the update at \['w'\] has shape \(1,\)"):
        tx.update({"w": jnp.ones(1)}, tx.init(params), params, **{fn_name: fn})


def test_sam_grad_fn_must_return_a_gradient_like_the_updates():
    params = {"w": jnp.ones(3)}
    tx = gdtx.sam(optax.sgd(0.1))
    with pytest.raises(ValueError, match=r"gdtx\.sam: `grad_fn\(params\)` must return"):
        tx.update(params, tx.init(params), params, grad_fn=lambda p: {"w": jnp.ones(1)})
    with pytest.raises(TypeError, match=r"gdtx\.sam: `grad_fn\(params\)` returned a complex"):
        tx.update(params, tx.init(params), params, grad_fn=lambda p: {"w": p["w"] * 1j})


@pytest.mark.parametrize(
    ("make", "error", "pattern"),
    [
        (
            lambda: gdtx.salr(optax.sgd(0.1), ascent_steps=2.0),
            TypeError,
            r"gdtx\.salr: `ascent_steps` must be an integer, got 2\.0",
        ),
        (
            lambda: gdtx.salr(optax.sgd(0.1), descent_steps=float("nan")),
            TypeError,
            r"`descent_steps` must be an integer",
        ),
        (
            lambda: gdtx.salr(optax.sgd(0.1), every=True),
            TypeError,
            r"`every` must be an integer, got True",
        ),
        (
            lambda: gdtx.salr(optax.sgd(0.1), history=4.0),
            TypeError,
            r"gdtx\.salr: `history` must be an integer",
        ),
        (
            lambda: gdtx.salr(optax.sgd(0.1), dead_band="1"),
            TypeError,
            r"gdtx\.salr: `dead_band` must be a real number or None",
        ),
        (
            lambda: gdtx.salr(optax.sgd(0.1), dead_band=[1.0, 60.0]),
            ValueError,
            r"`dead_band` must be in \[0, 50\)",
        ),
        (
            lambda: gdtx.salr(optax.sgd(0.1), max_multiplier=float("inf")),
            ValueError,
            r"`max_multiplier` must be finite",
        ),
        (
            lambda: gdtx.salr(optax.sgd(0.1), per_example="yes"),
            TypeError,
            r"`per_example` must be True or False",
        ),
        (
            lambda: gdtx.sam(optax.sgd(0.1), rho=float("inf")),
            ValueError,
            r"gdtx\.sam: `rho` must be finite",
        ),
        (
            lambda: gdtx.sam(optax.sgd(0.1), rho=None),
            TypeError,
            r"gdtx\.sam: `rho` must be a real number",
        ),
        (
            lambda: gdtx.sam(optax.sgd(0.1), adaptive=1),
            TypeError,
            r"gdtx\.sam: `adaptive` must be True or False",
        ),
        (
            lambda: gdtx.sharpness_estimate(jnp.sum, jnp.ones(1), ascent_steps=2.0),
            TypeError,
            r"gdtx\.sharpness_estimate: `ascent_steps`",
        ),
    ],
)
def test_hyperparameter_types(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


def test_a_traced_history_names_static_args():
    # Before: a raw ConcretizationTypeError from int(history).
    tx = optax.inject_hyperparams(gdtx.salr)(optax.sgd(0.1), history=4)
    with pytest.raises(TypeError, match=r"gdtx\.salr: `history` fixes a shape.*static_args"):
        jax.jit(tx.init)(jnp.ones(2))
    tx = optax.inject_hyperparams(gdtx.salr, static_args=("history",))(optax.sgd(0.1), history=4)
    assert jax.jit(tx.init)(jnp.ones(2)).inner_state.history.shape == (4,)


# --- a model that must learn -----------------------------------------------------------


@pytest.mark.parametrize("method", ["salr_sgd", "salr_per_example", "sam"])
def test_digits_mlp_learns(tiny_digits, method):
    from tests import tiny_digits as td

    data = tiny_digits
    xs, ys = td.batches(data, 32, 150, seed=0)
    if method == "salr_sgd":
        tx = gdtx.salr(optax.sgd(0.3), every=2)
    elif method == "salr_per_example":
        tx = gdtx.salr(optax.sgd(0.3), every=2, per_example=True, ascent_steps=2, descent_steps=2)
    else:
        tx = gdtx.sam(optax.sgd(0.3), 0.05)

    @jax.jit
    def train(params):
        def step(carry, batch):
            params, state = carry
            x, y = batch

            def value_fn(p):
                return td.loss(p, x, y)

            extra = {
                "value_fn": value_fn,
                "per_example_value_fn": lambda p: td.per_example_loss(p, x, y),
                "grad_fn": jax.grad(value_fn),
            }
            updates, state = tx.update(jax.grad(value_fn)(params), state, params, **extra)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), (xs, ys))
        return params

    params = train(td.init_params(jax.random.key(0)))
    accuracy = float(td.accuracy(params, data.x_test, data.y_test))
    assert accuracy > 0.85, accuracy


# --- slow tier: the comparison script of docs/sharpness.md --------------------------------


@pytest.mark.slow
def test_comparison_script_runs_in_smoke_mode(tmp_path, capsys):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "docs" / "scripts" / "sharpness_comparison.py"
    spec = importlib.util.spec_from_file_location("sharpness_comparison", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--smoke", "--figures", str(tmp_path)])
    out = capsys.readouterr().out
    assert "### Sharp or flat" in out and "### Digits" in out
    assert (tmp_path / "sharpness_sharp_or_flat.png").stat().st_size > 0
    assert (tmp_path / "sharpness_digits.png").stat().st_size > 0
