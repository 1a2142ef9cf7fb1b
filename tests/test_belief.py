"""AdaBelief's own properties, derived by hand from the update rule.

The recorded official trajectories are in ``tests/reference``; these tests pin
the closed forms that hold at any step and for any gradient scale.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gdtx


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e4])
@pytest.mark.parametrize("b1", [0.5, 0.9])
def test_first_step_has_magnitude_one_over_b1(scale, b1):
    # m_1 = (1 - b1) g, g - m_1 = b1 g, s_1 = (1 - b2) b1^2 g^2 (+ eps_root):
    # u_1 = g / (b1 |g|) whatever the scale of g.
    grads = scale * jnp.array([1.0, -3.0, 0.25])
    tx = gdtx.scale_by_belief(b1=b1, eps=0.0, eps_root=0.0)
    updates, _ = tx.update(grads, tx.init(grads))
    np.testing.assert_allclose(updates, np.sign(grads) / b1, rtol=1e-5)


def test_constant_gradient_gives_growing_steps_from_the_belief():
    # With a constant gradient g the deviation g - m_t = b1^t g shrinks, so the
    # belief shrinks and AdaBelief takes *larger* steps than Adam would.
    g = jnp.array([2.0])
    tx = gdtx.scale_by_belief(eps=0.0, eps_root=0.0)
    state = tx.init(g)
    steps = []
    for _ in range(20):
        u, state = tx.update(g, state)
        steps.append(float(u[0]))
    assert all(b > a for a, b in zip(steps, steps[1:], strict=False))
    b1, b2, t = 0.9, 0.999, 20
    s = sum((1 - b2) * b2 ** (t - k) * (b1**k * 2.0) ** 2 for k in range(1, t + 1))
    expected = 2.0 / np.sqrt(s / (1 - b2**t))  # m_t / bc1 = g exactly for constant g
    np.testing.assert_allclose(steps[-1], expected, rtol=1e-5)


@pytest.mark.parametrize("degenerated_to_sgd", [True, False])
def test_rectification_switches_on_at_step_six(degenerated_to_sgd):
    # With b2 = 0.999, rho_t < 5 for t <= 5: those steps are m_t / bc1 (momentum
    # SGD) or no step at all; from t = 6 the rectified adaptive step is taken.
    # float64, because rho_6 ~ 5 is a difference of two numbers ~ 2000: in
    # float32 r_6 carries a relative error of ~1e-3 (see gdtx._core.rectification).
    b1, b2 = 0.9, 0.999
    tx = gdtx.scale_by_belief(
        rectify=True, degenerated_to_sgd=degenerated_to_sgd, eps=0.0, eps_root=0.0
    )
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        _check_rectified_steps(tx, b1, b2, degenerated_to_sgd, rng)


def _check_rectified_steps(tx, b1, b2, degenerated_to_sgd, rng):
    grads = [jnp.asarray(rng.normal(size=4), jnp.float64) for _ in range(7)]
    state = tx.init(grads[0])
    m = np.zeros(4)
    s = np.zeros(4)
    for t, g in enumerate(grads, start=1):
        u, state = tx.update(g, state)
        m = b1 * m + (1 - b1) * np.asarray(g)
        s = b2 * s + (1 - b2) * (np.asarray(g) - m) ** 2
        if t <= 5:
            expected = m / (1 - b1**t) if degenerated_to_sgd else np.zeros(4)
        else:
            rho_inf = 2 / (1 - b2) - 1
            rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
            assert rho >= 5
            r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            expected = r * np.sqrt(1 - b2**t) / (1 - b1**t) * m / np.sqrt(s)
        np.testing.assert_allclose(u, expected, rtol=1e-12, err_msg=f"step {t}")


def test_amsgrad_keeps_the_running_maximum_of_the_belief():
    tx = gdtx.scale_by_belief(amsgrad=True)
    state = tx.init(jnp.zeros(2))
    previous = np.zeros(2)
    for g in ([10.0, 1.0], [-10.0, 20.0], [0.0, 0.0], [0.0, 0.0]):
        _, state = tx.update(jnp.asarray(g), state)
        assert np.all(np.asarray(state.nu_max) >= previous)
        assert np.all(np.asarray(state.nu_max) >= np.asarray(state.nu))
        previous = np.asarray(state.nu_max)
    assert np.any(np.asarray(state.nu_max) > np.asarray(state.nu))


def test_eps_root_accumulates_in_the_stored_belief():
    # Zero gradients: s_t = b2 s_{t-1} + eps_root, a geometric sum.
    eps_root, b2, t = 1e-3, 0.9, 7
    tx = gdtx.scale_by_belief(b2=b2, eps_root=eps_root)
    state = tx.init(jnp.zeros(1))
    for _ in range(t):
        _, state = tx.update(jnp.zeros(1), state)
    np.testing.assert_allclose(state.nu, eps_root * (1 - b2**t) / (1 - b2), rtol=1e-6)


def test_bfloat16_params_are_computed_in_float32():
    g32 = jnp.asarray([1e-3, 3.0, -7.0], jnp.float32) * jnp.asarray([1.0, 1.1, 1.2])
    g16 = g32.astype(jnp.bfloat16)
    tx = gdtx.scale_by_belief(nu_dtype=jnp.float32, mu_dtype=jnp.float32)
    u16, s16 = tx.update(g16, tx.init(g16))
    u32, _ = tx.update(g16.astype(jnp.float32), tx.init(g16.astype(jnp.float32)))
    assert u16.dtype == jnp.bfloat16 and s16.nu.dtype == jnp.float32
    np.testing.assert_array_equal(
        np.asarray(u16, np.float32), np.asarray(u32.astype(jnp.bfloat16), np.float32)
    )


def test_state_names_follow_optax():
    params = {"w": jnp.ones(3)}
    tx = gdtx.adabelief(1e-3)
    state = tx.init(params)
    mu = optax.tree.get(state, "mu")
    assert jax.tree.structure(mu) == jax.tree.structure(params)
    assert optax.tree.get(state, "ScaleByBeliefState").count.dtype == jnp.int32


def test_mismatched_gradient_shapes_are_reported():
    tx = gdtx.adabelief(1e-3)
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match=r"gdtx\.adabelief: .*\['w'\] has shape \(4,\)"):
        tx.update({"w": jnp.ones(4)}, tx.init(params), params)


def test_schedules_drive_learning_rate_and_weight_decay():
    lr = optax.linear_schedule(0.1, 0.0, 10)
    tx = gdtx.adabelief(lr, weight_decay=optax.constant_schedule(0.0))
    params = jnp.ones(2)
    state = tx.init(params)
    for _ in range(10):
        _, state = tx.update(jnp.ones(2), state, params)
    updates, _ = tx.update(jnp.ones(2), state, params)
    np.testing.assert_array_equal(updates, 0.0)  # the schedule has reached 0


@settings(max_examples=25)
@given(
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**16),
    rectify=st.booleans(),
    amsgrad=st.booleans(),
)
def test_direction_is_invariant_to_the_gradient_scale(scale, seed, rectify, amsgrad):
    # Without eps, m and sqrt(s) both scale with the gradients: the direction
    # does not depend on their units (Zhuang et al., Sec. 2.2).
    rng = np.random.default_rng(seed)
    grads = [jnp.asarray(rng.normal(size=5), jnp.float32) for _ in range(8)]
    tx = gdtx.scale_by_belief(eps=0.0, eps_root=0.0, rectify=rectify, amsgrad=amsgrad)
    state_a = state_b = tx.init(grads[0])
    for g in grads:
        u_a, state_a = tx.update(g, state_a)
        u_b, state_b = tx.update(scale * g, state_b)
    np.testing.assert_allclose(u_b, u_a, rtol=2e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("rectify", [False, True])
def test_long_horizon_float32_stays_finite_and_converges(rectify):
    # 100 000 float32 steps on a noisy ill-conditioned quadratic with the default
    # eps = eps_root = 1e-16: the belief can shrink towards eps_root, so this is
    # where a division or bias-correction bug would surface late.
    scales = jnp.asarray([1e-4, 1.0, 1e3], jnp.float32)
    tx = gdtx.adabelief(1e-3, rectify=rectify)
    keys = jax.random.split(jax.random.key(0), 100_000)

    def step(carry, key):
        params, state = carry
        noise = 0.01 * jax.random.normal(key, (3,))
        grads = scales * params + noise * jnp.sqrt(scales)
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), jnp.max(jnp.abs(updates))

    params = jnp.ones(3, jnp.float32)
    (final, state), max_update = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), keys))(
        params
    )
    assert np.all(np.isfinite(np.asarray(final)))
    assert np.all(np.isfinite(np.asarray(max_update)))
    # Adaptive steps stay O(1) in units of the learning rate. The first five
    # rectified steps are momentum-SGD steps, lr * g, by design (not bounded).
    assert float(jnp.max(max_update[5:])) / 1e-3 < 10.0
    # The well-conditioned coordinates reach the noise floor around the optimum.
    assert float(jnp.max(jnp.abs(final[1:]))) < 0.05, final


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"amsgrad": True},
        {"rectify": True},
        {"nesterov": True},
        {"weight_decay": 1e-2},
        {"weight_decay": 1e-2, "weight_decay_mode": "fixed"},
    ],
    ids=["plain", "amsgrad", "rectify", "nesterov", "decoupled", "fixed"],
)
def test_compiled_step_copies_no_state(kwargs):
    # If XLA recomputes `s` inside the parameter loop it must first copy the donated
    # `nu` (a full extra pass over memory, issue 8): the update is written so it cannot.
    tx = gdtx.adabelief(1e-3, **kwargs)
    params = jnp.zeros(4096)

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, tx.init(params), params).compile()
    entry = compiled.as_text().split("\nENTRY")[1]
    assert not re.search(r"= f32\[4096\]\S* copy\(", entry)
    assert compiled.memory_analysis().temp_size_in_bytes < 4096


# --- issue 14: parameters, hyperparameter types, states, complex dtypes -----------------


@pytest.mark.parametrize(
    ("factory", "owner"),
    [
        (gdtx.scale_by_belief, "gdtx.scale_by_belief"),
        (lambda: gdtx.adabelief(0.1), "gdtx.adabelief"),
    ],
    ids=["scale_by_belief", "adabelief"],
)
def test_integer_params_are_refused_at_init(factory, owner):
    params = {"w": jnp.ones(3), "steps": jnp.arange(3)}
    with pytest.raises(TypeError, match=re.escape(owner) + r".*\['steps'\].*int32"):
        factory().init(params)


def test_a_real_mu_dtype_is_refused_for_complex_params():
    # A float32 first moment would drop the imaginary part of every gradient.
    params = {"z": jnp.ones(2, jnp.complex64)}
    with pytest.raises(TypeError, match=r"gdtx\.adabelief: `mu_dtype=float32` is real.*\['z'\]"):
        gdtx.adabelief(0.1, mu_dtype=jnp.float32).init(params)
    # A real belief is fine: it is a magnitude (and halves the state).
    tx = gdtx.adabelief(0.1, nu_dtype=jnp.float32)
    state = tx.init(params)
    updates, state = tx.update(params, state, params)
    assert optax.tree.get(state, "nu")["z"].dtype == jnp.float32
    assert updates["z"].dtype == jnp.complex64


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"learning_rate": None}, TypeError, r"`learning_rate` must be a real number or a sch"),
        ({"learning_rate": "0.1"}, TypeError, r"`learning_rate` must be a real number"),
        ({"learning_rate": float("inf")}, ValueError, r"`learning_rate` must be finite"),
        ({"b1": True}, TypeError, r"`b1` must be a real number, got True"),
        ({"b1": "0.5"}, TypeError, r"`b1` must be a real number"),
        ({"b2": np.array([0.9, 1.5])}, ValueError, r"`b2` must be in \[0, 1\)"),
        ({"eps_root": float("inf")}, ValueError, r"`eps_root` must be finite"),
        ({"weight_decay": None}, TypeError, r"`weight_decay` must be a real number"),
        ({"eps": 1j}, TypeError, r"`eps` must be a real number"),
    ],
)
def test_hyperparameters_are_real_numbers(kwargs, error, pattern):
    arguments = {"learning_rate": 0.1, **kwargs}
    with pytest.raises(error, match=r"gdtx\.adabelief: " + pattern):
        gdtx.adabelief(**arguments)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"rectify": True}, {"amsgrad": True}, {"nesterov": True}, {"weight_decay_mode": "l2"}],
    ids=str,
)
def test_update_without_params_at_zero_weight_decay(kwargs):
    # As optax.adabelief(lr).update(g, state): no params are needed when nothing decays.
    grads = {"w": jnp.array([1.0, -2.0])}
    tx = gdtx.adabelief(0.1, **kwargs)
    without, _ = tx.update(grads, tx.init(grads))
    with_params, _ = tx.update(grads, tx.init(grads), grads)
    np.testing.assert_array_equal(without["w"], with_params["w"])


def test_a_state_of_another_optimizer_names_the_transformation():
    # e.g. a pickled RAdam state restored into AdaBelief: not an AttributeError.
    params = jnp.ones(3)
    tx = gdtx.adabelief(0.1)
    with pytest.raises(
        TypeError,
        match=r"gdtx\.adabelief: `state` is a RectifyState, expected a "
        r"ScaleByBeliefState; was it initialised by another optimizer",
    ):
        tx.update(params, gdtx.radam(0.1).init(params), params)


@pytest.mark.parametrize("dtype", [jnp.complex64, jnp.complex128])
@pytest.mark.parametrize("kwargs", [{}, {"amsgrad": True}, {"rectify": True}], ids=str)
def test_complex_state_keeps_its_dtypes(dtype, kwargs):
    with jax.enable_x64(dtype == jnp.complex128):
        params = jnp.array([1 + 1j, -2 + 0.5j], dtype)
        tx = gdtx.scale_by_belief(**kwargs)
        state = tx.init(params)
        for _ in range(3):
            updates, new_state = jax.jit(tx.update)(params, state)
            assert jax.tree.map(lambda x: x.dtype, new_state) == jax.tree.map(
                lambda x: x.dtype, state
            )
            state = new_state
        assert updates.dtype == dtype
        # nu (and nu_max) are real-valued: a zero imaginary part, a positive real one.
        for nu in (state.nu, state.nu_max) if kwargs.get("amsgrad") else (state.nu,):
            assert np.all(np.imag(np.asarray(nu)) == 0) and np.all(np.real(np.asarray(nu)) > 0)


def test_python_number_leaves_work():
    # optax.adabelief accepts a Python float leaf; gdtx's leaf function cast it with
    # `.astype` and raised an AttributeError.
    tx = gdtx.adabelief(0.1)
    params = {"a": 1.0, "b": jnp.ones(2)}
    updates, _ = tx.update({"a": 0.5, "b": jnp.ones(2)}, tx.init(params), params)
    np.testing.assert_allclose(updates["a"], updates["b"][0])


@pytest.mark.parametrize("flag", ["amsgrad", "rectify", "degenerated_to_sgd", "nesterov"])
def test_variant_flags_are_bools(flag):
    # amsgrad="False" is a truthy string: it silently switched AMSGrad on.
    with pytest.raises(TypeError, match=rf"gdtx\.adabelief: `{flag}` must be a bool, got 'False'"):
        gdtx.adabelief(0.1, **{flag: "False"})
    with pytest.raises(TypeError, match=rf"gdtx\.scale_by_belief: `{flag}` must be a bool"):
        gdtx.scale_by_belief(**{flag: 1})
    gdtx.adabelief(0.1, **{flag: np.bool_(True)})  # NumPy bools are bools
