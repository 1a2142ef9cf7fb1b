"""M-FAC (gdtx.mfac) against dense solves, closed forms and a transcription of the official step.

The official optimizer (``IST-DASLab/M-FAC``, ``optim.py``) is PyTorch/CUDA and
its no-pivot LU does not run on the CPU, so the references here are

- the dense float64 solve ``u = (lambda I + G^T G / m)^{-1} g`` at every fill level;
- closed forms: the first step, axis-aligned windows (a diagonal ``F``), the span
  of the window;
- a NumPy transcription of the official arithmetic (``setup``/``mul``: the D and B
  recursions of the paper, the no-pivot LU written out) and of ``MFAC.step``
  (coupled L2, ring buffer, momentum), run for 1000 steps in float64 and, in
  float32, to show the cancellation that gdtx's form avoids. The transcription
  was checked once, by hand, against the official ``optim.py`` itself (commit
  835320e, its CPU path in torch 2.13 float64, with ``torch.lu(pivot=False)``,
  which torch implements on CUDA only, replaced by the same elimination and
  ``parallel_apply`` run serially): the 1000-step trajectories of both
  configurations below agree to 9e-14 of the displacement (gdtx: 7e-14).

Each reference test also shows that its tolerance rejects the plausible
convention mistakes (1/t warm-up, preconditioning before the write, trace
momentum, decoupled decay).
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdtx
from gdtx.mfac import ScaleByMFACState
from tests import hlo_steps

# ----------------------------------------------------------------------------
# references


def _window_at(grads: np.ndarray, t: int, m: int) -> np.ndarray:
    """The window after ``t`` steps: gradient s (1-based) sits in slot (s - 1) mod m."""
    window = np.zeros((m, grads.shape[1]), grads.dtype)
    for s in range(max(0, t - m), t):
        window[s % m] = grads[s]
    return window


def _dense(window: np.ndarray, g: np.ndarray, damping: float, scale: float) -> np.ndarray:
    d = window.shape[1]
    fisher = damping * np.eye(d) + window.T @ window / scale
    return np.linalg.solve(fisher, g)


def _lu_upper_no_pivot(a: np.ndarray) -> np.ndarray:
    """The U of ``torch.lu(a, pivot=False)`` (Doolittle elimination, no row swaps)."""
    a = a.copy()
    n = a.shape[0]
    for k in range(n - 1):
        factors = a[k + 1 :, k] / a[k, k]
        a[k + 1 :, k:] -= factors[:, None] * a[k, k:][None, :]
    return np.triu(a)


def _official_mul(window: np.ndarray, x: np.ndarray, damping: float) -> np.ndarray:
    """``HInvFastUpMulti.setup`` + ``mul`` of the official code, in ``window.dtype``.

    D (``giHig``) from the no-pivot LU of ``K/damping + m I``, B (``coef``) by the
    row recursion of the CPU path, then ``x/damping - G^T ((q / denom) B)``.
    """
    dt = window.dtype.type
    m = window.shape[0]
    lambd = dt(1.0) / dt(damping)
    dots = window @ window.T
    diag = dt(m) * np.eye(m, dtype=window.dtype)
    gihig = np.triu(_lu_upper_no_pivot(lambd * dots + diag) - diag)
    denom = dt(m) + np.diagonal(gihig)
    tmp = -gihig.T / denom[None, :]
    coef = lambd * np.eye(m, dtype=window.dtype)
    for i in range(1, m):
        coef[i, :i] = tmp[i, :i] @ coef[:i, :i]
    gihix = lambd * (window @ x)
    for i in range(1, m):
        gihix[i:] -= gihig[i - 1, i:] * (gihix[i - 1] / denom[i - 1])
    return lambd * x - window.T @ ((gihix / denom) @ coef)


def _official_trajectory(
    grad_fn, w0, num_steps, *, lr, m, damping, momentum=0.0, weight_decay=0.0, variant=None
):
    """``MFAC.step`` of the official code in NumPy float64, with its gradients recorded.

    ``variant`` names a convention mistake, to show the tolerance catches it:
    ``"one_over_t"`` (warm-up factor 1/t), ``"trace_momentum"`` (``v = mu v + u``),
    ``"decoupled_decay"`` (``w <- w - lr wd w``, the decay outside the window).
    """
    w = w0.copy()
    window = np.zeros((m, w.size))
    v = np.zeros_like(w)
    grads, params = [], [w.copy()]
    for t in range(num_steps):
        raw = grad_fn(w, t)
        grads.append(raw)
        g = raw + weight_decay * w if variant != "decoupled_decay" else raw.copy()
        window[t % m] = g
        if variant == "one_over_t":
            u = _dense(window, g, damping, min(t + 1, m))
        else:
            u = _official_mul(window, g, damping)
        if momentum > 0:
            v = momentum * v + (u if variant == "trace_momentum" else (1 - momentum) * u)
            u = v
        if variant == "decoupled_decay":
            u = u + weight_decay * w
        w = w - lr * u
        params.append(w.copy())
    return np.stack(grads), np.stack(params)


def _run_gdtx(tx, grads: np.ndarray, dtype) -> np.ndarray:
    """The directions of ``tx`` for a sequence of flat gradients (one jitted scan)."""

    def step(state, g):
        u, state = tx.update(g, state)
        return state, u

    init = tx.init(jnp.zeros(grads.shape[1], dtype))
    _, us = jax.jit(lambda s, gs: jax.lax.scan(step, s, gs))(init, jnp.asarray(grads, dtype))
    return np.asarray(us, np.float64)


def _rel(a, b) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# ----------------------------------------------------------------------------
# dense solve and closed forms (float64)


def test_matches_the_dense_solve_at_every_fill_level(rng):
    m, d, damping = 5, 9, 1e-2
    grads = rng.standard_normal((m + 3, d)) * rng.uniform(0.2, 3.0, (m + 3, 1))
    with jax.enable_x64(True):
        tx = gdtx.scale_by_mfac(m, damping, grads_dtype=jnp.float64)
        us = _run_gdtx(tx, grads, jnp.float64)
    mistakes = {"one_over_t": [], "before_write": [], "no_one_over_m": []}
    for t in range(1, m + 4):  # warm-up, the full window, then eviction
        window = _window_at(grads, t, m)
        expected = _dense(window, grads[t - 1], damping, m)
        np.testing.assert_allclose(us[t - 1], expected, rtol=1e-9, atol=1e-12, err_msg=f"t={t}")
        mistakes["one_over_t"].append(_dense(window, grads[t - 1], damping, min(t, m)))
        mistakes["before_write"].append(
            _dense(_window_at(grads, t - 1, m), grads[t - 1], damping, m)
        )
        mistakes["no_one_over_m"].append(_dense(window, grads[t - 1], damping, 1.0))
    for name, wrong in mistakes.items():
        assert _rel(us, np.stack(wrong)) > 1e-3, f"the test cannot tell {name} apart"


def test_first_step_is_m_g_over_m_lambda_plus_norm_squared():
    g = {"w": jnp.array([[3.0, -1.0], [0.5, 2.0]]), "b": jnp.array([1e-2, -4.0])}
    m, damping = 16, 1e-3
    tx = gdtx.scale_by_mfac(m, damping)
    u, state = jax.jit(tx.update)(g, tx.init(g))
    norm2 = sum(float(jnp.sum(x**2)) for x in jax.tree.leaves(g))
    expected = jax.tree.map(lambda x: m * x / (m * damping + norm2), g)
    for a, e in zip(jax.tree.leaves(u), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, e, rtol=2e-6)
    assert int(state.count) == 1
    # The official warm-up keeps 1/m: with 1/t the first step would be g / (lambda + |g|^2).
    wrong = jax.tree.map(lambda x: x / (damping + norm2), g)
    assert not np.allclose(u["w"], wrong["w"], rtol=1e-2)


def test_axis_aligned_gradients_give_a_diagonal_fisher_and_evict_in_order():
    # g_t = c_t e_{a_t}: F is diagonal, u_t = g_t / (lambda + sum_{window, a_i = a_t} c_i^2 / m).
    m, damping = 3, 0.1
    axes = (0, 1, 0, 2, 0, 0)
    coefs = (2.0, -1.0, 3.0, 0.5, -1.5, 0.25)
    grads = np.zeros((len(axes), 4))
    grads[np.arange(len(axes)), axes] = coefs
    with jax.enable_x64(True):
        us = _run_gdtx(gdtx.scale_by_mfac(m, damping, grads_dtype=jnp.float64), grads, jnp.float64)
    for t, (a, c) in enumerate(zip(axes, coefs, strict=True), start=1):
        window = range(max(0, t - m), t)
        same_axis = sum(coefs[s] ** 2 for s in window if axes[s] == a)
        expected = np.zeros(4)
        expected[a] = c / (damping + same_axis / m)
        np.testing.assert_allclose(us[t - 1], expected, rtol=1e-12, atol=1e-15, err_msg=f"t={t}")
    # At t=5 the first gradient (axis 0, c=2) has left the window: keeping it would give
    # -1.5 / (0.1 + (4 + 9 + 2.25) / 3) instead of -1.5 / (0.1 + (9 + 2.25) / 3).
    assert abs(us[4][0] - (-1.5 / (0.1 + 15.25 / 3))) > 0.05


def test_update_lies_in_the_span_of_the_window(rng):
    m, d = 4, 10
    grads = rng.standard_normal((m + 3, d))
    with jax.enable_x64(True):
        us = _run_gdtx(gdtx.scale_by_mfac(m, 1e-3, grads_dtype=jnp.float64), grads, jnp.float64)
    for t in range(1, m + 4):
        rows = grads[max(0, t - m) : t]
        coef, *_ = np.linalg.lstsq(rows.T, us[t - 1], rcond=None)
        residual = np.linalg.norm(rows.T @ coef - us[t - 1]) / np.linalg.norm(us[t - 1])
        assert residual < 1e-10, f"t={t}: u leaves the span of the window ({residual:.1e})"
    # After eviction the evicted gradient is not needed (and not enough without the rest).
    partial = grads[m + 2 : m + 3]
    coef, *_ = np.linalg.lstsq(partial.T, us[-1], rcond=None)
    assert np.linalg.norm(partial.T @ coef - us[-1]) / np.linalg.norm(us[-1]) > 1e-2


def test_slot_order_does_not_change_the_update(rng):
    m, d = 4, 6
    grads = rng.standard_normal((m, d))
    new = rng.standard_normal(d)
    with jax.enable_x64(True):
        tx = gdtx.scale_by_mfac(m, 1e-2, grads_dtype=jnp.float64)
        update = jax.jit(tx.update)
        state = tx.init(jnp.zeros(d))
        for g in grads:
            _, state = update(jnp.asarray(g), state)
        expected, _ = update(jnp.asarray(new), state)
        # Slot 0 (the next to be overwritten) stays put; the others are permuted.
        perm = np.array([0, 3, 1, 2])
        permuted = ScaleByMFACState(
            count=state.count, grads=state.grads[perm], gram=state.gram[perm][:, perm]
        )
        actual, _ = update(jnp.asarray(new), permuted)
    np.testing.assert_allclose(actual, expected, rtol=1e-12)


def test_a_tree_is_preconditioned_as_one_flat_vector(rng):
    shapes = {"kernel": (3, 4), "bias": (5,), "scale": ()}
    m, steps = 4, 7
    with jax.enable_x64(True):
        tx = gdtx.scale_by_mfac(m, 1e-2, grads_dtype=jnp.float64)
        update = jax.jit(tx.update)
        tree_state = tx.init({k: jnp.zeros(s) for k, s in shapes.items()})
        flat_state = tx.init(jnp.zeros(18))
        for _ in range(steps):
            g = {k: jnp.asarray(rng.standard_normal(s)) for k, s in shapes.items()}
            u_tree, tree_state = update(g, tree_state)
            flat = jnp.concatenate([jnp.ravel(g[k]) for k in sorted(g)])
            u_flat, flat_state = update(flat, flat_state)
            flattened = jnp.concatenate([jnp.ravel(u_tree[k]) for k in sorted(u_tree)])
            np.testing.assert_allclose(flattened, u_flat, rtol=1e-12, atol=1e-15)
            # Preconditioning each leaf with its own F would not agree.
            alone, _ = update(g["kernel"], tx.init(g["kernel"]))
        assert not np.allclose(alone, u_tree["kernel"], rtol=1e-3)


# ----------------------------------------------------------------------------
# the official arithmetic: D/B recursions, the optimizer step, float32 accuracy


def test_official_recursion_agrees_with_the_dense_solve(rng):
    # The transcription of setup()/mul() is itself checked before serving as a reference.
    m, d = 6, 11
    for fill in (2, m):
        window = np.zeros((m, d))
        window[:fill] = rng.standard_normal((fill, d))
        x = window[fill - 1]
        np.testing.assert_allclose(
            _official_mul(window, x, 1e-2), _dense(window, x, 1e-2, m), rtol=1e-9
        )


def _noisy_quadratic(d: int, seed: int):
    rng = np.random.default_rng(seed)
    curvature = np.exp(rng.uniform(-2.0, 2.0, d))
    target = rng.standard_normal(d)
    noise = rng.standard_normal((2000, d))

    def grad_fn(w, t):
        return curvature * (w - target) + 0.3 * noise[t]

    return grad_fn


@pytest.mark.parametrize(
    "options",
    [
        {"momentum": 0.0, "weight_decay": 0.0},
        {"momentum": 0.9, "weight_decay": 1e-2},
    ],
    ids=["plain", "momentum_wd"],
)
def test_replays_the_official_step_for_1000_steps(options):
    m, d, lr, damping, num_steps = 6, 12, 1e-2, 1e-1, 1000
    grad_fn = _noisy_quadratic(d, 0)
    w0 = np.linspace(-1.0, 1.0, d)
    kw = {"lr": lr, "m": m, "damping": damping, **options}
    grads, params = _official_trajectory(grad_fn, w0, num_steps, **kw)

    with jax.enable_x64(True):
        tx = gdtx.mfac(lr, m, damping, grads_dtype=jnp.float64, **options)
        # Split into two leaves so the replay also goes through the tree dot products.
        split = lambda x: {"a": x[..., :5], "b": x[..., 5:].reshape(*x.shape[:-1], 7)}  # noqa: E731

        def step(carry, g):
            w, state = carry
            updates, state = tx.update(g, state, w)
            w = optax.apply_updates(w, updates)
            return (w, state), w

        w_init = split(jnp.asarray(w0))
        run = jax.jit(lambda w, gs: jax.lax.scan(step, (w, tx.init(w)), gs)[1])
        ours = run(w_init, split(jnp.asarray(grads)))
        ours = np.concatenate([np.asarray(ours["a"]), np.asarray(ours["b"])], axis=1)

    def error(reference):
        displacement = np.max(np.abs(reference[1:] - reference[0]), axis=1)
        scale = np.maximum.accumulate(displacement)[:, None]
        return np.max(np.abs(ours - reference[1:]) / scale)

    assert np.max(np.abs(params[-1] - params[0])) > 0.1, "the trajectory barely moves"
    assert error(params) <= 1e-6, error(params)
    mutants = ["one_over_t"]
    if options["momentum"]:
        mutants.append("trace_momentum")
    if options["weight_decay"]:
        mutants.append("decoupled_decay")
    for variant in mutants:
        _, wrong = _official_trajectory(lambda w, t: grads[t], w0, num_steps, variant=variant, **kw)
        assert error(wrong) > 1e-4, f"the tolerance cannot see {variant}: {error(wrong):.1e}"


@pytest.mark.parametrize("kappa", [1e2, 1e4, 1e6])
def test_float32_stays_accurate_where_the_official_form_cancels(rng, kappa):
    # kappa = |g|^2 / (m lambda). Random gradients: a well-conditioned window.
    m, d = 16, 2000
    grads = rng.standard_normal((m + 2, d)) / np.sqrt(d)  # |g| ~ 1
    damping = float(np.mean(np.sum(grads**2, axis=1)) / (m * kappa))
    grads32 = grads.astype(np.float32)
    us = _run_gdtx(gdtx.scale_by_mfac(m, damping), grads32, jnp.float32)
    window = _window_at(grads32.astype(np.float64), m + 2, m)
    exact = _dense(window, grads32[-1].astype(np.float64), damping, m)
    assert _rel(us[-1], exact) <= 1e-5
    official32 = _official_mul(window.astype(np.float32), grads32[-1], np.float32(damping))
    if kappa >= 1e6:
        # The official x/lambda - G^T(...) loses about eps32 * kappa.
        assert _rel(official32.astype(np.float64), exact) > 1e-2


def test_nearly_parallel_window_stays_finite():
    # m copies of one gradient at |g|^2/(m lambda) = 1e8: the float32 Gram matrix is
    # singular to working precision and a plain Cholesky gives NaN.
    m, d = 16, 300
    g = np.random.default_rng(1).standard_normal(d).astype(np.float32)
    damping = float(np.sum(g.astype(np.float64) ** 2) / (m * 1e8))
    us = _run_gdtx(gdtx.scale_by_mfac(m, damping), np.tile(g, (m + 2, 1)), jnp.float32)
    assert np.all(np.isfinite(us))
    # Exactly: F^{-1} g = g / (lambda + |g|^2) once the window is full of g.
    exact = g / (damping + np.sum(g.astype(np.float64) ** 2))
    assert _rel(us[-1], exact) < 0.3


# ----------------------------------------------------------------------------
# state, sharding, memory and validation


def test_state_layout_and_dtypes():
    params = {"w": jnp.zeros((3, 2), jnp.bfloat16), "b": jnp.zeros(4)}
    state = gdtx.scale_by_mfac(5).init(params)
    assert state.grads["w"].shape == (5, 3, 2) and state.grads["b"].shape == (5, 4)
    assert {x.dtype for x in jax.tree.leaves(state.grads)} == {jnp.dtype(jnp.float32)}
    assert (state.gram.shape, state.gram.dtype) == ((5, 5), jnp.float32)
    native = gdtx.scale_by_mfac(5, grads_dtype=None).init(params)
    assert native.grads["w"].dtype == jnp.bfloat16 and native.gram.dtype == jnp.float32


def test_window_is_written_in_place_under_donation():
    d, m = 100_000, 8
    tx = gdtx.scale_by_mfac(m, 1e-3)
    step = jax.jit(lambda g, s: tx.update(g, s), donate_argnums=1)
    g = jnp.ones(d)
    state = tx.init(g)
    compiled = step.lower(g, state).compile()
    window_bytes = 4 * m * d
    # A copy of the window would show up as a temporary the size of the window.
    assert compiled.memory_analysis().temp_size_in_bytes < window_bytes // 4
    pointer = state.grads.unsafe_buffer_pointer()
    _, state = step(g, state)
    assert state.grads.unsafe_buffer_pointer() == pointer


_ALIASES = {
    "mfac": lambda: gdtx.mfac(0.5, num_grads=4, damping=10.0),
    "mfac_momentum_wd": lambda: gdtx.mfac(
        0.5, num_grads=8, damping=10.0, momentum=0.9, weight_decay=1e-4
    ),
}


@pytest.mark.parametrize("alias", sorted(_ALIASES))
def test_a_vector_leaf_reads_its_window_without_a_reduction(alias):
    # Issue 21: XLA:CPU runs sum(G * g, axis=1) over a vector leaf as one long
    # serial reduction per row (15x the matrix-vector dot at d = 1e7), and
    # sum(c * G, axis=0) slower than the sum of scaled rows fused into the
    # momentum. The step now has the dot, no reduction over the window, no copy,
    # and no leaf-sized temporary but the decayed gradient that the dot reads.
    p = jnp.zeros(hlo_steps.N)
    compiled = hlo_steps.compile_step(_ALIASES[alias](), p, p)
    text = compiled.as_text()
    assert hlo_steps.reductions(text) == []
    assert len(re.findall(r" dot\(", text)) == 1
    assert hlo_steps.leaf_copies(text) == []
    assert hlo_steps.temp_leaves(compiled) < (1.2 if alias == "mfac_momentum_wd" else 0.2)


@pytest.mark.parametrize("alias", sorted(_ALIASES))
def test_a_matrix_leaf_writes_its_window_once(alias):
    # A dot on a matrix leaf's written window would need it reshaped, and XLA:CPU
    # fuses a second ring write into that reshape and copies the window (tree of
    # 100 leaves: 201 copies). The Gram row stays a reduction there (as fast as the
    # dot at those shapes); G^T c of a short window is the sum of scaled rows.
    p = {"w": jnp.zeros((64, hlo_steps.N // 64)), "b": jnp.zeros(64)}
    compiled = hlo_steps.compile_step(_ALIASES[alias](), p, p)
    text = compiled.as_text()
    assert len(hlo_steps.reductions(text)) == 1
    assert hlo_steps.leaf_copies(text) == []
    assert hlo_steps.temp_leaves(compiled) < 1.2


def test_window_is_sharded_like_its_parameter():
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices (tests/conftest.py sets jax_num_cpu_devices)")
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    P = jax.sharding.PartitionSpec
    specs = {"kernel": P("data", None), "bias": P("data"), "scale": P()}
    values = {"kernel": jnp.ones((8, 4)), "bias": jnp.ones(8), "scale": jnp.asarray(2.0)}
    params = {
        k: jax.device_put(v, jax.sharding.NamedSharding(mesh, specs[k])) for k, v in values.items()
    }
    tx = gdtx.mfac(1e-2, 4, 1e-2, momentum=0.5)
    with jax.set_mesh(mesh):
        state = jax.jit(tx.init)(params)
        updates, state = jax.jit(tx.update)(params, state, params)
    window = optax.tree.get(state, "grads")
    for name, spec in specs.items():
        assert jax.typeof(window[name]).sharding.spec == P(None, *spec), name
        assert jax.typeof(updates[name]).sharding.spec == spec, name
    # The same numbers as without a mesh.
    plain = gdtx.mfac(1e-2, 4, 1e-2, momentum=0.5)
    expected, _ = plain.update(values, plain.init(values), values)
    for name in specs:
        np.testing.assert_allclose(updates[name], expected[name], rtol=1e-5)


def test_a_window_that_does_not_fit_is_refused_before_allocating():
    with pytest.raises(ValueError, match=r"gdtx\.scale_by_mfac: the gradient window needs"):
        gdtx.scale_by_mfac(8, max_window_bytes=1000).init(jnp.zeros(100))
    gdtx.scale_by_mfac(8, max_window_bytes=3200).init(jnp.zeros(100))  # exactly fits
    huge = jax.ShapeDtypeStruct((10**6, 10**6), jnp.float32)  # 4 PB at m = 1024
    with pytest.raises(ValueError, match=r"raise `max_window_bytes`"):
        gdtx.mfac(1e-3).init(huge)


def test_num_grads_must_be_static():
    # inject_hyperparams binds the defaults too: num_grads is traced unless static.
    tx = optax.inject_hyperparams(gdtx.mfac)(learning_rate=1e-3, num_grads=4)
    with pytest.raises(TypeError, match=r"`num_grads` .*static_args"):
        jax.jit(tx.update)(jnp.ones(3), tx.init(jnp.zeros(3)), jnp.zeros(3))
    tx = optax.inject_hyperparams(gdtx.mfac, static_args=("num_grads",))(1e-3)
    jax.jit(tx.update)(jnp.ones(3), tx.init(jnp.zeros(3)), jnp.zeros(3))


@pytest.mark.parametrize(
    ("factory", "owner"),
    [
        (lambda: gdtx.scale_by_mfac(4), "gdtx.scale_by_mfac"),
        (lambda: gdtx.mfac(1e-3, 4), "gdtx.mfac"),
    ],
    ids=["scale_by_mfac", "mfac"],
)
@pytest.mark.parametrize("dtype", [jnp.complex64, jnp.int32, jnp.bool_])
def test_complex_and_integer_parameters_are_refused_at_init(factory, owner, dtype):
    # Issue 14: a ValueError without the leaf before (complex), silently truncated
    # updates (integer). Now a TypeError at init naming the function and the leaf.
    params = {"w": jnp.zeros(3), "b": jnp.zeros(2, dtype)}
    with pytest.raises(TypeError, match=rf"{re.escape(owner)}\b.*\['b'\].*{jnp.dtype(dtype)}"):
        factory().init(params)


# ----------------------------------------------------------------------------
# issue 14: sharded state, empty subtrees, tree_map_params, jax.grad, dtypes

P = jax.sharding.PartitionSpec
_MESH_SHAPE = (("data", 2), ("model", 4))
_PARAM_SPECS = {"b1": P("model"), "w1": P(None, "model"), "w2": P("model", None), "s": P()}


def _fsdp_tree(rng, m=None):
    shapes = {"b1": (8,), "w1": (4, 8), "w2": (8, 4), "s": ()}
    lead = () if m is None else (m,)
    return {k: jnp.asarray(rng.standard_normal(lead + s), jnp.float32) for k, s in shapes.items()}


@pytest.mark.parametrize(
    ("axis_type", "window"),
    [("Auto", "after"), ("Auto", "leading"), ("Explicit", "after"), ("Explicit", "leading")],
)
def test_sharded_state_gives_the_unsharded_update(rng, axis_type, window):
    # Issue 14: in Flax's FSDP example, nnx.Optimizer copies b1's sharding names
    # onto its (m, 8) window, which ends up P("model") along the *window* axis; the
    # Gram row then came out [K00, 0, K00, 0, ...] (a scatter pair that jax 0.10.2
    # miscompiles when the row is sharded) and the step was NaN. Every placement
    # must give the unsharded numbers, and K must stay G G^T.
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices (tests/conftest.py sets jax_num_cpu_devices)")
    m, steps = 8, 10
    mesh = jax.make_mesh(
        tuple(n for _, n in _MESH_SHAPE),
        tuple(a for a, _ in _MESH_SHAPE),
        axis_types=(getattr(jax.sharding.AxisType, axis_type),) * 2,
    )

    def put(x, spec):
        return jax.device_put(x, jax.sharding.NamedSharding(mesh, spec))

    window_specs = {k: P(None, *spec) for k, spec in _PARAM_SPECS.items()}
    if window == "leading":
        window_specs["b1"] = P("model")  # what copying b1's names onto the window gives
        window_specs["w2"] = P("model", None)
    tx = gdtx.mfac(1e-2, m, 1.0, momentum=0.5, weight_decay=1e-3)
    params = _fsdp_tree(rng)
    grads = [_fsdp_tree(rng) for _ in range(steps)]
    update = jax.jit(tx.update)
    state = tx.init(params)

    def place(path, leaf):  # as nnx.Optimizer places state: like the mirrored param
        names = [getattr(p, "name", None) for p in path]
        key = getattr(path[-1], "key", None)
        if "grads" in names:
            return put(leaf, window_specs[key])
        return put(leaf, _PARAM_SPECS[key] if "ema" in names else P())

    sharded = jax.tree_util.tree_map_with_path(place, state)
    sharded_params = {k: put(v, _PARAM_SPECS[k]) for k, v in params.items()}
    for t, g in enumerate(grads):
        expected, state = update(g, state, params)
        with jax.set_mesh(mesh):
            sg = {k: put(v, _PARAM_SPECS[k]) for k, v in g.items()}
            actual, sharded = update(sg, sharded, sharded_params)
        for k in params:
            np.testing.assert_allclose(
                actual[k], expected[k], rtol=1e-5, atol=1e-7, err_msg=f"{k} t={t}"
            )
        window = optax.tree.get(sharded, "grads")
        flat = np.concatenate([np.asarray(window[k], np.float64).reshape(m, -1) for k in window], 1)
        gram = optax.tree.get(sharded, "gram")
        np.testing.assert_allclose(gram, flat @ flat.T, rtol=1e-5, atol=1e-4, err_msg=f"t={t}")
    if axis_type == "Explicit":  # shardings are types there: the state keeps its placement
        for k, spec in window_specs.items():
            assert _padded(jax.typeof(window[k]).sharding.spec, 3) == _padded(spec, 3), k
        for k, spec in _PARAM_SPECS.items():
            assert _padded(jax.typeof(actual[k]).sharding.spec, 2) == _padded(spec, 2), k


def _padded(spec, n):
    return tuple(spec) + (None,) * (n - len(tuple(spec)))


_FACTORIES = {
    "scale_by_mfac": lambda: gdtx.scale_by_mfac(4, 1.0),
    "mfac": lambda: gdtx.mfac(0.1, 4, 1.0, momentum=0.5, weight_decay=1e-3),
}


@pytest.mark.parametrize("name", list(_FACTORIES))
def test_empty_subtrees(name):
    # Issue 14: "at least one array or dtype is required" at init.
    tx = _FACTORIES[name]()
    state = tx.init({})
    for update in (tx.update, jax.jit(tx.update)):
        updates, new_state = update({}, state, {})
        assert updates == {}
        assert jax.tree.structure(new_state) == jax.tree.structure(state)
    params = {"w": jnp.ones(3), "b": jnp.ones(2)}
    grads = {"w": jnp.full(3, 0.5), "b": jnp.full(2, -0.5)}
    masked = optax.masked(tx, {"w": False, "b": False})
    for update in (masked.update, jax.jit(masked.update)):
        updates, _ = update(grads, masked.init(params), params)
        assert all(np.array_equal(updates[k], grads[k]) for k in grads)
    multi = optax.multi_transform({"a": tx, "b": optax.sgd(1.0)}, {"w": "b", "b": "b"})
    updates, _ = jax.jit(multi.update)(grads, multi.init(params), params)
    assert all(np.array_equal(updates[k], -grads[k]) for k in grads)


def test_tree_map_params_over_the_state():
    # Issue 14: optax calls init with a placeholder that has no dtype.
    params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(4)}
    tx = gdtx.mfac(1e-3, 4, 1.0, momentum=0.9)
    state = tx.init(params)
    shapes = optax.tree_map_params(
        tx, lambda x: x.shape, state, transform_non_params=lambda _: None
    )
    assert optax.tree.get(shapes, "grads") == {"w": (4, 3, 2), "b": (4, 4)}
    assert optax.tree.get(shapes, "ema") == {"w": (3, 2), "b": (4,)}
    assert optax.tree.get(shapes, "gram") is None
    # The documented use: state specs from the param specs (a window gets its param's spec).
    specs = {"w": P(None, "model"), "b": P("model")}
    state_specs = optax.tree_map_params(
        tx, lambda _, spec: spec, state, specs, transform_non_params=lambda _: P()
    )
    assert optax.tree.get(state_specs, "ema") == specs


def _dense_direction(window, g, damping):
    m, d = window.shape
    return jnp.linalg.solve(damping * jnp.eye(d) + window.T @ window / m, g)


def test_jax_grad_through_an_update():
    # Issue 14: reverse mode failed on the Cholesky retry while_loop. With the
    # fixed-trip retries it differentiates, and agrees with the dense solve.
    m, d, damping = 3, 5, 0.1
    rng = np.random.default_rng(2)
    history, g = rng.standard_normal((m - 1, d)), rng.standard_normal(d)
    with jax.enable_x64(True):
        tx = gdtx.scale_by_mfac(m, damping, grads_dtype=jnp.float64)
        state = tx.init(jnp.zeros(d))
        for row in history:
            _, state = tx.update(jnp.asarray(row), state)

        def through_gdtx(x):
            u, _ = tx.update(x, state)
            return jnp.sum(jnp.sin(u))

        def through_dense(x):
            window = jnp.concatenate([jnp.asarray(history), x[None]])
            return jnp.sum(jnp.sin(_dense_direction(window, x, damping)))

        ours = jax.jit(jax.grad(through_gdtx))(jnp.asarray(g))
        expected = jax.grad(through_dense)(jnp.asarray(g))
        np.testing.assert_allclose(ours, expected, rtol=1e-9)
    # The retry path (a singular float32 window) differentiates to finite numbers too.
    tx = gdtx.scale_by_mfac(4, 1e-12)
    state = tx.init(jnp.zeros(3))
    for _ in range(4):
        _, state = tx.update(jnp.array([1.0, 2.0, 3.0]), state)
    grad = jax.jit(jax.grad(lambda x: jnp.sum(tx.update(x, state)[0])))(jnp.array([1.0, 2.0, 3.0]))
    assert np.all(np.isfinite(grad))


def test_momentum_has_a_dtype_knob():
    # Issue 14: the momentum ignored the dtype knobs (always the params' dtype).
    params = {"w": jnp.ones(3, jnp.bfloat16), "b": jnp.ones(2, jnp.float32)}
    grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.25, p.dtype), params)
    for mu_dtype, expected in (
        (None, {"w": jnp.bfloat16, "b": jnp.float32}),
        ("float32", {"w": jnp.float32, "b": jnp.float32}),
        (jnp.bfloat16, {"w": jnp.bfloat16, "b": jnp.bfloat16}),
    ):
        tx = gdtx.mfac(0.1, 4, 1.0, momentum=0.9, mu_dtype=mu_dtype)
        state = tx.init(params)
        updates, state = jax.jit(tx.update)(grads, state, params)
        ema = optax.tree.get(state, "ema")
        assert {k: v.dtype for k, v in ema.items()} == {
            k: jnp.dtype(v) for k, v in expected.items()
        }
        assert {k: v.dtype for k, v in updates.items()} == {k: v.dtype for k, v in grads.items()}
    # v = (1 - mu) u in float32 arithmetic: the float32 accumulator holds it exactly.
    plain = gdtx.scale_by_mfac(4, 1.0)
    u, _ = plain.update(grads, plain.init(params))
    np.testing.assert_allclose(ema["b"], 0.1 * np.asarray(u["b"], np.float32), rtol=1e-2)
    with pytest.raises(ValueError, match=r"gdtx\.mfac: `mu_dtype` must be None or a floating"):
        gdtx.mfac(0.1, mu_dtype="int32")


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"num_grads": 2.0}, TypeError, r"gdtx\.mfac: `num_grads` must be an integer, got 2\.0"),
        ({"damping": "1e-5"}, TypeError, r"gdtx\.mfac: `damping` must be a real number"),
        ({"damping": True}, TypeError, r"gdtx\.mfac: `damping` must be a real number"),
        ({"damping": math.inf}, ValueError, r"gdtx\.mfac: `damping` must be finite, got inf"),
        ({"momentum": None}, TypeError, r"gdtx\.mfac: `momentum` must be a real number"),
        ({"max_window_bytes": "1e9"}, TypeError, r"`max_window_bytes` must be a real number"),
    ],
)
def test_hyperparameter_types(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        gdtx.mfac(**{"learning_rate": 1e-3, **kwargs})


def test_a_gradient_of_the_wrong_shape_is_refused_before_the_decay():
    # Coupled decay g + wd p used to broadcast a (1,) gradient onto a (4,) param.
    params = {"w": jnp.ones(4)}
    tx = gdtx.mfac(0.1, 4, 1.0, weight_decay=1e-3)
    with pytest.raises(ValueError, match=r"gdtx\.mfac: the update at \['w'\] has shape \(1,\)"):
        tx.update({"w": jnp.ones(1)}, tx.init(params), params)


def test_bfloat16_scalars_and_long_horizons():
    # Beyond the issue: bf16 and scalar leaves, and the ring buffer after many laps.
    params = {"s": jnp.asarray(1.5, jnp.bfloat16), "v": jnp.linspace(-1, 1, 5).astype(jnp.bfloat16)}
    tx = gdtx.mfac(0.05, 4, 1.0, momentum=0.5)
    state = tx.init(params)

    def loss(p):
        return sum(jnp.sum(x.astype(jnp.float32) ** 2) for x in jax.tree.leaves(p))

    def step(carry, _):
        p, s = carry
        u, s = tx.update(jax.grad(loss)(p), s, p)
        return (optax.apply_updates(p, u), s), None

    (params, state), _ = jax.jit(lambda c: jax.lax.scan(step, c, None, length=2001))(
        (params, state)
    )
    assert jax.tree.map(lambda x: x.dtype, params) == {"s": jnp.bfloat16, "v": jnp.bfloat16}
    assert float(loss(params)) < 1e-3
    assert int(state[1][0].count) == 2001  # (decay, (M-FAC, momentum), learning rate)


# ----------------------------------------------------------------------------
# a model that must learn


def _train(data, tx, num_steps=300, batch_size=64):
    from tests import tiny_digits

    xs, ys = tiny_digits.batches(data, batch_size, num_steps)
    params = tiny_digits.init_params(jax.random.key(0))

    def step(carry, batch):
        params, state = carry
        loss, grads = jax.value_and_grad(tiny_digits.loss)(params, *batch)
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), loss

    run = jax.jit(lambda p, xs, ys: jax.lax.scan(step, (p, tx.init(p)), (xs, ys)))
    (params, _), losses = run(params, xs, ys)
    train_loss = float(tiny_digits.loss(params, data.x_train, data.y_train))
    accuracy = float(tiny_digits.accuracy(params, data.x_test, data.y_test))
    return train_loss, accuracy


def test_trains_tiny_digits_better_than_tuned_sgd_and_adam(tiny_digits):
    # 300 steps of batch 64. SGD and Adam at the best of a small grid (SGD
    # lr in {0.1, 0.3, 1}: 0.31, 0.13, 0.049; Adam lr in {1e-3, 1e-2}: 0.49, 0.043
    # final training loss); M-FAC with a 32-gradient window reaches 0.025.
    mfac_loss, mfac_acc = _train(tiny_digits, gdtx.mfac(1e-2, num_grads=32, damping=1e-3))
    sgd_loss, _ = _train(tiny_digits, optax.sgd(1.0))
    adam_loss, adam_acc = _train(tiny_digits, optax.adam(1e-2))
    assert mfac_acc >= 0.95, mfac_acc
    assert mfac_loss < 0.8 * min(sgd_loss, adam_loss), (mfac_loss, sgd_loss, adam_loss)
    assert mfac_acc >= adam_acc - 0.02, (mfac_acc, adam_acc)
