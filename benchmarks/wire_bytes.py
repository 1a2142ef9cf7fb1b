"""Bytes on the wire per device per step: f32 all-reduce against the sign majority vote.

For each size ``n`` (parameters, one f32 leaf) and each exchange, on ``N``
simulated CPU devices (default 8), this compiles the gradient exchange inside
``jax.shard_map`` and reads the compiled HLO (``gdtx.hlo_collectives``):

- ``f32 psum``: the uncompressed data-parallel all-reduce (``lax.pmean``);
- ``int8``: ``gdtx.majority_vote(wire="int8")``, a summed-sign s8 all-reduce;
- ``packed``: ``wire="packed"``, two bits per coordinate, u8 all-gather;
- ``bits``: ``wire="bits"``, one bit per coordinate, u8 all-gather;
- ``auto``: what ``wire="auto"`` picks at this ``N``.

Columns: the operand bytes each device puts into collectives (from the HLO), the
estimated bytes each device *receives* with ring algorithms (all-gather
``(N-1)·operand``, all-reduce ``2(N-1)/N·operand``), both as ratios to the f32
all-reduce, and the median wall time of the exchange on this machine (CPU
devices share the host's cores and memory, so the time says little about a real
network; the bytes are the point).

Usage (from the repository root)::

  .venv/bin/python -m benchmarks.wire_bytes                       # 8 devices, 1M/4M/30M
  .venv/bin/python -m benchmarks.wire_bytes --sizes 1e6 --repeats 3 --devices 8
  .venv/bin/python -m benchmarks.wire_bytes --no-time             # HLO only
"""

from __future__ import annotations

import argparse
import statistics
import time


def _exchanges(jax, gdtx, n_dev):
    def psum_f32(g):
        return jax.lax.pmean(g, "data")

    out = {"f32 psum": psum_f32}
    for wire in ("int8", "packed", "bits", "auto"):
        tx = gdtx.majority_vote("data", wire=wire)
        out[wire] = lambda g, tx=tx: tx.update(g, tx.init(g))[0]
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--sizes", default="1e6,4e6,3e7", help="comma-separated parameter counts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-time", action="store_true", help="compile and read the HLO only")
    args = parser.parse_args(argv)

    import jax

    jax.config.update("jax_num_cpu_devices", args.devices)
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import gdtx
    from gdtx._core import hlo

    n_dev = args.devices
    mesh = jax.make_mesh((n_dev,), ("data",), devices=jax.devices()[:n_dev])
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    header = (
        "| params | exchange | HLO collectives | operand B/device | ratio | "
        "est. received B/device | ratio | time (ms) |"
    )
    print(f"{n_dev} CPU devices, jax {jax.__version__}\n")
    print(header)
    print("|" + "---|" * 8)
    for n in sizes:
        rng = np.random.default_rng(0)
        grads = rng.standard_normal((n_dev, n), dtype=np.float32)
        grads[:, ::97] = 0.0  # some abstentions
        x = jax.device_put(grads, NamedSharding(mesh, P("data")))
        del grads
        rows = []
        for name, fn in _exchanges(jax, gdtx, n_dev).items():
            step = jax.jit(
                jax.shard_map(
                    lambda g, fn=fn: fn(g[0]), mesh=mesh, in_specs=P("data"), out_specs=P()
                )
            )
            compiled = step.lower(x).compile()
            found = hlo.hlo_collectives(compiled.as_text())
            operand = sum(c.operand_bytes for c in found)
            received = sum(
                (n_dev - 1) * c.operand_bytes
                if c.op.startswith("all-gather")
                else 2 * (n_dev - 1) / n_dev * c.operand_bytes
                for c in found
            )
            kinds = ", ".join(sorted({f"{c.op} {'/'.join(c.dtypes)}" for c in found}))
            elapsed = float("nan")
            if not args.no_time:
                compiled(x).block_until_ready()
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    compiled(x).block_until_ready()
                    times.append(time.perf_counter() - start)
                elapsed = 1e3 * statistics.median(times)
            rows.append((name, kinds, operand, received, elapsed))
        base_operand, base_received = rows[0][2], rows[0][3]
        for name, kinds, operand, received, elapsed in rows:
            print(
                f"| {n:,} | {name} | {kinds} | {operand:,} | {operand / base_operand:.4f} | "
                f"{received:,.0f} | {received / base_received:.4f} | {elapsed:.1f} |"
            )
        del x
    print(
        "\nRing estimates: f32 all-reduce 2(N-1)/N·4n; packed (N-1)·n/4; bits (N-1)·n/8; "
        "int8 2(N-1)/N·n."
    )


if __name__ == "__main__":
    main()
