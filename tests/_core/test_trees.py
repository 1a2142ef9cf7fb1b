"""Tree plumbing: splitting per-leaf tuples, including the empty tree."""

import jax.numpy as jnp
import optax

from gdtx._core.trees import unzip


def test_unzip_splits_per_leaf_tuples():
    like = {"a": jnp.zeros(2), "b": [jnp.zeros(1)]}
    tuples = {"a": (1, 2, 3), "b": [(4, 5, 6)]}
    assert unzip(tuples, like, 3) == ({"a": 1, "b": [4]}, {"a": 2, "b": [5]}, {"a": 3, "b": [6]})


def test_unzip_of_an_empty_tree_gives_empty_trees():
    # optax.masked with an all-False mask and an unused multi_transform label
    # hand a transformation a tree with no leaves.
    assert unzip({}, {}, 3) == ({}, {}, {})
    masked = {"w": optax.MaskedNode()}
    assert unzip(masked, masked, 2) == (masked, masked)
