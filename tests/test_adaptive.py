"""diffGrad, RAdam, ``rectify`` and AdaGrad-Norm: closed forms and defining properties.

The recorded PyTorch trajectories are replayed in
``tests/reference/test_adaptive_reference.py``; here every expected value is
derived by hand (float64, under ``jax.enable_x64``).
"""

from __future__ import annotations

import math
import re
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdtx


def _run_directions(tx, grads_seq):
    """Updates of ``tx`` for a sequence of gradient trees (eager, x64-safe)."""
    state = tx.init(grads_seq[0])
    out = []
    for g in grads_seq:
        u, state = tx.update(g, state)
        out.append(u)
    return out, state


def _random_grads(num, shape=(5,), seed=0, scale_decay=0.0):
    rng = np.random.default_rng(seed)
    return [
        {"w": jnp.asarray(rng.standard_normal(shape) * math.exp(-scale_decay * t))}
        for t in range(num)
    ]


def _rho(t, b2):
    rho_inf = 2 / (1 - b2) - 1
    return rho_inf - 2 * t * b2**t / (1 - b2**t), rho_inf


def _r(t, b2):
    rho, rho_inf = _rho(t, b2)
    return math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))


# --------------------------------------------------------------------------------------
# diffGrad


def test_diffgrad_first_step_friction_is_sigmoid_of_the_gradient():
    # g_0 = 0, so xi_1 = sigmoid(|g_1|), and Adam's first direction is sign(g_1) at eps=0.
    with jax.enable_x64(True):
        g = jnp.array([1e-3, -0.5, 2.0, -30.0])
        u, _ = gdtx.scale_by_diffgrad(eps=0.0).update(g, gdtx.scale_by_diffgrad().init(g))
        expected = np.sign(g) / (1 + np.exp(-np.abs(np.asarray(g))))
        np.testing.assert_allclose(u, expected, rtol=1e-14)


def test_diffgrad_halves_adam_under_a_constant_gradient():
    # From step 2 on, g_prev = g: the friction is exactly sigmoid(0) = 1/2.
    with jax.enable_x64(True):
        grads = [jnp.array([0.3, -4.0])] * 6
        ours, _ = _run_directions(gdtx.scale_by_diffgrad(eps=0.0), grads)
        adam, _ = _run_directions(optax.scale_by_adam(eps=0.0), grads)
        for t in range(1, 6):
            np.testing.assert_allclose(ours[t], 0.5 * adam[t], rtol=1e-14)


def test_diffgrad_matches_hand_computed_steps():
    with jax.enable_x64(True):
        b1, b2, eps, eps_root = 0.8, 0.95, 1e-3, 1e-4
        gs = [np.array([1.0, -2.0]), np.array([0.5, 1.0]), np.array([-3.0, 0.25])]
        tx = gdtx.scale_by_diffgrad(b1, b2, eps, eps_root)
        ours, state = _run_directions(tx, [jnp.asarray(g) for g in gs])
        m = v = prev = np.zeros(2)
        for t, g in enumerate(gs, start=1):
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g**2
            xi = 1 / (1 + np.exp(-abs(prev - g)))
            u = math.sqrt(1 - b2**t) / (1 - b1**t) * xi * m / (np.sqrt(v + eps_root) + eps)
            np.testing.assert_allclose(ours[t - 1], u, rtol=1e-14)
            prev = g
        np.testing.assert_array_equal(state.prev_grad, gs[-1])
        assert int(state.count) == 3


def test_diffgrad_friction_is_between_a_half_and_one():
    grads = _random_grads(20, seed=1)
    ours, _ = _run_directions(gdtx.scale_by_diffgrad(eps=0.0), grads)
    adam, _ = _run_directions(_torch_style_adam(), grads)
    for u, a in zip(ours, adam, strict=True):
        ratio = np.asarray(u["w"]) / np.asarray(a["w"])
        assert np.all(ratio >= 0.5 - 1e-6) and np.all(ratio < 1.0 + 1e-6), ratio


