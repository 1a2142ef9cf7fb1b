"""The table and plot of the data-parallel comparison (``configs/char_lm_dp.py``).

Reads the ``results.json`` of a ``gdtx-train --config configs/char_lm_dp.py`` run
and prints, per optimizer row, the final and best test loss, the bytes each device
sent per step (measured from the compiled step's collectives, and with ring
algorithms from the step's own accounting), the bytes relative to the f32 mean and
the steps per second, as a Markdown table (copied into
``docs/guides/data_parallel.md``). It writes ``docs/figures/char_lm_dp.png``: test
loss against step and against the cumulative bytes each device sent. Run from the
repository root::

    .venv/bin/python docs/scripts/char_lm_dp_table.py /tmp/char_lm_dp/results.json
    .venv/bin/python docs/scripts/char_lm_dp_table.py RESULTS --figure /tmp/x.png

Columns: "HLO B/step" is the sum of the operands of the collectives in the compiled
step (``gdtx.hlo_collectives``: the gradient payload plus the 4-byte mean
of the loss), per step (a local-SGD row exchanges in a branch taken every
``sync_every`` steps, so its payload counts ``1/sync_every``). "sent B/step" is what
one device sends with ring algorithms (``(N-1)/N · 2b`` for an all-reduce of ``b``
bytes, ``(N-1) b`` for an all-gather), the step's ``bytes_sent`` metric, averaged over
the steps. The ratio is to the f32 mean row's "sent".
"""

from __future__ import annotations

import argparse
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIGURE = ROOT / "docs" / "figures" / "char_lm_dp.png"


def _bytes(x: float) -> str:
    """A byte count with a unit (kB = 1000 B), three significant figures."""
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.0f} B"


def table(results: dict) -> str:
    """The Markdown table, one row per optimizer, in the config's order."""
    rows = results["optimizers"]
    # The reference of the ratio: the f32 mean row (its label starts with "f32").
    f32_sent = next(
        (r["bytes_sent_per_step"] for label, r in rows.items() if label.startswith("f32")), None
    )
    lines = [
        "| optimizer | lr | final test loss | best test loss (step) | HLO B/step "
        "| sent B/step | sent vs f32 | steps/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in rows.items():
        ratio = "" if not f32_sent else f"{r['bytes_sent_per_step'] / f32_sent:.3f}"
        sps = r.get("steps_per_sec")
        lines.append(
            f"| {label} | {r['learning_rate']:g} | {r['final_test_loss']:.3f} "
            f"| {r['best_test_loss']:.3f} ({r['best_step']}) "
            f"| {_bytes(r['hlo_operand_bytes_per_step'])} "
            f"| {_bytes(r['bytes_sent_per_step'])} | {ratio} "
            f"| {'n/a' if sps is None else f'{sps:.1f}'} |"
        )
    return "\n".join(lines)


def plot(results: dict, path: pathlib.Path) -> None:
    """Two panels: test loss against step, and against cumulative bytes sent per device."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_step, ax_bytes) = plt.subplots(1, 2, figsize=(12, 4.6))
    for i, (label, r) in enumerate(results["optimizers"].items()):
        c = r["curves"]
        style = {"color": f"C{i % 10}", "label": label, "linestyle": "-" if i < 10 else "--"}
        ax_step.plot(c["step"], c["test_loss"], **style)
        # Step 0 has sent nothing: a log axis starts at the first evaluation after it.
        pairs = [
            (b, v) for b, v in zip(c["cumulative_bytes_sent"], c["test_loss"], strict=True) if b > 0
        ]
        if pairs:
            ax_bytes.plot([b / 1e6 for b, _ in pairs], [v for _, v in pairs], **style)
    # Zoom in past the first evaluation: step 0 (~6 nats for every row) would flatten
    # the differences between the rows.
    curves = [r["curves"]["test_loss"] for r in results["optimizers"].values()]
    later = [v for c in curves for v in c[1:]]
    if later:
        top = max(c[1] for c in curves if len(c) > 1)
        for ax in (ax_step, ax_bytes):
            ax.set_ylim(min(later) - 0.05, top + 0.1)
    cfg = results["config"]
    ax_step.set(
        title="Test loss against step (step 0: ~6.1, above the panel)",
        xlabel="step",
        ylabel="test loss (nats/byte)",
    )
    ax_bytes.set(
        title="Test loss against bytes sent",
        xlabel="cumulative MB sent per device (ring algorithms, log scale)",
        ylabel="test loss (nats/byte)",
        xscale="log",
    )
    for ax in (ax_step, ax_bytes):
        ax.grid(True, alpha=0.3)
    ax_step.legend(fontsize="small", loc="upper right")
    fig.suptitle(
        f"{results['task']}: {cfg['data_parallel_devices']} data-parallel devices, "
        f"global batch {cfg['batch_size']}, {cfg['num_steps']} steps, seed {cfg['seed']}"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=pathlib.Path, help="the run's results.json")
    parser.add_argument("--figure", type=pathlib.Path, default=FIGURE, help="the PNG to write")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    print(table(results))
    plot(results, args.figure)
    print(f"\nWrote {args.figure}")


if __name__ == "__main__":
    main()
