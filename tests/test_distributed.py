"""The sign majority vote on 8 simulated CPU devices (tests/conftest.py sets the count).

- Every exact wire mode equals a NumPy majority vote (zeros abstain, ties give 0)
  on random gradients with zeros, exact ties and leaves of awkward sizes; the
  one-bit mode equals NumPy applying its documented zero rule.
- The compiled HLO shows what crosses the wire: byte all-gathers of at most
  sum(ceil(n/4)) (packed) or sum(ceil(n/8)) (bits) bytes per device, s8
  all-reduces for int8, and no float collective in any mode.
- Overflow is never silent: int8 raises above 127 devices and "auto" widens.
- Two real processes on loopback vote like one process (subprocesses with a
  timeout, in their own xdist group).
"""

from __future__ import annotations

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import gdtx
from gdtx import distributed
from gdtx._core import hlo
from tests.two_processes import run_two_processes

N_DEV = 8
EXACT = ("packed", "int8", "int16", "int32", "auto")
ALL_WIRES = EXACT + ("bits",)
SHAPES = {"a": (37,), "b": (5, 3), "c": (), "d": (4, 8), "e": (0,), "f": (6, 7, 3)}


def _mesh(n=N_DEV):
    if jax.default_backend() != "cpu":
        pytest.skip(
            "simulated devices are CPU devices: on an accelerator machine use JAX_PLATFORMS=cpu"
        )
    return jax.make_mesh((n,), ("data",), devices=jax.devices()[:n])


def _random_grads(rng, n_dev=N_DEV, shapes=SHAPES):
    """Per-device gradients (leading axis = device) with zeros and exact ties.

    Values are drawn from {-2, -1, 0, 1, 2} * |noise| so that sums of signs hit 0
    (ties) often and some coordinates are zero on every device.
    """
    grads = {}
    for name, shape in shapes.items():
        levels = rng.choice([-2.0, -1.0, 0.0, 0.0, 1.0, 2.0], size=(n_dev, *shape))
        g = levels * (0.5 + rng.random((n_dev, *shape)))
        flat = g.reshape(n_dev, -1)
        if flat.shape[1] > 2:
            flat[:, 0] = 0.0  # a coordinate no device moves
            flat[:, 1] = np.where(np.arange(n_dev) % 2 == 0, 1.5, -0.25)  # an exact 4-4 tie
        grads[name] = g.astype(np.float32)
    grads["h"] = (rng.standard_normal((n_dev, 9)) * 3).astype(jnp.bfloat16)
    return grads


def numpy_vote(stacked):
    """sign(sum_k sign(g_k)): zeros abstain, ties give 0."""
    g = np.asarray(stacked, np.float64)
    return np.sign(np.sign(g).sum(axis=0))


def numpy_bits_vote(stacked):
    """The one-bit rule of gdtx.majority_vote: zero votes up iff device + coordinate is even."""
    g = np.asarray(stacked, np.float64)
    n_dev = g.shape[0]
    flat = g.reshape(n_dev, -1)
    parity = (np.arange(n_dev)[:, None] + np.arange(flat.shape[1])[None, :]) % 2 == 0
    up = (flat > 0) | ((flat == 0) & parity)
    total = 2 * up.sum(axis=0) - n_dev
    return np.sign(total).reshape(g.shape[1:])


def _vote_fn(wire, mesh, out_spec=None):
    out_spec = P("data") if out_spec is None else out_spec
    tx = gdtx.majority_vote("data", wire=wire)

    def body(g):
        local = jax.tree.map(lambda x: x[0], g)
        updates, _ = tx.update(local, tx.init(local))
        return jax.tree.map(lambda u: u[None], updates) if out_spec == P("data") else updates

    return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P("data"), out_specs=out_spec))


def _shard(tree, mesh):
    return jax.device_put(tree, NamedSharding(mesh, P("data")))


# --- equivalence with NumPy ----------------------------------------------------------


@pytest.mark.parametrize("wire", EXACT)
def test_exact_modes_equal_numpy_majority_vote(wire):
    rng = np.random.default_rng(1)
    mesh = _mesh()
    grads = _random_grads(rng)
    out = jax.device_get(_vote_fn(wire, mesh)(_shard(grads, mesh)))
    ties = 0
    for name, g in grads.items():
        expected = numpy_vote(g)
        ties += int(np.sum((expected == 0) & np.any(np.asarray(g, np.float32) != 0, axis=0)))
        assert out[name].dtype == g.dtype, name
        for device in range(N_DEV):  # every device applies the same vote
            np.testing.assert_array_equal(np.asarray(out[name][device], np.float64), expected)
    assert ties >= 10, "the test data must contain real ties"