def _torch_style_adam():
    # Adam with eps on the raw root is optax's Adam with eps = 0 when eps = 0.
    return optax.scale_by_adam(eps=0.0)


# --------------------------------------------------------------------------------------
# RAdam


@pytest.mark.parametrize("b2", [0.999, 0.99])
def test_radam_constant_gradient_gives_r_t(b2):
    # With a constant gradient and eps = 0, Adam's direction is sign(g): the rectified
    # direction is r_t sign(g) once rho_t >= 5, and m_t / bc1 = g before.
    with jax.enable_x64(True):
        g = jnp.array([2.0, -0.25])
        ours, _ = _run_directions(gdtx.scale_by_radam(b2=b2, eps=0.0), [g] * 40)
        for t in range(1, 41):
            rho, _ = _rho(t, b2)
            expected = _r(t, b2) * np.sign(g) if rho >= 5 else np.asarray(g)
            np.testing.assert_allclose(ours[t - 1], expected, rtol=1e-12, err_msg=f"t={t}")


def test_radam_without_sgd_takes_no_step_below_the_threshold():
    with jax.enable_x64(True):
        g = jnp.array([2.0, -0.25])
        ours, _ = _run_directions(gdtx.scale_by_radam(eps=0.0, degenerated_to_sgd=False), [g] * 7)
        for t in range(1, 6):
            np.testing.assert_array_equal(ours[t - 1], 0.0)
        np.testing.assert_allclose(ours[5], _r(6, 0.999) * np.sign(g), rtol=1e-12)


def test_radam_state_exposes_adam_moments():
    tx = gdtx.scale_by_radam()
    params = {"w": jnp.ones(3)}
    _, state = tx.update(params, tx.init(params))
    assert isinstance(state, gdtx.RectifyState)
    assert isinstance(state.inner_state, optax.ScaleByAdamState)
    np.testing.assert_allclose(optax.tree.get(state, "mu")["w"], 0.1, rtol=1e-6)


# --------------------------------------------------------------------------------------
# rectify


def test_rectify_belief_equals_official_rectified_belief_at_eps_zero():
    # The only difference between the two is where eps sits; at eps = eps_root = 0 the
    # rectified branch r_t m_hat / sqrt(s_hat) and the fallback m_t / bc1 coincide.
    with jax.enable_x64(True):
        grads = _random_grads(60, seed=2, scale_decay=0.02)
        for sgd in (True, False):
            kw = {"eps": 0.0, "eps_root": 0.0}
            ours, _ = _run_directions(
                gdtx.rectify(gdtx.scale_by_belief(**kw), degenerated_to_sgd=sgd), grads
            )
            theirs, _ = _run_directions(
                gdtx.scale_by_belief(**kw, rectify=True, degenerated_to_sgd=sgd), grads
            )
            for t, (a, b) in enumerate(zip(ours, theirs, strict=True)):
                np.testing.assert_allclose(a["w"], b["w"], rtol=1e-12, err_msg=f"t={t + 1}")


def test_rectify_amsgrad_belief_uses_the_maximum_unlike_the_official_one():
    # Shrinking gradients and a short memory (b2 = 0.9) make max s_t > s_t, so the
    # rectified steps differ; below the threshold both are m_t / bc1.
    with jax.enable_x64(True):
        grads = _random_grads(60, seed=3, scale_decay=0.1)
        kw = {"b2": 0.9, "eps": 0.0, "eps_root": 0.0, "amsgrad": True}
        ours, _ = _run_directions(gdtx.rectify(gdtx.scale_by_belief(**kw), b2=0.9), grads)
        theirs, _ = _run_directions(gdtx.scale_by_belief(**kw, rectify=True), grads)
        below = [t for t in range(1, 61) if _rho(t, 0.9)[0] < 5]
        assert below == [1, 2, 3, 4, 5], below
        for t in below:
            np.testing.assert_allclose(ours[t - 1]["w"], theirs[t - 1]["w"], rtol=1e-12)
        ratio = [float(np.max(np.abs(a["w"] / b["w"]))) for a, b in zip(ours, theirs, strict=True)]
        assert max(ratio) <= 1 + 1e-12 and min(ratio) < 0.5, (min(ratio), max(ratio))


