"""The Markdown report, the targets check and the figures of ``benchmarks.step_time``."""

from __future__ import annotations

import math

from benchmarks import candidates as cd
from benchmarks import rows as rw

# In the tree layout these also run on one leaf of the same N, interleaved with the tree, so
# that the per-leaf overhead is a paired per-round difference.
PER_LEAF = ("gdtx.adabelief", cd.BASELINE, "optax.adabelief", "torch.optim.Adam(fused=True)")
LARGE_N = 10_000_000

_COLUMNS = (
    "candidate",
    "R+W",
    "median ms",
    "IQR ms",
    "× generic floor",
    "own floor ms",
    "× own floor",
    "vs optax.adam",
    "µs/leaf*",
    "trace+lower s",
    "compile s",
    "temp / leaf",
    "state arrays (min)",
    "loops",
    "copies",
)

LEGEND = (
    "R+W: arrays read + written per element (`benchmarks/rows.py`); × generic floor: median "
    "time over `(R+W)·4·N / bandwidth`, with the best bandwidth of the floor kernels in the "
    "same run; own floor: the row's declared floor (`benchmarks/rows.py`: extra array passes "
    "and packed payload at that bandwidth, plus the measured primitives it uses), median over "
    "rounds; × own floor: median of per-round ratios to it; vs optax.adam: median of "
    "per-round time ratios; µs/leaf*: (tree − the same step on one leaf of the same N), "
    "paired per round, over the number of leaves (rows marked [1 leaf]; else the difference "
    "of the two blocks' medians); temp / leaf: the compiled step's temp bytes over the "
    "largest leaf's; state arrays: state bytes over params bytes (the row's distinct state "
    "arrays in parentheses); loops / copies: array fusions, and copies of arrays at least as "
    "large as the smallest leaf (not of PRNG keys or counts), in the compiled entry computation."
)


def _fmt(x, spec):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _per_leaf(r: dict, block: dict) -> float | None:
    per_leaf = r.get("per_leaf_us")
    single = block.get("single_median_ms", {})
    if per_leaf is None and block["layout"] == "tree" and r["name"] in single:
        if r["family"] not in ("floor", "reference", "primitive"):
            per_leaf = (r["median_ms"] - single[r["name"]]) * 1e3 / block["num_leaves"]
    return per_leaf


def _table_row(r: dict, block: dict) -> str:
    state = None
    if r.get("state_arrays") is not None:
        state = f"{r['state_arrays']:.2f} ({_fmt(r.get('min_state_arrays'), 'd')})"
    cells = (
        r["name"],
        f"{r['reads']}+{r['writes']}",
        f"{r['median_ms']:.3f}",
        f"{r['q25_ms']:.3f}–{r['q75_ms']:.3f}",
        _fmt(r["x_floor"], ".2f"),
        _fmt(r.get("own_floor_ms"), ".3f"),
        _fmt(r.get("x_own_floor"), ".2f"),
        _fmt(r["vs_adam"], ".2f"),
        _fmt(_per_leaf(r, block), ".1f"),
        _fmt(r.get("trace_lower_s"), ".2f"),
        _fmt(r.get("compile_s"), ".2f"),
        _fmt(r.get("temp_over_largest_leaf"), ".2f"),
        state or "–",
        _fmt(r.get("loops"), "d"),
        _fmt(r.get("copies"), "d"),
    )
    return "| " + " | ".join(cells) + " |"


