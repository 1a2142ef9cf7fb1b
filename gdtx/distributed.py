"""Collectives over a named mesh axis: the sign majority vote, and what collectives share.

Every collective of gdtx (:func:`majority_vote`, :func:`gdtx.signum_vote`,
:func:`gdtx.compressed_mean`, :func:`gdtx.error_feedback`) shares the helpers
here: :func:`bound_axis_size` (a ``ValueError`` naming the transformation, the
axis and the fix when ``update`` runs where the axis is not bound),
:func:`as_per_device` / :func:`local_view` (the layout of per-device state, typed
varying when made inside ``jax.shard_map``), and :func:`unsharded` /
:func:`sharded_like` (leaves explicitly sharded on an ``AxisType.Explicit`` mesh
are gathered before packing and the results resharded like the input).

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
leaf by leaf, the exact mode with the fewest bytes (a tie goes to packed).
"""

from __future__ import annotations

import contextlib
import math
import re
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdtx._core import validation

_P = jax.sharding.PartitionSpec

WIRE_MODES = ("auto", "packed", "bits", "int8", "int16", "int32")
_INT_WIRES = {"int8": jnp.int8, "int16": jnp.int16, "int32": jnp.int32}

try:  # Varying -> invariant all-gather, so shard_map's out_specs=P() type-checks.
    from jax._src.lax.parallel import all_gather_invariant as _all_gather_invariant
except ImportError:  # pragma: no cover - a JAX without it: the plain gather moves the same bytes
    _all_gather_invariant = jax.lax.all_gather


def axis_names(axis_name: str | Sequence[str]) -> tuple:
    """``axis_name`` as a tuple of names (one name, or a tuple/list of them)."""
    return tuple(axis_name) if isinstance(axis_name, tuple | list) else (axis_name,)


def in_shard_map(x: Any, axis_name: str | Sequence[str]) -> bool:
    """Whether every name of ``axis_name`` is a manual axis of ``x``'s mesh (bound by shard_map)."""
    mesh = getattr(getattr(jax.typeof(x), "sharding", None), "mesh", None)
    if mesh is None:
        return False
    manual = {
        name
        for name, kind in zip(mesh.axis_names, mesh.axis_types, strict=True)
        if kind == jax.sharding.AxisType.Manual
    }
    return all(name in manual for name in axis_names(axis_name))


def all_gather_replicated(x: jax.Array, axis_name: str | Sequence[str]) -> jax.Array:
    """All-gathers ``x``, typed as replicated where the binding of the axis tracks that.

    Under ``jax.shard_map`` (the axis is a manual mesh axis of ``x``) the gather
    is the invariant one, so a replicated ``out_specs`` type-checks; any other
    binding (``jax.vmap``, ``pmap``) gets the plain gather, which moves the same bytes.
    """
    if in_shard_map(x, axis_name):
        return _all_gather_invariant(x, axis_name)
    return jax.lax.all_gather(x, axis_name)


def check_axis_name(owner: str, axis_name: Any, *, optional: bool = False) -> None:
    """Raises ``TypeError`` unless ``axis_name`` is a name or a non-empty tuple/list of names."""
    if axis_name is None and optional:
        return
    names = axis_name if isinstance(axis_name, tuple | list) else (axis_name,)
    if not names or not all(isinstance(n, str) for n in names):
        expected = "a mesh axis name (a str) or a tuple of them" + (", or None" if optional else "")
        raise TypeError(f"{owner}: `axis_name` must be {expected}, got {axis_name!r}.")


def bound_axis_size(owner: str, axis_name: str | Sequence[str]) -> int:
    """The number of devices along ``axis_name``; a gdtx error if it is not bound here.

    Raises:
      ValueError: naming ``owner``, the axis and the fix, when ``update`` runs
        where ``axis_name`` (or one of its names) is not bound (instead of JAX's
        bare ``NameError: unbound axis name``).
    """
    size = 1
    for name in axis_names(axis_name):
        try:
            size *= jax.lax.axis_size(name)
        except NameError as error:
            raise ValueError(
                f"{owner}: the mesh axis {name!r} of axis_name={axis_name!r} is not bound "
                f"where `update` runs. A collective must run per device: call `update` inside "
                f"jax.shard_map over a mesh that has the axis (e.g. `jax.shard_map(step, "
                f"mesh=jax.make_mesh((n,), ({name!r},)), in_specs=..., out_specs=...)`, with "
                f"gdtx.per_device_specs(state, axis_name) for the state), or inside "
                f"jax.vmap(..., axis_name={name!r}); check the name if one is bound."
            ) from error
    return size


def axis_index(axis_name: str | Sequence[str]) -> jax.Array:
    """This device's index along ``axis_name`` (row-major over a tuple of axes)."""
    index = jnp.zeros([], jnp.int32)
    for name in axis_names(axis_name):
        index = index * jax.lax.axis_size(name) + jax.lax.axis_index(name)
    return index


