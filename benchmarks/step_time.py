"""Step time of every gdtx alias against optax, PyTorch, and two floors per step.

An optimizer step is mostly elementwise work over the parameters and the state, so its
speed limit is memory bandwidth: a step that reads ``R`` and writes ``W`` arrays of
``N`` float32 elements cannot beat ``(R + W) * 4 * N / bandwidth``, the *generic
floor*. A step that by design does more (evaluates the loss again, reads a window,
writes a packed payload) is also compared with its *own floor*, declared per registry
row in ``benchmarks/rows.py`` and built from primitives timed in the same run
(``benchmarks/primitives.py``). This script times, interleaved in one run:

- every row of the battery registry (``tests/registry``: its ``make()``, extra
  arguments and mesh axis); each row must have an entry in ``benchmarks/rows.py``
  (its reads, writes and floor), else the run stops;
- the optax function of the same name where there is one (``optax.adabelief`` for
  ``gdtx.adabelief``, ...), and ``optax.adam`` as the common baseline;
- an A/A control: gdtx.adabelief (else the first gdtx row) compiled and run a second
  time as if it were another candidate, so the spread of its ratio to itself is the noise;
- the bandwidth-floor kernels (in-place streams: XLA ``a <- a + c b`` and
  ``a <- a + b c + d``, NumPy ``a += b``, and torch ``a.add_(b)`` when torch is there),
  whose best bandwidth gives each step's generic floor;
- the primitives the selected rows' own floors use (loss, gradient, ... of the problem);
- ``torch.optim.Adam(fused=True)`` and PyTorch AdaBelief implementations when
  ``torch`` can be imported (``--torch-path`` adds a site-packages directory).

Each measured step is ``jax.jit(update + optax.apply_updates)`` with the params and the
optimizer state donated, on freshly initialised buffers, after a 64 MiB write that
flushes the caches as a forward/backward pass would. Candidates run in a new random
order every round; the report gives medians over rounds and, against ``optax.adam``, the
A/A twin and the own floor, the median of the per-round ratios.

Besides time, every JAX step reports what needs no clock: trace+lower and XLA compile
time, the compiled step's temp memory (``memory_analysis()``), the donated bytes XLA
aliased, the state's size in parameter-sized arrays, and the number of array loops
(fusions) and copies in the compiled HLO.

Usage (from the repository root)::

  .venv/bin/python -m benchmarks.step_time --quick                # N = 1e6, 10-leaf tree, 5 rounds
  .venv/bin/python -m benchmarks.step_time --json out.json --markdown out.md
  .venv/bin/python -m benchmarks.step_time --hlo-only             # no timing
  .venv/bin/python -m benchmarks.step_time --only 'adabelief|adam' --sizes 1e7,3e7
  .venv/bin/python -m benchmarks.step_time --floors               # the declared floors
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import pathlib
import platform
import re
import sys
import time

import jax
import numpy as np
import optax

import gdtx
from benchmarks import candidates as cd
from benchmarks import measure, primitives, report


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
    ap.add_argument("--floors", action="store_true", help="print the declared floors; no run")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.rounds, args.leaves = "1e6", min(args.rounds, 5), min(args.leaves, 10)
    return args


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def all_candidates(args) -> tuple[list[cd.Candidate], list[str], str, tuple | None]:
    """The run's candidates, what was skipped, the torch note and the A/A pair."""
    from tests.registry import ALL_CASES

    only = re.compile(args.only) if args.only else None
    gdtx_cands, skipped = cd.registry_candidates(ALL_CASES, only)
    # The A/A twin is gdtx.adabelief when present (the step the targets are about).
    steps = [c for c in gdtx_cands if c.family == "gdtx"]
    first = next((c for c in steps if c.name == "gdtx.adabelief"), None) or next(iter(steps), None)
    used = primitives.used_by(c.floor for c in gdtx_cands)
    cands = (
        cd.floor_candidates()
        + primitives.primitive_candidates(used)
        + cd.baseline_candidates(first)
        + gdtx_cands
    )
    torch_note = "torch not used"
    if not args.no_torch and not args.hlo_only:
        tc, torch_note = cd.torch_candidates(args.torch_path)
        cands += tc
    aa_pair = (first.name, first.name + cd.AA_SUFFIX) if first else None
    return cands, skipped, torch_note, aa_pair


def _meta(args, argv, torch_note: str) -> dict:
    return {
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": f"{jax.default_backend()}: {jax.devices()[0].device_kind}",
        "jaxlib": importlib.metadata.version("jaxlib"),
        "jax": jax.__version__,
        "optax": optax.__version__,
        "gdtx": gdtx.__version__,
        "torch": torch_note,
        "rounds": args.rounds,
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "argv": sys.argv[1:] if argv is None else list(argv),
    }


def run_block(args, cands, layout: str, n: int, rng, aa_pair, results: dict) -> dict:
    """Measures one layout at one size; returns its summary (skips go to ``results``)."""
    shapes = cd.leaf_shapes(layout, n, args.leaves)
    n_real = sum(math.prod(s) for s in shapes)
    _log(f"{layout} N={n_real:.2e} ({len(shapes)} leaves)")
    todo = [c for c in cands if c.family != "torch" or not args.hlo_only]
    if layout == "tree" and not args.hlo_only:
        todo += [cd.one_leaf(c) for c in todo if c.name in report.PER_LEAF]
    rounds = 0 if args.hlo_only else args.rounds
    times, infos, bad = measure.measure(todo, shapes, rounds, rng, _log)
    for b in bad:
        _log(f"skipped {b}")
        if b not in results["skipped"]:
            results["skipped"].append(b)
    if args.hlo_only:
        times = {k: [float("nan")] for k in infos}
    summary = measure.summarize(todo, times, infos, n_real, len(shapes), aa_pair)
    summary.update(layout=layout, n=n_real)
    return summary


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    if args.floors:
        print(report.floors_markdown())
        return None
    if args.replot:
        results = json.loads(pathlib.Path(args.replot).read_text())
        _write(results, args)
        return results
    cands, skipped, torch_note, aa_pair = all_candidates(args)
    for s in skipped:
        _log(f"skipped {s}")
    rng = np.random.default_rng(args.seed)
    results = {"meta": _meta(args, argv, torch_note), "blocks": [], "skipped": list(skipped)}
    single_medians = {}
    for n in (int(float(s)) for s in args.sizes.split(",")):
        for layout in args.layouts.split(","):
            summary = run_block(args, cands, layout, n, rng, aa_pair, results)
            if layout == "single":
                single_medians[n] = {r["name"]: r["median_ms"] for r in summary["rows"]}
            elif n in single_medians:
                summary["single_median_ms"] = single_medians[n]
            results["blocks"].append(summary)
    _write(results, args)
    return results


def _write(results: dict, args) -> None:
    text = report.markdown(results)
    print(text)
    if args.json and not args.replot:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    if args.markdown:
        pathlib.Path(args.markdown).write_text(text)
    if args.plot:
        for path in report.plot(results, args.plot):
            print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
