"""gdtx.diana: DIANA and Artemis (compression with memory), on vmap and 8 CPU devices.

- With an exact (identity) compressor both are the plain mean, whatever the memories.
- With constant gradients the memories converge to the gradients and the compression
  error vanishes (it does not for compressed_mean, nor for alpha = 0).
- The estimate is unbiased over the keys (z-test, as tests/test_compression.py).
- The memories are per-device state under shard_map; only the payloads cross the wire.
- Misuse raises errors naming the function.
"""

from __future__ import annotations

import dataclasses
import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdtx
from gdtx._core.hlo import hlo_collectives
from gdtx.compression import Compressor
from gdtx.diana import ArtemisState, artemis, artemis_wire_bytes, default_alpha, diana
from gdtx.distributed import recording_exchanges
from tests import tiny_digits as td
from tests.hlo_steps import compile_step, leaf_copies

P = jax.sharding.PartitionSpec
# The module (gdtx.diana is also the function, in the package namespace).
diana_module = importlib.import_module("gdtx.diana")
Z_MAX = 6.0


@dataclasses.dataclass(frozen=True)
class Identity(Compressor):
    """A test-local exact "compressor": the payload is the array itself (32 bits a coordinate)."""

    owner = "identity"

    def _compress_leaf(self, key, x):
        del key
        return x

    def _decompress_leaf(self, payload):
        return payload

    def _payload_bits_leaf(self, shape, dtype):
        return 8 * jnp.dtype(dtype).itemsize * math.prod(shape)

    def variance_bound(self, shape, dtype):
        del shape, dtype
        return 0.0


def _run_vmap(tx, grads_seq, state=None):
    """Steps of ``tx`` on ``N`` workers under ``jax.vmap``; grads_seq: (T, N, ...)."""
    if state is None:
        state = jax.vmap(tx.init, axis_name="w")(grads_seq[0])
    step = jax.jit(jax.vmap(tx.update, axis_name="w"))
    outs = []
    for g in grads_seq:
        u, state = step(g, state)
        outs.append(u)
    return outs, state


def _mesh():
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices (tests/conftest.py sets jax_num_cpu_devices)")
    return jax.make_mesh((8,), ("data",))


def _sharded(mesh, x, spec):
    return jax.device_put(x, jax.sharding.NamedSharding(mesh, spec))


# --- exact compressors: the plain mean --------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: diana(Identity(), axis_name="w", alpha=0.37),
        lambda: diana(Identity(), axis_name="w"),
        lambda: artemis(Identity(), axis_name="w", alpha=0.5, down_compressor=Identity()),
        lambda: artemis(
            Identity(),
            axis_name="w",
            alpha=0.9,
            down_compressor=Identity(),
            down_memory=True,
            down_alpha=0.3,
            down_error_feedback=True,
        ),
    ],
    ids=["diana", "diana_default_alpha", "artemis", "artemis_memory_ef"],
)
def test_identity_compressors_give_the_plain_mean(make):
    rng = np.random.default_rng(0)
    grads = jnp.asarray(rng.normal(size=(5, 4, 6)), jnp.float32)
    outs, state = _run_vmap(make(), grads)
    for u, g in zip(outs, grads, strict=True):
        np.testing.assert_allclose(u, jnp.broadcast_to(g.mean(0), u.shape), rtol=1e-5, atol=1e-6)
    assert int(state.count[0]) == 5


def test_identity_memory_moves_by_alpha_and_hbar_is_the_mean_memory():
    rng = np.random.default_rng(1)
    grads = jnp.asarray(rng.normal(size=(3, 4, 5)), jnp.float32)
    _, state = _run_vmap(diana(Identity(), axis_name="w", alpha=0.25), grads)
    h = np.zeros((4, 5))
    for g in np.asarray(grads, np.float64):
        h = h + 0.25 * (g - h)
    np.testing.assert_allclose(state.h[:, 0], h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.hbar, np.broadcast_to(h.mean(0), (4, 5)), atol=1e-6)