def test_bits_mode_equals_numpy_with_its_zero_rule():
    rng = np.random.default_rng(2)
    mesh = _mesh()
    grads = _random_grads(rng)
    out = jax.device_get(_vote_fn("bits", mesh)(_shard(grads, mesh)))
    differs = 0
    for name, g in grads.items():
        expected = numpy_bits_vote(g)
        differs += int(np.sum(expected != numpy_vote(g)))
        for device in range(N_DEV):
            np.testing.assert_array_equal(np.asarray(out[name][device], np.float64), expected)
    assert differs > 0, "with zeros the one-bit rule must differ from abstention somewhere"


@pytest.mark.parametrize("wire", ALL_WIRES)
def test_a_nan_counts_as_a_zero(wire):
    rng = np.random.default_rng(5)
    mesh = _mesh()
    grads = _random_grads(rng, shapes={"a": (19,)})
    grads["a"][2, 3:9] = np.nan
    out = jax.device_get(_vote_fn(wire, mesh, out_spec=P())(_shard(grads, mesh)))
    zeroed = np.nan_to_num(grads["a"], nan=0.0)
    expected = numpy_bits_vote(zeroed) if wire == "bits" else numpy_vote(zeroed)
    np.testing.assert_array_equal(np.asarray(out["a"], np.float64), expected)


@pytest.mark.parametrize("n_dev", [7, 8])
def test_bits_zero_rule_on_coordinates_no_device_moves(n_dev):
    # Even N: the zeros tie and the coordinate stays put. Odd N: it moves one
    # step whose direction alternates along the coordinates (no drift).
    mesh = _mesh(n_dev)
    grads = {"w": np.zeros((n_dev, 6), np.float32)}
    out = np.asarray(jax.device_get(_vote_fn("bits", mesh)(_shard(grads, mesh)))["w"][0])
    expected = np.zeros(6) if n_dev % 2 == 0 else np.array([1, -1, 1, -1, 1, -1])
    np.testing.assert_array_equal(out, expected)
    exact = np.asarray(jax.device_get(_vote_fn("packed", mesh)(_shard(grads, mesh)))["w"][0])
    np.testing.assert_array_equal(exact, np.zeros(6))


@pytest.mark.parametrize("wire", ALL_WIRES)
def test_vote_is_typed_replicated_under_shard_map(wire):
    # out_specs=P() passes shard_map's replication check: the vote of a varying
    # gradient is known to be the same on every device.
    rng = np.random.default_rng(3)
    mesh = _mesh()
    grads = _random_grads(rng, shapes={"a": (13,)})
    out = _vote_fn(wire, mesh, out_spec=P())(_shard(grads, mesh))
    expected = numpy_bits_vote(grads["a"]) if wire == "bits" else numpy_vote(grads["a"])
    np.testing.assert_array_equal(np.asarray(out["a"], np.float64), expected)


def test_vote_works_under_vmap_and_nested_axes():
    rng = np.random.default_rng(4)
    grads = _random_grads(rng, n_dev=6, shapes={"a": (11,)})["a"]
    for wire in ALL_WIRES:
        tx = gdtx.majority_vote("w", wire=wire)
        out = jax.jit(jax.vmap(lambda g: tx.update(g, tx.init(g))[0], axis_name="w"))(grads)  # noqa: B023
        expected = numpy_bits_vote(grads) if wire == "bits" else numpy_vote(grads)
        np.testing.assert_array_equal(
            np.asarray(out, np.float64), np.broadcast_to(expected, (6, 11))
        )
    # a tuple of mesh axes votes over their product
    if jax.default_backend() != "cpu":
        pytest.skip(
            "simulated devices are CPU devices: on an accelerator machine use JAX_PLATFORMS=cpu"
        )
    mesh = jax.make_mesh((2, 4), ("i", "j"))
    grads8 = _random_grads(rng, shapes={"a": (11,)})["a"]
    for wire in ALL_WIRES:
        tx = gdtx.majority_vote(("i", "j"), wire=wire)
        fn = jax.shard_map(
            lambda g: tx.update(g[0], tx.init(g[0]))[0],  # noqa: B023
            mesh=mesh,
            in_specs=P(("i", "j")),
            out_specs=P(),
        )
        out = jax.jit(fn)(jax.device_put(grads8, NamedSharding(mesh, P(("i", "j")))))
        expected = numpy_bits_vote(grads8) if wire == "bits" else numpy_vote(grads8)
        np.testing.assert_array_equal(np.asarray(out, np.float64), expected, err_msg=wire)


