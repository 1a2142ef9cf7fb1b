"""Gradient compression across devices: QSGD, TernGrad, ATOMO, and error feedback.

The family's contract. A *compressor* turns a gradient into a small payload
with an explicit PRNG key and back:

- ``payload = compressor.compress(key, x)`` for an array or a pytree ``x``
  (each leaf compressed on its own, with key ``fold_in(key, leaf_index)``);
- ``x_hat = compressor.decompress(payload)``, in ``x``'s shapes and dtypes;
- ``compressor.bits(x)``: the expected number of bits a worker sends for ``x``
  (a shape tuple means one float32 array), and ``compressor.payload_bits(x)``:
  the size of the fixed-shape buffer that ``compress`` returns, which is what
  an all-gather under ``jit`` moves. The two are equal for the fixed-width
  formats (QSGD, TernGrad, scaled sign); for ATOMO the buffer holds up to the
  cap ``K`` atoms while ``bits`` counts the ``budget`` atoms sent on average.

:func:`qsgd`, :func:`terngrad` and :func:`atomo` are **unbiased**,
``E[x_hat] = x`` over the key (TernGrad: of the clipped gradient, as in its
paper; ATOMO: up to the cap, see :func:`atomo`); :func:`scaled_sign` is biased
and is meant for :func:`error_feedback`.

Data parallelism (:func:`compressed_mean`): each worker compresses its *own*
gradient with its own key, the payloads are all-gathered (not summed: their
scales differ), and every worker decodes all of them and averages. With
independent keys the mean is unbiased and its variance is
``(1/N^2) sum_k E||C(g_k) - g_k||^2``: ``N`` times smaller than compressing
the average once, which is a different algorithm and not what this module does.

Arithmetic runs in at least float32 (float64 under x64, where the scales are
float64 too and count 64 bits); updates come back in the gradients' dtype.

Complex leaves are compressed as their **real form** ``[Re x, Im x]`` (one real
leaf, the last axis doubled; a scalar becomes two entries) and decoded back to
the complex dtype; ``bits`` counts that real leaf. ``C^n`` with the inner
product ``Re <x, y>`` is ``R^{2n}``, so every statement above holds unchanged:
unbiasedness, the variances (in ``|.|^2``), and the scaled sign's contraction
used by error feedback; QSGD's 2-norm of the real form is the complex 2-norm.

Non-finite input stays visible: a leaf (QSGD: a bucket) holding a NaN or an
infinity decodes to NaN, so ``optax.apply_if_finite`` can skip the step and one
bad worker is never silently averaged away.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdtx._core import dtypes, keys, validation
from gdtx._core.bits import num_words, pack, unpack
from gdtx._core.collectives import (
    as_per_device,
    bound_axis_size,
    check_axis_name,
    check_per_device,
    local_view,
    sharded_like,
    unsharded,
)
from gdtx._core.compressed_collectives import check_compressor, gather_mean

_MAX_LEVELS = 32767  # codes in [0, 2s] must fit a 16-bit field
_INDEX_BITS = 32  # ATOMO entry atoms send an int32 index with each value


# --- payloads ----------------------------------------------------------------------------


def _payload(cls):
    """A frozen dataclass pytree whose ``shape``/``dtype`` of the original leaf are static."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    data = [f.name for f in dataclasses.fields(cls) if f.name not in ("shape", "dtype")]
    return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=["shape", "dtype"])


@_payload
class PackedPayload:
    """A fixed-width code per coordinate, packed into uint32 words, plus float scales.

    Attributes:
      words: ``ceil(n * width / 32)`` uint32 words, coordinate ``i`` in bits
        ``[width * (i mod (32/width)), ...)`` of word ``i // (32/width)``.
      scales: one scale per bucket (QSGD) or per tensor, in the compute dtype.
      shape: the original leaf's shape (static).
      dtype: the original leaf's dtype (static).
    """

    words: jax.Array
    scales: jax.Array
    shape: tuple[int, ...]
    dtype: Any


@_payload
class SparsePayload:
    """Up to ``K`` entry atoms: int32 indices and their values ``lambda_i / p_i``.

    Empty slots carry the value 0 (their index is arbitrary).

    Attributes:
      indices: ``(K,)`` int32 positions in the flattened leaf.
      values: ``(K,)`` the kept coefficients divided by their keep probability.
      shape: the original leaf's shape (static).
      dtype: the original leaf's dtype (static).
    """

    indices: jax.Array
    values: jax.Array
    shape: tuple[int, ...]
    dtype: Any


@_payload
class SpectralPayload:
    """Up to ``K`` rank-one atoms ``w_k u_k v_k^T`` of the leaf reshaped to a matrix.

    Attributes:
      u: ``(K, m)`` left singular vectors.
      v: ``(K, n)`` right singular vectors.
      weights: ``(K,)`` ``sigma_k / p_k`` (0 for an empty slot).
      shape: the original leaf's shape (static).
      dtype: the original leaf's dtype (static).
    """

    u: jax.Array
    v: jax.Array
    weights: jax.Array
    shape: tuple[int, ...]
    dtype: Any


@_payload
class ComplexPayload:
    """A complex leaf's payload: the payload of its real form ``[Re x, Im x]``.

    Attributes:
      real: the payload of the real array ``[Re x, Im x]`` (concatenated along
        the last axis; a scalar becomes a vector of two).
      shape: the original complex leaf's shape (static).
      dtype: the original complex leaf's dtype (static).
    """

    real: Any
    shape: tuple[int, ...]
    dtype: Any


def _is_payload(node: Any) -> bool:
    return isinstance(node, PackedPayload | SparsePayload | SpectralPayload | ComplexPayload)


def _real_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of a complex leaf's real form: the last axis doubled (``()`` -> ``(2,)``)."""
    return (2,) if not shape else (*shape[:-1], 2 * shape[-1])


def _realify(x: jax.Array) -> jax.Array:
    """``[Re x, Im x]`` along the last axis: C^n as R^2n, with ``<x, y> = Re(x^H y)``."""
    if x.ndim == 0:
        return jnp.stack([x.real, x.imag])
    return jnp.concatenate([x.real, x.imag], axis=-1)


def _complexify(r: jax.Array, shape: tuple[int, ...], dtype: Any) -> jax.Array:
    n = shape[-1] if shape else 1
    z = jax.lax.complex(r[..., :n], r[..., n:]).astype(dtype)
    return z.reshape(shape)


# --- shapes and bit counts ----------------------------------------------------------------------


