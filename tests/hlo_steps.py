"""Compile a donated optimizer step and read its HLO: copies and temporaries.

Shared by the tests that pin "no copy of a donated state buffer" (issue 21):
tests/test_hlo_copies.py, tests/test_compression.py and tests/test_diana.py; the
copies column of ``benchmarks/step_time.py`` counts with :func:`leaf_copies` too.
The step is compiled as ``benchmarks/step_time.py`` times it: ``jax.jit`` of
``update + optax.apply_updates`` with params and state donated.
"""

from __future__ import annotations

import math
import re

import jax
import optax

N = 4096
_ARRAY_COPY = re.compile(r"=\s*([a-z]+\d*)\[([\d,]+)\]\S*\s+copy(?:-start)?\(")


def _entry(text: str) -> str:
    return text[text.index("\nENTRY") :]


def leaf_copies(text: str, n: int = N) -> list[str]:
    """The copies of arrays with at least ``n`` elements in the entry computation."""
    found = []
    for line in _entry(text).splitlines():
        match = _ARRAY_COPY.search(line)
        if match and math.prod(int(d) for d in match.group(2).split(",")) >= n:
            found.append(line.strip())
    return found


_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?(%\S+) = ([a-z]+\d*)\[([\d,]*)\]\S* (\S+?)\((%[^,)]+)?")


def reductions(text: str, n: int = N) -> list[str]:
    """The ``reduce`` instructions, fused or not, whose input has at least ``n`` elements."""
    sizes, found = {}, []
    for line in text.splitlines():
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, _, dims, op, operand = match.groups()
        sizes[name] = math.prod(int(d) for d in dims.split(",")) if dims else 1
        if op == "reduce" and sizes.get(operand, 0) >= n:
            found.append(line.strip())
    return found


def compile_step(tx, params, grads, *, axis_name=None, extra=None, check_vma=True):
    """``jit(update + apply_updates)`` with params and state donated, compiled.

    With ``axis_name`` the update runs under a one-device ``jax.shard_map``;
    ``check_vma=False`` for a transformation whose state mixes varying and
    replicated values there (a carried rounding key).
    """

    def update(g, s, p):
        return tx.update(g, s, p, **(extra or {}))

    if axis_name is not None:
        mesh = jax.make_mesh((1,), (axis_name,), devices=jax.devices()[:1])
        spec = jax.sharding.PartitionSpec()
        update = jax.shard_map(
            update, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=check_vma
        )

    def step(p, s, g):
        u, s = update(g, s, p)
        return optax.apply_updates(p, u), s

    state = tx.init(params)
    return jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads).compile()


def temp_leaves(compiled, n: int = N) -> float:
    """The compiled step's temporary bytes, in float32 leaves of ``n`` elements."""
    return compiled.memory_analysis().temp_size_in_bytes / (4 * n)