def test_rectify_optax_adam_equals_optax_radam():
    with jax.enable_x64(True):
        grads = _random_grads(30, seed=4)
        ours, _ = _run_directions(gdtx.rectify(optax.scale_by_adam()), grads)
        theirs, _ = _run_directions(optax.scale_by_radam(), grads)
        # rho_t - 5 is a difference of numbers near rho_inf ~ 2000, evaluated in a
        # different order by optax: ~1e-11 relative on the first rectified steps.
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(a["w"], b["w"], rtol=1e-10)


def test_rectify_without_a_first_moment_raises():
    with pytest.raises(ValueError, match=r"gdtx\.rectify: .*no first moment `mu`"):
        gdtx.rectify(optax.scale_by_rss()).init({"w": jnp.ones(2)})


def test_rectify_with_two_first_moments_raises():
    inner = optax.chain(optax.scale_by_adam(), optax.scale_by_adam())
    with pytest.raises(ValueError, match=r"several first moments `mu`"):
        gdtx.rectify(inner).init({"w": jnp.ones(2)})


def test_rectify_ignores_params_named_mu():
    # Only NamedTuple fields count: a parameter called "mu" is not a first moment.
    params = {"mu": jnp.ones(2), "nu": jnp.ones(2)}
    tx = gdtx.rectify(optax.scale_by_adam())
    updates, _ = tx.update(params, tx.init(params))
    np.testing.assert_allclose(updates["mu"], 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("inner", "name"),
    [
        (lambda: optax.scale_by_adam(b2=0.99), "b2"),
        (lambda: gdtx.scale_by_belief(b2=0.99), "b2"),  # read through a nested closure
        (lambda: optax.scale_by_adam(b1=0.5), "b1"),
        (lambda: gdtx.scale_by_diffgrad(b1=0.5), "b1"),  # recorded by its builder
        (lambda: optax.chain(optax.clip(1.0), optax.scale_by_adam(b2=0.9)), "b2"),
        (lambda: _ema_direction(0.7), "b1"),  # a foreign inner: probed
    ],
)
def test_rectify_warns_when_betas_differ_from_the_inner(inner, name):
    with pytest.warns(UserWarning, match=rf"`{name}=0\.\d+` differs from the inner"):
        gdtx.rectify(inner())


class _EmaState(NamedTuple):
    mu: jax.Array


def _ema_direction(decay):
    """A third-party momentum direction: its decay is not called b1 anywhere."""

    def update(g, state, params=None):
        mu = jax.tree.map(lambda m, x: decay * m + (1 - decay) * x, state.mu, g)
        return mu, _EmaState(mu)

    return optax.GradientTransformation(
        lambda p: _EmaState(jax.tree.map(jnp.zeros_like, p)), update
    )


def test_rectify_reads_the_decays_recorded_by_gdtx_builders():
    from gdtx._core import hyperparams

    assert dict(hyperparams.recorded(gdtx.scale_by_belief(b1=0.8, b2=0.99))) == {
        "b1": 0.8,
        "b2": 0.99,
    }
    assert dict(hyperparams.recorded(optax.scale_by_adam())) == {}


