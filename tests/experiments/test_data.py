"""The resumable samplers and the bundled data sets of gdtx.experiments."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gdtx.experiments import data


def test_epoch_sampler_draws_the_batches_of_batch_indices():
    expected = data.batch_indices(100, 32, 20, seed=3)  # 3 batches per epoch, 7 epochs
    sampler = data.EpochSampler(100, 32, seed=3)
    np.testing.assert_array_equal(np.stack([sampler.next() for _ in range(20)]), expected)


@pytest.mark.parametrize("stop", [1, 3, 4, 10])
def test_epoch_sampler_resumes_from_a_json_state(stop):
    straight = data.EpochSampler(100, 32, seed=0)
    batches = [straight.next() for _ in range(15)]
    first = data.EpochSampler(100, 32, seed=0)
    for _ in range(stop):
        first.next()
    state = json.loads(json.dumps(first.state_dict()))  # as a checkpoint stores it
    second = data.EpochSampler(100, 32, seed=12345)
    second.load_state_dict(state)
    for expected in batches[stop:]:
        np.testing.assert_array_equal(second.next(), expected)


def test_window_sampler_resumes_and_windows_are_shifted_targets():
    tokens = np.arange(1000, dtype=np.uint8)
    a = data.WindowSampler(len(tokens), 16, 4, seed=0)
    a.next()
    state = json.loads(json.dumps(a.state_dict()))
    expected = a.next()
    b = data.WindowSampler(len(tokens), 16, 4, seed=99)
    b.load_state_dict(state)
    starts = b.next()
    np.testing.assert_array_equal(starts, expected)
    w = data.windows(tokens, starts, 16)
    assert w.shape == (4, 17)
    np.testing.assert_array_equal(w[:, 1:], (w[:, :-1].astype(int) + 1) % 256)


def test_linear_problem_has_the_requested_conditioning():
    problem = data.make_linear_problem("least_squares", 20_000, 10, 100.0, 0.0, seed=0)
    hessian = problem.features.T @ problem.features / len(problem)
    eig = np.linalg.eigvalsh(hessian.astype(np.float64))
    assert 70 < eig[-1] / eig[0] < 140
    labels = data.make_linear_problem("logistic", 1000, 10, 100.0, 0.1, seed=0).targets
    assert set(np.unique(labels)) == {0.0, 1.0} and 0.3 < labels.mean() < 0.7
    with pytest.raises(ValueError, match="kind"):
        data.make_linear_problem("hinge", 10, 2, 1.0, 0.0, seed=0)


def test_pydoc_topics_are_deterministic_bytes():
    a, b = data.load_pydoc_topics(), data.load_pydoc_topics()
    assert a.dtype == np.uint8 and len(a) > 300_000
    np.testing.assert_array_equal(a, b)
