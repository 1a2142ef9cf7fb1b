"""Adaptive batch sizes (AdAdaGrad): grow the batch when its gradient is too noisy.

The family's contract. The tests are pure functions of the **per-example
gradients** of the current batch -- a pytree whose leaves carry a leading batch
axis of size ``b >= 2``, as ``jax.vmap(jax.grad(loss), in_axes=(None, 0))``
returns them. With ``g_i`` the flattened gradient of example ``i`` and
``gbar = mean_i g_i``, every statistic is an unbiased ``1 / (b - 1)`` sample
variance (as in the authors' ``torch.var(..., correction=1)``):

.. math::

  S_{norm} = \\frac{1}{b-1} \\sum_i \\|g_i - \\bar g\\|^2, \\quad
  S_{ip} = \\frac{1}{b-1} \\sum_i (\\langle g_i, \\bar g\\rangle - \\|\\bar g\\|^2)^2, \\quad
  S_{orth} = \\frac{1}{b-1} \\sum_i \\Big\\|g_i -
      \\frac{\\langle g_i, \\bar g\\rangle}{\\|\\bar g\\|^2} \\bar g\\Big\\|^2.

- **Norm test** (Byrd et al. 2012): passes when ``S_norm / b <= eta^2 ||gbar||^2``;
  the size it asks for is ``S_norm / (eta^2 ||gbar||^2)``.
- **Augmented inner-product test** (Bollapragada et al. 2018): passes when both
  ``S_ip / b <= theta^2 ||gbar||^4`` and ``S_orth / b <= nu^2 ||gbar||^2``; the size
  it asks for is the larger of ``S_ip / (theta^2 ||gbar||^4)`` and
  ``S_orth / (nu^2 ||gbar||^2)``. ``nu=inf`` leaves the inner-product test alone.

The next batch size is ``min(max(b, ceil(required)), max_batch_size)``: the batch
never shrinks and is capped. A zero mean gradient fails the test and asks for an
infinite batch (so the next one is the cap), never ``0/0``. The defaults
``eta = theta = nu = 0.1`` and ``max_batch_size = 50000`` are those of the
authors' code (``timlautk/AdAdaGrad``, ``main.py``).

The inner-product statistics are computed over the whole pytree by default, as
the math says. The authors' code computes them per parameter tensor and sums
them (dropping the covariances between tensors, and projecting each tensor on
its own block of ``gbar``): ``blockwise=True`` reproduces that. The norm test is
the same either way.

:func:`train_with_adaptive_batches` is a small training loop that applies the
chosen test at every step (at the pre-update iterate, on the batch that makes the
step, as the authors do) and grows the batch from a fixed set of sizes, so that
``jax.jit`` compiles once per size and not once per step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdtx._core import dtypes, validation
from gdtx.schedules import scale_for_batch_size

_DEFAULT_MAX_BATCH_SIZE = 50_000


class BatchGradientStatistics(NamedTuple):
    """The batch statistics of :func:`batch_gradient_statistics`.

    Attributes:
      mean_sq_norm: ``||gbar||^2``, the squared norm of the batch gradient.
      s_norm: ``S_norm``, the trace of the sample covariance of the ``g_i``.
      s_ip: ``S_ip``, the sample variance of ``<g_i, gbar>``.
      s_orth: ``S_orth``, the sample mean square of the parts of ``g_i``
        orthogonal to ``gbar`` (times ``b / (b - 1)``).
    """

    mean_sq_norm: jax.Array
    s_norm: jax.Array
    s_ip: jax.Array
    s_orth: jax.Array


class BatchSizeTest(NamedTuple):
    """The outcome of :func:`norm_test` or :func:`augmented_inner_product_test`.

    Attributes:
      passed: whether the batch was large enough, a boolean scalar.
      required_batch_size: the (real) batch size the test asks for; ``inf`` when
        the batch gradient is zero.
      next_batch_size: ``min(max(b, ceil(required_batch_size)), max_batch_size)``, int32.
      statistics: the :class:`BatchGradientStatistics` it was computed from.
    """

    passed: jax.Array
    required_batch_size: jax.Array
    next_batch_size: jax.Array
    statistics: BatchGradientStatistics


def _batch_size(owner: str, per_example_grads: Any) -> int:
    leaves = jax.tree.leaves(per_example_grads)
    if not leaves:
        raise ValueError(f"{owner}: `per_example_grads` has no leaves.")
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"{owner}: every leaf of `per_example_grads` needs the same leading batch axis, "
            f"got leading sizes {sorted(map(str, sizes))}."
        )
    b = sizes.pop()
    if b < 2:
        raise ValueError(f"{owner}: the unbiased statistics need a batch of >= 2, got {b}.")
    return b


def _flat(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1).astype(dtypes.compute_dtype(x))


def batch_gradient_statistics(
    per_example_grads: Any, *, blockwise: bool = False
) -> BatchGradientStatistics:
    """The sample statistics of a batch's per-example gradients.

    With ``b`` examples, ``gbar = mean_i g_i`` and ``r = 1 / (b - 1)``:
    ``S_norm = r sum_i ||g_i - gbar||^2``,
    ``S_ip = r sum_i (<g_i, gbar> - ||gbar||^2)^2`` and
    ``S_orth = r sum_i ||g_i - (<g_i, gbar> / ||gbar||^2) gbar||^2`` (the projection
    is taken as 0 where ``gbar = 0``). With ``blockwise=True`` the inner products
    and projections are taken leaf by leaf and the leaves' ``S_ip`` and ``S_orth``
    are summed, as in the authors' code.

    Args:
      per_example_grads: a pytree whose leaves have a leading batch axis of size >= 2.
      blockwise: per-leaf inner-product statistics (the authors' code) instead of
        global ones (the math).

    Returns:
      A :class:`BatchGradientStatistics` of real scalars (at least float32). Complex
      gradients are taken as real vectors of their real and imaginary parts
      (squares are ``|.|^2``, ``<a, b> = Re(sum a conj(b))``).

    Examples:
      Two examples with gradients ``(1, 0)`` and ``(3, 0)``: ``gbar = (2, 0)`` and
      the unbiased variance of the first coordinate is 2; both deviations are
      parallel to ``gbar``, so nothing is orthogonal to it:

      >>> import jax.numpy as jnp, gdtx
      >>> stats = gdtx.batch_gradient_statistics(jnp.array([[1.0, 0.0], [3.0, 0.0]]))
      >>> print(stats.mean_sq_norm, stats.s_norm, stats.s_ip, stats.s_orth)
      4.0 2.0 8.0 0.0

    References:
      Lau, Liu and Kolar, `AdAdaGrad: Adaptive Batch Size Schemes for Adaptive
      Gradient Methods <https://arxiv.org/abs/2402.11215>`_, 2024. Official code:
      https://github.com/timlautk/AdAdaGrad (``tests.py``).
    """
    b = _batch_size("gdtx.batch_gradient_statistics", per_example_grads)
    leaves = [_flat(x) for x in jax.tree.leaves(per_example_grads)]
    r = 1.0 / (b - 1)
    means = [jnp.mean(x, axis=0) for x in leaves]
    # Complex gradients are vectors of R^{2n} (real and imaginary parts): squares
    # are |.|^2 and <a, b> = Re(sum a conj(b)); for real gradients this is a @ b.
    block_sq = [jnp.sum(dtypes.abs_sq(m)) for m in means]
    mean_sq = sum(block_sq)
    s_norm = r * sum(
        jnp.sum(dtypes.abs_sq(x - m[None, :])) for x, m in zip(leaves, means, strict=True)
    )

    def inner(x, m):
        return jnp.real(x @ jnp.conj(m)) if jnp.iscomplexobj(x) else x @ m

    def inner_product_parts(xs, ms, sq):
        # <g_i, gbar> per example, and the squared norms of the orthogonal parts.
        ip = sum(inner(x, m) for x, m in zip(xs, ms, strict=True))
        coef = jnp.where(sq > 0, ip / jnp.where(sq > 0, sq, 1), 0)
        orth = sum(
            jnp.sum(dtypes.abs_sq(x - coef[:, None] * m[None, :]), axis=1)
            for x, m in zip(xs, ms, strict=True)
        )
        return r * jnp.sum((ip - sq) ** 2), r * jnp.sum(orth)

    if blockwise:
        parts = [
            inner_product_parts([x], [m], sq)
            for x, m, sq in zip(leaves, means, block_sq, strict=True)
        ]
        s_ip = sum(p[0] for p in parts)
        s_orth = sum(p[1] for p in parts)
    else:
        s_ip, s_orth = inner_product_parts(leaves, means, mean_sq)
    return BatchGradientStatistics(mean_sq_norm=mean_sq, s_norm=s_norm, s_ip=s_ip, s_orth=s_orth)


def _ratio(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """``numerator / denominator`` with ``inf`` where the denominator is 0."""
    safe = jnp.where(denominator > 0, denominator, 1)
    return jnp.where(denominator > 0, numerator / safe, jnp.inf)


def next_batch_size(
    batch_size: int | jax.Array, required: jax.Array, max_batch_size: int | jax.Array
) -> jax.Array:
    """``min(max(batch_size, ceil(required)), max_batch_size)`` as int32.

    Args:
      batch_size: the current batch size.
      required: the size a test asks for (may be ``inf``).
      max_batch_size: the cap.

    Returns:
      The next batch size, an int32 scalar: never smaller than ``batch_size``
      (unless that exceeds the cap), never larger than ``max_batch_size``.

    Examples:
      >>> import jax.numpy as jnp, gdtx
      >>> print(gdtx.next_batch_size(16, 40.2, 1000), gdtx.next_batch_size(16, 3.0, 1000))
      41 16
      >>> print(gdtx.next_batch_size(16, jnp.inf, 1000))
      1000

    References:
      Lau, Liu and Kolar, `AdAdaGrad <https://arxiv.org/abs/2402.11215>`_;
      official code https://github.com/timlautk/AdAdaGrad (``main.py``).
    """
    cap = jnp.asarray(max_batch_size, jnp.float32)
    wanted = jnp.maximum(jnp.asarray(batch_size, jnp.float32), jnp.ceil(required))
    return jnp.minimum(wanted, cap).astype(jnp.int32)


def norm_test(
    per_example_grads: Any,
    eta: jax.typing.ArrayLike = 0.1,
    *,
    max_batch_size: int = _DEFAULT_MAX_BATCH_SIZE,
) -> BatchSizeTest:
    """The norm test: is the batch gradient's variance small next to its norm?

    .. math::

      \\frac{S_{norm}}{b} \\le \\eta^2 \\|\\bar g\\|^2, \\qquad
      b_{next} = \\min\\Big(\\max\\Big(b, \\Big\\lceil
        \\frac{S_{norm}}{\\eta^2 \\|\\bar g\\|^2}\\Big\\rceil\\Big), b_{max}\\Big).

    It is the practical form of ``E||gbar - grad F||^2 <= eta^2 ||grad F||^2``
    (Byrd et al. 2012), with the sample quantities of the batch in place of the
    expectations.

    Args:
      per_example_grads: a pytree whose leaves have a leading batch axis of size >= 2.
      eta: the test's constant, > 0 (the authors' default is 0.1).
      max_batch_size: the cap on the next batch size.

    Returns:
      A :class:`BatchSizeTest`.

    Examples:
      Gradients ``1 +- 0.5``: ``S_norm = 0.5``, ``||gbar||^2 = 1``, so with
      ``eta = 0.1`` the test wants ``0.5 / 0.01 = 50`` examples:

      >>> import jax.numpy as jnp, gdtx
      >>> result = gdtx.norm_test(jnp.array([[0.5], [1.5]]), eta=0.1)
      >>> print(bool(result.passed), round(float(result.required_batch_size), 3))
      False 50.0
      >>> print(result.next_batch_size)
      50

    References:
      Byrd, Chin, Nocedal and Wu, Sample size selection in optimization methods
      for machine learning, Math. Program. 134(1), 2012. Lau, Liu and Kolar,
      `AdAdaGrad <https://arxiv.org/abs/2402.11215>`_, 2024; official code
      https://github.com/timlautk/AdAdaGrad.
    """
    owner = "gdtx.norm_test"
    _check_norm_test_args(owner, eta, max_batch_size)
    return _norm_test(owner, per_example_grads, eta, max_batch_size)


def _check_norm_test_args(owner: str, eta: Any, max_batch_size: Any) -> None:
    validation.check_positive(owner, "eta", eta)
    validation.check_integer(owner, "max_batch_size", max_batch_size, 1)


def _check_augmented_test_args(owner: str, theta: Any, nu: Any, max_batch_size: Any) -> None:
    validation.check_positive(owner, "theta", theta)
    # nu = inf is documented (it disables the orthogonality part): > 0, may be infinite.
    x = validation.real_values(owner, "nu", nu)
    if x is not None and not np.all(x > 0):
        raise ValueError(
            f"{owner}: `nu` must be > 0, got {nu!r} (`nu=inf` disables the orthogonality part)."
        )
    validation.check_integer(owner, "max_batch_size", max_batch_size, 1)


def _norm_test(owner: str, per_example_grads: Any, eta: Any, max_batch_size: Any):
    b = _batch_size(owner, per_example_grads)
    stats = batch_gradient_statistics(per_example_grads)
    eta2 = jnp.asarray(eta, stats.s_norm.dtype) ** 2
    passed = (stats.mean_sq_norm > 0) & (stats.s_norm <= b * eta2 * stats.mean_sq_norm)
    required = _ratio(stats.s_norm, eta2 * stats.mean_sq_norm)
    return BatchSizeTest(passed, required, next_batch_size(b, required, max_batch_size), stats)


def augmented_inner_product_test(
    per_example_grads: Any,
    theta: jax.typing.ArrayLike = 0.1,
    nu: jax.typing.ArrayLike = 0.1,
    *,
    blockwise: bool = False,
    max_batch_size: int = _DEFAULT_MAX_BATCH_SIZE,
) -> BatchSizeTest:
    """The augmented inner-product test: inner-product and orthogonality parts.

    .. math::

      \\frac{S_{ip}}{b} \\le \\theta^2 \\|\\bar g\\|^4 \\ \\text{and}\\
      \\frac{S_{orth}}{b} \\le \\nu^2 \\|\\bar g\\|^2, \\qquad
      b_{next} = \\min\\Big(\\max\\Big(b, \\Big\\lceil \\max\\Big(
        \\frac{S_{ip}}{\\theta^2 \\|\\bar g\\|^4},
        \\frac{S_{orth}}{\\nu^2 \\|\\bar g\\|^2}\\Big)\\Big\\rceil\\Big), b_{max}\\Big).

    The inner-product part asks only that ``gbar`` be a descent direction with
    high probability, so it allows much smaller batches than the norm test; the
    orthogonality part keeps the direction from drifting. ``nu = inf`` gives the
    plain inner-product test.

    Args:
      per_example_grads: a pytree whose leaves have a leading batch axis of size >= 2.
      theta: the inner-product constant, > 0 (the authors' default is 0.1).
      nu: the orthogonality constant, > 0 (default 0.1; ``inf`` disables that part).
      blockwise: per-leaf statistics, as in the authors' code (see the module docs).
      max_batch_size: the cap on the next batch size.

    Returns:
      A :class:`BatchSizeTest`.

    Examples:
      Gradients ``(1, +-0.1)``: they agree along ``gbar = (1, 0)`` (``S_ip = 0``)
      and their orthogonal parts give ``S_orth = 0.02``, asking for
      ``0.02 / 0.01 = 2`` examples -- the batch is big enough:

      >>> import jax.numpy as jnp, gdtx
      >>> grads = jnp.array([[1.0, 0.1], [1.0, -0.1]])
      >>> result = gdtx.augmented_inner_product_test(grads)
      >>> print(bool(result.passed), round(float(result.required_batch_size), 4))
      True 2.0

    References:
      Bollapragada, Byrd and Nocedal, Adaptive sampling strategies for stochastic
      optimization, SIAM J. Optim. 28(4), 2018. Lau, Liu and Kolar, `AdAdaGrad
      <https://arxiv.org/abs/2402.11215>`_, 2024; official code
      https://github.com/timlautk/AdAdaGrad.
    """
    owner = "gdtx.augmented_inner_product_test"
    _check_augmented_test_args(owner, theta, nu, max_batch_size)
    return _augmented_inner_product_test(
        owner, per_example_grads, theta, nu, blockwise, max_batch_size
    )


def _augmented_inner_product_test(
    owner: str, per_example_grads: Any, theta: Any, nu: Any, blockwise: bool, max_batch_size: Any
) -> BatchSizeTest:
    b = _batch_size(owner, per_example_grads)
    stats = batch_gradient_statistics(per_example_grads, blockwise=blockwise)
    dtype = stats.s_ip.dtype
    theta2 = jnp.asarray(theta, dtype) ** 2
    nu2 = jnp.asarray(nu, dtype) ** 2
    sq = stats.mean_sq_norm
    passed = (sq > 0) & (stats.s_ip <= b * theta2 * sq * sq) & (stats.s_orth <= b * nu2 * sq)
    # With nu = inf the orthogonality ratio is S_orth / inf = 0, whatever S_orth.
    orth_ratio = jnp.where(jnp.isinf(nu2), 0.0, _ratio(stats.s_orth, nu2 * sq))
    required = jnp.maximum(_ratio(stats.s_ip, theta2 * sq * sq), orth_ratio)
    required = jnp.where(sq > 0, required, jnp.inf)
    return BatchSizeTest(passed, required, next_batch_size(b, required, max_batch_size), stats)


# --------------------------------------------------------------------------------------
# the training-loop helper


class AdaptiveBatchHistory(NamedTuple):
    """What :func:`train_with_adaptive_batches` did, one entry per step.

    Attributes:
      batch_sizes: the batch size used by each step.
      passed: whether that step's test passed.
      required_batch_sizes: the size each step's test asked for.
      losses: the mean loss of each step's batch (at the pre-update parameters).
      compiled_batch_sizes: the batch sizes the step function was compiled for.
    """

    batch_sizes: np.ndarray
    passed: np.ndarray
    required_batch_sizes: np.ndarray
    losses: np.ndarray
    compiled_batch_sizes: tuple[int, ...]


def _check_sizes(owner: str, initial_batch_size: Any, max_batch_size: Any) -> None:
    validation.check_static_integer(owner, "initial_batch_size", initial_batch_size, 2)
    validation.check_static_integer(owner, "max_batch_size", max_batch_size, 2)
    if not initial_batch_size <= max_batch_size:
        raise ValueError(
            f"{owner}: need 2 <= `initial_batch_size` <= `max_batch_size`, got "
            f"{initial_batch_size!r} and {max_batch_size!r}."
        )


def allowed_batch_sizes(initial_batch_size: int, max_batch_size: int) -> tuple[int, ...]:
    """``initial_batch_size`` times the powers of two below the cap, and the cap.

    Args:
      initial_batch_size: the first size, >= 2.
      max_batch_size: the largest size, >= ``initial_batch_size``.

    Returns:
      The sorted sizes the training loop may use (each is compiled at most once).

    Examples:
      >>> import gdtx
      >>> gdtx.allowed_batch_sizes(8, 100)
      (8, 16, 32, 64, 100)

    References:
      Lau, Liu and Kolar, `AdAdaGrad <https://arxiv.org/abs/2402.11215>`_, 2024.
    """
    owner = "gdtx.allowed_batch_sizes"
    _check_sizes(owner, initial_batch_size, max_batch_size)
    sizes = []
    b = initial_batch_size
    while b < max_batch_size:
        sizes.append(b)
        b *= 2
    return (*sizes, max_batch_size)


def _rescaled(
    optimizer: optax.GradientTransformation, base_batch_size: int, rule: str
) -> optax.GradientTransformation:
    """``optimizer`` with its step scaled by the batch-size rule, the size injected."""

    def rescaled(batch_size):
        factor = scale_for_batch_size(1.0, base_batch_size, batch_size, rule)
        return optax.chain(optimizer, optax.scale(factor))

    return optax.inject_hyperparams(rescaled)(batch_size=float(base_batch_size))


def train_with_adaptive_batches(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    optimizer: optax.GradientTransformation,
    data: Any,
    *,
    num_steps: int,
    initial_batch_size: int,
    max_batch_size: int,
    test: str = "norm",
    eta: float = 0.1,
    theta: float = 0.1,
    nu: float = 0.1,
    blockwise: bool = False,
    batch_sizes: Sequence[int] | None = None,
    seed: int = 0,
    learning_rate_rule: str | None = None,
) -> tuple[Any, optax.OptState, AdaptiveBatchHistory]:
    """Trains with a batch that grows whenever the batch-size test fails.

    Each step draws ``b`` examples without replacement, computes their gradients
    with ``jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))`` at the current
    parameters, applies ``optimizer`` to their mean, and runs the test on the same
    gradients. The next size is the test's :func:`next_batch_size`, rounded up to
    the next of ``batch_sizes`` (default :func:`allowed_batch_sizes`), so the
    jitted step compiles once per size. The batch never shrinks.

    By default the learning rate stays what ``optimizer`` makes it. With
    ``learning_rate_rule`` the step at batch size ``b`` is rescaled by the rule of
    Granziol et al. (:func:`gdtx.scale_for_batch_size` with ``B_0 =
    initial_batch_size``): ``b / B_0`` (``"linear"``, for SGD) or ``sqrt(b / B_0)``
    (``"sqrt"``, for Adam and AdaGrad-type methods such as AdAdaGrad). The loop
    then trains ``optax.inject_hyperparams`` of ``chain(optimizer,
    scale(factor(batch_size)))`` with the batch size as a hyperparameter, set
    (same dtype) whenever the batch grows, so the step still compiles once per
    size and not once per step. Scaling the update is scaling the learning rate
    for every optimizer whose update is proportional to it (the optax and gdtx
    aliases: SGD, Adam, AdaGrad, AdaGrad-Norm, ...); the returned state is the
    ``InjectHyperparamsState`` (``hyperparams["batch_size"]`` is the last size).

    Args:
      loss_fn: ``loss_fn(params, example) -> scalar`` for one example (a slice of
        ``data`` without its leading axis).
      params: the initial parameters.
      optimizer: any optax transformation (e.g. ``optax.adagrad`` or
        :func:`gdtx.adagrad_norm`, as in AdAdaGrad).
      data: a pytree of arrays sharing a leading axis of examples.
      num_steps: the number of optimizer steps.
      initial_batch_size: the first batch size, >= 2.
      max_batch_size: the cap, at most the number of examples.
      test: ``"norm"`` (:func:`norm_test`) or ``"augmented"``
        (:func:`augmented_inner_product_test`).
      eta: the norm test's constant.
      theta: the inner-product constant of the augmented test.
      nu: the orthogonality constant of the augmented test.
      blockwise: per-leaf statistics for the augmented test.
      batch_sizes: the sizes the loop may use (sorted; must contain
        ``initial_batch_size`` and ``max_batch_size``); None for powers of two.
      seed: seeds the sampling of the batches (numpy ``default_rng``).
      learning_rate_rule: None (the default: the rate is left alone), ``"linear"``
        or ``"sqrt"``: rescale the learning rate as the batch grows.

    Returns:
      ``(params, opt_state, history)`` with an :class:`AdaptiveBatchHistory`.

    Examples:
      Least squares from far away: while the distance to the minimiser dominates
      the noise the test passes; as it shrinks (SGD halves it at every step) the
      batch gradient becomes mostly noise and the batch grows, up to the cap.

      >>> import jax, jax.numpy as jnp, numpy as np, optax, gdtx
      >>> y = np.random.default_rng(0).normal(size=(512, 3)).astype(np.float32)
      >>> loss = lambda w, y_i: 0.5 * jnp.sum((w - y_i) ** 2)
      >>> w, _, history = gdtx.train_with_adaptive_batches(
      ...     loss, jnp.full(3, 10.0), optax.sgd(0.5), y, num_steps=12,
      ...     initial_batch_size=4, max_batch_size=256)
      >>> print(history.batch_sizes)
      [  4   4   8  16  64 256 256 256 256 256 256 256]

    References:
      Lau, Liu and Kolar, `AdAdaGrad: Adaptive Batch Size Schemes for Adaptive
      Gradient Methods <https://arxiv.org/abs/2402.11215>`_, 2024. Official code:
      https://github.com/timlautk/AdAdaGrad (``main.py``).
    """
    owner = "gdtx.train_with_adaptive_batches"
    # Every argument is checked here, in the name of the function the user called
    # (not of the test it runs inside the jitted step).
    _check_training_args(owner, loss_fn, optimizer, num_steps, seed, test, learning_rate_rule)
    _check_test_args(owner, initial_batch_size, max_batch_size, eta, theta, nu, blockwise)
    num_examples, sizes = _batch_sizes(owner, data, initial_batch_size, max_batch_size, batch_sizes)
    if learning_rate_rule is not None:
        optimizer = _rescaled(optimizer, initial_batch_size, learning_rate_rule)
    compiled: list[int] = []
    step = _adaptive_batch_step(
        owner, loss_fn, optimizer, test, (eta, theta, nu, blockwise), max_batch_size, compiled
    )
    rng = np.random.default_rng(seed)
    params = _strongly_typed(params)
    opt_state = _strongly_typed(optimizer.init(params))
    b = initial_batch_size
    record = {"b": [], "passed": [], "required": [], "loss": []}
    for _ in range(num_steps):
        if learning_rate_rule is not None:
            # full_like keeps the dtype (and so the compiled step) of the state.
            hyper = opt_state.hyperparams
            hyper["batch_size"] = jnp.full_like(hyper["batch_size"], b)
        idx = rng.choice(num_examples, b, replace=False)
        batch = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)[idx]), data)  # noqa: B023
        params, opt_state, result, loss = step(params, opt_state, batch)
        record["b"].append(b)
        record["passed"].append(bool(result.passed))
        record["required"].append(float(result.required_batch_size))
        record["loss"].append(float(loss))
        wanted = int(result.next_batch_size)
        b = next(s for s in sizes if s >= max(b, wanted))
    history = AdaptiveBatchHistory(
        batch_sizes=np.asarray(record["b"]),
        passed=np.asarray(record["passed"]),
        required_batch_sizes=np.asarray(record["required"]),
        losses=np.asarray(record["loss"]),
        compiled_batch_sizes=tuple(compiled),
    )
    return params, opt_state, history


def _check_training_args(
    owner, loss_fn, optimizer, num_steps, seed, test, learning_rate_rule
) -> None:
    validation.check_choice(owner, "test", test, ("norm", "augmented"))
    if not callable(loss_fn):
        raise TypeError(f"{owner}: `loss_fn` must be callable, got {loss_fn!r}.")
    if not (
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
    ):
        raise TypeError(
            f"{owner}: `optimizer` must be an optax GradientTransformation, got {optimizer!r}."
        )
    validation.check_static_integer(owner, "num_steps", num_steps, 0)
    validation.check_static_integer(owner, "seed", seed, 0)
    if learning_rate_rule is not None:
        validation.check_choice(owner, "learning_rate_rule", learning_rate_rule, ("linear", "sqrt"))


def _check_test_args(owner, initial_batch_size, max_batch_size, eta, theta, nu, blockwise) -> None:
    _check_sizes(owner, initial_batch_size, max_batch_size)
    _check_norm_test_args(owner, eta, max_batch_size)
    _check_augmented_test_args(owner, theta, nu, max_batch_size)
    if not isinstance(blockwise, bool | np.bool_):
        raise TypeError(f"{owner}: `blockwise` must be a bool, got {blockwise!r}.")


def _batch_sizes(
    owner, data, initial_batch_size, max_batch_size, batch_sizes
) -> tuple[int, tuple[int, ...]]:
    """``(number of examples in data, the batch sizes the loop may use)``, both checked."""
    if batch_sizes is not None:
        for size in batch_sizes:
            validation.check_static_integer(owner, "batch_sizes", size, 2)
    num_examples = {np.shape(x)[0] for x in jax.tree.leaves(data)}
    if len(num_examples) != 1:
        raise ValueError(f"{owner}: the leaves of `data` need one leading axis of examples.")
    num_examples = num_examples.pop()
    if max_batch_size > num_examples:
        raise ValueError(
            f"{owner}: `max_batch_size` must be <= the number of examples ({num_examples}), "
            f"got {max_batch_size!r}."
        )
    sizes = tuple(batch_sizes or allowed_batch_sizes(initial_batch_size, max_batch_size))
    if (
        list(sizes) != sorted(set(sizes))
        or initial_batch_size not in sizes
        or sizes[-1] != max_batch_size
    ):
        raise ValueError(
            f"{owner}: `batch_sizes` must be sorted, contain `initial_batch_size` and end "
            f"at `max_batch_size`, got {sizes!r}."
        )
    return num_examples, sizes


def _adaptive_batch_step(owner, loss_fn, optimizer, test, constants, max_batch_size, compiled):
    """The jitted step: per-example gradients, the batch-size test on them, one update.

    ``constants`` is ``(eta, theta, nu, blockwise)``; each trace appends its batch
    size to ``compiled`` (one compilation per size).
    """
    eta, theta, nu, blockwise = constants

    @jax.jit
    def step(params, opt_state, batch):
        compiled.append(jax.tree.leaves(batch)[0].shape[0])  # once per trace
        per_example = jax.vmap(jax.value_and_grad(loss_fn), in_axes=(None, 0))
        losses, grads = per_example(params, batch)
        if test == "norm":
            result = _norm_test(owner, grads, eta, max_batch_size)
        else:
            result = _augmented_inner_product_test(
                owner, grads, theta, nu, blockwise, max_batch_size
            )
        mean_grad = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
        updates, opt_state = optimizer.update(mean_grad, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, result, jnp.mean(losses)

    return step


def _strongly_typed(tree: Any) -> Any:
    # A weakly typed leaf (jnp.full(3, 10.0)) comes back strongly typed from the
    # first step, which would compile the first batch size twice.
    return jax.tree.map(lambda x: jnp.array(x, dtype=jnp.asarray(x).dtype), tree)