def test_rectify_does_not_check_an_inner_it_cannot_run():
    needs_value = gdtx._core.extra_args.declare(
        optax.GradientTransformationExtraArgs(
            lambda p: _EmaState(p), lambda g, s, p=None, *, value: (g, s)
        ),
        ["value"],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gdtx.rectify(needs_value, b1=0.5)


def test_rectify_is_silent_when_betas_match():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gdtx.rectify(optax.scale_by_adam(b1=0.8, b2=0.99), b1=0.8, b2=0.99)
        gdtx.rectify(gdtx.scale_by_belief())
        gdtx.rectify(gdtx.scale_by_diffgrad())
        gdtx.rectify(_ema_direction(0.9))
        gdtx.rectify(optax.chain(optax.clip(1.0), optax.scale_by_adam()))


def test_rectify_passes_required_extra_args_through():
    inner = gdtx._core.extra_args.declare(optax.scale_by_adam(), ["value"])
    tx = gdtx.rectify(inner)
    assert gdtx.required_extra_args(tx) == frozenset({"value"})


def test_rectify_threshold_is_validated():
    with pytest.raises(ValueError, match=r"gdtx\.rectify: `threshold` must be >= 4, got 3\.5"):
        gdtx.rectify(optax.scale_by_adam(), threshold=3.5)


def test_rectify_works_with_traced_hyperparameters():
    params = {"w": jnp.array([1.0, -2.0])}

    def run(b2, threshold):
        tx = gdtx.rectify(optax.scale_by_adam(b2=b2), b2=b2, threshold=threshold)
        state = tx.init(params)
        for _ in range(8):
            u, state = tx.update(params, state)
        return u

    np.testing.assert_allclose(
        jax.jit(run)(0.99, 5.0)["w"], run(0.99, 5.0)["w"], rtol=1e-6, atol=1e-7
    )


# --------------------------------------------------------------------------------------
# AdaGrad-Norm


def test_adagrad_norm_matches_ward_algorithm_1():
    # b_t^2 = b_{t-1}^2 + ||g_t||^2 over the whole tree, THEN u_t = g_t / b_t.
    with jax.enable_x64(True):
        rng = np.random.default_rng(5)
        grads = [
            {
                "a": jnp.asarray(rng.standard_normal(3)),
                "b": jnp.asarray(rng.standard_normal((2, 2))),
            }
            for _ in range(6)
        ]
        b0_sq = 0.3
        ours, state = _run_directions(gdtx.scale_by_adagrad_norm(b0_sq), grads)
        acc = b0_sq
        for g, u in zip(grads, ours, strict=True):
            acc += sum(float(np.sum(np.asarray(x) ** 2)) for x in g.values())
            for k in g:
                np.testing.assert_allclose(u[k], np.asarray(g[k]) / math.sqrt(acc), rtol=1e-14)
        np.testing.assert_allclose(state.sum_of_squares, acc, rtol=1e-14)


def test_adagrad_norm_is_not_the_delayed_variant():
    # The delayed variant divides g_t by b_{t-1}: with b_0 = 0 its first step is
    # infinite. Here the first step is g_1 / ||g_1||, a unit vector.
    g = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([4.0])}
    u, _ = gdtx.scale_by_adagrad_norm().update(g, gdtx.scale_by_adagrad_norm().init(g))
    np.testing.assert_allclose(u["a"], [0.6, 0.0])
    np.testing.assert_allclose(u["b"], [0.8])


def test_adagrad_norm_zero_accumulator_gives_a_zero_update():
    tx = gdtx.scale_by_adagrad_norm(initial_accumulator_value=0.0, eps=0.0)
    zeros = {"a": jnp.zeros(3), "b": jnp.zeros(())}
    u, state = tx.update(zeros, tx.init(zeros))
    for x in jax.tree.leaves(u):
        np.testing.assert_array_equal(x, 0.0)
    # and it is differentiable there (no NaN gradient through the guard)
    grad = jax.grad(lambda z: tx.update({"a": z, "b": jnp.zeros(())}, state)[0]["a"].sum())(
        jnp.zeros(3)
    )
    assert np.all(np.isfinite(grad))