# --- constant gradients on 8 devices: the memories learn them --------------------------------


def _constant_run(tx, g, steps):
    """``steps`` updates on 8 devices with device k's gradient ``g[k]``; (errors, state)."""
    mesh = _mesh()
    local = g[0]
    specs = gdtx.per_device_specs(jax.eval_shape(tx.init, local), "data")

    def run(gs):
        gk = gs[0]
        state = tx.init(jnp.zeros(gk.shape, gk.dtype))  # replicated, as params are
        target = jax.lax.pmean(gk, "data")

        def step(state, _):
            u, state = tx.update(gk, state)
            return state, jnp.max(jnp.abs(u - target))

        state, errors = jax.lax.scan(step, state, length=steps)
        return errors, state

    fn = jax.jit(jax.shard_map(run, mesh=mesh, in_specs=P("data"), out_specs=(P(), specs)))
    return fn(_sharded(mesh, g, P("data")))


def test_constant_gradients_the_memory_converges_and_the_error_vanishes():
    rng = np.random.default_rng(2)
    g = jnp.asarray(rng.normal(size=(8, 10)), jnp.float32)
    compressor = gdtx.qsgd(1)
    alpha = default_alpha(compressor, (10,))
    assert alpha == pytest.approx(1 / (2 * (math.sqrt(10) + 1)))
    errors, state = _constant_run(diana(compressor, axis_name="data"), g, 300)
    errors = np.asarray(errors)
    assert isinstance(state, ArtemisState)
    h = np.asarray(state.h)
    assert h.shape == (8, 10), "one memory per device, sharded along data"
    np.testing.assert_allclose(h, g, atol=1e-5)  # h_i -> g_i, each its own
    np.testing.assert_allclose(state.hbar, h.mean(0), atol=1e-5)
    assert errors[0] > 0.1 and errors[-20:].max() < 1e-5, errors[[0, -1]]
    # Without memory (alpha = 0, or compressed_mean) the error stays O(||g||).
    no_memory, _ = _constant_run(diana(compressor, axis_name="data", alpha=0.0), g, 300)
    assert np.asarray(no_memory)[-20:].min() > 1e-2
    cm = gdtx.compressed_mean(compressor, "data")
    mesh = _mesh()

    def cm_run(gs):
        gk, target = gs[0], jax.lax.pmean(gs[0], "data")

        def step(state, _):
            u, state = cm.update(gk, state)
            return state, jnp.max(jnp.abs(u - target))

        return jax.lax.scan(step, cm.init(gk), length=50)[1]

    cm_err = jax.jit(jax.shard_map(cm_run, mesh=mesh, in_specs=P("data"), out_specs=P()))(
        _sharded(mesh, g, P("data"))
    )
    assert np.asarray(cm_err).min() > 1e-2


def test_artemis_downlink_memory_makes_the_broadcast_exact_too():
    rng = np.random.default_rng(3)
    g = jnp.asarray(rng.normal(size=(8, 10)), jnp.float32)
    tx = artemis(gdtx.qsgd(1), axis_name="data", down_compressor=gdtx.qsgd(1), down_memory=True)
    errors, state = _constant_run(tx, g, 400)
    errors = np.asarray(errors)
    assert errors[-20:].max() < 1e-5, errors[-1]
    np.testing.assert_allclose(state.down_memory, g.mean(0), atol=1e-5)
    # Without the downlink memory the broadcast keeps its quantisation noise.
    tx = artemis(gdtx.qsgd(1), axis_name="data", down_compressor=gdtx.qsgd(1))
    errors, _ = _constant_run(tx, g, 100)
    assert np.asarray(errors)[-20:].min() > 1e-2


# --- unbiasedness over the keys -----------------------------------------------------------


