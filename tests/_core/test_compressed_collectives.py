"""The exchange of the compressed collectives, against each worker's payload decoded on its own."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdtx
from gdtx._core import compressed_collectives as cc
from gdtx.distributed import recording_exchanges

_GRADS = np.array([[1.0, -2.0, 0.5], [1.0, 0.0, -0.25], [3.0, 1.0, 2.0], [-1.0, -1.0, 0.0]])


def test_gather_mean_is_the_numpy_mean_of_every_workers_own_decoded_payload():
    compressor = gdtx.qsgd(2)
    grads = jnp.asarray(_GRADS, jnp.float32)
    worker_keys = jax.random.split(jax.random.PRNGKey(5), 4)

    def worker(key, g):
        payload = compressor.compress(key, {"w": g})
        return cc.gather_mean(compressor, payload, {"w": g}, "workers", "gdtx.owner")["w"]

    with recording_exchanges() as log:
        means = jax.vmap(worker, axis_name="workers")(worker_keys, grads)
    # Each worker's message decoded alone (no collective), then averaged in NumPy.
    own = [
        np.asarray(compressor.decompress(compressor.compress(k, {"w": g}))["w"], np.float64)
        for k, g in zip(worker_keys, grads, strict=True)
    ]
    expected = np.mean(own, axis=0)
    for row in np.asarray(means):  # the same mean on every worker
        np.testing.assert_allclose(row, expected, rtol=1e-6)
    # One all-gather per payload leaf (QSGD: the words and the scales), of its own bytes.
    payload = compressor.compress(worker_keys[0], {"w": grads[0]})
    sizes = sorted(leaf.nbytes for leaf in jax.tree.leaves(payload))
    assert [e.op for e in log] == ["all-gather"] * 2
    assert {e.owner for e in log} == {"gdtx.owner"} and {e.num_devices for e in log} == {4}
    assert sorted(e.operand_bytes for e in log) == sizes


def test_gather_mean_returns_the_gradients_dtype():
    # bfloat16 gradients: the mean is computed in float32 and comes back in bfloat16.
    compressor = gdtx.scaled_sign()
    grads = jnp.asarray(_GRADS, jnp.bfloat16)

    def worker(g):
        payload = compressor.compress(jax.random.PRNGKey(0), g)
        return cc.gather_mean(compressor, payload, g, "workers", "gdtx.owner")

    means = jax.vmap(worker, axis_name="workers")(grads)
    assert means.dtype == jnp.bfloat16
    decoded = [
        np.asarray(compressor.decompress(compressor.compress(jax.random.PRNGKey(0), g)), np.float32)
        for g in grads
    ]
    expected = np.asarray(jnp.asarray(np.mean(decoded, axis=0), jnp.bfloat16), np.float32)
    np.testing.assert_array_equal(np.asarray(means[0], np.float32), expected)


def test_an_empty_payload_sends_nothing_and_returns_the_like_tree():
    like = {"w": jnp.ones(3)}
    with recording_exchanges() as log:
        out = jax.vmap(
            lambda _: cc.gather_mean(gdtx.qsgd(1), {}, like, "workers", "gdtx.owner"),
            axis_name="workers",
        )(jnp.zeros(2))
    assert log == []
    np.testing.assert_array_equal(out["w"], np.ones((2, 3)))


def test_check_compressor_accepts_subclasses_and_names_the_owner_otherwise():
    class Mine(gdtx.Compressor):
        pass

    cc.check_compressor("gdtx.owner", gdtx.terngrad(), gdtx.Compressor)
    cc.check_compressor("gdtx.owner", Mine(), gdtx.Compressor)  # a user's own compressor
    with pytest.raises(
        TypeError, match=r"gdtx\.owner: `compressor` must be a gdtx compressor.*got 'qsgd'"
    ):
        cc.check_compressor("gdtx.owner", "qsgd", gdtx.Compressor)
