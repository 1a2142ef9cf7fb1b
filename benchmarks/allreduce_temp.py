"""Why periodic averaging is slow on a one-device mesh: the combined all-reduce's temporaries.

``gdtx.mfl_sgd`` and ``gdtx.diloco_adam`` (every=1) average every parameter leaf (and
MFL its momentum) with ``jax.lax.pmean``. On one device XLA:CPU combines the step's
one-participant all-reduces into one whose operands and results are all live at once.
This times, in one interleaved run on a tree of ``--leaves`` float32 leaves totalling
``N``, the same momentum-SGD-then-average step three ways, under a one-device
``jax.shard_map``, params and momentum donated, after a 64 MiB cache flush:

- ``pmean``: one ``pmean`` of the (params, momentum) tree, as ``gdtx.local_sgd`` does;
- ``no collective``: the same arithmetic without the average (what one device needs);
- ``chained pmeans``: one ``pmean`` per leaf, each tied to the previous result by an
  optimisation barrier (does a sequence of small all-reduces need less memory?).

It prints each variant's compiled temporary bytes and its median step time.

Usage (from the repository root)::

  .venv/bin/python -m benchmarks.allreduce_temp                  # N = 1e7, 100 leaves
  .venv/bin/python -m benchmarks.allreduce_temp --size 1e5 --leaves 4 --rounds 2
"""

from __future__ import annotations

import argparse
import math
import sys

import jax
import numpy as np
import optax

from benchmarks import candidates as cd
from benchmarks import measure

VARIANTS = ("pmean", "no collective", "chained pmeans")
_AXIS = "data"


def _average(variant: str, tree):
    if variant == "pmean":
        return jax.lax.pmean(tree, _AXIS)
    if variant == "no collective":
        return tree
    leaves, treedef = jax.tree.flatten(tree)
    out, previous = [], None
    for x in leaves:
        if previous is not None:
            x, _ = jax.lax.optimization_barrier((x, previous))
        previous = jax.lax.pmean(x, _AXIS)
        out.append(previous)
    return jax.tree.unflatten(treedef, out)


def step_fn(variant: str, learning_rate: float = 0.1, momentum: float = 0.9):
    """``(params, trace, grads) -> (params, trace)``: MFL's step with ``every=1``."""
    mesh = jax.make_mesh((1,), (_AXIS,), devices=jax.devices()[:1])
    spec = jax.sharding.PartitionSpec()

    def body(grads, trace, params):
        trace = jax.tree.map(lambda t, g: momentum * t + g, trace, grads)
        theta = jax.tree.map(lambda p, t: p - learning_rate * t, params, trace)
        theta, trace = _average(variant, (theta, trace))
        return jax.tree.map(lambda a, p: a - p, theta, params), trace

    update = jax.shard_map(body, mesh=mesh, in_specs=spec, out_specs=spec)

    def step(params, trace, grads):
        updates, trace = update(grads, trace, params)
        return optax.apply_updates(params, updates), trace

    return jax.jit(step, donate_argnums=(0, 1))


def _candidate(variant: str) -> cd.Candidate:
    """``variant`` as a benchmark candidate: compiled, its temporaries in ``info``."""

    def build(shapes):
        make = jax.jit(lambda: cd.make_tree(shapes, 0.0))
        grads = jax.jit(lambda: cd.make_tree(shapes, 1.0))()
        compiled = step_fn(variant).lower(make(), make(), grads).compile()
        temp_mb = compiled.memory_analysis().temp_size_in_bytes / 1e6
        return cd.Built(
            prepare=lambda: (make(), make(), grads),
            call=lambda inputs: compiled(*inputs),
            info={"temp_mb": temp_mb},
        )

    # reads g, p, trace; writes p, trace (the averaging's traffic is what is measured)
    return cd.Candidate(variant, "diagnostic", 3, 2, build)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1e7", help="total float32 elements N")
    ap.add_argument("--leaves", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args(argv)
    shapes = cd.leaf_shapes("tree", int(float(args.size)), args.leaves)
    # The step-time benchmark's interleaved timing: fresh donated inputs, a cache flush,
    # every variant once per round in a new order.
    times, infos, skipped = measure.measure(
        [_candidate(v) for v in VARIANTS], shapes, args.rounds, np.random.default_rng(0), _log
    )
    if skipped:
        raise RuntimeError(f"benchmarks.allreduce_temp: {skipped}")
    model_mb = sum(math.prod(s) for s in shapes) * measure.ITEMSIZE / 1e6
    print(f"{len(shapes)} leaves, {model_mb:.0f} MB of float32 parameters, {args.rounds} rounds")
    print("| variant | temp MB | median ms |\n|---|---:|---:|")
    result = {}
    for v in VARIANTS:
        result[v] = {"temp_mb": infos[v]["temp_mb"], "median_ms": 1e3 * float(np.median(times[v]))}
        print(f"| {v} | {result[v]['temp_mb']:.1f} | {result[v]['median_ms']:.1f} |")
    return result


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