def test_adagrad_norm_eps_sits_outside_the_root():
    g = jnp.array([3.0, 4.0])
    u, _ = gdtx.scale_by_adagrad_norm(eps=1.0).update(g, gdtx.scale_by_adagrad_norm().init(g))
    np.testing.assert_allclose(u, g / 6.0, rtol=1e-6)


def test_adagrad_norm_couples_the_leaves_unlike_adagrad():
    # One scalar step size: a large gradient in one leaf shrinks the other's step.
    small = {"a": jnp.array([1.0]), "b": jnp.array([1.0])}
    large = {"a": jnp.array([1.0]), "b": jnp.array([100.0])}
    tx = gdtx.scale_by_adagrad_norm()
    u_small, _ = tx.update(small, tx.init(small))
    u_large, _ = tx.update(large, tx.init(large))
    assert float(u_large["a"][0]) < 0.02 * float(u_small["a"][0])
    ada = optax.scale_by_rss(initial_accumulator_value=0.0)
    np.testing.assert_allclose(
        ada.update(large, ada.init(large))[0]["a"], ada.update(small, ada.init(small))[0]["a"]
    )


def test_adagrad_norm_survives_a_learning_rate_that_breaks_gradient_descent():
    # f = 0.5 L ||x||^2 with L = 50: plain GD diverges for lr > 2 / L = 0.04. With
    # lr = 1 AdaGrad-Norm overshoots until b_t >= L / 2, then converges (Ward et al.).
    lipschitz, lr = 50.0, 1.0

    def f(x):
        return 0.5 * lipschitz * jnp.sum(x**2)

    def run(tx, steps=200):
        x = jnp.array([1.0, -2.0])
        state = tx.init(x)
        for _ in range(steps):
            u, state = tx.update(jax.grad(f)(x), state)
            x = optax.apply_updates(x, u)
        return x, state

    x_sgd, _ = run(optax.sgd(lr), steps=20)
    assert float(jnp.linalg.norm(x_sgd)) > 1e10
    x, state = run(gdtx.adagrad_norm(lr))
    assert float(jnp.linalg.norm(x)) < 1e-6
    b_final = math.sqrt(float(optax.tree.get(state, "sum_of_squares")))
    assert lipschitz * lr / 2 <= b_final < 10 * lipschitz * lr, b_final


# --- issue 14: parameters, hyperparameter types, states, dtype knobs -------------------

_ALIASES = {
    "diffgrad": (gdtx.diffgrad, gdtx.scale_by_diffgrad),
    "radam": (gdtx.radam, gdtx.scale_by_radam),
    "adagrad_norm": (gdtx.adagrad_norm, gdtx.scale_by_adagrad_norm),
}


@pytest.mark.parametrize("name", list(_ALIASES))
def test_integer_params_are_refused_at_init(name):
    alias, direction = _ALIASES[name]
    params = {"w": jnp.ones(3), "steps": jnp.arange(3)}
    for tx, owner in ((alias(0.1), f"gdtx.{name}"), (direction(), f"gdtx.scale_by_{name}")):
        with pytest.raises(TypeError, match=re.escape(owner) + r" .*\['steps'\].*int32"):
            tx.init(params)
    with pytest.raises(TypeError, match=r"gdtx\.rectify .*\['steps'\]"):
        gdtx.rectify(optax.scale_by_adam()).init(params)


@pytest.mark.parametrize("name", list(_ALIASES))
@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"learning_rate": None}, TypeError, r"`learning_rate` must be a real number or a sch"),
        ({"learning_rate": "0.1"}, TypeError, r"`learning_rate` must be a real number"),
        ({"learning_rate": float("inf")}, ValueError, r"`learning_rate` must be finite"),
        ({"learning_rate": True}, TypeError, r"`learning_rate` must be a real number"),
        ({"eps": np.array([1e-8, -1.0])}, ValueError, r"`eps` must be >= 0"),
        ({"eps": "1e-8"}, TypeError, r"`eps` must be a real number"),
    ],
)
def test_hyperparameters_are_real_numbers(name, kwargs, error, pattern):
    alias, _ = _ALIASES[name]
    with pytest.raises(error, match=rf"gdtx\.{name}: " + pattern):
        alias(**{"learning_rate": 0.1, **kwargs})