def _leaf_specs(x: Any) -> list[tuple[tuple[int, ...], Any]]:
    """``(shape, compute dtype)`` of every leaf; a tuple of ints is one float32 array."""
    if isinstance(x, tuple | list) and all(isinstance(d, int | np.integer) for d in x):
        return [(tuple(int(d) for d in x), jnp.dtype(jnp.float32))]
    specs = []
    for leaf in jax.tree.leaves(x):
        shape, dtype = tuple(np.shape(leaf)), dtypes.compute_dtype(jnp.dtype(leaf.dtype))
        if jnp.issubdtype(dtype, jnp.complexfloating):  # sent as its real form
            shape, dtype = _real_shape(shape), jnp.finfo(dtype).dtype
        specs.append((shape, dtype))
    return specs


def _float_bits(dtype: Any) -> int:
    return 8 * jnp.dtype(dtype).itemsize


def _bernoulli(key: jax.Array, p: jax.Array) -> jax.Array:
    """``u < p`` with one uniform per coordinate, drawn the same way by every compressor.

    Sharing the draw makes the identities between compressors exact (one-level
    max-norm QSGD is TernGrad bit for bit, ATOMO at the right budget is either).
    """
    return jax.random.uniform(key, p.shape, p.dtype) < p


# --- compressors ---------------------------------------------------------------------------


class Compressor:
    """Base class: per-leaf compression mapped over a pytree.

    Subclasses define ``_compress_leaf(key, x)``, ``_decompress_leaf(payload)``,
    ``_bits_leaf(shape, dtype)`` and ``_payload_bits_leaf(shape, dtype)``, and
    the class attribute ``unbiased``.
    """

    unbiased: bool = True
    owner: str = "gdtx compressor"  # the public constructor, for messages

    def compress(self, key: jax.Array, x: Any) -> Any:
        """Compresses ``x`` (an array or a pytree) with ``key``; returns the payload tree.

        A complex leaf is compressed as its real form ``[Re x, Im x]`` (one real
        leaf, last axis doubled); a leaf explicitly sharded on an
        ``AxisType.Explicit`` mesh is gathered first (a compressor needs the
        whole leaf). Integer and boolean leaves raise a ``TypeError``.
        """
        leaves, treedef = jax.tree.flatten(x)
        payloads = [
            self._compress_any(jax.random.fold_in(key, i), leaf) for i, leaf in enumerate(leaves)
        ]
        return jax.tree.unflatten(treedef, payloads)

    def decompress(self, payload: Any) -> Any:
        """Decodes a payload tree back to arrays of the original shapes and dtypes."""
        return jax.tree.map(self._decompress_any, payload, is_leaf=_is_payload)

    def _compress_any(self, key, x):
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            raise TypeError(
                f"{self.owner}: compresses floating-point or complex arrays, got one of dtype "
                f"{x.dtype} and shape {x.shape}; cast it (e.g. `x.astype(jnp.float32)`)."
            )
        x = unsharded(x)
        if jnp.iscomplexobj(x):
            return ComplexPayload(self._compress_leaf(key, _realify(x)), tuple(x.shape), x.dtype)
        return self._compress_leaf(key, x)

    def _decompress_any(self, payload):
        if isinstance(payload, ComplexPayload):
            real = self._decompress_leaf(payload.real)
            return _complexify(real, payload.shape, payload.dtype)
        return self._decompress_leaf(payload)

    def bits(self, x: Any) -> float:
        """Expected bits sent for ``x``: a shape tuple (float32), an array, or a pytree."""
        return float(sum(self._bits_leaf(s, d) for s, d in _leaf_specs(x)))

    def payload_bits(self, x: Any) -> int:
        """Bits in the fixed-shape buffer that ``compress`` returns for ``x``."""
        return int(sum(self._payload_bits_leaf(s, d) for s, d in _leaf_specs(x)))

    def _bits_leaf(self, shape, dtype) -> float:
        return self._payload_bits_leaf(shape, dtype)