def as_per_device(x: jax.Array, axis_name: str | Sequence[str], *, init: bool) -> jax.Array:
    """``x`` with a leading device dimension of length one: a per-device state leaf.

    Every collective with per-device state (the momentum of
    :func:`gdtx.signum_vote`, the residual of :func:`gdtx.error_feedback`) stores
    its leaves through this helper, at ``init`` and after each ``update``. At
    ``init`` inside ``jax.shard_map`` the leaf is also typed *varying* over the
    axis: zeros built from replicated parameters are replicated in shard_map's
    types, but the state becomes per-device after one step, and without the cast
    a ``lax.scan`` over steps sees its carry change type. After an ``update`` the
    leaf keeps the type the step gave it (varying once the gradients are).
    """
    x = x[None]
    manual = getattr(jax.typeof(x), "manual_axis_type", None)
    if not init or manual is None or not in_shard_map(x, axis_name):
        return x
    missing = tuple(n for n in axis_names(axis_name) if n not in manual.varying)
    return jax.lax.pcast(x, missing, to="varying") if missing else x


def local_view(owner: str, x: jax.Array, what: str) -> jax.Array:
    """This device's slice of a per-device state leaf (see :func:`as_per_device`).

    Raises:
      ValueError: unless the leaf has a leading device dimension of length one.
    """
    if x.ndim == 0 or x.shape[0] != 1:
        raise ValueError(
            f"{owner}: the per-device {what} has shape {x.shape}, but inside the "
            "collective each device must see a leading device dimension of length 1. "
            "Initialise and carry the state through jax.shard_map with "
            "gdtx.per_device_specs(state, axis_name) as its in/out specs."
        )
    return x[0]


def _explicit_sharding(x: Any) -> Any:
    sharding = getattr(jax.typeof(x), "sharding", None)
    spec = getattr(sharding, "spec", None)
    if spec is None or all(part is None for part in spec):
        return None
    return sharding


def unsharded(x: jax.Array) -> jax.Array:
    """``x`` replicated over the mesh axes it is *explicitly* sharded along (else ``x``).

    Packing, sorting and whole-leaf norms need the whole leaf. On an
    ``AxisType.Explicit`` mesh JAX refuses to reshape or sort a sharded
    dimension (``ShardingTypeError``), so the leaf is gathered first; under
    ``Auto`` axes (and inside ``shard_map``'s manual axes) this is a no-op and the
    compiler places the data as before.
    """
    sharding = _explicit_sharding(x)
    if sharding is None:
        return x
    return jax.sharding.reshard(x, jax.sharding.NamedSharding(sharding.mesh, _P()))


def sharded_like(y: jax.Array, x: jax.Array) -> jax.Array:
    """``y`` resharded like ``x`` where ``x`` is explicitly sharded (else ``y``)."""
    sharding = _explicit_sharding(x)
    if sharding is None or np.shape(y) != np.shape(x):
        return y
    return jax.sharding.reshard(y, sharding)


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

    Yields:
      The list that receives one :class:`Exchange` per collective call and leaf.

    Examples:
      What the packed vote declares for one leaf of 10 coordinates on 4 devices
      (``tests/test_data_parallel.py`` checks the declarations against the HLO):

      >>> with recording_exchanges() as log:
      ...     record_exchange("gdtx.majority_vote", "data", "all-gather", "uint8", 3, 4)
      >>> [(e.op, e.dtype, e.operand_bytes, e.wire_bytes) for e in log]
      [('all-gather', 'uint8', 3, 9.0)]
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
    """Declares one exchange (a no-op unless :func:`recording_exchanges` is active)."""
    stack = getattr(_EXCHANGES, "stack", None)
    if stack:
        stack[-1].append(
            Exchange(owner, axis_name, op, jnp.dtype(dtype).name, int(operand_bytes), num_devices)
        )


def max_devices(wire: str) -> int:
    """The largest device count at which ``wire`` cannot overflow (exact modes)."""
    if wire in _INT_WIRES:
        return int(np.iinfo(_INT_WIRES[wire]).max)
    return np.iinfo(np.int32).max  # packed and bits count in int32


def smallest_int_wire(num_devices: int) -> str:
    """The narrowest integer wire whose sum of ``num_devices`` signs cannot overflow."""
    for wire in ("int8", "int16", "int32"):
        if num_devices <= max_devices(wire):
            return wire
    raise ValueError(f"gdtx.majority_vote: {num_devices} devices overflow an int32 vote.")


