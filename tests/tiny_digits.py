"""A tiny digits classifier in pure JAX, shared by tests that need a real model.

scikit-learn's bundled 8x8 digits (no download), a 64-32-10 MLP as a plain
params dict, so it runs per device under ``shard_map`` and needs no Flax. Tests
take the session-scoped ``tiny_digits`` fixture (``tests/conftest.py``) so the
data are loaded once per worker.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class TinyDigits(NamedTuple):
    x_train: np.ndarray  # (1437, 64) float32 in [0, 1]
    y_train: np.ndarray  # (1437,) int32
    x_test: np.ndarray  # (360, 64)
    y_test: np.ndarray  # (360,)


def load(seed: int = 0) -> TinyDigits:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    return TinyDigits(x[360:], y[360:], x[:360], y[:360])


def init_params(key: jax.Array, hidden: int = 32) -> dict[str, Any]:
    k1, k2 = jax.random.split(key)
    return {
        "hidden": {
            "w": jax.random.normal(k1, (64, hidden)) / 8.0,
            "b": jnp.zeros(hidden),
        },
        "out": {
            "w": jax.random.normal(k2, (hidden, 10)) / np.sqrt(hidden),
            "b": jnp.zeros(10),
        },
    }


def logits(params: dict[str, Any], x: jax.Array) -> jax.Array:
    # Explicit broadcasting: the tests run with jax_numpy_rank_promotion="raise".
    h = jnp.tanh(x @ params["hidden"]["w"] + params["hidden"]["b"][None, :])
    return h @ params["out"]["w"] + params["out"]["b"][None, :]


def loss(params: dict[str, Any], x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean cross-entropy over the batch."""
    log_probs = jax.nn.log_softmax(logits(params, x))
    return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))


def per_example_loss(params: dict[str, Any], x: jax.Array, y: jax.Array) -> jax.Array:
    """Cross-entropy of each example, shape (B,)."""
    log_probs = jax.nn.log_softmax(logits(params, x))
    return -jnp.take_along_axis(log_probs, y[:, None], axis=1)[:, 0]


def accuracy(params: dict[str, Any], x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(logits(params, x), axis=-1) == y)


def batches(data: TinyDigits, batch_size: int, num_steps: int, seed: int = 0):
    """``num_steps`` deterministic training batches as stacked arrays (for ``lax.scan``)."""
    rng = np.random.default_rng(seed)
    idx = np.stack(
        [rng.choice(len(data.x_train), batch_size, replace=False) for _ in range(num_steps)]
    )
    return data.x_train[idx], data.y_train[idx]