def _samples(tx, grads, memories, num_samples, down_memory=None):
    """``num_samples`` first updates from the given memories, one base key each."""
    state = jax.vmap(tx.init, axis_name="w")(grads)
    state = state._replace(
        h=memories[:, None], hbar=jnp.broadcast_to(memories.mean(0), grads.shape)
    )
    if down_memory is not None:
        state = state._replace(down_memory=jnp.broadcast_to(down_memory, grads.shape))

    def one(seed):
        key = jnp.broadcast_to(jax.random.PRNGKey(seed), (grads.shape[0], 2))
        u, _ = jax.vmap(tx.update, axis_name="w")(grads, state._replace(key=key))
        return u[0]

    return np.asarray(jax.jit(jax.vmap(one))(jnp.arange(num_samples)), np.float64)


def _assert_unbiased(samples, mean):
    n = samples.shape[0]
    std = samples.std(0)
    assert np.all(std > 0), "every coordinate is random"
    z = np.abs(samples.mean(0) - mean) / (std / math.sqrt(n))
    assert z.max() <= Z_MAX, z.max()


@pytest.mark.parametrize("which", ["diana", "artemis"])
def test_the_estimate_is_unbiased(which):
    rng = np.random.default_rng(4)
    grads = jnp.asarray(rng.normal(size=(4, 12)), jnp.float32)
    memories = jnp.asarray(rng.normal(size=(4, 12)), jnp.float32)
    if which == "diana":
        tx, down = diana(gdtx.qsgd(2), axis_name="w"), None
    else:
        tx = artemis(gdtx.qsgd(2), axis_name="w", down_compressor=gdtx.qsgd(1), down_memory=True)
        down = jnp.asarray(rng.normal(size=12), jnp.float32)
    samples = _samples(tx, grads, memories, 4000, down)
    _assert_unbiased(samples, np.asarray(grads, np.float64).mean(0))


def test_the_z_test_catches_a_biased_estimate():
    """The mutant: forgetting the mean memory (u = mean of the messages only)."""
    rng = np.random.default_rng(4)
    grads = jnp.asarray(rng.normal(size=(4, 12)), jnp.float32)
    memories = jnp.asarray(rng.normal(size=(4, 12)), jnp.float32)
    samples = _samples(diana(gdtx.qsgd(2), axis_name="w"), grads, memories, 4000)
    with pytest.raises(AssertionError):
        _assert_unbiased(samples - np.asarray(memories.mean(0)), np.asarray(grads).mean(0))


# --- the wire --------------------------------------------------------------------------------


@pytest.mark.parametrize("down", [None, gdtx.qsgd(8)], ids=["diana", "artemis"])
def test_only_the_uplink_payloads_cross_the_wire(down):
    mesh = _mesh()
    compressor = gdtx.qsgd(4, bucket_size=64)
    leaf = {"w": (64, 32), "b": (32,)}
    grads = {k: jnp.ones((8, *s), jnp.float32) for k, s in leaf.items()}
    local = jax.tree.map(lambda x: x[0], grads)
    tx = artemis(compressor, axis_name="data", down_compressor=down)
    specs = gdtx.per_device_specs(jax.eval_shape(tx.init, local), "data")
    assert specs.h["w"] == P("data") and specs.hbar["w"] == P()
    state = jax.jit(jax.shard_map(tx.init, mesh=mesh, in_specs=P(), out_specs=specs))(local)
    fn = jax.jit(
        jax.shard_map(
            lambda g, s: tx.update(jax.tree.map(lambda x: x[0], g), s),
            mesh=mesh,
            in_specs=(P("data"), specs),
            out_specs=(P(), specs),
        )
    )
    args = (_sharded(mesh, grads, P("data")), state)
    with recording_exchanges() as log:
        lowered = fn.lower(*args)
    ops = hlo_collectives(lowered.compile().as_text())
    assert ops and {c.op.removesuffix("-start") for c in ops} == {"all-gather"}, ops
    shapes = {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in leaf.items()}
    sent = sum(c.operand_bytes for c in ops)
    assert 8 * sent == compressor.payload_bits(shapes)
    assert sum(e.operand_bytes for e in log) == sent
    assert all(e.owner == "gdtx.artemis" for e in log)
    wire = artemis_wire_bytes(compressor, shapes, 8, down)
    assert wire["up_sent"] == sent and wire["up_received"] == 7 * sent
    assert wire["down_broadcast"] == (0 if down is None else down.payload_bits(shapes) / 8)


