"""Bytes on the wire, step time and digits accuracy of the gradient compressors.

Extends ``benchmarks/wire_bytes.py`` (f32 all-reduce against the sign majority
vote) with ``gdtx.compressed_mean`` over each compressor and EF-SignSGD
(``gdtx.error_feedback(gdtx.scaled_sign())``), on ``N`` simulated CPU devices
(default 8).

Part 1, one f32 gradient of ``n`` parameters (a ``(n/1000, 1000)`` matrix, so
spectral ATOMO has something to decompose): the expected bits per coordinate
(``compressor.bits``), the operand bytes each device puts into collectives in the
compiled HLO (``gdtx.hlo_collectives``) and the ring estimate of the
bytes it receives (all-gather ``(N-1)·operand``, all-reduce ``2(N-1)/N·operand``),
both as ratios to the f32 all-reduce, and the median wall time of the exchange.

Part 2, the tiny digits MLP (``tests/tiny_digits.py``, 64-32-10) trained with
momentum SGD (lr 0.1, momentum 0.9) on ``N`` devices, 16 examples per device per
step, a fixed number of steps and fixed seeds: test accuracy, and the median time
per training step (forward, backward, compression, exchange, update).

CPU devices share the host's cores and memory, so times say little about a real
network; the bytes are the point.

Usage (from the repository root)::

  .venv/bin/python -m benchmarks.compression_bytes                  # 8 devices, 1M, 300 steps
  .venv/bin/python -m benchmarks.compression_bytes --sizes 1e6,4e6 --steps 500
  .venv/bin/python -m benchmarks.compression_bytes --no-time --no-digits   # HLO only
"""

from __future__ import annotations

import argparse
import statistics
import time


def _compressors(gdtx, n):
    """(name, compressor) for the wire table; budgets scale with ``n``."""
    return [
        ("QSGD s=1 l2", gdtx.qsgd(1)),
        ("QSGD s=4 max b=128", gdtx.qsgd(4, bucket_size=128, norm="max")),
        ("QSGD s=7 max b=512", gdtx.qsgd(7, bucket_size=512, norm="max")),
        ("QSGD s=127 max b=512", gdtx.qsgd(127, bucket_size=512, norm="max")),
        ("TernGrad c=2.5", gdtx.terngrad()),
        ("ATOMO entry s=n/64", gdtx.atomo(n / 64)),
        ("ATOMO svd s=4", gdtx.atomo(4.0, atoms="svd")),
        ("scaled sign (EF)", gdtx.scaled_sign()),
    ]


def _digits_aggregators(gdtx):
    return [
        ("QSGD s=4 max b=128", gdtx.qsgd(4, bucket_size=128, norm="max")),
        ("QSGD s=1 l2", gdtx.qsgd(1)),
        ("QSGD s=7 max b=512", gdtx.qsgd(7, bucket_size=512, norm="max")),
        ("TernGrad c=2.5", gdtx.terngrad()),
        ("ATOMO entry s=64", gdtx.atomo(64.0)),
        ("ATOMO svd s=2", gdtx.atomo(2.0, atoms="svd")),
    ]


