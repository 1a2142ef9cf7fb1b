"""Collectives in compiled HLO: what each device puts on the wire.

Users (``docs/guides/data_parallel.md``), tests, benchmarks and
``gdtx-train``'s data-parallel runs read the bytes a compiled step exchanges
from ``jax.jit(f).lower(...).compile().as_text()`` with
:func:`gdtx.hlo_collectives`.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

_COLLECTIVE_OPS = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_HLO_INSTRUCTION = re.compile(
    r"=\s*(?P<type>\(.*?\)|\S+)\s+(?P<op>(?:" + "|".join(_COLLECTIVE_OPS) + r")(?:-start)?)\("
)
_HLO_ARRAY = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")
_GROUPS = re.compile(r"replica_groups=\{\{([\d,]*)\}")
_IOTA_GROUPS = re.compile(r"replica_groups=\[([\d,]+)\]<=")  # [groups,size]<=[n]
_MESH_GROUPS = re.compile(r"replica_groups=mesh\[([^\]]*)\][^{]*\{([^}]*)\}")
_ITEMSIZE = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2}
_ITEMSIZE.update({"s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8})
_ITEMSIZE["c128"] = 16


class Collective(NamedTuple):
    """One collective in compiled HLO (see :func:`hlo_collectives`).

    Attributes:
      op: the HLO opcode, e.g. ``"all-gather"`` or ``"all-reduce-start"``.
      dtypes: the element types it moves, e.g. ``("u8",)``.
      operand_bytes: bytes each device contributes (its operands).
      group_size: devices in its replica group (0 when the HLO does not say).
    """

    op: str
    dtypes: tuple[str, ...]
    operand_bytes: int
    group_size: int


def _group_size(line: str) -> int:
    """Devices per replica group, from the explicit, iota or mesh-axes form (0: unknown)."""
    groups = _GROUPS.search(line)
    if groups:
        return len(groups.group(1).split(",")) if groups.group(1) else 0
    iota = _IOTA_GROUPS.search(line)
    if iota:
        return int(iota.group(1).split(",")[-1])
    mesh = _MESH_GROUPS.search(line)
    if mesh:
        sizes = dict(re.findall(r"'([^']+)'=(\d+)", mesh.group(1)))
        named = re.findall(r"'([^']+)'", mesh.group(2))
        return math.prod(int(sizes[n]) for n in named if n in sizes) if named else 0
    return 0


def hlo_collectives(hlo_text: str) -> list[Collective]:
    """The collectives of a compiled HLO module, with the bytes each device sends.

    Reads ``jax.jit(f).lower(...).compile().as_text()``: synchronous ops and the
    ``-start`` halves of asynchronous ones (never the ``-done`` halves, so nothing
    is counted twice). An all-gather's operand is its result divided by the group
    size (or the first element of an async start's tuple); an all-reduce's
    operands are its results.

    Args:
      hlo_text: the text of a compiled module.

    Returns:
      One :class:`Collective` per collective instruction, in program order.

    Examples:
      A float32 all-reduce of 1000 values and a packed all-gather of 250 bytes
      per device, over 4 devices:

      >>> from gdtx import hlo_collectives
      >>> hlo = "\\n".join([
      ...     "%ar = f32[1000]{0} all-reduce(f32[1000]{0} %x), replica_groups={{0,1,2,3}}",
      ...     "%ag = u8[4,250]{1,0} all-gather(u8[1,250]{1,0} %p), replica_groups={{0,1,2,3}}",
      ... ])
      >>> for c in hlo_collectives(hlo):
      ...     print(c.op, c.dtypes, c.operand_bytes, c.group_size)
      all-reduce ('f32',) 4000 4
      all-gather ('u8',) 250 4

    References:
      XLA's operation semantics (all-gather, all-reduce, reduce-scatter):
      https://openxla.org/xla/operation_semantics
    """
    found = []
    for line in hlo_text.splitlines():
        match = _HLO_INSTRUCTION.search(line)
        if match is None:
            continue
        op = match.group("op")
        arrays = [
            (dtype, math.prod(int(d) for d in dims.split(",") if d))
            for dtype, dims in _HLO_ARRAY.findall(match.group("type"))
            if dtype in _ITEMSIZE
        ]
        group_size = _group_size(line)
        sizes = [_ITEMSIZE[dtype] * count for dtype, count in arrays]
        if op == "all-gather-start" and len(sizes) >= 2:
            operand = sum(sizes[: len(sizes) // 2])  # ((operands...), (results...))
        elif op.startswith("all-gather"):
            operand = sum(sizes) // max(group_size, 1)
        elif op.startswith("reduce-scatter"):
            operand = sum(sizes) * max(group_size, 1)
        else:  # all-reduce(-start), all-to-all, collective-permute: results shaped like operands
            operand = sum(sizes)
        dtypes_moved = tuple(sorted({dtype for dtype, _ in arrays}))
        found.append(Collective(op, dtypes_moved, operand, group_size))
    return found
