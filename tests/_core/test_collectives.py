"""The collective plumbing: the one private JAX import, pinned."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdtx._core import collectives


def test_the_invariant_all_gather_is_jaxs_own():
    # gdtx imports it from jax._src (no public name in jax 0.10). If JAX moves or
    # renames it, the import in gdtx/_core/collectives.py fails loudly; this test
    # says where to look, and checks it is still the primitive gdtx relies on.
    from jax._src.lax import parallel

    assert collectives._all_gather_invariant is parallel.all_gather_invariant


def test_all_gather_replicated_types_a_replicated_result_under_shard_map():
    mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    P = jax.sharding.PartitionSpec

    def gather(x):
        local = jax.lax.pcast(x, "data", to="varying")
        return collectives.all_gather_replicated(local, "data")

    # out_specs=P() type-checks only if the gathered value is invariant over "data"
    fn = jax.jit(jax.shard_map(gather, mesh=mesh, in_specs=P(), out_specs=P()))
    np.testing.assert_array_equal(fn(jnp.arange(3.0)), [[0.0, 1.0, 2.0]])


@pytest.mark.parametrize(
    ("devices", "varying", "gathers"),
    [(1, False, False), (1, True, True), (2, False, True)],
    ids=["one_device_invariant", "one_device_varying", "two_devices_invariant"],
)
def test_only_a_one_device_gather_of_an_invariant_value_is_skipped(devices, varying, gathers):
    # XLA:CPU keeps a one-participant all-gather: a copy of the leaf into a fresh
    # buffer (17 ms at 1e7 float32). On one device an invariant x gathers to x[None],
    # value and type; a varying x needs the collective for its invariant type (no
    # varying -> invariant cast), and on more devices "invariant" is not proof of
    # equal values (check_vma=False types everything invariant).
    mesh = jax.make_mesh((devices,), ("data",), devices=jax.devices()[:devices])
    P = jax.sharding.PartitionSpec

    def gather(x):
        local = jax.lax.pcast(x, "data", to="varying") if varying else x
        return collectives.all_gather_replicated(local, "data")

    fn = jax.jit(jax.shard_map(gather, mesh=mesh, in_specs=P(), out_specs=P()))
    x = jnp.arange(3.0)
    np.testing.assert_array_equal(fn(x), np.broadcast_to(np.arange(3.0), (devices, 3)))
    assert ("all-gather" in fn.lower(x).compile().as_text()) == gathers
