"""M-SVAG vs M-SSD vs momentum SGD vs Adam on the bundled digits (slow tier, run by hand).

    .venv/bin/python docs/scripts/variance_comparison.py            # writes the figure
    .venv/bin/python docs/scripts/variance_comparison.py --quick    # a 1-seed smoke run

Balles & Hennig split Adam into a sign (M-SSD) and a variance adaptation (M-SVAG
is variance-adapted momentum SGD); the four methods form a 2x2 design:

==============  =================  ====================
                no variance adapt.  variance adaptation
==============  =================  ====================
no sign         M-SGD              M-SVAG
sign            M-SSD              Adam
==============  =================  ====================

Every method uses the same momentum: an exponential moving average with
``beta = 0.9`` (M-SGD bias-corrects it, so M-SVAG with ``gamma = 1`` *is* M-SGD;
Adam has ``b1 = 0.9`` and its default ``b2 = 0.999``). Each method gets its best
constant learning rate from a log grid (chosen by the final full training loss,
averaged over seeds), then is shown over ``NUM_SEEDS`` seeds (initialisation and
batch order), on the 64-32-10 tanh MLP of ``tests/tiny_digits.py`` with batch
size 32. Prints a table and writes ``docs/figures/variance_comparison.png``
(``--json PATH`` also dumps the curves).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import gdtx  # noqa: E402
from tests import tiny_digits as td  # noqa: E402

BETA = 0.9
BATCH_SIZE = 32
NUM_STEPS = 3000
EVAL_EVERY = 50
NUM_SEEDS = 5
SGD_GRID = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
SIGN_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


def m_sgd(learning_rate):
    return optax.chain(optax.ema(BETA, debias=True), optax.scale_by_learning_rate(learning_rate))


METHODS = {
    "M-SGD": (m_sgd, SGD_GRID),
    "M-SVAG": (lambda lr: gdtx.msvag(lr, BETA), SGD_GRID),
    "M-SSD": (lambda lr: gdtx.m_ssd(lr, BETA), SIGN_GRID),
    "Adam": (lambda lr: optax.adam(lr, b1=BETA), SIGN_GRID),
}
COLORS = {"M-SGD": "tab:blue", "M-SVAG": "tab:green", "M-SSD": "tab:red", "Adam": "tab:orange"}


def make_run(factory, data, num_steps):
    x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)

    def run(lr, seed, xs, ys):
        tx = factory(lr)
        params = td.init_params(jax.random.key(seed))

        def step(carry, batch):
            p, state = carry
            updates, state = tx.update(jax.grad(td.loss)(p, *batch), state, p)
            return (optax.apply_updates(p, updates), state), None

        def chunk(carry, batches):
            carry, _ = jax.lax.scan(step, carry, batches)
            p = carry[0]
            metrics = (
                td.loss(p, x_train, y_train),
                td.accuracy(p, x_train, y_train),
                td.accuracy(p, x_test, y_test),
            )
            return carry, metrics

        shape = (num_steps // EVAL_EVERY, EVAL_EVERY)
        batches = (xs.reshape(shape + xs.shape[1:]), ys.reshape(shape + ys.shape[1:]))
        _, metrics = jax.lax.scan(chunk, (params, tx.init(params)), batches)
        return metrics

    # lr and seed are batched; one compilation per method.
    return jax.jit(jax.vmap(jax.vmap(run, in_axes=(None, 0, 0, 0)), in_axes=(0, None, None, None)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 600 steps, no figure")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "docs" / "figures")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="also dump the curves")
    args = parser.parse_args(argv)
    num_seeds, num_steps = (1, 600) if args.quick else (NUM_SEEDS, NUM_STEPS)

    data = td.load(seed=0)
    seeds = jnp.arange(num_seeds)
    batches = [td.batches(data, BATCH_SIZE, num_steps, seed=100 + s) for s in range(num_seeds)]
    xs = jnp.stack([jnp.asarray(b[0]) for b in batches])
    ys = jnp.stack([jnp.asarray(b[1]) for b in batches])
    steps = np.arange(1, num_steps // EVAL_EVERY + 1) * EVAL_EVERY

    results = {}
    for name, (factory, grid) in METHODS.items():
        start = time.perf_counter()
        loss, train_acc, test_acc = make_run(factory, data, num_steps)(
            jnp.asarray(grid), seeds, xs, ys
        )
        loss, train_acc, test_acc = (np.asarray(a, np.float64) for a in (loss, train_acc, test_acc))
        final = np.where(np.isfinite(loss[:, :, -1]), loss[:, :, -1], np.inf).mean(axis=1)
        best = int(np.argmin(final))
        results[name] = {
            "grid": list(grid),
            "final_train_loss_per_lr": final.tolist(),
            "best_lr": grid[best],
            "train_loss": loss[best].tolist(),
            "train_accuracy": train_acc[best].tolist(),
            "test_accuracy": test_acc[best].tolist(),
            "seconds": time.perf_counter() - start,
        }
        if best in (0, len(grid) - 1):
            print(f"warning: {name}'s best learning rate {grid[best]} is at the edge of its grid")

    print(
        f"{'method':8s} {'best lr':>8s} {'train loss':>18s} {'test acc':>16s}  (mean +- std, final)"
    )
    for name, r in results.items():
        loss = np.asarray(r["train_loss"])[:, -1]
        acc = np.asarray(r["test_accuracy"])[:, -1]
        print(
            f"{name:8s} {r['best_lr']:8.0e} {loss.mean():9.4f} +- {loss.std():6.4f} "
            f"{acc.mean():7.4f} +- {acc.std():6.4f}"
        )
    if args.quick:
        return results

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "beta": BETA,
        "batch_size": BATCH_SIZE,
        "num_steps": num_steps,
        "num_seeds": num_seeds,
        "eval_every": EVAL_EVERY,
        "jax": jax.__version__,
        "optax": optax.__version__,
        "backend": jax.default_backend(),
    }
    if args.json is not None:
        payload = {"meta": meta, "steps": steps.tolist(), "results": results}
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
    _plot(results, steps, args.out / "variance_comparison.png")
    return results


def _plot(results, steps, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, r in results.items():
        c = COLORS[name]
        label = f"{name} (lr {r['best_lr']:g})"
        for ax, key in ((axes[0], "train_loss"), (axes[1], "test_accuracy")):
            values = np.asarray(r[key])
            ax.plot(steps, values.mean(axis=0), color=c, label=label)
            ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=c, alpha=0.2)
        grid = np.asarray(r["grid"])
        rel = grid / r["best_lr"]
        axes[2].plot(rel, r["final_train_loss_per_lr"], "o-", color=c, label=name)
    axes[0].set(yscale="log", xlabel="step", ylabel="full training loss", title="training loss")
    axes[1].set(xlabel="step", ylabel="test accuracy", title="test accuracy", ylim=(0.8, 1.0))
    axes[2].set(
        xscale="log",
        yscale="log",
        xlabel="learning rate / best learning rate",
        ylabel="final training loss (mean over seeds)",
        title="learning-rate sensitivity",
    )
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[2].legend()
    fig.suptitle(
        "Digits MLP, batch 32, beta = 0.9: mean and min-max over seeds at each method's best lr"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
