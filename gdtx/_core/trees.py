"""Tree plumbing that optax.tree does not provide."""

from __future__ import annotations

from typing import Any

import jax


def unzip(tree_of_tuples: Any, like: Any, n: int) -> tuple[Any, ...]:
    """Splits a tree whose leaves are ``n``-tuples into ``n`` trees shaped like ``like``.

    A per-leaf update function returns (update, new moments...) as one tuple so
    that XLA sees all outputs of a leaf together; this turns the result back
    into one tree per output.
    """
    outer = jax.tree.structure(like)
    if outer.num_leaves == 0:
        # An empty subtree (``optax.masked`` with an all-False mask, an unused
        # ``optax.multi_transform`` label): there are no tuples to transpose.
        return tuple(jax.tree.unflatten(outer, []) for _ in range(n))
    inner = jax.tree.structure((0,) * n)
    return tuple(jax.tree.transpose(outer, inner, tree_of_tuples))
