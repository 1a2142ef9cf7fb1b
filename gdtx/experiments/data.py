"""scikit-learn's bundled 8x8 digits: loading, splitting and batching.

The digits ship inside scikit-learn (1797 images, 10 classes), so nothing is
downloaded. Everything here is plain NumPy and deterministic given a seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np


@dataclasses.dataclass(frozen=True)
class Split:
    """One side of the split: images of shape (N, 8, 8, 1) in [0, 1], labels (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def load_digits(test_size: int, seed: int) -> tuple[Split, Split]:
    """Loads the digits, scales them to [0, 1] and splits them into train/test.

    Args:
      test_size: number of examples held out for testing.
      seed: seed of the permutation that decides the split.

    Returns:
      ``(train, test)``; the images are float32 NHWC with a single channel.
    """
    # Imported here so that importing this module stays cheap.
    from sklearn import datasets

    digits = datasets.load_digits()
    # Pixel intensities are integers in 0..16.
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    labels = digits.target.astype(np.int32)
    if not 0 < test_size < len(labels):
        raise ValueError(f"test_size must be in (0, {len(labels)}), got {test_size}.")
    perm = np.random.default_rng(seed).permutation(len(labels))
    test_idx, train_idx = perm[:test_size], perm[test_size:]
    return (
        Split(images[train_idx], labels[train_idx]),
        Split(images[test_idx], labels[test_idx]),
    )


def batch_indices(num_examples: int, batch_size: int, num_steps: int, seed: int) -> np.ndarray:
    """The example indices of every training batch, shape (num_steps, batch_size).

    Each epoch is a fresh permutation of the training set; the last incomplete
    batch of an epoch is dropped so that every step sees ``batch_size`` examples
    (and the jitted step compiles once).
    """
    if not 0 < batch_size <= num_examples:
        raise ValueError(f"batch_size must be in (0, {num_examples}], got {batch_size}.")
    rng = np.random.default_rng(seed)
    batches_per_epoch = num_examples // batch_size
    num_epochs = -(-num_steps // batches_per_epoch)  # ceil division
    epochs = [
        rng.permutation(num_examples)[: batches_per_epoch * batch_size] for _ in range(num_epochs)
    ]
    if not epochs:
        return np.zeros((0, batch_size), dtype=np.int64)
    return np.concatenate(epochs).reshape(-1, batch_size)[:num_steps]


def train_batches(
    split: Split, batch_size: int, num_steps: int, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields ``num_steps`` ``(images, labels)`` batches in a fixed order."""
    for idx in batch_indices(len(split), batch_size, num_steps, seed):
        yield split.images[idx], split.labels[idx]