# --- a model that learns ---------------------------------------------------------------------


def _loss_fn(params, batch):
    return td.loss(params, *batch)


@pytest.mark.parametrize(
    "make",
    [
        lambda: diana(gdtx.qsgd(4, bucket_size=128), axis_name="data"),
        lambda: artemis(
            gdtx.qsgd(4, bucket_size=128),
            axis_name="data",
            down_compressor=gdtx.qsgd(8, bucket_size=128),
            down_memory=True,
        ),
    ],
    ids=["diana", "artemis"],
)
def test_data_parallel_step_learns_tiny_digits(make, tiny_digits):
    mesh = _mesh()
    init, step, exchanges = gdtx.data_parallel_step(
        _loss_fn, optax.chain(make(), optax.sgd(0.1, momentum=0.9)), mesh
    )
    params = td.init_params(jax.random.PRNGKey(0))
    start = float(td.loss(params, tiny_digits.x_test, tiny_digits.y_test))
    xs, ys = td.batches(tiny_digits, 64, 60)
    state = init(params)
    assert state[0].h["hidden"]["w"].shape[0] == 8
    for x, y in zip(xs, ys, strict=True):
        params, state, metrics = step(params, state, (x, y))
    # Host copies: an eager op mixing the step's 8-device outputs with single-device test
    # data aborted the process once under xdist (XLA CPU, jax 0.10.2; not reproduced alone).
    params = jax.device_get(params)
    final = float(td.loss(params, tiny_digits.x_test, tiny_digits.y_test))
    assert final < 0.5 * start, (start, final)
    assert 0 < metrics["payload_bytes"] < 0.4 * 4 * 2410


# --- misuse ----------------------------------------------------------------------------------


def test_misuse_raises_errors_naming_the_function():
    with pytest.raises(TypeError, match=r"gdtx\.diana: `compressor` must be a gdtx compressor"):
        diana("qsgd", axis_name="w")
    with pytest.raises(TypeError, match=r"gdtx\.artemis: `compressor` must be a gdtx"):
        artemis(gdtx.qsgd(1), axis_name="w", down_compressor=lambda x: x)
    with pytest.raises(ValueError, match=r"gdtx\.diana: `alpha` must be in \[0, 1\]"):
        diana(gdtx.qsgd(1), axis_name="w", alpha=1.5)
    with pytest.raises(ValueError, match=r"gdtx\.diana: `alpha` must be finite|in \[0, 1\]"):
        diana(gdtx.qsgd(1), axis_name="w", alpha=float("nan"))
    with pytest.raises(TypeError, match=r"gdtx\.diana: `alpha`"):
        diana(gdtx.qsgd(1), axis_name="w", alpha=1j)
    with pytest.raises(ValueError, match=r"gdtx\.diana: the default `alpha`.*pass `alpha`"):
        diana(gdtx.terngrad(), axis_name="w")
    diana(gdtx.terngrad(), axis_name="w", alpha=0.1)  # explicit: fine
    with pytest.raises(ValueError, match=r"gdtx\.artemis: the default `down_alpha`"):
        artemis(gdtx.qsgd(1), axis_name="w", down_compressor=gdtx.scaled_sign(), down_memory=True)
    with pytest.raises(ValueError, match=r"gdtx\.artemis: .*pass `down_compressor`"):
        artemis(gdtx.qsgd(1), axis_name="w", down_memory=True)
    with pytest.raises(TypeError, match=r"gdtx\.artemis: `non_degraded`"):
        artemis(gdtx.qsgd(1), axis_name="w", non_degraded=1)
    with pytest.raises((TypeError, ValueError), match=r"gdtx\.diana: .*axis_name"):
        diana(gdtx.qsgd(1), axis_name=None)
    tx = diana(gdtx.qsgd(1), axis_name="w")
    with pytest.raises(TypeError, match=r"gdtx\.diana updates floating-point parameters only"):
        tx.init({"w": jnp.zeros(3, jnp.int32)})
    state = jax.vmap(tx.init, axis_name="w")(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"gdtx\.diana"):
        jax.vmap(lambda g, s: tx.update(g, s, jnp.zeros(3)), axis_name="w")(
            jnp.zeros((2, 4)), state
        )
    with pytest.raises(ValueError, match=r"gdtx\.diana: the per-device memory has shape"):
        tx.update(jnp.zeros(3), tx.init(jnp.zeros(3))._replace(h=jnp.zeros(3)))


