"""Trains the digits CNN once per configured optimizer and compares them.

Every optimizer starts from the same initial parameters (same seed) and sees
the same batches in the same order, so the curves differ only because of the
optimizer. The comparison is written to ``workdir``:

* ``results.json``: per optimizer the final/best test accuracy, final
  train/test loss, wall time, steps/s and the raw curves; plus the config.
* ``curves.png``: loss and accuracy against steps, one line per optimizer.

and a Markdown summary table is printed to stdout.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from flax import nnx

import gdtx
from gdtx.experiments import data, models

# The optimizers that a config can name. Each entry maps a name to a factory
# called as ``factory(learning_rate)``; add new optimizers here.
OPTIMIZERS: dict[str, Callable[[float], optax.GradientTransformation]] = {
    "adam": optax.adam,
    "adabelief": gdtx.adabelief,
}


def make_optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    """Builds the optimizer called ``name`` from the ``OPTIMIZERS`` table."""
    try:
        factory = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(
            f"Unknown optimizer {name!r}; known: {', '.join(sorted(OPTIMIZERS))}."
        ) from None
    return factory(learning_rate)


def loss_fn(model: models.CNN, images: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean softmax cross-entropy; also returns the logits."""
    logits = model(images)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, logits


@nnx.jit
def train_step(
    model: models.CNN,
    optimizer: nnx.Optimizer,
    images: jax.Array,
    labels: jax.Array,
) -> jax.Array:
    """One optimizer step on a batch; updates model and optimizer in place."""
    grad_fn = nnx.value_and_grad(loss_fn, has_aux=True)
    (loss, _), grads = grad_fn(model, images, labels)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def eval_step(
    model: models.CNN, images: jax.Array, labels: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mean loss and accuracy on a whole split (the splits are small)."""
    loss, logits = loss_fn(model, images, labels)
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
    return loss, accuracy


def eval_steps(num_steps: int, eval_every: int) -> list[int]:
    """The steps at which the model is evaluated: 0, every ``eval_every``, last."""
    if num_steps < 1 or eval_every < 1:
        raise ValueError(f"num_steps and eval_every must be >= 1, got {num_steps}, {eval_every}.")
    return sorted(set(range(0, num_steps + 1, eval_every)) | {num_steps})


def _labels(optimizer_configs) -> list[str]:
    """A unique display name per optimizer: its name, plus the lr if repeated."""
    names = [c.name for c in optimizer_configs]
    return [
        f"{c.name} (lr={c.learning_rate:g})" if names.count(c.name) > 1 else c.name
        for c in optimizer_configs
    ]


def train_one(
    config: ml_collections.ConfigDict,
    label: str,
    tx: optax.GradientTransformation,
    train_ds: data.Split,
    test_ds: data.Split,
) -> dict[str, Any]:
    """Trains a freshly initialised model with ``tx``; returns metrics & curves."""
    start = time.perf_counter()
    # The same seed for every optimizer: identical initial parameters.
    model = models.CNN(features=tuple(config.features), rngs=nnx.Rngs(config.seed))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    curves = {k: [] for k in ("step", "train_loss", "train_accuracy", "test_loss", "test_accuracy")}

    def evaluate(step: int) -> None:
        train_loss, train_acc = eval_step(model, train_ds.images, train_ds.labels)
        test_loss, test_acc = eval_step(model, test_ds.images, test_ds.labels)
        curves["step"].append(step)
        curves["train_loss"].append(float(train_loss))
        curves["train_accuracy"].append(float(train_acc))
        curves["test_loss"].append(float(test_loss))
        curves["test_accuracy"].append(float(test_acc))

    to_eval = set(eval_steps(config.num_steps, config.eval_every))
    # The same seed for every optimizer: identical batches in identical order.
    batches = data.train_batches(train_ds, config.batch_size, config.num_steps, config.seed)
    evaluate(0)
    train_time = 0.0  # Seconds spent in train steps after the first one.
    compile_time = 0.0  # Seconds of the first train step: mostly compilation.
    with tqdm.tqdm(
        total=config.num_steps, desc=label, unit="step", disable=not config.progress_bar
    ) as bar:
        segment_start = time.perf_counter()
        for step, (images, labels) in enumerate(batches, start=1):
            loss = train_step(model, optimizer, images, labels)
            if step == 1:
                jax.block_until_ready(loss)
                compile_time = time.perf_counter() - segment_start
                segment_start = time.perf_counter()
            bar.update()
            if step in to_eval:
                jax.block_until_ready(loss)
                train_time += time.perf_counter() - segment_start
                evaluate(step)
                bar.set_postfix(
                    test_acc=f"{curves['test_accuracy'][-1]:.4f}",
                    test_loss=f"{curves['test_loss'][-1]:.4f}",
                )
                segment_start = time.perf_counter()
    wall_time = time.perf_counter() - start

    best = int(np.argmax(curves["test_accuracy"]))
    return {
        "final_test_accuracy": curves["test_accuracy"][-1],
        "best_test_accuracy": curves["test_accuracy"][best],
        "best_step": curves["step"][best],
        "final_train_loss": curves["train_loss"][-1],
        "final_test_loss": curves["test_loss"][-1],
        "final_train_accuracy": curves["train_accuracy"][-1],
        # Everything for this optimizer: init, compilation, training and evals.
        "wall_time_s": wall_time,
        "compile_time_s": compile_time,
        # Steady-state training speed: excludes the first step and the evals.
        "steps_per_sec": ((config.num_steps - 1) / train_time if train_time > 0 else None),
        "curves": curves,
    }


def plot_curves(results: dict[str, Any], path: str) -> None:
    """Saves loss and accuracy against steps, one colour per optimizer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (label, r) in enumerate(results["optimizers"].items()):
        c = r["curves"]
        color = f"C{i}"
        ax_loss.plot(c["step"], c["test_loss"], color=color, label=f"{label} test")
        ax_loss.plot(
            c["step"], c["train_loss"], color=color, linestyle="--", label=f"{label} train"
        )
        ax_acc.plot(c["step"], c["test_accuracy"], color=color, label=f"{label} test")
    ax_loss.set(title="Cross-entropy loss", xlabel="step", ylabel="loss", yscale="log")
    # Accuracy starts near chance (0.1) at step 0; zoom in on the part after
    # it, down to 0.8 or to the worst later value if an optimizer lags.
    later = [a for r in results["optimizers"].values() for a in r["curves"]["test_accuracy"][1:]]
    bottom = max(0.0, min([0.8, *later]) - 0.02)
    ax_acc.set(title="Test accuracy", xlabel="step", ylabel="accuracy", ylim=(bottom, 1.0))
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
        ax.legend()
    cfg = results["config"]
    fig.suptitle(
        f"8x8 digits CNN: optimizer comparison "
        f"(batch {cfg['batch_size']}, {cfg['num_steps']} steps, seed {cfg['seed']})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def summary_table(results: dict[str, Any]) -> str:
    """A Markdown table with one row per optimizer."""
    lines = [
        "| optimizer | lr | final test acc | best test acc | final train loss "
        "| final test loss | wall time (s) | steps/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in results["optimizers"].items():
        lines.append(
            f"| {label} | {r['learning_rate']:g} | {r['final_test_accuracy']:.4f} "
            f"| {r['best_test_accuracy']:.4f} | {r['final_train_loss']:.4f} "
            f"| {r['final_test_loss']:.4f} | {r['wall_time_s']:.1f} "
            f"| {_fmt(r['steps_per_sec'], '.0f')} |"
        )
    return "\n".join(lines)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains one model per ``config.optimizers`` entry and compares them.

    Args:
      config: the experiment's hyperparameters, see ``configs/default.py``.
      workdir: directory for ``results.json`` and ``curves.png``; created if
        missing.

    Returns:
      The dict that is written to ``results.json``.
    """
    os.makedirs(workdir, exist_ok=True)
    # Build every optimizer first so that a typo fails before any training.
    txs = [make_optimizer(c.name, c.learning_rate) for c in config.optimizers]
    train_ds, test_ds = data.load_digits(config.test_size, config.seed)

    results: dict[str, Any] = {
        # to_dict() leaves the ConfigDicts inside config.optimizers unconverted.
        "config": json.loads(config.to_json()),
        "environment": {
            "jax": jax.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "backend": jax.default_backend(),
            "python": platform.python_version(),
        },
        "num_train_examples": len(train_ds),
        "num_test_examples": len(test_ds),
        "optimizers": {},
    }
    for label, opt_config, tx in zip(
        _labels(config.optimizers), config.optimizers, txs, strict=True
    ):
        metrics = train_one(config, label, tx, train_ds, test_ds)
        results["optimizers"][label] = {
            "name": opt_config.name,
            "learning_rate": opt_config.learning_rate,
            **metrics,
        }

    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    plot_curves(results, os.path.join(workdir, "curves.png"))
    print(summary_table(results), flush=True)
    return results
