"""Interleaved timing and its summary: medians, ratios, the generic and the own floors."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import candidates as cd

FLUSH_BYTES = 64 * 1024 * 1024
# An accelerator's last-level cache is on the device (50 MB of L2 on an H100, 60 MB on an
# H200): the host flush does not touch it, so a device buffer well above it is rewritten.
DEVICE_FLUSH_BYTES = 256 * 1024 * 1024
ITEMSIZE = 4  # float32


def _block(x: Any) -> None:
    if x is not None:
        jax.block_until_ready(x)


def _build_all(cands: list[cd.Candidate], shapes, log) -> tuple[dict, list[str]]:
    built, skipped = {}, []
    t0 = time.perf_counter()
    for c in cands:
        try:
            built[c.name] = c.build(shapes)
        except Exception as err:  # report and go on: one broken row must not stop the run
            msg = str(err).splitlines()[0][:200] if str(err) else ""
            skipped.append(f"{c.name}: build failed ({type(err).__name__}: {msg})")
    log(f"    compiled {len(built)} candidates ({time.perf_counter() - t0:.0f} s)")
    return built, skipped


def device_flush(backend: str) -> Callable[[], None]:
    """Rewrites a device buffer larger than the accelerator's cache; nothing on ``"cpu"``."""
    if backend == "cpu":
        return lambda: None
    touch = jax.jit(lambda x: x + 1.0, donate_argnums=0)
    buffer = [jnp.zeros(DEVICE_FLUSH_BYTES // ITEMSIZE, jnp.float32)]

    def flush() -> None:
        buffer[0] = touch(buffer[0])
        _block(buffer[0])

    return flush


def _time_once(b: cd.Built, flush: np.ndarray, flush_device: Callable[[], None]) -> float:
    inputs = b.prepare()
    _block(inputs if not hasattr(inputs, "step") else None)  # a torch optimizer: nothing
    np.add(flush, 1.0, out=flush)  # evict the caches, as a backward pass would
    flush_device()
    t0 = time.perf_counter()
    _block(b.call(inputs))
    return time.perf_counter() - t0


def measure(
    cands: list[cd.Candidate], shapes, rounds: int, rng: np.random.Generator, log: Callable
) -> tuple[dict[str, list[float]], dict[str, dict], list[str]]:
    """Builds every candidate, then times each once per round, in a new order each round.

    Returns per-round times (seconds, in round order), the builds' infos and what was
    skipped; a candidate that fails at run time is dropped from every round.
    """
    built, skipped = _build_all(cands, shapes, log)
    flush = np.ones(FLUSH_BYTES // ITEMSIZE, np.float32)
    flush_device = device_flush(jax.default_backend())
    times: dict[str, list[float]] = {name: [] for name in built}
    names, failed = list(built), set()
    t_start = time.perf_counter()
    for r in range(rounds):
        for i in rng.permutation(len(names)):
            name = names[i]
            if name in failed:
                continue
            try:
                times[name].append(_time_once(built[name], flush, flush_device))
            except Exception as err:  # a runtime failure: report, drop the candidate
                failed.add(name)
                skipped.append(f"{name}: step failed ({type(err).__name__}: {str(err)[:200]})")
        log(f"    round {r + 1}/{rounds} done ({time.perf_counter() - t_start:.0f} s)")
    for name in failed:
        times.pop(name, None)
    return times, {k: b.info for k, b in built.items() if k in times}, skipped


def floor_bandwidth(by_name: dict[str, cd.Candidate], times: dict, n: int) -> float:
    """The best bandwidth (bytes/s) of the floor kernels in this block, 0 if none ran."""
    best = 0.0
    for name, ts in times.items():
        c = by_name[name]
        if c.family == "floor" and len(ts):
            best = max(best, (c.reads + c.writes) * ITEMSIZE * n / np.median(ts))
    return best


def own_floor(c: cd.Candidate, times: dict, n: int, bandwidth: float) -> np.ndarray | None:
    """Per-round own floor (seconds): declared traffic at ``bandwidth`` + the primitives.

    ``(R + W + extra_arrays) * 4 N + 2 * payload_bits / 8 * N`` bytes at the floor
    bandwidth, plus ``count`` times each used primitive's time of the same round.
    None when the bandwidth or a primitive was not measured.
    """
    if not bandwidth:
        return None
    f = c.floor
    traffic = ((c.reads + c.writes + f.extra_arrays) * ITEMSIZE + f.payload_bits / 4) * n
    total = np.full(len(times[c.name]), traffic / bandwidth)
    for name, count in f.uses:
        prim = np.asarray(times.get(f"primitive: {name}", []))
        if prim.size != total.size:
            return None
        total = total + count * prim
    return total


def _row(c: cd.Candidate, ts: np.ndarray, base: np.ndarray, n: int, bandwidth: float, times):
    med = float(np.median(ts))
    floor_s = (c.reads + c.writes) * ITEMSIZE * n / bandwidth if bandwidth else float("nan")
    # A floor kernel's or a primitive's own floor would only repeat its generic one.
    own = None if c.family in ("floor", "primitive") else own_floor(c, times, n, bandwidth)
    return {
        "name": c.name,
        "family": c.family,
        "reads": c.reads,
        "writes": c.writes,
        "median_ms": med * 1e3,
        "q25_ms": float(np.quantile(ts, 0.25)) * 1e3,
        "q75_ms": float(np.quantile(ts, 0.75)) * 1e3,
        "x_floor": med / floor_s,
        "floor_ms": floor_s * 1e3,
        # per-round: each round's step against the same round's primitives
        "x_own_floor": float(np.median(ts / own)) if own is not None else None,
        "own_floor_ms": float(np.median(own)) * 1e3 if own is not None else None,
        "vs_adam": float(np.median(ts / base)) if base.size == ts.size else None,
    }


def _aa(times: dict, pair) -> dict | None:
    if not pair or not all(x in times for x in pair):
        return None
    a, b = (np.asarray(times[x]) for x in pair)
    ratio = b / a
    return {
        "pair": list(pair),
        "median_ratio": float(np.median(ratio)),
        "q25": float(np.quantile(ratio, 0.25)),
        "q75": float(np.quantile(ratio, 0.75)),
        "ratio_of_medians": float(np.median(b) / np.median(a)),
    }


def summarize(cands, times, infos, n, num_leaves, aa_pair) -> dict:
    """One block's rows: medians, × generic floor, × own floor, vs optax.adam, per-leaf."""
    by_name = {c.name: c for c in cands}
    bandwidth = floor_bandwidth(by_name, times, n)
    base = np.asarray(times.get(cd.BASELINE, []))
    rows = []
    for name, ts in times.items():
        ts = np.asarray(ts)
        row = {**_row(by_name[name], ts, base, n, bandwidth, times), **infos.get(name, {})}
        one = np.asarray(times.get(name + cd.ONE_LEAF, []))
        if one.size == ts.size and num_leaves > 1:
            # Paired per round with the same step on one leaf of the same N (same block).
            row["per_leaf_us"] = float(np.median(ts - one)) * 1e6 / num_leaves
        rows.append(row)
    return {
        "floor_bandwidth_gbs": bandwidth / 1e9,
        "num_leaves": num_leaves,
        "rows": rows,
        "aa": _aa(times, aa_pair),
    }
