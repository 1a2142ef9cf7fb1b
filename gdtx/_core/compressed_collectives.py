"""What the data-parallel transformations over a gdtx compressor share.

Private plumbing of :func:`gdtx.compressed_mean`, :func:`gdtx.error_feedback`,
:func:`gdtx.diana` and :func:`gdtx.artemis`: :func:`check_compressor` (the
``TypeError`` for anything that is not a gdtx compressor) and
:func:`gather_mean`, the one exchange they make: every worker's payload is
all-gathered (payloads are not summed: each carries its own scales), each is
decoded locally and the decoded gradients are averaged, so only the payloads
cross the wire and the result is replicated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from gdtx._core import dtypes
from gdtx._core.collectives import all_gather_replicated, axis_names, sharded_like
from gdtx.distributed import record_exchange


def check_compressor(owner: str, compressor: Any, base: type) -> None:
    """Raises ``TypeError`` naming ``owner`` unless ``compressor`` is a ``base`` instance.

    ``base`` is :class:`gdtx.Compressor`, passed in by the caller: the class is
    public API of :mod:`gdtx.compression`, which imports this module.
    """
    if not isinstance(compressor, base):
        raise TypeError(
            f"{owner}: `compressor` must be a gdtx compressor (gdtx.qsgd, gdtx.terngrad, "
            f"gdtx.atomo, gdtx.scaled_sign), got {compressor!r}."
        )


def gather_mean(
    compressor: Any,
    payload: Any,
    like: Any,
    axis_name: str | Sequence[str],
    owner: str,
) -> Any:
    """All-gathers every worker's payload, decodes each, and averages locally.

    Args:
      compressor: the compressor that made ``payload`` (its ``decompress`` is
        mapped over the gathered device axis).
      payload: this worker's payload tree.
      like: a tree shaped like the decoded payload (the gradients); each mean
        comes back in its leaf's dtype and, on an ``AxisType.Explicit`` mesh,
        sharded like it. An empty ``payload`` returns ``like`` itself.
      axis_name: the bound mesh axis (or tuple of axes) of the workers.
      owner: the public transformation, recorded with each exchange.

    Returns:
      The mean over the workers of the decoded payloads, shaped like ``like``.
    """
    if not jax.tree.leaves(payload):  # an empty (e.g. fully masked) tree: nothing to send
        return like
    num_devices = math.prod(jax.lax.axis_size(name) for name in axis_names(axis_name))
    for leaf in jax.tree.leaves(payload):
        size = leaf.size * leaf.dtype.itemsize
        record_exchange(owner, axis_name, "all-gather", leaf.dtype, size, num_devices)
    gathered = jax.tree.map(lambda a: all_gather_replicated(a, axis_name), payload)
    decoded = jax.vmap(compressor.decompress)(gathered)

    def mean(d, g):
        return sharded_like(jnp.mean(d.astype(dtypes.compute_dtype(d)), axis=0).astype(g.dtype), g)

    return jax.tree.map(mean, decoded, like)
