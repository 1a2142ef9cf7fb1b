"""Belief scaling: AdaBelief and its variants.

The family's contract. With ``g`` the gradient, ``m`` and ``s`` are
exponential moving averages of the gradient and of its squared deviation from
that average -- the "belief" in the current gradient:

.. math::

  m_t = \\beta_1 m_{t-1} + (1 - \\beta_1) g_t, \\qquad
  s_t = \\beta_2 s_{t-1} + (1 - \\beta_2) (g_t - m_t)^2 + \\epsilon_{root},

and the step divides the bias-corrected ``m`` by the square root of the
bias-corrected ``s``. The conventions are those of the official
``adabelief-pytorch`` 0.2.1, checked against recorded trajectories in
``tests/reference``:

- the deviation uses the *new* mean ``m_t``;
- ``eps_root`` is added to the *stored* ``s`` every step, so it accumulates,
  and ``eps`` is added again outside the root (the official code uses one
  ``eps`` for both: keep ``eps == eps_root`` to reproduce it);
- the state names its moments ``mu`` and ``nu`` as optax does, so that
  ``optax.tree.get(state, "nu")`` works across gdtx and optax.

Complex parameters are supported in optax's sense (``optax.adabelief`` does the
same): the squared deviation is ``|g_t - m_t|^2 = Re((g_t - m_t) conj(g_t - m_t))``,
so ``s`` is real, ``m`` keeps the gradient's phase, and the step is ``m`` divided
by a real scale. By default ``nu`` is stored in the parameter's (complex) dtype
with a zero imaginary part, as optax stores it; ``nu_dtype=jnp.float32`` stores it
real and halves its memory. ``mu_dtype`` must then be complex (or None).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gdtx._core import dtypes, hyperparams, moments, rectification, validation
from gdtx._core.trees import unzip
from gdtx._core.weight_decay import chain_with_weight_decay

_RECTIFICATION_THRESHOLD = 5.0


class ScaleByBeliefState(NamedTuple):
    """State of :func:`scale_by_belief`.

    Attributes:
      count: number of updates so far, shape ``()``, int32 (saturating).
      mu: first moment ``m``, like the params, in ``mu_dtype``.
      nu: belief ``s`` (EMA of ``(g - m)^2``, ``eps_root`` included), in ``nu_dtype``.
      nu_max: running maximum of ``nu`` when ``amsgrad=True``, else ``None``.
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    nu_max: optax.Updates | None


