"""The collective plumbing: the one private JAX import, pinned."""

import jax
import jax.numpy as jnp
import numpy as np

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
