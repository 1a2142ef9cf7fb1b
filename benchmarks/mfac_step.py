"""Step time of ``gdtx.scale_by_mfac`` against its bandwidth floor.

A step must read the window ``G`` twice (the new Gram row ``G g`` needs all of
it, and ``G^T c`` needs the coefficients that row determines), read ``g``, write
one row of ``G`` and write the update:

    floor_bytes = (2 m + 3) * 4 * d          (float32 window)

plus the ``m x m`` Cholesky solve, which does not depend on ``d``. For each
``(m, d)`` this prints the median step time (jitted, state donated, window full
of random gradients), the floor time ``floor_bytes / BW`` with ``BW`` measured
on the same device by an in-place ``x * c`` over 1 GB (read + write), the time
of the ``m x m`` part alone, and whether the ring write happened in place (the
window's buffer address is unchanged across a donated step). Every
configuration is timed twice, in two sweeps (A and A'), so the table shows the
run-to-run noise next to the numbers.

Run it (not part of the test suite)::

    python -m benchmarks.mfac_step                        # m in {32,128,512}, d in {1e5,1e6,1e7}
    python -m benchmarks.mfac_step --m 32 --d 1e5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import gdtx
from gdtx.mfac import _robust_cholesky


def _median_time(fn, *, min_batch_s: float = 0.1, batches: int = 7) -> float:
    """Median seconds per call of ``fn()`` (which must block), over ``batches`` batches."""
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-6)
    reps = max(1, min(500, int(min_batch_s / once)))
    times = []
    for _ in range(batches):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        times.append((time.perf_counter() - start) / reps)
    return statistics.median(times)


def measure_bandwidth(nbytes: int) -> float:
    """Bytes per second of an in-place elementwise update (one read + one write)."""
    n = nbytes // 4
    scale = jax.jit(lambda x: x * 1.0000001, donate_argnums=0)
    box = [jnp.ones(n, jnp.float32)]

    def call():
        box[0] = scale(box[0])
        box[0].block_until_ready()

    seconds = _median_time(call)
    return 2 * 4 * n / seconds


def time_small_solve(m: int) -> float:
    """Seconds for the ``m x m`` part of a step: Cholesky (with its guard) and solve."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, 4 * m)).astype(np.float32)
    spd = jnp.asarray(a @ a.T / (4 * m) + np.eye(m, dtype=np.float32))
    rhs = jnp.zeros(m).at[0].set(float(m))
    solve = jax.jit(lambda k: jax.scipy.linalg.cho_solve((_robust_cholesky(k), True), rhs))
    return _median_time(lambda: solve(spd).block_until_ready())


def time_step(m: int, d: int, seed: int = 0):
    """(seconds per step, written in place?, temp bytes of the compiled step)."""
    tx = gdtx.scale_by_mfac(m, 1e-5)
    key = jax.random.key(seed)
    g = jax.random.normal(key, (d,), jnp.float32) / np.sqrt(d)
    step = jax.jit(tx.update, donate_argnums=1)
    state = tx.init(g)
    temp = step.lower(g, state).compile().memory_analysis().temp_size_in_bytes
    # Fill the window with distinct gradients (a realistic Gram matrix).
    for i in range(m):
        gi = g * (1.0 + 0.01 * i) + 0.1 * jax.random.normal(jax.random.fold_in(key, i), (d,))
        _, state = step(gi, state)
    jax.block_until_ready(state)
    pointer = state.grads.unsafe_buffer_pointer()
    box = [state]

    def call():
        u, box[0] = step(g, box[0])
        u.block_until_ready()

    seconds = _median_time(call)
    in_place = box[0].grads.unsafe_buffer_pointer() == pointer
    return seconds, in_place, temp


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--m", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--d", type=float, nargs="+", default=[1e5, 1e6, 1e7])
    parser.add_argument("--bw-bytes", type=float, default=1e9, help="size of the BW probe")
    parser.add_argument("--memory-fraction", type=float, default=0.5)
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)

    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    budget = args.memory_fraction * stats.get("bytes_limit", 8 * 2**30)
    bandwidth = measure_bandwidth(int(args.bw_bytes))
    print(f"device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    print(f"measured bandwidth (in-place x*c, read+write): {bandwidth / 1e9:.0f} GB/s\n")

    configs = [(m, int(d)) for m in args.m for d in args.d if 4 * m * d + 16 * d <= budget]
    skipped = [(m, int(d)) for m in args.m for d in args.d if (m, int(d)) not in configs]
    solve_s = {m: time_small_solve(m) for m in args.m}
    sweeps = [{c: time_step(*c) for c in configs} for _ in range(2)]  # A and A'

    rows = []
    header = (
        "| m | d | window | step A (ms) | step A' (ms) | A/A | floor (ms) | m^3 part (ms) "
        "| step / floor | step / (floor + m^3) | in place |"
    )
    print(header)
    print("|---" * 11 + "|")
    for m, d in configs:
        a, in_place, temp = sweeps[0][(m, d)]
        a2, in_place2, _ = sweeps[1][(m, d)]
        floor_bytes = (2 * m + 3) * 4 * d
        floor = floor_bytes / bandwidth
        step = statistics.median([a, a2])
        row = {
            "m": m,
            "d": d,
            "window_gb": 4 * m * d / 1e9,
            "step_ms_a": 1e3 * a,
            "step_ms_a2": 1e3 * a2,
            "aa_noise": abs(a - a2) / min(a, a2),
            "floor_bytes": floor_bytes,
            "floor_ms": 1e3 * floor,
            "solve_ms": 1e3 * solve_s[m],
            "ratio_floor": step / floor,
            "ratio_floor_solve": step / (floor + solve_s[m]),
            "in_place": bool(in_place and in_place2),
            "temp_bytes": int(temp),
        }
        rows.append(row)
        print(
            f"| {m} | {d:.0e} | {row['window_gb']:.2f} GB | {row['step_ms_a']:.3f} "
            f"| {row['step_ms_a2']:.3f} | {100 * row['aa_noise']:.1f}% | {row['floor_ms']:.3f} "
            f"| {row['solve_ms']:.3f} | {row['ratio_floor']:.2f} | {row['ratio_floor_solve']:.2f} "
            f"| {'yes' if row['in_place'] else 'NO'} |"
        )
    for m, d in skipped:
        print(f"skipped m={m}, d={d:.0e}: the window would not fit in {budget / 2**30:.1f} GiB")
    if args.json:
        meta = {
            "device": device.device_kind,
            "backend": jax.default_backend(),
            "jax": jax.__version__,
            "bandwidth_bytes_per_s": bandwidth,
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