def block_table(block: dict) -> list[str]:
    """One layout and size: its heading, the A/A line and the table."""
    out = [
        f"### {block['layout']}, N = {block['n']:.0e} ({block['num_leaves']} leaves), "
        f"floor bandwidth {block['floor_bandwidth_gbs']:.1f} GB/s"
    ]
    if block["aa"]:
        aa = block["aa"]
        out.append(
            f"A/A control ({aa['pair'][1]} / {aa['pair'][0]}): per-round ratio median "
            f"{aa['median_ratio']:.3f}, interquartile {aa['q25']:.3f}–{aa['q75']:.3f}."
        )
    out += ["", "| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    order = {"floor": 0, "primitive": 1}
    for r in sorted(block["rows"], key=lambda r: (order.get(r["family"], 2), r["name"])):
        out.append(_table_row(r, block))
    return out + [""]


def markdown(results: dict) -> str:
    meta = results["meta"]
    out = [
        f"Machine: {meta['machine']}, {meta['cpu_count']} CPU cores; "
        f"device {meta.get('device', 'not recorded')}; jax {meta['jax']}, "
        f"jaxlib {meta.get('jaxlib', 'not recorded')}, "
        f"optax {meta['optax']}, gdtx {meta['gdtx']}; {meta['torch']}; "
        f"{meta['rounds']} rounds; started {meta['started_utc']}.",
        "",
    ]
    for block in results["blocks"]:
        out += block_table(block)
    out += [LEGEND, "", targets(results)]
    if results["skipped"]:
        out += ["", "Skipped:", *(f"- {s}" for s in results["skipped"])]
    return "\n".join(out) + "\n"


def floors_markdown() -> str:
    """The declared floors of every registry row, as a Markdown table (``--floors``)."""
    out = [
        "| registry row | R+W | extra passes | payload bits / element | primitives | counted |",
        "|---|---|---:|---:|---|---|",
    ]
    for name, e in sorted(rw.ENTRIES.items()):
        f = e.floor
        uses = ", ".join(f"{k} × {p}" for p, k in f.uses) or "–"
        why = f.why.replace("|", "\\|")
        out.append(
            f"| `{name}` | {len(e.reads)}+{len(e.writes)} | {f.extra_arrays} "
            f"| {_fmt(f.payload_bits or None, '.2f')} | {uses} | {why} |"
        )
    return "\n".join(out) + "\n"


def _gdtx_rows(results: dict):
    for b in results["blocks"]:
        tag = f"{b['layout']} {b['n']:.0e}"
        for r in b["rows"]:
            if r["family"] == "gdtx" and cd.AA_SUFFIX not in r["name"]:
                yield b, r, f"{r['name']} ({tag})"


def _worst(items, fmt) -> str:
    items = [(x, w) for x, w in items if x is not None and not math.isnan(x)]
    if not items:
        return "not measured"
    x, where = max(items)
    return f"worst {format(x, fmt)} ({where})"


def _met(items, bound) -> str:
    items = [(x, w) for x, w in items if x is not None and not math.isnan(x)]
    return f"{sum(x <= bound for x, _ in items)} of {len(items)} met"


def _with_copies(items) -> str:
    found = sorted(w for x, w in items if x)
    return "copies in " + ", ".join(found) if found else "none copied"


def _adabelief_lines(results: dict) -> list[str]:
    vs_adam, vs_optax, per_leaf, compile_ = [], [], [], []
    for b in results["blocks"]:
        rows = {r["name"]: r for r in b["rows"]}
        tag = f"{b['layout']} {b['n']:.0e}"
        ab, oab = rows.get("gdtx.adabelief"), rows.get("optax.adabelief")
        if ab and b["n"] >= LARGE_N and ab.get("vs_adam") is not None:
            vs_adam.append((ab["vs_adam"], tag))
        if ab and oab and b["n"] >= LARGE_N:
            vs_optax.append((oab["median_ms"] / ab["median_ms"], tag))
        if b["layout"] == "tree":
            per_leaf += [
                (rows[n]["per_leaf_us"], f"{n} ({tag})")
                for n in PER_LEAF
                if n in rows and rows[n].get("per_leaf_us") is not None
            ]
            if ab and oab and ab.get("compile_s") is not None:
                own, theirs = (x["trace_lower_s"] + x["compile_s"] for x in (ab, oab))
                compile_.append((own, theirs, tag))
    lines = [f"- gdtx.adabelief <= 1.1x optax.adam at N >= 1e7: {_worst(vs_adam, '.2f')}"]
    if vs_optax:
        x, tag = min(vs_optax)
        lines.append(
            "- gdtx.adabelief >= 2.5x faster than optax.adabelief at N >= 1e7: "
            f"slowest speed-up {x:.2f} ({tag})"
        )
    small = [(x, w) for x, w in per_leaf if "1e+05" in w or "1e+06" in w]
    lines.append("- per-leaf overhead <= 10 us: " + ", ".join(f"{w}: {x:.1f}" for x, w in small))
    if compile_:
        lines.append(
            "- tree trace+compile, gdtx.adabelief vs optax.adabelief (s): "
            + ", ".join(f"{a:.2f} vs {o:.2f} ({t})" for a, o, t in compile_)
        )
    return lines


def targets(results: dict) -> str:
    """The issues' targets, checked on this run (large N = 1e7 and above)."""
    generic, own, temp, state, copies = [], [], [], [], []
    for b, r, where in _gdtx_rows(results):
        if r.get("copies") is not None:
            copies.append((r["copies"], where))
        if b["n"] >= LARGE_N:
            generic.append((r["x_floor"], where))
            own.append((r.get("x_own_floor"), where))
        if r.get("temp_over_largest_leaf") is not None:
            temp.append((r["temp_over_largest_leaf"], where))
        if r.get("min_state_arrays") is not None:
            state.append((r["state_arrays"] - r["min_state_arrays"], where))
    lines = [
        "Targets (this run):",
        "",
        f"- every gdtx step <= 1.3x its generic floor at N >= 1e7: {_met(generic, 1.3)}; "
        f"{_worst(generic, '.2f')}",
        f"- every gdtx step <= 1.5x its own floor at N >= 1e7: {_met(own, 1.5)}; "
        f"{_worst(own, '.2f')}",
        *_adabelief_lines(results),
        f"- no leaf-sized copy (copies = 0): {_met(copies, 0)}; {_with_copies(copies)}",
        f"- temp memory / largest leaf: {_worst(temp, '.2f')}",
        f"- state arrays beyond the row's state: {_worst(state, '.2f')}",
    ]
    return "\n".join(lines) + "\n"


def plot(results: dict, prefix: str) -> list[str]:
    """One figure per layout: × generic floor against N for every candidate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {"gdtx": "-", "optax": "--", "torch": ":", "floor": "-."}
    written = []
    for layout in sorted({b["layout"] for b in results["blocks"]}):
        blocks = sorted(
            (b for b in results["blocks"] if b["layout"] == layout), key=lambda b: b["n"]
        )
        fig, ax = plt.subplots(figsize=(9, 5.5))
        for name in sorted({r["name"] for b in blocks for r in b["rows"]}):
            pts = [(b["n"], r) for b in blocks for r in b["rows"] if r["name"] == name]
            if pts[0][1]["family"] in ("floor", "reference", "primitive"):
                continue
            width = 2.0 if name in ("gdtx.adabelief", cd.BASELINE) else 1.0
            ax.plot(
                [n for n, _ in pts],
                [r["x_floor"] for _, r in pts],
                style.get(pts[0][1]["family"], "-"),
                marker="o",
                markersize=3,
                label=name,
                linewidth=width,
            )
        ax.axhline(1.0, color="k", linewidth=0.8)
        ax.axhline(1.3, color="grey", linewidth=0.8, linestyle="--")
        ax.set(xscale="log", yscale="log", xlabel="N (float32 parameters)")
        ax.set_ylabel("step time / generic bandwidth floor")
        ax.set_title(
            f"{layout} ({blocks[0]['num_leaves']} leaves): median over rounds, "
            f"{results['meta']['started_utc']}"
        )
        ax.legend(fontsize=6, ncol=2, loc="upper right")
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        path = f"{prefix}{layout}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