def wire_bytes(wire: str, num_devices: int, size: int) -> float:
    """Bytes one device receives to vote on ``size`` coordinates (ring estimate).

    ``(N-1) * operand`` for an all-gather, ``2 (N-1)/N * k * size`` for a ring
    all-reduce of ``k``-byte integers; ``"f32"`` is the uncompressed ``psum``.
    """
    n_dev = num_devices
    if wire == "packed":
        return (n_dev - 1) * -(-size // 4)
    if wire == "bits":
        return (n_dev - 1) * -(-size // 8)
    width = {"int8": 1, "int16": 2, "int32": 4, "f32": 4}[wire]
    return 2 * (n_dev - 1) / n_dev * width * size


def choose_wire(num_devices: int, size: int) -> str:
    """The exact wire mode with the fewest bytes received per device; a tie goes to packed."""
    integer = smallest_int_wire(num_devices)
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


def vote(owner: str, updates: Any, axis_name: str | Sequence[str], wire: str) -> Any:
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
      that cannot overflow; a tie goes to packed. At ``N <= 8`` that is packed
      (for ``n`` a multiple of 4 at exactly 8), above it int8 (int16 past 127).

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
    validation.check_choice(owner, "wire", wire, WIRE_MODES)

    def init_fn(params):
        del params
        return MajorityVoteState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        validation.check_like_params(owner, updates, params)
        voted = vote(owner, updates, axis_name, wire)
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


# --- what crosses the wire: collectives in compiled HLO ---------------------------------

_COLLECTIVE_OPS = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_HLO_INSTRUCTION = re.compile(
    r"=\s*(?P<type>\(.*?\)|\S+)\s+(?P<op>(?:" + "|".join(_COLLECTIVE_OPS) + r")(?:-start)?)\("
)
_HLO_ARRAY = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")
_GROUPS = re.compile(r"replica_groups=\{\{([\d,]*)\}")
_IOTA_GROUPS = re.compile(r"replica_groups=\[([\d,]+)\]<=")  # [groups,size]<=[n]
_MESH_GROUPS = re.compile(r"replica_groups=mesh\[([^\]]*)\][^{]*\{([^}]*)\}")
_ITEMSIZE = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2}
_ITEMSIZE.update({"s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8})
_ITEMSIZE["c128"] = 16


class Collective(NamedTuple):
    """One collective in compiled HLO (see :func:`hlo_collectives`).

    Attributes:
      op: the HLO opcode, e.g. ``"all-gather"`` or ``"all-reduce-start"``.
      dtypes: the element types it moves, e.g. ``("u8",)``.
      operand_bytes: bytes each device contributes (its operands).
      group_size: devices in its replica group (0 when the HLO does not say).
    """

    op: str
    dtypes: tuple[str, ...]
    operand_bytes: int
    group_size: int


def _group_size(line: str) -> int:
    """Devices per replica group, from the explicit, iota or mesh-axes form (0: unknown)."""
    groups = _GROUPS.search(line)
    if groups:
        return len(groups.group(1).split(",")) if groups.group(1) else 0
    iota = _IOTA_GROUPS.search(line)
    if iota:
        return int(iota.group(1).split(",")[-1])
    mesh = _MESH_GROUPS.search(line)
    if mesh:
        sizes = dict(re.findall(r"'([^']+)'=(\d+)", mesh.group(1)))
        named = re.findall(r"'([^']+)'", mesh.group(2))
        return math.prod(int(sizes[n]) for n in named if n in sizes) if named else 0
    return 0


def hlo_collectives(hlo_text: str) -> list[Collective]:
    """The collectives of a compiled HLO module, with the bytes each device sends.

    Reads ``jax.jit(f).lower(...).compile().as_text()``: synchronous ops and the
    ``-start`` halves of asynchronous ones (never the ``-done`` halves, so nothing
    is counted twice). An all-gather's operand is its result divided by the group
    size (or the first element of an async start's tuple); an all-reduce's
    operands are its results.
    """
    found = []
    for line in hlo_text.splitlines():
        match = _HLO_INSTRUCTION.search(line)
        if match is None:
            continue
        op = match.group("op")
        arrays = [
            (dtype, math.prod(int(d) for d in dims.split(",") if d))
            for dtype, dims in _HLO_ARRAY.findall(match.group("type"))
            if dtype in _ITEMSIZE
        ]
        group_size = _group_size(line)
        sizes = [_ITEMSIZE[dtype] * count for dtype, count in arrays]
        if op == "all-gather-start" and len(sizes) >= 2:
            operand = sum(sizes[: len(sizes) // 2])  # ((operands...), (results...))
        elif op.startswith("all-gather"):
            operand = sum(sizes) // max(group_size, 1)
        elif op.startswith("reduce-scatter"):
            operand = sum(sizes) * max(group_size, 1)
        else:  # all-reduce(-start), all-to-all, collective-permute: results shaped like operands
            operand = sum(sizes)
        dtypes_moved = tuple(sorted({dtype for dtype, _ in arrays}))
        found.append(Collective(op, dtypes_moved, operand, group_size))
    return found