# --- overflow is never silent --------------------------------------------------------


def test_int8_raises_above_127_devices_and_auto_widens():
    n_workers = 200  # every worker votes +1: an int8 sum would wrap to -56
    grads = np.ones((n_workers, 5), np.float32)

    def vote(wire):
        tx = gdtx.majority_vote("w", wire=wire)
        return jax.vmap(lambda g: tx.update(g, tx.init(g))[0], axis_name="w")(grads)

    with pytest.raises(ValueError, match=r"wire='int8' overflows with 200 devices.*'int16'"):
        vote("int8")
    np.testing.assert_array_equal(np.asarray(vote("auto")), 1.0)
    np.testing.assert_array_equal(np.asarray(vote("int16")), 1.0)
    assert distributed.choose_wire(200, 1000) == "int16"
    assert distributed.smallest_int_wire(127) == "int8"
    assert distributed.smallest_int_wire(128) == "int16"
    assert distributed.smallest_int_wire(40_000) == "int32"


@pytest.mark.parametrize(
    ("n_dev", "size", "expected"),
    [
        (1, 10, "int8"),  # nothing crosses the wire in any mode: no packing work
        (2, 1000, "packed"),
        (4, 1001, "packed"),
        (8, 1000, "packed"),  # (N-1) n/4 == 2 (N-1)/N n at N = 8: a tie goes to packed
        (8, 1001, "int8"),  # the padding byte tips it
        (9, 1000, "int8"),
        (16, 1 << 20, "int8"),
        (127, 1 << 20, "int8"),
        (128, 1 << 20, "int16"),
    ],
)
def test_auto_picks_the_fewest_bytes(n_dev, size, expected):
    assert distributed.choose_wire(n_dev, size) == expected
    exact = ["packed", distributed.smallest_int_wire(n_dev)]
    costs = {w: distributed.wire_bytes(w, n_dev, size) for w in exact}
    assert costs[expected] == min(costs.values())


def test_wire_bytes_ratios_at_8_devices():
    n = 1 << 20
    f32 = distributed.wire_bytes("f32", 8, n)
    assert distributed.wire_bytes("packed", 8, n) / f32 == pytest.approx(1 / 4)
    assert distributed.wire_bytes("bits", 8, n) / f32 == pytest.approx(1 / 8)
    assert distributed.wire_bytes("int8", 8, n) / f32 == pytest.approx(1 / 4)


def test_invalid_wire_raises():
    with pytest.raises(ValueError, match=r"gdtx\.majority_vote: `wire` must be one of .*'int4'"):
        gdtx.majority_vote("data", wire="int4")


def _collectives_under_test():
    """Every public collective, as (owner, transformation over the axis "data")."""
    return {
        "majority_vote": gdtx.majority_vote("data"),
        "signum_vote": gdtx.signum_vote(0.1, axis_name="data"),
        "compressed_mean": gdtx.compressed_mean(gdtx.terngrad(), "data"),
        "compressed_mean_atomo": gdtx.compressed_mean(gdtx.atomo(2.0), "data"),
        "error_feedback": gdtx.error_feedback(gdtx.scaled_sign(), axis_name="data"),
    }


@pytest.mark.parametrize("name", list(_collectives_under_test()))
def test_collectives_need_a_bound_axis(name):
    """Outside a bound axis, or with the wrong name, a gdtx error names owner, axis and fix.

    Before: JAX's bare ``NameError: unbound axis name: data`` (votes) or its
    axis_index message (compressors).
    """
    tx = _collectives_under_test()[name]
    owner = name.removesuffix("_atomo")
    params = jnp.ones(4)
    pattern = rf"gdtx\.{owner}: the mesh axis 'data' .* is not bound .*jax\.shard_map"
    with pytest.raises(ValueError, match=pattern):
        state = tx.init(params)
        tx.update(jnp.ones(4), state, params)
    # A different axis is bound (vmap's "batch"), not "data".
    with pytest.raises(ValueError, match=pattern):
        jax.vmap(lambda g: tx.update(g, tx.init(params), params), axis_name="batch")(
            jnp.ones((2, 4))
        )


