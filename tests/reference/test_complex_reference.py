"""Complex parameters in the moment families, against independent float64 transcriptions.

Each method is transcribed here in plain NumPy from its update rule, with the
squared modulus ``|z|^2 = Re(z conj(z))`` wherever the real method squares (the
complex extension optax uses), and run for 1000 steps on a complex quadratic
whose gradient is recomputed from each implementation's own iterate (so an error
compounds instead of washing out). Nothing here calls gdtx code. Tolerance: the
references' ``max|p - p_ref| <= 1e-6`` of the distance travelled.

Before issue 14, gdtx squared complex deviations (``d * d``): the belief turned
complex with negative real parts and every one of these comparisons failed by
order one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdtx

STEPS = 1000
LR = 1e-2


def _problem():
    rng = np.random.default_rng(14)
    shape = (3, 4)
    target = rng.normal(size=shape) + 1j * rng.normal(size=shape)
    scale = np.exp(rng.normal(size=shape))  # per-coordinate curvature in ~[0.1, 10]
    noise = 0.1 * (rng.normal(size=(STEPS, *shape)) + 1j * rng.normal(size=(STEPS, *shape)))
    initial = np.zeros(shape, np.complex128)

    def grad(p, t):
        # The descent direction for the real loss sum scale |p - target|^2 (optax's
        # convention: the conjugate of jax.grad), plus fixed noise.
        return 2 * scale * (p - target) + noise[t]

    return initial, grad


def _abs_sq(z):
    return (z * np.conj(z)).real


def _adabelief_numpy(variant, b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16, weight_decay=0.0):
    p, grad = _problem()
    start = p.copy()
    m = np.zeros_like(p)
    s = np.zeros(p.shape)
    s_max = np.zeros(p.shape)
    rho_inf = 2 / (1 - b2) - 1
    for t in range(1, STEPS + 1):
        g = grad(p, t - 1)
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * _abs_sq(g - m) + eps_root
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        if variant == "amsgrad":
            s_max = np.maximum(s_max, s)
            u = (m / bc1) / (np.sqrt(s_max / bc2) + eps)
        elif variant == "rectify":
            rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
            if rho_t >= 5:
                r = np.sqrt(
                    (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
                )
                u = r * (m / bc1) * np.sqrt(bc2) / (np.sqrt(s) + eps)
            else:
                u = m / bc1
        else:
            u = (m / bc1) / (np.sqrt(s / bc2) + eps)
        p = p * (1 - LR * weight_decay) - LR * u
    return start, p


def _diffgrad_numpy(b1=0.9, b2=0.999, eps=1e-8):
    p, grad = _problem()
    start = p.copy()
    m, v, g_prev = np.zeros_like(p), np.zeros(p.shape), np.zeros_like(p)
    for t in range(1, STEPS + 1):
        g = grad(p, t - 1)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * _abs_sq(g)
        friction = 1 / (1 + np.exp(-np.abs(g_prev - g)))
        u = np.sqrt(1 - b2**t) / (1 - b1**t) * friction * m / (np.sqrt(v) + eps)
        g_prev = g
        p = p - LR * u
    return start, p


def _radam_numpy(b1=0.9, b2=0.999, eps=1e-8):
    # torch.optim.RAdam's rule (eps on the un-bias-corrected root), momentum steps below 5.
    p, grad = _problem()
    start = p.copy()
    m, v = np.zeros_like(p), np.zeros(p.shape)
    rho_inf = 2 / (1 - b2) - 1
    for t in range(1, STEPS + 1):
        g = grad(p, t - 1)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * _abs_sq(g)
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        rho_t = rho_inf - 2 * t * b2**t / bc2
        if rho_t >= 5:
            r = np.sqrt(
                (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
            )
            u = r * np.sqrt(bc2) / bc1 * m / (np.sqrt(v) + eps)
        else:
            u = m / bc1
        p = p - LR * u
    return start, p


def _msvag_numpy(beta=0.9):
    # M-SVAG with sigma^2 = E|g - mu|^2: gamma = |m_hat|^2 / (|m_hat|^2 + rho s).
    p, grad = _problem()
    start = p.copy()
    m, v = np.zeros_like(p), np.zeros(p.shape)
    for t in range(1, STEPS + 1):
        g = grad(p, t - 1)
        m = beta * m + (1 - beta) * g
        v = beta * v + (1 - beta) * _abs_sq(g)
        bc = 1 - beta**t
        m_hat, v_hat = m / bc, v / bc
        rho = min((1 - beta) * (1 + beta**t) / ((1 + beta) * bc), 0.9999)
        s = np.zeros(p.shape) if t == 1 else (v_hat - _abs_sq(m_hat)) / (1 - rho)
        gamma = np.clip(_abs_sq(m_hat) / (_abs_sq(m_hat) + rho * s), 0, 1)
        p = p - LR * gamma * m_hat
    return start, p


def _run_gdtx(tx):
    p, grad = _problem()
    p = jnp.asarray(p)
    state = tx.init(p)

    @jax.jit
    def step(p, state, g):
        updates, state = tx.update(g, state, p)
        return optax.apply_updates(p, updates), state

    for t in range(STEPS):
        p, state = step(p, state, jnp.asarray(grad(np.asarray(p), t)))
    return np.asarray(p), state


def _assert_close_to(actual, start, expected, what):
    travelled = np.max(np.abs(expected - start))
    error = np.max(np.abs(actual - expected))
    assert travelled > 0.5, f"{what}: the reference barely moved ({travelled})"
    assert error <= 1e-6 * travelled, f"{what}: max error {error:.3e}, travelled {travelled:.3f}"


_ADABELIEF = {
    "plain": ({}, {}),
    "amsgrad": ({"amsgrad": True}, {}),
    "rectify": ({"rectify": True}, {}),
    "decoupled_decay": ({"weight_decay": 0.05}, {"weight_decay": 0.05}),
}


@pytest.mark.parametrize("variant", list(_ADABELIEF))
def test_adabelief_on_complex_matches_the_transcription(variant):
    kwargs, numpy_kwargs = _ADABELIEF[variant]
    with jax.enable_x64(True):
        start, expected = _adabelief_numpy(variant, **numpy_kwargs)
        actual, state = _run_gdtx(gdtx.adabelief(LR, **kwargs))
        nu = np.asarray(optax.tree.get(state, "nu"))
    _assert_close_to(actual, start, expected, f"adabelief ({variant})")
    # The belief is real-valued, stored in the parameter's complex dtype as optax does.
    assert nu.dtype == np.complex128 and np.all(np.imag(nu) == 0) and np.all(np.real(nu) > 0)


def test_adabelief_on_complex_matches_optax_adabelief():
    # optax.adabelief supports complex numbers (|g - m|^2): with gdtx's eps and
    # eps_root, and no rectification, the two are the same method.
    with jax.enable_x64(True):
        grads = jnp.array([1 + 1j, -2 + 0.5j, 0.3 - 3j])
        ours, theirs = gdtx.adabelief(0.1), optax.adabelief(0.1, eps=1e-16, eps_root=1e-16)
        state_a, state_b = ours.init(grads), theirs.init(grads)
        for k in range(20):
            g = grads * (1 + 0.1 * k) * np.exp(0.3j * k)
            u_a, state_a = ours.update(g, state_a)
            u_b, state_b = theirs.update(g, state_b)
            np.testing.assert_allclose(u_a, u_b, rtol=1e-12, atol=0)


def test_diffgrad_on_complex_matches_the_transcription():
    with jax.enable_x64(True):
        start, expected = _diffgrad_numpy()
        actual, _ = _run_gdtx(gdtx.diffgrad(LR))
    _assert_close_to(actual, start, expected, "diffgrad")


def test_radam_on_complex_matches_the_transcription():
    with jax.enable_x64(True):
        start, expected = _radam_numpy()
        actual, _ = _run_gdtx(gdtx.radam(LR))
    _assert_close_to(actual, start, expected, "radam")


def test_rectified_belief_on_complex_matches_the_transcription():
    # rectify(scale_by_belief) differs from scale_by_belief(rectify=True) only in
    # bias-correcting eps: at eps = eps_root = 0 they are one method.
    with jax.enable_x64(True):
        start, expected = _adabelief_numpy("rectify", eps=0.0, eps_root=0.0)
        inner = gdtx.scale_by_belief(eps=0.0, eps_root=0.0)
        tx = gdtx.chain(gdtx.rectify(inner), optax.scale_by_learning_rate(LR))
        actual, _ = _run_gdtx(tx)
    _assert_close_to(actual, start, expected, "rectify(scale_by_belief)")


def test_msvag_on_complex_matches_the_transcription():
    with jax.enable_x64(True):
        start, expected = _msvag_numpy()
        actual, _ = _run_gdtx(gdtx.msvag(LR))
    _assert_close_to(actual, start, expected, "msvag")


def test_complex_results_are_the_real_ones_on_the_real_axis():
    # A complex parameter with zero imaginary parts everywhere must follow the real
    # trajectory exactly: the complex extension changes nothing on the real line.
    rng = np.random.default_rng(1)
    grads = [jnp.asarray(rng.normal(size=4)) for _ in range(30)]
    for tx in (
        gdtx.adabelief(LR, amsgrad=True),
        gdtx.diffgrad(LR),
        gdtx.radam(LR),
        gdtx.msvag(LR),
        gdtx.adagrad_norm(LR),
    ):
        p_real = jnp.zeros(4)
        p_cplx = jnp.zeros(4, jnp.complex64)
        s_real, s_cplx = tx.init(p_real), tx.init(p_cplx)
        for g in grads:
            u_r, s_real = tx.update(g, s_real, p_real)
            u_c, s_cplx = tx.update(g.astype(jnp.complex64), s_cplx, p_cplx)
            p_real, p_cplx = p_real + u_r, p_cplx + u_c
        np.testing.assert_allclose(np.real(p_cplx), p_real, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(np.imag(p_cplx), 0)


def _supporting_rows():
    from tests.registry import adaptive, belief, variance

    rows = [c for m in (belief, adaptive, variance) for c in m.CASES if c.supports_complex]
    return [pytest.param(c, id=c.name) for c in rows]


@pytest.mark.parametrize("case", _supporting_rows())
def test_complex_parabola_converges_for_each_supporting_row(case):
    # The battery runs this too (tests/test_battery.py); here it is the family's own
    # check, independent of the battery's harness: a real loss of a complex
    # parameter with a complex minimiser, gradients conjugated as optax does.
    target = {"z": jnp.array([1 - 1j, -0.5 + 2j, 3j], jnp.complex64), "w": jnp.array([0.5, -1.0])}

    def loss(p):
        return sum(jnp.sum(jnp.abs(p[k] - target[k]) ** 2) for k in p)

    tx = case.make()
    params = {"z": jnp.zeros(3, jnp.complex64), "w": jnp.zeros(2)}

    def step(carry, _):
        p, state = carry
        g = jax.tree.map(jnp.conj, jax.grad(loss)(p))
        updates, state = tx.update(g, state, p, **case.extra_args(loss, p, g))
        return (optax.apply_updates(p, updates), state), None

    run = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), length=3000)[0][0])
    final = run(params)
    assert final["z"].dtype == jnp.complex64
    np.testing.assert_allclose(final["z"], target["z"], atol=3e-2)
    np.testing.assert_allclose(final["w"], target["w"], atol=3e-2)


@pytest.mark.parametrize("inner", ["optax.scale_by_adam", "gdtx.scale_by_diffgrad"])
def test_rectify_around_other_complex_inners(inner):
    # rectify multiplies the inner's complex direction by a real r_t (computed in the
    # real dtype: a complex rho_t cannot be compared with the threshold).
    rng = np.random.default_rng(5)
    with jax.enable_x64(True):
        grads = [jnp.asarray(rng.normal(size=3) + 1j * rng.normal(size=3)) for _ in range(12)]
        if inner == "optax.scale_by_adam":
            ours = gdtx.rectify(optax.scale_by_adam())
            theirs = optax.scale_by_radam()  # optax supports complex numbers here
        else:
            ours = gdtx.rectify(gdtx.scale_by_diffgrad())
            theirs = None
        s_a = ours.init(grads[0])
        s_b = theirs.init(grads[0]) if theirs is not None else None
        for t, g in enumerate(grads, start=1):
            u_a, s_a = ours.update(g, s_a)
            assert u_a.dtype == jnp.complex128
            if theirs is not None:
                u_b, s_b = theirs.update(g, s_b)
                np.testing.assert_allclose(u_a, u_b, rtol=1e-10)
            elif t <= 5:  # below the threshold: the momentum step m_t / (1 - b1^t)
                m = sum(0.1 * 0.9 ** (t - k) * np.asarray(grads[k - 1]) for k in range(1, t + 1))
                np.testing.assert_allclose(u_a, m / (1 - 0.9**t), rtol=1e-10)
