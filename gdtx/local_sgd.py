"""Local SGD with periodic averaging: momentum federated learning (MFL) and DiLoCo.

Every device runs its own optimizer steps on its own data; every ``every``
steps the devices average over the mesh axis, either the parameters and the
optimizer state (MFL, :func:`periodic_average` without ``outer``), or through
an outer optimizer on the averaged pseudo-gradient (DiLoCo, ``outer=`` or
:func:`diloco`). Between two synchronisations the parameters differ from
device to device: they are **per-device parameters**.

How per-device parameters are carried. Outside ``jax.shard_map`` every
parameter leaf has a leading device axis of length ``N`` placed
``P(axis)``; inside, each device sees a leading axis of length one, drops it
on entry (``x[0]``) and adds it back on exit (``x[None]``).
:func:`gdtx.data_parallel_step` does this by itself for any transformation
whose state declares ``per_device_params = True`` on one of its NamedTuple
classes (the state of :func:`periodic_average` with ``every > 1`` does): its
``step`` accepts the replicated initial parameters on the first call and
returns per-device ones (leading axis ``N``) from then on. "The" model is
any row after a synchronising step (all rows are then equal up to one
rounding of ``theta + (mean - theta)``), or :func:`average_params`, the mean
over the device axis, at any step. With ``every == 1`` every step
synchronises, the parameters stay replicated and the state declares no
per-device parameters.

``init`` is called on the replicated initial parameters (the DiLoCo anchor
and the outer optimizer's state are replicated, ``P()``); the inner
optimizer's state is per-device state (``per_device_fields = ("inner",)``,
see :func:`gdtx.per_device_specs`).

Bytes: on a synchronising step each device all-reduces its float32 (or
parameter-dtype) parameters, plus, with ``average_state``, the float leaves
of the inner state; off-sync steps run no collective (the exchange sits in
the true branch of a ``lax.cond`` on the replicated step count). The
exchange is declared with :func:`gdtx.distributed.record_exchange` per
synchronisation, so ``bytes_sent`` in the metrics of
:func:`gdtx.data_parallel_step` is the bytes of a synchronising step; the
amortised bytes per step are ``bytes_sent / every``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gdtx._core import validation
from gdtx._core.collectives import (
    as_per_device,
    axis_names,
    bound_axis_size,
    check_axis_name,
    check_per_device,
    in_shard_map,
    local_view,
)
from gdtx.distributed import record_exchange

_OWNER = "gdtx.periodic_average"


class PeriodicAverageState(NamedTuple):
    """State of :func:`periodic_average` (parameters synchronised every step).

    Attributes:
      count: inner steps taken (replicated int32).
      inner: the inner optimizer's state, per device (leading device axis).
      anchor: the outer (global) parameters of DiLoCo, replicated, or
        ``optax.EmptyState()`` without ``outer``.
      outer: the outer optimizer's state (replicated), or ``optax.EmptyState()``.
    """

    count: jax.Array
    inner: Any
    anchor: Any
    outer: Any

    per_device_fields = ("inner",)
    per_device_params = False


class LocalPeriodicAverageState(PeriodicAverageState):
    """:class:`PeriodicAverageState` with ``every > 1``: the parameters are per device.

    ``per_device_params = True`` tells :func:`gdtx.data_parallel_step` to carry
    the parameters with a leading device axis (``P(axis)``).
    """

    __slots__ = ()
    per_device_params = True


def _is_transformation(tx: Any) -> bool:
    return callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))


def _check_transformation(owner: str, name: str, tx: Any, *, optional: bool = False) -> None:
    if tx is None and optional:
        return
    if not _is_transformation(tx):
        raise TypeError(
            f"{owner}: `{name}` must be an optax GradientTransformation (e.g. "
            f"optax.sgd(0.1, momentum=0.9)), got {tx!r} (a {type(tx).__name__})."
        )


def _is_float(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)


def _varying_like(x: Any, ref: Any, axis_name: Any) -> Any:
    """``x`` typed varying over the axes ``ref`` varies over (after a ``pmean``)."""
    if not hasattr(x, "dtype") or not in_shard_map(x, axis_name):
        return x
    want = getattr(jax.typeof(ref), "manual_axis_type", None)
    have = getattr(jax.typeof(x), "manual_axis_type", None)
    if want is None or have is None:
        return x
    missing = tuple(n for n in axis_names(axis_name) if n in want.varying and n not in have.varying)
    return jax.lax.pcast(x, missing, to="varying") if missing else x


def _pmean_floats(tree: Any, axis_name: Any) -> Any:
    def mean(x):
        if not _is_float(x):
            return x
        return _varying_like(jax.lax.pmean(x, axis_name), x, axis_name)

    return jax.tree.map(mean, tree)


def _declare(tree: Any, axis_name: Any, num_devices: int) -> None:
    for x in jax.tree.leaves(tree):
        if _is_float(x) and x.size:
            record_exchange(
                _OWNER, axis_name, "all-reduce", x.dtype, x.size * x.dtype.itemsize, num_devices
            )


def periodic_average(
    inner: optax.GradientTransformation,
    every: int,
    axis_name: str | Sequence[str],
    *,
    outer: optax.GradientTransformation | None = None,
    average_state: bool | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Local steps of ``inner`` on every device, averaged over ``axis_name`` every ``every`` steps.

    Device ``i`` holds its own parameters ``theta_i`` and inner state ``s_i``.
    At step ``t = 1, 2, ...`` it takes one local step on its own gradient:

    .. math::

      (u_i, s_i) \\leftarrow \\mathrm{inner}(g_i, s_i, \\theta_i), \\qquad
      \\theta_i' = \\theta_i + u_i .

    When ``t`` is a multiple of ``every`` the devices synchronise. Without
    ``outer`` (periodic averaging; MFL with ``inner = optax.sgd(eta,
    momentum=gamma)``): ``theta_i <- mean_j theta_j'`` and, with
    ``average_state``, every float leaf of ``s_i`` is averaged too (the
    momentum ``d_i <- mean_j d_j``, which MFL requires). With ``outer``
    (DiLoCo), from the replicated anchor ``theta_out``:

    .. math::

      \\Delta = \\theta_{out} - \\tfrac1N \\sum_j \\theta_j', \\qquad
      (v, r) \\leftarrow \\mathrm{outer}(\\Delta, r, \\theta_{out}), \\qquad
      \\theta_{out} \\leftarrow \\theta_{out} + v, \\qquad \\theta_i \\leftarrow \\theta_{out},

    and the inner states are kept (``average_state`` defaults to ``False``
    with ``outer``). With ``outer = optax.sgd(1.0)`` this is plain averaging.
    The returned update is ``u = theta_i(new) - theta_i``, per device; on
    ``every == 1`` it is the same on every device.

    Per-device parameters are carried as described in :mod:`gdtx.local_sgd`
    (leading device axis ``N`` outside ``shard_map``; done by
    :func:`gdtx.data_parallel_step`). ``update`` must run per device inside
    ``jax.shard_map`` (or ``jax.vmap``) binding ``axis_name``, on each device's
    own gradient, with ``params`` given. The exchange runs in a ``lax.cond`` on
    the replicated count: off-sync steps communicate nothing; a sync step
    all-reduces the parameters (and the averaged state), declared per sync.

    Args:
      inner: the local optimizer (an optax ``GradientTransformation``,
        returning updates to add to the params, e.g. ``optax.sgd``).
      every: synchronise every ``every`` steps (``tau`` of MFL, ``H`` of
        DiLoCo), an integer >= 1.
      axis_name: the mesh axis (or tuple of axes) the devices average over.
      outer: the outer optimizer of DiLoCo, applied to the pseudo-gradient
        ``Delta`` on a sync (e.g. ``optax.sgd(0.7, momentum=0.9,
        nesterov=True)``), or ``None`` for periodic averaging.
      average_state: average the inner state's float leaves on a sync;
        ``None`` means ``True`` without ``outer`` and ``False`` with it.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is a
      :class:`PeriodicAverageState` (:class:`LocalPeriodicAverageState`, with
      per-device parameters, when ``every > 1``). Extra arguments are passed
      to ``inner``.

    Raises:
      TypeError: when ``inner`` or ``outer`` is not a GradientTransformation,
        ``every`` is not an integer, ``axis_name`` is not a name, or
        ``average_state`` is not a bool.
      ValueError: when ``every < 1``; at ``update``, when ``axis_name`` is not
        bound or ``params`` is missing.

    Examples:
      ``every=1`` is synchronous SGD on the mean gradient (two devices under
      ``jax.vmap``, gradients 1 and 3 on a zero parameter):

      >>> import jax, jax.numpy as jnp, optax
      >>> from gdtx.local_sgd import periodic_average
      >>> tx = periodic_average(optax.sgd(0.5), 1, "data")
      >>> def step(g, p):
      ...     u, _ = tx.update(g, tx.init(p), p)
      ...     return p + u
      >>> print(jax.vmap(step, axis_name="data")(jnp.array([1.0, 3.0]), jnp.zeros(2)))
      [-1. -1.]

    References:
      Liu et al., `Accelerating Federated Learning via Momentum Gradient
      Descent <https://arxiv.org/abs/1910.03197>`_, IEEE TPDS 2020 (MFL; no
      official code); Douillard et al., `DiLoCo: Distributed Low-Communication
      Training of Language Models <https://arxiv.org/abs/2311.08105>`_, 2023;
      maxtext's DiLoCo (``src/maxtext/trainers/diloco/diloco.py``,
      https://github.com/AI-Hypercomputer/maxtext).
    """
    return _periodic_average(_OWNER, inner, every, axis_name, outer, average_state)


