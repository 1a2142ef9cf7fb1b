"""Variance adaptation: M-SVAG, SVAG and M-SSD (Balles & Hennig, "Dissecting Adam").

The family's contract. Adam's direction ``m / sqrt(v)`` is, per coordinate, the
sign of the mean gradient times a factor that shrinks with the gradient's
*relative variance*. Balles & Hennig take the two apart:

- **M-SSD** keeps only the sign, of an exponential moving average ``m`` of the
  gradient: ``u = sign(m)``;
- **(M-)SVAG** keeps the magnitude of SGD and multiplies each coordinate by a
  variance-adaptation factor in ``[0, 1]``,

  .. math::

    \\gamma = \\frac{\\mu^2}{\\mu^2 + \\sigma^2},

  the factor that minimises the expected squared distance of ``\\gamma g`` from
  the true gradient ``\\mu`` when ``g`` has variance ``\\sigma^2``.

M-SVAG estimates ``\\mu`` and ``\\sigma^2`` from moving averages of ``g`` and
``g^2``; SVAG takes the variance of the mini-batch gradient from the caller
(usually from per-example gradients, see :func:`batch_mean_and_variance`).

Conventions, checked in ``tests/reference`` against float64 trajectories of
``pytorch-optimizer`` 4.1.0 (``MSVAG``, whose bias correction was fixed in that
release) and against the authors' TensorFlow code (``lballes/msvag``):

- one ``beta`` for both moments, both bias-corrected by ``1 - beta^t``;
- ``rho_t = (1 - beta)(1 + beta^t) / ((1 + beta)(1 - beta^t))``, the variance of
  the bias-corrected average of ``t`` i.i.d. gradients relative to that of one,
  clipped to at most ``0.9999`` as ``pytorch-optimizer`` does (the authors clip to
  ``0.999``; it only matters at ``t = 1``, see :func:`scale_by_msvag`);
- ``gamma`` is clipped to ``[0, 1]`` and a ``0/0`` (a coordinate whose gradient
  has always been exactly zero) gives ``gamma = 0``;
- the state names the moments ``mu`` and ``nu`` as optax does.

Complex parameters: (M-)SVAG extends exactly. With ``|.|^2`` the squared
modulus, ``nu`` averages ``|g|^2``, the variance is ``sigma^2 = E|g - mu|^2`` and
``gamma = |mu|^2 / (|mu|^2 + sigma^2)`` is again the real factor minimising
``E|gamma g - mu|^2``; it multiplies the complex ``m_hat`` (or ``g``), keeping its
phase. ``nu`` is stored in the parameter's dtype by default (complex with a zero
imaginary part, as optax stores second moments), or in a real ``nu_dtype``.
M-SSD takes a sign, which has no complex counterpart in the paper: it refuses
complex parameters at ``init`` with a ``TypeError``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax.experimental import aggregating

from gdtx._core import dtypes, extra_args, moments, validation
from gdtx._core.trees import unzip
from gdtx._core.weight_decay import chain_with_weight_decay
from gdtx.sign import ScaleBySignumState, scale_by_signum

# The authors clip rho to 0.999, pytorch-optimizer 4.1 to 0.9999. Only t = 1 is
# affected (rho_1 = 1, rho_2 = 1/2 for beta = 0.9 and smaller for larger t).
_RHO_MAX = 0.9999


def _variance_factor(mean_sq: jax.Array, variance: jax.Array) -> jax.Array:
    """``clip(m^2 / (m^2 + var), 0, 1)`` with ``0/0 -> 0``."""
    gamma = jnp.clip(mean_sq / (mean_sq + variance), 0.0, 1.0)
    # NaN only arises from 0/0 (m = var = 0): no signal, no step.
    return jnp.where(jnp.isnan(gamma), jnp.zeros_like(gamma), gamma)


def _msvag_scalars(beta, count, rdt):
    """``(beta, bc, rho)`` of a step in ``rdt``: the decay, ``1 - beta^t`` and ``rho_t``."""
    beta = jnp.asarray(beta, rdt)
    t = jnp.asarray(count, rdt)
    beta_t = beta**t
    bc = 1 - beta_t
    rho = jnp.minimum((1 - beta) * (1 + beta_t) / ((1 + beta) * bc), _RHO_MAX)
    return beta, bc, rho


def _msvag_leaf(m, v, count, scalars, cdt, rdt):
    """Returns ``(m_hat, gamma)`` of one leaf from the stored moments ``m``, ``v``."""
    _, bc, rho = scalars
    m_hat = m.astype(cdt) / bc
    v_hat = dtypes.as_real(v, rdt) / bc
    mean_sq = dtypes.abs_sq(m_hat)
    s = (v_hat - mean_sq) / (1 - rho)
    # At t = 1, v_hat - m_hat^2 is exactly 0 in exact arithmetic (one sample has no
    # spread); its rounding error would be amplified by 1 / (1 - rho) = 1e4 and
    # bend the first float32 step by up to ~1e-3. Take the exact value instead.
    s = jnp.where(count <= 1, jnp.zeros_like(s), s)
    return m_hat, _variance_factor(mean_sq, rho * s)


class ScaleByMsvagState(NamedTuple):
    """State of :func:`scale_by_msvag`.

    Attributes:
      count: number of updates so far, shape ``()``, int32 (saturating).
      mu: moving average of the gradient (not bias-corrected), in ``mu_dtype``.
      nu: moving average of the squared gradient (not bias-corrected), in ``nu_dtype``.
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def scale_by_msvag(
    beta: jax.typing.ArrayLike = 0.9,
    *,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Momentum with per-coordinate variance adaptation (M-SVAG's direction).

    With ``m_t = beta m_{t-1} + (1 - beta) g_t`` and ``v_t = beta v_{t-1} + (1 - beta) g_t^2``
    (one ``beta`` for both), ``bc = 1 - beta^t`` and

    .. math::

      \\hat m = m_t / bc, \\quad \\hat v = v_t / bc, \\quad
      \\rho_t = \\min\\Big(\\frac{(1 - \\beta)(1 + \\beta^t)}{(1 + \\beta)(1 - \\beta^t)},
      0.9999\\Big), \\quad
      s_t = \\frac{\\hat v - \\hat m^2}{1 - \\rho_t}, \\\\
      \\gamma_t = \\mathrm{clip}\\Big(\\frac{\\hat m^2}{\\hat m^2 + \\rho_t s_t}, 0, 1\\Big),
      \\qquad u_t = \\gamma_t \\hat m,

    with ``0/0 -> gamma = 0``. ``s_t`` is an unbiased estimate of the gradient's
    variance ``sigma^2``, and ``rho_t s_t`` one of the variance of ``m_hat`` itself:
    the factor adapts to the noise of the averaged direction it multiplies, so for
    a stationary gradient with mean ``mu`` it targets
    ``mu^2 / (mu^2 + rho_inf sigma^2)``, ``rho_inf = (1 - beta) / (1 + beta)``. Log it
    with :func:`msvag_gamma`.

    .. warning::
      At ``t = 1`` gdtx sets ``s_1 = 0``, its exact value (one gradient has no
      spread), where the references compute ``(v_hat - m_hat^2) / (1 - 0.9999)``
      from rounded moments: that differs from 0 by rounding only (about 1e-12 of
      the step in float64, up to 1e-3 in float32).

    Args:
      beta: decay rate of both moving averages, in [0, 1).
      mu_dtype: dtype of ``mu``; None keeps each parameter's dtype.
      nu_dtype: dtype of ``nu``; None keeps each parameter's dtype.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`ScaleByMsvagState`.

    Examples:
      A constant gradient has no variance, so ``gamma = 1`` and the direction is
      the gradient itself, whatever its scale:

      >>> import jax.numpy as jnp, gdtx
      >>> tx = gdtx.scale_by_msvag()
      >>> grads = jnp.array([1e-3, -2.0, 50.0])
      >>> state = tx.init(grads)
      >>> for _ in range(3):
      ...     updates, state = tx.update(grads, state)
      >>> print((updates / grads).round(6), gdtx.msvag_gamma(state).round(6))
      [1. 1. 1.] [1. 1. 1.]

    References:
      Balles & Hennig, `Dissecting Adam: The Sign, Magnitude and Variance of
      Stochastic Gradients <https://arxiv.org/abs/1705.07774>`_, ICML 2018
      (Algorithm 2). Official code: https://github.com/lballes/msvag
      (``MSVAGOptimizer``); also ``pytorch-optimizer`` >= 4.1.0 (``MSVAG``).
    """
    return _scale_by_msvag("gdtx.scale_by_msvag", beta, mu_dtype=mu_dtype, nu_dtype=nu_dtype)


def _scale_by_msvag(
    owner: str, beta: Any, *, mu_dtype: Any, nu_dtype: Any
) -> optax.GradientTransformationExtraArgs:
    """:func:`scale_by_msvag` with ``owner`` (the public function called) in its messages."""
    _validate_msvag(owner, beta, mu_dtype, nu_dtype)
    mu_dtype = dtypes.canonical_dtype(mu_dtype)
    nu_dtype = dtypes.canonical_dtype(nu_dtype)

    def init_fn(params):
        validation.check_params(owner, params, allow_complex=True)
        dtypes.check_phase_dtype(owner, "mu_dtype", params, mu_dtype)
        return ScaleByMsvagState(
            count=jnp.zeros([], jnp.int32),
            mu=dtypes.zeros_like_params(params, mu_dtype),
            nu=dtypes.zeros_like_params(params, nu_dtype),
        )

    def leaf_update(g, m_prev, v_prev, count, scalars):
        g = jnp.asarray(g)  # a Python-number leaf has no dtype
        cdt, rdt = moments.moment_dtypes(g, m_prev, v_prev)
        step_scalars = scalars(rdt)
        beta_ = step_scalars[0]
        g_c = g.astype(cdt)
        m = moments.ema(beta_, m_prev, g_c, cdt)
        v = moments.ema_abs_sq(beta_, v_prev, g_c, rdt)
        m_hat, gamma = _msvag_leaf(m, v, count, step_scalars, cdt, rdt)
        return (gamma * m_hat).astype(g.dtype), m.astype(m_prev.dtype), v.astype(v_prev.dtype)

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        validation.check_state_type(owner, state, ScaleByMsvagState)
        validation.check_like_state(owner, updates, state.mu)
        count = optax.safe_increment(state.count)
        scalars = moments.per_compute_dtype(lambda rdt: _msvag_scalars(beta, count, rdt))
        out = jax.tree.map(
            lambda g, m, v: leaf_update(g, m, v, count, scalars), updates, state.mu, state.nu
        )
        new_updates, mu, nu = unzip(out, updates, 3)
        return new_updates, ScaleByMsvagState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def msvag_gamma(state: Any, beta: jax.typing.ArrayLike = 0.9) -> optax.Updates:
    """The variance-adaptation factor ``gamma_t`` of the last M-SVAG step, for logging.

    Recomputed from the moments and the count in the state with the same code as
    the update, so it is exactly the factor that scaled ``m_hat``.

    Args:
      state: a :class:`ScaleByMsvagState`, or any optimizer state containing one
        (e.g. the state of :func:`msvag`, found with ``optax.tree.get``).
      beta: the ``beta`` the transformation was built with.

    Returns:
      A tree like the parameters with ``gamma_t`` in ``[0, 1]`` (float32 or wider);
      all zeros before the first step.

    Examples:
      >>> import jax, jax.numpy as jnp, gdtx
      >>> tx = gdtx.msvag(learning_rate=0.1)
      >>> noise = jax.random.normal(jax.random.key(0), (100, 2))
      >>> params = jnp.zeros(2)
      >>> state, update = tx.init(params), jax.jit(tx.update)
      >>> for n in noise:  # coordinate 0: signal 1, noise 1; coordinate 1: pure noise
      ...     _, state = update(jnp.array([1.0, 0.0]) + n, state, params)
      >>> print(gdtx.msvag_gamma(state) > 0.5)
      [ True False]

    References:
      Balles & Hennig, `Dissecting Adam <https://arxiv.org/abs/1705.07774>`_, ICML 2018.
    """
    inner = state if isinstance(state, ScaleByMsvagState) else None
    if inner is None:
        inner = optax.tree.get(state, "ScaleByMsvagState", None)
    if inner is None:
        raise ValueError("gdtx.msvag_gamma: the state contains no ScaleByMsvagState.")
    validation.check_decay("gdtx.msvag_gamma", "beta", beta)

    def leaf(m, v):
        cdt, rdt = moments.moment_dtypes(m, m, v)
        scalars = _msvag_scalars(beta, inner.count, rdt)
        return _msvag_leaf(m, v, inner.count, scalars, cdt, rdt)[1]

    return jax.tree.map(leaf, inner.mu, inner.nu)


def _validate_msvag(owner: str, beta: Any, mu_dtype: Any, nu_dtype: Any) -> None:
    validation.check_decay(owner, "beta", beta)
    validation.check_dtype(owner, "mu_dtype", mu_dtype)
    validation.check_dtype(owner, "nu_dtype", nu_dtype)


def msvag(
    learning_rate: optax.ScalarOrSchedule,
    beta: jax.typing.ArrayLike = 0.9,
    *,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    weight_decay_mode: str = "decoupled",
    mask: Any | None = None,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    """The M-SVAG optimizer: momentum SGD with variance adaptation.

    ``scale_by_msvag(beta)`` + weight decay + ``scale_by_learning_rate(lr)``: the step
    is ``p <- p - lr gamma_t m_hat_t`` (see :func:`scale_by_msvag`). Neither reference
    has weight decay; ``weight_decay_mode`` places it as in every gdtx alias
    (``"decoupled"``: ``p <- p (1 - lr wd) - lr u``; ``"fixed"``; ``"l2"``, which adds
    ``wd p`` to the gradient before the moments).

    Args:
      learning_rate: a float or an optax schedule.
      beta: decay rate of both moving averages, in [0, 1).
      weight_decay: decay strength (a float or a schedule), >= 0.
      weight_decay_mode: ``"decoupled"``, ``"fixed"`` or ``"l2"``.
      mask: which parameters decay: a tree of booleans like the params, or a
        callable returning one (as in ``optax.add_decayed_weights``).
      mu_dtype: dtype of the gradient average; None keeps the parameters' dtype.
      nu_dtype: dtype of the squared-gradient average; None keeps the parameters' dtype.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Examples:
      The variance adaptation factor ``m^2 / (m^2 + rho s)`` is 1 on a noise-free
      gradient, so the step is momentum SGD's, ``lr`` times the gradient; it falls
      as the gradient's variance grows against its mean, to almost nothing on pure
      noise:

      >>> import jax.numpy as jnp, gdtx
      >>> def last_update(tx, grads):
      ...     params = jnp.zeros(1)
      ...     state = tx.init(params)
      ...     for g in grads:
      ...         updates, state = tx.update(jnp.array([g]), state, params)
      ...     return float(updates[0])
      >>> solver = gdtx.msvag(learning_rate=0.1)
      >>> for name, grads in [("steady", [1.0] * 20), ("noisy", [3.0, -1.0] * 10),
      ...                     ("noise", [1.0, -1.0] * 10)]:
      ...     print(f"{name:6s} {last_update(solver, grads):+.4f}")
      steady -0.1000
      noisy  -0.0658
      noise  +0.0002

    References:
      Balles & Hennig, `Dissecting Adam: The Sign, Magnitude and Variance of
      Stochastic Gradients <https://arxiv.org/abs/1705.07774>`_, ICML 2018.
      Official code: https://github.com/lballes/msvag; ``pytorch-optimizer`` >= 4.1.0.
    """
    owner = "gdtx.msvag"
    _validate_msvag(owner, beta, mu_dtype, nu_dtype)
    tx = chain_with_weight_decay(
        _scale_by_msvag(owner, beta, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        weight_decay_mode=weight_decay_mode,
        mask=mask,
        owner=owner,
    )
    return dtypes.checking_phase_dtypes(tx, owner, mu_dtype=mu_dtype)


def _checked_signum(
    owner: str, signum: optax.GradientTransformation
) -> optax.GradientTransformationExtraArgs:
    """``signum`` whose ``update`` checks its state in the name of ``owner`` first.

    gdtx.sign's own checks name ``gdtx.scale_by_signum``; the user called ``owner``.
    """

    def update_fn(updates, state, params=None, **extra):
        validation.check_state_type(owner, state, ScaleBySignumState)
        validation.check_like_state(owner, updates, state.mu)
        return signum.update(updates, state, params, **extra)

    return optax.GradientTransformationExtraArgs(signum.init, update_fn)


def m_ssd(
    learning_rate: optax.ScalarOrSchedule,
    beta: jax.typing.ArrayLike = 0.9,
    *,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    weight_decay_mode: str = "decoupled",
    mask: Any | None = None,
    mu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    """M-SSD: stochastic sign descent with momentum, the sign half of Adam.

    .. math::

      \\tilde m_t = \\beta \\tilde m_{t-1} + (1 - \\beta) g_t, \\quad \\tilde m_0 = 0,
      \\qquad p_t = p_{t-1} - \\eta_t \\operatorname{sign}(\\tilde m_t).

    This is exactly Signum with an exponential-moving-average momentum, so it *is*
    :func:`gdtx.scale_by_signum` (``gdtx.sign``) + weight decay + learning rate, and
    with ``weight_decay_mode`` ``"decoupled"`` or ``"l2"`` it is step for step
    :func:`gdtx.signum`. The paper's Algorithm 1 does not bias-correct ``m``, and
    ``sign(m / (1 - beta^t)) = sign(m)`` would make it irrelevant anyway. It is the
    counterpart of :func:`msvag`: same momentum, sign instead of variance adaptation.
    Neither paper algorithm has weight decay; it is placed as in every gdtx alias
    (``"fixed"`` is accepted too).

    Args:
      learning_rate: a float or an optax schedule.
      beta: decay rate of the momentum, in [0, 1).
      weight_decay: decay strength (a float or a schedule), >= 0.
      weight_decay_mode: ``"decoupled"``, ``"fixed"`` or ``"l2"``.
      mask: which parameters decay: a tree of booleans like the params, or a
        callable returning one (as in ``optax.add_decayed_weights``).
      mu_dtype: dtype of the momentum; None keeps the parameters' dtype.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` (its direction's state is a
      ``gdtx.sign.ScaleBySignumState``).

    Raises:
      TypeError: at ``init``, for integer or complex parameters.

    Examples:
      Every coordinate moves by exactly the learning rate, whatever the
      gradient's scale:

      >>> import jax.numpy as jnp, optax, gdtx
      >>> solver = gdtx.m_ssd(learning_rate=0.1)
      >>> params = jnp.array([1.0, -2.0, 3.0])
      >>> grads = jnp.array([1e-4, -5.0, 300.0])
      >>> updates, _ = solver.update(grads, solver.init(params), params)
      >>> print(updates)
      [-0.1  0.1 -0.1]

    References:
      Balles & Hennig, `Dissecting Adam: The Sign, Magnitude and Variance of
      Stochastic Gradients <https://arxiv.org/abs/1705.07774>`_, ICML 2018
      (Algorithm 1). The authors released no M-SSD code (``lballes/msvag`` has
      M-SVAG and SVAG only).
    """
    owner = "gdtx.m_ssd"
    validation.check_decay(owner, "beta", beta)
    validation.check_dtype(owner, "mu_dtype", mu_dtype)
    return chain_with_weight_decay(
        _checked_signum(owner, scale_by_signum(beta, mu_dtype=mu_dtype)),
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        weight_decay_mode=weight_decay_mode,
        mask=mask,
        owner=owner,
        allow_complex=False,  # a sign has no complex counterpart in the paper
    )


# --- SVAG with the mini-batch variance ------------------------------------------------


class ScaleBySvagState(NamedTuple):
    """State of :func:`scale_by_svag`.

    Attributes:
      count: number of updates so far, shape ``()``, int32 (saturating).
    """

    count: jax.Array


def _is_masked(x: Any) -> bool:
    return isinstance(x, optax.MaskedNode)


def _drop_masked(owner: str, grad_variance: Any, updates: Any) -> Any:
    """``grad_variance`` shaped like ``updates``, or a ``ValueError`` naming the mismatch.

    ``optax.masked`` passes extra arguments through unmasked (unless
    ``mask_compatible_extra_args=True``): where ``updates`` holds a
    ``MaskedNode`` and ``grad_variance`` a value, the value is dropped.
    """
    if jax.tree.structure(grad_variance) != jax.tree.structure(updates):
        masked_nodes = jax.tree.leaves(updates, is_leaf=_is_masked)
        if any(_is_masked(x) for x in masked_nodes):
            try:
                grad_variance = jax.tree.map(
                    lambda u, v: u if _is_masked(u) else v,
                    updates,
                    grad_variance,
                    is_leaf=_is_masked,
                )
            except ValueError:
                pass  # not the full tree either: reported below
    try:
        validation.check_like_state(owner, grad_variance, updates, what="grad_variance")
    except ValueError as error:
        raise ValueError(
            f"{error}\n  `grad_variance` must be shaped like the gradients given to "
            f"update (with optax.masked: like the full gradient tree, or masked too with "
            f"`optax.masked(..., mask_compatible_extra_args=True)`)."
        ) from None
    return grad_variance


def scale_by_svag() -> optax.GradientTransformationExtraArgs:
    """Variance-adapted gradient from the mini-batch variance (SVAG).

    With ``g`` the mini-batch gradient and ``grad_variance`` the variance *of that
    mean* (the per-example unbiased variance divided by the batch size ``B``; see
    :func:`batch_mean_and_variance`), the direction is

    .. math::

      \\gamma = \\mathrm{clip}\\Big(\\frac{g^2}{g^2 + \\mathrm{grad\\_variance}}, 0, 1\\Big),
      \\qquad u = \\gamma g,

    with ``0/0 -> gamma = 0``. This is the paper's SVAG with the per-example
    variance estimate it uses where one is available; the factor can be logged
    as ``g**2 / (g**2 + grad_variance)`` from the same two inputs. The extra argument
    ``grad_variance`` is required: ``update(grads, state, params, grad_variance=...)``.

    For complex parameters ``g^2`` is ``|g|^2`` and ``grad_variance`` is the real
    ``E|g - mu|^2 / B`` (what :func:`batch_mean_and_variance` returns for complex
    per-example gradients).

    Inside ``optax.masked``, ``grad_variance`` may be given for the whole
    parameter tree: the entries of masked-out parameters are dropped (or pass
    ``mask_compatible_extra_args=True`` to ``optax.masked``, which masks it too).
    When ``params`` is given, the gradients must match it leaf for leaf.

    .. warning::
      The authors' ``SVAGOptimizer`` is a different estimator: it takes the
      variance from moving averages of ``g`` and ``g^2`` (as M-SVAG does) and
      multiplies the current ``g``. gdtx implements the mini-batch form only.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`ScaleBySvagState`
      that declares the required extra argument ``grad_variance`` (a tree like the
      gradients).

    Examples:
      With the exact variance ``sigma^2 / B`` of the batch mean, the factor is
      exactly ``mu^2 / (mu^2 + sigma^2 / B)``:

      >>> import jax.numpy as jnp, gdtx
      >>> tx = gdtx.scale_by_svag()
      >>> mu, sigma2, B = jnp.array([2.0, 1.0, 0.0]), 4.0, 4
      >>> updates, _ = tx.update(mu, tx.init(mu), grad_variance=jnp.full(3, sigma2 / B))
      >>> print(updates / jnp.where(mu == 0, 1, mu))  # gamma: 4/5, 1/2, and 0 for no signal
      [0.8 0.5 0. ]

    References:
      Balles & Hennig, `Dissecting Adam: The Sign, Magnitude and Variance of
      Stochastic Gradients <https://arxiv.org/abs/1705.07774>`_, ICML 2018
      (Section 4, variance adaptation with mini-batch variance estimates).
      Official code (moving-average SVAG): https://github.com/lballes/msvag
    """
    return _scale_by_svag("gdtx.scale_by_svag")


def _scale_by_svag(owner: str) -> optax.GradientTransformationExtraArgs:
    """:func:`scale_by_svag` with ``owner`` (the public function called) in its messages."""

    def init_fn(params):
        validation.check_params(owner, params, allow_complex=True)
        return ScaleBySvagState(count=jnp.zeros([], jnp.int32))

    def leaf_update(g, var):
        g, var = jnp.asarray(g), jnp.asarray(var)  # Python-number leaves have no dtype
        cdt, rdt = moments.moment_dtypes(g, g, var)
        g_c = g.astype(cdt)
        gamma = _variance_factor(dtypes.abs_sq(g_c), dtypes.as_real(var, rdt))
        return (gamma * g_c).astype(g.dtype)

    def update_fn(updates, state, params=None, **extra):
        validation.check_state_type(owner, state, ScaleBySvagState)
        validation.check_like_params(owner, updates, params)
        (grad_variance,) = extra_args.get_required(owner, extra, ["grad_variance"])
        grad_variance = _drop_masked(owner, grad_variance, updates)
        new_updates = jax.tree.map(leaf_update, updates, grad_variance)
        return new_updates, ScaleBySvagState(count=optax.safe_increment(state.count))

    return extra_args.declare(
        optax.GradientTransformationExtraArgs(init_fn, update_fn), ["grad_variance"]
    )


def svag(
    learning_rate: optax.ScalarOrSchedule,
    *,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    weight_decay_mode: str = "decoupled",
    mask: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    """The SVAG optimizer with the mini-batch variance: ``p <- p - lr gamma g``.

    ``scale_by_svag()`` + weight decay + ``scale_by_learning_rate(lr)``; it requires
    the extra argument ``grad_variance`` (see :func:`scale_by_svag`), which
    :func:`gdtx.required_extra_args` reports.

    Args:
      learning_rate: a float or an optax schedule.
      weight_decay: decay strength (a float or a schedule), >= 0.
      weight_decay_mode: ``"decoupled"``, ``"fixed"`` or ``"l2"``.
      mask: which parameters decay, as in ``optax.add_decayed_weights``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Examples:
      Least squares from per-example gradients: the batch mean and the variance of
      that mean come from one ``vmap`` of ``grad``:

      >>> import jax, jax.numpy as jnp, optax, gdtx
      >>> x = jax.random.normal(jax.random.key(0), (64, 3))
      >>> y = x @ jnp.array([1.0, -2.0, 0.5]) + 0.1 * jax.random.normal(jax.random.key(1), (64,))
      >>> def loss(w, xi, yi): return 0.5 * (xi @ w - yi) ** 2
      >>> per_example_grad = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))
      >>> solver = gdtx.svag(learning_rate=0.5)
      >>> @jax.jit
      ... def step(w, state):
      ...     grads, grad_variance = gdtx.batch_mean_and_variance(per_example_grad(w, x, y))
      ...     updates, state = solver.update(grads, state, w, grad_variance=grad_variance)
      ...     return optax.apply_updates(w, updates), state
      >>> w = jnp.zeros(3)
      >>> state = solver.init(w)
      >>> for _ in range(200):
      ...     w, state = step(w, state)
      >>> print(w.round(1))
      [ 1.  -2.   0.5]

    References:
      Balles & Hennig, `Dissecting Adam <https://arxiv.org/abs/1705.07774>`_, ICML 2018.
    """
    return chain_with_weight_decay(
        _scale_by_svag("gdtx.svag"),
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        weight_decay_mode=weight_decay_mode,
        mask=mask,
        owner="gdtx.svag",
    )


def batch_mean_and_variance(
    per_example_grads: optax.Updates, axis: int = 0
) -> tuple[optax.Updates, optax.Updates]:
    """The mini-batch gradient and the variance of that mean, from per-example gradients.

    With ``B`` per-example gradients ``g_b`` (stacked along ``axis``, e.g. from
    ``jax.vmap(jax.grad(loss), in_axes=(None, 0))``), returns

    .. math::

      \\bar g = \\frac1B \\sum_b g_b, \\qquad
      \\widehat{\\mathrm{Var}}[\\bar g] = \\frac{1}{B (B - 1)} \\sum_b (g_b - \\bar g)^2,

    the unbiased per-example variance divided by ``B``: the ``grad_variance`` that
    :func:`scale_by_svag` expects. For complex gradients the square is ``|.|^2`` and
    the variance is real (in the gradients' real dtype). The sum of squared deviations is optax's
    ``optax.experimental.aggregating.get_per_element_mean_and_sum_sq_diff_grads``
    (two-pass, so no cancellation).

    Args:
      per_example_grads: a tree of arrays with the batch along ``axis``.
      axis: the batch axis (static), the same for every leaf.

    Returns:
      ``(mean, variance_of_mean)``, two trees shaped like one gradient.

    Raises:
      ValueError: if the batch has fewer than two examples (no variance estimate).

    Examples:
      >>> import jax.numpy as jnp, gdtx
      >>> per_example = {"w": jnp.array([[1.0, 0.0], [3.0, 0.0], [2.0, 0.0], [6.0, 0.0]])}
      >>> mean, var = gdtx.batch_mean_and_variance(per_example)
      >>> print(mean["w"], var["w"])  # sample variance 14/3, divided by B = 4
      [3. 0.] [1.1666666 0.       ]

    References:
      Balles & Hennig, `Dissecting Adam <https://arxiv.org/abs/1705.07774>`_, ICML 2018
      (Section 4); optax ``experimental.aggregating``.
    """
    aggregator = aggregating.get_per_element_mean_and_sum_sq_diff_grads(per_elt_axis=axis)
    batch_size = aggregating.get_batch_size_from_per_elt_updates(per_example_grads, axis)
    if batch_size < 2:
        raise ValueError(
            "gdtx.batch_mean_and_variance: the batch must have at least 2 examples along "
            f"axis {axis}, got {batch_size}."
        )
    (mean, aux), _ = aggregator.update(per_example_grads, optax.EmptyState(), None)
    scale = 1.0 / (batch_size * (batch_size - 1))

    def sum_sq_diff(x, m, optax_sum):
        if not jnp.iscomplexobj(x):
            return optax_sum
        # optax squares (x - mean) ** 2, which for complex x is not |x - mean|^2.
        return jnp.sum(dtypes.abs_sq(x - jnp.expand_dims(m, axis)), axis=axis)

    sums = jax.tree.map(sum_sq_diff, per_example_grads, mean, aux["sum_sq_diff_grads"])
    variance = jax.tree.map(lambda s: (s * scale).astype(s.dtype), sums)
    return mean, variance
