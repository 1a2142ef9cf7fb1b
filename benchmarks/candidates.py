"""The candidates of ``benchmarks.step_time``: registry rows, optax, floor kernels, PyTorch.

A :class:`Candidate` knows how to build itself for one list of leaf shapes; the build
returns a :class:`Built` (fresh inputs, the timed call, what needs no clock).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import rows
from tests.hlo_steps import leaf_copies

BASELINE = "optax.adam"
ONE_LEAF = " [1 leaf]"
AA_SUFFIX = " (A/A twin)"


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
    per_matrix = max(1, int(0.98 * n) // max(half, 1))
    cols = max(1, int(math.sqrt(per_matrix)))
    shapes = [(max(1, per_matrix // cols), cols) for _ in range(half)]
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


def quadratic(params: Any) -> jax.Array:
    """The benchmark's problem: the loss handed to rows that evaluate it again."""
    return 0.5 * sum(jnp.sum(x * x) for x in jax.tree.leaves(params))


# ----------------------------------------------------------------------------
# candidates


@dataclasses.dataclass
class Built:
    """A candidate compiled for one layout and size."""

    prepare: Callable[[], Any]  # fresh inputs (untimed)
    call: Callable[[Any], Any]  # the timed step; returns something to block on
    info: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Candidate:
    name: str
    family: str  # "gdtx" | "optax" | "floor" | "primitive" | "torch" | "reference"
    reads: int
    writes: int
    build: Callable[[list[tuple[int, ...]]], Built]
    floor: rows.Floor = rows.ELEMENTWISE
    min_state_arrays: int | None = None


def hlo_stats(compiled: Any, leaf_elements: int = 1) -> dict[str, int]:
    """Array loops (non-scalar fusions), leaf copies and while loops in the entry computation.

    A copy counts when its array has at least ``leaf_elements`` elements (the
    smallest leaf's): a full extra pass over a leaf, the issue-21 target
    ``copies = 0``, counted as the tests that pin it count (``tests/hlo_steps.py``).
    Copies of PRNG keys and step counts (``u32[4]``, ``s32[]``) are bookkeeping,
    not passes over memory, and do not count.
    """
    text = compiled.as_text()
    start = text.find("\nENTRY ")
    entry = text[start:] if start >= 0 else text
    stats = {"loops": 0, "copies": len(leaf_copies(text, leaf_elements)), "whiles": 0}
    for line in entry.splitlines()[1:]:
        match = re.match(r"\s*(?:ROOT )?%\S+ = (\S+?)\{?[\d,]*\}? (\S+?)\(", line)
        if not match:
            continue
        shape, op = match.groups()
        if op == "fusion" and re.match(r"[a-z]+\d*\[\d", shape):
            stats["loops"] += 1
        elif op == "while":
            stats["whiles"] += 1
    return stats


def _step_fn(tx, extra_args, axis_name):
    """``(params, state, grads) -> (params, state)``: update, under shard_map if needed."""

    def update(grads, state, params):
        extra = extra_args(params, grads)
        if axis_name is None:
            return tx.update(grads, state, params, **extra)
        mesh = jax.make_mesh((1,), (axis_name,), devices=jax.devices()[:1])
        spec = jax.sharding.PartitionSpec()
        fn = jax.shard_map(
            lambda g, s, p: tx.update(g, s, p, **extra), mesh=mesh, in_specs=spec, out_specs=spec
        )
        return fn(grads, state, params)

    def step(params, state, grads):
        updates, state = update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def _compile_info(jitted, params, state, grads, min_state_arrays) -> tuple[Any, dict]:
    """Compiles ``jitted`` and records what needs no clock."""
    t0 = time.perf_counter()
    lowered = jitted.lower(params, state, grads)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    mem = compiled.memory_analysis()
    param_bytes = tree_bytes(params)
    largest_leaf = max(x.nbytes for x in jax.tree.leaves(params))
    info = {
        "trace_lower_s": t1 - t0,
        "compile_s": t2 - t1,
        "temp_bytes": int(mem.temp_size_in_bytes) if mem else None,
        "temp_over_largest_leaf": (mem.temp_size_in_bytes / largest_leaf) if mem else None,
        "alias_bytes": int(mem.alias_size_in_bytes) if mem else None,
        "donated_array_bytes": param_bytes
        + sum(x.nbytes for x in jax.tree.leaves(state) if x.ndim > 0),
        "state_arrays": tree_bytes(state) / param_bytes,
        "min_state_arrays": min_state_arrays,
        **hlo_stats(compiled, min(x.size for x in jax.tree.leaves(params))),
    }
    return compiled, info


