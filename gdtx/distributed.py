"""Collectives over a named mesh axis: the sign majority vote, and the exchange accounting.

What every collective shares (the bound-axis check, per-device state, explicit
sharding) is private plumbing in :mod:`gdtx._core.collectives`; what a compiled
step exchanges is read by :mod:`gdtx._core.hlo`. Public here: the vote
(:func:`majority_vote`), :func:`per_device_specs`, the accounting every
collective feeds (:func:`recording_exchanges`, :func:`record_exchange`,
:class:`Exchange`) and the wire-size arithmetic (:func:`wire_bytes`,
:func:`choose_wire`, :func:`smallest_int_wire`, :func:`max_devices`).

signSGD with majority vote (Bernstein et al. 2019) sends the sign of each
worker's gradient instead of the gradient, and every worker applies the sign
of the sum of the signs. :func:`majority_vote` is that exchange as a gradient
transformation, to be used wherever a named mesh axis is bound: inside
``jax.shard_map`` (one host or several, after ``jax.distributed.initialize``),
``jax.vmap(..., axis_name=...)`` or anything else that binds one.

The contract, in every wire mode:

- the result is ``sign(sum_k sign(g_k))`` over the ``N`` devices of the axis,
  elementwise, in the gradients' dtype and identical on every device;
- a tie gives 0;
- in the exact modes a zero gradient abstains (``sign(0) = 0``), so a
  coordinate that no device moves stays put; the one-bit mode cannot encode an
  abstention and uses the rule documented in :func:`majority_vote`.

What crosses the wire, per device and leaf of ``n`` coordinates (bytes
*received* by a ring implementation; the compiled HLO shows the operands, see
``tests/test_distributed.py`` and ``benchmarks/wire_bytes.py``):

=========  ======================================  ==============================
wire       collective                              bytes received per device
=========  ======================================  ==============================
"packed"   all-gather of 2 bits per coordinate     ``(N-1) ceil(n/4)``
"bits"     all-gather of 1 bit per coordinate      ``(N-1) ceil(n/8)``
"int8"     all-reduce of int8 signs (N <= 127)     ``2 (N-1)/N n``
"int16"    all-reduce of int16 (N <= 32767)        ``4 (N-1)/N n``
"int32"    all-reduce of int32                     ``8 (N-1)/N n``
(f32 psum  the uncompressed baseline               ``8 (N-1)/N n``)
=========  ======================================  ==============================

An all-gather grows with ``N`` while a ring all-reduce does not, so packing
pays only for small ``N``: at ``N = 8`` the packed gather and the int8
all-reduce move the same bytes, above 8 the int8 all-reduce wins (up to 127
devices, then int16 and the crossover moves to 16). ``wire="auto"`` picks,
leaf by leaf, the exact mode with the fewest bytes (a tie goes to packed, except
on one device, where nothing crosses the wire in any mode and the int8 psum skips
the packing work).
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdtx._core import validation
from gdtx._core.collectives import (
    all_gather_replicated,
    axis_index,
    bound_axis_size,
    check_axis_name,
    sharded_like,
    unsharded,
)

_WIRE_MODES = ("auto", "packed", "bits", "int8", "int16", "int32")
_INT_WIRES = {"int8": jnp.int8, "int16": jnp.int16, "int32": jnp.int32}

# --- what a collective declares it sends: trace-time accounting ----------------------------


class Exchange(NamedTuple):
    """One exchange a gdtx collective made over a mesh axis (see :func:`recording_exchanges`).

    Attributes:
      owner: the public transformation, e.g. ``"gdtx.majority_vote"``.
      axis_name: the axis (or tuple of axes) it exchanged over.
      op: ``"all-gather"`` or ``"all-reduce"``.
      dtype: the element type on the wire, e.g. ``"uint8"``.
      operand_bytes: bytes this device contributes (as ``hlo_collectives`` reads them),
        for the leaf as the collective sees it (the whole leaf on a 1-D mesh).
      num_devices: devices along ``axis_name``.
    """

    owner: str
    axis_name: Any
    op: str
    dtype: str
    operand_bytes: int
    num_devices: int

    @property
    def wire_bytes(self) -> float:
        """Bytes each device sends (and receives) with a ring algorithm.

        ``(N-1) b`` for an all-gather of ``b``-byte operands, ``2 (N-1)/N b`` for
        an all-reduce (reduce-scatter then all-gather), as in :func:`wire_bytes`.
        """
        n_dev = self.num_devices
        if self.op == "all-gather":
            return float((n_dev - 1) * self.operand_bytes)
        return 2.0 * (n_dev - 1) / n_dev * self.operand_bytes


# One log per thread, shared by every copy of this module (pytest's importlib mode may
# import a second copy for the doctests; the collectives record into the first one's).
_EXCHANGES = getattr(sys.modules.get("gdtx.distributed"), "_EXCHANGES", None) or threading.local()


@contextlib.contextmanager
def recording_exchanges() -> Iterator[list[Exchange]]:
    """Collects, while tracing, every exchange the gdtx collectives make.

    Each collective (:func:`majority_vote`, :func:`gdtx.signum_vote`,
    :func:`gdtx.compressed_mean`, :func:`gdtx.error_feedback`) declares what it
    puts on the wire through :func:`record_exchange` when its ``update`` is
    traced; outside this context nothing is recorded and nothing changes. The
    log is per thread and contexts nest (an inner one sees only its own).

    Returns:
      A context manager; it yields the list that receives one
      :class:`Exchange` per collective call and leaf.

    Examples:
      What the packed vote declares for one leaf of 10 coordinates on 4 devices
      (``tests/test_data_parallel.py`` checks the declarations against the HLO):

      >>> with recording_exchanges() as log:
      ...     record_exchange("gdtx.majority_vote", "data", "all-gather", "uint8", 3, 4)
      >>> [(e.op, e.dtype, e.operand_bytes, e.wire_bytes) for e in log]
      [('all-gather', 'uint8', 3, 9.0)]

    References:
      The HLO the declarations are checked against: ``jax.jit(f).lower(...)
      .compile().as_text()`` (https://docs.jax.dev/en/latest/aot.html).
    """
    stack = getattr(_EXCHANGES, "stack", None)
    if stack is None:
        stack = _EXCHANGES.stack = []
    log: list[Exchange] = []
    stack.append(log)
    try:
        yield log
    finally:
        stack.pop()


def record_exchange(
    owner: str, axis_name: Any, op: str, dtype: Any, operand_bytes: int, num_devices: int
) -> None:
    """Declares one exchange (a no-op unless :func:`recording_exchanges` is active).

    A collective transformation calls it while its ``update`` is traced, once
    per collective it issues, so that :func:`gdtx.data_parallel_step` can report
    the bytes sent without compiling anything.

    Args:
      owner: the public transformation, e.g. ``"gdtx.majority_vote"``.
      axis_name: the mesh axis (or tuple of axes) of the exchange.
      op: ``"all-gather"`` or ``"all-reduce"``.
      dtype: the element type on the wire.
      operand_bytes: the bytes this device contributes.
      num_devices: devices along ``axis_name``.

    Returns:
      None.

    Examples:
      >>> from gdtx.distributed import record_exchange, recording_exchanges
      >>> record_exchange("mine", "data", "all-reduce", "float32", 40, 8)  # not recorded
      >>> with recording_exchanges() as log:
      ...     record_exchange("mine", "data", "all-reduce", "float32", 40, 8)
      >>> print(log[0].wire_bytes)
      70.0

    References:
      Ring all-reduce cost ``2 (N-1)/N b``: Patarasuk & Yuan, *Bandwidth
      optimal all-reduce algorithms for clusters of workstations*, JPDC 2009.
    """
    stack = getattr(_EXCHANGES, "stack", None)
    if stack:
        stack[-1].append(
            Exchange(owner, axis_name, op, jnp.dtype(dtype).name, int(operand_bytes), num_devices)
        )


def max_devices(wire: str) -> int:
    """The largest device count at which ``wire`` cannot overflow (exact modes).

    Args:
      wire: a wire mode of :func:`majority_vote` other than ``"auto"``.

    Returns:
      The largest ``N`` whose sum of ``N`` signs the wire's integers hold.

    Examples:
      >>> from gdtx.distributed import max_devices
      >>> max_devices("int8"), max_devices("int16")
      (127, 32767)

    References:
      Bernstein et al., `signSGD with Majority Vote is Communication Efficient
      and Fault Tolerant <https://arxiv.org/abs/1810.05291>`_, ICLR 2019; ring
      all-reduce cost: Patarasuk & Yuan, *Bandwidth optimal all-reduce
      algorithms for clusters of workstations*, JPDC 2009.
    """
    if wire in _INT_WIRES:
        return int(np.iinfo(_INT_WIRES[wire]).max)
    return np.iinfo(np.int32).max  # packed and bits count in int32


def smallest_int_wire(num_devices: int) -> str:
    """The narrowest integer wire whose sum of ``num_devices`` signs cannot overflow.

    Args:
      num_devices: devices that vote.

    Returns:
      ``"int8"``, ``"int16"`` or ``"int32"``.

    Raises:
      ValueError: beyond ``2**31 - 1`` devices.

    Examples:
      >>> from gdtx.distributed import smallest_int_wire
      >>> smallest_int_wire(127), smallest_int_wire(128)
      ('int8', 'int16')

    References:
      Bernstein et al., `signSGD with Majority Vote is Communication Efficient
      and Fault Tolerant <https://arxiv.org/abs/1810.05291>`_, ICLR 2019; ring
      all-reduce cost: Patarasuk & Yuan, *Bandwidth optimal all-reduce
      algorithms for clusters of workstations*, JPDC 2009.
    """
    for wire in ("int8", "int16", "int32"):
        if num_devices <= max_devices(wire):
            return wire
    raise ValueError(f"gdtx.majority_vote: {num_devices} devices overflow an int32 vote.")


def wire_bytes(wire: str, num_devices: int, size: int) -> float:
    """Bytes one device receives to vote on ``size`` coordinates (ring estimate).

    ``(N-1) * operand`` for an all-gather, ``2 (N-1)/N * k * size`` for a ring
    all-reduce of ``k``-byte integers; ``"f32"`` is the uncompressed ``psum``.

    Args:
      wire: ``"packed"``, ``"bits"``, ``"int8"``, ``"int16"``, ``"int32"`` or ``"f32"``.
      num_devices: devices along the axis.
      size: coordinates voted on.

    Returns:
      The bytes, a float for the all-reduces.

    Examples:
      On 8 devices the packed gather and the int8 all-reduce cost the same,
      a quarter of the float32 mean:

      >>> from gdtx.distributed import wire_bytes
      >>> [wire_bytes(w, 8, 1000) for w in ("packed", "int8", "f32")]
      [1750, 1750.0, 7000.0]

    References:
      Bernstein et al., `signSGD with Majority Vote is Communication Efficient
      and Fault Tolerant <https://arxiv.org/abs/1810.05291>`_, ICLR 2019; ring
      all-reduce cost: Patarasuk & Yuan, *Bandwidth optimal all-reduce
      algorithms for clusters of workstations*, JPDC 2009.
    """
    n_dev = num_devices
    if wire == "packed":
        return (n_dev - 1) * -(-size // 4)
    if wire == "bits":
        return (n_dev - 1) * -(-size // 8)
    width = {"int8": 1, "int16": 2, "int32": 4, "f32": 4}[wire]
    return 2 * (n_dev - 1) / n_dev * width * size


def choose_wire(num_devices: int, size: int) -> str:
    """The exact wire mode with the fewest bytes received per device; a tie goes to packed.

    What ``wire="auto"`` picks per leaf (see :func:`wire_bytes`). On one device
    every mode receives nothing, and the integer psum is chosen: the result is
    the same and it skips the packing and unpacking, which on a CPU cost more
    than the rest of a Signum vote step.

    Args:
      num_devices: devices along the axis.
      size: coordinates of the leaf.

    Returns:
      ``"packed"`` or the :func:`smallest_int_wire` of ``num_devices``.

    Examples:
      >>> from gdtx.distributed import choose_wire
      >>> choose_wire(8, 1000), choose_wire(9, 1000), choose_wire(200, 1000)
      ('packed', 'int8', 'int16')
      >>> choose_wire(1, 1000)
      'int8'

    References:
      Bernstein et al., `signSGD with Majority Vote is Communication Efficient
      and Fault Tolerant <https://arxiv.org/abs/1810.05291>`_, ICLR 2019; ring
      all-reduce cost: Patarasuk & Yuan, *Bandwidth optimal all-reduce
      algorithms for clusters of workstations*, JPDC 2009.
    """
    integer = smallest_int_wire(num_devices)
    if num_devices == 1:
        return integer
    # Compare N (N-1) ceil(n/4) with 2 (N-1) k n: integers, so a tie is a tie.
    width = np.dtype(_INT_WIRES[integer]).itemsize
    packed_cost = num_devices * (num_devices - 1) * -(-size // 4)
    ring_cost = 2 * (num_devices - 1) * width * size
    return "packed" if packed_cost <= ring_cost else integer


def _vote_int(g, axis_name, wire, num_devices):
    if num_devices > max_devices(wire):
        raise ValueError(
            f"gdtx.majority_vote: wire={wire!r} overflows with {num_devices} devices on "
            f"axis {axis_name!r} (at most {max_devices(wire)}); use "
            f"{smallest_int_wire(num_devices)!r} or 'auto'."
        )
    return jax.lax.psum(_ternary(g, _INT_WIRES[wire]), axis_name)


def _ternary(g, dtype):
    """sign(g) in ``dtype``, with NaN mapped to 0 (an abstention) rather than undefined."""
    return (g > 0).astype(dtype) - (g < 0).astype(dtype)


def _vote_packed(g, axis_name):
    # Two bits per coordinate, "votes +1" then "votes -1" (both clear: abstain),
    # interleaved and packed eight to a byte: ceil(n/4) bytes. Interleaving keeps a
    # coordinate's bits together; concatenating the two bit planes instead made XLA
    # on CPU materialise the unpacked planes (about 20x slower at 4M coordinates).
    flat = g.reshape(-1)
    n = flat.size
    packed = jnp.packbits(jnp.stack([flat > 0, flat < 0], axis=-1).reshape(-1))
    gathered = all_gather_replicated(packed, axis_name)  # (N, ceil(n/4)) bytes
    planes = jnp.unpackbits(gathered, axis=-1, count=2 * n).reshape(-1, n, 2)
    votes = planes[:, :, 0].astype(jnp.int32) - planes[:, :, 1].astype(jnp.int32)
    return votes.sum(0).reshape(g.shape)


def _zero_votes_up(shape, device_index):
    """The one-bit mode's rule for a zero gradient: +1 iff (device + coordinate) is even."""
    coordinate = jnp.arange(math.prod(shape), dtype=jnp.int32).reshape(shape)
    return (coordinate + device_index) % 2 == 0


def _vote_bits(g, axis_name, num_devices):
    index = axis_index(axis_name)
    up = (g > 0) | (~(g < 0) & _zero_votes_up(g.shape, index))  # NaN counts as zero
    flat = up.reshape(-1)
    n = flat.size
    gathered = all_gather_replicated(jnp.packbits(flat), axis_name)  # (N, ceil(n/8)) bytes
    ups = jnp.unpackbits(gathered, axis=-1, count=n).astype(jnp.int32).sum(0)
    return (2 * ups - num_devices).reshape(g.shape)


def _vote_leaf(g, axis_name, wire, num_devices, owner="gdtx.majority_vote"):
    if g.size == 0:
        return g
    if wire == "auto":
        wire = choose_wire(num_devices, g.size)
    if wire in ("packed", "bits"):
        per_byte = 4 if wire == "packed" else 8
        record_exchange(
            owner, axis_name, "all-gather", jnp.uint8, -(-g.size // per_byte), num_devices
        )
    else:
        dtype = _INT_WIRES[wire]
        size = g.size * np.dtype(dtype).itemsize
        record_exchange(owner, axis_name, "all-reduce", dtype, size, num_devices)
    if wire == "packed":
        total = _vote_packed(unsharded(g), axis_name)
    elif wire == "bits":
        total = _vote_bits(unsharded(g), axis_name, num_devices)
    else:
        total = _vote_int(g, axis_name, wire, num_devices)
    return sharded_like(jnp.sign(total).astype(g.dtype), g)


def _vote(owner: str, updates: Any, axis_name: str | Sequence[str], wire: str) -> Any:
    """The majority vote of ``updates`` over ``axis_name`` (the body of :func:`majority_vote`)."""
    num_devices = bound_axis_size(owner, axis_name)
    return jax.tree.map(lambda g: _vote_leaf(g, axis_name, wire, num_devices, owner), updates)


class MajorityVoteState(NamedTuple):
    """State of :func:`majority_vote`.

    Attributes:
      count: number of updates so far, shape ``()``, int32 (saturating). The vote
        itself keeps nothing; the count makes the state a non-empty tree, which
        Orbax can save (it refuses a bare ``optax.EmptyState()``: "Found empty item").
    """

    count: jax.Array


def majority_vote(
    axis_name: str | tuple[str, ...], *, wire: str = "auto"
) -> optax.GradientTransformationExtraArgs:
    """Replaces each device's update by the majority vote of all devices' signs.

    With ``N`` devices along ``axis_name`` and ``g_k`` device ``k``'s update,

    .. math::

      u = \\operatorname{sign}\\Big(\\sum_{k=1}^{N} \\operatorname{sign}(g_k)\\Big),

    the same on every device, with ``sign(0) = 0``: a zero gradient abstains and
    a tie gives 0. Only signs cross the wire, in one of these encodings:

    - ``"packed"``: two bits per coordinate (a "+1" bit and a "-1" bit; neither is
      an abstention), ``ceil(n/4)`` bytes per leaf of ``n``, exchanged with an
      all-gather and counted locally;
    - ``"bits"``: one bit per coordinate (up or down), all-gathered. It cannot
      encode an abstention, so a **zero gradient votes up on device ``k`` at flat
      coordinate ``i`` iff ``k + i`` is even** (down otherwise). On an even number
      of devices a coordinate that is zero everywhere then ties and stays put; on
      an odd number it moves by one step whose direction alternates along the
      coordinates (never a systematic drift). Exact for gradients that are never
      exactly zero;
    - ``"int8"``, ``"int16"``, ``"int32"``: a summed-sign all-reduce (``psum``).
      A mode that could overflow at ``N`` raises a ``ValueError`` at trace time
      (``int8`` above 127 devices, ``int16`` above 32767);
    - ``"auto"``: per leaf of ``n`` coordinates, the exact mode with the fewest
      bytes received per device: the packed all-gather ``(N-1) ceil(n/4)``, or a
      ring all-reduce ``2 (N-1)/N k n`` of the narrowest integer (``k`` bytes)
      that cannot overflow; a tie goes to packed. At ``2 <= N <= 8`` that is
      packed (for ``n`` a multiple of 4 at exactly 8), above it int8 (int16 past
      127); on one device, where no mode sends anything, int8 (no packing work).

    Parameters must be real: the wire carries signs of real numbers, so ``init``
    raises a ``TypeError`` naming the leaf for a complex (or integer) parameter;
    optimise a complex leaf's real and imaginary parts as two real leaves, whose
    votes are then taken separately. A NaN is treated as a zero (it abstains, or
    follows the one-bit rule), so one worker's NaN cannot poison the others' update.

    The vote keeps nothing but a step count (:class:`MajorityVoteState`; a
    non-empty state, so that Orbax can save it). Updates keep the gradients'
    dtype and, on an ``AxisType.Explicit`` mesh, their sharding (the packed and
    one-bit modes gather an explicitly sharded leaf before packing it); the
    gathered modes return a value that JAX knows is replicated along the axis, so
    ``out_specs=P()`` type-checks under ``jax.shard_map``. ``update`` raises a
    ``ValueError`` naming the axis when it runs where ``axis_name`` is not bound.

    Args:
      axis_name: the bound mesh axis (or a tuple of axes) to vote over.
      wire: ``"auto"``, ``"packed"``, ``"bits"``, ``"int8"``, ``"int16"`` or ``"int32"``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; its ``update`` must run where
      ``axis_name`` is bound.

    Examples:
      Four workers vote on three coordinates; the last worker's zero abstains, so
      the first coordinate is a 1--2 vote (with one abstention), the second a tie:

      >>> import jax, jax.numpy as jnp, gdtx
      >>> grads = jnp.array([[0.3, -1.0, 2.0],
      ...                    [-0.1, 4.0, 1.0],
      ...                    [-2.0, -0.5, 1.0],
      ...                    [0.0, 0.2, -3.0]])
      >>> vote = gdtx.majority_vote("workers", wire="packed")
      >>> state = vote.init(grads[0])
      >>> updates = jax.vmap(lambda g: vote.update(g, state)[0], axis_name="workers")(grads)
      >>> print(updates)
      [[-1.  0.  1.]
       [-1.  0.  1.]
       [-1.  0.  1.]
       [-1.  0.  1.]]

    References:
      Bernstein et al., `signSGD with Majority Vote is Communication Efficient and
      Fault Tolerant <https://arxiv.org/abs/1810.05291>`_, ICLR 2019.
      Official code: https://github.com/jxbz/signSGD
    """
    owner = "gdtx.majority_vote"
    check_axis_name(owner, axis_name)
    validation.check_choice(owner, "wire", wire, _WIRE_MODES)

    def init_fn(params):
        del params
        return MajorityVoteState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        validation.check_like_params(owner, updates, params)
        voted = _vote(owner, updates, axis_name, wire)
        return voted, MajorityVoteState(count=optax.safe_increment(state.count))

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return validation.checking_params(tx, owner, allow_complex=False)


def per_device_specs(state: Any, axis_name: str | tuple[str, ...]) -> Any:
    """``PartitionSpec``s that carry per-device state sharded along ``axis_name``.

    A state field listed in its NamedTuple's ``per_device_fields`` (the worker
    momentum of :func:`gdtx.signum_vote`) has a leading device dimension: length
    one inside ``jax.shard_map``, ``N`` outside. Its leaves get ``P(axis_name)``;
    every other leaf (counts, replicated moments) gets ``P()``.

    Args:
      state: an optimizer state, or its ``jax.eval_shape``.
      axis_name: the mesh axis (or tuple of axes) the devices vote over.

    Returns:
      A tree of ``jax.sharding.PartitionSpec`` with the structure of ``state``,
      for ``in_specs``/``out_specs`` of ``jax.shard_map``.

    Examples:
      >>> import jax, jax.numpy as jnp, gdtx
      >>> tx = gdtx.signum_vote(1e-3, axis_name="data")
      >>> shapes = jax.eval_shape(tx.init, {"w": jnp.zeros(3)})
      >>> vote_state = gdtx.per_device_specs(shapes, "data")[0]
      >>> print(vote_state.count, vote_state.mu["w"])
      P() P('data',)

    References:
      JAX documentation, `Manual parallelism with shard_map
      <https://docs.jax.dev/en/latest/notebooks/shard_map.html>`_.
    """
    spec = jax.sharding.PartitionSpec
    device_spec = spec(axis_name)

    def is_per_device(node):
        return hasattr(type(node), "per_device_fields") and hasattr(node, "_fields")

    def specs(node):
        if not is_per_device(node):
            return jax.tree.map(lambda _: spec(), node)
        fields = {}
        for name in node._fields:
            value = getattr(node, name)
            if name in type(node).per_device_fields:
                fields[name] = jax.tree.map(lambda _: device_spec, value)
            else:
                fields[name] = specs(value)
        return type(node)(**fields)

    return jax.tree.map(specs, state, is_leaf=is_per_device)
