"""Warm-up + cosine vs warm-up + linear decay vs the refined schedule (Defazio et al.).

Run from the repository root (CPU, ~15-25 minutes on 2 cores)::

    .venv/bin/python docs/scripts/schedule_comparison.py              # full, writes docs/figures
    .venv/bin/python docs/scripts/schedule_comparison.py --smoke --figures /tmp/figs

It prints Markdown tables (copied into ``docs/schedules.md``) and writes
``docs/figures/schedules_comparison.png``. ``tests/test_schedule_comparison.py`` runs a
shrunk version in the default suite.

For each task (the digits CNN of ``configs/default.py`` with Adam, the byte-level
Transformer of ``configs/char_lm.py`` with AdamW) and each seed, through the
``gdtx.experiments`` API (``training_optimizer`` + ``train_one``, the code that
``gdtx-train`` runs, so the gradient norms are recorded the same way):

a. ``optax.warmup_cosine_decay_schedule(0, peak, W, N, end_value=0)``;
b. ``gdtx.schedules.linear_decay(peak, N, warmup_steps=W)``;
c. ``gdtx.schedules.refined(norms, total_steps=N, norm="l1", peak=peak)`` with the
   gradient norms recorded in run (b) of the same seed (the paper refines a linear-decay
   run; l1 norms because both optimizers are Adam-type, the paper's Algorithm 2).

Same peak learning rate (the config's), same initial parameters and same batches for the
three schedules of a seed; only the schedule differs. ``W`` is 5% of ``N``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import jax
import numpy as np
import optax

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gdtx.experiments import configs as config_lib  # noqa: E402
from gdtx.experiments import tasks, train  # noqa: E402
from gdtx.schedules import linear_decay, refined, refined_multipliers  # noqa: E402

FIGURES = ROOT / "docs" / "figures"
SCHEDULES = ("cosine", "linear decay", "refined")
WARMUP_FRACTION = 0.05

# Per task: the config file, and (full, smoke) overrides of (num_steps, eval_every).
# The Transformer runs 800 steps instead of the config's 2000 to fit the CPU budget.
TASKS = {
    "digits": ("default.py", (2000, 50), (30, 10)),
    "char_lm": ("char_lm.py", (800, 50), (20, 10)),
}


def load_config(task: str, seed: int, smoke: bool):
    filename, full, small = TASKS[task]
    config = config_lib.load(ROOT / "configs" / filename).get_config()
    num_steps, eval_every = small if smoke else full
    config.seed = seed
    config.num_steps = num_steps
    config.eval_every = eval_every
    config.checkpoint_every = 0
    config.progress_bar = False
    if task == "char_lm" and smoke:
        config.max_bytes = 100_000  # a smaller corpus: the smoke run only checks plumbing
        config.eval_windows = 16
    # One optimizer per task: the config's first (adam on digits, adamw on char_lm).
    config.optimizers = config.optimizers[:1]
    return config


def schedule_factories(num_steps: int, norms=None, kind: str = "l1"):
    """The three schedules as ``peak -> optax.Schedule`` (``refined`` needs the norms)."""
    warmup = max(1, int(WARMUP_FRACTION * num_steps))
    factories = {
        "cosine": lambda peak: optax.warmup_cosine_decay_schedule(
            0.0, peak, warmup_steps=warmup, decay_steps=num_steps, end_value=0.0
        ),
        "linear decay": lambda peak: linear_decay(peak, num_steps, warmup_steps=warmup),
    }
    if norms is not None:
        factories["refined"] = lambda peak: refined(
            np.asarray(norms), total_steps=num_steps, norm=kind, peak=peak
        )
    return factories


def run_seed(task_name: str, seed: int, smoke: bool, workdir: str) -> dict:
    """The three schedules on one task and seed; per schedule the metrics of ``train_one``."""
    config = load_config(task_name, seed, smoke)
    task = tasks.make_task(config)
    opt_config = config.optimizers[0]
    kind = train.grad_norm_kind(config, opt_config)
    out = {}
    norms = None
    for name in ("cosine", "linear decay", "refined"):
        factory = schedule_factories(config.num_steps, norms, kind)[name]
        tx = train.training_optimizer(config, opt_config, factory)
        metrics = train.train_one(config, f"{task_name}-{seed}-{name}", tx, task, workdir)
        metrics["grad_norm_kind"] = kind
        metrics["peak"] = opt_config.learning_rate
        # The learning rate of every step, as the optimizer saw it.
        metrics["lr"] = np.asarray(
            jax.vmap(factory(opt_config.learning_rate))(np.arange(config.num_steps))
        ).tolist()
        out[name] = metrics
        if name == "linear decay":
            norms = metrics["grad_norms"]
    return out


def _mean_spread(values) -> str:
    values = np.asarray(values, dtype=np.float64)
    # mean ± half the range over the seeds (with 3 seeds a standard deviation says little).
    return f"{values.mean():.4f} ± {(values.max() - values.min()) / 2:.4f}"


def table(task_name: str, runs: list[dict]) -> str:
    has_acc = "final_test_accuracy" in runs[0]["cosine"]
    head = "| schedule | final test loss | best test loss |"
    rule = "|---|---:|---:|"
    if has_acc:
        head += " final test acc | best test acc |"
        rule += "---:|---:|"
    head += " final train loss |"
    rule += "---:|"
    lines = [head, rule]
    for name in SCHEDULES:
        rs = [r[name] for r in runs]
        row = f"| {name} | {_mean_spread([r['final_test_loss'] for r in rs])} "
        row += f"| {_mean_spread([r['best_test_loss'] for r in rs])} |"
        if has_acc:
            row += f" {_mean_spread([r['final_test_accuracy'] for r in rs])} "
            row += f"| {_mean_spread([r['best_test_accuracy'] for r in rs])} |"
        row += f" {_mean_spread([r['final_train_loss'] for r in rs])} |"
        lines.append(row)
    return "\n".join(lines)


def per_seed(task_name: str, runs: list[dict], seeds) -> str:
    lines = ["| seed | " + " | ".join(SCHEDULES) + " |", "|---|" + "---:|" * len(SCHEDULES)]
    for seed, r in zip(seeds, runs, strict=True):
        lines.append(
            f"| {seed} | " + " | ".join(f"{r[n]['final_test_loss']:.4f}" for n in SCHEDULES) + " |"
        )
    return "\n".join(lines)


def plot(all_runs: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(all_runs), 2, figsize=(11, 4 * len(all_runs)), squeeze=False)
    for row, (task_name, runs) in enumerate(all_runs.items()):
        ax_loss, ax_lr = axes[row]
        for i, name in enumerate(SCHEDULES):
            for j, r in enumerate(runs):
                c = r[name]["curves"]
                ax_loss.plot(
                    c["step"],
                    c["test_loss"],
                    color=f"C{i}",
                    alpha=0.9 if j == 0 else 0.4,
                    label=name if j == 0 else None,
                )
            lr = np.asarray(runs[0][name]["lr"]) / runs[0][name]["peak"]
            ax_lr.plot(np.arange(len(lr)), lr, color=f"C{i}", label=name)
        ax_loss.set(
            title=f"{task_name}: test loss ({len(runs)} seeds)", xlabel="step", ylabel="loss"
        )
        ax_loss.set_yscale("log")
        ax_loss.grid(True, alpha=0.3)
        ax_loss.legend(fontsize="small")
        ax_lr.set(
            title=f"{task_name}: learning rate / peak (refined from seed 0's linear-decay run)",
            xlabel="step",
        )
        ax_lr.grid(True, alpha=0.3)
        ax_lr.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few steps, one seed")
    parser.add_argument("--figures", default=str(FIGURES), help="where the figure goes")
    parser.add_argument("--tasks", default="digits,char_lm", help="comma-separated")
    parser.add_argument("--json", default="", help="also write every run's metrics here")
    args = parser.parse_args(argv)
    seeds = (0,) if args.smoke else (0, 1, 2)
    all_runs: dict[str, list[dict]] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        for task_name in args.tasks.split(","):
            all_runs[task_name] = [run_seed(task_name, s, args.smoke, workdir) for s in seeds]
            config = load_config(task_name, 0, args.smoke)
            opt = config.optimizers[0]
            print(
                f"\n### {task_name}: {opt.name}, peak lr {opt.learning_rate:g}, "
                f"{config.num_steps} steps, batch {config.batch_size}, seeds {list(seeds)}\n",
                flush=True,
            )
            print(table(task_name, all_runs[task_name]))
            print("\nfinal test loss per seed:\n")
            print(per_seed(task_name, all_runs[task_name], seeds), flush=True)
            runs0 = all_runs[task_name][0]
            m = refined_multipliers(
                np.asarray(runs0["linear decay"]["grad_norms"]),
                norm=runs0["refined"]["grad_norm_kind"],
            )
            print(
                f"\nrefined (seed 0): peak at step {int(np.argmax(m))} of {len(m)}, "
                f"multiplier at 50%: {m[len(m) // 2]:.3f}, at 90%: {m[int(0.9 * len(m))]:.3f}",
                flush=True,
            )
    figures = pathlib.Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    plot(all_runs, figures / "schedules_comparison.png")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(all_runs, f)
    print(f"\ntotal {time.perf_counter() - start:.0f} s", flush=True)
    return all_runs


if __name__ == "__main__":
    main()
