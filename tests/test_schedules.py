"""``gdtx.schedules``: linear decay, refinement, norm recording, batch-size rules.

The refinement is checked against an independent NumPy transcription of the
paper's algorithm written here from the mathematics (``_paper_refine``: explicit
loops over the 1-based steps, no cumulative sums), against the official smoothing
call (``scipy.ndimage.median_filter`` with the official padding), and, where the
research notes are present next to the repository, against
``../shared/research/ref_schedules.py`` (skipped otherwise: CI clones only the
repository). Mutants of the algorithm (off-by-one suffix sum, ``w = G^-1`` for
SGD, edge instead of mirrored padding, no normalisation) fail the same checks.
"""

from __future__ import annotations

import importlib.util
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gdtx import schedules
from gdtx.schedules import (
    RecordGradNormState,
    linear_decay,
    record_grad_norm,
    recorded_grad_norm,
    refined,
    refined_multipliers,
    scale_for_batch_size,
)

# --------------------------------------------------------------------------------------
# An independent transcription of the paper's algorithm (float64, explicit loops)


def _paper_weights(g_hat, norm):
    power = 2 if norm == "l2" else 1
    return [float(x) ** -power for x in g_hat]


def _paper_refine(g_hat, norm="l2"):
    """Paper, 1-based: w_t = G_t^-2 (l2) or G_t^-1 (l1); eta_t = w_t sum_{p=t+1}^T w_p; / max."""
    w = _paper_weights(g_hat, norm)
    T = len(w)
    eta = []
    for t in range(1, T + 1):
        tail = 0.0
        for p in range(t + 1, T + 1):
            tail += w[p - 1]
        eta.append(w[t - 1] * tail)
    eta = np.asarray(eta)
    return eta / eta.max()


def _reflect(g, pad):
    """NumPy's 'reflect' extension on the right, by its definition: mirror without the edge."""
    out = list(g)
    while len(out) < len(g) + pad:
        # mirror the sequence built so far about its last element (possibly repeatedly)
        mirrored = out[-2::-1]
        out.extend(mirrored[: len(g) + pad - len(out)])
    return np.asarray(out)


def _paper_median(g, width):
    """The official smoothing, by definition: right end mirrored by 2*width, edges repeated."""
    g = np.asarray(g, np.float64)
    ext = _reflect(g, 2 * width)
    h = width // 2
    ext = np.concatenate([np.full(h, ext[0]), ext, np.full(h, ext[-1])])
    windows = np.lib.stride_tricks.sliding_window_view(ext, width)[: len(g)]
    return np.median(windows, axis=1)


def _odd(fraction, n):
    return 2 * (int(fraction * n) // 2) + 1


def _paper_pipeline(g, norm="l2", smoothing=0.1, resolution=None):
    g = np.asarray(g, np.float64)
    if resolution is None:
        return _paper_refine(_paper_median(g, _odd(smoothing, len(g))), norm)
    n = resolution
    if len(g) < n:
        g = np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(g)), g)
    filt = _paper_median(g, _odd(smoothing, n))
    return _paper_refine(np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(g)), filt), norm)


