"""Compression with memory: DIANA (uplink) and Artemis (uplink and downlink).

The family's contract. Each worker ``i`` of ``N`` on ``axis_name`` keeps a
*memory* ``h_i`` of its gradient and sends only the compressed **difference**
``C_up(g_i - h_i)``; the memory moves towards what was sent,
``h_i <- h_i + alpha * C_up(g_i - h_i)``. With constant (or slowly changing)
gradients the memories learn them and the differences, hence the compression
error, vanish: unlike :func:`gdtx.compressed_mean`, whose error stays
proportional to ``||g||``. DIANA stops there; Artemis compresses the averaged
estimate once more on the way down (a server broadcast), optionally with a
memory of its own and error feedback.

Each worker needs the mean of the memories, ``hbar = mean_i h_i``, to rebuild
the estimate ``ghat = hbar + mean_i C_up(g_i - h_i)``; it is carried as
**replicated** state and moved by ``alpha`` times the mean of the decoded
messages (which every worker already has), so the server's ``N`` copies of the
memories are never needed and nothing but the payloads crosses the wire.

The compressors are gdtx's (:func:`gdtx.qsgd`, :func:`gdtx.terngrad`,
:func:`gdtx.atomo`, :func:`gdtx.scaled_sign`, or any :class:`gdtx.Compressor`);
complex leaves are compressed as their real form (see :mod:`gdtx.compression`).
The memories ``h_i`` are **per-device state** (``per_device_fields``, a
leading device dimension of length one inside ``jax.shard_map``: carry them
with :func:`gdtx.per_device_specs`); ``hbar``, the downlink memory and residual,
the count and the key are replicated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdtx._core import dtypes, keys, validation
from gdtx._core.collectives import (
    as_per_device,
    axis_index,
    bound_axis_size,
    check_axis_name,
    check_per_device,
    local_view,
    sharded_like,
)
from gdtx._core.compressed_collectives import check_compressor, gather_mean
from gdtx.compression import QSGD, Compressor

_MEMORY_CONSTANT = 2.0  # the official alpha = 1 / (2 (omega + 1))


# --- the memory rate ------------------------------------------------------------------------


def variance_bound(compressor: Compressor, shape: tuple[int, ...], dtype: Any = jnp.float32):
    """The variance constant ``omega`` of ``compressor`` on one leaf, or None if unknown.

    ``E||C(x) - x||^2 <= omega ||x||^2`` for every ``x``. A compressor may define
    its own ``variance_bound(shape, dtype)`` method; otherwise it is known for
    :func:`gdtx.qsgd`: ``omega = min(b / s^2, sqrt(b) / s)`` with ``s`` levels and
    ``b`` the bucket size (the leaf's size without buckets; a complex leaf counts
    its real form, ``2 n`` entries). This is QSGD's Lemma 3.1 for the 2-norm; it
    also holds for the max-norm variant, whose scale ``||x||_inf <= ||x||_2``
    makes every coordinate's rounding variance ``(r/s)^2 p (1 - p) <=
    min(r^2 / (4 s^2), r |x_i| / s)`` smaller than the 2-norm bound.

    Args:
      compressor: a gdtx compressor.
      shape: the leaf's shape.
      dtype: the leaf's dtype (complex leaves are compressed as their real form).

    Returns:
      ``omega`` as a Python float, or None when the compressor does not state one.

    Examples:
      Four levels on buckets of 512 entries: ``min(512 / 16, sqrt(512) / 4)``;
      TernGrad states no bound:

      >>> import gdtx
      >>> print(round(gdtx.variance_bound(gdtx.qsgd(4, bucket_size=512), (1000,)), 4))
      5.6569
      >>> print(gdtx.variance_bound(gdtx.terngrad(), (10,)))
      None

    References:
      Alistarh et al., `QSGD: Communication-Efficient SGD via Gradient
      Quantization and Encoding <https://arxiv.org/abs/1610.02132>`_, NeurIPS
      2017, Lemma 3.1.
    """
    own = getattr(compressor, "variance_bound", None)
    if callable(own):
        return float(own(tuple(shape), dtype))
    if not isinstance(compressor, QSGD):
        return None
    n = math.prod(shape) * (2 if jnp.issubdtype(jnp.dtype(dtype), jnp.complexfloating) else 1)
    if n == 0:
        return 0.0
    b = n if compressor.bucket_size is None else min(compressor.bucket_size, n)
    s = compressor.num_levels
    return min(b / s**2, math.sqrt(b) / s)


def default_alpha(compressor: Compressor, shape: tuple[int, ...], dtype: Any = jnp.float32):
    """The official memory rate ``alpha = 1 / (2 (omega + 1))`` of one leaf (0 if omega = 0).

    Args:
      compressor: a compressor with a known :func:`variance_bound`.
      shape: the leaf's shape.
      dtype: the leaf's dtype.

    Returns:
      ``alpha`` as a Python float.

    Raises:
      ValueError: when the compressor states no ``omega``.

    Examples:
      >>> import gdtx
      >>> print(round(gdtx.default_alpha(gdtx.qsgd(4, bucket_size=512), (1000,)), 4))
      0.0751

    References:
      Philippenko & Dieuleveut, `Bidirectional compression in heterogeneous
      settings for distributed or federated learning with partial participation
      <https://arxiv.org/abs/2006.14591>`_, JMLR 2021; official code
      https://github.com/philipco/artemis-bidirectional-compression
      (``constant = 2``).
    """
    omega = variance_bound(compressor, shape, dtype)
    if omega is None:
        raise ValueError(
            f"{getattr(compressor, 'owner', 'the compressor')} states no variance bound omega, "
            "so the default memory rate 1/(2(omega+1)) is unknown: pass `alpha` explicitly."
        )
    return 0.0 if omega == 0 else 1.0 / (_MEMORY_CONSTANT * (omega + 1.0))


def _check_rate(owner, name, value):
    validation._check_range(
        owner,
        name,
        value,
        lambda x: (0 <= x) & (x <= 1),
        "in [0, 1]",
        schedule=False,
        optional=True,
    )


def _check_default_rate(owner, name, compressor, rate, compressor_arg):
    if rate is None and variance_bound(compressor, (1,)) is None:
        raise ValueError(
            f"{owner}: the default `{name}` = 1/(2(omega+1)) needs the variance bound omega "
            f"of `{compressor_arg}`, which {compressor!r} does not state (gdtx knows it for "
            f"gdtx.qsgd): pass `{name}` explicitly, a number in [0, 1]."
        )


def _rates(compressor, rate, tree):
    """Per-leaf rates: the given one, or each leaf's default from its shape."""
    if rate is not None:
        return jax.tree.map(lambda _: rate, tree)
    return jax.tree.map(lambda x: default_alpha(compressor, np.shape(x), x.dtype), tree)


