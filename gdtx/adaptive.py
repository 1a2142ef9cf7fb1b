"""Adaptive step sizes: diffGrad, RAdam and its composable ``rectify``, AdaGrad-Norm.

The family's contract. Each ``scale_by_*`` returns a *descent direction* ``u_t``
(the aliases step ``p <- p - lr u_t``), computed from moments that follow
optax's names: ``mu`` is the EMA of the gradient, ``nu`` the EMA of its square,
so that ``optax.tree.get(state, "mu")`` finds the first moment of any of them --
which is exactly what :func:`rectify` relies on. ``t`` counts from 1,
``bc1 = 1 - b1^t`` and ``bc2 = 1 - b2^t``.

Where the reference implementations disagree on where ``eps`` sits, gdtx follows
the official (or most used) code and says how to reproduce the other:

- diffGrad and RAdam put ``eps`` on the *un-bias-corrected* root,
  ``sqrt(bc2) / bc1 * m / (sqrt(v) + eps)``, as ``torch.optim.RAdam``,
  ``pytorch-optimizer`` and ``torch-optimizer`` do (``optax.radam`` puts it on
  the bias-corrected root instead: the two agree exactly at ``eps = 0``);
- :func:`rectify` multiplies whatever direction the inner transformation
  returns, so the inner decides where its ``eps`` sits.

AdaGrad-Norm keeps one scalar accumulator for the whole pytree (Ward et al.);
coordinate-wise AdaGrad is ``optax.adagrad``.

Complex parameters are supported in optax's sense: every square is the squared
modulus ``|g|^2 = Re(g conj(g))`` (so ``nu`` and AdaGrad-Norm's accumulator are
real-valued), first moments keep the gradient's phase, and diffGrad's friction
uses the modulus ``|g_{t-1} - g_t|``. ``nu`` is stored in the parameter's dtype by
default (complex, with a zero imaginary part, as optax stores it); a real
``nu_dtype`` halves its memory. Phase-carrying state (``mu``, diffGrad's
``prev_grad``) must have a complex dtype (or None) for complex parameters.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gdtx._core import dtypes, extra_args, hyperparams, moments, rectification, validation
from gdtx._core.trees import unzip
from gdtx._core.weight_decay import chain_with_weight_decay

_NOT_FOUND = object()


# --------------------------------------------------------------------------------------
# diffGrad


class ScaleByDiffGradState(NamedTuple):
    """State of :func:`scale_by_diffgrad`.

    Attributes:
      count: number of updates so far, shape ``()``, int32 (saturating).
      mu: EMA of the gradient ``m``, in ``mu_dtype``.
      nu: EMA of the squared gradient ``v``, in ``nu_dtype``.
      prev_grad: the previous step's gradient (zeros before the first step), in
        ``prev_grad_dtype``.
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    prev_grad: optax.Updates


