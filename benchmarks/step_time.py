"""Step time of every gdtx alias against optax, PyTorch and the memory-bandwidth floor.

An optimizer step is elementwise work over the parameters and the state, so its
speed limit is memory bandwidth: a step that reads ``R`` and writes ``W`` arrays of
``N`` float32 elements cannot beat ``(R + W) * 4 * N / bandwidth``. This script
times, interleaved in one run:

- every row of the battery registry (``tests/registry``: its ``factory``,
  ``kwargs``, ``reads``, ``writes``, extra arguments and mesh axis), so an alias
  is measured as soon as its row exists;
- the optax function of the same name where there is one (``optax.adabelief``
  for ``gdtx.adabelief``, ...), and ``optax.adam`` as the common baseline;
- an A/A control: gdtx.adabelief (else the first gdtx row) compiled and run a second time as if it
  were another candidate, so the spread of its ratio to itself is the noise;
- the bandwidth-floor kernels (in-place streams: XLA ``a <- a + c b`` and
  ``a <- a + b c + d``, NumPy ``a += b``, and torch ``a.add_(b)`` when torch is there),
  whose best bandwidth gives each step's floor;
- ``torch.optim.Adam(fused=True)`` and PyTorch AdaBelief implementations when
  ``torch`` can be imported (``--torch-path`` adds a site-packages directory).

Each measured call is ``jax.jit(update + optax.apply_updates)`` with the params
and the optimizer state donated, on freshly initialised buffers, after a 64 MiB
write that flushes the caches as a forward/backward pass would. Candidates run
in a new random order every round; the report gives medians over rounds and,
against ``optax.adam`` and the A/A twin, the median of the per-round ratios.

Besides time, every JAX candidate reports what needs no clock: trace+lower and
XLA compile time, the compiled step's temp memory (``memory_analysis()``), the
donated bytes XLA aliased, the state's size in parameter-sized arrays, and the
number of array loops (fusions) and copies in the compiled HLO.

Usage (from the repository root)::

  .venv/bin/python -m benchmarks.step_time --quick                # N = 1e6, 10-leaf tree, 5 rounds
  .venv/bin/python -m benchmarks.step_time --json out.json --markdown out.md
  .venv/bin/python -m benchmarks.step_time --hlo-only             # no timing
  .venv/bin/python -m benchmarks.step_time --only 'adabelief|adam' --sizes 1e7,3e7
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import io
import json
import math
import os
import pathlib
import platform
import re
import sys
import time
from collections.abc import Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import gdtx  # noqa: E402

FLUSH_BYTES = 64 * 1024 * 1024
BASELINE = "optax.adam"
ONE_LEAF = " [1 leaf]"
# In the tree layout these also run on one leaf of the same N, interleaved with the tree, so
# that the per-leaf overhead is a paired per-round difference.
PER_LEAF = ("gdtx.adabelief", BASELINE, "optax.adabelief", "torch.optim.Adam(fused=True)")
ITEMSIZE = 4  # float32


# ----------------------------------------------------------------------------
# parameter layouts


def leaf_shapes(layout: str, n: int, num_leaves: int) -> list[tuple[int, ...]]:
    """Shapes of the parameter leaves holding about ``n`` float32 elements in total.

    ``single`` is one vector. ``tree`` is ``num_leaves`` leaves shaped like a
    network's: half of them matrices holding 98% of the elements, half of them
    bias vectors holding the rest.
    """
    if layout == "single":
        return [(n,)]
    half = num_leaves // 2
    shapes = []
    per_matrix = max(1, int(0.98 * n) // max(half, 1))
    cols = max(1, int(math.sqrt(per_matrix)))
    for _ in range(half):
        shapes.append((max(1, per_matrix // cols), cols))
    rest = max(num_leaves - half, 0)
    per_vector = max(1, (n - sum(math.prod(s) for s in shapes)) // max(rest, 1))
    shapes.extend((per_vector,) for _ in range(rest))
    return shapes


def make_tree(shapes: list[tuple[int, ...]], offset: float) -> Any:
    """A deterministic params-like tree (a bare array for a single leaf)."""

    def leaf(i, shape):
        # Varied, cheap to build (it runs before every timed call) and far from denormals.
        x = jax.lax.broadcasted_iota(jnp.int32, shape, len(shape) - 1) % 1021
        return (x.astype(jnp.float32) - 510.0) * 1e-4 + 0.01 * (i % 7) + offset

    if len(shapes) == 1:
        return leaf(0, shapes[0])
    return {f"leaf{i:03d}": leaf(i, s) for i, s in enumerate(shapes)}


def tree_bytes(tree: Any) -> int:
    return sum(
        int(np.prod(np.shape(x))) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)
    )


# ----------------------------------------------------------------------------
# HLO statistics (no clock needed)


def hlo_stats(compiled: Any) -> dict[str, int]:
    """Array loops (non-scalar fusions), copies and while loops in the entry computation."""
    text = compiled.as_text()
    start = text.find("\nENTRY ")
    entry = text[start:] if start >= 0 else text
    stats = {"loops": 0, "copies": 0, "whiles": 0}
    for line in entry.splitlines()[1:]:
        match = re.match(r"\s*(?:ROOT )?%\S+ = (\S+?)\{?[\d,]*\}? (\S+?)\(", line)
        if not match:
            continue
        shape, op = match.groups()
        is_array = bool(re.match(r"[a-z]+\d*\[\d", shape))
        if op == "fusion" and is_array:
            stats["loops"] += 1
        elif op == "copy" and is_array:
            stats["copies"] += 1
        elif op == "while":
            stats["whiles"] += 1
    return stats


# ----------------------------------------------------------------------------
# candidates


@dataclasses.dataclass
class Built:
    """A candidate compiled for one layout and size."""

    prepare: Callable[[], Any]  # fresh inputs (untimed)
    call: Callable[[Any], Any]  # the timed step; returns something to block on
    info: dict[str, Any]


@dataclasses.dataclass
class Candidate:
    name: str
    family: str  # "gdtx" | "optax" | "floor" | "torch"
    reads: int
    writes: int
    build: Callable[[list[tuple[int, ...]]], Built]
    min_state_arrays: int | None = None
    note: str = ""


def _jax_candidate(
    name: str,
    family: str,
    make_tx: Callable[[], optax.GradientTransformation],
    reads: int,
    writes: int,
    *,
    extra_args: Callable[[Any, Any], dict] | None = None,  # (params, grads) -> extra
    axis_name: str | None = None,
    min_state_arrays: int | None = None,
) -> Candidate:
    def build(shapes):
        tx = make_tx()

        def update(grads, state, params):
            extra = extra_args(params, grads) if extra_args else {}
            if axis_name is None:
                return tx.update(grads, state, params, **extra)
            mesh = jax.make_mesh((1,), (axis_name,), devices=jax.devices()[:1])
            spec = jax.sharding.PartitionSpec()
            fn = jax.shard_map(
                lambda g, s, p: tx.update(g, s, p, **extra),
                mesh=mesh,
                in_specs=spec,
                out_specs=spec,
            )
            return fn(grads, state, params)

        def step(params, state, grads):
            updates, state = update(grads, state, params)
            return optax.apply_updates(params, updates), state

        make_params = jax.jit(lambda: make_tree(shapes, 0.0))
        make_grads = jax.jit(lambda: make_tree(shapes, 1.0))
        init = jax.jit(tx.init)
        params, grads = make_params(), make_grads()
        state = init(params)
        jitted = jax.jit(step, donate_argnums=(0, 1))
        t0 = time.perf_counter()
        lowered = jitted.lower(params, state, grads)
        t1 = time.perf_counter()
        compiled = lowered.compile()
        t2 = time.perf_counter()
        mem = compiled.memory_analysis()
        param_bytes = tree_bytes(params)
        state_bytes = tree_bytes(state)
        largest_leaf = max(x.nbytes for x in jax.tree.leaves(params))
        info = {
            "trace_lower_s": t1 - t0,
            "compile_s": t2 - t1,
            "temp_bytes": int(mem.temp_size_in_bytes) if mem else None,
            "temp_over_largest_leaf": (mem.temp_size_in_bytes / largest_leaf) if mem else None,
            "alias_bytes": int(mem.alias_size_in_bytes) if mem else None,
            "donated_array_bytes": param_bytes
            + sum(x.nbytes for x in jax.tree.leaves(state) if x.ndim > 0),
            "state_arrays": state_bytes / param_bytes,
            "min_state_arrays": min_state_arrays,
            **hlo_stats(compiled),
        }
        del params, state, grads

        def prepare():
            p = make_params()
            return p, init(p), make_grads()

        def call(inputs):
            return compiled(*inputs)

        return Built(prepare, call, info)

    return Candidate(name, family, reads, writes, build, min_state_arrays)


def _state_names(reads, writes) -> set[str]:
    # "grads[slot]" names the window row being written, one of the "grads[i]" already read.
    return {x for x in (*reads, *writes) if x not in ("grad", "param") and "[slot]" not in x}


def _quadratic(params):
    """The loss handed to rows that re-evaluate it (``value_fn``, ``grad_fn``)."""
    return 0.5 * sum(jnp.sum(x * x) for x in jax.tree.leaves(params))


def _extra_args_builder(case) -> Callable[[Any, Any], dict]:
    """``(params, grads) -> extra args`` from the row's builder.

    The registry's builder takes ``(loss, params, grads)``, where ``loss`` is the problem being
    solved; here that is a quadratic, whose gradient pass costs one read of the params. Older
    rows took ``(params, grads)``; both are accepted.
    """
    builder = case.extra_args
    try:
        positional = [
            p
            for p in inspect.signature(builder).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        positional = [None] * 3
    if len(positional) >= 3:
        return lambda params, grads: builder(_quadratic, params, grads)
    return builder


def registry_candidates(only: re.Pattern | None) -> tuple[list[Candidate], list[str]]:
    """One candidate per registry row, plus the optax function of the same name."""
    from tests.registry import ALL_CASES

    cands, skipped, optax_seen = [], [], set()
    for case in ALL_CASES:
        name = f"gdtx.{case.name}"
        if only and not only.search(name):
            continue
        reads, writes = len(case.reads), len(case.writes)
        extra = _extra_args_builder(case)
        if case.required_extra_args:
            try:
                probe = jnp.zeros((3,))
                got = extra(probe, probe)
                missing = set(case.required_extra_args) - set(got)
                if missing:
                    skipped.append(f"{name}: its extra_args builder gives no {sorted(missing)}")
                    continue
            except Exception as err:  # a row that cannot build its extra args here
                skipped.append(f"{name}: extra_args builder failed ({type(err).__name__}: {err})")
                continue
        cands.append(
            _jax_candidate(
                name,
                "gdtx",
                case.make,
                reads,
                writes,
                extra_args=extra,
                axis_name=case.axis_name,
                min_state_arrays=len(_state_names(case.reads, case.writes)),
            )
        )
        twin = getattr(optax, case.factory.__name__, None)
        if callable(twin) and twin is not optax.adam:
            params = inspect.signature(twin).parameters
            kwargs = {k: v for k, v in case.kwargs.items() if k in params}
            key = (twin.__name__, tuple(sorted(kwargs.items())))
            oname = f"optax.{twin.__name__}"
            if key not in optax_seen and (not only or only.search(oname)):
                optax_seen.add(key)
                if oname in {c.name for c in cands}:
                    oname = f"{oname}[{case.name}]"
                cands.append(
                    _jax_candidate(
                        oname,
                        "optax",
                        lambda twin=twin, kwargs=kwargs: twin(**kwargs),
                        reads,
                        writes,
                    )
                )
    return cands, skipped


def baseline_candidates(first_gdtx: Candidate | None) -> list[Candidate]:
    out = [_jax_candidate(BASELINE, "optax", lambda: optax.adam(1e-2), 4, 3)]
    if first_gdtx is not None:
        twin = dataclasses.replace(first_gdtx, name=f"{first_gdtx.name} (A/A twin)")
        # A fresh build: its own compilation and buffers, so it is a true second candidate.
        out.append(twin)
    return out


def one_leaf(c: Candidate) -> Candidate:
    """``c`` on a single leaf holding all of a layout's elements."""

    def build(shapes):
        return c.build([(sum(math.prod(s) for s in shapes),)])

    return dataclasses.replace(c, name=c.name + ONE_LEAF, family="reference", build=build)


