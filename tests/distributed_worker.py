"""One process of the two-process majority-vote test (run by tests/test_distributed.py).

Usage: ``python distributed_worker.py PORT PROCESS_ID OUT_DIR``. Two CPU devices
per process, a coordinator on 127.0.0.1:PORT, gloo collectives; writes
``OUT_DIR/vote_<PROCESS_ID>.json`` with the global gradients and each wire
mode's vote as seen by this process. Not a test module (no ``test_`` prefix).
"""

from __future__ import annotations

import json
import pathlib
import sys


def main() -> None:
    port, process_id, out_dir = int(sys.argv[1]), int(sys.argv[2]), pathlib.Path(sys.argv[3])
    import jax

    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=2,
        process_id=process_id,
        initialization_timeout=60,
    )
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import gdtx

    assert jax.device_count() == 4 and jax.local_device_count() == 2
    mesh = jax.make_mesh((4,), ("data",))
    # The same global gradients in every process (fixed seed), with zeros and ties.
    rng = np.random.default_rng(7)
    grads = rng.choice([-1.0, 0.0, 1.0, 2.0], size=(4, 23)).astype(np.float32)
    sharding = NamedSharding(mesh, P("data"))
    local = grads[2 * process_id : 2 * process_id + 2]
    global_grads = jax.make_array_from_process_local_data(sharding, local, grads.shape)
    result = {"grads": grads.tolist()}
    for wire in ("packed", "bits", "int8"):
        tx = gdtx.majority_vote("data", wire=wire)

        def body(g, tx=tx):
            return tx.update(g[0], tx.init(g[0]))[0]

        fn = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P("data"), out_specs=P()))
        voted = fn(global_grads)
        result[wire] = np.asarray(voted.addressable_data(0)).tolist()
    (out_dir / f"vote_{process_id}.json").write_text(json.dumps(result))
    jax.distributed.shutdown()


def step_main() -> None:
    """``python distributed_worker.py PORT PROCESS_ID OUT_DIR step``: gdtx.data_parallel_step.

    Trains the tiny digits MLP for a few steps with signum_vote and
    compressed_mean(qsgd) on a 4-device mesh spanning both processes and writes
    ``OUT_DIR/step_<PROCESS_ID>.json`` with the parameters and loss after every step.
    """
    port, process_id, out_dir = int(sys.argv[1]), int(sys.argv[2]), pathlib.Path(sys.argv[3])
    import jax

    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=2,
        process_id=process_id,
        initialization_timeout=60,
    )
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from tests import tiny_digits as td
    from tests.test_data_parallel import TWO_PROCESS_MAKERS, two_process_batches

    mesh = jax.make_mesh((4,), ("data",))
    xs, ys = two_process_batches()
    rows = slice(xs.shape[1] // 2 * process_id, xs.shape[1] // 2 * (process_id + 1))
    batch_sharding = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    result = {}
    for name, make in TWO_PROCESS_MAKERS.items():
        init, step, _ = __import__("gdtx").data_parallel_step(
            lambda p, b: td.loss(p, b[0], b[1]), make(), mesh
        )
        host = td.init_params(jax.random.PRNGKey(0))
        params = jax.tree.map(
            lambda x: jax.make_array_from_callback(
                np.shape(x), replicated, lambda idx, x=x: x[idx]
            ),
            jax.device_get(host),
        )
        state = init(params)
        history = []
        for i in range(xs.shape[0]):
            batch = tuple(
                jax.make_array_from_process_local_data(batch_sharding, a[i][rows], a[i].shape)
                for a in (xs, ys)
            )
            params, state, metrics = step(params, state, batch)
            flat = [
                np.asarray(leaf.addressable_data(0)).tolist() for leaf in jax.tree.leaves(params)
            ]
            history.append({"params": flat, "loss": float(metrics["loss"].addressable_data(0))})
        result[name] = history
    (out_dir / f"step_{process_id}.json").write_text(json.dumps(result))
    jax.distributed.shutdown()


if __name__ == "__main__":
    if len(sys.argv) > 4 and sys.argv[4] == "step":
        step_main()
    else:
        main()