def scale_by_diffgrad(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
    prev_grad_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Rescales updates like Adam, damped by the diffGrad friction.

    With ``m``, ``v`` the EMAs of ``g`` and ``g^2`` and ``g_0 = 0``,

    .. math::

      \\xi_t = \\operatorname{sigmoid}(|g_{t-1} - g_t|), \\qquad
      u_t = \\frac{\\sqrt{bc_2}}{bc_1} \\cdot
            \\frac{\\xi_t \\, m_t}{\\sqrt{v_t + \\epsilon_{root}} + \\epsilon}.

    The friction ``xi`` lies in ``[1/2, 1)``: it halves the step where the
    gradient does not change (near a minimum or on a plateau) and leaves it
    Adam's where it changes fast. ``eps`` sits on the un-bias-corrected root, as
    in both PyTorch packages; ``eps_root=1e-15`` reproduces ``pytorch-optimizer``
    (which hard-codes it) and ``eps_root=0`` the ``torch-optimizer`` package.

    For complex parameters ``v`` is the EMA of ``|g|^2`` and the friction takes the
    modulus of the change, ``sigmoid(|g_{t-1} - g_t|)`` (a real factor, so the step
    keeps the phase of ``m``); the paper defines neither, this is the natural
    extension (``|.|`` is already the modulus in the real formula).

    Args:
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      eps: added outside the square root of ``v``.
      eps_root: added to ``v`` inside the square root (not stored).
      mu_dtype: dtype of ``mu``; None keeps each parameter's dtype.
      nu_dtype: dtype of ``nu``; None keeps each parameter's dtype.
      prev_grad_dtype: dtype of ``prev_grad``, the stored previous gradient; None
        keeps each parameter's dtype (``jnp.bfloat16`` halves it for float32
        parameters; the friction then compares with a rounded gradient).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`ScaleByDiffGradState`.

    Examples:
      On the first step ``g_0 = 0``, so the friction is ``sigmoid(|g_1|)``: a
      large gradient gets Adam's unit step, a vanishing one only half of it:

      >>> import jax.numpy as jnp, gdtx
      >>> tx = gdtx.scale_by_diffgrad(eps=0.0)
      >>> grads = jnp.array([1e-6, 1.0, 20.0])
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(" ".join(f"{float(u):.4f}" for u in updates))
      0.5000 0.7311 1.0000

    References:
      Dubey et al., `diffGrad: An Optimization Method for Convolutional Neural
      Networks <https://arxiv.org/abs/1909.11015>`_, IEEE TNNLS 31(11), 2020.
      Official code: https://github.com/shivram1987/diffGrad
    """
    return _scale_by_diffgrad(
        "gdtx.scale_by_diffgrad",
        b1,
        b2,
        eps,
        eps_root,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
        prev_grad_dtype=prev_grad_dtype,
    )


def _scale_by_diffgrad(
    owner: str,
    b1: Any,
    b2: Any,
    eps: Any,
    eps_root: Any,
    *,
    mu_dtype: Any,
    nu_dtype: Any,
    prev_grad_dtype: Any,
) -> optax.GradientTransformationExtraArgs:
    """:func:`scale_by_diffgrad` with ``owner`` (the public function called) in its messages."""
    validation.check_moments(owner, b1, b2, eps, mu_dtype, nu_dtype)
    validation.check_non_negative(owner, "eps_root", eps_root)
    validation.check_dtype(owner, "prev_grad_dtype", prev_grad_dtype)
    mu_dtype = dtypes.canonical_dtype(mu_dtype)
    nu_dtype = dtypes.canonical_dtype(nu_dtype)
    prev_grad_dtype = dtypes.canonical_dtype(prev_grad_dtype)

    def init_fn(params):
        validation.check_params(owner, params, allow_complex=True)
        dtypes.check_phase_dtype(owner, "mu_dtype", params, mu_dtype)
        dtypes.check_phase_dtype(owner, "prev_grad_dtype", params, prev_grad_dtype)
        return ScaleByDiffGradState(
            count=jnp.zeros([], jnp.int32),
            mu=dtypes.zeros_like_params(params, mu_dtype),
            nu=dtypes.zeros_like_params(params, nu_dtype),
            prev_grad=dtypes.zeros_like_params(params, prev_grad_dtype),
        )

    def step_scalars(rdt, count):
        b1_, b2_, eps_, eps_root_ = (jnp.asarray(x, rdt) for x in (b1, b2, eps, eps_root))
        t = jnp.asarray(count, rdt)
        return b1_, b2_, eps_, eps_root_, jnp.sqrt(1 - b2_**t) / (1 - b1_**t)

    def leaf_update(g, m_prev, v_prev, g_prev, scalars):
        g = jnp.asarray(g)  # a Python-number leaf has no dtype
        cdt, rdt = moments.moment_dtypes(g, m_prev, v_prev)
        b1_, b2_, eps_, eps_root_, step = scalars(rdt)
        g_c = g.astype(cdt)
        m = moments.ema(b1_, m_prev, g_c, cdt)
        v = moments.ema_abs_sq(b2_, v_prev, g_c, rdt)
        friction = jax.nn.sigmoid(jnp.abs(g_prev.astype(cdt) - g_c))
        u = step * friction * m / (jnp.sqrt(v + eps_root_) + eps_)
        return (
            u.astype(g.dtype),
            m.astype(m_prev.dtype),
            v.astype(v_prev.dtype),
            g.astype(g_prev.dtype),
        )

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        validation.check_state_type(owner, state, ScaleByDiffGradState)
        validation.check_like_state(owner, updates, state.mu)
        count = optax.safe_increment(state.count)
        scalars = moments.per_compute_dtype(lambda rdt: step_scalars(rdt, count))
        out = jax.tree.map(
            lambda g, m, v, gp: leaf_update(g, m, v, gp, scalars),
            updates,
            state.mu,
            state.nu,
            state.prev_grad,
        )
        new_updates, mu, nu, prev_grad = unzip(out, updates, 4)
        return new_updates, ScaleByDiffGradState(count=count, mu=mu, nu=nu, prev_grad=prev_grad)

    # recorded for gdtx.rectify, which must use the same decays
    return hyperparams.record(
        optax.GradientTransformationExtraArgs(init_fn, update_fn), b1=b1, b2=b2
    )


def diffgrad(
    learning_rate: optax.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    weight_decay_mode: str = "decoupled",
    mask: Any | None = None,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
    prev_grad_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    """The diffGrad optimizer: Adam with a friction on slowly changing gradients.

    ``scale_by_diffgrad`` (see there for the math), weight decay placed by
    ``weight_decay_mode``, then ``-learning_rate``:

    .. math::

      \\text{decoupled:}\\ p_t = p_{t-1}(1 - \\eta_t\\lambda) - \\eta_t u_t, \\quad
      \\text{fixed:}\\ p_t = p_{t-1}(1 - \\lambda) - \\eta_t u_t,

    and ``"l2"`` adds ``\\lambda p_{t-1}`` to the gradient before the moments (the
    friction then compares decayed gradients, as in both PyTorch packages).

    .. warning::
      ``pytorch-optimizer`` (``DiffGrad``, default ``weight_decouple=True``) is
      ``weight_decay_mode="decoupled"`` with ``eps_root=1e-15``; ``torch-optimizer``
      and the official code (``weight_decay`` added to the gradient) are
      ``weight_decay_mode="l2"`` with ``eps_root=0``.

    Args:
      learning_rate: a float or an optax schedule.
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      eps: added outside the square root of the second moment.
      eps_root: added inside the square root (``1e-15`` reproduces ``pytorch-optimizer``).
      weight_decay: decay strength (a float or a schedule), >= 0.
      weight_decay_mode: ``"decoupled"``, ``"fixed"`` or ``"l2"``.
      mask: which parameters decay, as in ``optax.add_decayed_weights``.
      mu_dtype: dtype of the first moment; None keeps the parameters' dtype.
      nu_dtype: dtype of the second moment; None keeps the parameters' dtype.
      prev_grad_dtype: dtype of the stored previous gradient; None keeps the
        parameters' dtype.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Examples:
      The friction ``sigmoid(|g_prev - g|)`` halves Adam's step where the
      gradient has stopped changing and leaves it where the gradient flips
      (the ratio to ``optax.adam``'s third update, same rate and moments):

      >>> import jax.numpy as jnp, optax, gdtx
      >>> def third_step_ratio(grads):
      ...     d, a = gdtx.diffgrad(0.1), optax.adam(0.1)
      ...     p = jnp.zeros(2)
      ...     sd, sa = d.init(p), a.init(p)
      ...     for g in grads:
      ...         ud, sd = d.update(g, sd, p)
      ...         ua, sa = a.update(g, sa, p)
      ...     return ud / ua
      >>> steady = [jnp.array([0.5, -2.0])] * 3
      >>> flipping = [jnp.array([5.0, -5.0]), jnp.array([-5.0, 5.0]), jnp.array([5.0, -5.0])]
      >>> print(third_step_ratio(steady).round(4), third_step_ratio(flipping).round(4))
      [0.5 0.5] [1. 1.]

    References:
      Dubey et al., `diffGrad: An Optimization Method for Convolutional Neural
      Networks <https://arxiv.org/abs/1909.11015>`_, IEEE TNNLS 31(11), 2020.
      Official code: https://github.com/shivram1987/diffGrad
    """
    owner = "gdtx.diffgrad"
    # _scale_by_diffgrad validates every argument it takes, naming `owner`.
    direction = _scale_by_diffgrad(
        owner,
        b1,
        b2,
        eps,
        eps_root,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
        prev_grad_dtype=prev_grad_dtype,
    )
    tx = chain_with_weight_decay(
        direction,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        weight_decay_mode=weight_decay_mode,
        mask=mask,
        owner=owner,
    )
    return dtypes.checking_phase_dtypes(
        tx, owner, mu_dtype=mu_dtype, prev_grad_dtype=prev_grad_dtype
    )


# --------------------------------------------------------------------------------------
# rectify and RAdam


class RectifyState(NamedTuple):
    """State of :func:`rectify`.

    Attributes:
      count: number of updates so far, shape ``()``, int32 (saturating).
      inner_state: the wrapped transformation's state (its ``mu`` is read).
    """

    count: jax.Array
    inner_state: optax.OptState


def _is_state_field(path, _) -> bool:
    """Only NamedTuple fields count as moments: a parameter called ``mu`` is not one."""
    return isinstance(path[-1], optax.tree_utils.NamedTupleKey)


# How far a probed decay may be from the given one: the probe runs in float32.
_PROBE_TOLERANCE = 1e-6


def _probed_decays(inner: Any) -> dict[str, float]:
    """``b1`` (and ``b2``) of a transformation no gdtx builder made, from one step.

    The contract :func:`rectify` already relies on: the inner state's ``mu`` is
    an EMA of the updates with decay ``b1``, so after one unit gradient from
    ``init`` it holds ``1 - b1``; ``nu`` is read the same way only in an
    ``optax.ScaleByAdamState`` (an EMA of squared updates there, not in
    general). Empty when the probe cannot run (the inner needs extra arguments
    or parameters of its own shape) or finds no single ``mu``.
    """
    try:
        with jax.ensure_compile_time_eval():
            p = jnp.zeros((), jnp.float32)
            _, state = inner.update(jnp.ones((), jnp.float32), inner.init(p), p)
    except Exception:  # noqa: BLE001 -- any failure means: cannot check, say nothing
        return {}
    found = {}
    mus = optax.tree.get_all_with_path(state, "mu", filtering=_is_state_field)
    # a traced hyperparameter of the inner leaves its moments traced: not read
    if len(mus) == 1 and validation.concrete_value(mus[0][1]) is not None:
        found["b1"] = 1.0 - validation.concrete_value(mus[0][1])
    adam = [
        s
        for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
        if isinstance(s, optax.ScaleByAdamState)
    ]
    if len(adam) == 1 and validation.concrete_value(adam[0].nu) is not None:
        found["b2"] = 1.0 - validation.concrete_value(adam[0].nu)
    return found


def _inner_decays(inner: Any) -> dict[str, float]:
    """The inner's ``b1``/``b2``: recorded by its gdtx builder, else probed."""
    values = {k: validation.concrete_value(v) for k, v in hyperparams.recorded(inner).items()}
    values = {k: v for k, v in values.items() if v is not None}
    return values or _probed_decays(inner)


def _warn_on_mismatch(owner: str, inner: Any, b1: Any, b2: Any) -> None:
    if validation.concrete_value(b1) is None and validation.concrete_value(b2) is None:
        return  # traced: nothing to compare
    theirs = _inner_decays(inner)
    for name, value in (("b1", b1), ("b2", b2)):
        ours = validation.concrete_value(value)
        other = theirs.get(name)
        if ours is None or other is None or abs(ours - other) <= _PROBE_TOLERANCE:
            continue
        warnings.warn(
            f"{owner}: `{name}={ours!r}` differs from the inner transformation's "
            f"`{name}={other:.6g}`; the rectification assumes the inner moments use "
            f"`{name}={ours!r}`. Pass `{name}={other:.6g}` to {owner}.",
            UserWarning,
            stacklevel=4,
        )


def _first_moment(owner: str, inner_state: Any, like: Any) -> Any:
    try:
        mu = optax.tree.get(inner_state, "mu", _NOT_FOUND, filtering=_is_state_field)
    except KeyError as error:
        raise ValueError(
            f"{owner}: the inner state holds several first moments `mu` "
            f"(a chain of moment-keeping transformations?); wrap only the one whose "
            f"direction should be rectified. ({error})"
        ) from None
    if mu is _NOT_FOUND:
        raise ValueError(
            f"{owner}: the inner transformation's state has no first moment `mu` "
            f"(state type {type(inner_state).__name__}); rectify needs it for the "
            f"steps below the threshold. Wrap an Adam-like `scale_by_*` whose state "
            f"names its EMA of the gradient `mu`, as optax and gdtx do."
        )
    validation.check_like_state(owner, like, mu, what="parameter")
    return mu


def rectify(
    inner: optax.GradientTransformation,
    *,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    threshold: jax.typing.ArrayLike = 5.0,
    degenerated_to_sgd: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """Variance rectification (RAdam) around any adaptive descent direction.

    With ``u_t`` the inner direction, ``m_t`` the inner first moment (found as
    ``optax.tree.get(inner_state, "mu")``) and ``r_t``, ``rho_t`` the
    rectification term and SMA length of :mod:`gdtx._core.rectification`
    (``rho_inf = 2 / (1 - b2) - 1``), the returned direction is

    .. math::

      \\tilde u_t = \\begin{cases}
        r_t \\, u_t & \\rho_t \\ge \\text{threshold}, \\\\
        m_t / (1 - b_1^t) & \\text{otherwise, if degenerated\\_to\\_sgd}, \\\\
        0 & \\text{otherwise.}
      \\end{cases}

    It belongs where ``inner`` would be: before weight decay and the learning
    rate. The inner transformation runs every step (its moments keep
    accumulating below the threshold). ``b1`` and ``b2`` must be the inner's:
    ``b2`` sets ``r_t``, ``b1`` the bias correction of the fallback step. When
    they differ, a ``UserWarning`` says so: gdtx's ``scale_by_belief`` and
    ``scale_by_diffgrad`` record their decays; for another inner, one step of
    it on a scalar at construction reads ``b1`` from its ``mu`` (and ``b2``
    from ``nu`` in an ``optax.ScaleByAdamState``); an inner that this probe
    cannot run (it needs extra arguments) is not checked.

    When it equals the monolithic implementations (checked in
    ``tests/test_adaptive.py`` and ``tests/reference/test_adaptive_reference.py``):

    - ``rectify(optax.scale_by_adam(b1, b2, eps))`` is ``optax.scale_by_radam``
      exactly (both put ``eps`` on the bias-corrected root), and
      ``torch.optim.RAdam`` / :func:`radam` (``eps`` on the un-bias-corrected root,
      ``r_t m_t / bc1 / (sqrt(v_t / bc2) + eps / sqrt(bc2))``) exactly at ``eps = 0``.
    - ``rectify(gdtx.scale_by_belief())`` is ``scale_by_belief(rectify=True)`` (the
      official rectified AdaBelief) up to the same ``eps`` placement: the official
      rectified step does not bias-correct ``eps``, which changes the trajectory by
      about ``eps / sqrt(s_t)``, i.e. ~1e-10 relative at the default
      ``eps = 1e-16`` (within the references' 1e-6) and ~3e-5 at ``eps = 1e-8``
      (not). Exact at ``eps = eps_root = 0``.
    - With ``scale_by_belief(amsgrad=True)`` the rectified step here divides by
      the running maximum (it multiplies the inner's AMSGrad direction); the
      official package ignores the maximum there, ``pytorch-optimizer``'s
      ``ams_bound=True, rectify=True`` uses it -- and is what this reproduces.
    - ``rectify(gdtx.scale_by_diffgrad(eps_root=1e-15))`` is ``pytorch-optimizer``'s
      ``DiffGrad(rectify=True)`` exactly (its fallback step is ``m_t / bc1``, without
      the friction, as here).

    .. warning::
      ``inner`` must be a descent *direction* (``optax.scale_by_adam()``), not a
      whole optimizer (``optax.adam(lr)``): an optimizer's update already carries
      ``-lr``, while the fallback step ``m_t / (1 - b1^t)`` does not, so the two
      branches would disagree in sign and scale and training diverges. Put the
      learning rate after the wrapper, as :func:`radam` does.

    Args:
      inner: an adaptive ``scale_by_*`` direction whose state holds ``mu``.
      b1: the inner's first-moment decay (bias correction of the fallback step).
      b2: the inner's second-moment decay (sets ``rho_t`` and ``r_t``).
      threshold: smallest ``rho_t`` at which the rectified step is taken, >= 4
        (``torch.optim.RAdam`` hard-codes 5).
      degenerated_to_sgd: below the threshold, take the momentum step
        ``m_t / bc1`` (True) or no step at all (False).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`RectifyState`.

    Raises:
      ValueError: at ``init`` when the inner state has no (or several) ``mu``.

    Examples:
      With ``b2 = 0.999`` the first five steps are below the threshold: the
      wrapped Adam takes a bias-corrected momentum step there (``m_t / bc1 = g``
      for a constant gradient), then the rectified one, which starts small:

      >>> import jax.numpy as jnp, optax, gdtx
      >>> tx = gdtx.rectify(optax.scale_by_adam())
      >>> grads = jnp.array([0.5, -2.0])
      >>> state = tx.init(grads)
      >>> for t in range(1, 8):
      ...     updates, state = tx.update(grads, state)
      ...     print(t, " ".join(f"{float(u):+.4f}" for u in updates))
      1 +0.5000 -2.0000
      2 +0.5000 -2.0000
      3 +0.5000 -2.0000
      4 +0.5000 -2.0000
      5 +0.5000 -2.0000
      6 +0.0259 -0.0259
      7 +0.0327 -0.0327

    References:
      Liu et al., `On the Variance of the Adaptive Learning Rate and Beyond
      <https://arxiv.org/abs/1908.03265>`_, ICLR 2020. Official code:
      https://github.com/LiyuanLucasLiu/RAdam. optax issue #24 (a ``rectify``
      wrapper): https://github.com/google-deepmind/optax/issues/24
    """
    return _rectify(
        "gdtx.rectify",
        inner,
        b1=b1,
        b2=b2,
        threshold=threshold,
        degenerated_to_sgd=degenerated_to_sgd,
    )


def _rectify(
    owner: str,
    inner: optax.GradientTransformation,
    *,
    b1: Any,
    b2: Any,
    threshold: Any,
    degenerated_to_sgd: bool,
) -> optax.GradientTransformationExtraArgs:
    """:func:`rectify`, with ``owner`` naming the public function in messages."""
    validation.check_decay(owner, "b1", b1)
    validation.check_decay(owner, "b2", b2)
    # Below rho = 4 the rectification term is imaginary: a threshold there would
    # take "rectified" steps of size zero. An infinite one would never rectify.
    validation.check_at_least(owner, "threshold", threshold, 4)
    validation.check_flags(owner, degenerated_to_sgd=degenerated_to_sgd)
    _warn_on_mismatch(owner, inner, b1, b2)
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        # The wrapper's own math is a real factor: complex parameters are as
        # supported as the inner transformation supports them (its init decides).
        validation.check_params(owner, params, allow_complex=True)
        inner_state = inner.init(params)
        _first_moment(owner, inner_state, params)
        return RectifyState(count=jnp.zeros([], jnp.int32), inner_state=inner_state)

    def step_scalars(rdt, count):
        r_t, adaptive = rectification.rectification(b2, count, threshold, rdt)
        t = jnp.asarray(count, rdt)
        return r_t, adaptive, 1 - jnp.asarray(b1, rdt) ** t

    def leaf_update(u, m, scalars):
        cdt = dtypes.compute_dtype(u, m)
        # r_t, rho_t and the bias correction are real
        r_t, adaptive, bc1 = scalars(dtypes.real_dtype(cdt))
        m_hat = m.astype(cdt) / bc1
        fallback = m_hat if degenerated_to_sgd else jnp.zeros_like(m_hat)
        return jnp.where(adaptive, r_t * u.astype(cdt), fallback).astype(u.dtype)

    def update_fn(updates, state, params=None, **extra):
        validation.check_state_type(owner, state, RectifyState)
        inner_updates, inner_state = inner.update(updates, state.inner_state, params, **extra)
        count = optax.safe_increment(state.count)
        mu = _first_moment(owner, inner_state, updates)
        scalars = moments.per_compute_dtype(lambda rdt: step_scalars(rdt, count))
        new_updates = jax.tree.map(lambda u, m: leaf_update(u, m, scalars), inner_updates, mu)
        return new_updates, RectifyState(count=count, inner_state=inner_state)

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return extra_args.declare(tx, extra_args.required_extra_args(inner))


def _scale_by_adam_unbiased_eps(owner, b1, b2, eps, mu_dtype, nu_dtype):
    """Adam with ``eps`` on the un-bias-corrected root (torch's RAdam convention)."""

    def init_fn(params):
        validation.check_params(owner, params, allow_complex=True)
        dtypes.check_phase_dtype(owner, "mu_dtype", params, mu_dtype)
        return optax.ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=dtypes.zeros_like_params(params, mu_dtype),
            nu=dtypes.zeros_like_params(params, nu_dtype),
        )

    def step_scalars(rdt, count):
        b1_, b2_, eps_ = (jnp.asarray(x, rdt) for x in (b1, b2, eps))
        t = jnp.asarray(count, rdt)
        return b1_, b2_, eps_, jnp.sqrt(1 - b2_**t) / (1 - b1_**t)

    def leaf_update(g, m_prev, v_prev, scalars):
        g = jnp.asarray(g)  # a Python-number leaf has no dtype
        cdt, rdt = moments.moment_dtypes(g, m_prev, v_prev)
        b1_, b2_, eps_, step = scalars(rdt)
        g_c = g.astype(cdt)
        m = moments.ema(b1_, m_prev, g_c, cdt)
        v = moments.ema_abs_sq(b2_, v_prev, g_c, rdt)
        u = step * m / (jnp.sqrt(v) + eps_)
        return u.astype(g.dtype), m.astype(m_prev.dtype), v.astype(v_prev.dtype)

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        validation.check_state_type(owner, state, optax.ScaleByAdamState)
        validation.check_like_state(owner, updates, state.mu)
        count = optax.safe_increment(state.count)
        scalars = moments.per_compute_dtype(lambda rdt: step_scalars(rdt, count))
        out = jax.tree.map(
            lambda g, m, v: leaf_update(g, m, v, scalars), updates, state.mu, state.nu
        )
        new_updates, mu, nu = unzip(out, updates, 3)
        return new_updates, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_radam(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    *,
    threshold: jax.typing.ArrayLike = 5.0,
    degenerated_to_sgd: bool = True,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Rescales updates by Rectified Adam, with ``torch.optim.RAdam``'s ``eps``.

    ``rectify(adam, b1=b1, b2=b2, threshold=..., degenerated_to_sgd=...)`` where
    ``adam`` puts ``eps`` on the un-bias-corrected root:

    .. math::

      u_t = \\begin{cases}
        r_t \\dfrac{\\sqrt{bc_2}}{bc_1} \\dfrac{m_t}{\\sqrt{v_t} + \\epsilon}
          & \\rho_t \\ge \\text{threshold}, \\\\
        m_t / bc_1 & \\text{otherwise (or 0 if not degenerated\\_to\\_sgd).}
      \\end{cases}

    ``optax.scale_by_radam`` differs only in putting ``eps`` on the bias-corrected
    root: nothing at ``eps = 0``, but at ``eps = 1e-8`` a leaf whose gradients are
    ~1e-5 ends 5e-3 of its displacement away from torch's trajectory after 1000
    steps (``tests/reference``).

    Args:
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      eps: added outside the (un-bias-corrected) square root of ``v``.
      threshold: smallest ``rho_t`` for the rectified step, >= 4 (torch: 5).
      degenerated_to_sgd: below the threshold, a momentum step (True) or none (False).
      mu_dtype: dtype of ``mu``; None keeps each parameter's dtype.
      nu_dtype: dtype of ``nu``; None keeps each parameter's dtype.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`RectifyState`
      around an ``optax.ScaleByAdamState``.

    Examples:
      Once rectified, the step is Adam's scaled by ``r_t < 1``, which grows
      towards 1 as the second-moment estimate becomes reliable:

      >>> import jax.numpy as jnp, gdtx
      >>> tx = gdtx.scale_by_radam(eps=0.0)
      >>> grads = jnp.array([3.0])
      >>> state = tx.init(grads)
      >>> for t in range(1, 101):
      ...     updates, state = tx.update(grads, state)
      ...     if t in (5, 6, 7, 100):
      ...         print(t, f"{float(updates[0]):.4f}")
      5 3.0000
      6 0.0259
      7 0.0327
      100 0.2153

    References:
      Liu et al., `On the Variance of the Adaptive Learning Rate and Beyond
      <https://arxiv.org/abs/1908.03265>`_, ICLR 2020. Official code:
      https://github.com/LiyuanLucasLiu/RAdam; ``torch.optim.RAdam``.
    """
    return _scale_by_radam(
        "gdtx.scale_by_radam",
        b1,
        b2,
        eps,
        threshold=threshold,
        degenerated_to_sgd=degenerated_to_sgd,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
    )


def _scale_by_radam(
    owner: str,
    b1: Any,
    b2: Any,
    eps: Any,
    *,
    threshold: Any,
    degenerated_to_sgd: bool,
    mu_dtype: Any,
    nu_dtype: Any,
) -> optax.GradientTransformationExtraArgs:
    """:func:`scale_by_radam` with ``owner`` (the public function called) in its messages."""
    validation.check_moments(owner, b1, b2, eps, mu_dtype, nu_dtype)
    # Below rho = 4 the rectification term is imaginary: a threshold there would
    # take "rectified" steps of size zero. An infinite one would never rectify.
    validation.check_at_least(owner, "threshold", threshold, 4)
    validation.check_flags(owner, degenerated_to_sgd=degenerated_to_sgd)
    adam = _scale_by_adam_unbiased_eps(
        owner, b1, b2, eps, dtypes.canonical_dtype(mu_dtype), dtypes.canonical_dtype(nu_dtype)
    )
    return _rectify(
        owner, adam, b1=b1, b2=b2, threshold=threshold, degenerated_to_sgd=degenerated_to_sgd
    )


def radam(
    learning_rate: optax.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    *,
    threshold: jax.typing.ArrayLike = 5.0,
    degenerated_to_sgd: bool = True,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    weight_decay_mode: str = "decoupled",
    mask: Any | None = None,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    """The RAdam optimizer, exact to ``torch.optim.RAdam``.

    :func:`scale_by_radam` (see there for the math), weight decay placed by
    ``weight_decay_mode``, then ``-learning_rate``. ``torch.optim.RAdam``'s
    default (``decoupled_weight_decay=False``) is ``weight_decay_mode="l2"``;
    its ``decoupled_weight_decay=True`` is ``"decoupled"``, gdtx's default.

    .. warning::
      ``degenerated_to_sgd=False`` reproduces ``pytorch-optimizer``'s ``RAdam``
      default (no step while ``rho_t < threshold``, steps 1..5 for ``b2=0.999``),
      but that package also skips the weight decay in those steps, which a chain
      whose decay does not see the direction cannot do: with ``weight_decay > 0``
      gdtx decays the parameters in those steps too (``p *= 1 - lr wd``, five
      times). Its decay is decoupled only (``weight_decouple=False`` disables it).

    Args:
      learning_rate: a float or an optax schedule.
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      eps: added outside the (un-bias-corrected) square root of the second moment.
      threshold: smallest ``rho_t`` for the rectified step, >= 4 (torch: 5).
      degenerated_to_sgd: below the threshold, a momentum step (True, torch) or
        no step (False, ``pytorch-optimizer``).
      weight_decay: decay strength (a float or a schedule), >= 0.
      weight_decay_mode: ``"decoupled"``, ``"fixed"`` or ``"l2"``.
      mask: which parameters decay, as in ``optax.add_decayed_weights``.
      mu_dtype: dtype of the first moment; None keeps the parameters' dtype.
      nu_dtype: dtype of the second moment; None keeps the parameters' dtype.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Examples:
      While the variance of the adaptive step is intractable (``rho_t < 5``:
      the first five steps at ``b2 = 0.999``) RAdam takes momentum-SGD steps,
      ``-lr m_t / bc1 = -lr g`` for a constant gradient; then the rectified
      Adam step, which starts small:

      >>> import jax.numpy as jnp, gdtx
      >>> tx = gdtx.radam(learning_rate=0.1)
      >>> params = jnp.zeros(2)
      >>> state = tx.init(params)
      >>> for t in range(1, 8):
      ...     updates, state = tx.update(jnp.array([0.5, -2.0]), state, params)
      ...     print(t, " ".join(f"{float(u):+.4f}" for u in updates))
      1 -0.0500 +0.2000
      2 -0.0500 +0.2000
      3 -0.0500 +0.2000
      4 -0.0500 +0.2000
      5 -0.0500 +0.2000
      6 -0.0026 +0.0026
      7 -0.0033 +0.0033

    References:
      Liu et al., `On the Variance of the Adaptive Learning Rate and Beyond
      <https://arxiv.org/abs/1908.03265>`_, ICLR 2020. Official code:
      https://github.com/LiyuanLucasLiu/RAdam; ``torch.optim.RAdam``.
    """
    owner = "gdtx.radam"
    # _scale_by_radam validates every argument it takes, naming `owner`.
    direction = _scale_by_radam(
        owner,
        b1,
        b2,
        eps,
        threshold=threshold,
        degenerated_to_sgd=degenerated_to_sgd,
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


# --------------------------------------------------------------------------------------
# AdaGrad-Norm


class ScaleByAdagradNormState(NamedTuple):
    """State of :func:`scale_by_adagrad_norm`.

    Attributes:
      count: number of updates so far, shape ``()``, int32 (saturating).
      sum_of_squares: ``b_t^2``, a scalar for the whole pytree (at least float32).
    """

    count: jax.Array
    sum_of_squares: jax.Array


def _accumulator_dtype(tree: Any) -> Any:
    leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, "dtype")]
    dtype = jnp.result_type(*(x.dtype for x in leaves)) if leaves else jnp.float32
    # a real accumulator even for complex parameters
    return jnp.promote_types(jnp.finfo(dtype).dtype, jnp.float32)


def scale_by_adagrad_norm(
    initial_accumulator_value: jax.typing.ArrayLike = 0.0,
    eps: jax.typing.ArrayLike = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """Rescales the whole update by one AdaGrad step size (AdaGrad-Norm).

    Ward, Wu and Bottou's Algorithm 1, with ``b_0^2`` = ``initial_accumulator_value``
    and the norm taken over the *whole* pytree:

    .. math::

      b_t^2 = b_{t-1}^2 + \\|g_t\\|^2, \\qquad u_t = \\frac{g_t}{b_t + \\epsilon}.

    The accumulator is updated *before* it is used, so the current gradient is in
    its own step size (unlike the "delayed" variant). While ``b_t = 0`` (only zero
    gradients so far, ``b_0 = 0``) the update is zero, never ``0/0``. The paper has
    no ``eps`` (its ``b_0 > 0`` plays that role, inside the root); ``eps`` here is
    added outside it, as ``torch.optim.Adagrad`` does. Coordinate-wise AdaGrad is
    ``optax.adagrad``.

    Args:
      initial_accumulator_value: ``b_0^2``, >= 0.
      eps: added to ``b_t`` outside the square root, >= 0.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`ScaleByAdagradNormState`.

    Examples:
      A first gradient of norm 5 (the leaves are one vector for the norm) is
      divided by ``b_1 = sqrt(0 + 25)``; the second, by ``sqrt(25 + 25)``:

      >>> import jax.numpy as jnp, gdtx
      >>> tx = gdtx.scale_by_adagrad_norm()
      >>> grads = {"w": jnp.array([3.0]), "b": jnp.array([0.0, 4.0])}
      >>> state = tx.init(grads)
      >>> u1, state = tx.update(grads, state)
      >>> u2, state = tx.update(grads, state)
      >>> print(u1["w"], u1["b"], u2["w"].round(4), state.sum_of_squares)
      [0.6] [0.  0.8] [0.4243] 50.0

    References:
      Ward, Wu and Bottou, `AdaGrad Stepsizes: Sharp Convergence Over Nonconvex
      Landscapes <https://arxiv.org/abs/1806.01811>`_, ICML 2019 (Algorithm 1).
    """
    return _scale_by_adagrad_norm("gdtx.scale_by_adagrad_norm", initial_accumulator_value, eps)


def _scale_by_adagrad_norm(
    owner: str, initial_accumulator_value: Any, eps: Any
) -> optax.GradientTransformationExtraArgs:
    """:func:`scale_by_adagrad_norm` with ``owner`` (the public function called) in its messages."""
    validation.check_non_negative(owner, "initial_accumulator_value", initial_accumulator_value)
    validation.check_non_negative(owner, "eps", eps)

    def init_fn(params):
        validation.check_params(owner, params, allow_complex=True)
        dtype = _accumulator_dtype(params)
        return ScaleByAdagradNormState(
            count=jnp.zeros([], jnp.int32),
            sum_of_squares=jnp.asarray(initial_accumulator_value, dtype),
        )

    def update_fn(updates, state, params=None, **extra):
        del extra
        validation.check_state_type(owner, state, ScaleByAdagradNormState)
        # No params-shaped state to compare with: compare with the params when given,
        # so that a (1,) gradient is never broadcast onto a (4,) parameter.
        validation.check_like_params(owner, updates, params)
        dtype = state.sum_of_squares.dtype
        # ||g||^2 summed in at least float32 (a bfloat16 sum would stall b_t early).
        wide = jax.tree.map(
            lambda g: jnp.asarray(g).astype(dtypes.compute_dtype(g, dtype)), updates
        )
        total = state.sum_of_squares + optax.tree.norm(wide, squared=True).real.astype(dtype)
        # Guarded so that neither the value nor its derivative is 0/0 at b_t = 0.
        positive = total > 0
        b_t = jnp.where(positive, jnp.sqrt(jnp.where(positive, total, 1)), 0)
        denom = b_t + jnp.asarray(eps, dtype)
        scale = jnp.where(denom > 0, 1 / jnp.where(denom > 0, denom, 1), 0)
        new_updates = jax.tree.map(
            lambda g, w: (w * scale).astype(jnp.result_type(g)), updates, wide
        )
        count = optax.safe_increment(state.count)
        return new_updates, ScaleByAdagradNormState(count=count, sum_of_squares=total)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def adagrad_norm(
    learning_rate: optax.ScalarOrSchedule,
    initial_accumulator_value: jax.typing.ArrayLike = 0.0,
    eps: jax.typing.ArrayLike = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """AdaGrad-Norm: gradient descent with one AdaGrad step size for all parameters.

    ``p_t = p_{t-1} - \\eta_t g_t / (b_t + \\epsilon)`` with
    ``b_t^2 = b_{t-1}^2 + \\|g_t\\|^2`` (see :func:`scale_by_adagrad_norm`). Its
    convergence needs no tuning of ``\\eta`` to the smoothness constant: a too
    large ``\\eta`` is corrected by the growing ``b_t``.

    Args:
      learning_rate: ``eta``, a float or an optax schedule.
      initial_accumulator_value: ``b_0^2``, >= 0.
      eps: added to ``b_t`` outside the square root, >= 0.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Examples:
      One step size for every coordinate, ``lr / sqrt(b0^2 + sum_t ||g_t||^2)``:
      the update is the gradient scaled by the same factor everywhere, and
      with a constant gradient of norm 5 the factor is ``1 / (5 sqrt(t))``:

      >>> import jax.numpy as jnp, gdtx
      >>> tx = gdtx.adagrad_norm(learning_rate=1.0)
      >>> grads = jnp.array([3.0, 4.0])
      >>> state = tx.init(grads)
      >>> for t in range(1, 5):
      ...     updates, state = tx.update(grads, state)
      ...     print(t, (updates / grads).round(4))
      1 [-0.2 -0.2]
      2 [-0.1414 -0.1414]
      3 [-0.1155 -0.1155]
      4 [-0.1 -0.1]

    References:
      Ward, Wu and Bottou, `AdaGrad Stepsizes: Sharp Convergence Over Nonconvex
      Landscapes <https://arxiv.org/abs/1806.01811>`_, ICML 2019.
    """
    owner = "gdtx.adagrad_norm"
    validation.check_non_negative(owner, "learning_rate", learning_rate, schedule=True)
    validation.check_non_negative(owner, "initial_accumulator_value", initial_accumulator_value)
    validation.check_non_negative(owner, "eps", eps)
    direction = _scale_by_adagrad_norm(owner, initial_accumulator_value, eps)
    chained = extra_args.chain(direction, optax.scale_by_learning_rate(learning_rate))
    return validation.checking_params(chained, owner, allow_complex=True)
