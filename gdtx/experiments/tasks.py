"""The problems a config can train on: data, model and per-example loss.

A task is chosen by ``config.task`` (``"digits"`` when the field is absent):

* ``digits``: scikit-learn's bundled 8x8 digits, a small CNN, cross-entropy;
* ``char_lm``: a byte-level Transformer language model on the Python
  documentation topics shipped in the standard library (``pydoc_data``);
* ``linear``: synthetic least squares or logistic regression with a linear
  model, for fast learning-rate sweeps.

Every task exposes the same interface to the training loop (:class:`Task`):
a model factory, a resumable batch sampler, the batch for given sampler
output, fixed evaluation batches and the per-example losses (from which the
loop takes the mean, and per-example gradients when an optimizer needs them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from gdtx.experiments import data, models

Batch = tuple[np.ndarray, ...]


@dataclasses.dataclass(frozen=True)
class Task:
    """What the training loop needs to know about a problem.

    Attributes:
      title: a human-readable description, used in plot titles.
      has_accuracy: whether ``per_example`` returns a correctness indicator.
      make_model: ``rngs -> nnx.Module`` (the same seed gives the same model).
      make_sampler: ``() -> sampler`` with ``next()``, ``state_dict()`` and
        ``load_state_dict()`` (see ``gdtx.experiments.data``).
      batch: sampler output -> the arrays of a training batch.
      per_example: ``(model, batch, deterministic, rngs) -> (losses, correct)``,
        both of shape (B,); ``correct`` is None without accuracy.
      eval_batches: ``{"train": batch, "test": batch}`` evaluated whole.
      num_train: number of training examples (or tokens for the LM).
      num_test: number of test examples (or tokens).
    """

    title: str
    has_accuracy: bool
    make_model: Callable[[nnx.Rngs], nnx.Module]
    make_sampler: Callable[[], Any]
    batch: Callable[[np.ndarray], Batch]
    per_example: Callable[..., tuple[jax.Array, jax.Array | None]]
    eval_batches: dict[str, Batch]
    num_train: int
    num_test: int


def _classification(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return losses, (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def digits_task(config: ml_collections.ConfigDict) -> Task:
    train_ds, test_ds = data.load_digits(config.test_size, config.seed)

    def per_example(model, batch, deterministic, rngs):
        del deterministic, rngs  # No dropout in the CNN.
        images, labels = batch
        return _classification(model(images), labels)

    return Task(
        title="8x8 digits CNN",
        has_accuracy=True,
        make_model=lambda rngs: models.CNN(features=tuple(config.features), rngs=rngs),
        make_sampler=lambda: data.EpochSampler(len(train_ds), config.batch_size, config.seed),
        batch=lambda idx: (train_ds.images[idx], train_ds.labels[idx]),
        per_example=per_example,
        eval_batches={
            "train": (train_ds.images, train_ds.labels),
            "test": (test_ds.images, test_ds.labels),
        },
        num_train=len(train_ds),
        num_test=len(test_ds),
    )


def char_lm_task(config: ml_collections.ConfigDict) -> Task:
    tokens = data.load_pydoc_topics()
    if config.max_bytes:
        tokens = tokens[: config.max_bytes]
    split = int(len(tokens) * (1 - config.test_fraction))
    train_tokens, test_tokens = tokens[:split], tokens[split:]
    length = config.seq_len

    def eval_windows(toks: np.ndarray) -> Batch:
        # Evenly spaced windows: a fixed evaluation set, the same for every run.
        starts = np.linspace(0, len(toks) - length - 1, config.eval_windows).astype(np.int64)
        w = data.windows(toks, starts, length).astype(np.int32)
        return (w,)

    def per_example(model, batch, deterministic, rngs):
        (w,) = batch
        logits = model(w[:, :-1], deterministic=deterministic, rngs=rngs)
        losses, correct = _classification(logits, w[:, 1:])
        # One example is one window: the mean over its positions.
        return losses.mean(axis=-1), correct.mean(axis=-1)

    return Task(
        title=f"byte-level Transformer LM on pydoc_data topics ({len(tokens) // 1000} KB)",
        has_accuracy=True,
        make_model=lambda rngs: models.CharTransformer(
            max_len=length,
            d_model=config.d_model,
            num_heads=config.num_heads,
            num_layers=config.num_layers,
            dropout=config.dropout,
            rngs=rngs,
        ),
        make_sampler=lambda: data.WindowSampler(
            len(train_tokens), length, config.batch_size, config.seed
        ),
        batch=lambda starts: (data.windows(train_tokens, starts, length).astype(np.int32),),
        per_example=per_example,
        eval_batches={"train": eval_windows(train_tokens), "test": eval_windows(test_tokens)},
        num_train=len(train_tokens),
        num_test=len(test_tokens),
    )


def linear_task(config: ml_collections.ConfigDict) -> Task:
    problem = data.make_linear_problem(
        config.loss,
        config.num_train + config.num_test,
        config.dim,
        config.condition_number,
        config.noise,
        config.seed,
    )
    x, y = problem.features, problem.targets
    train = (x[: config.num_train], y[: config.num_train])
    test = (x[config.num_train :], y[config.num_train :])
    logistic = config.loss == "logistic"

    def per_example(model, batch, deterministic, rngs):
        del deterministic, rngs
        features, targets = batch
        scores = model(features)
        if logistic:
            losses = optax.sigmoid_binary_cross_entropy(scores, targets)
            return losses, ((scores > 0) == (targets > 0.5)).astype(jnp.float32)
        return 0.5 * (scores - targets) ** 2, None

    name = "logistic regression" if logistic else "least squares"
    return Task(
        title=(f"{name}, d={config.dim}, condition number {config.condition_number:g} (synthetic)"),
        has_accuracy=logistic,
        make_model=lambda rngs: models.Linear(config.dim, rngs=rngs),
        make_sampler=lambda: data.EpochSampler(config.num_train, config.batch_size, config.seed),
        batch=lambda idx: (train[0][idx], train[1][idx]),
        per_example=per_example,
        eval_batches={"train": train, "test": test},
        num_train=config.num_train,
        num_test=config.num_test,
    )


TASKS: dict[str, Callable[[ml_collections.ConfigDict], Task]] = {
    "digits": digits_task,
    "char_lm": char_lm_task,
    "linear": linear_task,
}


def make_task(config: ml_collections.ConfigDict) -> Task:
    """The task named by ``config.task`` (default ``"digits"``)."""
    name = config.get("task", "digits")
    try:
        factory = TASKS[name]
    except KeyError:
        raise ValueError(f"Unknown task {name!r}; known: {', '.join(sorted(TASKS))}.") from None
    return factory(config)