def _periodic_average(owner, inner, every, axis_name, outer, average_state):
    """:func:`periodic_average` whose errors name ``owner`` (the function the user called)."""
    _check_transformation(owner, "inner", inner)
    _check_transformation(owner, "outer", outer, optional=True)
    every = validation.check_static_integer(owner, "every", every, 1)
    check_axis_name(owner, axis_name)
    if average_state is None:
        average_state = outer is None
    validation.check_flags(owner, average_state=average_state)
    state_type = PeriodicAverageState if every == 1 else LocalPeriodicAverageState

    def init_fn(params):
        inner_state = jax.tree.map(
            lambda x: as_per_device(jnp.asarray(x), axis_name, init=True), inner.init(params)
        )
        if outer is None:
            anchor, outer_state = optax.EmptyState(), optax.EmptyState()
        else:
            # a copy: params and state may both be donated to the step
            anchor = jax.tree.map(lambda x: jnp.array(x, copy=True), params)
            outer_state = outer.init(params)
        return state_type(
            count=jnp.zeros([], jnp.int32), inner=inner_state, anchor=anchor, outer=outer_state
        )

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError(
                f"{owner}: `update` needs `params` (each device's own parameters): call "
                "tx.update(grads, state, params)."
            )
        validation.check_state_type(owner, state, PeriodicAverageState)
        num_devices = bound_axis_size(owner, axis_name)
        check_per_device(owner, updates, axis_name)
        # The inner step runs on the stored (1, ...) layout of its state, under a
        # vmap of length one: on the local view (x[0]) its new moments would be
        # reshaped back on the way out, and XLA would recompute them inside the
        # parameter loop, which then reads the donated old state after its
        # in-place update and forces a full copy of each moment.
        jax.tree.map(lambda x: local_view(owner, x, "inner state"), state.inner)
        step_updates, inner_new = jax.vmap(
            lambda s: inner.update(updates, s, params, **extra_args), axis_size=1
        )(state.inner)
        theta = optax.apply_updates(params, jax.tree.map(lambda u: u[0], step_updates))
        count = optax.safe_increment(state.count)

        def sync(theta, inner_new, anchor, outer_state):
            mean = jax.tree.map(lambda x: jax.lax.pmean(x, axis_name), theta)
            if outer is None:
                new_theta = mean
            else:
                delta = jax.tree.map(lambda a, m: a - m, anchor, mean)
                outer_updates, outer_state = outer.update(delta, outer_state, anchor)
                anchor = optax.apply_updates(anchor, outer_updates)
                new_theta = anchor
            new_theta = jax.tree.map(lambda x, ref: x.astype(ref.dtype), new_theta, theta)
            if every > 1:
                # both branches of the cond must type alike: the skipped one is varying
                new_theta = jax.tree.map(
                    lambda x, ref: _varying_like(x, ref, axis_name), new_theta, theta
                )
            if average_state:
                inner_new = _pmean_floats(inner_new, axis_name)
            return new_theta, inner_new, anchor, outer_state

        # Declared once per sync at trace time (the branch below is traced once).
        _declare(theta, axis_name, num_devices)
        if average_state:
            _declare(inner_new, axis_name, num_devices)
        operands = (theta, inner_new, state.anchor, state.outer)
        if every == 1:
            new_theta, inner_new, anchor, outer_state = sync(*operands)
        else:
            new_theta, inner_new, anchor, outer_state = jax.lax.cond(
                count % every == 0, sync, lambda *xs: xs, *operands
            )
        out = jax.tree.map(lambda n, p: (n - p).astype(p.dtype), new_theta, params)
        new_state = state_type(count=count, inner=inner_new, anchor=anchor, outer=outer_state)
        return out, new_state

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return validation.checking_params(tx, owner, allow_complex=False)