@pytest.mark.parametrize("name", list(_collectives_under_test()))
def test_init_inside_shard_map_then_scan(name):
    """Every collective: state made inside shard_map, then stepped in lax.scan on 8 devices.

    Before: signum_vote's momentum was made replicated (``float32[1,2]``) and came
    out of a step varying (``float32[1,2]{V:data}``), so the scan's carry changed type.
    """
    mesh = _mesh()
    tx = _collectives_under_test()[name]
    params = jnp.zeros(6)
    specs = gdtx.per_device_specs(jax.eval_shape(tx.init, params), "data")
    rng = np.random.default_rng(4)
    grads = jnp.asarray(rng.normal(size=(3, N_DEV, 6)), jnp.float32)

    def body(params, gs):
        state = tx.init(params)

        def step(carry, g):
            p, s = carry
            u, s = tx.update(g[0], s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (params, state), gs)[0]

    fn = jax.jit(
        jax.shard_map(body, mesh=mesh, in_specs=(P(), P(None, "data")), out_specs=(P(), specs))
    )
    final, state = fn(params, jax.device_put(grads, NamedSharding(mesh, P(None, "data"))))
    assert np.all(np.isfinite(np.asarray(final))) and np.any(np.asarray(final) != 0)
    counts = [int(c) for c in jax.tree.leaves(state) if c.shape == () and c.dtype == jnp.int32]
    assert counts and all(c == 3 for c in counts)


@pytest.mark.parametrize("name", list(_collectives_under_test()))
def test_explicit_2d_mesh_gives_the_unsharded_update(name):
    """Parameters sharded along an Explicit "model" axis, collective over "data".

    The update equals that on a 1-D mesh with the leaves whole. Before: the packed
    vote, TernGrad and the scaled sign raised ShardingTypeError in their reshape,
    ATOMO in its sort.
    """
    mesh = _mesh()
    explicit = jax.sharding.AxisType.Explicit
    mesh2 = jax.make_mesh((2, 4), ("data", "model"), axis_types=(explicit, explicit))
    mesh1 = jax.make_mesh((2,), ("data",), devices=jax.devices()[:2])
    del mesh
    tx = _collectives_under_test()[name]
    rng = np.random.default_rng(5)
    grads = jnp.asarray(rng.normal(size=(2, 3, 8)), jnp.float32)
    params = jnp.asarray(rng.normal(size=(3, 8)), jnp.float32)

    def body(params, g):
        g = g[0]
        state = tx.init(params)
        u, state = tx.update(g, state, params)
        u2, _ = tx.update(g, state, params)
        return (u + u2)[None]

    with jax.set_mesh(mesh2):
        p2 = jax.device_put(params, NamedSharding(mesh2, P(None, "model")))
        g2 = jax.device_put(grads, NamedSharding(mesh2, P("data", None, "model")))
        fn2 = jax.shard_map(
            body, mesh=mesh2, in_specs=(P(), P("data")), out_specs=P("data"), axis_names={"data"}
        )
        sharded = jax.jit(fn2)(p2, g2)
        assert jax.typeof(sharded).sharding.spec == P("data", None, "model")
    fn1 = jax.shard_map(body, mesh=mesh1, in_specs=(P(), P("data")), out_specs=P("data"))
    whole = jax.jit(fn1)(params, jax.device_put(grads, NamedSharding(mesh1, P("data"))))
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(whole), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["majority_vote", "signum_vote"])
def test_votes_refuse_complex_and_integer_params(name):
    tx = _collectives_under_test()[name]
    with pytest.raises(TypeError, match=rf"gdtx\.{name} does not support complex.*\['z'\]"):
        tx.init({"z": jnp.ones(2, jnp.complex64)})
    with pytest.raises(TypeError, match=rf"gdtx\.{name} updates floating-point.*\['n'\]"):
        tx.init({"n": jnp.arange(3)})


def test_majority_vote_checks_shapes_against_params():
    tx = gdtx.majority_vote("data")
    params = jnp.ones(4)
    with pytest.raises(ValueError, match=r"gdtx\.majority_vote: the update .* has shape \(1,\)"):
        jax.vmap(lambda g: tx.update(g, tx.init(params), params), axis_name="data")(
            jnp.ones((2, 1))
        )


# --- what crosses the wire: compiled HLO ----------------------------------------------


_FLOATS = ("bf16", "f16", "f32", "f64", "c64", "c128")


