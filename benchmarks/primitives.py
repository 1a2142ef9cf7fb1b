"""The measured primitives that declared floors are built from (``benchmarks/rows.py``).

Each is a jitted function of fresh inputs in the layout being measured (the same leaves
as the steps), timed in the same interleaved rounds as the steps:

- ``loss``: the benchmark's problem ``0.5 * sum(p**2)`` at ``p`` (reads p);
- ``grad``: its gradient (reads p, writes g);
- ``hvp``: its Hessian-vector product by forward over reverse, as
  ``gdtx.frank_wolfe.hessian_vector_product`` builds it (reads p and t, writes 1);
- ``uniform`` / ``normal``: one float32 draw per coordinate with JAX's default PRNG,
  one ``fold_in`` key per leaf (writes 1);

inputs shaped like the output are donated (see ``_spec``).
- ``window<m>``: M-FAC's two window products with an ``m``-row window ``G``: the Gram row
  ``c = G g`` over all leaves (``jnp.tensordot``), then ``c^T G`` as a sum of the
  scaled rows (reads G twice and g, writes 1);
- ``all_reduce``: what averaging one float32 array per leaf costs where the collective
  rows are timed: ``jax.lax.psum`` of ``p`` made varying, under a one-device
  ``jax.shard_map`` (reads 1, writes 1). XLA:CPU keeps a one-participant collective as a
  runtime call that copies its operand; a step that averages ``k`` arrays pays ``k``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks import candidates as cd


def _keyed(draw: Callable) -> Callable:
    def fn(key, like):
        # ``like`` gives the shapes and, donated, the output buffers: its values are unused.
        leaves, treedef = jax.tree.flatten(like)
        out = [draw(jax.random.fold_in(key, i), x.shape) for i, x in enumerate(leaves)]
        return jax.tree.unflatten(treedef, out)

    return fn


def _window_products(window: Any, g: Any) -> Any:
    gram_row = sum(
        jnp.tensordot(w, x, axes=x.ndim)
        for w, x in zip(jax.tree.leaves(window), jax.tree.leaves(g), strict=True)
    )
    # c^T G as a sum of scaled rows: on XLA:CPU 3-5x faster than tensordot's
    # vector-matrix kernel for the short windows timed here (m = 4, 8).
    return jax.tree.map(lambda w: sum(gram_row[i] * w[i] for i in range(w.shape[0])), window)


def _window_inputs(shapes, m: int) -> tuple:
    g = cd.make_tree(shapes, 1.0)
    offsets = jnp.arange(m, dtype=jnp.float32) * 0.01
    stacked = jax.tree.map(lambda x: offsets.reshape((m,) + (1,) * x.ndim) + x[None], g)
    return stacked, g


_ONE_DEVICE_AXIS = "benchmark_devices"


def _one_device_all_reduce() -> Callable:
    def exchange(x):
        x = jax.lax.pcast(x, _ONE_DEVICE_AXIS, to="varying")  # as a worker's own value
        return jax.lax.psum(x, _ONE_DEVICE_AXIS)

    mesh = jax.make_mesh((1,), (_ONE_DEVICE_AXIS,), devices=jax.devices()[:1])
    spec = jax.sharding.PartitionSpec()
    return jax.shard_map(
        lambda tree: jax.tree.map(exchange, tree), mesh=mesh, in_specs=spec, out_specs=spec
    )


def _spec(name: str, shapes) -> tuple[int, int, Callable, Callable, tuple[int, ...]]:
    """``(reads, writes, fn, inputs() -> args, donated args)`` of ``name`` on ``shapes``.

    Inputs shaped like the output are donated, as the steps donate theirs: otherwise the
    timed call pays for fresh output pages (4x the time of a gradient at N = 1e7).
    """

    def params(offset=0.0):
        return cd.make_tree(shapes, offset)

    if name == "loss":
        return 1, 0, cd.quadratic, lambda: (params(),), ()
    if name == "grad":
        return 1, 1, jax.grad(cd.quadratic), lambda: (params(),), (0,)
    if name == "hvp":

        def hvp(p, t):
            return jax.jvp(jax.grad(cd.quadratic), (p,), (t,))[1]

        return 2, 1, hvp, lambda: (params(), params(1.0)), (1,)
    if name in ("uniform", "normal"):
        draw = jax.random.uniform if name == "uniform" else jax.random.normal
        return 0, 1, _keyed(draw), lambda: (jax.random.PRNGKey(0), params()), (1,)
    if name == "all_reduce":
        return 1, 1, _one_device_all_reduce(), lambda: (params(),), (0,)
    if name.startswith("window"):
        m = int(name.removeprefix("window"))
        return 2 * m + 1, 1, _window_products, lambda: _window_inputs(shapes, m), (1,)
    raise ValueError(f"benchmarks.primitives: unknown primitive {name!r}")


def traffic(name: str) -> tuple[int, int]:
    """``(reads, writes)`` in float32 arrays of the parameters' size."""
    return _spec(name, [(1,)])[:2]


def primitive_candidates(names: Iterable[str]) -> list[cd.Candidate]:
    """One candidate per primitive name (``loss``, ``grad``, ..., ``window8``)."""

    def candidate(name):
        def build(shapes):
            _, _, fn, inputs, donate = _spec(name, shapes)
            make = jax.jit(inputs)
            jitted = jax.jit(fn, donate_argnums=donate, keep_unused=True)
            compiled = jitted.lower(*make()).compile()
            return cd.Built(make, lambda args: compiled(*args), {})

        return cd.Candidate(f"primitive: {name}", "primitive", *traffic(name), build)

    return [candidate(name) for name in sorted(set(names))]


def used_by(floors: Iterable[Any]) -> set[str]:
    """The primitive names a set of floors uses."""
    return {name for f in floors for name, _ in f.uses}
