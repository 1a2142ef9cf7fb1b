"""gdtx.data_parallel_step on 8 simulated CPU devices (tests/conftest.py sets the count).

- Every collective registry row, the bare vote and optax.adam train the tiny digits
  MLP with the builder; the first steps equal a hand-written shard_map step (the
  guide's, with the pcast) exactly, and the builder is not the step without the
  pcast (that one votes on the all-reduced f32 gradient).
- The bytes in the metrics are the collective operands of the compiled HLO.
- On a (data=4, model=2) mesh with params sharded along model every collective
  exchanges only over data (no f32 collective over data but the scalar loss, no
  all-gather of a full parameter), its state is sharded like the params, and the
  parameters equal the 1-D run's to rounding.
- Misuse raises a gdtx error naming the function, the argument and the fix.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import gdtx
from gdtx._core.hlo import hlo_collectives
from tests import tiny_digits as td
from tests.registry import ALL_CASES
from tests.two_processes import run_two_processes

COLLECTIVE_ROWS = [case for case in ALL_CASES if case.axis_name == "data"]


def _vote_sgd():
    return optax.chain(gdtx.majority_vote("data", wire="packed"), optax.sgd(3e-2))


def _terngrad_adam():
    return optax.chain(gdtx.compressed_mean(gdtx.terngrad(), "data"), optax.adam(1e-2))


MAKERS = {case.name: case.make for case in COLLECTIVE_ROWS}
MAKERS.update(
    {
        "majority_vote_sgd": _vote_sgd,
        "terngrad_adam": _terngrad_adam,
        "adam": lambda: optax.adam(1e-2),
    }
)


def _loss_fn(params, batch):
    x, y = batch
    return td.loss(params, x, y)


def _mesh(shape=(8,), names=("data",), types=None):
    if jax.default_backend() != "cpu":
        pytest.skip("simulated devices are CPU devices")
    n = int(np.prod(shape))
    types = types or (AxisType.Explicit,) * len(shape)
    return jax.make_mesh(shape, names, axis_types=types, devices=jax.devices()[:n])


def _reference_run(tx, mesh, xs, ys, steps, *, collective, pcast=True):
    params = td.init_params(jax.random.PRNGKey(0))
    specs = gdtx.per_device_specs(jax.eval_shape(tx.init, params), "data")
    state = jax.jit(jax.shard_map(tx.init, mesh=mesh, in_specs=P(), out_specs=specs))(params)

    def step(params, state, x, y):
        local = jax.lax.pcast(params, "data", to="varying") if pcast else params
        grads = jax.grad(td.loss)(local, x, y)
        if not collective:
            grads = jax.lax.pmean(grads, "data")
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    fn = jax.jit(
        jax.shard_map(
            step,
            mesh=mesh,
            in_specs=(P(), specs, P("data"), P("data")),
            out_specs=(P(), specs),
        )
    )
    batch = NamedSharding(mesh, P("data"))
    history = []
    for i in range(steps):
        params, state = fn(
            params, state, jax.device_put(xs[i], batch), jax.device_put(ys[i], batch)
        )
        history.append(jax.device_get(params))
    return history


def _train(tx, mesh, xs, ys, steps, params=None):
    init, step, _ = gdtx.data_parallel_step(_loss_fn, tx, mesh)
    params = td.init_params(jax.random.PRNGKey(0)) if params is None else params
    state = init(params)
    history, metrics = [], []
    for i in range(steps):
        params, state, m = step(params, state, (xs[i], ys[i]))
        history.append(jax.device_get(params))
        metrics.append(m)
    return history, metrics, state


def _assert_trees_equal(a, b, **kw):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if kw:
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)
        else:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# Rows whose update needs a declared extra argument (shared_seed_spsa's value_fn): the
# hand-written reference step below passes none, and a zeroth-order estimate does not train
# the MLP in 80 steps (tests/test_zeroth_order.py trains it through the builder).
_NEEDS_EXTRA_ARGS = {case.name for case in COLLECTIVE_ROWS if case.required_extra_args}


# In the slow suite only: rows whose exchange and per-device state another row here
# already gives the builder (each 6-20 s of compiling on 2 cores). Artemis is DIANA's
# state and uplink plus a downlink (tests/test_diana.py trains it through the builder);
# TernGrad goes through compressed_mean as QSGD does; the bare packed vote is
# signum_vote's exchange; NNM and centered clipping gather as Krum does.
_TRAINS_SLOW = {
    "artemis_qsgd",
    "terngrad_adam",
    "majority_vote_sgd",
    "robust_mean_nnm",
    "robust_mean_centered_clipping",
}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow) if name in _TRAINS_SLOW else name
        for name in sorted(set(MAKERS) - _NEEDS_EXTRA_ARGS)
    ],
)
def test_trains_tiny_digits_and_equals_the_hand_written_step(name, tiny_digits):
    mesh = _mesh()
    xs, ys = td.batches(tiny_digits, 64, 80)
    history, metrics, _ = _train(MAKERS[name](), mesh, xs, ys, 80)
    start = float(
        td.loss(td.init_params(jax.random.PRNGKey(0)), tiny_digits.x_test, tiny_digits.y_test)
    )
    final = float(td.loss(history[-1], tiny_digits.x_test, tiny_digits.y_test))
    assert final < 0.35 * start, (start, final)
    assert final < 0.8, final
    assert all(np.isfinite(float(m["loss"])) and float(m["update_norm"]) > 0 for m in metrics)
    collective = name != "adam"
    ref = _reference_run(MAKERS[name](), mesh, xs, ys, 3, collective=collective)
    for got, want in zip(history[:3], ref, strict=True):
        _assert_trees_equal(got, want)


@pytest.mark.parametrize("name", ["signum_vote", "majority_vote_sgd"])
def test_the_step_without_pcast_differs(name, tiny_digits):
    """Forgetting the pcast votes on the all-reduced gradient: not what the builder does."""
    mesh = _mesh()
    xs, ys = td.batches(tiny_digits, 64, 2)
    history, _, _ = _train(MAKERS[name](), mesh, xs, ys, 2)
    wrong = _reference_run(MAKERS[name](), mesh, xs, ys, 2, collective=True, pcast=False)
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(history[-1]), jax.tree.leaves(wrong[-1]), strict=True)
    )


@pytest.mark.parametrize(
    ("name", "dtypes"),
    [("adam", {"f32"}), ("majority_vote_sgd", {"u8"}), ("compressed_mean_qsgd", {"u32", "f32"})],
)
def test_bytes_in_metrics_are_the_hlo_operands(name, dtypes, tiny_digits):
    mesh = _mesh()
    init, step, exchanges = gdtx.data_parallel_step(_loss_fn, MAKERS[name](), mesh, donate=False)
    params = td.init_params(jax.random.PRNGKey(0))
    state = init(params)
    batch = (tiny_digits.x_train[:64], tiny_digits.y_train[:64])
    found = hlo_collectives(step.lower(params, state, batch).compile().as_text())
    # every collective is the transformation's exchange, but the scalar loss mean (4 bytes,
    # which XLA may fuse into the f32 gradient all-reduce)
    assert {d for c in found for d in c.dtypes} == dtypes | {"f32"}
    _, _, metrics = step(params, state, batch)
    assert metrics["payload_bytes"] == sum(c.operand_bytes for c in found) - 4
    assert metrics["payload_bytes"] == sum(e.operand_bytes for e in exchanges(params, state, batch))
    assert all(c.group_size == 8 for c in found)
    n = 2410  # parameters of the 64-32-10 MLP
    if name == "adam":
        assert metrics["payload_bytes"] == 4 * n
        assert metrics["bytes_sent"] == pytest.approx(2 * 7 / 8 * 4 * n)


def test_flax_nnx_model(tiny_digits):
    nnx = pytest.importorskip("flax.nnx")

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(64, 32, rngs=rngs)
            self.out = nnx.Linear(32, 10, rngs=rngs)

        def __call__(self, x):
            return self.out(jnp.tanh(self.hidden(x)))

    graphdef, params = nnx.split(MLP(nnx.Rngs(0)), nnx.Param)

    def loss_fn(params, batch):
        x, y = batch
        logits = nnx.merge(graphdef, params)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), {
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == y)
        }

    mesh = _mesh()
    init, step, _ = gdtx.data_parallel_step(
        loss_fn, gdtx.signum_vote(1e-2, axis_name="data"), mesh, has_aux=True
    )
    state = init(params)
    xs, ys = td.batches(tiny_digits, 64, 60)
    for i in range(60):
        params, state, metrics = step(params, state, (xs[i], ys[i]))
    assert float(metrics["loss"]) < 0.6
    assert float(metrics["aux"]["accuracy"]) > 0.8
    assert {leaf.shape[0] for leaf in jax.tree.leaves(state[0].mu)} == {8}  # per device


# --- two-dimensional meshes ---------------------------------------------------------------

# FSDP-style on the largest dimension of the hidden kernel (64 inputs), and the output
# layer tensor-parallel along its 32 inputs (row-parallel: a psum over model in forward).
MODEL_SPECS = {
    "hidden": {"w": P("model", None), "b": P()},
    "out": {"w": P("model", None), "b": P()},
}


# robust_mean is left out on purpose: its rules take distances and sorts over each device's
# whole gradient, so on a (data, model) mesh the compiler gathers the model shards first
# (whole kernels over model) and the payload is the full f32 gradient by design. A
# shard-local form (partial squared distances psum'd over model) is not built yet.
# Local SGD (mfl_sgd, diloco_adam) averages f32 parameters (and MFL its momentum) by
# design: its payload is the f32 model, not a compressed gradient.
_NOT_2D = {"adam", "terngrad_adam", "mfl_sgd", "diloco_adam"} | {
    n for n in MAKERS if n.startswith("robust_mean")
}


# In the slow suite only (each compiles for 11-24 s on 2 cores): rows whose exchange another
# row already pins here. DIANA and Artemis: the battery's FSDP check (tests/test_battery.py)
# runs artemis_qsgd with its data axis manual and params sharded along `model`, and the
# builder treats their per-device memory as it treats error feedback's (pinned here).
# The log8 stochastic SPSA row is the shared-seed exchange of `shared_seed_spsa` (which
# stays: the builder's value_fn on a 2-D mesh) with another wire.
_2D_SLOW = {"artemis_qsgd", "diana_qsgd", "shared_seed_spsa_log8_stochastic"}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow) if name in _2D_SLOW else name
        for name in sorted(set(MAKERS) - _NOT_2D)
    ],
)
def test_2d_mesh_exchanges_over_data_only_and_equals_1d(name, tiny_digits):
    auto = (AxisType.Auto, AxisType.Auto)
    mesh2 = _mesh((4, 2), ("data", "model"), auto)
    mesh1 = _mesh((4,), ("data",), auto[:1])
    xs, ys = td.batches(tiny_digits, 64, 3)
    params = td.init_params(jax.random.PRNGKey(0))
    sharded = jax.tree.map(
        lambda x, s: jax.device_put(x, NamedSharding(mesh2, s)), params, MODEL_SPECS
    )
    init, step, exchanges = gdtx.data_parallel_step(_loss_fn, MAKERS[name](), mesh2, donate=False)
    state = init(sharded)
    # state: sharded like the params along model, per device along data
    for path, leaf in jax.tree.flatten_with_path(state)[0]:
        key = jax.tree_util.keystr(path)
        if key.endswith("['hidden']['w']"):
            spec = tuple(leaf.sharding.spec)
            assert "model" in spec, (key, spec)
            if leaf.shape[0] == 4:  # a per-device leaf (momentum, residual)
                assert spec[0] == "data", (key, spec)
    hlo = step.lower(sharded, state, (xs[0], ys[0])).compile().as_text()
    found = hlo_collectives(hlo)
    over_data = [c for c in found if c.group_size == 4]
    floats = {"f32", "f16", "bf16", "f64"}
    _, _, metrics = step(sharded, state, (xs[0], ys[0]))
    declared = [e for e in exchanges(sharded, state, (xs[0], ys[0]))]
    declared_float = sum(e.operand_bytes for e in declared if e.dtype.startswith("float"))
    # over data: the declared payload and the scalar loss mean (4 bytes), nothing more;
    # floats only where the payload declares them (QSGD's bucket norms), never a gradient
    assert sum(c.operand_bytes for c in over_data) <= metrics["payload_bytes"] + 4, over_data
    float_over_data = sum(c.operand_bytes for c in over_data if set(c.dtypes) & floats)
    assert float_over_data <= declared_float + 4, over_data
    assert metrics["payload_bytes"] < 0.4 * 4 * 2410  # well below the f32 gradient
    assert all(c.group_size in (2, 4) for c in found), found
    full = {4 * 64 * 32, 4 * 32 * 10}  # bytes of the sharded kernels
    # over model: no gather of a whole sharded kernel (the data-axis floats are bounded above)
    gathers = [
        c
        for c in found
        if c.op.startswith("all-gather") and set(c.dtypes) & floats and c.group_size == 2
    ]
    assert not [c for c in gathers if c.operand_bytes * c.group_size in full], gathers
    two_d, _, _ = _train(MAKERS[name](), mesh2, xs, ys, 3, params=sharded)
    one_d, _, _ = _train(MAKERS[name](), mesh1, xs, ys, 3)
    for a, b in zip(two_d, one_d, strict=True):
        _assert_trees_equal(a, b, rtol=1e-5, atol=1e-6)


# --- two processes ------------------------------------------------------------------------

TWO_PROCESS_MAKERS = {
    "signum_vote": lambda: gdtx.signum_vote(1e-2, axis_name="data"),
    "qsgd": lambda: optax.chain(
        gdtx.compressed_mean(gdtx.qsgd(4, bucket_size=64), "data"), optax.adam(1e-2)
    ),
}


def two_process_batches(steps=4, batch=32):
    """The same global batches in every process (deterministic)."""
    return td.batches(td.load(), batch, steps)


@pytest.mark.xdist_group("multiprocess_vote")
def test_two_processes_step_like_one(tmp_path):
    import pathlib

    worker = pathlib.Path(__file__).with_name("distributed_worker.py")
    run_two_processes(worker, tmp_path, "step", timeout=180)
    results = [json.loads((tmp_path / f"step_{pid}.json").read_text()) for pid in range(2)]
    mesh = _mesh((4,), ("data",))
    xs, ys = two_process_batches()
    for name, make in TWO_PROCESS_MAKERS.items():
        history, metrics, _ = _train(make(), mesh, xs, ys, xs.shape[0])
        for i, (params, m) in enumerate(zip(history, metrics, strict=True)):
            for result in results:
                got = result[name][i]
                # the parameters bit for bit; the reported loss (a float psum whose order
                # gloo chooses) to one ulp
                for a, b in zip(got["params"], jax.tree.leaves(params), strict=True):
                    np.testing.assert_array_equal(
                        np.asarray(a, np.float32), np.asarray(b), err_msg=f"{name} step {i}"
                    )
                np.testing.assert_array_max_ulp(np.float32(got["loss"]), np.float32(m["loss"]), 1)


# --- misuse ---------------------------------------------------------------------------------


def test_misuse_names_the_function_argument_value_and_fix(tiny_digits):
    mesh = _mesh()
    params = td.init_params(jax.random.PRNGKey(0))
    tx = gdtx.signum_vote(1e-2, axis_name="data")
    with pytest.raises(
        ValueError,
        match=r"gdtx\.data_parallel_step: `mesh` has axes \('data',\) but no axis `axis`='batch'",
    ):
        gdtx.data_parallel_step(_loss_fn, tx, mesh, axis="batch")
    init, step, _ = gdtx.data_parallel_step(_loss_fn, tx, mesh)
    state = init(params)
    batch = (tiny_digits.x_train[:60], tiny_digits.y_train[:60])
    with pytest.raises(
        ValueError,
        match=r"data_parallel_step: the leaf at \[0\] of `batch` has shape \(60, 64\).*"
        r"not divisible by the 8 devices.*multiple of 8",
    ):
        step(params, state, batch)
    mesh2 = _mesh((4, 2), ("data", "model"))
    bad = dict(
        params,
        out={
            "w": jax.device_put(params["out"]["w"], NamedSharding(mesh2, P("data", None))),
            "b": params["out"]["b"],
        },
    )
    init2, _, _ = gdtx.data_parallel_step(_loss_fn, tx, mesh2)
    with pytest.raises(
        ValueError,
        match=r"data_parallel_step: the parameter at \['out'\]\['w'\] of `params` is sharded "
        r"along the data axis 'data'.*shard them along the other mesh axes",
    ):
        init2(bad)
    other = gdtx.signum_vote(1e-2, axis_name="model")
    _, step3, _ = gdtx.data_parallel_step(_loss_fn, other, mesh2)
    with pytest.raises(ValueError, match=r"gdtx\.signum_vote: the mesh axis 'model'|over 'model'"):
        step3(params, init2(params), (tiny_digits.x_train[:64], tiny_digits.y_train[:64]))
    with pytest.raises(
        TypeError, match=r"data_parallel_step: `mesh` must be a jax\.sharding\.Mesh"
    ):
        gdtx.data_parallel_step(_loss_fn, tx, "data")
