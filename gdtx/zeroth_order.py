"""Zeroth-order data parallelism with shared randomness: "Just One Byte" (SPSA over seeds).

The family's contract. Each of the ``N`` devices on ``axis_name`` evaluates its
own loss twice per perturbation, ``L_i(theta + eps z)`` and ``L_i(theta - eps z)``,
and reduces the pair to one scalar, the projected gradient
``p = (L_i(theta + eps z) - L_i(theta - eps z)) / (2 eps)``. The perturbations
``z`` are drawn from keys that **every** device can rebuild (the step, the
device and the sample index fold into one base key), so only the scalars cross
the wire: ``N x K`` of them per step (``K = num_samples``), whatever the size of
the model. Every device then regenerates every ``z`` and applies the same update;
there is no backward pass.

The update is in **gradient units** (an estimate of the mean gradient), to be
chained before the optimizer (MeZO's convention with ``optax.sgd(lr)``), and it
is replicated: ``out_specs=P()`` type-checks under ``jax.shard_map``. The loss is
the declared extra argument ``value_fn`` (``value_fn(params)`` is this device's
loss on its own batch); :func:`gdtx.data_parallel_step` supplies it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdtx._core import dtypes, extra_args, validation
from gdtx._core.collectives import (
    all_gather_replicated,
    axis_index,
    bound_axis_size,
    check_axis_name,
    sharded_like,
)
from gdtx.distributed import record_exchange

_OWNER = "gdtx.shared_seed_spsa"

# wire -> (dtype on the wire, exact?)
WIRES = ("f32", "bf16", "log_official", "log8", "log8_stochastic")
_WIRE_DTYPES = {
    "f32": jnp.float32,
    "bf16": jnp.bfloat16,
    "log_official": jnp.int16,
    "log8": jnp.int8,
    "log8_stochastic": jnp.int8,
}
# The log codes: |p| -> exp(c / steps) with c in [-top, top]; 0 encodes p = 0 and the
# dtype's minimum encodes NaN (so a diverging loss stays visible after decoding).
_LOG = {"log_official": (16, 127, 128), "log8": (8, 63, 64), "log8_stochastic": (8, 63, 64)}


# --- the codes ----------------------------------------------------------------------------------


def _encode(p: jax.Array, wire: str, key: jax.Array | None = None) -> jax.Array:
    """Projected gradients ``p`` as they are sent on ``wire`` (see :func:`shared_seed_spsa`).

    - ``"f32"``, ``"bf16"``: a cast (round to nearest).
    - ``"log_official"``: the code of justonebyte's ``app.py``:
      ``c = clip(round(16 ln|p|), -127, 127)``, sent as the int16
      ``sign(p) (c + 128)``; decodes to ``sign(p) e^{c/16}``.
    - ``"log8"``: one byte, ``q = sign(p) (c + 64)`` with
      ``c = clip(round(8 ln|p|), -63, 63)``; decodes to ``sign(p) e^{c/8}``.
    - ``"log8_stochastic"``: the same levels ``l_c = e^{c/8}`` (and ``l_{-64} = 0``),
      but ``|p|`` between ``l_c`` and ``l_{c+1}`` goes up with probability
      ``(|p| - l_c) / (l_{c+1} - l_c)``, so ``E[decode(q)] = p`` for
      ``|p| <= e^{63/8}`` (larger values saturate).

    In the log codes ``q = 0`` iff ``p = 0`` and the dtype's minimum means NaN.

    Args:
      p: the projected gradients (any shape, real).
      wire: one of :data:`WIRES`.
      key: the rounding key, needed by ``"log8_stochastic"`` only.

    Returns:
      The codes, in the wire's dtype (float32, bfloat16, int16 or int8).

    Examples:
      The one-byte code keeps the sign and the magnitude within ``e^{1/16} - 1``:

      >>> import jax.numpy as jnp
      >>> from gdtx.zeroth_order import _decode as decode, _encode as encode
      >>> p = jnp.array([-3.0, 0.0, 0.02, 700.0])
      >>> q = encode(p, "log8")
      >>> print(q.dtype, q)
      int8 [-73   0  33 116]
      >>> p_hat = decode(q, "log8")
      >>> print(p_hat[1], bool(jnp.all(jnp.abs(p_hat[p != 0] / p[p != 0] - 1) < 0.065)))
      0.0 True

    References:
      Zelikman et al., `Just One Byte (per gradient)
      <https://arxiv.org/abs/2306.10015>`_, 2023; official code
      https://github.com/ezelikman/justonebyte (``app.py``, ``one_byte``; read at 19ba089).
    """
    owner = _OWNER
    validation.check_choice(owner, "wire", wire, WIRES)
    dtype = _WIRE_DTYPES[wire]
    if wire not in _LOG:
        return p.astype(dtype)
    steps, top, offset = _LOG[wire]
    cdt = dtypes.compute_dtype(p)
    p = p.astype(cdt)
    magnitude = jnp.abs(p)
    log = steps * jnp.log(magnitude)  # -inf at p = 0
    if wire == "log8_stochastic":
        if key is None:
            raise TypeError(f"{owner}: wire='log8_stochastic' rounds at random: pass `key`.")
        level = jnp.clip(jnp.floor(log), -top - 1, top - 1)  # -top - 1 stands for the level 0
        low = jnp.where(level < -top, 0.0, jnp.exp(level / steps)).astype(cdt)
        high = jnp.exp((level + 1) / steps).astype(cdt)
        up = jax.random.uniform(key, p.shape, cdt) * (high - low) < magnitude - low
        c = jnp.minimum(level + up.astype(cdt), top)
        m = c + offset  # 0 for the level 0
    else:
        c = jnp.clip(jnp.round(log), -top, top)
        m = jnp.where(magnitude == 0, 0, c + offset)
    q = jnp.sign(p) * m
    q = jnp.where(jnp.isnan(p), np.iinfo(np.dtype(dtype)).min, q)
    return q.astype(dtype)


def _decode(q: jax.Array, wire: str, dtype: Any = jnp.float32) -> jax.Array:
    """The projected gradients that the codes ``q`` of ``_encode`` stand for.

    Args:
      q: codes from ``_encode`` with the same ``wire``.
      wire: one of :data:`WIRES`.
      dtype: the floating dtype of the result.

    Returns:
      The decoded values in ``dtype`` (NaN for the NaN code of the log wires).

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdtx.zeroth_order import _decode as decode
      >>> print(decode(jnp.array([-64, 0, 65, -128], jnp.int8), "log8"))
      [-1.         0.         1.1331484        nan]

    References:
      Zelikman et al., `Just One Byte (per gradient)
      <https://arxiv.org/abs/2306.10015>`_, 2023; official code
      https://github.com/ezelikman/justonebyte (``app.py``, ``one_byte``).
    """
    validation.check_choice(_OWNER, "wire", wire, WIRES)
    if wire not in _LOG:
        return q.astype(dtype)
    steps, _, offset = _LOG[wire]
    nan = q == np.iinfo(np.dtype(_WIRE_DTYPES[wire])).min
    qf = q.astype(dtype)
    value = jnp.sign(qf) * jnp.exp((jnp.abs(qf) - offset) / steps)
    value = jnp.where(q == 0, 0.0, value)
    return jnp.where(nan, jnp.nan, value).astype(dtype)


# --- the directions -----------------------------------------------------------------------------


def _direction(key: jax.Array, params: Any) -> Any:
    """One Gaussian direction ``z`` shaped like ``params``: leaf ``l`` from ``fold_in(key, l)``.

    Real leaves: ``N(0, 1)`` entries in the compute dtype (at least float32).
    Complex leaves: ``a + i b`` with ``a, b`` independent ``N(0, 1)`` (both drawn
    from the leaf's key as one ``(2, *shape)`` array), so ``E[p z]`` is the
    gradient in optax's complex convention (``dL/dRe + i dL/dIm``).
    """
    leaves, treedef = jax.tree.flatten(params)
    out = []
    for index, leaf in enumerate(leaves):
        leaf_key = jax.random.fold_in(key, index)
        cdt = dtypes.compute_dtype(leaf)
        if jnp.issubdtype(cdt, jnp.complexfloating):
            real = dtypes.real_dtype(cdt)
            ab = jax.random.normal(leaf_key, (2, *np.shape(leaf)), real)
            z = jax.lax.complex(ab[0], ab[1])
        else:
            z = jax.random.normal(leaf_key, np.shape(leaf), cdt)
        out.append(sharded_like(z, leaf))
    return jax.tree.unflatten(treedef, out)


def _shifted(params: Any, z: Any, step: Any) -> Any:
    """``params + step * z`` leafwise, computed in the compute dtype, back in each leaf's dtype."""

    def shift(p, d):
        return (p.astype(d.dtype) + step * d).astype(p.dtype)

    return jax.tree.map(shift, params, z)


# --- one step's pieces ---------------------------------------------------------------------------


def _check_spsa_options(owner, epsilon, num_samples, axis_name, seed, wire) -> int:
    """Validates :func:`shared_seed_spsa`'s options; returns the static ``num_samples``."""
    validation.check_positive(owner, "epsilon", epsilon)
    if not isinstance(epsilon, jax.core.Tracer) and np.ndim(epsilon) != 0:
        raise ValueError(f"{owner}: `epsilon` must be a scalar, got {epsilon!r}.")
    num_samples = validation.check_static_integer(owner, "num_samples", num_samples, 1)
    check_axis_name(owner, axis_name)
    validation.check_integer(owner, "seed", seed, 0)
    validation.check_choice(owner, "wire", wire, WIRES)
    return num_samples


def _check_value_fn_and_params(owner, value_fn, params) -> None:
    if not callable(value_fn):
        raise TypeError(
            f"{owner}: the extra argument `value_fn` must be a callable "
            f"value_fn(params) -> this device's loss, got {value_fn!r}."
        )
    if params is None:
        raise TypeError(
            f"{owner}: `update` needs `params` (the loss is evaluated around them): "
            "call update(updates, state, params, value_fn=...)."
        )


def _projections(owner, value_fn, params, device_key, epsilon, num_samples) -> jax.Array:
    """This device's ``K`` central differences ``p_k`` along ``z_k`` from ``fold_in(key, k)``."""

    def projected(k):
        z = _direction(jax.random.fold_in(device_key, k), params)
        plus = value_fn(_shifted(params, z, epsilon))
        minus = value_fn(_shifted(params, z, -epsilon))
        diff = jnp.asarray(plus) - jnp.asarray(minus)
        cdt = dtypes.compute_dtype(diff)
        return diff.astype(cdt) / (2 * jnp.asarray(epsilon, cdt))

    p = jax.lax.map(projected, jnp.arange(num_samples))
    if p.ndim != 1 or jnp.issubdtype(p.dtype, jnp.complexfloating):
        raise TypeError(
            f"{owner}: `value_fn` must return a real scalar loss, got shape "
            f"{p.shape[1:]} and dtype {p.dtype}."
        )
    return p


def _all_gather_codes(owner, axis_name, codes, num_samples, num_devices) -> jax.Array:
    """Every device's ``K`` codes, ``(N, K)`` and replicated, declared as an all-gather."""
    # bfloat16 travels as its bits: XLA on CPU widens a bf16 all-gather to f32.
    sent = codes
    if codes.dtype == jnp.bfloat16:
        sent = jax.lax.bitcast_convert_type(codes, jnp.uint16)
    record_exchange(
        owner,
        axis_name,
        "all-gather",
        sent.dtype,
        num_samples * sent.dtype.itemsize,
        num_devices,
    )
    if num_devices == 1:
        gathered = sent[None]  # nothing to exchange: keep the replicated type
    else:
        gathered = all_gather_replicated(sent, axis_name)  # (N, K), replicated
    if codes.dtype == jnp.bfloat16:
        gathered = jax.lax.bitcast_convert_type(gathered, jnp.bfloat16)
    return gathered


def _regenerated_mean(p_hat, step_key, params) -> Any:
    """``(1/(N K)) sum_{j,k} p_hat[j, k] z_{t,j,k}``, each ``z`` regenerated from its key.

    A ``fori_loop`` over the ``N K`` pairs holds one direction at a time, never
    ``N K`` copies of the model.
    """
    num_devices, num_samples = p_hat.shape
    leaves, treedef = jax.tree.flatten(params)
    acc0 = [sharded_like(jnp.zeros(np.shape(x), dtypes.compute_dtype(x)), x) for x in leaves]

    def regenerate(m, acc):
        j, k = m // num_samples, m % num_samples
        key = jax.random.fold_in(jax.random.fold_in(step_key, j), k)
        z = jax.tree.leaves(_direction(key, jax.tree.unflatten(treedef, leaves)))
        weight = p_hat[j, k]
        return [a + weight.astype(a.dtype) * d for a, d in zip(acc, z, strict=True)]

    total = num_devices * num_samples
    acc = jax.lax.fori_loop(0, total, regenerate, acc0)
    return jax.tree.unflatten(treedef, [a / total for a in acc])


class SharedSeedSPSAState(NamedTuple):
    """State of :func:`shared_seed_spsa`, the same on every device.

    Attributes:
      count: number of updates so far, shape ``()``, int32 (saturating): the step
        ``t`` folded into the keys.
      key: the base key ``PRNGKey(seed)`` (raw uint32), never split: every key of
        step ``t`` is derived from it and ``t``.
    """

    count: jax.Array
    key: jax.Array


def shared_seed_spsa(
    epsilon: float = 1e-3,
    num_samples: int = 1,
    *,
    axis_name: str | Sequence[str],
    seed: int = 0,
    wire: str = "f32",
) -> optax.GradientTransformationExtraArgs:
    """Shared-seed SPSA ("Just One Byte"): devices exchange scalars, never gradients.

    Device ``i`` of ``N`` on ``axis_name``, with its own loss ``L_i`` (the extra
    argument ``value_fn``), at step ``t`` and for each sample ``k < K``
    (``K = num_samples``):

    .. math::

      z_{t,i,k} \\sim \\mathcal N(0, I) \\text{ from } \\kappa_{t,i,k}
        = \\mathrm{fold\\_in}(\\mathrm{fold\\_in}(\\mathrm{fold\\_in}(\\kappa, t), i), k),
      \\qquad
      p_{ik} = \\frac{L_i(\\theta + \\epsilon z_{t,i,k}) - L_i(\\theta - \\epsilon z_{t,i,k})}
        {2 \\epsilon},

    with ``kappa = PRNGKey(seed)`` and leaf ``l`` of ``z`` drawn from
    ``fold_in(kappa_{t,i,k}, l)``. The ``N K`` scalars (encoded for ``wire``) are
    all-gathered; every device decodes them, **regenerates** every
    ``z_{t,j,k}`` from its key (a ``lax.fori_loop`` over the ``N K`` pairs:
    memory for one ``z``, never ``N K`` copies of the model) and returns the same

    .. math::

      u = \\frac{1}{N K} \\sum_{j=1}^{N} \\sum_{k=1}^{K} \\hat p_{jk}\\, z_{t,j,k},

    an estimate of the mean gradient: ``E[u] = mean_i grad L_i(theta) + O(eps^2)``
    (on a quadratic ``p = z . grad L`` exactly, for every ``eps``). Chained with
    ``optax.sgd(lr)`` the step is ``theta <- theta - lr u``, MeZO's scaling.
    Complex leaves draw ``z = a + i b`` (``a, b ~ N(0, I)``), so that ``E[u]``
    is optax's complex gradient ``dL/dRe + i dL/dIm``.

    Wire (bytes per device per step, independent of the model's size): each
    device contributes ``K`` codes, the all-gather's operand of
    ``K b`` bytes (``b`` bytes a scalar on ``wire``), and receives ``(N - 1)`` times that with a
    ring (see :func:`spsa_wire_bytes`; declared with
    :func:`gdtx.distributed.record_exchange`). Compute per step and device:
    ``2 K`` loss evaluations and ``N K + K`` Gaussian draws of the model's size,
    no backward pass.

    ``wire`` (see ``_encode``): ``"f32"`` (exact, 4 bytes), ``"bf16"`` (2
    bytes), ``"log_official"`` (the official 9-bit log code as int16, 2 bytes),
    ``"log8"`` (one byte: 127 log levels a factor ``e^{1/8}`` apart per sign,
    nearest rounding; **biased**: values below ``e^{-63/8} ~ 3.8e-4`` are
    rounded up to it and the relative error is up to ``e^{1/16} - 1 ~ 6.5%``) or
    ``"log8_stochastic"`` (the same byte with unbiased stochastic rounding
    between adjacent levels, and between 0 and the lowest one: ``E[p hat] = p``
    up to ``e^{63/8} ~ 2.6e3``, beyond which it saturates; its rounding key is
    ``fold_in(kappa_{t,i}, K)``, which no direction uses). :func:`spsa_quantizer_gain`
    computes the gain ``E[p hat z] / grad`` of each code (docs/zeroth_order.md tabulates it).

    .. warning::
      Departures from the official code (``ezelikman/justonebyte``): keys come
      from ``fold_in`` on ``(t, device, sample)`` instead of seeds made of
      decimal digits of the step, the sample and a wall-clock timestamp (which
      collide: ``(t=1, k=0, 0.000123 s)`` and ``(t=10, k=1, 0.000023 s)`` give the
      same seed); the update is ``(1/(NK)) sum p z`` (MeZO) where ``app_jax.py``
      steps ``lr eps / M`` and ``app.py`` ``lr / sqrt(M)``: use
      ``lr_gdtx = lr_jax * eps`` or ``lr_torch * sqrt(N K)``; the official
      one-byte code is computed but never sent (``app.py`` sends the float) and
      needs 9 bits; every sample uses the device's same batch (the official
      loop draws a fresh batch per sample). Perturbed parameters are rounded to
      their dtype before ``value_fn`` sees them: with bfloat16 parameters an
      ``eps`` of ``1e-3`` is below the rounding step of most entries, so raise it.

    Args:
      epsilon: the perturbation scale ``eps``, a real number > 0.
      num_samples: ``K``, the perturbations per device and step, an integer >= 1.
      axis_name: the bound mesh axis (or tuple of axes) of the devices.
      seed: the seed of the base key, an integer >= 0, the same on every device.
      wire: how the projected gradients are sent, one of :data:`WIRES`.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state
      :class:`SharedSeedSPSAState` that requires the extra argument ``value_fn``
      (``update(updates, state, params, value_fn=...)``; ``updates`` only give
      the output's dtype and are otherwise ignored, so pass the params or zeros).

    Examples:
      Four devices under ``jax.vmap``, each with its own quadratic loss: averaged
      over 50 steps the update is the gradient of the mean loss (computed from
      loss values only), and every device returns the same update:

      >>> import jax, jax.numpy as jnp, gdtx
      >>> from gdtx.zeroth_order import shared_seed_spsa
      >>> target = jnp.array([[1.0, -2.0], [3.0, 0.0], [-1.0, 1.0], [1.0, 5.0]])
      >>> tx = shared_seed_spsa(1e-3, num_samples=64, axis_name="d")
      >>> theta = jnp.zeros(2)
      >>> def update(t, state):
      ...     loss = lambda p: 0.5 * jnp.sum((p - t) ** 2)  # this device's loss
      ...     return tx.update(theta, state, theta, value_fn=loss)
      >>> step = jax.jit(jax.vmap(update, in_axes=(0, None), axis_name="d"))
      >>> state, total = tx.init(theta), 0.0
      >>> for _ in range(50):
      ...     u, new_state = step(target, state)
      ...     state, total = jax.tree.map(lambda x: x[0], new_state), total + u / 50
      >>> print(jnp.round(total[0], 1), bool((u == u[:1]).all()))
      [-1. -1.] True

    References:
      Zelikman, Huang, Liang, Haber, Goodman, `Just One Byte (per gradient): A
      Note on Low-Bandwidth Decentralized Language Model Finetuning Using Shared
      Randomness <https://arxiv.org/abs/2306.10015>`_, 2023. Official code:
      https://github.com/ezelikman/justonebyte (read at 19ba089: ``app.py``,
      ``app_jax.py``).

      Malladi, Gao, Nichani, Damian, Lee, Chen, Arora, `Fine-Tuning Language
      Models with Just Forward Passes <https://arxiv.org/abs/2305.17333>`_
      (MeZO), NeurIPS 2023 (the ``1/M`` scaling and in-place perturbations).

      Spall, `Multivariate Stochastic Approximation Using a Simultaneous
      Perturbation Gradient Approximation`, IEEE TAC 37(3), 1992 (SPSA).
    """
    owner = _OWNER
    num_samples = _check_spsa_options(owner, epsilon, num_samples, axis_name, seed, wire)

    def init_fn(params):
        del params
        return SharedSeedSPSAState(count=jnp.zeros([], jnp.int32), key=jax.random.PRNGKey(seed))

    def update_fn(updates, state, params=None, **extra):
        (value_fn,) = extra_args.get_required(owner, extra, ["value_fn"])
        _check_value_fn_and_params(owner, value_fn, params)
        num_devices = bound_axis_size(owner, axis_name)
        count = optax.safe_increment(state.count)
        if not jax.tree.leaves(params):  # nothing to perturb (an empty or masked-out tree)
            return updates, SharedSeedSPSAState(count=count, key=state.key)
        # One device: the index is the constant 0, so that the state and the update
        # stay typed replicated under shard_map (axis_index is varying even on size 1).
        index = 0 if num_devices == 1 else axis_index(axis_name)
        step_key = jax.random.fold_in(state.key, state.count)
        device_key = jax.random.fold_in(step_key, index)
        p = _projections(owner, value_fn, params, device_key, epsilon, num_samples)  # (K,)
        rounding_key = jax.random.fold_in(device_key, num_samples)  # no direction uses it
        codes = _encode(p, wire, rounding_key if wire == "log8_stochastic" else None)
        gathered = _all_gather_codes(owner, axis_name, codes, num_samples, num_devices)
        p_hat = _decode(gathered.reshape(num_devices, num_samples), wire, p.dtype)
        direction = _regenerated_mean(p_hat, step_key, params)
        out = jax.tree.map(lambda d, u: sharded_like(d.astype(u.dtype), u), direction, updates)
        return out, SharedSeedSPSAState(count=count, key=state.key)

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    tx = validation.checking_params(tx, owner, allow_complex=True)
    return extra_args.declare(tx, ["value_fn"])


def spsa_wire_bytes(num_samples: int, num_devices: int, wire: str = "f32") -> dict[str, float]:
    """Bytes per step and device of :func:`shared_seed_spsa`: they do not depend on the model.

    Args:
      num_samples: ``K``, the perturbations per device and step.
      num_devices: ``N``, the devices on the axis.
      wire: one of :data:`WIRES`.

    Returns:
      A dict: ``sent`` (the all-gather operand, ``K b`` with ``b`` the wire's
      bytes per scalar), ``received`` (``(N - 1) K b``, a ring all-gather) and
      ``gathered`` (``N K b``, the replicated result every device holds).

    Examples:
      Eight devices, one sample each, one byte: seven bytes received per step,
      for a model of any size:

      >>> from gdtx.zeroth_order import spsa_wire_bytes
      >>> spsa_wire_bytes(1, 8, "log8")
      {'sent': 1.0, 'received': 7.0, 'gathered': 8.0}

    References:
      Zelikman et al., `Just One Byte (per gradient)
      <https://arxiv.org/abs/2306.10015>`_, 2023.
    """
    owner = "gdtx.spsa_wire_bytes"
    k = validation.check_static_integer(owner, "num_samples", num_samples, 1)
    n = validation.check_static_integer(owner, "num_devices", num_devices, 1)
    validation.check_choice(owner, "wire", wire, WIRES)
    b = float(k * np.dtype(_WIRE_DTYPES[wire]).itemsize)
    return {"sent": b, "received": (n - 1) * b, "gathered": n * b}


def spsa_quantizer_gain(wire: str, sigma: float, num_points: int = 200_001) -> float:
    """The gain ``E[Q(s) s] / sigma^2`` of ``wire``'s code for ``s ~ N(0, sigma^2)``.

    On a quadratic (and, to first order in ``eps``, on any smooth loss)
    ``p = z . g`` is Gaussian with ``sigma = ||g||``, and Stein's lemma gives
    ``E[Q(p) z] = gain * g``: an odd code keeps the *direction* of the expected
    update and scales it by ``gain`` (1 for an exact or unbiased code). For
    ``"log8"`` the gain stays within 0.1% of 1 inside the code's
    range and grows like ``2 e^{-63/8} / (sigma sqrt(2 pi))`` far below it (tiny
    ``p`` are rounded up). Computed in float64 NumPy by quadrature on a grid of
    ``num_points`` points over ``|s| <= 12 sigma`` (the stochastic code by its
    expected decoded value).

    Args:
      wire: one of :data:`WIRES`.
      sigma: the standard deviation of ``p``, a real number > 0.
      num_points: the quadrature grid's size, an integer >= 101.

    Returns:
      The gain as a Python float.

    Examples:
      >>> from gdtx.zeroth_order import spsa_quantizer_gain
      >>> round(spsa_quantizer_gain("log8", 1.0), 4), round(spsa_quantizer_gain("log8", 1e-5), 1)
      (1.0007, 30.3)
      >>> round(spsa_quantizer_gain("log8_stochastic", 1e-5), 6)
      1.0

    References:
      Stein, `Estimation of the Mean of a Multivariate Normal Distribution`,
      Annals of Statistics 9(6), 1981 (``E[f(s) s] = sigma^2 E[f'(s)]``).
    """
    owner = "gdtx.spsa_quantizer_gain"
    validation.check_choice(owner, "wire", wire, WIRES)
    validation.check_positive(owner, "sigma", sigma)
    num_points = validation.check_static_integer(owner, "num_points", num_points, 101)
    sigma = float(sigma)
    s = np.linspace(-12 * sigma, 12 * sigma, num_points)
    q = _np_expected_decode(s, wire)
    density = np.exp(-0.5 * (s / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    return float(np.trapezoid(q * s * density, s) / sigma**2)


def _np_expected_decode(p: np.ndarray, wire: str) -> np.ndarray:
    """``E[decode(encode(p))]`` in float64 NumPy (over the rounding, for the stochastic code)."""
    p = np.asarray(p, np.float64)
    if wire == "f32":
        return p.astype(np.float32).astype(np.float64)
    if wire == "bf16":
        return np.asarray(jnp.asarray(p, jnp.float32).astype(jnp.bfloat16), np.float64)
    steps, top, _ = _LOG[wire]
    a = np.abs(p)
    with np.errstate(divide="ignore"):
        log = steps * np.log(a)
    if wire == "log8_stochastic":
        cap = math.exp(top / steps)
        return np.sign(p) * np.minimum(a, cap)
    c = np.clip(np.round(log), -top, top)
    return np.where(a == 0, 0.0, np.sign(p) * np.exp(c / steps))


__all__ = [
    "WIRES",
    "SharedSeedSPSAState",
    "shared_seed_spsa",
    "spsa_quantizer_gain",
    "spsa_wire_bytes",
]