@pytest.mark.parametrize(
    ("threshold", "error"), [("5", TypeError), (True, TypeError), (np.inf, ValueError)]
)
def test_threshold_is_a_finite_real_number(threshold, error):
    for factory, owner in ((gdtx.radam, "gdtx.radam"), (gdtx.rectify, "gdtx.rectify")):
        first = 0.1 if factory is gdtx.radam else optax.scale_by_adam()
        with pytest.raises(error, match=rf"{re.escape(owner)}: `threshold` must be"):
            factory(first, threshold=threshold)


@pytest.mark.parametrize("name", list(_ALIASES))
def test_update_without_params_at_zero_weight_decay(name):
    alias, _ = _ALIASES[name]
    grads = {"w": jnp.array([1.0, -2.0])}
    tx = alias(0.1)
    without, _ = tx.update(grads, tx.init(grads))
    with_params, _ = tx.update(grads, tx.init(grads), grads)
    np.testing.assert_array_equal(without["w"], with_params["w"])


@pytest.mark.parametrize(
    ("tx", "owner", "expected"),
    [
        (gdtx.radam(0.1), "gdtx.radam", "RectifyState"),
        (gdtx.diffgrad(0.1), "gdtx.diffgrad", "ScaleByDiffGradState"),
        (gdtx.adagrad_norm(0.1), "gdtx.adagrad_norm", "ScaleByAdagradNormState"),
        (gdtx.rectify(gdtx.scale_by_belief()), "gdtx.rectify", "RectifyState"),
    ],
    ids=["radam", "diffgrad", "adagrad_norm", "rectify"],
)
def test_a_state_of_another_optimizer_names_the_transformation(tx, owner, expected):
    # The case: a pickled AdaBelief state restored into radam.
    params = jnp.ones(3)
    state = gdtx.adabelief(0.1).init(params)  # (belief, decay, learning rate)
    if owner == "gdtx.rectify":
        state = state[0]
    elif owner == "gdtx.adagrad_norm":
        state = (state[0], state[2])  # adagrad_norm's chain has no decay
    with pytest.raises(
        TypeError,
        match=rf"{re.escape(owner)}: `state` is a ScaleByBeliefState, expected a {expected}; "
        r"was it initialised by another optimizer",
    ):
        tx.update(params, state, params)


def test_radam_inner_state_of_another_optimizer_is_named_too():
    params = jnp.ones(3)
    state = gdtx.scale_by_radam().init(params)
    wrong = state._replace(inner_state=gdtx.scale_by_belief().init(params))
    with pytest.raises(TypeError, match=r"gdtx\.scale_by_radam: `state` is a ScaleByBeliefState"):
        gdtx.scale_by_radam().update(params, wrong)


@pytest.mark.parametrize("knob", [jnp.bfloat16, jnp.float32])
def test_diffgrad_prev_grad_follows_its_dtype_knob(knob):
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    tx = gdtx.diffgrad(0.1, prev_grad_dtype=knob)
    state = tx.init(params)
    assert state[0].prev_grad["w"].dtype == knob
    updates, state = jax.jit(tx.update)(params, state, params)
    assert state[0].prev_grad["w"].dtype == knob
    assert state[0].mu["w"].dtype == jnp.float32  # the other knobs are independent
    assert updates["w"].dtype == jnp.float32
    with pytest.raises(ValueError, match=r"gdtx\.diffgrad: `prev_grad_dtype` must be None or a"):
        gdtx.diffgrad(0.1, prev_grad_dtype="int8")