def _synthetic_norms(T, seed=0):
    """A realistic norm curve: fast early fall, slow rise, noise and spikes."""
    rng = np.random.default_rng(seed)
    s = np.linspace(0, 1, T)
    g = 3.0 * np.exp(-8 * s) + 0.5 + 0.4 * s + 0.15 * rng.standard_normal(T) ** 2
    g[rng.integers(0, T, size=max(T // 50, 1))] *= 4.0
    return g


def _values(schedule, counts):
    """A schedule at many counts, compiled once (eager dispatch compiles every op)."""
    return jax.jit(schedule)(jnp.asarray(counts))


def _assert_matches(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12, err_msg=what)


# --------------------------------------------------------------------------------------
# Refinement: closed forms


@pytest.mark.parametrize("norm", ["l2", "l1"])
@pytest.mark.parametrize("T", [2, 3, 10, 1000])
def test_constant_norms_give_exactly_linear_decay(norm, T):
    """(T - 1 - s)/(T - 1): peak 1 at the first step, exactly 0 at the last one."""
    s = np.arange(T)
    for value in (1.0, 0.37, 12.0):
        for smoothing in (0.0, 0.1, 1.0):
            out = refined_multipliers(np.full(T, value), norm=norm, smoothing=smoothing)
            _assert_matches(out, (T - 1 - s) / (T - 1), f"constant {value}, {smoothing}")


def test_constant_norms_on_the_official_grid():
    """Official pipeline (resolution 10 000) on a 137-step constant run: (9999 - s)/9999."""
    out = refined_multipliers(np.full(137, 0.8), resolution=10_000)
    _assert_matches(out, (9999 - np.arange(10_000)) / 9999, "official grid")


def test_constant_norms_schedule_is_linear_decay_to_zero():
    """refined(constant, N) == linear_decay(peak, N - 1) at every step, 0 after the run."""
    with jax.enable_x64(True):
        s = jnp.arange(60)
        for N in (2, 7, 50):
            a = _values(refined(np.full(N, 2.0), total_steps=N, peak=0.3), s)
            b = _values(linear_decay(0.3, N - 1), s)
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-15)
            assert float(a[N - 1]) == 0.0 and float(a[0]) == 0.3


def test_warm_up_closed_form():
    """G_t = t^-1/2 (w_t = t): eta_t = t (T(T+1) - t(t+1))/2, peak at t* ~ sqrt((T^2+T)/3)."""
    T = 500
    t = np.arange(1, T + 1, dtype=np.float64)
    out = refined_multipliers(t**-0.5, smoothing=0.0)
    eta = t * (T * (T + 1) - t * (t + 1)) / 2
    np.testing.assert_allclose(out, eta / eta.max(), rtol=1e-12, atol=1e-15)
    assert abs(int(np.argmax(out)) + 1 - math.sqrt((T * T + T) / 3)) <= 1.0
    r = 1.01  # geometric weights w_t = r^t: eta_t = r^t (r^(T+1) - r^(t+1)) / (r - 1)
    out = refined_multipliers(r ** (-t / 2), smoothing=0.0)
    eta = r**t * (r ** (T + 1) - r ** (t + 1)) / (r - 1)
    np.testing.assert_allclose(out, eta / eta.max(), rtol=1e-10, atol=1e-13)


def test_range_scale_invariance_and_monotonicity(rng):
    for _ in range(30):
        T = int(rng.integers(2, 200))
        g = rng.uniform(0.05, 20, T)
        for norm in ("l2", "l1"):
            for smoothing in (0.0, 0.2):
                out = refined_multipliers(g, norm=norm, smoothing=smoothing)
                assert out[-1] == 0 and out.max() == 1.0 and out.min() >= 0
                assert np.all(np.isfinite(out))
                scaled = refined_multipliers(7.3 * g, norm=norm, smoothing=smoothing)
                np.testing.assert_allclose(scaled, out, rtol=1e-12, atol=1e-15)
        # the l2 variant of G is the l1 variant of G^2
        np.testing.assert_allclose(
            refined_multipliers(g, norm="l2", smoothing=0.0),
            refined_multipliers(g**2, norm="l1", smoothing=0.0),
            rtol=1e-12,
            atol=1e-15,
        )
        # non-decreasing norms: non-increasing schedule (no warm-up)
        out = refined_multipliers(np.sort(g), smoothing=0.0)
        assert np.all(np.diff(out) <= 1e-15)


def test_extreme_norms_do_not_overflow():
    g = np.array([1e-160, 1e-150, 1e-155, 1e-158])
    out = refined_multipliers(g, smoothing=0.0)
    np.testing.assert_allclose(out, _paper_refine(g / g.max()), rtol=1e-12)
    assert np.all(np.isfinite(out))


# --------------------------------------------------------------------------------------
# Refinement: the transcription, the official smoothing, and mutants


@pytest.mark.parametrize("norm", ["l2", "l1"])
@pytest.mark.parametrize("smoothing", [0.0, 0.05, 0.1, 0.5])
def test_refinement_equals_the_transcription(norm, smoothing):
    g = _synthetic_norms(300)
    out = refined_multipliers(g, norm=norm, smoothing=smoothing)
    _assert_matches(out, _paper_pipeline(g, norm, smoothing), f"{norm}, {smoothing}")


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_official_pipeline_is_reproduced(norm):
    """visual.py with nvals = resolution: upsample, filter, resample, refine.

    The official scripts use 10 000 points (width 1001); 2 000 (width 201) keeps
    the transcription's O(n width) median fast and exercises the same path.
    """
    g = _synthetic_norms(700, seed=1)
    out = refined_multipliers(g, norm=norm, resolution=2_000)
    assert out.shape == (2_000,)
    _assert_matches(out, _paper_pipeline(g, norm, 0.1, 2_000), norm)


def test_a_run_longer_than_the_resolution_uses_a_fraction_of_the_resolution():
    g = _synthetic_norms(2_500, seed=2)
    out = refined_multipliers(g, smoothing=0.1, resolution=1_000)  # width 101, not 251
    _assert_matches(out, _paper_pipeline(g, "l2", 0.1, 1_000), "long run")


def test_median_filter_is_the_official_scipy_call(rng):
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    for _ in range(40):
        n = int(rng.integers(2, 400))
        w = 2 * int(rng.integers(0, n // 2 + 1)) + 1
        g = rng.lognormal(size=n)
        pad = 2 * w
        official = scipy_ndimage.median_filter(
            np.pad(g, (0, pad), mode="reflect"), size=w, mode="nearest"
        )[:-pad]
        np.testing.assert_array_equal(schedules._median_filter(g, w), official)
        np.testing.assert_array_equal(_paper_median(g, w), official)


def test_median_filter_fixed_points(rng):
    """Constants are fixed; a monotone sequence is fixed except its last width//2 entries."""
    for _ in range(10):
        n = int(rng.integers(10, 300))
        w = 2 * int(rng.integers(0, n // 4 + 1)) + 1
        np.testing.assert_array_equal(schedules._median_filter(np.full(n, 3.3), w), 3.3)
        g = np.sort(rng.uniform(size=n))
        out = schedules._median_filter(g, w)
        np.testing.assert_array_equal(out[: n - w // 2], g[: n - w // 2])


def test_matches_the_research_reference_when_present():
    path = pathlib.Path(__file__).resolve().parents[2] / "shared/research/ref_schedules.py"
    if not path.exists():
        pytest.skip(f"{path} is not here (it is not part of the repository)")
    spec = importlib.util.spec_from_file_location("ref_schedules", path)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    g = _synthetic_norms(400, seed=3)
    for norm in ("l2", "l1"):
        _assert_matches(refined_multipliers(g, norm=norm, smoothing=0.0), ref.refine(g, norm), norm)
        _assert_matches(
            refined_multipliers(g, norm=norm, resolution=2_000),
            ref.official_pipeline(g, norm, nvals=2_000),
            f"official pipeline, {norm}",
        )
    lr = _values(refined(g, total_steps=137, peak=0.1), jnp.arange(137))
    expected = ref.schedule_from_multipliers(refined_multipliers(g), 0.1, 137)
    np.testing.assert_allclose(lr, expected, rtol=1e-5, atol=1e-7)


def _mutant_inclusive_tail(g_hat, norm="l2"):  # sum_{p >= t} instead of sum_{p > t}
    w = np.asarray(_paper_weights(g_hat, norm))
    eta = w * np.cumsum(w[::-1])[::-1]
    return eta / eta.max()


def _mutant_inverse_norm(g_hat, norm="l2"):  # w_t = G_t^-1 for SGD
    return _paper_refine(g_hat, "l1")


def _mutant_unnormalised(g_hat, norm="l2"):  # the official division by tail[-1] only
    w = np.asarray(_paper_weights(g_hat, norm))
    eta = w * np.append(np.cumsum(w[::-1])[::-1][1:], 0.0)
    return eta / w[-1]


@pytest.mark.parametrize(
    "mutant", [_mutant_inclusive_tail, _mutant_inverse_norm, _mutant_unnormalised]
)
def test_the_comparison_catches_mutants_of_the_algorithm(mutant):
    g = _synthetic_norms(300)
    smoothed = _paper_median(g, _odd(0.1, len(g)))
    _assert_matches(refined_multipliers(g), _paper_refine(smoothed), "gdtx itself")
    with pytest.raises(AssertionError):
        _assert_matches(mutant(smoothed), _paper_refine(smoothed), mutant.__name__)


def test_the_comparison_catches_a_mutant_of_the_smoothing(monkeypatch):
    """Edge ('nearest') padding on the right instead of the official mirror."""

    def edge_padded(g, width):
        h = width // 2
        ext = np.pad(g, (h, h), mode="edge")
        return np.median(np.lib.stride_tricks.sliding_window_view(ext, width), axis=1)

    g = _synthetic_norms(300)
    monkeypatch.setattr(schedules, "_median_filter", edge_padded)
    with pytest.raises(AssertionError):
        _assert_matches(refined_multipliers(g), _paper_pipeline(g), "edge padding")


# --------------------------------------------------------------------------------------
# Refinement: the schedule


def test_refined_schedule_is_a_lookup_and_interpolates():
    with jax.enable_x64(True):
        g = _synthetic_norms(101)
        m = refined_multipliers(g)
        same = _values(refined(g, total_steps=101, peak=2.0), jnp.arange(101))
        np.testing.assert_array_equal(np.asarray(same), 2.0 * m)
        # twice as long a run: the recorded points at even steps, midpoints at odd ones
        longer = np.asarray(_values(refined(g, total_steps=201), jnp.arange(201)))
        np.testing.assert_allclose(longer[::2], m, rtol=0, atol=1e-15)
        np.testing.assert_allclose(longer[1::2], (m[:-1] + m[1:]) / 2, rtol=0, atol=1e-15)
        shorter = np.asarray(_values(refined(g, total_steps=11), jnp.arange(11)))
        np.testing.assert_allclose(shorter, m[::10], rtol=0, atol=1e-15)


def test_refined_schedule_is_jit_safe_non_negative_and_finite():
    g = _synthetic_norms(500)
    schedule = refined(g, total_steps=300, peak=0.1, norm="l1")
    traces = []

    @jax.jit
    def lr(count):
        traces.append(None)
        return schedule(count)

    values = np.asarray([lr(jnp.asarray(s, jnp.int32)) for s in range(0, 400, 7)])
    assert len(traces) == 1
    assert np.all(np.isfinite(values)) and values.min() >= 0 and values.max() <= 0.1
    eager = np.asarray(schedule(jnp.arange(0, 400, 7)))
    np.testing.assert_allclose(values, eager, rtol=1e-6, atol=1e-9)
    assert values[-1] == 0.0  # past the run: the last value, 0
    assert schedule(0).dtype == jnp.float32
    with jax.enable_x64(True):
        assert schedule(jnp.asarray(0)).dtype == jnp.float64


def test_refined_schedule_drives_an_optimizer():
    """As optax's learning rate and through inject_hyperparams: each step is -lr(s) g."""
    g = _synthetic_norms(50)
    schedule = refined(g, total_steps=50, peak=0.5)
    for tx in (optax.sgd(schedule), optax.inject_hyperparams(optax.sgd)(learning_rate=schedule)):
        params = jnp.ones(3)
        state = tx.init(params)
        step = jax.jit(tx.update)
        for s in range(5):
            updates, state = step(jnp.full(3, 2.0), state, params)
            np.testing.assert_allclose(updates, -2.0 * schedule(s), rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        (
            {"grad_norms": [1.0, 0.0, 2.0]},
            ValueError,
            r"every entry of `grad_norms`.*got 0\.0 at index 1",
        ),
        ({"grad_norms": [1.0, np.inf]}, ValueError, r"every entry of `grad_norms`.*inf at index 1"),
        ({"grad_norms": [1.0, np.nan]}, ValueError, r"every entry of `grad_norms`.*nan at index 1"),
        ({"grad_norms": [1.0]}, ValueError, r"`grad_norms` must be 1-D with at least 2"),
        ({"grad_norms": np.ones((3, 2))}, ValueError, r"`grad_norms` must be 1-D"),
        ({"grad_norms": "abc"}, TypeError, r"`grad_norms` must be a 1-D sequence"),
        ({"smoothing": 1.5}, ValueError, r"`smoothing` must be in \[0, 1\], got 1\.5"),
        ({"smoothing": -0.1}, ValueError, r"`smoothing` must be in \[0, 1\], got -0\.1"),
        ({"smoothing": "0.1"}, TypeError, r"`smoothing` must be a real number"),
        ({"norm": "l3"}, ValueError, r"`norm` must be one of \('l2', 'l1'\), got 'l3'"),
        ({"resolution": 1}, ValueError, r"`resolution` must be an integer >= 2, got 1"),
        ({"resolution": 100.0}, TypeError, r"`resolution` must be an integer"),
        ({"total_steps": 0}, ValueError, r"`total_steps` must be an integer >= 1, got 0"),
        ({"total_steps": 10.0}, TypeError, r"`total_steps` must be an integer"),
        ({"peak": -1.0}, ValueError, r"`peak` must be >= 0, got -1\.0"),
        ({"peak": "x"}, TypeError, r"`peak` must be a real number"),
    ],
)
def test_refined_validates_its_inputs(kwargs, error, pattern):
    args = {"grad_norms": np.ones(10), "total_steps": 10, **kwargs}
    with pytest.raises(error, match=r"gdtx\.schedules\.refined: " + pattern):
        refined(**args)


def test_refinement_refuses_traced_norms():
    with pytest.raises(TypeError, match=r"`grad_norms` must be concrete"):
        jax.jit(lambda g: refined_multipliers(g))(jnp.ones(4))


# --------------------------------------------------------------------------------------
# Linear decay


def test_linear_decay_without_warm_up_is_optax_linear_schedule():
    """In float64 (in float32 optax's ``peak + (0 - peak) s/N`` loses ~1e-8 near 0)."""
    with jax.enable_x64(True):
        s = jnp.arange(130)
        for N in (1, 2, 7, 100):
            ours = _values(linear_decay(0.3, N), s)
            np.testing.assert_allclose(ours, optax.linear_schedule(0.3, 0.0, N)(s), atol=1e-15)
            assert ours[0] == 0.3 and np.all(ours[N:] == 0)


@pytest.mark.parametrize(("N", "W"), [(1000, 100), (10, 1), (10, 9), (6, 2)])
def test_linear_decay_with_warm_up(N, W):
    """(j+1)/W for j < W, then 1 - (j-W)/(N-W): 1/W first, 1 at W-1 and W, 1/(N-W) last."""
    with jax.enable_x64(True):
        j = np.arange(N + 5, dtype=np.float64)
        expected = np.where(j < W, (j + 1) / W, np.clip(1 - (j - W) / (N - W), 0, 1))
        out = np.asarray(_values(linear_decay(2.0, N, warmup_steps=W), jnp.arange(N + 5)))
        np.testing.assert_allclose(out, 2.0 * expected, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(out[[0, W - 1, W]], [2.0 / W, 2.0, 2.0], rtol=1e-15)
        np.testing.assert_allclose(out[N - 1], 2.0 / (N - W), rtol=1e-13)
        assert np.all(out[N:] == 0)
        joined = optax.join_schedules(
            [optax.linear_schedule(2.0 / W, 2.0, W - 1), optax.linear_schedule(2.0, 0.0, N - W)],
            [W],
        )
        np.testing.assert_allclose(out, [joined(s) for s in range(N + 5)], rtol=1e-12)


def test_linear_decay_is_jit_safe_and_takes_traced_arguments():
    schedule = linear_decay(1.0, 50, warmup_steps=5)
    traces = []

    @jax.jit
    def lr(count):
        traces.append(None)
        return schedule(count)

    values = [float(lr(jnp.asarray(s, jnp.int32))) for s in range(60)]
    assert len(traces) == 1
    np.testing.assert_allclose(values, schedule(jnp.arange(60)), rtol=1e-6, atol=1e-7)
    traced = jax.jit(lambda p, n, w, s: linear_decay(p, n, warmup_steps=w)(s))
    np.testing.assert_allclose(traced(1.0, 50, 5, 30), schedule(30), rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"warmup_steps": 10}, ValueError, r"`warmup_steps` must be < `total_steps` \(10\)"),
        ({"warmup_steps": -1}, ValueError, r"`warmup_steps` must be an integer >= 0, got -1"),
        ({"warmup_steps": 2.0}, TypeError, r"`warmup_steps` must be an integer"),
        ({"total_steps": 0}, ValueError, r"`total_steps` must be an integer >= 1, got 0"),
        ({"total_steps": True}, TypeError, r"`total_steps` must be an integer"),
        ({"peak": -0.1}, ValueError, r"`peak` must be >= 0, got -0\.1"),
        ({"peak": math.nan}, ValueError, r"`peak` must be >= 0, got nan"),
        ({"peak": None}, TypeError, r"`peak` must be a real number"),
    ],
)
def test_linear_decay_validates_its_inputs(kwargs, error, pattern):
    args = {"peak": 1.0, "total_steps": 10, **kwargs}
    with pytest.raises(error, match=r"gdtx\.schedules\.linear_decay: " + pattern):
        linear_decay(args.pop("peak"), args.pop("total_steps"), **args)


# --------------------------------------------------------------------------------------
# Recording the norms


def _tree(dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    complex_ = jnp.issubdtype(dtype, jnp.complexfloating)

    def draw(*shape):
        x = rng.standard_normal(shape)
        return jnp.asarray(x + 1j * rng.standard_normal(shape) if complex_ else x, dtype)

    return {"a": draw(3, 4), "b": (draw(5), None)}


def _numpy_norm(tree, norm):
    flat = np.concatenate([np.asarray(x, np.complex128).ravel() for x in jax.tree.leaves(tree)])
    return float(np.sum(np.abs(flat))) if norm == "l1" else float(np.linalg.norm(flat))


@pytest.mark.parametrize("norm", ["l2", "l1"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "complex64"])
def test_record_grad_norm_in_a_jitted_chain(norm, dtype):
    """The updates pass through bit for bit (sgd at lr 1 negates them exactly)."""
    params = _tree(dtype, seed=0)
    tx = optax.chain(record_grad_norm(norm), optax.sgd(1.0))
    state = tx.init(params)
    step = jax.jit(tx.update)
    for seed in range(1, 4):
        grads = _tree(dtype, seed=seed)
        updates, state = step(grads, state, params)
        for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads), strict=True):
            assert u.dtype == g.dtype
            np.testing.assert_array_equal(np.asarray(u), np.asarray(-g))
        recorded = recorded_grad_norm(state)
        assert recorded.dtype == jnp.float32 and recorded.shape == ()
        np.testing.assert_allclose(float(recorded), _numpy_norm(grads, norm), rtol=1e-5)
    assert int(optax.tree.get(state, "count", filtering=_record_only)) == 3
    if norm == "l2" and dtype == "float32":
        np.testing.assert_allclose(recorded, optax.tree.norm(grads), rtol=1e-6)


def _record_only(path, _):
    return path[-1].tuple_name == "RecordGradNormState"


def test_record_grad_norm_keeps_float64_under_x64():
    with jax.enable_x64(True):
        grads = {"w": jnp.asarray([3.0, 4.0], jnp.float64)}
        tx = record_grad_norm()
        _, state = tx.update(grads, tx.init(grads))
        assert state.grad_norm.dtype == jnp.float64 and float(state.grad_norm) == 5.0


def test_record_grad_norm_on_empty_trees():
    tx = record_grad_norm()
    state = tx.init({})
    updates, state = jax.jit(tx.update)({}, state, {})
    assert updates == {} and float(state.grad_norm) == 0.0 and int(state.count) == 1


def test_record_grad_norm_refuses_integer_params_and_wrong_shapes():
    tx = record_grad_norm()
    with pytest.raises(TypeError, match=r"gdtx\.schedules\.record_grad_norm.*\['w'\]"):
        tx.init({"w": jnp.zeros(3, jnp.int32)})
    params = {"w": jnp.zeros(4)}
    with pytest.raises(ValueError, match=r"gdtx\.schedules\.record_grad_norm.*shape \(1,\)"):
        tx.update({"w": jnp.ones(1)}, tx.init(params), params)
    with pytest.raises(ValueError, match=r"`norm` must be one of \('l2', 'l1'\), got 'linf'"):
        record_grad_norm("linf")


def test_recorded_grad_norm_needs_exactly_one_recorder():
    params = jnp.zeros(2)
    with pytest.raises(ValueError, match=r"recorded_grad_norm: `state`.*found 0"):
        recorded_grad_norm(optax.adam(1e-3).init(params))
    two = optax.chain(record_grad_norm(), record_grad_norm("l1"))
    with pytest.raises(ValueError, match=r"found 2"):
        recorded_grad_norm(two.init(params))
    assert isinstance(record_grad_norm().init(params), RecordGradNormState)


def test_record_grad_norm_under_multisteps_records_the_averaged_gradient():
    tx = optax.MultiSteps(optax.chain(record_grad_norm(), optax.sgd(0.1)), every_k_schedule=2)
    params = jnp.zeros(2)
    state = tx.init(params)
    recorded = []
    for g in ([3.0, 4.0], [0.0, 0.0], [6.0, 8.0], [6.0, 8.0]):
        _, state = tx.update(jnp.asarray(g), state, params)
        recorded.append(float(recorded_grad_norm(state)))
    assert recorded == [0.0, 2.5, 2.5, 10.0]


def test_record_grad_norm_in_an_nnx_optimizer():
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.chain(record_grad_norm(), optax.sgd(0.1)), wrt=nnx.Param)
    x = jnp.ones((3, 2))
    loss = lambda m: jnp.sum(m(x) ** 2)  # noqa: E731
    grads = nnx.grad(loss)(model)
    optimizer.update(model, grads)
    expected = optax.tree.norm(nnx.to_pure_dict(grads))
    np.testing.assert_allclose(float(recorded_grad_norm(optimizer.opt_state)), expected, rtol=1e-6)


def test_recorded_norms_refine_into_a_schedule():
    """The whole loop: record during a first run, refine, train again."""

    def loss(p):
        return jnp.sum(jnp.asarray([1.0, 10.0]) * p**2)

    def train(learning_rate, num_steps):
        tx = optax.chain(record_grad_norm(), optax.sgd(learning_rate))
        params = jnp.asarray([1.0, 1.0])
        state = tx.init(params)

        @jax.jit
        def step(params, state):
            updates, state = tx.update(jax.grad(loss)(params), state, params)
            return optax.apply_updates(params, updates), state, recorded_grad_norm(state)

        norms = []
        for _ in range(num_steps):
            params, state, norm = step(params, state)
            norms.append(float(norm))
        return params, np.asarray(norms)

    _, norms = train(0.04, 100)
    schedule = refined(norms, total_steps=100, peak=0.04)
    values = np.asarray(schedule(jnp.arange(100)))
    assert values.max() == pytest.approx(0.04) and values[-1] == 0.0
    final, _ = train(schedule, 100)
    assert float(loss(final)) < 0.02 * float(loss(jnp.ones(2)))


# --------------------------------------------------------------------------------------
# Batch-size rules


def test_batch_size_rules():
    assert scale_for_batch_size(0.1, 128, 512) == pytest.approx(0.4)
    assert scale_for_batch_size(0.1, 128, 512, "sqrt") == pytest.approx(0.2)
    assert scale_for_batch_size(0.1, 128, 32, "sqrt") == pytest.approx(0.05)
    for rule in ("linear", "sqrt"):
        two_hops = scale_for_batch_size(scale_for_batch_size(0.1, 128, 512, rule), 512, 2048, rule)
        assert two_hops == pytest.approx(scale_for_batch_size(0.1, 128, 2048, rule))
    schedule = scale_for_batch_size(optax.linear_schedule(0.1, 0.0, 10), 64, 256, "sqrt")
    np.testing.assert_allclose(schedule(jnp.arange(5)), 0.2 * (1 - jnp.arange(5) / 10), rtol=1e-6)
    np.testing.assert_allclose(scale_for_batch_size(jnp.asarray(0.1), 10, jnp.asarray(40.0)), 0.4)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"batch_size": 0}, ValueError, r"`batch_size` must be > 0, got 0"),
        ({"batch_size": -64}, ValueError, r"`batch_size` must be > 0, got -64"),
        ({"base_batch_size": 0.0}, ValueError, r"`base_batch_size` must be > 0, got 0\.0"),
        ({"batch_size": math.inf}, ValueError, r"`batch_size` must be finite, got inf"),
        ({"batch_size": "64"}, TypeError, r"`batch_size` must be a real number, got '64'"),
        ({"base_batch_size": None}, TypeError, r"`base_batch_size` must be a real number"),
        ({"batch_size": True}, TypeError, r"`batch_size` must be a real number, got True"),
        ({"learning_rate": -0.1}, ValueError, r"`learning_rate` must be >= 0, got -0\.1"),
        ({"learning_rate": "0.1"}, TypeError, r"`learning_rate` must be a real number or a"),
        ({"rule": "cubic"}, ValueError, r"`rule` must be one of \('linear', 'sqrt'\), got 'cubic'"),
    ],
)
def test_scale_for_batch_size_validates_its_inputs(kwargs, error, pattern):
    args = {"learning_rate": 0.1, "base_batch_size": 32, "batch_size": 64, **kwargs}
    with pytest.raises(error, match=r"gdtx\.schedules\.scale_for_batch_size: " + pattern):
        scale_for_batch_size(**args)


@pytest.mark.parametrize("rule", ["linear", "sqrt"])
def test_a_changing_batch_size_through_inject_hyperparams_compiles_once(rule):
    def sgd_for(learning_rate, batch_size):
        return optax.sgd(scale_for_batch_size(learning_rate, 32, batch_size, rule))

    tx = optax.inject_hyperparams(sgd_for)(learning_rate=0.1, batch_size=32)
    params = jnp.ones(2)
    state = tx.init(params)
    traces = []

    @jax.jit
    def step(state, batch_size):
        traces.append(None)
        state.hyperparams["batch_size"] = batch_size
        return tx.update(jnp.ones(2), state, params)

    template = state.hyperparams["batch_size"]
    for batch_size in (32, 64, 128, 512, 96):
        updates, state = step(state, jnp.full_like(template, batch_size))
        factor = batch_size / 32 if rule == "linear" else math.sqrt(batch_size / 32)
        np.testing.assert_allclose(updates, -0.1 * factor, rtol=1e-6)
    assert len(traces) == 1, f"{len(traces)} compilations for 5 batch sizes"
