"""Adaptive batch-size tests (AdAdaGrad): exact algebra, closed-form statistics, the loop.

The statistical checks use Model I of ``shared/research/adadagrad.md``: least
squares ``f_i(w) = ||w - y_i||^2 / 2`` with ``y_i = w* + eps_i``,
``eps_i ~ N(0, sigma^2 I_d)``, so ``g_i = delta - eps_i`` with ``delta = w - w*``.
The Gaussian sample mean is independent of the residuals, which gives exact
distributions:

- ``(b-1) S_norm / sigma^2 ~ chi2(d (b-1))``, so ``E S_norm = d sigma^2``;
- ``(b-1) S_orth / sigma^2 ~ chi2((d-1)(b-1))``, so ``E S_orth = (d-1) sigma^2``;
- given ``gbar``, ``(b-1) S_ip / (sigma^2 ||gbar||^2) ~ chi2(b-1)``, so
  ``E S_ip = sigma^2 E||gbar||^2 = sigma^2 (||delta||^2 + d sigma^2 / b)``;
- at ``delta = 0`` the norm test's required size is ``b / eta^2`` times an
  ``F(d (b-1), d)`` variable, of mean ``d / (d - 2)``.

Each mean is checked against its exact standard error over ``R`` independent
batches (fixed seeds) with a 4.5-sigma bound, and each distribution with a
Kolmogorov-Smirnov test; the mutants (a biased ``1/b`` variance, the blockwise
statistics where the global ones are expected) are shown to fail those bounds.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats as scipy_stats

import gdtx

Z_MAX = 4.5
D, B, SIGMA, R = 8, 16, 0.5, 20_000
DELTA = np.full(D, math.sqrt(0.3 / D))  # ||delta||^2 = 0.3


# --------------------------------------------------------------------------------------
# exact algebra


def _random_tree(b, seed, mean_scale=1.0):
    rng = np.random.default_rng(seed)
    shift = rng.standard_normal(7) * mean_scale
    return {
        "w": jnp.asarray(rng.standard_normal((b, 2, 2)) + shift[:4].reshape(1, 2, 2)),
        "b": jnp.asarray(rng.standard_normal((b, 3)) + shift[4:][None, :]),
    }


def _numpy_statistics(tree, blockwise):
    blocks = [np.asarray(x, np.float64).reshape(x.shape[0], -1) for x in jax.tree.leaves(tree)]
    b = blocks[0].shape[0]
    groups = [[x] for x in blocks] if blockwise else [blocks]
    full = np.concatenate(blocks, axis=1)
    gbar = full.mean(0)
    s_norm = np.sum((full - gbar) ** 2) / (b - 1)
    s_ip = s_orth = 0.0
    for group in groups:
        x = np.concatenate(group, axis=1)
        m = x.mean(0)
        ip = x @ m
        s_ip += np.sum((ip - m @ m) ** 2) / (b - 1)
        s_orth += np.sum((x - np.outer(ip / (m @ m), m)) ** 2) / (b - 1)
    return gbar @ gbar, s_norm, s_ip, s_orth


@pytest.mark.parametrize("blockwise", [False, True])
def test_statistics_match_a_direct_transcription(blockwise):
    with jax.enable_x64(True):
        tree = _random_tree(7, seed=0)
        ours = gdtx.batch_gradient_statistics(tree, blockwise=blockwise)
        np.testing.assert_allclose(ours, _numpy_statistics(tree, blockwise), rtol=1e-12)


def test_blockwise_differs_from_global_but_not_for_the_norm():
    with jax.enable_x64(True):
        tree = _random_tree(7, seed=1)
        glob = gdtx.batch_gradient_statistics(tree)
        block = gdtx.batch_gradient_statistics(tree, blockwise=True)
        np.testing.assert_allclose(block.s_norm, glob.s_norm, rtol=1e-14)
        np.testing.assert_allclose(block.mean_sq_norm, glob.mean_sq_norm, rtol=1e-14)
        assert abs(float(block.s_ip) / float(glob.s_ip) - 1) > 1e-2
        assert abs(float(block.s_orth) / float(glob.s_orth) - 1) > 1e-2
        # one leaf: the two coincide
        single = {"w": tree["w"]}
        np.testing.assert_allclose(
            gdtx.batch_gradient_statistics(single, blockwise=True),
            gdtx.batch_gradient_statistics(single),
            rtol=1e-13,
        )


def test_s_norm_identity():
    # S_norm = b / (b - 1) * (mean_i ||g_i||^2 - ||gbar||^2)
    with jax.enable_x64(True):
        tree = _random_tree(9, seed=2)
        st = gdtx.batch_gradient_statistics(tree)
        per_example = sum(np.sum(np.asarray(x).reshape(9, -1) ** 2, axis=1) for x in tree.values())
        mean_sq_each = np.mean(per_example)
        np.testing.assert_allclose(st.s_norm, 9 / 8 * (mean_sq_each - st.mean_sq_norm), rtol=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_passed_iff_required_size_fits(seed):
    # mean_scale spreads the batches over both outcomes
    with jax.enable_x64(True):
        tree = _random_tree(6, seed=seed, mean_scale=0.3 * seed)
        for result in (
            gdtx.norm_test(tree, eta=0.5),
            gdtx.augmented_inner_product_test(tree, theta=0.5, nu=1.0),
            gdtx.augmented_inner_product_test(tree, theta=0.5, nu=1.0, blockwise=True),
        ):
            assert bool(result.passed) == bool(result.required_batch_size <= 6)
            expected = min(max(6, math.ceil(float(result.required_batch_size))), 50_000)
            assert int(result.next_batch_size) == expected


def test_norm_test_closed_form():
    # g = (1 +- a, 0): S_norm = 2 a^2, ||gbar||^2 = 1, required = 2 a^2 / eta^2.
    with jax.enable_x64(True):
        a, eta = 0.3, 0.2
        result = gdtx.norm_test(jnp.array([[1 + a, 0.0], [1 - a, 0.0]]), eta=eta)
        np.testing.assert_allclose(result.required_batch_size, 2 * a**2 / eta**2, rtol=1e-12)
        assert not bool(result.passed) and int(result.next_batch_size) == 5


def test_augmented_test_takes_the_larger_ratio():
    # g_i = (1, +-c): gbar = (1, 0), <g_i, gbar> = 1 exactly so S_ip = 0; the
    # orthogonal parts are (0, +-c): S_orth = 2 c^2 and required = 2 c^2 / nu^2.
    with jax.enable_x64(True):
        c, nu = 0.3, 0.25
        grads = jnp.array([[1.0, c], [1.0, -c]])
        result = gdtx.augmented_inner_product_test(grads, theta=0.1, nu=nu)
        np.testing.assert_allclose(result.statistics.s_ip, 0.0, atol=1e-15)
        np.testing.assert_allclose(result.required_batch_size, 2 * c**2 / nu**2, rtol=1e-12)
        # nu = inf is the plain inner-product test: it passes
        plain = gdtx.augmented_inner_product_test(grads, theta=0.1, nu=jnp.inf)
        assert bool(plain.passed) and float(plain.required_batch_size) == 0.0
        assert int(plain.next_batch_size) == 2


@pytest.mark.parametrize(
    "run",
    [
        lambda g: gdtx.norm_test(g, max_batch_size=640),
        lambda g: gdtx.augmented_inner_product_test(g, max_batch_size=640),
        lambda g: gdtx.augmented_inner_product_test(g, blockwise=True, max_batch_size=640),
    ],
)
def test_zero_mean_gradient_fails_and_jumps_to_the_cap(run):
    grads = {"a": jnp.array([[1.0, -2.0], [-1.0, 2.0]]), "b": jnp.zeros((2, 3))}
    result = run(grads)
    assert not bool(result.passed)
    assert float(result.required_batch_size) == np.inf
    assert int(result.next_batch_size) == 640
    for x in jax.tree.leaves(result.statistics):
        assert np.isfinite(x)


def test_next_batch_size_never_shrinks_and_is_capped():
    assert int(gdtx.next_batch_size(64, 3.2, 1000)) == 64
    assert int(gdtx.next_batch_size(64, 64.0, 1000)) == 64
    assert int(gdtx.next_batch_size(64, 64.5, 1000)) == 65
    assert int(gdtx.next_batch_size(64, 1e9, 1000)) == 1000
    assert int(gdtx.next_batch_size(64, np.inf, 1000)) == 1000


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"gdtx\.norm_test: .*batch of >= 2, got 1"):
        gdtx.norm_test(jnp.ones((1, 3)))
    with pytest.raises(ValueError, match=r"same leading batch axis"):
        gdtx.norm_test({"a": jnp.ones((4, 3)), "b": jnp.ones((5,))})
    with pytest.raises(ValueError, match=r"gdtx\.norm_test: `eta` must be > 0, got 0\.0"):
        gdtx.norm_test(jnp.ones((4, 3)), eta=0.0)
    with pytest.raises(ValueError, match=r"`nu` must be > 0, got -1\.0"):
        gdtx.augmented_inner_product_test(jnp.ones((4, 3)), nu=-1.0)


def test_tests_run_under_jit():
    grads = _random_tree(5, seed=3)
    eager = gdtx.augmented_inner_product_test(grads)
    jitted = jax.jit(gdtx.augmented_inner_product_test)(grads)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


# --------------------------------------------------------------------------------------
# closed-form expectations on least squares (Model I)


def _model_one_batches(seed, delta, blocks=None):
    """Statistics of R batches of b per-example gradients g_i = delta - eps_i."""
    with jax.enable_x64(True):
        eps = np.random.default_rng(seed).standard_normal((R, B, D)) * SIGMA
        grads = jnp.asarray(delta[None, None, :] - eps)
        if blocks is None:
            tree = grads
        else:  # split the coordinates into leaves
            cuts = np.cumsum(blocks)[:-1]
            tree = tuple(jnp.split(grads, cuts, axis=2))
        fn = jax.vmap(lambda g: gdtx.batch_gradient_statistics(g, blockwise=blocks is not None))
        norm = jax.vmap(lambda g: gdtx.norm_test(g, eta=0.1).required_batch_size)
        st = jax.tree.map(np.asarray, fn(tree))
        return st, np.asarray(norm(grads))


def _z(samples, mean, var):
    return (np.mean(samples) - mean) / math.sqrt(var / len(samples))


@pytest.fixture(scope="session")
def model_one():
    return _model_one_batches(seed=7, delta=DELTA)


def test_s_norm_has_mean_d_sigma2_and_its_chi2_law(model_one):
    st, _ = model_one
    assert abs(_z(st.s_norm, D * SIGMA**2, 2 * D * SIGMA**4 / (B - 1))) < Z_MAX
    scaled = (B - 1) * st.s_norm / SIGMA**2
    assert scipy_stats.kstest(scaled, scipy_stats.chi2(D * (B - 1)).cdf).pvalue > 1e-3
    # mutant: the biased 1/b variance is off by 1/b = 6 %, tens of standard errors
    biased = st.s_norm * (B - 1) / B
    assert abs(_z(biased, D * SIGMA**2, 2 * D * SIGMA**4 / (B - 1))) > 10 * Z_MAX


def test_s_orth_has_mean_d_minus_1_sigma2_and_its_chi2_law(model_one):
    st, _ = model_one
    dof = (D - 1) * (B - 1)
    assert abs(_z(st.s_orth, (D - 1) * SIGMA**2, 2 * (D - 1) * SIGMA**4 / (B - 1))) < Z_MAX
    scaled = (B - 1) * st.s_orth / SIGMA**2
    assert scipy_stats.kstest(scaled, scipy_stats.chi2(dof).cdf).pvalue > 1e-3


def test_s_ip_has_mean_sigma2_times_expected_mean_sq_norm(model_one):
    st, _ = model_one
    delta_sq = float(DELTA @ DELTA)
    # ||gbar||^2 = (sigma^2 / b) * noncentral chi2(d, lambda = b ||delta||^2 / sigma^2)
    lam = B * delta_sq / SIGMA**2
    mean_g2 = SIGMA**2 / B * (D + lam)
    var_g2 = (SIGMA**2 / B) ** 2 * 2 * (D + 2 * lam)
    np.testing.assert_allclose(mean_g2, delta_sq + D * SIGMA**2 / B)
    assert abs(_z(st.mean_sq_norm, mean_g2, var_g2)) < Z_MAX
    # S_ip = sigma^2 ||gbar||^2 X / (b-1), X ~ chi2(b-1) independent of gbar
    var_ip = SIGMA**4 * (var_g2 * (1 + 2 / (B - 1)) + 2 * mean_g2**2 / (B - 1))
    assert abs(_z(st.s_ip, SIGMA**2 * mean_g2, var_ip)) < Z_MAX
    conditional = (B - 1) * st.s_ip / (SIGMA**2 * st.mean_sq_norm)
    assert scipy_stats.kstest(conditional, scipy_stats.chi2(B - 1).cdf).pvalue > 1e-3


def test_blockwise_orthogonality_has_mean_d_minus_p_sigma2():
    # Two leaves of 3 and 5 coordinates: projecting each block on its own part of gbar
    # leaves (3-1) + (5-1) = d - 2 dimensions of noise, not d - 1.
    st, _ = _model_one_batches(seed=8, delta=DELTA, blocks=(3, 5))
    var = 2 * (D - 2) * SIGMA**4 / (B - 1)
    assert abs(_z(st.s_orth, (D - 2) * SIGMA**2, var)) < Z_MAX
    assert abs(_z(st.s_orth, (D - 1) * SIGMA**2, var)) > 10 * Z_MAX
    # the blockwise S_ip keeps the mean sigma^2 ||gbar||^2 (blocks are independent)
    ratio = (B - 1) * st.s_ip / (SIGMA**2 * st.mean_sq_norm)
    assert abs(_z(ratio / (B - 1), 1.0, 2 / (B - 1))) < Z_MAX


def test_norm_test_at_the_minimiser_asks_for_b_over_eta2_times_an_f_mean():
    # At delta = 0, required = b/eta^2 * [chi2(d(b-1))/(d(b-1))] / [chi2(d)/d] = b/eta^2 F.
    _, required = _model_one_batches(seed=9, delta=np.zeros(D))
    d1, d2 = D * (B - 1), D
    mean_f = d2 / (d2 - 2)
    var_f = 2 * d2**2 * (d1 + d2 - 2) / (d1 * (d2 - 2) ** 2 * (d2 - 4))
    scale = B / 0.1**2
    assert abs(_z(required / scale, mean_f, var_f)) < Z_MAX
    f_law = scipy_stats.f(d1, d2)
    assert scipy_stats.kstest(required / scale, f_law.cdf).pvalue > 1e-3


# --------------------------------------------------------------------------------------
# the training-loop helper


def _least_squares(n=512, d=3, seed=0):
    y = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return y, lambda w, y_i: 0.5 * jnp.sum((w - y_i) ** 2)


def _check_history(history, sizes):
    b = history.batch_sizes
    assert np.all(np.diff(b) >= 0), "the batch shrank"
    assert set(b.tolist()) <= set(sizes)
    assert len(set(history.compiled_batch_sizes)) == len(history.compiled_batch_sizes)
    assert set(history.compiled_batch_sizes) == set(b.tolist())
    for t in range(len(b) - 1):
        wanted = min(max(b[t], math.ceil(history.required_batch_sizes[t])), sizes[-1])
        assert b[t + 1] == next(s for s in sizes if s >= wanted), t
        # the batch grows exactly when the test failed
        assert (b[t + 1] > b[t]) == (not history.passed[t] and b[t] < sizes[-1]), t


def test_loop_grows_the_batch_on_least_squares():
    y, loss = _least_squares()
    w, _, history = gdtx.train_with_adaptive_batches(
        loss, jnp.full(3, 10.0), optax.sgd(0.5), y,
        num_steps=15, initial_batch_size=4, max_batch_size=256,
    )  # fmt: skip
    _check_history(history, gdtx.allowed_batch_sizes(4, 256))
    assert history.batch_sizes[0] == 4 and history.batch_sizes[-1] == 256
    assert history.passed[0]  # far from the minimiser the mean dominates the noise
    np.testing.assert_allclose(w, y.mean(0), atol=0.2)


def test_loop_with_the_augmented_test_and_custom_sizes():
    y, loss = _least_squares(seed=1)
    sizes = (4, 12, 48, 200)
    _, _, history = gdtx.train_with_adaptive_batches(
        loss, jnp.full(3, 10.0), optax.sgd(0.5), y, num_steps=12, test="augmented",
        initial_batch_size=4, max_batch_size=200, theta=0.5, nu=1.0, batch_sizes=sizes,
    )  # fmt: skip
    _check_history(history, sizes)
    assert history.batch_sizes[-1] > 4


def test_loop_rejects_bad_arguments():
    y, loss = _least_squares(n=64)
    common = {"num_steps": 1, "initial_batch_size": 4}
    with pytest.raises(ValueError, match=r"`max_batch_size` must be <= the number of examples"):
        gdtx.train_with_adaptive_batches(loss, jnp.zeros(3), optax.sgd(0.1), y,
                                         max_batch_size=128, **common)  # fmt: skip
    with pytest.raises(ValueError, match=r"`test` must be one of"):
        gdtx.train_with_adaptive_batches(loss, jnp.zeros(3), optax.sgd(0.1), y,
                                         max_batch_size=32, test="ip", **common)  # fmt: skip
    with pytest.raises(ValueError, match=r"`batch_sizes` must be sorted"):
        gdtx.train_with_adaptive_batches(loss, jnp.zeros(3), optax.sgd(0.1), y,
                                         max_batch_size=32, batch_sizes=(4, 16),
                                         **common)  # fmt: skip


def test_digits_batch_grows_with_adagrad_norm(tiny_digits):
    # AdAdaGrad-Norm on the digits MLP (fixed seeds): the norm test (eta = 1) lets the
    # first batches stay small while the loss falls fast, then grows the batch as the
    # mean gradient shrinks relative to the per-example noise.
    from tests import tiny_digits as td

    def loss(params, example):
        x, y = example
        return td.per_example_loss(params, x[None], y[None])[0]

    params = td.init_params(jax.random.key(0))
    data = (tiny_digits.x_train, tiny_digits.y_train)
    params, _, history = gdtx.train_with_adaptive_batches(
        loss, params, gdtx.adagrad_norm(1.0), data, num_steps=60, eta=1.0,
        initial_batch_size=8, max_batch_size=256, seed=0,
    )  # fmt: skip
    sizes = gdtx.allowed_batch_sizes(8, 256)
    _check_history(history, sizes)
    b = history.batch_sizes
    assert b[0] == 8 and b[-1] >= 64, b
    assert 3 <= len(set(b.tolist())), b  # it grew in several stages, not in one jump
    assert np.mean(history.losses[-10:]) < 0.5 * np.mean(history.losses[:5])
    assert float(td.accuracy(params, tiny_digits.x_test, tiny_digits.y_test)) > 0.8


@pytest.mark.slow
def test_digits_batch_grows_with_adagrad_and_the_augmented_test(tiny_digits):
    # The authors' augmented-test constants (theta, nu) = (0.5, 1), coordinate-wise
    # AdaGrad (optax.adagrad), 150 steps: the batch grows in stages from 8 to >= 128.
    from tests import tiny_digits as td

    def loss(params, example):
        x, y = example
        return td.per_example_loss(params, x[None], y[None])[0]

    params = td.init_params(jax.random.key(0))
    data = (tiny_digits.x_train, tiny_digits.y_train)
    params, _, history = gdtx.train_with_adaptive_batches(
        loss, params, optax.adagrad(0.05), data, num_steps=150, test="augmented",
        theta=0.5, nu=1.0, initial_batch_size=8, max_batch_size=1024, seed=0,
    )  # fmt: skip
    _check_history(history, gdtx.allowed_batch_sizes(8, 1024))
    b = history.batch_sizes
    assert b[0] == 8 and b[-1] >= 128 and len(set(b.tolist())) >= 4, b
    assert float(td.accuracy(params, tiny_digits.x_test, tiny_digits.y_test)) > 0.85


# --- issue 14: the loop's arguments are checked in its own name; complex gradients -------


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"eta": -1}, ValueError, r"`eta` must be > 0, got -1"),
        ({"eta": "0.1"}, TypeError, r"`eta` must be a real number"),
        ({"theta": 0.0}, ValueError, r"`theta` must be > 0"),
        ({"nu": -1.0}, ValueError, r"`nu` must be > 0"),
        ({"nu": None}, TypeError, r"`nu` must be a real number"),
        ({"num_steps": 2.0}, TypeError, r"`num_steps` must be an integer"),
        ({"initial_batch_size": 1}, ValueError, r"`initial_batch_size` must be an integer >= 2"),
        ({"initial_batch_size": 4.0}, TypeError, r"`initial_batch_size` must be an integer"),
        ({"max_batch_size": 32.0}, TypeError, r"`max_batch_size` must be an integer"),
        ({"seed": 1.5}, TypeError, r"`seed` must be an integer"),
        ({"blockwise": "yes"}, TypeError, r"`blockwise` must be a bool"),
        ({"batch_sizes": (4, 8.0, 32)}, TypeError, r"`batch_sizes` must be an integer"),
    ],
)
def test_loop_arguments_are_checked_in_its_own_name(kwargs, error, pattern):
    # Before, `eta=-1` was caught inside the jitted step and blamed gdtx.norm_test.
    y, loss = _least_squares(n=64)
    arguments = {"num_steps": 1, "initial_batch_size": 4, "max_batch_size": 32, **kwargs}
    with pytest.raises(error, match=r"gdtx\.train_with_adaptive_batches: " + pattern):
        gdtx.train_with_adaptive_batches(loss, jnp.zeros(3), optax.sgd(0.1), y, **arguments)


def test_loop_refuses_a_non_optimizer():
    y, loss = _least_squares(n=64)
    with pytest.raises(TypeError, match=r"gdtx\.train_with_adaptive_batches: `optimizer` must"):
        gdtx.train_with_adaptive_batches(
            loss, jnp.zeros(3), 0.1, y, num_steps=1, initial_batch_size=4, max_batch_size=32
        )


def test_tests_check_their_other_arguments():
    grads = jnp.ones((4, 3))
    with pytest.raises(TypeError, match=r"gdtx\.norm_test: `max_batch_size` must be an integer"):
        gdtx.norm_test(grads, max_batch_size=100.0)
    with pytest.raises(TypeError, match=r"gdtx\.augmented_inner_product_test: `theta` must be a"):
        gdtx.augmented_inner_product_test(grads, theta="0.1")
    with pytest.raises(ValueError, match=r"gdtx\.allowed_batch_sizes: need 2 <="):
        gdtx.allowed_batch_sizes(8, 4)
    with pytest.raises(TypeError, match=r"gdtx\.allowed_batch_sizes: `initial_batch_size` must"):
        gdtx.allowed_batch_sizes(2.5, 8)
    # nu = inf is documented: it disables the orthogonality part.
    assert bool(gdtx.augmented_inner_product_test(grads, nu=np.inf).passed)


@pytest.mark.parametrize("blockwise", [False, True])
def test_complex_gradients_are_their_real_and_imaginary_parts(blockwise):
    # A complex gradient is a vector of R^{2n}: the statistics of z equal those of
    # (Re z, Im z) side by side (with z * z they came out complex and wrong).
    rng = np.random.default_rng(3)
    z = rng.normal(size=(5, 4)) + 1j * rng.normal(size=(5, 4))
    w = rng.normal(size=(5, 2))
    with jax.enable_x64(True):
        ours = gdtx.batch_gradient_statistics(
            {"z": jnp.asarray(z), "w": jnp.asarray(w)}, blockwise=blockwise
        )
        real = gdtx.batch_gradient_statistics(
            {"z": jnp.asarray(np.concatenate([z.real, z.imag], axis=1)), "w": jnp.asarray(w)},
            blockwise=blockwise,
        )
        for a, b in zip(ours, real, strict=True):
            assert not jnp.iscomplexobj(a)
            np.testing.assert_allclose(a, b, rtol=1e-12)


# --- issue 19: the learning rate follows the batch size (Granziol et al.) -----------------


def _linear_loss_replay(history, y, seed, factor):
    # loss(w, y_i) = <w, y_i>: the gradient y_i does not depend on w, so the batches
    # (and the test's decisions) are the same whatever the rate, and SGD(1) moves by
    # -factor(b_t) * mean(y[batch_t]) at step t; replay the loop's sampling.
    rng = np.random.default_rng(seed)
    w = np.zeros(y.shape[1])
    for b in history.batch_sizes:
        idx = rng.choice(len(y), b, replace=False)
        w -= factor(b) * y[idx].mean(0)
    return w


@pytest.mark.parametrize(
    ("rule", "factor"),
    [(None, lambda b: 1.0), ("linear", lambda b: b / 4), ("sqrt", lambda b: (b / 4) ** 0.5)],
)
def test_the_learning_rate_is_rescaled_as_the_batch_grows(rule, factor):
    y = np.random.default_rng(0).normal(0.3, 1.0, size=(512, 3)).astype(np.float32)
    loss = lambda w, y_i: jnp.dot(w, y_i)  # noqa: E731
    w, state, history = gdtx.train_with_adaptive_batches(
        loss, jnp.zeros(3), optax.sgd(1.0), y, num_steps=6, eta=0.3, batch_sizes=(4, 32, 256),
        initial_batch_size=4, max_batch_size=256, seed=3, learning_rate_rule=rule,
    )  # fmt: skip
    sizes = history.batch_sizes
    assert sizes[0] == 4 and len(set(sizes.tolist())) == 3, sizes  # it grew in stages
    _check_history(history, (4, 32, 256))  # compiled once per size
    np.testing.assert_allclose(w, _linear_loss_replay(history, y, 3, factor), rtol=1e-5)
    if rule is None:
        assert not hasattr(state, "hyperparams")  # the optimizer's own state, unchanged
    else:
        assert float(state.hyperparams["batch_size"]) == sizes[-1]
        # ... and the rule matters: the unscaled replay is not what happened.
        unscaled = _linear_loss_replay(history, y, 3, lambda b: 1.0)
        assert not np.allclose(w, unscaled, rtol=1e-3)


def test_the_learning_rate_rule_is_checked_in_the_loops_name():
    y, loss = _least_squares(n=64)
    with pytest.raises(
        ValueError, match=r"gdtx\.train_with_adaptive_batches: `learning_rate_rule` must be one"
    ):
        gdtx.train_with_adaptive_batches(
            loss, jnp.zeros(3), optax.sgd(0.1), y, num_steps=1, initial_batch_size=4,
            max_batch_size=32, learning_rate_rule="quadratic",
        )  # fmt: skip