def jax_candidate(
    name: str,
    family: str,
    make_tx: Callable[[], optax.GradientTransformation],
    entry: rows.Entry,
    *,
    extra_args: Callable[[Any, Any], dict] = lambda params, grads: {},
    axis_name: str | None = None,
    min_state_arrays: int | None = None,
) -> Candidate:
    """``jit(update + apply_updates)``, params and state donated, on fresh buffers."""

    def build(shapes):
        tx = make_tx()
        make_params = jax.jit(lambda: make_tree(shapes, 0.0))
        make_grads = jax.jit(lambda: make_tree(shapes, 1.0))
        init = jax.jit(tx.init)
        jitted = jax.jit(_step_fn(tx, extra_args, axis_name), donate_argnums=(0, 1))
        params = make_params()
        compiled, info = _compile_info(jitted, params, init(params), make_grads(), min_state_arrays)

        def prepare():
            p = make_params()
            return p, init(p), make_grads()

        return Built(prepare, lambda inputs: compiled(*inputs), info)

    return Candidate(
        name, family, len(entry.reads), len(entry.writes), build, entry.floor, min_state_arrays
    )


def _extra_args_skip(case, extra) -> str | None:
    """Why the row's extra arguments cannot be built here, or None."""
    if not case.required_extra_args:
        return None
    probe = jnp.zeros((3,))
    try:
        missing = set(case.required_extra_args) - set(extra(probe, probe))
    except Exception as err:  # a row that cannot build its extra args here
        return f"extra_args builder failed ({type(err).__name__}: {err})"
    return f"its extra_args builder gives no {sorted(missing)}" if missing else None


def _optax_twin(case, entry, only, seen: set) -> Candidate | None:
    """``optax.<factory name>`` with the row's kwargs it accepts, once per (name, kwargs)."""
    twin = getattr(optax, case.factory.__name__, None)
    if not callable(twin) or twin is optax.adam:
        return None
    params = inspect.signature(twin).parameters
    kwargs = {k: v for k, v in case.kwargs.items() if k in params}
    key = (twin.__name__, tuple(sorted(kwargs.items())))
    name = f"optax.{twin.__name__}"
    if key in seen or (only and not only.search(name)):
        return None
    if any(k[0] == twin.__name__ for k in seen):
        name = f"{name}[{case.name}]"
    seen.add(key)
    return jax_candidate(name, "optax", lambda: twin(**kwargs), entry)


def registry_candidates(
    cases: Iterable[Any], only: re.Pattern | None
) -> tuple[list[Candidate], list[str]]:
    """One candidate per registry row, plus the optax function of the same name.

    Raises ``LookupError`` (``rows.check_entries``) when a row has no entry in
    ``benchmarks/rows.py``, whatever ``only`` selects.
    """
    cases = list(cases)
    rows.check_entries(c.name for c in cases)
    cands, skipped, optax_seen = [], [], set()
    for case in cases:
        name = f"gdtx.{case.name}"
        if only and not only.search(name):
            continue
        entry = rows.ENTRIES[case.name]

        def extra(params, grads, builder=case.extra_args):
            return builder(quadratic, params, grads)

        why = _extra_args_skip(case, extra)
        if why:
            skipped.append(f"{name}: {why}")
            continue
        cands.append(
            jax_candidate(
                name,
                "gdtx",
                case.make,
                entry,
                extra_args=extra,
                axis_name=case.axis_name,
                min_state_arrays=len(rows.state_names(entry)),
            )
        )
        twin = _optax_twin(case, entry, only, optax_seen)
        if twin is not None:
            cands.append(twin)
    return cands, skipped