# --- the transformation -------------------------------------------------------------------------


def _move(m, d, a):
    """The memory moved towards the message, ``m + a d``, stored in ``m``'s dtype."""
    return (m.astype(d.dtype) + a * d).astype(m.dtype)


def _plus_memory(d, m, moved, a):
    """``d + m`` (the estimate ``ghat``, the received ``Omega + H``), given ``moved = m + a d``.

    Where the moved memory is stored in ``d``'s dtype it is read from that:
    ``(m + a d) + (1 - a) d``. The memory is a donated buffer that the step
    overwrites in place, and an estimate read from the old ``m`` is read again by
    the loops that consume the update (the optimizer's), with no order against that
    write: XLA copied the memory every step. The two differ by rounding only (a
    few ulps of the larger of ``|m|`` and ``|d|``; equal for ``a`` = 0 or 1). A
    memory kept in a narrower dtype keeps ``d + m``: read back from its rounded new
    value the estimate would lose the memory's precision.
    """
    if moved.dtype == d.dtype:
        return moved + (1 - a) * d
    return d + m.astype(d.dtype)


class ArtemisState(NamedTuple):
    """State of :func:`artemis` and :func:`diana`.

    Attributes:
      count: number of updates so far, shape ``()``, int32 (saturating).
      key: the carried PRNG key (raw uint32, from ``seed`` at ``init``, split
        every step), the same on every device.
      h: this worker's uplink memory ``h_i``, in ``memory_dtype``. Per-device
        state: each leaf has a leading device dimension (length one inside
        ``jax.shard_map``, ``N`` outside, sharded ``P(axis_name)``).
      hbar: the mean of the workers' memories, replicated.
      down_memory: the downlink memory ``H`` (replicated), or ``optax.EmptyState()``
        when there is none.
      down_error: the downlink residual ``e`` (replicated), or
        ``optax.EmptyState()`` without downlink error feedback.
    """

    count: jax.Array
    key: jax.Array
    h: optax.Updates
    hbar: optax.Updates
    down_memory: Any
    down_error: Any

    per_device_fields = ("h",)