def test_complex_gradients_are_compressed_as_their_real_form():
    rng = np.random.default_rng(5)
    g = rng.normal(size=(4, 6)) + 1j * rng.normal(size=(4, 6))
    grads = jnp.asarray(np.broadcast_to(g, (200, 4, 6)), jnp.complex64)
    outs, state = _run_vmap(diana(gdtx.qsgd(1), axis_name="w"), grads)
    assert outs[-1].dtype == jnp.complex64 and state.h.dtype == jnp.complex64
    np.testing.assert_allclose(outs[-1][0], g.mean(0), atol=1e-5)
    assert default_alpha(gdtx.qsgd(1), (6,), jnp.complex64) == default_alpha(gdtx.qsgd(1), (12,))


# --- the compiled step: the memories are updated in place (issue 21) ------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: diana(gdtx.qsgd(4, bucket_size=4), axis_name="data"),
        lambda: artemis(
            gdtx.qsgd(4, bucket_size=4),
            axis_name="data",
            down_compressor=gdtx.qsgd(8, bucket_size=4),
            down_memory=True,
            down_error_feedback=True,
        ),
        lambda: artemis(
            gdtx.qsgd(4, bucket_size=4),
            axis_name="data",
            down_compressor=gdtx.qsgd(8, bucket_size=4),
            down_memory=True,
            non_degraded=True,
        ),
    ],
    ids=["diana", "artemis_memory_ef", "artemis_nd"],
)
def test_the_compiled_step_copies_no_memory(make):
    # h was written to a temporary and copied back (its update went through the
    # per-device slice and re-stacking), and hbar / the downlink memory H were
    # copied whole because the update the optimizer reads was hbar + ... / omega + H,
    # read with no order against their in-place write (see diana._plus_memory).
    tx = optax.chain(make(), optax.adam(1e-2))
    params = jnp.zeros(4096)
    assert leaf_copies(compile_step(tx, params, params, axis_name="data").as_text()) == []


def test_the_estimate_is_read_from_the_moved_memory_only_in_the_same_dtype():
    rng = np.random.default_rng(3)
    d = jnp.asarray(rng.normal(size=1000), jnp.float32)
    m32 = jnp.asarray(rng.normal(size=1000), jnp.float32)
    a = 0.3
    moved = diana_module._move(m32, d, a)
    got = diana_module._plus_memory(d, m32, moved, a)
    np.testing.assert_array_equal(got, (m32 + a * d) + (1 - a) * d)
    exact = np.asarray(m32, np.float64) + np.asarray(d, np.float64)
    # Rounding only: a few ulps of the larger operand (three roundings instead of one).
    ulp = np.spacing(np.maximum(np.abs(m32), np.abs(d)))
    assert np.max(np.abs(np.asarray(got, np.float64) - exact) / ulp) <= 2
    # A bfloat16 memory: the estimate is d + m from the memory itself, never from
    # its rounded new value (which would lose 16 bits of the estimate).
    m16 = m32.astype(jnp.bfloat16)
    moved16 = diana_module._move(m16, d, a)
    np.testing.assert_array_equal(
        diana_module._plus_memory(d, m16, moved16, a), d + m16.astype(jnp.float32)
    )
