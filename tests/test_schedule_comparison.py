"""The plumbing of docs/scripts/schedule_comparison.py, on a few digits steps and one seed.

The full comparison (3 seeds, digits and the byte-level Transformer) is in
docs/schedules.md; this runs the script's own functions on 30 steps and checks that
the refined run trained with ``gdtx.schedules.refined`` of the norms that the
linear-decay run recorded, as the optimizer applied it (not only as the script says).
"""

import importlib.util
import pathlib

import jax
import numpy as np
import pytest

from gdtx.schedules import linear_decay, refined

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def script():
    spec = importlib.util.spec_from_file_location(
        "schedule_comparison", ROOT / "docs" / "scripts" / "schedule_comparison.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def runs(script, tmp_path_factory):
    figures = tmp_path_factory.mktemp("figures")
    out = script.main(["--smoke", "--tasks", "digits", "--figures", str(figures)])
    assert (figures / "schedules_comparison.png").stat().st_size > 10_000
    return out["digits"][0]


def test_three_schedules_ran_the_same_problem(runs, script):
    assert list(runs) == list(script.SCHEDULES)
    num_steps = script.TASKS["digits"][2][0]
    for r in runs.values():
        assert len(r["grad_norms"]) == len(r["update_norms"]) == len(r["lr"]) == num_steps
        assert np.isfinite(r["curves"]["test_loss"]).all()
        assert r["grad_norm_kind"] == "l1"  # Adam: the paper's Algorithm 2
    # Same initial parameters and first batch: the first gradient is the same in every run.
    first = [r["grad_norms"][0] for r in runs.values()]
    np.testing.assert_allclose(first, first[0], rtol=1e-6)
    # ...and the later ones differ (the schedules did change the trajectory).
    assert runs["cosine"]["grad_norms"][-1] != runs["linear decay"]["grad_norms"][-1]


def test_refined_schedule_is_refined_of_the_linear_decay_runs_norms(runs):
    lin, ref = runs["linear decay"], runs["refined"]
    n, peak = len(lin["grad_norms"]), lin["peak"]
    expected = jax.vmap(
        refined(np.asarray(lin["grad_norms"]), total_steps=n, norm="l1", peak=peak)
    )(np.arange(n))
    np.testing.assert_allclose(ref["lr"], expected, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(
        lin["lr"], jax.vmap(linear_decay(peak, n, warmup_steps=1))(np.arange(n)), rtol=1e-6
    )
    # What the optimizer applied: Adam's first update is lr(0) * g/(|g| + eps) coordinate-wise
    # for the same gradient in both runs, so the ratio of the first update norms is the ratio
    # of the first learning rates; the cosine run starts at lr 0 (optax's warm-up).
    ratio = ref["update_norms"][0] / lin["update_norms"][0]
    np.testing.assert_allclose(ratio, expected[0] / peak, rtol=1e-4)
    assert runs["cosine"]["update_norms"][0] == 0.0
    # The refined schedule ends at exactly 0 and peaks at exactly `peak`.
    assert ref["lr"][-1] == 0.0
    np.testing.assert_allclose(max(ref["lr"]), peak, rtol=1e-6)
