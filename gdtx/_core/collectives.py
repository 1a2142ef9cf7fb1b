"""What every gdtx collective shares: axes, per-device state, explicit sharding.

Private plumbing of the collective transformations (:mod:`gdtx.distributed`,
:mod:`gdtx.compression`, :mod:`gdtx.diana`, :mod:`gdtx.robust`,
:mod:`gdtx.local_sgd`, ...): :func:`bound_axis_size` (a ``ValueError`` naming the
transformation, the axis and the fix when ``update`` runs where the axis is not
bound), :func:`as_per_device` / :func:`local_view` (the layout of per-device
state, typed varying when made inside ``jax.shard_map``), :func:`unsharded` /
:func:`sharded_like` (leaves explicitly sharded on an ``AxisType.Explicit`` mesh
are gathered before packing and the results resharded like the input), and
:func:`all_gather_replicated`, the one place gdtx imports from ``jax._src``
(``tests/_core/test_collectives.py`` fails if JAX moves it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Varying -> invariant all-gather, so shard_map's out_specs=P() type-checks. Not public
# in jax 0.10; no fallback: a plain gather would type the result varying and break
# every replicated out_specs, so an ImportError here is the signal to update.
from jax._src.lax.parallel import all_gather_invariant as _all_gather_invariant

_P = jax.sharding.PartitionSpec


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
    On a one-device axis an ``x`` already invariant there is returned as ``x[None]``
    (see :func:`_gather_is_identity`).
    """
    if in_shard_map(x, axis_name):
        if _gather_is_identity(x, axis_name):
            return x[None]
        return _all_gather_invariant(x, axis_name)
    return jax.lax.all_gather(x, axis_name)


def _gather_is_identity(x: jax.Array, axis_name: str | Sequence[str]) -> bool:
    """Whether gathering ``x`` over a one-device ``axis_name`` is ``x[None]`` in value and type.

    One participant: the gather's value is ``x[None]``. Its type is invariant over
    the axis, so the shortcut is taken only when ``x`` is typed neither varying nor
    unreduced there (``jax.lax.pcast`` has no varying -> invariant cast). Why skip:
    XLA:CPU keeps a one-participant all-gather, a copy into a fresh leaf-sized buffer
    (17 ms at 1e7 float32, against 2 ms for a copy into a donated one).
    """
    if math.prod(jax.lax.axis_size(name) for name in axis_names(axis_name)) != 1:
        return False
    manual = getattr(jax.typeof(x), "manual_axis_type", None)
    if manual is None:
        return False
    return not set(axis_names(axis_name)) & (set(manual.varying) | set(manual.unreduced))


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


def check_per_device(owner, updates, axis_name):
    """Refuses gradients that ``jax.shard_map`` already knows to be equal on every device.

    Under ``shard_map``, ``jax.grad`` with respect to replicated parameters
    all-reduces the gradient in float32 in the backward pass, so a compressor
    placed after it would compress the sum and save nothing.
    """
    names = axis_names(axis_name)
    leaves = [x for x in jax.tree.leaves(updates) if getattr(x, "size", 0)]
    if not leaves or not in_shard_map(leaves[0], axis_name):
        return  # another binding of the axis (vmap): no replication types to read
    manual = [getattr(jax.typeof(x), "manual_axis_type", None) for x in leaves]
    if any(m is None for m in manual):
        return
    if math.prod(jax.lax.axis_size(name) for name in names) == 1:
        return
    if not any(set(names) & set(m.varying) for m in manual):
        raise ValueError(
            f"{owner}: the updates are already the same on every device of {axis_name!r} "
            "(replicated in shard_map's types): jax.grad with respect to replicated "
            "parameters all-reduces the gradient in float32 before the compressor sees it. "
            f"Differentiate with respect to jax.lax.pcast(params, {axis_name!r}, "
            "to='varying') so that each device compresses its own gradient."
        )