def _median_ms(fn, args, repeats):
    fn(*args)  # compiled already; one warm-up call
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(*args)
        __import__("jax").block_until_ready(out)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def wire_table(jax, gdtx, mesh, n_dev, sizes, repeats, timed):
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from gdtx._core import hlo

    print(
        "| params | exchange | bits/coord | HLO collectives | operand B/device | ratio | "
        "est. received B/device | ratio | time (ms) |"
    )
    print("|" + "---|" * 9)
    for n in sizes:
        shape = (n // 1000, 1000)
        grads = np.random.default_rng(0).standard_normal((n_dev, *shape), dtype=np.float32)
        x = jax.device_put(grads, NamedSharding(mesh, P("data")))
        del grads
        exchanges = [("f32 psum", None, lambda g: jax.lax.pmean(g, "data"))]
        vote = gdtx.majority_vote("data", wire="packed")
        exchanges.append(("sign vote packed", None, lambda g, v=vote: v.update(g, v.init(g))[0]))
        for name, comp in _compressors(gdtx, n):
            if name.startswith("scaled sign"):
                tx = gdtx.error_feedback(comp, axis_name="data")
            else:
                tx = gdtx.compressed_mean(comp, "data")
            exchanges.append((name, comp, tx))
        rows = []
        for name, comp, ex in exchanges:
            if comp is None:
                body, state, spec = (lambda g, s, ex=ex: (ex(g[0]), s)), (), P()
            else:
                local = jax.ShapeDtypeStruct(shape, jax.numpy.float32)
                abstract = jax.eval_shape(ex.init, local)
                spec = gdtx.per_device_specs(abstract, "data")
                state = jax.jit(jax.shard_map(ex.init, mesh=mesh, in_specs=P(), out_specs=spec))(
                    jax.numpy.zeros(shape)
                )
                body = lambda g, s, ex=ex: ex.update(g[0], s)  # noqa: E731
            step = jax.jit(
                jax.shard_map(body, mesh=mesh, in_specs=(P("data"), spec), out_specs=(P(), spec))
            )
            compiled = step.lower(x, state).compile()
            found = hlo.hlo_collectives(compiled.as_text())
            operand = sum(c.operand_bytes for c in found)
            received = sum(
                (n_dev - 1) * c.operand_bytes
                if c.op.startswith("all-gather")
                else 2 * (n_dev - 1) / n_dev * c.operand_bytes
                for c in found
            )
            kinds = ", ".join(sorted({f"{c.op} {'/'.join(c.dtypes)}" for c in found}))
            bits = comp.bits(shape) / n if comp is not None else (32.0 if "psum" in name else 2.0)
            elapsed = _median_ms(compiled, (x, state), repeats) if timed else float("nan")
            rows.append((name, bits, kinds, operand, received, elapsed))
        base_operand, base_received = rows[0][3], rows[0][4]
        for name, bits, kinds, operand, received, elapsed in rows:
            print(
                f"| {n:,} | {name} | {bits:.3f} | {kinds} | {operand:,} | "
                f"{operand / base_operand:.4f} | {received:,.0f} | "
                f"{received / base_received:.4f} | {elapsed:.1f} |"
            )
        del x


def digits_table(jax, gdtx, mesh, n_dev, steps, repeats, timed):
    import jax.numpy as jnp
    import optax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from tests import tiny_digits as td

    data = td.load()
    params = td.init_params(jax.random.key(0))
    n_params = sum(x.size for x in jax.tree.leaves(params))
    xs, ys = td.batches(data, 16 * n_dev, steps, seed=0)
    shard = NamedSharding(mesh, P(None, "data"))
    xs, ys = jax.device_put(jnp.asarray(xs), shard), jax.device_put(jnp.asarray(ys), shard)
    opt = optax.sgd(0.1, momentum=0.9)

    def pmean():
        return optax.GradientTransformation(
            lambda p: optax.EmptyState(), lambda u, s, p=None: (jax.lax.pmean(u, "data"), s)
        )

    aggregators = [("f32 psum", None, pmean())]
    aggregators += [(n, c, gdtx.compressed_mean(c, "data")) for n, c in _digits_aggregators(gdtx)]
    sign = gdtx.scaled_sign()
    aggregators.append(("EF scaled sign", sign, gdtx.error_feedback(sign, axis_name="data")))

    print(
        f"\nTiny digits MLP ({n_params:,} parameters), {n_dev} devices x 16 examples, "
        f"{steps} steps of SGD (lr 0.1, momentum 0.9), seeds fixed.\n"
    )
    print("| aggregation | bits/coord | test accuracy | ms/step |")
    print("|---|---|---|---|")
    for name, comp, agg in aggregators:

        def run(params, xs, ys, agg=agg):
            agg_state = agg.init(params)

            def step(carry, batch):
                params, opt_state, agg_state = carry
                # Per-device gradients (the grad of replicated params is all-reduced).
                local = jax.lax.pcast(params, "data", to="varying")
                grads = jax.grad(td.loss)(local, *batch)
                grads, agg_state = agg.update(grads, agg_state)
                updates, opt_state = opt.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state, agg_state), None

            carry = (params, opt.init(params), agg_state)
            (params, _, _), _ = jax.lax.scan(step, carry, (xs, ys))
            return params

        fn = jax.jit(
            jax.shard_map(
                run, mesh=mesh, in_specs=(P(), P(None, "data"), P(None, "data")), out_specs=P()
            )
        )
        compiled = fn.lower(params, xs, ys).compile()
        trained = compiled(params, xs, ys)
        acc = float(td.accuracy(trained, data.x_test, data.y_test))
        elapsed = _median_ms(compiled, (params, xs, ys), repeats) / steps if timed else float("nan")
        bits = comp.bits(params) / n_params if comp is not None else 32.0
        print(f"| {name} | {bits:.3f} | {100 * acc:.1f}% | {elapsed:.3f} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--sizes", default="1e6", help="comma-separated parameter counts")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-time", action="store_true", help="compile and read the HLO only")
    parser.add_argument("--no-digits", action="store_true", help="skip the training table")
    args = parser.parse_args(argv)

    import jax

    jax.config.update("jax_num_cpu_devices", args.devices)
    import gdtx

    n_dev = args.devices
    mesh = jax.make_mesh((n_dev,), ("data",), devices=jax.devices()[:n_dev])
    print(f"{n_dev} {jax.devices()[0].platform.upper()} devices, jax {jax.__version__}\n")
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    wire_table(jax, gdtx, mesh, n_dev, sizes, args.repeats, not args.no_time)
    if not args.no_digits:
        digits_table(jax, gdtx, mesh, n_dev, args.steps, args.repeats, not args.no_time)


if __name__ == "__main__":
    main()