def floor_candidates() -> list[Candidate]:
    """In-place streaming kernels; their best bandwidth defines the floor."""

    def kernel(name, fn, n_in):
        def build(shapes):
            n = sum(math.prod(s) for s in shapes)
            f = jax.jit(fn, donate_argnums=(0,))
            make = jax.jit(lambda k: jnp.full((n,), 0.5, jnp.float32) + k)

            def prepare():
                return tuple(make(float(i)) for i in range(n_in))

            def call(inputs):
                return f(*inputs)

            return Built(prepare, call, {})

        return Candidate(name, "floor", n_in, 1, build)

    def numpy_add(shapes):
        n = sum(math.prod(s) for s in shapes)

        def prepare():
            return np.full(n, 0.5, np.float32), np.full(n, 0.25, np.float32)

        def call(inputs):
            np.add(inputs[0], inputs[1], out=inputs[0])  # one thread, in place

        return Built(prepare, call, {})

    return [
        kernel("floor: a <- a + c b", lambda a, b: a + 0.5 * b, 2),
        kernel("floor: a <- a + b c + d", lambda a, b, c, d: a + b * c + d, 4),
        Candidate("floor: numpy a += b", "floor", 2, 1, numpy_add),
    ]


def torch_candidates(path: str | None) -> tuple[list[Candidate], str]:
    if path:
        sys.path.append(path)
    # PyTorch's OpenMP workers spin after each parallel region by default, which on a
    # small machine steals the cores from XLA's threads between torch's own calls.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch
    except ImportError:
        return [], "torch is not importable: PyTorch candidates skipped (see --torch-path)"
    torch.set_num_threads(os.cpu_count() or 1)

    def make(name, factory, reads, writes):
        def build(shapes):
            def prepare():
                params = [
                    torch.nn.Parameter(
                        torch.sin(torch.arange(math.prod(s)).reshape(s) * 1e-3) * 0.1
                    )
                    for s in shapes
                ]
                for i, p in enumerate(params):
                    p.grad = torch.cos(torch.arange(p.numel()).reshape(p.shape) * 1e-3 + i) * 0.1
                with contextlib.redirect_stdout(io.StringIO()):  # adabelief_pytorch prints
                    opt = factory(params)
                opt.step()  # allocates the state, untimed
                return opt

            def call(opt):
                opt.step()
                return None

            return Built(prepare, call, {})

        return Candidate(name, "torch", reads, writes, build)

    def torch_add(shapes):
        n = sum(math.prod(s) for s in shapes)

        def prepare():
            return torch.full((n,), 0.5), torch.full((n,), 0.25)

        def call(inputs):
            inputs[0].add_(inputs[1])  # all threads, in place

        return Built(prepare, call, {})

    cands = [
        Candidate("floor: torch a += b", "floor", 2, 1, torch_add),
        make(
            "torch.optim.Adam(fused=True)",
            lambda ps: torch.optim.Adam(ps, lr=1e-2, fused=True),
            4,
            3,
        ),
    ]
    try:
        from adabelief_pytorch import AdaBelief

        cands.append(
            make(
                "adabelief_pytorch.AdaBelief",
                lambda ps: AdaBelief(ps, lr=1e-2, rectify=False, print_change_log=False),
                4,
                3,
            )
        )
    except ImportError:
        pass
    try:
        from pytorch_optimizer import AdaBelief as KozistrAdaBelief

        cands.append(
            make(
                "pytorch_optimizer.AdaBelief",
                lambda ps: KozistrAdaBelief(ps, lr=1e-2),
                4,
                3,
            )
        )
    except ImportError:
        pass
    return cands, f"torch {torch.__version__}"


