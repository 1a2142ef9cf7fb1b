"""Sign methods: signSGD, Signum and Signum with a majority vote across devices.

The family's contract. The descent direction is the elementwise sign of the
gradient ``g`` (signSGD) or of its exponential moving average (Signum),

.. math::

  m_t = \\beta m_{t-1} + (1 - \\beta) g_t, \\qquad u_t = \\operatorname{sign}(m_t),

with ``sign(0) = 0``: a coordinate whose gradient (or momentum) is exactly zero
does not move. The step is ``p <- p - lr * u_t`` (plus weight decay), so every
coordinate moves by exactly ``lr`` or not at all. The conventions are those of
``pytorch-optimizer`` 4.1.0's ``SignSGD`` (checked against recorded trajectories
in ``tests/reference``), which ``optax.sign_sgd`` and ``optax.signum`` share:

- the momentum is an EMA (``lerp`` there), not heavy-ball ``m = b m + g``; both
  give the same signs, so only the stored ``mu`` differs by the factor ``1 - b``;
- no bias correction (it would not change a sign);
- weight decay is decoupled by default, ``p <- p (1 - lr wd) - lr u``
  (``weight_decouple=True`` there); ``weight_decay_mode="l2"`` adds ``wd p`` to the
  gradient before the momentum (``weight_decouple=False``).

Complex parameters (``sign_sgd``, ``signum``, the ``scale_by_*``): ``sign(z) =
z / |z|`` (0 for 0), a unit step along each coordinate's (conjugated) gradient,
as ``jnp.sign`` in ``optax.sign_sgd`` and ``torch.sgn`` in the reference
``pytorch-optimizer`` ``SignSGD``; see :func:`scale_by_sign`. A state dtype knob
must then be complex (or None). :func:`signum_vote` refuses complex parameters
at ``init``: its wire carries the signs of real numbers.

With several devices, :func:`signum_vote` is the algorithm of Bernstein et al.
(2019): each worker keeps its own momentum, sends only its sign, and every
worker applies the sign of the sum of the signs (:func:`gdtx.majority_vote`,
in :mod:`gdtx.distributed`). The per-worker momentum differs from device to
device, so it is state *per device*: see :func:`signum_vote` for how it is laid
out under ``jax.shard_map``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gdtx._core import dtypes, moments, validation
from gdtx._core.collectives import as_per_device, check_axis_name, local_view
from gdtx._core.trees import unzip
from gdtx._core.weight_decay import chain_with_weight_decay
from gdtx.distributed import _WIRE_MODES, _vote

_SIGN_WEIGHT_DECAY_MODES = ("decoupled", "l2")


class ScaleBySignState(NamedTuple):
    """State of :func:`scale_by_sign`.

    Attributes:
      count: number of updates so far, shape ``()``, int32 (saturating). The sign
        needs no state; the count makes the state a non-empty tree, which Orbax
        can save (it refuses a bare ``optax.EmptyState()``: "Found empty item").
    """

    count: jax.Array


def scale_by_sign() -> optax.GradientTransformationExtraArgs:
    """Replaces each update by its sign, with ``sign(0) = 0``.

    .. math::

      u_t = \\operatorname{sign}(g_t) \\in \\{-1, 0, 1\\}.

    For a complex coordinate ``sign(g) = g / |g|`` (``jnp.sign``; 0 for 0): a
    unit step along the coordinate's (conjugated) gradient, as ``torch.sgn`` in
    the reference ``pytorch-optimizer`` ``SignSGD`` and ``jnp.sign`` in
    ``optax.scale_by_sign``. It is the steepest-descent direction for the norm
    ``max_i |z_i|`` (the modulus of each complex coordinate), as the real sign is
    for ``max_i |x_i|``; every complex coordinate moves by exactly the learning
    rate in modulus. (Taking the signs of the real and imaginary parts instead
    is signSGD on the real parameters ``(Re z, Im z)``: store them as two real
    leaves for that.)

    The state holds only a step count (:class:`ScaleBySignState`). Updates keep
    the gradients' dtype; with ``params`` given, ``update`` checks that the
    gradients have their shapes (a ``ValueError``, never a silent broadcast).
    ``init`` refuses integer parameters with a ``TypeError``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Examples:
      Every coordinate gets a unit step, whatever the gradient's scale; a zero
      gradient gives no step:

      >>> import jax.numpy as jnp, gdtx
      >>> tx = gdtx.scale_by_sign()
      >>> grads = jnp.array([1e-6, -3.0, 0.0, 250.0])
      >>> updates, _ = tx.update(grads, tx.init(grads))
      >>> print(updates)
      [ 1. -1.  0.  1.]

    References:
      Bernstein et al., `signSGD: Compressed Optimisation for Non-Convex Problems
      <https://arxiv.org/abs/1802.04434>`_, ICML 2018.
      Official code: https://github.com/jxbz/signSGD
    """
    owner = "gdtx.scale_by_sign"

    def init_fn(params):
        del params
        return ScaleBySignState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        validation.check_like_params(owner, updates, params)
        return jax.tree.map(jnp.sign, updates), ScaleBySignState(
            count=optax.safe_increment(state.count)
        )

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return validation.checking_params(tx, owner, allow_complex=True)


class ScaleBySignumState(NamedTuple):
    """State of :func:`scale_by_signum`.

    Attributes:
      count: number of updates so far, shape ``()``, int32 (saturating).
      mu: the momentum ``m`` (an EMA of the gradients), like the params, in ``mu_dtype``.
    """

    count: jax.Array
    mu: optax.Updates


def _signum_leaf(g, m_prev, beta):
    """One leaf of Signum: the new momentum and its sign (in the gradient's dtype)."""
    g = jnp.asarray(g)  # a Python-number leaf (a scalar parameter given as a float)
    cdt = dtypes.compute_dtype(g, m_prev)
    beta_ = jnp.asarray(beta, cdt)
    m = moments.ema(beta_, m_prev, g.astype(cdt), cdt)
    return jnp.sign(m).astype(g.dtype), m.astype(m_prev.dtype)


def scale_by_signum(
    beta: jax.typing.ArrayLike = 0.9, *, mu_dtype: Any | None = None
) -> optax.GradientTransformationExtraArgs:
    """Replaces each update by the sign of its exponential moving average (Signum).

    .. math::

      m_t = \\beta m_{t-1} + (1 - \\beta) g_t, \\quad m_0 = 0, \\qquad
      u_t = \\operatorname{sign}(m_t).

    No bias correction: it would rescale ``m_t`` by a positive number and leave
    the sign unchanged. ``beta = 0`` is signSGD (with a state that is not used).

    Args:
      beta: decay rate of the momentum, in [0, 1).
      mu_dtype: dtype of ``mu``; None keeps each parameter's dtype.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`ScaleBySignumState`.

    Examples:
      The direction is the sign of the momentum, not of the current gradient: a
      single opposite gradient does not flip it while the average still points
      the other way.

      >>> import jax.numpy as jnp, gdtx
      >>> tx = gdtx.scale_by_signum(beta=0.9)
      >>> state = tx.init(jnp.zeros(2))
      >>> u, state = tx.update(jnp.array([1.0, -1.0]), state)
      >>> print(u, state.mu)
      [ 1. -1.] [ 0.1 -0.1]
      >>> u, state = tx.update(jnp.array([-0.5, -1.0]), state)
      >>> print(u)
      [ 1. -1.]

    References:
      Bernstein et al., `signSGD: Compressed Optimisation for Non-Convex Problems
      <https://arxiv.org/abs/1802.04434>`_, ICML 2018 (Algorithm 2, Signum).
      Official code: https://github.com/jxbz/signSGD; reference implementation
      checked here: ``pytorch-optimizer`` 4.1.0 ``SignSGD(momentum=beta)``.
    """
    owner = "gdtx.scale_by_signum"
    validation.check_decay(owner, "beta", beta)
    validation.check_dtype(owner, "mu_dtype", mu_dtype)
    tx = _scale_by_signum(owner, beta, dtypes.canonical_dtype(mu_dtype))
    return validation.checking_params(tx, owner, allow_complex=True)


def _scale_by_signum(owner, beta, mu_dtype):
    """:func:`scale_by_signum` whose messages name ``owner`` (the alias the user called)."""

    def init_fn(params):
        dtypes.check_phase_dtype(owner, "mu_dtype", params, mu_dtype)
        return ScaleBySignumState(
            count=jnp.zeros([], jnp.int32), mu=dtypes.zeros_like_params(params, mu_dtype)
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        validation.check_like_state(owner, updates, state.mu)
        pairs = jax.tree.map(lambda g, m: _signum_leaf(g, m, beta), updates, state.mu)
        new_updates, mu = unzip(pairs, updates, 2)
        return new_updates, ScaleBySignumState(count=optax.safe_increment(state.count), mu=mu)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def sign_sgd(
    learning_rate: optax.ScalarOrSchedule,
    *,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    weight_decay_mode: str = "decoupled",
    mask: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    """signSGD: a step of exactly ``learning_rate`` against the sign of each coordinate.

    .. math::

      p_t = p_{t-1} (1 - \\eta_t \\lambda) - \\eta_t \\operatorname{sign}(g_t)

    with ``\\eta_t`` the learning rate and ``\\lambda`` the (decoupled) weight decay,
    as ``pytorch-optimizer``'s ``SignSGD(momentum=0)``; ``weight_decay_mode="l2"``
    uses ``sign(g_t + \\lambda p_{t-1})`` instead (``weight_decouple=False`` there).

    Args:
      learning_rate: a float or an optax schedule.
      weight_decay: decay strength (a float or a schedule), >= 0.
      weight_decay_mode: ``"decoupled"`` (the reference's default) or ``"l2"``.
      mask: which parameters decay: a tree of booleans like the params, or a
        callable returning one (as in ``optax.add_decayed_weights``).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Examples:
      Every coordinate moves by exactly the learning rate:

      >>> import jax, jax.numpy as jnp, optax, gdtx
      >>> def f(x): return jnp.sum(x**2) + 1e-3 * jnp.sum(x)
      >>> solver = gdtx.sign_sgd(learning_rate=0.25)
      >>> params = jnp.array([1.0, -2.0, 3.0])
      >>> state = solver.init(params)
      >>> for step in range(3):
      ...     updates, state = solver.update(jax.grad(f)(params), state, params)
      ...     params = optax.apply_updates(params, updates)
      ...     print(updates, f"objective {f(params):.4f}")
      [-0.25  0.25 -0.25] objective 11.1892
      [-0.25  0.25 -0.25] objective 8.7515
      [-0.25  0.25 -0.25] objective 6.6887

    References:
      Bernstein et al., `signSGD: Compressed Optimisation for Non-Convex Problems
      <https://arxiv.org/abs/1802.04434>`_, ICML 2018.
      Official code: https://github.com/jxbz/signSGD
    """
    owner = "gdtx.sign_sgd"
    validation.check_choice(owner, "weight_decay_mode", weight_decay_mode, _SIGN_WEIGHT_DECAY_MODES)
    return chain_with_weight_decay(
        scale_by_sign(),
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        weight_decay_mode=weight_decay_mode,
        mask=mask,
        owner=owner,
    )


def signum(
    learning_rate: optax.ScalarOrSchedule,
    beta: jax.typing.ArrayLike = 0.9,
    *,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    weight_decay_mode: str = "decoupled",
    mask: Any | None = None,
    mu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Signum: signSGD on an exponential moving average of the gradients.

    .. math::

      m_t = \\beta m_{t-1} + (1 - \\beta) g_t, \\qquad
      p_t = p_{t-1} (1 - \\eta_t \\lambda) - \\eta_t \\operatorname{sign}(m_t),

    as ``pytorch-optimizer``'s ``SignSGD(momentum=beta)`` (decoupled decay, its
    default); ``weight_decay_mode="l2"`` adds ``\\lambda p_{t-1}`` to ``g_t``
    before the momentum (``weight_decouple=False`` there).

    Args:
      learning_rate: a float or an optax schedule.
      beta: decay rate of the momentum, in [0, 1).
      weight_decay: decay strength (a float or a schedule), >= 0.
      weight_decay_mode: ``"decoupled"`` (the reference's default) or ``"l2"``.
      mask: which parameters decay: a tree of booleans like the params, or a
        callable returning one (as in ``optax.add_decayed_weights``).
      mu_dtype: dtype of the momentum; None keeps the parameters' dtype.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Examples:
      Every coordinate moves by exactly ``lr``, however small its gradient
      (here ``1e-3``), in the direction of the momentum's sign: after ten
      steady gradients one opposite spike of ``-3`` does not flip Signum's
      step, while signSGD (no momentum) follows the spike:

      >>> import jax.numpy as jnp, gdtx
      >>> def last_update(tx):
      ...     params = jnp.zeros(2)
      ...     state = tx.init(params)
      ...     for g in [jnp.array([1.0, 1e-3])] * 10 + [jnp.array([-3.0, 1e-3])]:
      ...         updates, state = tx.update(g, state, params)
      ...     return updates
      >>> print(last_update(gdtx.signum(0.1, beta=0.9)), last_update(gdtx.sign_sgd(0.1)))
      [-0.1 -0.1] [ 0.1 -0.1]

    References:
      Bernstein et al., `signSGD: Compressed Optimisation for Non-Convex Problems
      <https://arxiv.org/abs/1802.04434>`_, ICML 2018 (Algorithm 2).
      Official code: https://github.com/jxbz/signSGD; reference implementation
      checked here: ``pytorch-optimizer`` 4.1.0 ``SignSGD``.
    """
    owner = "gdtx.signum"
    validation.check_decay(owner, "beta", beta)
    validation.check_dtype(owner, "mu_dtype", mu_dtype)
    validation.check_choice(owner, "weight_decay_mode", weight_decay_mode, _SIGN_WEIGHT_DECAY_MODES)
    return chain_with_weight_decay(
        _scale_by_signum(owner, beta, dtypes.canonical_dtype(mu_dtype)),
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        weight_decay_mode=weight_decay_mode,
        mask=mask,
        owner=owner,
    )


class SignumVoteState(NamedTuple):
    """State of :func:`signum_vote`.

    Attributes:
      count: number of updates so far, shape ``()``, int32 (saturating); the same
        on every device.
      mu: this worker's momentum, per device: each leaf has a leading device
        dimension, of length one inside ``jax.shard_map`` (``N`` outside, sharded
        ``P(axis_name)``; :func:`gdtx.per_device_specs` builds the specs).
    """

    count: jax.Array
    mu: optax.Updates

    per_device_fields = ("mu",)


def _scale_by_signum_vote(owner, beta, axis_name, wire, mu_dtype):
    def init_fn(params):
        dtypes.check_phase_dtype(owner, "mu_dtype", params, mu_dtype)
        zeros = dtypes.zeros_like_params(params, mu_dtype)
        mu = jax.tree.map(lambda z: as_per_device(z, axis_name, init=True), zeros)
        return SignumVoteState(count=jnp.zeros([], jnp.int32), mu=mu)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        local_mu = jax.tree.map(lambda m: local_view(owner, m, "momentum"), state.mu)
        validation.check_like_state(owner, updates, local_mu)
        # The momentum is computed in the stored (1, ...) layout and the signs are
        # taken from that result: computed on the local view and reshaped, XLA
        # recomputes it inside the packing loop, which then reads the donated
        # `mu` after its in-place update and forces a full copy of it.
        pairs = jax.tree.map(
            lambda g, m: _signum_leaf(jnp.asarray(g)[None], m, beta), updates, state.mu
        )
        signs, mu = unzip(pairs, updates, 2)
        signs = jax.tree.map(lambda s: s[0], signs)
        voted = _vote(owner, signs, axis_name, wire)
        return voted, SignumVoteState(count=optax.safe_increment(state.count), mu=mu)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def signum_vote(
    learning_rate: optax.ScalarOrSchedule,
    beta: jax.typing.ArrayLike = 0.9,
    *,
    axis_name: str | tuple[str, ...],
    wire: str = "auto",
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | None = None,
    mu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Signum with majority vote: each worker votes with the sign of its own momentum.

    With ``N`` workers along ``axis_name``, worker ``k`` keeps its own momentum
    on its own gradients and every worker applies the voted sign:

    .. math::

      m^{(k)}_t = \\beta m^{(k)}_{t-1} + (1 - \\beta) g^{(k)}_t, \\qquad
      p_t = p_{t-1} (1 - \\eta_t \\lambda)
        - \\eta_t \\operatorname{sign}\\Big(\\sum_k \\operatorname{sign}(m^{(k)}_t)\\Big),

    so the parameters stay identical on every worker while only signs cross the
    wire (see :func:`gdtx.majority_vote` for the ``wire`` modes; a tie gives 0).
    With one worker it is :func:`signum` (with decoupled weight decay).

    The momentum differs from worker to worker, so it is **per-device state**:
    every leaf of ``state.mu`` has a leading device dimension, of length one as
    seen inside ``jax.shard_map`` and ``N`` outside, where it is sharded
    ``P(axis_name)``. Initialise the state inside the ``shard_map`` too and pass
    :func:`gdtx.per_device_specs` of it as in/out specs (the guide
    ``docs/guides/data_parallel.md`` shows the whole step). A state that reaches
    ``update`` with another leading length raises a ``ValueError``, and a
    momentum declared replicated (``P()``) fails shard_map's replication check:
    it is never silently replicated. A state made by ``init`` inside the
    ``shard_map`` is typed per-device (varying) from the start, so it can be the
    carry of a ``lax.scan`` over steps.

    Parameters must be real (a ``TypeError`` at ``init`` for a complex or integer
    leaf); run where ``axis_name`` is not bound, ``update`` raises a
    ``ValueError`` naming the axis and the fix.

    Args:
      learning_rate: a float or an optax schedule.
      beta: decay rate of each worker's momentum, in [0, 1).
      axis_name: the mesh axis (or tuple of axes) of the workers.
      wire: how the signs travel: ``"auto"``, ``"packed"``, ``"bits"``, ``"int8"``,
        ``"int16"`` or ``"int32"`` (see :func:`gdtx.majority_vote`).
      weight_decay: decoupled decay strength (a float or a schedule), >= 0,
        applied after the vote: ``p <- p (1 - lr wd) - lr u``.
      mask: which parameters decay: a tree of booleans like the params, or a
        callable returning one (as in ``optax.add_decayed_weights``).
      mu_dtype: dtype of the momentum; None keeps the parameters' dtype.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update`` must run where
      ``axis_name`` is bound.

    Examples:
      Three workers under ``jax.vmap`` (any binding of the axis works). In the
      second step every worker's gradient is negative, so signSGD would vote
      down, but two of the three momenta are still positive and win the vote:

      >>> import jax, jax.numpy as jnp, gdtx
      >>> tx = gdtx.signum_vote(1.0, beta=0.5, axis_name="workers")
      >>> params = jnp.zeros(1)
      >>> state = jax.vmap(tx.init, in_axes=None, axis_size=3)(params)
      >>> step = jax.vmap(tx.update, in_axes=(0, 0, None), axis_name="workers")
      >>> updates, state = step(jnp.array([[1.0], [1.0], [-1.0]]), state, params)
      >>> print(-updates.ravel())
      [1. 1. 1.]
      >>> updates, state = step(jnp.array([[-0.2], [-0.2], [-1.0]]), state, params)
      >>> print(-updates.ravel(), state[0].mu.ravel())
      [1. 1. 1.] [ 0.15  0.15 -0.75]

    References:
      Bernstein et al., `signSGD with Majority Vote is Communication Efficient and
      Fault Tolerant <https://arxiv.org/abs/1810.05291>`_, ICLR 2019 (Algorithm 1).
      Official code: https://github.com/jxbz/signSGD
    """
    owner = "gdtx.signum_vote"
    check_axis_name(owner, axis_name)
    validation.check_decay(owner, "beta", beta)
    validation.check_dtype(owner, "mu_dtype", mu_dtype)
    validation.check_choice(owner, "wire", wire, _WIRE_MODES)
    direction = _scale_by_signum_vote(
        owner, beta, axis_name, wire, dtypes.canonical_dtype(mu_dtype)
    )
    return chain_with_weight_decay(
        direction,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        weight_decay_mode="decoupled",
        mask=mask,
        owner=owner,
        allow_complex=False,
    )