def _collectives(wire, shapes):
    mesh = _mesh()
    grads = {k: np.ones((N_DEV, *s), np.float32) for k, s in shapes.items()}
    fn = _vote_fn(wire, mesh, out_spec=P())
    return hlo.hlo_collectives(fn.lower(_shard(grads, mesh)).compile().as_text())


@pytest.mark.parametrize("wire", ALL_WIRES)
def test_hlo_shows_only_signs_on_the_wire(wire):
    shapes = {"a": (1001,), "b": (37, 5), "c": (), "d": (64, 33)}
    sizes = [math.prod(s) for s in shapes.values()]
    found = _collectives(wire, shapes)
    assert found, "no collective found: the parser or the vote is broken"
    assert not [c for c in found if set(c.dtypes) & set(_FLOATS)], found
    sent = sum(c.operand_bytes for c in found)
    if wire in ("packed", "bits"):
        per_byte = 4 if wire == "packed" else 8
        assert {c.op.removesuffix("-start") for c in found} == {"all-gather"}, found
        assert {c.dtypes for c in found} == {("u8",)}, found
        assert sent <= sum(-(-n // per_byte) for n in sizes) + 8, (sent, found)
    elif wire == "auto":  # at N = 8: packed for sizes divisible by 4, int8 otherwise
        assert {c.dtypes for c in found} <= {("u8",), ("s8",)}, found
    else:
        assert {c.op.removesuffix("-start") for c in found} == {"all-reduce"}, found
        kind = {"int8": "s8", "int16": "s16", "int32": "s32"}[wire]
        assert {c.dtypes for c in found} == {(kind,)}, found
        assert sent == sum(sizes) * np.dtype(kind.replace("s", "int")).itemsize, found


def test_hlo_parser_reads_async_and_sync_forms():
    text = "\n".join(
        [
            "%ag = u8[8,10]{1,0} all-gather(%x), replica_groups={{0,1,2,3,4,5,6,7}}, dims={0}",
            "%ags = (u8[10]{0}, u8[80]{0}) all-gather-start(%y), replica_groups={{0,1,2,3}}",
            "%agd = u8[80]{0} all-gather-done(%ags)",
            "%ar = (s8[37]{0}, s8[]) all-reduce(%a, %b), replica_groups={{0,1}}, to_apply=%r",
            "%ars = f32[100]{0} all-reduce-start(%c), replica_groups={{0,1}}, to_apply=%r",
            "%ard = f32[100]{0} all-reduce-done(%ars)",
        ]
    )
    found = hlo.hlo_collectives(text)
    assert [(c.op, c.dtypes, c.operand_bytes) for c in found] == [
        ("all-gather", ("u8",), 10),
        ("all-gather-start", ("u8",), 10),
        ("all-reduce", ("s8",), 38),
        ("all-reduce-start", ("f32",), 400),
    ]


def test_f32_psum_is_seen_as_a_float_collective():
    # the check above would catch an implementation that all-reduces the gradient
    mesh = _mesh()

    def body(g):
        return jax.lax.psum(g[0], "data")

    fn = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P("data"), out_specs=P()))
    x = _shard(np.ones((N_DEV, 1000), np.float32), mesh)
    found = hlo.hlo_collectives(fn.lower(x).compile().as_text())
    assert [(c.dtypes, c.operand_bytes) for c in found] == [(("f32",), 4000)]


# --- two real processes on loopback --------------------------------------------------


@pytest.mark.xdist_group("multiprocess_vote")
def test_two_processes_vote_like_one(tmp_path):
    worker = pathlib.Path(__file__).with_name("distributed_worker.py")
    run_two_processes(worker, tmp_path, timeout=120)
    # the grads every process built, and the vote each one computed
    results = [json.loads((tmp_path / f"vote_{pid}.json").read_text()) for pid in range(2)]
    grads = np.asarray(results[0]["grads"], np.float32)
    assert grads.shape == (4, 23)
    np.testing.assert_array_equal(results[1]["grads"], results[0]["grads"])
    # single-process reference: the same 4 gradients voted on 4 of this process's devices
    mesh = _mesh(4)
    for wire in ("packed", "bits", "int8"):
        single = np.asarray(
            jax.device_get(_vote_fn(wire, mesh, out_spec=P())(_shard({"g": grads}, mesh)))["g"]
        )
        for result in results:
            np.testing.assert_array_equal(np.asarray(result[wire]), single, err_msg=wire)
        expected = numpy_bits_vote(grads) if wire == "bits" else numpy_vote(grads)
        np.testing.assert_array_equal(single, expected)