@dataclasses.dataclass(frozen=True)
class QSGD(Compressor):
    """QSGD's stochastic quantizer (see :func:`qsgd`)."""

    owner = "gdtx.qsgd"

    num_levels: int
    bucket_size: int | None = None
    norm: str = "l2"

    @property
    def width(self) -> int:
        """Bits per coordinate: the smallest of 2, 4, 8, 16 that holds ``2s + 1`` codes."""
        needed = math.ceil(math.log2(2 * self.num_levels + 1))
        return next(w for w in (2, 4, 8, 16) if w >= needed)

    def _num_buckets(self, n: int) -> int:
        if n == 0:
            return 0
        return 1 if self.bucket_size is None else -(-n // self.bucket_size)

    def _compress_leaf(self, key, x):
        cdt = dtypes.compute_dtype(x)
        s = self.num_levels
        v = jnp.ravel(x).astype(cdt)
        n = v.size
        d = max(n, 1) if self.bucket_size is None else self.bucket_size
        buckets = jnp.pad(v, (0, -n % d)).reshape(-1, d)
        # Everything is computed from the bucket divided by its largest magnitude,
        # in [-1, 1]: squaring v itself overflows for |v| ~ 1e19 in float32 and
        # underflows to a zero norm (all-zero codes) for |v| ~ 1e-20. A NaN or an
        # infinity makes the bucket's scale NaN, so the bucket decodes to NaN.
        # max |v| as |max(max v, -min v)| (equal bit for bit, also for NaN, inf and
        # -0): two reductions of v itself, where max(|v|) made XLA:CPU write |v| to
        # a leaf-sized temporary and reduce that (2.5x slower for buckets of 4).
        peak = jnp.abs(jnp.maximum(jnp.max(buckets, axis=1), -jnp.min(buckets, axis=1)))
        unit = jnp.abs(buckets) / jnp.where(peak > 0, peak, 1)[:, None]
        if self.norm == "l2":
            unit_norm = jnp.sqrt(jnp.sum(unit * unit, axis=1))  # in [1, sqrt(d)] (or 0)
            scales = peak * unit_norm
            unit = unit / jnp.where(unit_norm > 0, unit_norm, 1)[:, None]
        else:
            scales = peak
        # |v_i| / ||v||_2 can exceed 1 by an ulp; the clip keeps the code in range.
        level = jnp.clip(unit, 0, 1) * s
        lower = jnp.clip(jnp.floor(level), 0, s - 1)
        p_up = (level - lower).reshape(-1)[:n]
        lower = lower.reshape(-1)[:n]
        xi = lower + _bernoulli(key, p_up).astype(cdt)
        code = (jnp.sign(v) * xi).astype(jnp.int32) + s
        return PackedPayload(pack(code, self.width), scales, tuple(x.shape), x.dtype)

    def _decompress_leaf(self, payload):
        s = self.num_levels
        shape = payload.shape
        n = math.prod(shape)
        code = unpack(payload.words, self.width, n).astype(jnp.int32) - s
        d = max(n, 1) if self.bucket_size is None else self.bucket_size
        buckets = jnp.pad(code, (0, -n % d)).reshape(-1, d).astype(payload.scales.dtype)
        values = (payload.scales[:, None] / s * buckets).reshape(-1)[:n]
        return values.reshape(shape).astype(payload.dtype)

    def _payload_bits_leaf(self, shape, dtype):
        n = math.prod(shape)
        return 32 * num_words(n, self.width) + self._num_buckets(n) * _float_bits(dtype)


@dataclasses.dataclass(frozen=True)
class TernGrad(Compressor):
    """TernGrad's ternarizer (see :func:`terngrad`)."""

    owner = "gdtx.terngrad"

    clip_sigma: float | None = 2.5

    def clipped(self, x: jax.Array) -> jax.Array:
        """The (flattened, compute-dtype) clipped gradient that TernGrad is unbiased for."""
        v = jnp.ravel(x).astype(dtypes.compute_dtype(x))
        if self.clip_sigma is None or v.size == 0:
            return v
        threshold = self.clip_sigma * jnp.std(v)
        # A constant leaf (a scalar, say) has sigma = 0: clipping it to 0 would
        # zero the gradient, so it is left alone.
        return jnp.where(threshold > 0, jnp.clip(v, -threshold, threshold), v)

    def _compress_leaf(self, key, x):
        v = self.clipped(x)
        scale = jnp.max(jnp.abs(v), initial=0)
        keep = _bernoulli(key, jnp.abs(v) / jnp.where(scale > 0, scale, 1))
        code = jnp.where(keep, jnp.sign(v), 0).astype(jnp.int32) + 1
        return PackedPayload(pack(code, 2), scale[None], tuple(x.shape), x.dtype)

    def _decompress_leaf(self, payload):
        n = math.prod(payload.shape)
        code = unpack(payload.words, 2, n).astype(jnp.int32) - 1
        values = payload.scales[0] * code.astype(payload.scales.dtype)
        return values.reshape(payload.shape).astype(payload.dtype)

    def _payload_bits_leaf(self, shape, dtype):
        return 32 * num_words(math.prod(shape), 2) + _float_bits(dtype)


@dataclasses.dataclass(frozen=True)
class ScaledSign(Compressor):
    """The scaled sign ``||x||_1 / d * sign(x)`` (see :func:`scaled_sign`)."""

    owner = "gdtx.scaled_sign"

    unbiased = False

    def _compress_leaf(self, key, x):
        del key
        v = jnp.ravel(x).astype(dtypes.compute_dtype(x))
        scale = jnp.sum(jnp.abs(v)) / max(v.size, 1)
        return PackedPayload(pack(v >= 0, 1), scale[None], tuple(x.shape), x.dtype)

    def _decompress_leaf(self, payload):
        n = math.prod(payload.shape)
        up = unpack(payload.words, 1, n).astype(payload.scales.dtype)
        return (payload.scales[0] * (2 * up - 1)).reshape(payload.shape).astype(payload.dtype)

    def _payload_bits_leaf(self, shape, dtype):
        return 32 * num_words(math.prod(shape), 1) + _float_bits(dtype)


def atomo_probabilities(magnitudes: jax.Array, budget: Any) -> jax.Array:
    """ATOMO's variance-minimising keep probabilities, loop-free (runs under ``jit``).

    Solves ``min sum_i lambda_i^2 / p_i`` s.t. ``sum_i p_i = budget``, ``0 <= p_i <= 1``:
    ``p_i = min(1, |lambda_i| / tau)`` with ``tau`` set by the budget
    (water-filling), and ``p_i = 0`` where ``lambda_i = 0``. With the magnitudes
    sorted, ``a_(0) >= a_(1) >= ...``, and suffix sums ``R_k = sum_{j>=k} a_(j)``,
    the ``k*`` largest saturate, ``k* = #{k : a_(k) (budget - k) > R_k}`` (a
    prefix), and the rest get ``(budget - k*) a_(k) / R_{k*}``. A budget of at
    least the number of nonzeros keeps every nonzero with probability one.

    Args:
      magnitudes: the coefficients ``lambda`` (any shape; their absolute values count).
      budget: the expected number of atoms to keep, > 0 (may be traced).

    Returns:
      The probabilities, shaped like ``magnitudes``.

    Examples:
      Proportional to the magnitudes while none exceeds one (budget 2); with a
      budget of 3 the largest saturates at 1 and the rest share what is left.
      The probabilities sum to the budget, zero stays zero:

      >>> import jax.numpy as jnp
      >>> from gdtx import atomo_probabilities
      >>> lam = jnp.array([4.0, 2.0, 1.0, 1.0, 0.0])
      >>> print(atomo_probabilities(lam, 2.0))
      [1.   0.5  0.25 0.25 0.  ]
      >>> print(atomo_probabilities(lam, 3.0))
      [1.  1.  0.5 0.5 0. ]

    References:
      Wang et al., `ATOMO: Communication-efficient Learning via Atomic
      Sparsification <https://arxiv.org/abs/1806.04090>`_, NeurIPS 2018
      (the variance-minimising probabilities, Algorithm 2). Official code:
      https://github.com/hwang595/ATOMO
    """
    shape = jnp.shape(magnitudes)
    a = jnp.abs(jnp.ravel(magnitudes))
    n = a.size
    order = jnp.argsort(-a)
    sorted_a = a[order]
    suffix = jnp.cumsum(sorted_a[::-1])[::-1]
    k = jnp.arange(n, dtype=a.dtype)
    budget = jnp.asarray(budget, a.dtype)
    k_star = jnp.sum(sorted_a * (budget - k) > suffix)
    rest = jnp.concatenate([suffix, jnp.zeros(1, a.dtype)])[k_star]
    share = (budget - k_star) * sorted_a / jnp.where(rest > 0, rest, 1)
    sorted_p = jnp.where(k < k_star, 1, jnp.where(rest > 0, share, 0))
    p = jnp.zeros_like(a).at[order].set(jnp.clip(sorted_p, 0, 1))
    return p.reshape(shape)


def _poisoned(values, x):
    """``values``, or all NaN if ``x`` holds a NaN or an infinity.

    ATOMO's probabilities of a non-finite coefficient are NaN and it would never
    be drawn: the leaf would decode to a finite, wrong value. NaN slots make the
    whole leaf decode to NaN instead (``_decompress_leaf``), as QSGD and TernGrad
    do through their scales, so a bad gradient stays visible (``optax.apply_if_finite``).
    """
    return jnp.where(jnp.all(jnp.isfinite(x)), values, jnp.nan)


def _select(key, keep, cap):
    """Indices of at most ``cap`` kept atoms, a uniformly random subset if more were kept."""
    if cap >= keep.size:
        return jnp.arange(keep.size), keep
    priority = jax.random.uniform(key, keep.shape)
    score, index = jax.lax.top_k(jnp.where(keep, 1 + priority, 0), cap)
    return index, score > 0


@dataclasses.dataclass(frozen=True)
class ATOMO(Compressor):
    """ATOMO's sparsifier over entry or singular-vector atoms (see :func:`atomo`)."""

    owner = "gdtx.atomo"

    budget: float
    atoms: str = "entry"
    cap_sigmas: float | None = 4.0

    def cap(self, num_atoms: int) -> int:
        """``K = min(num_atoms, ceil(budget + c sqrt(budget)))`` (all atoms if ``c`` is None)."""
        if self.cap_sigmas is None:
            return num_atoms
        b = float(self.budget)
        return min(num_atoms, math.ceil(b + self.cap_sigmas * math.sqrt(b)))

    def _spectral(self, shape) -> bool:
        return self.atoms == "svd" and len(shape) >= 2

    @staticmethod
    def _matrix_shape(shape):
        return (math.prod(shape[:-1]), shape[-1])

    def _compress_leaf(self, key, x):
        cdt = dtypes.compute_dtype(x)
        if self._spectral(x.shape):
            m = x.reshape(self._matrix_shape(x.shape)).astype(cdt)
            u, sigma, vt = jnp.linalg.svd(m, full_matrices=False)
            p = atomo_probabilities(sigma, self.budget)
            keep = _bernoulli(key, p)
            index, valid = _select(jax.random.fold_in(key, 1), keep, self.cap(sigma.size))
            weights = jnp.where(valid, sigma[index] / jnp.where(p[index] > 0, p[index], 1), 0)
            weights = _poisoned(weights, m)
            return SpectralPayload(u.T[index], vt[index], weights, tuple(x.shape), x.dtype)
        lam = jnp.ravel(x).astype(cdt)
        p = atomo_probabilities(lam, self.budget)
        keep = _bernoulli(key, p)
        index, valid = _select(jax.random.fold_in(key, 1), keep, self.cap(lam.size))
        values = jnp.where(valid, lam[index] / jnp.where(p[index] > 0, p[index], 1), 0)
        values = _poisoned(values, lam)
        return SparsePayload(index.astype(jnp.int32), values, tuple(x.shape), x.dtype)

    def _decompress_leaf(self, payload):
        if isinstance(payload, SpectralPayload):
            m = (payload.u.T * payload.weights[None, :]) @ payload.v
            m = jnp.where(jnp.any(jnp.isnan(payload.weights)), jnp.nan, m)
            return m.reshape(payload.shape).astype(payload.dtype)
        n = math.prod(payload.shape)
        dense = jnp.zeros(n, payload.values.dtype).at[payload.indices].add(payload.values)
        dense = jnp.where(jnp.any(jnp.isnan(payload.values)), jnp.nan, dense)
        return dense.reshape(payload.shape).astype(payload.dtype)

    def _atom_bits(self, shape, dtype) -> tuple[int, int]:
        """(number of atoms, bits per atom) of a leaf."""
        if self._spectral(shape):
            m, n = self._matrix_shape(shape)
            return min(m, n), (m + n + 1) * _float_bits(dtype)
        return math.prod(shape), _INDEX_BITS + _float_bits(dtype)

    def _bits_leaf(self, shape, dtype):
        count, per_atom = self._atom_bits(shape, dtype)
        return min(float(self.budget), count) * per_atom

    def _payload_bits_leaf(self, shape, dtype):
        count, per_atom = self._atom_bits(shape, dtype)
        return self.cap(count) * per_atom


# --- public constructors ------------------------------------------------------------------


def qsgd(num_levels: int, *, bucket_size: int | None = None, norm: str = "l2") -> QSGD:
    """QSGD: unbiased stochastic quantization to ``num_levels`` levels per bucket.

    For a bucket ``v`` (the whole leaf when ``bucket_size`` is None) with scale
    ``r = ||v||_2`` (``norm="l2"``, the paper's theory) or ``r = ||v||_inf``
    (``norm="max"``, what the paper's experiments used), and ``s = num_levels``,

    .. math::

      Q_s(v)_i = r \\operatorname{sign}(v_i) \\xi_i / s, \\quad
      \\xi_i = \\ell_i + \\mathrm{Bernoulli}(s a_i - \\ell_i), \\quad
      a_i = |v_i| / r, \\ \\ell_i = \\min(\\lfloor s a_i \\rfloor, s - 1),

    so ``E[Q_s(v)] = v`` and ``Var(Q_s(v)_i) = (r/s)^2 p_i (1 - p_i)`` with
    ``p_i = s a_i - l_i`` (the paper's Lemma 3.1 bounds the sum by
    ``min(d/s^2, sqrt(d)/s) ||v||^2`` for the 2-norm). ``Q(0) = 0``.

    The 2-norm is computed as ``m ||v / m||_2`` with ``m = max_i |v_i|``, so it is
    exact for finite gradients of any magnitude (``sqrt(sum v_i^2)`` overflows to
    inf near ``|v| ~ 1e19`` in float32 and underflows to 0, sending all-zero
    codes, near ``1e-20``); a NaN or an infinity makes its bucket decode to NaN.

    Wire format (a :class:`PackedPayload`): the signed level ``s xi_i sign(v_i)``
    as an unsigned code in ``[0, 2s]`` of fixed width ``w`` = the smallest of 2,
    4, 8, 16 bits that holds ``2s + 1`` values, packed into uint32 words, plus one
    float32 scale per bucket: ``w + 32/d`` bits per coordinate for bucket size
    ``d``. This is the fixed-width code of the paper's experiments (Section 4);
    the Elias code of its theory (Section 3.1) is variable-length and does not fit
    a static-shape collective. Buckets are consecutive entries of the flattened
    leaf and never cross leaves.

    .. warning::
      The QSGD coder in the ATOMO authors' repository rounds up with probability
      ``1 - p``, which is biased; gdtx rounds up with probability ``p`` (the
      paper's Eq. (4)). "b bits" has no single meaning across implementations
      (``s = 2^b``, ``2^b - 1``, ``2^{b-1}``): gdtx takes the paper's ``s`` directly.

    Args:
      num_levels: ``s``, the number of quantization levels, an integer in [1, 32767].
      bucket_size: entries per bucket (each with its own scale); None: one bucket per leaf.
      norm: ``"l2"`` (the paper's analysis) or ``"max"`` (its experiments, "QSGD-inf").

    Returns:
      A :class:`QSGD` compressor.

    Examples:
      Every output lies on the grid ``r k / s`` and the mean over keys is the input:

      >>> import jax, jax.numpy as jnp, gdtx
      >>> q = gdtx.qsgd(2, norm="max")
      >>> x = jnp.array([0.3, -1.0, 0.7, 0.0])
      >>> q.decompress(q.compress(jax.random.key(0), x)) * 2
      Array([ 0., -2.,  1.,  0.], dtype=float32)
      >>> keys = jax.random.split(jax.random.key(1), 4000)
      >>> xs = jax.jit(jax.vmap(lambda k: q.decompress(q.compress(k, x))))(keys)
      >>> print(xs.mean(0).round(1))
      [ 0.3 -1.   0.7  0. ]
      >>> q.bits((1000,))  # 4-bit codes and one float32 scale
      4032.0

    References:
      Alistarh et al., `QSGD: Communication-Efficient SGD via Gradient Quantization
      and Encoding <https://arxiv.org/abs/1610.02132>`_, NeurIPS 2017 (Eq. (4),
      Lemma 3.1, Section 4 for bucketing and max-norm scaling).
    """
    owner = "gdtx.qsgd"
    validation.check_static_integer(owner, "num_levels", num_levels, 1, _MAX_LEVELS)
    if bucket_size is not None:
        validation.check_static_integer(owner, "bucket_size", bucket_size, 1)
    validation.check_choice(owner, "norm", norm, ("l2", "max"))
    return QSGD(int(num_levels), None if bucket_size is None else int(bucket_size), norm)


def terngrad(*, clip_sigma: float | None = 2.5) -> TernGrad:
    """TernGrad: one scale per tensor and a ternary value per coordinate.

    Per leaf, with ``sigma`` the (population) standard deviation of the leaf's
    gradient ``g`` and ``c = clip_sigma``, the clipped gradient and its scale are

    .. math::

      \\hat g_i = \\operatorname{clip}(g_i, -c\\sigma, c\\sigma), \\quad
      r = \\max_i |\\hat g_i|, \\quad
      \\tilde g_i = r \\operatorname{sign}(\\hat g_i) b_i, \\
      b_i \\sim \\mathrm{Bernoulli}(|\\hat g_i| / r),

    so ``E[g~] = g^`` (unbiased for the **clipped** gradient, as the paper
    states), ``Var(g~_i) = |g^_i| (r - |g^_i|)`` and ``E||g~||_0 = ||g^||_1 / r``.
    Wire format: 2 bits per coordinate (codes 0, 1, 2 for -1, 0, +1, sixteen to a
    uint32 word) plus one float32 scale per tensor (:class:`PackedPayload`).

    .. warning::
      The paper shares one scale across workers (an all-reduce of the maximum
      before ternarizing); gdtx does **not**: each worker sends its own scale with
      its codes, which keeps every worker's message unbiased and needs no extra
      collective round. The official code's scale is ``c sigma`` itself rather
      than ``max |clip(g)|`` (the two differ only when ``max|g| < c sigma``; both
      are unbiased for the clipped gradient). A constant leaf (``sigma = 0``, e.g.
      a scalar) is not clipped. The official code also leaves small variables
      and the logits layer in float; gdtx ternarizes every leaf it is given
      (wrap it in ``optax.masked``-style routing to exclude some).

    Args:
      clip_sigma: ``c``, the clipping threshold in standard deviations, > 0;
        None disables clipping (then the estimator is unbiased for ``g``).

    Returns:
      A :class:`TernGrad` compressor.

    Examples:
      Without clipping the values are ``-r, 0, r`` with ``r = max|g|``, unbiased:

      >>> import jax, jax.numpy as jnp, gdtx
      >>> t = gdtx.terngrad(clip_sigma=None)
      >>> g = jnp.array([0.5, -2.0, 1.0, 0.0])
      >>> t.decompress(t.compress(jax.random.key(0), g))
      Array([ 0., -2.,  2.,  0.], dtype=float32)
      >>> keys = jax.random.split(jax.random.key(1), 4000)
      >>> print(jax.jit(jax.vmap(lambda k: t.decompress(t.compress(k, g))))(keys).mean(0).round(1))
      [ 0.5 -2.   1.   0. ]
      >>> t.bits((1000,))  # 2 bits per coordinate (63 words) and one float32
      2048.0

    References:
      Wen et al., `TernGrad: Ternary Gradients to Reduce Communication in
      Distributed Deep Learning <https://arxiv.org/abs/1705.07878>`_, NeurIPS 2017.
      Official code: https://github.com/wenwei202/terngrad
    """
    owner = "gdtx.terngrad"
    validation.check_positive(owner, "clip_sigma", clip_sigma, optional=True)
    return TernGrad(None if clip_sigma is None else validation.concrete_value(clip_sigma))


def atomo(budget: float, *, atoms: str = "entry", cap_sigmas: float | None = 4.0) -> ATOMO:
    """ATOMO: the minimum-variance unbiased sparsifier over an atomic decomposition.

    A leaf is written ``x = sum_i lambda_i a_i`` with orthonormal atoms: its
    entries (``atoms="entry"``), or, for ``atoms="svd"``, the singular triplets
    ``sigma_i u_i v_i^T`` of the leaf reshaped to a matrix
    ``(prod(shape[:-1]), shape[-1])`` (the output features last, as in JAX
    kernels; leaves with fewer than two dimensions use entry atoms). Then

    .. math::

      \\hat x = \\sum_i \\frac{t_i}{p_i} \\lambda_i a_i, \\quad t_i \\sim
      \\mathrm{Bernoulli}(p_i), \\quad p_i = \\min(1, |\\lambda_i| / \\tau),
      \\ \\sum_i p_i = \\text{budget},

    the probabilities that minimise ``E||x^ - x||^2 = sum_i lambda_i^2 (1/p_i - 1)``
    for an expected ``budget`` atoms per leaf (:func:`atomo_probabilities`,
    computed without a data-dependent loop). With entry atoms and budget
    ``||g||_1 / ||g||_inf`` it is TernGrad without clipping; with
    ``||g||_1 / ||g||_2`` it is one-level QSGD (both exactly, same uniforms).

    Wire format: a fixed-shape buffer of ``K`` atoms (int32 index + value for
    entries, :class:`SparsePayload`; ``u``, ``v`` and a weight for singular
    vectors, :class:`SpectralPayload`), ``K = min(#atoms, ceil(budget + c
    sqrt(budget)))`` with ``c = cap_sigmas``. ``bits`` counts the ``budget`` atoms
    sent on average; ``payload_bits`` the ``K`` slots.

    .. warning::
      A static-shape payload cannot hold a random number of atoms, so when more
      than ``K`` atoms are drawn a uniformly random ``K`` of them are sent and the
      estimator is biased: ``|E[x^_i] - x_i| <= |lambda_i| P(N >= K)`` where
      ``N`` (sum of the independent ``t_j``, mean ``budget``) satisfies
      ``P(N >= budget + c sqrt(budget)) <= exp(-c^2 / (2 (1 + c / (3 sqrt(budget)))))``
      (Bernstein); the exact tail is far smaller (about ``1e-4`` for
      ``budget = 8, c = 4``). ``cap_sigmas=None`` sends all atoms' slots: exactly
      unbiased, no saving in the buffer. The authors' code caps probabilities
      at 1 without redistributing the budget and resamples when no atom is drawn
      (biased); gdtx solves the water-filling exactly and never resamples.

    Args:
      budget: expected atoms per leaf, a real number > 0; it sizes the payload,
        so it must be concrete (with ``optax.inject_hyperparams``, list it in
        ``static_args``; a traced budget is a ``TypeError``).
      atoms: ``"entry"`` or ``"svd"``.
      cap_sigmas: ``c`` in the cap ``K``, >= 0; None for no cap.

    Returns:
      An :class:`ATOMO` compressor.

    Examples:
      ``lambda = [10, 1, 1, 1]`` with budget 2: the large entry is always sent,
      the others with probability 1/3 each; the mean over keys is the input:

      >>> import jax, jax.numpy as jnp, gdtx
      >>> from gdtx.compression import atomo_probabilities
      >>> print(atomo_probabilities(jnp.array([10.0, 1.0, 1.0, 1.0]), 2.0).round(4))
      [1.     0.3333 0.3333 0.3333]
      >>> a = gdtx.atomo(2.0)
      >>> x = jnp.array([10.0, 1.0, -1.0, 1.0])
      >>> keys = jax.random.split(jax.random.key(1), 4000)
      >>> print(jax.jit(jax.vmap(lambda k: a.decompress(a.compress(k, x))))(keys).mean(0).round(1))
      [10.  1. -1.  1.]

    References:
      Wang et al., `ATOMO: Communication-efficient Learning via Atomic
      Sparsification <https://arxiv.org/abs/1806.04090>`_, NeurIPS 2018.
      Official code: https://github.com/hwang595/ATOMO
    """
    owner = "gdtx.atomo"
    validation.check_choice(owner, "atoms", atoms, ("entry", "svd"))
    # the budget sizes the payload: it must be known when the step is traced
    budget = validation.check_static_real(owner, "budget", budget)
    validation.check_positive(owner, "budget", budget)
    validation.check_non_negative(owner, "cap_sigmas", cap_sigmas, optional=True)
    return ATOMO(
        budget, atoms, None if cap_sigmas is None else validation.concrete_value(cap_sigmas)
    )


def scaled_sign() -> ScaledSign:
    """The scaled sign ``||x||_1 / d * sign(x)`` per tensor (biased; for error feedback).

    .. math::

      C(x) = \\frac{\\|x\\|_1}{d} \\operatorname{sign}(x), \\qquad
      \\|C(x) - x\\|^2 = \\|x\\|_2^2 - \\|x\\|_1^2 / d \\ \\text{(no zero entry)}.

    Wire format: one bit per coordinate (``x_i >= 0``, 32 to a uint32 word) plus
    one float32 per tensor, ``1 + 32/d`` bits per coordinate.

    .. warning::
      A one-bit code cannot carry ``sign(0) = 0``: a zero entry is sent as ``+``
      (as GRACE does). The official EF-SignSGD code uses ``torch.sign`` (0 for 0),
      which needs a ternary code; under :func:`error_feedback` the residual
      absorbs the difference.

    Returns:
      A :class:`ScaledSign` compressor (its ``key`` argument is ignored).

    Examples:
      >>> import jax, jax.numpy as jnp, gdtx
      >>> c = gdtx.scaled_sign()
      >>> c.decompress(c.compress(jax.random.key(0), jnp.array([3.0, -1.0, 0.5, -0.5])))
      Array([ 1.25, -1.25,  1.25, -1.25], dtype=float32)

    References:
      Karimireddy et al., `Error Feedback Fixes SignSGD and other Gradient
      Compression Schemes <https://arxiv.org/abs/1901.09847>`_, ICML 2019.
      Official code: https://github.com/epfml/error-feedback-SGD
    """
    return ScaledSign()


# --- data-parallel transformations ----------------------------------------------------------


class CompressedMeanState(NamedTuple):
    """State of :func:`compressed_mean`.

    Attributes:
      count: number of updates so far, shape ``()``, int32 (saturating).
      key: the carried PRNG key (raw uint32, from ``seed`` at ``init``, split every
        step), the same on every device.
    """

    count: jax.Array
    key: jax.Array


def compressed_mean(
    compressor: Compressor,
    axis_name: str | Sequence[str] | None,
    *,
    seed: int = 0,
    key_impl: str = "threefry2x32",
) -> optax.GradientTransformationExtraArgs:
    """The data-parallel mean of compressed gradients: compress, all-gather, decode, average.

    Worker ``k`` of ``N`` on ``axis_name`` compresses its own gradient ``g_k``
    with its own key and every worker applies

    .. math::

      u = \\frac{1}{N} \\sum_{k=1}^{N} \\operatorname{Dec}(\\operatorname{Enc}(g_k;\\,
      \\kappa_{t,k})), \\qquad
      (c_{t+1}, s_t) = \\operatorname{split}(c_t), \\quad
      \\kappa_{t,k} = \\operatorname{fold\\_in}(s_t, k),

    with ``c_0`` the key from ``seed``: the state carries ``c_t`` (the same on
    every device) and splits it every step, so step keys never repeat, also after
    the int32 ``count`` saturates at ``2**31 - 1`` (a key ``fold_in(c_0, count)``
    would repeat forever from then on), and each worker folds in its index along
    the axis (row-major over a tuple of axes), so the workers' keys are
    independent. The key is a raw ``uint32`` array (``jax.random.PRNGKey``), not a
    typed ``jax.random.key``: a typed key has an extended dtype that Orbax cannot
    save as a plain array and that generic tree maps over the state
    (``optax.tree.zeros_like``, ``jnp.where``-based skipping, donation and
    sharding checks) do not all accept. For an unbiased compressor
    ``E[u] = mean_k g_k`` and
    ``Var(u) = (1/N^2) sum_k E||C(g_k) - g_k||^2``. Only the payloads cross the
    wire (an all-gather of ``compressor.payload_bits(g) / 8`` bytes per worker);
    the result is the same on every worker and JAX knows it is replicated, so
    ``out_specs=P()`` type-checks under ``jax.shard_map``. With
    ``axis_name=None`` it is one worker: ``Dec(Enc(g))`` (a simulation).

    Complex gradients are compressed as their real form (see the module docs);
    ``init`` refuses integer parameters (``TypeError``); with ``params`` given,
    ``update`` checks that the gradients have their shapes. Run where
    ``axis_name`` is not bound, ``update`` raises a ``ValueError`` naming the
    axis. On an ``AxisType.Explicit`` mesh an explicitly sharded leaf is gathered
    before it is compressed (a compressor needs the whole leaf) and the update
    comes back sharded like the gradient.

    .. warning::
      Under ``jax.shard_map``, ``jax.grad`` with respect to *replicated*
      parameters already all-reduces the gradient (in float32, in the backward
      pass), and compressing that sum saves nothing: differentiate with respect
      to ``jax.lax.pcast(params, axis_name, to="varying")`` so that each device
      holds its own gradient. ``update`` raises a ``ValueError`` when it is given
      gradients that shard_map types as replicated over an axis of size > 1.

      Each worker's scale travels with its payload; TernGrad's paper instead
      shares one scale (the maximum over workers) before ternarizing. That needs
      an extra all-reduce and gives the same expectation; gdtx does not do it.

    Args:
      compressor: a gdtx compressor (:func:`qsgd`, :func:`terngrad`,
        :func:`atomo`, :func:`scaled_sign`).
      axis_name: the bound mesh axis (or tuple of axes) of the workers, or None.
      seed: the seed of the base key, an integer >= 0.
      key_impl: the PRNG that draws the rounding bits: ``"threefry2x32"``
        (JAX's default) or ``"rbg"`` (XLA's RngBitGenerator, seeded every step
        from the threefry step key ``kappa_{t,k}``; the carried state key is the
        same). The rounding's uniforms dominate the compressor's time: at
        ``N = 1e7`` on CPU, QSGD compress + decompress runs at 9.2x a
        read+write pass with threefry and 5.6x with ``"rbg"``
        (``benchmarks/random_bits.py``). Both are unbiased; the streams differ.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state
      :class:`CompressedMeanState`, to be placed before the optimizer (after
      ``optax.MultiSteps``-style accumulation, if any).

    Examples:
      Four workers under ``jax.vmap`` (any binding of the axis works) average
      their TernGrad messages; every worker gets the same update:

      >>> import jax, jax.numpy as jnp, gdtx
      >>> tx = gdtx.compressed_mean(gdtx.terngrad(clip_sigma=None), "workers")
      >>> grads = jnp.array([[1.0, -2.0], [1.0, 0.0], [3.0, 1.0], [-1.0, -1.0]])
      >>> state = tx.init(grads[0])
      >>> updates, _ = jax.vmap(lambda g: tx.update(g, state), axis_name="workers")(grads)
      >>> bool((updates == updates[:1]).all())
      True

    References:
      Alistarh et al., `QSGD <https://arxiv.org/abs/1610.02132>`_, NeurIPS 2017
      (Algorithm 1: every worker broadcasts its encoded gradient).
    """
    owner = "gdtx.compressed_mean"
    check_compressor(owner, compressor, Compressor)
    check_axis_name(owner, axis_name, optional=True)
    keys.check_seed(owner, seed)
    keys.check_key_impl(owner, key_impl)

    def init_fn(params):
        del params
        return CompressedMeanState(count=jnp.zeros([], jnp.int32), key=jax.random.PRNGKey(seed))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        validation.check_like_params(owner, updates, params)
        if axis_name is not None:
            bound_axis_size(owner, axis_name)
            check_per_device(owner, updates, axis_name)
        carry, key = keys.next_keys(state.key, axis_name)
        payload = compressor.compress(keys.rounding_key(key, key_impl), updates)
        if axis_name is None:
            decoded = compressor.decompress(payload)
            out = jax.tree.map(sharded_like, decoded, updates)
        else:
            out = gather_mean(compressor, payload, updates, axis_name, owner)
        return out, CompressedMeanState(count=optax.safe_increment(state.count), key=carry)

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return validation.checking_params(tx, owner, allow_complex=True)


class ErrorFeedbackState(NamedTuple):
    """State of :func:`error_feedback`.

    Attributes:
      count: number of updates so far, shape ``()``, int32 (saturating).
      key: the carried PRNG key (raw uint32, from ``seed`` at ``init``, split
        every step).
      error: this worker's residual ``e``, in gradient units, in ``error_dtype``.
        With an ``axis_name`` it is per-device state: each leaf has a leading
        device dimension (length one inside ``jax.shard_map``, ``N`` outside,
        sharded ``P(axis_name)``: :func:`gdtx.per_device_specs` builds the specs).
    """

    count: jax.Array
    key: jax.Array
    error: optax.Updates

    per_device_fields = ("error",)


def _add_residual(g: jax.Array, e: jax.Array) -> jax.Array:
    """``p = g + e`` in the compute dtype of both."""
    cdt = dtypes.compute_dtype(g, e)
    return g.astype(cdt) + e.astype(cdt)


def _unsent(p: jax.Array, c: jax.Array, e: jax.Array) -> jax.Array:
    """The next residual ``p - C(p)``, in the residual's dtype."""
    return (p - c.astype(p.dtype)).astype(e.dtype)


def error_feedback(
    compressor: Compressor,
    *,
    axis_name: str | Sequence[str] | None = None,
    seed: int = 0,
    error_dtype: Any | None = None,
    key_impl: str = "threefry2x32",
) -> optax.GradientTransformationExtraArgs:
    """Error feedback: compress the gradient plus the residual, keep what was not sent.

    Each worker keeps a residual ``e`` (``e_0 = 0``) and at step ``t``

    .. math::

      p_t = g_t + e_t, \\qquad \\Delta_t = C(p_t), \\qquad e_{t+1} = p_t - \\Delta_t,

    and the update is ``Delta_t`` (one worker) or the mean of the workers'
    ``Delta_t`` over ``axis_name`` (each decoded from the all-gathered payloads).
    Nothing is lost, only delayed: ``sum_{t<T} Delta_t + e_T = sum_{t<T} g_t``
    on every worker. With :func:`scaled_sign` this is EF-SignSGD. Keys are
    derived as in :func:`compressed_mean` (a carried key, split every step).
    Complex gradients work as in :func:`compressed_mean`: the compressor sees
    the real form, and the contraction ``||C(x) - x||^2 <= (1 - delta) ||x||^2``
    that error feedback relies on holds there because ``C^n`` with
    ``Re <x, y>`` is ``R^{2n}``; ``error_dtype`` must then be complex (or None).

    With ``axis_name`` the residual is **per-device state** (a leading device
    dimension, length one inside ``jax.shard_map``): initialise the state inside
    the ``shard_map`` and carry it with :func:`gdtx.per_device_specs` as its
    in/out specs, as for :func:`gdtx.signum_vote`; it is never averaged.

    .. warning::
      The update is in **gradient units** with the gradient's sign: place it
      before the learning rate, e.g. ``optax.chain(error_feedback(c),
      optax.sgd(lr))``. The paper and its code keep the residual in update units
      (``p_t = gamma_t g_t + e_t``). For a constant ``gamma`` and a compressor
      with ``C(gamma x) = gamma C(x)`` (all of gdtx's, for a fixed key) the two
      are identical; with a schedule they differ: here the residual of step ``t``
      is applied with the learning rate of the step that sends it.

    Args:
      compressor: a gdtx compressor (usually :func:`scaled_sign`).
      axis_name: the bound mesh axis (or tuple of axes) of the workers, or None
        for one worker.
      seed: the seed of the base key, an integer >= 0 (unused by deterministic
        compressors).
      error_dtype: dtype of the residual; None keeps each parameter's dtype.
      key_impl: the PRNG of the compressor's random rounding, ``"threefry2x32"``
        or ``"rbg"`` (see :func:`compressed_mean`).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`ErrorFeedbackState`.

    Examples:
      The scaled sign of ``[3, -1]`` is ``[2, -2]``; the residual ``[1, 1]`` is
      sent with the next gradient, and the sum of the updates plus the residual
      always equals the sum of the gradients:

      >>> import jax.numpy as jnp, gdtx
      >>> tx = gdtx.error_feedback(gdtx.scaled_sign())
      >>> g = jnp.array([3.0, -1.0])
      >>> u1, state = tx.update(g, tx.init(g))
      >>> print(u1, state.error)
      [ 2. -2.] [1. 1.]
      >>> u2, state = tx.update(jnp.array([1.0, -3.0]), state)
      >>> print(u2, u1 + u2 + state.error)
      [ 2. -2.] [ 4. -4.]

    References:
      Karimireddy et al., `Error Feedback Fixes SignSGD and other Gradient
      Compression Schemes <https://arxiv.org/abs/1901.09847>`_, ICML 2019.
      Official code: https://github.com/epfml/error-feedback-SGD
    """
    owner = "gdtx.error_feedback"
    keys.check_key_impl(owner, key_impl)
    check_compressor(owner, compressor, Compressor)
    check_axis_name(owner, axis_name, optional=True)
    keys.check_seed(owner, seed)
    validation.check_dtype(owner, "error_dtype", error_dtype)
    error_dtype = dtypes.canonical_dtype(error_dtype)

    def init_fn(params):
        dtypes.check_phase_dtype(owner, "error_dtype", params, error_dtype)
        zeros = dtypes.zeros_like_params(params, error_dtype)
        if axis_name is not None:
            zeros = jax.tree.map(lambda z: as_per_device(z, axis_name, init=True), zeros)
        return ErrorFeedbackState(
            count=jnp.zeros([], jnp.int32), key=jax.random.PRNGKey(seed), error=zeros
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        error = state.error
        if axis_name is not None:
            error = jax.tree.map(lambda e: local_view(owner, e, "residual"), error)
        validation.check_like_state(owner, updates, error)
        if axis_name is not None:
            bound_axis_size(owner, axis_name)
            check_per_device(owner, updates, axis_name)
        corrected = jax.tree.map(_add_residual, updates, error)
        carry, key = keys.next_keys(state.key, axis_name)
        payload = compressor.compress(keys.rounding_key(key, key_impl), corrected)
        # In the compute dtype, and sharded like the gradient on an Explicit mesh.
        sent = jax.tree.map(sharded_like, compressor.decompress(payload), corrected)
        new_error = jax.tree.map(_unsent, corrected, sent, error)
        if axis_name is None:
            out = jax.tree.map(lambda c, g: c.astype(g.dtype), sent, updates)
        else:
            out = gather_mean(compressor, payload, updates, axis_name, owner)
            new_error = jax.tree.map(lambda e: as_per_device(e, axis_name, init=False), new_error)
        new_state = ErrorFeedbackState(
            count=optax.safe_increment(state.count), key=carry, error=new_error
        )
        return out, new_state

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return validation.checking_params(tx, owner, allow_complex=True)


__all__ = [
    "ATOMO",
    "ComplexPayload",
    "CompressedMeanState",
    "Compressor",
    "ErrorFeedbackState",
    "PackedPayload",
    "QSGD",
    "ScaledSign",
    "SparsePayload",
    "SpectralPayload",
    "TernGrad",
    "atomo",
    "atomo_probabilities",
    "compressed_mean",
    "error_feedback",
    "qsgd",
    "scaled_sign",
    "terngrad",
]