def test_diffgrad_prev_grad_in_bfloat16_rounds_only_the_friction():
    # With prev_grad in bfloat16 the friction compares with the rounded previous
    # gradient: the steps differ from float32 ones by the rounding of g only.
    rng = np.random.default_rng(0)
    grads = [jnp.asarray(rng.normal(size=5), jnp.float32) for _ in range(10)]
    exact, _ = _run_directions(gdtx.scale_by_diffgrad(), grads)
    rounded, _ = _run_directions(gdtx.scale_by_diffgrad(prev_grad_dtype=jnp.bfloat16), grads)
    for a, b in zip(exact, rounded, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-2)


def test_complex_phase_dtypes_must_be_complex():
    params = {"z": jnp.ones(2, jnp.complex64)}
    for tx, owner, knob in (
        (gdtx.diffgrad(0.1, mu_dtype=jnp.float32), "gdtx.diffgrad", "mu_dtype"),
        (gdtx.diffgrad(0.1, prev_grad_dtype=jnp.bfloat16), "gdtx.diffgrad", "prev_grad_dtype"),
        (gdtx.radam(0.1, mu_dtype=jnp.float32), "gdtx.radam", "mu_dtype"),
    ):
        with pytest.raises(TypeError, match=rf"{re.escape(owner)}: `{knob}=\w+` is real.*\['z'\]"):
            tx.init(params)


def test_diffgrad_friction_on_complex_uses_the_modulus():
    # First step: g_0 = 0, so the friction is sigmoid(|g_1|), and the step keeps g's phase.
    with jax.enable_x64(True):
        g = jnp.array([3 + 4j, 1e-8j])
        updates, _ = gdtx.scale_by_diffgrad(eps=0.0).update(g, gdtx.scale_by_diffgrad().init(g))
        friction = 1 / (1 + np.exp(-np.abs(np.asarray(g))))
        np.testing.assert_allclose(updates, friction * np.asarray(g) / np.abs(g), rtol=1e-12)


def test_adagrad_norm_compares_gradients_with_params():
    # AdaGrad-Norm keeps no params-shaped state: a (1,) gradient must not broadcast.
    params = {"w": jnp.ones(4)}
    tx = gdtx.adagrad_norm(0.1)
    with pytest.raises(ValueError, match=r"gdtx\.adagrad_norm: the update at \['w'\]"):
        tx.update({"w": jnp.ones(1)}, tx.init(params), params)
    with pytest.raises(ValueError, match=r"gdtx\.adagrad_norm: the updates tree"):
        tx.update({"v": jnp.ones(4)}, tx.init(params), params)


def test_adagrad_norm_on_complex_uses_the_modulus():
    with jax.enable_x64(True):
        g = jnp.array([3 + 4j, 0j])
        tx = gdtx.scale_by_adagrad_norm()
        updates, state = tx.update(g, tx.init(g))
        assert state.sum_of_squares.dtype == jnp.float64
        np.testing.assert_allclose(float(state.sum_of_squares), 25.0)
        np.testing.assert_allclose(updates, np.asarray(g) / 5.0)


@pytest.mark.parametrize("name", list(_ALIASES))
def test_python_number_leaves_work(name):
    alias, _ = _ALIASES[name]
    tx = alias(0.1)
    params = {"a": 1.0, "b": jnp.ones(1)}
    updates, _ = tx.update({"a": 0.5, "b": jnp.full(1, 0.5)}, tx.init(params), params)
    np.testing.assert_allclose(updates["a"], updates["b"][0], rtol=1e-6)


def test_degenerated_to_sgd_is_a_bool():
    with pytest.raises(TypeError, match=r"gdtx\.radam: `degenerated_to_sgd` must be a bool"):
        gdtx.radam(0.1, degenerated_to_sgd="no")
    with pytest.raises(TypeError, match=r"gdtx\.rectify: `degenerated_to_sgd` must be a bool"):
        gdtx.rectify(optax.scale_by_adam(), degenerated_to_sgd=0)