def scale_by_belief(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-16,
    eps_root: jax.typing.ArrayLike = 1e-16,
    *,
    amsgrad: bool = False,
    rectify: bool = False,
    degenerated_to_sgd: bool = True,
    nesterov: bool = False,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Rescales updates by the belief in the observed gradients (AdaBelief).

    With ``bc1 = 1 - b1^t``, ``bc2 = 1 - b2^t`` and ``m``, ``s`` as in the module
    docs, the returned direction (to be scaled by ``-learning_rate``) is

    .. math::

      u_t = \\frac{m_t / bc_1}{\\sqrt{s_t / bc_2} + \\epsilon}.

    With ``amsgrad=True`` the denominator uses ``max_{k<=t} s_k`` instead. With
    ``rectify=True`` and ``rho_t >= 5`` (see :mod:`gdtx._core.rectification`) it is
    ``r_t \\sqrt{bc_2} / bc_1 \\cdot m_t / (\\sqrt{s_t} + \\epsilon)`` -- ``eps`` is not
    bias-corrected there, as in the official code -- and below the threshold
    ``m_t / bc_1`` (``degenerated_to_sgd=True``) or no step at all. With
    ``nesterov=True``, ``m_t / bc_1`` is replaced by
    ``b1 m_t / (1 - b1^{t+1}) + (1 - b1) g_t / bc_1``, as in optax.

    .. warning::
      With ``rectify=True`` *and* ``amsgrad=True`` the official code keeps the
      running maximum but normalises the rectified step by the current ``s_t``;
      gdtx does the same, so there the maximum only affects the steps below the
      threshold (which do not use it either). This reproduces the reference; it is
      probably not what the AMSGrad variant intended.

    Args:
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the belief, in [0, 1).
      eps: added to the root of the belief (outside the square root).
      eps_root: added to the stored belief every step (inside the square root).
      amsgrad: normalise by the running maximum of the belief.
      rectify: apply RAdam's variance rectification (the official package's default).
      degenerated_to_sgd: with ``rectify``, take a momentum-SGD step below the
        threshold instead of no step.
      nesterov: use Nesterov momentum in the numerator.
      mu_dtype: dtype of ``mu``; None keeps each parameter's dtype (it must be
        complex for complex parameters).
      nu_dtype: dtype of ``nu`` (and ``nu_max``); None keeps each parameter's dtype
        (for a complex parameter a real dtype is allowed: ``nu`` is real-valued).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`ScaleByBeliefState`.

    Raises:
      TypeError: at ``init``, for integer parameters, or a real ``mu_dtype`` with
        complex parameters; at ``update``, for a state this ``init`` did not make.

    Examples:
      The first step of AdaBelief has the same magnitude, ``1 / b1``, in every
      coordinate, whatever the gradient's scale: ``m_1 = (1 - b1) g`` and
      ``g - m_1 = b1 g`` (``eps`` is negligible here):

      >>> import jax.numpy as jnp, gdtx
      >>> tx = gdtx.scale_by_belief()
      >>> grads = jnp.array([1e-3, -2.0, 50.0])
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(updates.round(3))
      [ 1.111 -1.111  1.111]

    References:
      Zhuang et al., `AdaBelief Optimizer: Adapting Stepsizes by the Belief in
      Observed Gradients <https://arxiv.org/abs/2010.07468>`_, NeurIPS 2020.
      Official code: https://github.com/juntang-zhuang/Adabelief-Optimizer
    """
    return _scale_by_belief(
        "gdtx.scale_by_belief",
        b1,
        b2,
        eps,
        eps_root,
        amsgrad=amsgrad,
        rectify=rectify,
        degenerated_to_sgd=degenerated_to_sgd,
        nesterov=nesterov,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
    )


def _scale_by_belief(
    owner: str,
    b1: Any,
    b2: Any,
    eps: Any,
    eps_root: Any,
    *,
    amsgrad: bool,
    rectify: bool,
    degenerated_to_sgd: bool,
    nesterov: bool,
    mu_dtype: Any,
    nu_dtype: Any,
) -> optax.GradientTransformationExtraArgs:
    """:func:`scale_by_belief` with ``owner`` (the public function called) in its messages."""
    validation.check_moments(owner, b1, b2, eps, mu_dtype, nu_dtype)
    validation.check_non_negative(owner, "eps_root", eps_root)
    validation.check_flags(
        owner,
        amsgrad=amsgrad,
        rectify=rectify,
        degenerated_to_sgd=degenerated_to_sgd,
        nesterov=nesterov,
    )
    mu_dtype = dtypes.canonical_dtype(mu_dtype)
    nu_dtype = dtypes.canonical_dtype(nu_dtype)

    def init_fn(params):
        validation.check_params(owner, params, allow_complex=True)
        dtypes.check_phase_dtype(owner, "mu_dtype", params, mu_dtype)
        return ScaleByBeliefState(
            count=jnp.zeros([], jnp.int32),
            mu=dtypes.zeros_like_params(params, mu_dtype),
            nu=dtypes.zeros_like_params(params, nu_dtype),
            nu_max=dtypes.zeros_like_params(params, nu_dtype) if amsgrad else None,
        )

    def step_scalars(cdt, count):
        """Everything of a step that is not per element, for one compute dtype."""
        b1_, b2_, eps_, eps_root_ = (jnp.asarray(x, cdt) for x in (b1, b2, eps, eps_root))
        t = jnp.asarray(count, cdt)
        sc = {"b1": b1_, "b2": b2_, "eps": eps_, "eps_root": eps_root_}
        sc["bc1"] = 1 - b1_**t
        sc["bc2"] = 1 - b2_**t
        if nesterov:
            sc["bc1_next"] = 1 - b1_ ** (t + 1)
        if rectify:
            sc["r_t"], sc["adaptive"] = rectification.rectification(
                b2_, t, _RECTIFICATION_THRESHOLD, cdt
            )
            sc["sqrt_bc2"] = jnp.sqrt(sc["bc2"])
        return sc

    def leaf_update(g, m_prev, s_prev, s_max_prev, scalars):
        g = jnp.asarray(g)  # a Python-number leaf has no dtype
        cdt, rdt = moments.moment_dtypes(g, m_prev, s_prev)  # s is real, even for complex g
        sc = scalars(rdt)
        b1_, b2_, eps_, bc1, bc2 = sc["b1"], sc["b2"], sc["eps"], sc["bc1"], sc["bc2"]
        g_c = g.astype(cdt)
        m = moments.ema(b1_, m_prev, g_c, cdt)
        deviation = g_c - m
        # eps_root joins the new term rather than being added last: a final add of a
        # constant lets XLA duplicate the whole `s` computation into the update's loop,
        # which then reads the old `s` after it was overwritten in place and forces a
        # full copy of the donated buffer (see docs/benchmarks.md). Rounding differs
        # from the official order by at most an ulp of `s`.
        # |g - m|^2: deviation * deviation for real parameters, Re(d conj(d)) for complex.
        sq_deviation = dtypes.abs_sq(deviation)
        s = b2_ * dtypes.as_real(s_prev, rdt) + ((1 - b2_) * sq_deviation + sc["eps_root"])
        s_norm = jnp.maximum(dtypes.as_real(s_max_prev, rdt), s) if amsgrad else s
        if nesterov:
            m_hat = b1_ * m / sc["bc1_next"] + (1 - b1_) * g_c / bc1
        else:
            m_hat = m / bc1
        u = m_hat / (jnp.sqrt(s_norm / bc2) + eps_)
        if rectify:
            # The rectified step normalises by the current s, never by the max
            # (official adabelief-pytorch 0.2.1), with eps outside the correction.
            u_rect = sc["r_t"] * m_hat * sc["sqrt_bc2"] / (jnp.sqrt(s) + eps_)
            fallback = m_hat if degenerated_to_sgd else jnp.zeros_like(m_hat)
            u = jnp.where(sc["adaptive"], u_rect, fallback)
        out = (u.astype(g.dtype), m.astype(m_prev.dtype), s.astype(s_prev.dtype))
        return out + (s_norm.astype(s_max_prev.dtype),) if amsgrad else out

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        validation.check_state_type(owner, state, ScaleByBeliefState)
        validation.check_like_state(owner, updates, state.mu)
        count = optax.safe_increment(state.count)
        scalars = moments.per_compute_dtype(lambda cdt: step_scalars(cdt, count))

        state_moments = (state.mu, state.nu, state.nu_max) if amsgrad else (state.mu, state.nu)
        if amsgrad:
            leaf_fn = lambda g, m, s, s_max: leaf_update(g, m, s, s_max, scalars)  # noqa: E731
        else:
            leaf_fn = lambda g, m, s: leaf_update(g, m, s, None, scalars)  # noqa: E731
        outputs = unzip(
            jax.tree.map(leaf_fn, updates, *state_moments), updates, 1 + len(state_moments)
        )
        new_updates, mu, nu, *rest = outputs
        nu_max = rest[0] if amsgrad else None
        return new_updates, ScaleByBeliefState(count=count, mu=mu, nu=nu, nu_max=nu_max)

    # recorded for gdtx.rectify, which must use the same decays
    return hyperparams.record(
        optax.GradientTransformationExtraArgs(init_fn, update_fn), b1=b1, b2=b2
    )


def adabelief(
    learning_rate: optax.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-16,
    eps_root: jax.typing.ArrayLike = 1e-16,
    *,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    weight_decay_mode: str = "decoupled",
    mask: Any | None = None,
    amsgrad: bool = False,
    rectify: bool = False,
    degenerated_to_sgd: bool = True,
    nesterov: bool = False,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    """The AdaBelief optimizer, exact to the official implementation.

    ``optax.chain(scale_by_belief(...), weight decay, scale_by_learning_rate(lr))``
    with the decay placed by ``weight_decay_mode``. With ``u_t`` the direction of
    :func:`scale_by_belief`, ``\\eta_t`` the learning rate and ``\\lambda`` the
    weight decay, the parameter step is

    .. math::

      \\text{decoupled:}\\ p_t = p_{t-1} (1 - \\eta_t \\lambda) - \\eta_t u_t, \\quad
      \\text{fixed:}\\ p_t = p_{t-1} (1 - \\lambda) - \\eta_t u_t,

    and ``"l2"`` adds ``\\lambda p_{t-1}`` to the gradient before the moments.
    The official package's default decay is ``"decoupled"`` (``weight_decouple=True``),
    as here; ``fixed_decay=True`` there is ``"fixed"`` here, and
    ``weight_decouple=False`` is ``"l2"``.

    .. warning::
      ``rectify`` defaults to False, as in optax, ``pytorch-optimizer`` and the
      paper's main algorithm, but the official ``adabelief-pytorch`` 0.2.x defaults
      to ``rectify=True``: pass ``rectify=True`` to reproduce it. Every other
      default (``eps=eps_root=1e-16``, decoupled decay) is the official one. The
      paper writes ``eps=1e-8`` for some experiments; note that ``eps`` enters
      twice (see :func:`scale_by_belief`).

    Args:
      learning_rate: a float or an optax schedule.
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the belief, in [0, 1).
      eps: added outside the square root of the belief.
      eps_root: added to the stored belief every step.
      weight_decay: decay strength (a float or a schedule), >= 0.
      weight_decay_mode: ``"decoupled"``, ``"fixed"`` or ``"l2"``.
      mask: which parameters decay: a tree of booleans like the params, or a
        callable returning one (as in ``optax.add_decayed_weights``).
      amsgrad: use the running maximum of the belief.
      rectify: RAdam rectification (the official default is True).
      degenerated_to_sgd: with ``rectify``, momentum-SGD steps below the threshold.
      nesterov: Nesterov momentum.
      mu_dtype: dtype of the first moment; None keeps the parameters' dtype.
      nu_dtype: dtype of the belief; None keeps the parameters' dtype.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Examples:
      AdaBelief divides by the spread of the gradient around its running mean (the
      "belief"), where Adam divides by its second moment: on a steady gradient the
      belief shrinks and the step grows past the learning rate; a noisy gradient with
      the same mean gets a step several times smaller:

      >>> import jax.numpy as jnp, optax, gdtx
      >>> def last_update(tx, grads):
      ...     params = jnp.zeros(1)
      ...     state = tx.init(params)
      ...     for g in grads:
      ...         updates, state = tx.update(jnp.array([g]), state, params)
      ...     return float(updates[0])
      >>> steady, noisy = [1.0] * 20, [3.0, -1.0] * 10
      >>> for name, tx in [("adabelief", gdtx.adabelief(0.1)), ("adam", optax.adam(0.1))]:
      ...     print(f"{name:9s}  steady {last_update(tx, steady):+.3f}  "
      ...           f"noisy {last_update(tx, noisy):+.3f}")
      adabelief  steady -0.219  noisy -0.046
      adam       steady -0.100  noisy -0.040

    References:
      Zhuang et al., `AdaBelief Optimizer: Adapting Stepsizes by the Belief in
      Observed Gradients <https://arxiv.org/abs/2010.07468>`_, NeurIPS 2020.
      Official code: https://github.com/juntang-zhuang/Adabelief-Optimizer
      (``adabelief-pytorch`` 0.2.1).
    """
    owner = "gdtx.adabelief"
    validation.check_moments(owner, b1, b2, eps, mu_dtype, nu_dtype)
    validation.check_non_negative(owner, "eps_root", eps_root)
    validation.check_flags(
        owner,
        amsgrad=amsgrad,
        rectify=rectify,
        degenerated_to_sgd=degenerated_to_sgd,
        nesterov=nesterov,
    )
    direction = _scale_by_belief(
        owner,
        b1,
        b2,
        eps,
        eps_root,
        amsgrad=amsgrad,
        rectify=rectify,
        degenerated_to_sgd=degenerated_to_sgd,
        nesterov=nesterov,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
    )
    tx = chain_with_weight_decay(
        direction,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        weight_decay_mode=weight_decay_mode,
        mask=mask,
        owner=owner,
    )
    return dtypes.checking_phase_dtypes(tx, owner, mu_dtype=mu_dtype)