def _artemis(
    owner,
    compressor,
    down_compressor,
    *,
    axis_name,
    alpha,
    down_alpha,
    down_memory,
    down_error_feedback,
    ef_coef,
    non_degraded,
    seed,
    memory_dtype,
    key_impl,
):
    check_compressor(owner, compressor, Compressor)
    if down_compressor is not None:
        check_compressor(owner, down_compressor, Compressor)
    check_axis_name(owner, axis_name)
    keys.check_seed(owner, seed)
    keys.check_key_impl(owner, key_impl)
    _check_rate(owner, "alpha", alpha)
    _check_rate(owner, "down_alpha", down_alpha)
    validation.check_flags(
        owner,
        down_memory=down_memory,
        down_error_feedback=down_error_feedback,
        non_degraded=non_degraded,
    )
    validation.check_non_negative(owner, "ef_coef", ef_coef)
    validation.check_dtype(owner, "memory_dtype", memory_dtype)
    memory_dtype = dtypes.canonical_dtype(memory_dtype)
    _check_default_rate(owner, "alpha", compressor, alpha, "compressor")
    down = down_compressor is not None
    if not down and (down_memory or down_error_feedback or down_alpha is not None):
        raise ValueError(
            f"{owner}: `down_memory`, `down_error_feedback` and `down_alpha` configure the "
            "downlink compression: pass `down_compressor` too."
        )
    if down and down_memory:
        _check_default_rate(owner, "down_alpha", down_compressor, down_alpha, "down_compressor")
    use_memory = down and down_memory
    use_error = down and down_error_feedback

    def zeros(params):
        return dtypes.zeros_like_params(params, memory_dtype)

    def init_fn(params):
        dtypes.check_phase_dtype(owner, "memory_dtype", params, memory_dtype)
        h = jax.tree.map(lambda z: as_per_device(z, axis_name, init=True), zeros(params))
        return ArtemisState(
            count=jnp.zeros([], jnp.int32),
            key=jax.random.PRNGKey(seed),
            h=h,
            hbar=zeros(params),
            down_memory=zeros(params) if use_memory else optax.EmptyState(),
            down_error=zeros(params) if use_error else optax.EmptyState(),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        h = jax.tree.map(lambda x: local_view(owner, x, "memory"), state.h)
        validation.check_like_state(owner, updates, h)
        num_devices = bound_axis_size(owner, axis_name)
        check_per_device(owner, updates, axis_name)
        # As compressed_mean: split the carried key; worker i folds in its index i.
        carry, step = keys.next_keys(state.key, None)
        # On one device the index is the constant 0: the state then stays typed
        # replicated under shard_map (axis_index is varying even on a size-1 axis).
        index = 0 if num_devices == 1 else axis_index(axis_name)
        device_key = jax.random.fold_in(step, index)

        def difference(g, m):
            cdt = dtypes.compute_dtype(g, m)
            return g.astype(cdt) - m.astype(cdt)

        delta = jax.tree.map(difference, updates, h)
        payload = compressor.compress(keys.rounding_key(device_key, key_impl), delta)
        sent = jax.tree.map(sharded_like, compressor.decompress(payload), delta)
        mean_sent = gather_mean(compressor, payload, delta, axis_name, owner)
        rates = _rates(compressor, alpha, updates)
        # h moves as the stored per-device leaf (leading device dimension), the message
        # stacked to match, not as local_view's slice re-stacked by as_per_device: a
        # donated buffer is updated in place only through elementwise ops, and the
        # slice and the stacking (bitcasts in the fused loop) made XLA write the new h
        # to a temporary and copy it back every step.
        new_h = jax.tree.map(lambda m, d, a: _move(m, d[None], a), state.h, sent, rates)
        new_hbar = jax.tree.map(_move, state.hbar, mean_sent, rates)
        ghat = jax.tree.map(_plus_memory, mean_sent, state.hbar, new_hbar, rates)

        new_down_memory, new_down_error = state.down_memory, state.down_error
        if not down:
            out = ghat
        else:
            # The replicated key: one past the last device index, the same on every device.
            down_key = jax.random.fold_in(step, num_devices)
            value = ghat
            if use_memory:
                value = jax.tree.map(lambda v, m: v - m.astype(v.dtype), value, state.down_memory)
            if use_error:
                value = jax.tree.map(
                    lambda v, e: v + ef_coef * e.astype(v.dtype), value, state.down_error
                )
            omega = down_compressor.decompress(
                down_compressor.compress(keys.rounding_key(down_key, key_impl), value)
            )
            omega = jax.tree.map(lambda o, v: sharded_like(o.astype(v.dtype), v), omega, value)
            if use_error:
                new_down_error = jax.tree.map(
                    lambda v, o, e: (v - o).astype(e.dtype), value, omega, state.down_error
                )
            if use_memory:
                down_rates = _rates(down_compressor, down_alpha, updates)
                memory = state.down_memory
                new_down_memory = jax.tree.map(_move, memory, omega, down_rates)
                received = jax.tree.map(_plus_memory, omega, memory, new_down_memory, down_rates)
            else:
                received = omega
            out = ghat if non_degraded else received
        out = jax.tree.map(lambda o, g: o.astype(g.dtype), out, updates)
        new_state = ArtemisState(
            count=optax.safe_increment(state.count),
            key=carry,
            h=new_h,
            hbar=new_hbar,
            down_memory=new_down_memory,
            down_error=new_down_error,
        )
        return out, new_state

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return validation.checking_params(tx, owner, allow_complex=True)


def artemis(
    compressor: Compressor,
    *,
    axis_name: str | Sequence[str],
    alpha: float | None = None,
    down_compressor: Compressor | None = None,
    down_alpha: float | None = None,
    down_memory: bool = False,
    down_error_feedback: bool = False,
    ef_coef: float = 1.0,
    non_degraded: bool = False,
    seed: int = 0,
    memory_dtype: Any | None = None,
    key_impl: str = "threefry2x32",
) -> optax.GradientTransformationExtraArgs:
    """Artemis: compressed differences to a memory on the way up, compression on the way down.

    Worker ``i`` of ``N`` on ``axis_name``, with its gradient ``g_i``, its memory
    ``h_i`` (``h_i = 0`` at ``init``) and the replicated mean memory
    ``hbar = (1/N) sum_j h_j``, at step ``t``:

    .. math::

      \\hat\\Delta_i = C_{up}(g_i - h_i;\\, \\kappa_{t,i}), \\qquad
      \\hat g = \\bar h + \\frac{1}{N} \\sum_{j=1}^{N} \\hat\\Delta_j, \\qquad
      h_i \\leftarrow h_i + \\alpha \\hat\\Delta_i, \\quad
      \\bar h \\leftarrow \\bar h + \\frac{\\alpha}{N} \\sum_j \\hat\\Delta_j .

    Without ``down_compressor`` the update is ``ghat`` (this is :func:`diana`).
    With it, the server's broadcast is compressed too (``H = 0`` and ``e = 0``
    unless ``down_memory`` / ``down_error_feedback``):

    .. math::

      v = \\hat g - H + c\\, e, \\qquad \\Omega = C_{dwn}(v;\\, \\kappa_{t,*}), \\qquad
      e \\leftarrow v - \\Omega, \\qquad u = \\Omega + H, \\qquad
      H \\leftarrow H + \\alpha_{dwn} \\Omega,

    or ``u = ghat`` with ``non_degraded`` (Artemis-ND: the downlink is only
    simulated, the model moves by the uplink estimate). For unbiased compressors
    ``E[u] = (1/N) sum_i g_i`` over the keys, whatever the memories. The
    memories learn the gradients: with constant ``g_i`` and the default ``alpha``,
    ``E||h_i - g_i||^2`` contracts geometrically and the compression error of
    ``ghat`` vanishes (``compressed_mean``'s does not). ``alpha = 0`` is
    QSGD-style compression of the raw gradient (Bi-QSGD with a downlink).

    Keys, as :func:`gdtx.compressed_mean`: the state carries a key that is split
    every step into ``(c_{t+1}, s_t)``; worker ``i`` compresses with
    ``kappa_{t,i} = fold_in(s_t, i)`` and the downlink uses the **replicated**
    ``kappa_{t,*} = fold_in(s_t, N)`` (one past the last index), so every worker
    decodes the same ``Omega`` and the update is the same on every device (typed
    replicated: ``out_specs=P()`` type-checks under ``jax.shard_map``).

    Wire: only the uplink payloads cross it (an all-gather of
    ``compressor.payload_bits(g) / 8`` bytes per worker, declared with
    :func:`gdtx.distributed.record_exchange`). The downlink is computed by every
    worker from ``ghat``, which it already has: it models a server's broadcast of
    ``down_compressor.payload_bits(g) / 8`` bytes (see :func:`artemis_wire_bytes`)
    and is not an exchange in SPMD.

    Defaults (the official code, ``philipco/artemis-bidirectional-compression``):
    ``alpha = 1 / (2 (omega_up + 1))`` per leaf, with ``omega`` from
    :func:`variance_bound` (known for :func:`gdtx.qsgd`; other compressors need an
    explicit ``alpha``, a ``ValueError`` at construction otherwise); the paper's
    Artemis runs have **no** downlink memory (``down_memory=False``); with
    ``down_memory=True`` the default ``down_alpha`` is the same rule for
    ``down_compressor``.

    .. warning::
      The update is in **gradient units**: chain it before the optimizer,
      ``optax.chain(artemis(...), optax.sgd(lr, momentum=beta))`` (the official
      ``v = beta v + direction``, ``w -= gamma v``; the official code starts ``v``
      at the full gradient, optax at 0).

      Departures from the official code: the mean memory ``hbar`` is carried and
      moved by ``alpha`` times the mean decoded message instead of the server
      keeping ``N`` memories (equal in exact arithmetic; in floating point
      ``hbar`` and ``mean_i h_i`` may differ by rounding); no partial
      participation and no "smart" first-step initialisation ``h_i = g_i``; no
      uplink error feedback; the downlink error feedback coefficient is
      ``ef_coef`` (default 1, classic error feedback; the official code uses the
      step size ``gamma`` when a feedback flag is on: pass ``ef_coef=gamma`` to
      reproduce it); ``alpha`` is per leaf (the official deep-learning code, one
      rate per tensor; its convex code uses the whole vector's dimension).

    Args:
      compressor: the uplink compressor, a gdtx compressor (:func:`gdtx.qsgd`,
        :func:`gdtx.terngrad`, :func:`gdtx.atomo`, :func:`gdtx.scaled_sign`).
      axis_name: the bound mesh axis (or tuple of axes) of the workers.
      alpha: the uplink memory rate, a number in [0, 1]; None: the official
        ``1 / (2 (omega + 1))`` per leaf.
      down_compressor: the downlink compressor, or None for no downlink
        compression (DIANA).
      down_alpha: the downlink memory rate, in [0, 1]; None: the official rule
        for ``down_compressor``. Only with ``down_memory``.
      down_memory: whether the downlink compresses ``ghat - H`` with a memory ``H``.
      down_error_feedback: whether the downlink keeps the residual ``e = v - Omega``
        and adds ``ef_coef * e`` to the next ``v``.
      ef_coef: the coefficient ``c`` of the downlink residual, a number >= 0.
      non_degraded: Artemis-ND: return ``ghat`` instead of the decoded broadcast.
      seed: the seed of the base key, an integer >= 0.
      memory_dtype: dtype of the memories and the residual; None keeps each
        parameter's dtype.
      key_impl: the PRNG of the compressors' random rounding, ``"threefry2x32"``
        or ``"rbg"`` (see :func:`gdtx.compressed_mean`).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`ArtemisState`.

    Examples:
      Four workers under ``jax.vmap`` with constant gradients: after enough steps
      the memories hold the gradients and the estimate is the exact mean, although
      every message is quantised to one level:

      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from gdtx.diana import artemis
      >>> import gdtx
      >>> tx = artemis(gdtx.qsgd(1), axis_name="w", down_compressor=gdtx.qsgd(8),
      ...              non_degraded=True)
      >>> grads = jnp.array([[1.0, -2.0], [1.0, 0.0], [3.0, 1.0], [-1.0, -1.0]])
      >>> state = jax.vmap(tx.init, axis_name="w")(grads)
      >>> step = jax.jit(jax.vmap(tx.update, axis_name="w"))
      >>> for _ in range(200):
      ...     updates, state = step(grads, state)
      >>> print(np.round(updates[0], 6), bool((updates == updates[:1]).all()))
      [ 1.   -0.5] True

    References:
      Philippenko & Dieuleveut, `Bidirectional compression in heterogeneous
      settings for distributed or federated learning with partial participation:
      tight convergence guarantees <https://arxiv.org/abs/2006.14591>`_ (Artemis),
      JMLR 2021. Official code:
      https://github.com/philipco/artemis-bidirectional-compression (read at
      824261b7: ``src/machinery/GradientUpdateMethod.py``, ``LocalUpdate.py``).

      Mishchenko et al., `Distributed Learning with Compressed Gradient
      Differences <https://arxiv.org/abs/1901.09269>`_ (DIANA), 2019.
    """
    return _artemis(
        "gdtx.artemis",
        compressor,
        down_compressor,
        axis_name=axis_name,
        alpha=alpha,
        down_alpha=down_alpha,
        down_memory=down_memory,
        down_error_feedback=down_error_feedback,
        ef_coef=ef_coef,
        non_degraded=non_degraded,
        seed=seed,
        memory_dtype=memory_dtype,
        key_impl=key_impl,
    )


def diana(
    compressor: Compressor,
    *,
    axis_name: str | Sequence[str],
    alpha: float | None = None,
    seed: int = 0,
    memory_dtype: Any | None = None,
    key_impl: str = "threefry2x32",
) -> optax.GradientTransformationExtraArgs:
    """DIANA: each worker sends the compressed difference of its gradient to its memory.

    Worker ``i`` of ``N``, memory ``h_i`` (0 at ``init``), mean memory ``hbar``:

    .. math::

      \\hat\\Delta_i = C(g_i - h_i;\\, \\kappa_{t,i}), \\qquad
      u = \\bar h + \\frac{1}{N} \\sum_j \\hat\\Delta_j, \\qquad
      h_i \\leftarrow h_i + \\alpha \\hat\\Delta_i, \\quad
      \\bar h \\leftarrow \\bar h + \\frac{\\alpha}{N} \\sum_j \\hat\\Delta_j .

    This is :func:`artemis` without downlink compression: see it for the keys,
    the wire, the defaults (``alpha = 1 / (2 (omega + 1))`` per leaf, the
    official code's rule; known for :func:`gdtx.qsgd`, an explicit ``alpha``
    otherwise) and the departures from the official code. For an unbiased
    compressor ``E[u] = mean_i g_i``; with constant gradients the memories
    converge to them and ``u`` becomes the exact mean. ``alpha = 0`` is
    :func:`gdtx.compressed_mean` (no memory).

    .. warning::
      The update is in **gradient units**: chain it before the optimizer. The
      official ``DianaUpdate`` differs from this only as :func:`artemis` does.

    Args:
      compressor: a gdtx compressor (:func:`gdtx.qsgd`, :func:`gdtx.terngrad`,
        :func:`gdtx.atomo`, :func:`gdtx.scaled_sign`).
      axis_name: the bound mesh axis (or tuple of axes) of the workers.
      alpha: the memory rate, a number in [0, 1]; None: ``1 / (2 (omega + 1))``
        per leaf.
      seed: the seed of the base key, an integer >= 0.
      memory_dtype: dtype of the memories; None keeps each parameter's dtype.
      key_impl: the PRNG of the compressors' random rounding, ``"threefry2x32"``
        or ``"rbg"`` (see :func:`gdtx.compressed_mean`).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`ArtemisState`.

    Examples:
      Four workers under ``jax.vmap``; with constant gradients the one-level
      QSGD messages of ``g_i - h_i`` shrink to zero and the mean is exact:

      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from gdtx.diana import diana
      >>> import gdtx
      >>> tx = diana(gdtx.qsgd(1), axis_name="w")
      >>> grads = jnp.array([[1.0, -2.0], [1.0, 0.0], [3.0, 1.0], [-1.0, -1.0]])
      >>> state = jax.vmap(tx.init, axis_name="w")(grads)
      >>> step = jax.jit(jax.vmap(tx.update, axis_name="w"))
      >>> for _ in range(200):
      ...     updates, state = step(grads, state)
      >>> print(np.round(updates[0], 6), np.abs(state.h[:, 0] - grads).max() < 1e-5)
      [ 1.   -0.5] True

    References:
      Mishchenko, Gorbunov, Takáč & Richtárik, `Distributed Learning with
      Compressed Gradient Differences <https://arxiv.org/abs/1901.09269>`_, 2019.
      Official code (the ``DianaUpdate`` of Artemis' authors, as a special case):
      https://github.com/philipco/artemis-bidirectional-compression
    """
    return _artemis(
        "gdtx.diana",
        compressor,
        None,
        axis_name=axis_name,
        alpha=alpha,
        down_alpha=None,
        down_memory=False,
        down_error_feedback=False,
        ef_coef=1.0,
        non_degraded=False,
        seed=seed,
        memory_dtype=memory_dtype,
        key_impl=key_impl,
    )


def artemis_wire_bytes(
    compressor: Compressor,
    params: Any,
    num_devices: int,
    down_compressor: Compressor | None = None,
) -> dict[str, float]:
    """Bytes per step of :func:`artemis` / :func:`diana` for ``params`` on ``num_devices``.

    Args:
      compressor: the uplink compressor.
      params: the parameters (arrays, ``jax.ShapeDtypeStruct`` or shape tuples).
      num_devices: ``N``, the workers on the axis.
      down_compressor: the downlink compressor, or None.

    Returns:
      A dict: ``up_sent`` (the all-gather operand of one worker, ``payload_bits / 8``),
      ``up_received`` (``(N - 1)`` times that, ring all-gather), and ``down_broadcast``
      (``down_compressor.payload_bits / 8``, what a server would broadcast; 0 without
      one; not an exchange in SPMD).

    Examples:
      The uplink is the compressor's payload, independent of ``N``; what each worker
      receives grows with ``N``. 1-level QSGD on 1000 float32 coordinates sends 256
      bytes (2 bits a coordinate plus one norm, packed) instead of 4000:

      >>> import jax.numpy as jnp, gdtx
      >>> from gdtx.compression import qsgd
      >>> params = {"w": jnp.zeros(1000)}
      >>> gdtx.artemis_wire_bytes(qsgd(1), params, num_devices=8)
      {'up_sent': 256.0, 'up_received': 1792.0, 'down_broadcast': 0.0}

    References:
      Philippenko & Dieuleveut, `Bidirectional compression in heterogeneous
      settings for distributed or federated learning with partial participation:
      tight convergence guarantees <https://arxiv.org/abs/2006.14591>`_, JMLR 2021
      (the bits per round of Artemis' Table 1). Official code:
      https://github.com/philipco/artemis-bidirectional-compression
    """
    up = compressor.payload_bits(params) / 8
    down = 0.0 if down_compressor is None else down_compressor.payload_bits(params) / 8
    return {"up_sent": up, "up_received": (num_devices - 1) * up, "down_broadcast": down}


__all__ = [
    "ArtemisState",
    "artemis",
    "artemis_wire_bytes",
    "default_alpha",
    "diana",
    "variance_bound",
]