def diloco(
    inner: optax.GradientTransformation,
    *,
    axis_name: str | Sequence[str],
    every: int = 500,
    outer_learning_rate: float = 0.7,
    outer_momentum: float = 0.9,
    nesterov: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """DiLoCo with the paper's outer optimizer: ``periodic_average(inner, every, outer=sgd)``.

    Every ``every`` (``H``) inner steps the pseudo-gradient
    ``Delta = theta_out - mean_i theta_i`` goes through Nesterov SGD:

    .. math::

      r \\leftarrow \\Delta + \\mu r, \\qquad
      \\theta_{out} \\leftarrow \\theta_{out} - \\eta_{out} (\\Delta + \\mu r)

    (``theta_out - eta_out r`` without ``nesterov``), and every device restarts
    from ``theta_out`` keeping its inner state. Defaults are the paper's
    (``H = 500``, ``eta_out = 0.7``, ``mu = 0.9``); maxtext's config uses 36,
    0.3 and 0.9.

    Args:
      inner: the inner optimizer (AdamW in the paper).
      axis_name: the mesh axis (or tuple of axes) of the replicas.
      every: inner steps per outer step ``H`` (integer >= 1).
      outer_learning_rate: ``eta_out`` (> 0).
      outer_momentum: ``mu`` in ``[0, 1)``; ``0`` is plain outer SGD.
      nesterov: Nesterov momentum for the outer step.

    Returns:
      ``periodic_average(inner, every, axis_name, outer=optax.sgd(...))``.

    Examples:
      One device, ``H = 1``, outer SGD at rate 1 without momentum: the inner
      optimizer alone.

      >>> import jax, jax.numpy as jnp, optax
      >>> from gdtx.local_sgd import diloco
      >>> tx = diloco(optax.sgd(0.1), axis_name="d", every=1, outer_learning_rate=1.0,
      ...             outer_momentum=0.0)
      >>> def step(g, p):
      ...     u, _ = tx.update(g, tx.init(p), p)
      ...     return p + u
      >>> print(jax.vmap(step, axis_name="d")(jnp.array([2.0]), jnp.array([1.0])))
      [0.8]

    References:
      Douillard et al., `DiLoCo: Distributed Low-Communication Training of
      Language Models <https://arxiv.org/abs/2311.08105>`_, 2023; maxtext
      ``src/maxtext/trainers/diloco/diloco.py``.
    """
    owner = "gdtx.diloco"
    _check_transformation(owner, "inner", inner)
    validation.check_positive(owner, "outer_learning_rate", outer_learning_rate)
    validation.check_decay(owner, "outer_momentum", outer_momentum)
    validation.check_flags(owner, nesterov=nesterov)
    validation.check_static_integer(owner, "every", every, 1)
    momentum = outer_momentum if validation.concrete_value(outer_momentum) != 0.0 else None
    outer = optax.sgd(outer_learning_rate, momentum=momentum, nesterov=nesterov)
    return _periodic_average(owner, inner, every, axis_name, outer, None)


def average_params(params: Any) -> Any:
    """ "The" model from per-device parameters: the mean over the leading device axis.

    Args:
      params: per-device parameters (every leaf with a leading device axis),
        as :func:`gdtx.data_parallel_step` returns them for a transformation
        with per-device parameters.

    Returns:
      The parameters averaged over the devices (the synchronised model right
      after a synchronising step).

    Examples:
      >>> import jax.numpy as jnp
      >>> print(average_params({"w": jnp.array([[1.0, 2.0], [3.0, 4.0]])})["w"])
      [2. 3.]

    References:
      The model of local SGD is the average of the workers' models: Stich,
      `Local SGD Converges Fast and Communicates Little
      <https://arxiv.org/abs/1805.09767>`_, ICLR 2019.
    """
    return jax.tree.map(lambda x: jnp.mean(x, axis=0).astype(x.dtype), params)


__all__ = [
    "LocalPeriodicAverageState",
    "PeriodicAverageState",
    "average_params",
    "diloco",
    "periodic_average",
]
