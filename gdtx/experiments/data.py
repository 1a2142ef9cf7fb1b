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


class EpochSampler:
    """Batches of example indices, a fresh permutation every epoch, resumable.

    Draws the same batches as :func:`batch_indices` with the same seed, one at a
    time, and exposes its whole state (the NumPy generator's state, the current
    epoch's permutation and the position in it) as a JSON-serialisable dict, so
    that a checkpoint can hold the data order and a resumed run sees exactly the
    batches an uninterrupted run would have seen.
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int):
        if not 0 < batch_size <= num_examples:
            raise ValueError(f"batch_size must be in (0, {num_examples}], got {batch_size}.")
        self.num_examples = num_examples
        self.batch_size = batch_size
        self._rng = np.random.default_rng(seed)
        self._perm = np.zeros((0,), dtype=np.int64)
        self._pos = 0

    def next(self) -> np.ndarray:
        """The indices of the next batch, shape (batch_size,)."""
        if self._pos + self.batch_size > len(self._perm):
            usable = (self.num_examples // self.batch_size) * self.batch_size
            self._perm = self._rng.permutation(self.num_examples)[:usable]
            self._pos = 0
        batch = self._perm[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return batch

    def state_dict(self) -> dict:
        return {
            "rng": self._rng.bit_generator.state,
            "perm": self._perm.tolist(),
            "pos": self._pos,
        }

    def load_state_dict(self, state: dict) -> None:
        self._rng.bit_generator.state = state["rng"]
        self._perm = np.asarray(state["perm"], dtype=np.int64)
        self._pos = int(state["pos"])


class WindowSampler:
    """Random windows of a token sequence (for language modelling), resumable.

    Each batch holds ``batch_size`` windows of ``length + 1`` tokens starting at
    uniformly random offsets (inputs are the first ``length``, targets the last
    ``length``). The state is the NumPy generator's state, as a JSON dict.
    """

    def __init__(self, num_tokens: int, length: int, batch_size: int, seed: int):
        if not 0 < length < num_tokens - 1:
            raise ValueError(f"length must be in (0, {num_tokens - 1}), got {length}.")
        self.num_starts = num_tokens - length
        self.length = length
        self.batch_size = batch_size
        self._rng = np.random.default_rng(seed)

    def next(self) -> np.ndarray:
        """Window start offsets, shape (batch_size,)."""
        return self._rng.integers(0, self.num_starts, size=self.batch_size)

    def state_dict(self) -> dict:
        return {"rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self._rng.bit_generator.state = state["rng"]


def windows(tokens: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Stacks ``tokens[s : s + length + 1]`` for every start: shape (B, length + 1)."""
    return tokens[starts[:, None] + np.arange(length + 1)[None, :]]


def load_pydoc_topics() -> np.ndarray:
    """The Python documentation topics as UTF-8 bytes (a uint8 array).

    The text is ``pydoc_data.topics.topics`` from the standard library (what
    ``help("topics")`` shows; about 460 KB of English prose and code), so
    nothing is downloaded. Topics are joined in sorted order, each preceded
    by its title, so the corpus is the same on every machine for a given
    Python version.
    """
    from pydoc_data import topics

    text = "\n\n".join(f"# {name}\n\n{topics.topics[name]}" for name in sorted(topics.topics))
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


@dataclasses.dataclass(frozen=True)
class Regression:
    """A linear problem: features (N, D) and targets (N,) (float or {0, 1})."""

    features: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


def make_linear_problem(
    kind: str, num_examples: int, dim: int, condition_number: float, noise: float, seed: int
) -> Regression:
    """Synthetic least-squares (``kind="least_squares"``) or logistic data.

    Features are Gaussian with per-coordinate scales spaced geometrically from
    1 down to ``1 / sqrt(condition_number)``, so the Hessian of the least-squares
    loss has about that condition number: the regime where per-coordinate
    adaptive methods and plain SGD part ways. Targets come from a planted
    weight vector: ``x.w + noise * N(0, 1)`` for least squares, and for the
    logistic problem the label ``1[x.w + noise * N(0, 1) > 0]``.
    """
    if kind not in ("least_squares", "logistic"):
        raise ValueError(f"kind must be 'least_squares' or 'logistic', got {kind!r}.")
    if condition_number < 1:
        raise ValueError(f"condition_number must be >= 1, got {condition_number}.")
    rng = np.random.default_rng(seed)
    scales = np.geomspace(1.0, condition_number**-0.5, dim)
    x = rng.standard_normal((num_examples, dim)) * scales
    w = rng.standard_normal(dim) / scales / np.sqrt(dim)
    y = x @ w + noise * rng.standard_normal(num_examples)
    if kind == "logistic":
        y = (y > 0).astype(np.float32)
    return Regression(x.astype(np.float32), y.astype(np.float32))
