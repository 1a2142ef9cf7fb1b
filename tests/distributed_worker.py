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


if __name__ == "__main__":
    main()
