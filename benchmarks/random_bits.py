"""What the random bits of stochastic rounding cost: PRNG implementations against the floor.

Stochastic rounding (QSGD, TernGrad, ATOMO) draws one uniform per coordinate. This
measures, in one interleaved run (every round times every candidate once, in the same
order), at each size ``N`` (one float32 leaf, jitted, inputs ready before the clock):

- ``floor``: ``x * 2`` (read ``N`` floats, write ``N``): the memory floor of one pass;
- ``uniform/<impl>``: ``jax.random.uniform(key, (N,))`` with the key implementation
  ``threefry2x32`` (JAX's default), ``rbg`` and ``unsafe_rbg`` (XLA's RngBitGenerator);
- ``qsgd/<impl>``: ``gdtx.qsgd(4, bucket_size=512, norm="max")`` compress then
  decompress, with a key of that implementation (the compressors take any typed key).

It reports the median time and, per candidate, the median over rounds of the ratio to
``floor`` of the same round, and bytes/s of the compressor's input. No change of key
implementation is applied inside gdtx: see ``docs/benchmarks.md`` for what the numbers say.

Usage (from the repository root)::

  .venv/bin/python -m benchmarks.random_bits                   # N = 1e6, 1e7; 15 rounds
  .venv/bin/python -m benchmarks.random_bits --sizes 1e7 --rounds 25
"""

from __future__ import annotations

import argparse
import statistics
import time

IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")


def candidates(n: int) -> dict:
    """(name -> (jitted ``fn(key_data, x)``, its key data), x), compiled for size ``n``."""
    import jax
    import jax.numpy as jnp

    import gdtx

    x = jax.random.normal(jax.random.key(0), (n,), jnp.float32)
    compressor = gdtx.qsgd(4, bucket_size=512, norm="max")
    # x is an argument, not a closed-over constant: XLA would fold it at compile time
    out = {"floor": (jax.jit(lambda d, v: v * 2.0), None)}
    for impl in IMPLS:
        data = jax.random.key_data(jax.random.key(1, impl=impl))

        def uniform(d, v, impl=impl):
            return jax.random.uniform(jax.random.wrap_key_data(d, impl=impl), v.shape)

        def roundtrip(d, v, impl=impl):
            key = jax.random.wrap_key_data(d, impl=impl)
            return compressor.decompress(compressor.compress(key, v))

        out[f"uniform/{impl}"] = (jax.jit(uniform), data)
        out[f"qsgd/{impl}"] = (jax.jit(roundtrip), data)
    for fn, arg in out.values():
        jax.block_until_ready(fn(arg, x))  # compile and warm up outside the clock
    return out, x


def measure(n: int, rounds: int) -> list[tuple[str, float, float]]:
    """(name, median seconds, median per-round ratio to ``floor``) for every candidate."""
    import jax

    built, x = candidates(n)
    times: dict[str, list[float]] = {name: [] for name in built}
    for _ in range(rounds):
        for name, (fn, arg) in built.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(arg, x))
            times[name].append(time.perf_counter() - start)
    floor = times["floor"]
    return [
        (
            name,
            statistics.median(ts),
            statistics.median(t / f for t, f in zip(ts, floor, strict=True)),
        )
        for name, ts in times.items()
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e6,1e7", help="comma-separated N")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    import jax

    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.devices()[0]}")
    print("| N | candidate | median ms | × floor (per-round median) | input GB/s |")
    print("|---:|---|---:|---:|---:|")
    for size in (int(float(s)) for s in args.sizes.split(",")):
        for name, seconds, ratio in measure(size, args.rounds):
            rate = 4 * size / seconds / 1e9
            print(f"| {size:.0e} | {name} | {seconds * 1e3:.2f} | {ratio:.2f} | {rate:.2f} |")


if __name__ == "__main__":
    main()