def baseline_candidates(aa_of: Candidate | None) -> list[Candidate]:
    """``optax.adam``, and the A/A twin of ``aa_of`` (its own compilation and buffers)."""
    adam = rows.Entry(("grad", "param", "mu", "nu"), ("param", "mu", "nu"), rows.ELEMENTWISE)
    out = [jax_candidate(BASELINE, "optax", lambda: optax.adam(1e-2), adam)]
    if aa_of is not None:
        out.append(dataclasses.replace(aa_of, name=aa_of.name + AA_SUFFIX))
    return out


def one_leaf(c: Candidate) -> Candidate:
    """``c`` on a single leaf holding all of a layout's elements."""

    def build(shapes):
        return c.build([(sum(math.prod(s) for s in shapes),)])

    return dataclasses.replace(c, name=c.name + ONE_LEAF, family="reference", build=build)


def floor_candidates() -> list[Candidate]:
    """In-place streaming kernels; their best bandwidth defines the floors."""

    def kernel(name, fn, n_in):
        def build(shapes):
            n = sum(math.prod(s) for s in shapes)
            f = jax.jit(fn, donate_argnums=(0,))
            make = jax.jit(lambda k: jnp.full((n,), 0.5, jnp.float32) + k)

            def prepare():
                return tuple(make(float(i)) for i in range(n_in))

            return Built(prepare, lambda inputs: f(*inputs), {})

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


# ----------------------------------------------------------------------------
# PyTorch (optional: nothing is installed)


def _torch_step_candidate(torch, name, factory) -> Candidate:
    def build(shapes):
        def prepare():
            params = [
                torch.nn.Parameter(torch.sin(torch.arange(math.prod(s)).reshape(s) * 1e-3) * 0.1)
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

        return Built(prepare, call, {})

    return Candidate(name, "torch", 4, 3, build)


def _torch_add_candidate(torch) -> Candidate:
    def build(shapes):
        n = sum(math.prod(s) for s in shapes)

        def prepare():
            return torch.full((n,), 0.5), torch.full((n,), 0.25)

        def call(inputs):
            inputs[0].add_(inputs[1])  # all threads, in place

        return Built(prepare, call, {})

    return Candidate("floor: torch a += b", "floor", 2, 1, build)


def torch_candidates(path: str | None) -> tuple[list[Candidate], str]:
    """Fused torch Adam and the PyTorch AdaBelief packages, when torch can be imported.

    ``path`` (``--torch-path``) is appended to ``sys.path``, after this environment's
    own packages, so it cannot shadow the numpy or jax being measured.
    """
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
    cands = [
        _torch_add_candidate(torch),
        _torch_step_candidate(
            torch,
            "torch.optim.Adam(fused=True)",
            lambda ps: torch.optim.Adam(ps, lr=1e-2, fused=True),
        ),
    ]
    with contextlib.suppress(ImportError):
        from adabelief_pytorch import AdaBelief

        cands.append(
            _torch_step_candidate(
                torch,
                "adabelief_pytorch.AdaBelief",
                lambda ps: AdaBelief(ps, lr=1e-2, rectify=False, print_change_log=False),
            )
        )
    with contextlib.suppress(ImportError):
        from pytorch_optimizer import AdaBelief as KozistrAdaBelief

        cands.append(
            _torch_step_candidate(
                torch, "pytorch_optimizer.AdaBelief", lambda ps: KozistrAdaBelief(ps, lr=1e-2)
            )
        )
    return cands, f"torch {torch.__version__}"