# ----------------------------------------------------------------------------
# timing


def block(x):
    if x is not None:
        jax.block_until_ready(x)


def measure(
    cands: list[Candidate], shapes, rounds: int, rng: np.random.Generator, log
) -> tuple[dict[str, list[float]], dict[str, dict], list[str]]:
    built, skipped = {}, []
    t_compile = time.perf_counter()
    for c in cands:
        try:
            built[c.name] = c.build(shapes)
        except Exception as err:  # report and go on: one broken row must not stop the run
            msg = str(err).splitlines()[0][:200] if str(err) else ""
            skipped.append(f"{c.name}: build failed ({type(err).__name__}: {msg})")
    log(f"    compiled {len(built)} candidates ({time.perf_counter() - t_compile:.0f} s)")
    flush = np.ones(FLUSH_BYTES // 4, np.float32)
    times = {name: [] for name in built}
    names = list(built)
    failed = set()
    t_start = time.perf_counter()
    for r in range(rounds):
        for i in rng.permutation(len(names)):
            name = names[i]
            if name in failed:
                continue
            b = built[name]
            try:
                inputs = b.prepare()
                block(inputs if not hasattr(inputs, "step") else None)
                np.add(flush, 1.0, out=flush)  # evict the caches, as a backward pass would
                t0 = time.perf_counter()
                out = b.call(inputs)
                block(out)
                times[name].append(time.perf_counter() - t0)
                del inputs, out
            except Exception as err:  # a runtime failure: report, drop the candidate
                failed.add(name)
                skipped.append(f"{name}: step failed ({type(err).__name__}: {str(err)[:200]})")
        log(f"    round {r + 1}/{rounds} done ({time.perf_counter() - t_start:.0f} s)")
    for name in failed:
        times.pop(name, None)
    return times, {k: b.info for k, b in built.items() if k in times}, skipped


def summarize(cands, times, infos, n, num_leaves, aa_pair):
    by_name = {c.name: c for c in cands}
    floor_bw = 0.0
    for name, ts in times.items():
        c = by_name[name]
        if c.family == "floor":
            floor_bw = max(floor_bw, (c.reads + c.writes) * ITEMSIZE * n / np.median(ts))
    base = np.asarray(times.get(BASELINE, []))
    rows = []
    for name, ts in times.items():
        c = by_name[name]
        ts = np.asarray(ts)
        med = float(np.median(ts))
        floor_s = (c.reads + c.writes) * ITEMSIZE * n / floor_bw if floor_bw else float("nan")
        row = {
            "name": name,
            "family": c.family,
            "reads": c.reads,
            "writes": c.writes,
            "median_ms": med * 1e3,
            "q25_ms": float(np.quantile(ts, 0.25)) * 1e3,
            "q75_ms": float(np.quantile(ts, 0.75)) * 1e3,
            "x_floor": med / floor_s,
            "floor_ms": floor_s * 1e3,
            "vs_adam": float(np.median(ts / base)) if base.size == ts.size else None,
            **infos.get(name, {}),
        }
        one = np.asarray(times.get(name + ONE_LEAF, []))
        if one.size == ts.size and num_leaves > 1:
            # Paired per round with the same step on one leaf of the same N (same block).
            row["per_leaf_us"] = float(np.median(ts - one)) * 1e6 / num_leaves
        rows.append(row)
    aa = None
    if aa_pair and all(x in times for x in aa_pair):
        ratio = np.asarray(times[aa_pair[1]]) / np.asarray(times[aa_pair[0]])
        aa = {
            "pair": list(aa_pair),
            "median_ratio": float(np.median(ratio)),
            "q25": float(np.quantile(ratio, 0.25)),
            "q75": float(np.quantile(ratio, 0.75)),
            "ratio_of_medians": float(np.median(times[aa_pair[1]]) / np.median(times[aa_pair[0]])),
        }
    return {"floor_bandwidth_gbs": floor_bw / 1e9, "num_leaves": num_leaves, "rows": rows, "aa": aa}


# ----------------------------------------------------------------------------
# report


def _fmt(x, spec):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def markdown(results: dict) -> str:
    out = []
    meta = results["meta"]
    out.append(
        f"Machine: {meta['machine']}, {meta['cpu_count']} CPU cores; jax {meta['jax']}, "
        f"optax {meta['optax']}, gdtx {meta['gdtx']}; {meta['torch']}; "
        f"{meta['rounds']} rounds; started {meta['started_utc']}."
    )
    out.append("")
    for block_ in results["blocks"]:
        layout, n = block_["layout"], block_["n"]
        out.append(
            f"### {layout}, N = {n:.0e} ({block_['num_leaves']} leaves), "
            f"floor bandwidth {block_['floor_bandwidth_gbs']:.1f} GB/s"
        )
        if block_["aa"]:
            aa = block_["aa"]
            out.append(
                f"A/A control ({aa['pair'][1]} / {aa['pair'][0]}): per-round ratio median "
                f"{aa['median_ratio']:.3f}, interquartile {aa['q25']:.3f}–{aa['q75']:.3f}."
            )
        out.append("")
        out.append(
            "| candidate | R+W | median ms | IQR ms | × floor | vs optax.adam | µs/leaf* "
            "| trace+lower s | compile s | temp / leaf | state arrays (min) | loops | copies |"
        )
        out.append("|" + "---|" * 13)
        single = block_.get("single_median_ms", {})
        for r in sorted(block_["rows"], key=lambda r: (r["family"] != "floor", r["name"])):
            per_leaf = r.get("per_leaf_us")
            if per_leaf is None and layout == "tree" and r["name"] in single:
                if r["family"] not in ("floor", "reference"):
                    per_leaf = (r["median_ms"] - single[r["name"]]) * 1e3 / block_["num_leaves"]
            state = None
            if r.get("state_arrays") is not None:
                state = f"{r['state_arrays']:.2f} ({_fmt(r.get('min_state_arrays'), 'd')})"
            out.append(
                f"| {r['name']} | {r['reads']}+{r['writes']} | {r['median_ms']:.3f} "
                f"| {r['q25_ms']:.3f}–{r['q75_ms']:.3f} | {r['x_floor']:.2f} "
                f"| {_fmt(r['vs_adam'], '.2f')} | {_fmt(per_leaf, '.1f')} "
                f"| {_fmt(r.get('trace_lower_s'), '.2f')} | {_fmt(r.get('compile_s'), '.2f')} "
                f"| {_fmt(r.get('temp_over_largest_leaf'), '.2f')} | {state or '–'} "
                f"| {_fmt(r.get('loops'), 'd')} | {_fmt(r.get('copies'), 'd')} |"
            )
        out.append("")
    out.append(
        "R+W: arrays read + written per element (the registry row's `reads`/`writes`); "
        "× floor: median time over `(R+W)·4·N / bandwidth`, with the best bandwidth of the "
        "floor kernels in the same run; vs optax.adam: median of per-round time ratios; "
        "µs/leaf*: (tree − the same step on one leaf of the same N), paired per round, over the "
        "number of leaves (rows marked [1 leaf]; else the difference of the two blocks' medians); "
        "temp / leaf: "
        "the compiled step's temp bytes over the largest leaf's; state arrays: state bytes over "
        "params bytes (the row's distinct state arrays in parentheses); loops / copies: array "
        "fusions and copies in the compiled entry computation."
    )
    out.append("")
    out.append(targets(results))
    if results["skipped"]:
        out.append("")
        out.append("Skipped:")
        out.extend(f"- {s}" for s in results["skipped"])
    return "\n".join(out) + "\n"


def targets(results: dict) -> str:
    """The issue's targets, checked on this run (large N = 1e7 and above)."""
    lines = ["Targets (this run):", ""]
    worst_floor, vs_adam, vs_optax, per_leaf, temp, state, compile_ = [], [], [], [], [], [], []
    for b in results["blocks"]:
        rows = {r["name"]: r for r in b["rows"]}
        tag = f"{b['layout']} {b['n']:.0e}"
        for r in b["rows"]:
            if r["family"] != "gdtx" or "(A/A twin)" in r["name"]:
                continue
            if b["n"] >= 10_000_000 and not math.isnan(r["x_floor"]):
                worst_floor.append((r["x_floor"], f"{r['name']} ({tag})"))
            if r.get("temp_over_largest_leaf") is not None:
                temp.append((r["temp_over_largest_leaf"], f"{r['name']} ({tag})"))
            if r.get("min_state_arrays") is not None:
                state.append((r["state_arrays"] - r["min_state_arrays"], f"{r['name']} ({tag})"))
        ab, adam = rows.get("gdtx.adabelief"), rows.get(BASELINE)
        oab = rows.get("optax.adabelief")
        if ab and adam and b["n"] >= 10_000_000 and ab.get("vs_adam") is not None:
            vs_adam.append((ab["vs_adam"], tag))
        if ab and oab and b["n"] >= 10_000_000:
            vs_optax.append((oab["median_ms"] / ab["median_ms"], tag))
        if b["layout"] == "tree":
            for name in PER_LEAF:
                if name in rows and rows[name].get("per_leaf_us") is not None:
                    per_leaf.append((rows[name]["per_leaf_us"], f"{name} ({tag})"))
        if b["layout"] == "tree" and ab and oab and ab.get("compile_s") is not None:
            compile_.append(
                (
                    ab["trace_lower_s"] + ab["compile_s"],
                    oab["trace_lower_s"] + oab["compile_s"],
                    tag,
                )
            )

    def worst(items, fmt):
        if not items:
            return "not measured"
        x, where = max(items)
        return f"worst {format(x, fmt)} ({where})"

    over = sorted((x, w) for x, w in worst_floor if x > 1.3)
    lines.append(
        f"- every gdtx step <= 1.3x its floor at N >= 1e7: {len(worst_floor) - len(over)} of "
        f"{len(worst_floor)} met; {worst(worst_floor, '.2f')}"
    )
    lines.append(f"- gdtx.adabelief <= 1.1x optax.adam at N >= 1e7: {worst(vs_adam, '.2f')}")
    if vs_optax:
        lines.append(
            "- gdtx.adabelief >= 2.5x faster than optax.adabelief at N >= 1e7: "
            f"slowest speed-up {min(vs_optax)[0]:.2f} ({min(vs_optax)[1]})"
        )
    lines.append(
        "- per-leaf overhead <= 10 us: "
        + ", ".join(f"{w}: {x:.1f}" for x, w in per_leaf if "1e+05" in w or "1e+06" in w)
    )
    if compile_:
        lines.append(
            "- tree trace+compile, gdtx.adabelief vs optax.adabelief (s): "
            + ", ".join(f"{a:.2f} vs {o:.2f} ({t})" for a, o, t in compile_)
        )
    lines.append(f"- temp memory / largest leaf: {worst(temp, '.2f')}")
    lines.append(f"- state arrays beyond the row's state: {worst(state, '.2f')}")
    return "\n".join(lines) + "\n"


def plot(results: dict, prefix: str) -> list[str]:
    """One figure per layout: × floor against N for every candidate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {"gdtx": "-", "optax": "--", "torch": ":", "floor": "-."}
    written = []
    for layout in sorted({b["layout"] for b in results["blocks"]}):
        blocks = sorted(
            (b for b in results["blocks"] if b["layout"] == layout), key=lambda b: b["n"]
        )
        names = sorted(
            {
                r["name"]
                for b in blocks
                for r in b["rows"]
                if r["family"] not in ("floor", "reference")
            }
        )
        fig, ax = plt.subplots(figsize=(9, 5.5))
        for name in names:
            pts = [(b["n"], r) for b in blocks for r in b["rows"] if r["name"] == name]
            if not pts:
                continue
            family = pts[0][1]["family"]
            ax.plot(
                [n for n, _ in pts],
                [r["x_floor"] for _, r in pts],
                style.get(family, "-"),
                marker="o",
                markersize=3,
                label=name,
                linewidth=2.0 if name in ("gdtx.adabelief", BASELINE) else 1.0,
            )
        ax.axhline(1.0, color="k", linewidth=0.8)
        ax.axhline(1.3, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N (float32 parameters)")
        ax.set_ylabel("step time / bandwidth floor")
        leaves = blocks[0]["num_leaves"]
        ax.set_title(
            f"{layout} ({leaves} leaves): median over rounds, {results['meta']['started_utc']}"
        )
        ax.legend(fontsize=6, ncol=2, loc="upper right")
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        path = f"{prefix}{layout}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# ----------------------------------------------------------------------------


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 1e6, a 10-leaf tree, 5 rounds")
    ap.add_argument("--sizes", default="1e5,1e6,1e7,3e7", help="comma-separated N")
    ap.add_argument("--layouts", default="single,tree")
    ap.add_argument("--leaves", type=int, default=100, help="leaves of the tree layout")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--only", default=None, help="regex on candidate names (baselines stay)")
    ap.add_argument("--hlo-only", action="store_true", help="compile and report; no timing")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--torch-path", default=None, help="site-packages holding torch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--markdown", default=None, help="write the Markdown table here")
    ap.add_argument("--plot", default=None, help="write PREFIX<layout>.png figures")
    ap.add_argument("--replot", default=None, help="re-render a --json file; no run")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.rounds, args.leaves = "1e6", min(args.rounds, 5), min(args.leaves, 10)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.replot:
        results = json.loads(pathlib.Path(args.replot).read_text())
        _write(results, args)
        return results
    only = re.compile(args.only) if args.only else None
    gdtx_cands, skipped = registry_candidates(only)
    # The A/A twin is gdtx.adabelief when present (the step the targets are about).
    gdtx_rows = [c for c in gdtx_cands if c.family == "gdtx"]
    first = next((c for c in gdtx_rows if c.name == "gdtx.adabelief"), None) or next(
        iter(gdtx_rows), None
    )
    cands = floor_candidates() + baseline_candidates(first) + gdtx_cands
    torch_note = "torch not used"
    if not args.no_torch and not args.hlo_only:
        tc, torch_note = torch_candidates(args.torch_path)
        cands += tc
    for s in skipped:
        log(f"skipped {s}")
    aa_pair = (first.name, f"{first.name} (A/A twin)") if first else None
    rng = np.random.default_rng(args.seed)
    results = {
        "meta": {
            "machine": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "optax": optax.__version__,
            "gdtx": gdtx.__version__,
            "torch": torch_note,
            "rounds": args.rounds,
            "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "argv": sys.argv[1:] if argv is None else list(argv),
        },
        "blocks": [],
        "skipped": list(skipped),
    }
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    single_medians = {}
    for n in sizes:
        for layout in args.layouts.split(","):
            shapes = leaf_shapes(layout, n, args.leaves)
            n_real = sum(math.prod(s) for s in shapes)
            log(f"{layout} N={n_real:.2e} ({len(shapes)} leaves)")
            todo = [c for c in cands if c.family != "torch" or not args.hlo_only]
            if layout == "tree" and not args.hlo_only:
                todo += [one_leaf(c) for c in todo if c.name in PER_LEAF]
            rounds = 0 if args.hlo_only else args.rounds
            times, infos, bad = measure(todo, shapes, rounds, rng, log)
            for b in bad:
                log(f"skipped {b}")
                if b not in results["skipped"]:
                    results["skipped"].append(b)
            if args.hlo_only:
                times = {k: [float("nan")] for k in infos}
            summary = summarize(todo, times, infos, n_real, len(shapes), aa_pair)
            summary.update(layout=layout, n=n_real)
            if layout == "single":
                single_medians[n] = {r["name"]: r["median_ms"] for r in summary["rows"]}
            elif n in single_medians:
                summary["single_median_ms"] = single_medians[n]
            results["blocks"].append(summary)
    _write(results, args)
    return results


def _write(results: dict, args) -> None:
    text = markdown(results)
    print(text)
    if args.json and not args.replot:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    if args.markdown:
        pathlib.Path(args.markdown).write_text(text)
    if args.plot:
        for path in plot(results, args.plot):
            print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
