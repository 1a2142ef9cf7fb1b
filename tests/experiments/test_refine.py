"""gdtx-train records gradient norms and refines a schedule from them (issue 19).

A first run records the norm of the raw minibatch gradient at every step; a
second run with ``refine_from`` set to the first run's workdir trains with
``gdtx.refined`` of those norms. For plain SGD the update is ``-lr_s g_s``, so the
learning rate applied at step ``s`` is ``update_norm_s / grad_norm_s``: it must
equal the refined schedule at ``s`` (and not the constant rate).
"""

from __future__ import annotations

import json
import math
import pathlib

import ml_collections
import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("ml_collections")
pytest.importorskip("sklearn")
pytest.importorskip("orbax.checkpoint")

import gdtx  # noqa: E402
from gdtx.experiments import configs, train  # noqa: E402
from tests.experiments import shared_runs  # noqa: E402

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"
NUM_STEPS = 24
LR = 0.1

pytestmark = pytest.mark.xdist_group("refine")


def _config(refine_from: str = "", **overrides):
    config = configs.load(CONFIG_DIR / "default.py").get_config()
    config.update(num_steps=NUM_STEPS, eval_every=12, checkpoint_every=0, progress_bar=False)
    config.optimizers = [
        ml_collections.ConfigDict({"name": "sgd", "learning_rate": LR}),
        ml_collections.ConfigDict({"name": "adam", "learning_rate": 1e-3}),
    ]
    config.refine_from = refine_from
    config.update(overrides)
    config.lock()
    return config


@pytest.fixture(scope="session")
def first(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("first")
    return workdir, shared_runs.train_and_evaluate(_config(), str(workdir))


def test_norms_are_recorded_per_step_and_written(first):
    workdir, results = first
    on_disk = json.loads((workdir / "results.json").read_text())
    assert on_disk == results
    kinds = {label: r["grad_norm_kind"] for label, r in results["optimizers"].items()}
    assert kinds == {"sgd": "l2", "adam": "l1"}
    for label, r in results["optimizers"].items():
        for key in ("grad_norms", "update_norms"):
            assert len(r[key]) == NUM_STEPS, (label, key)
            assert all(math.isfinite(v) and v > 0 for v in r[key]), (label, key)
        assert "schedule" not in r
    sgd = results["optimizers"]["sgd"]
    # Constant-rate SGD: the applied rate is LR at every step.
    np.testing.assert_allclose(np.divide(sgd["update_norms"], sgd["grad_norms"]), LR, rtol=1e-5)


def test_a_refined_run_applies_the_refined_schedule(first, tmp_path):
    workdir, results = first
    config = _config(str(workdir), refine_smoothing=0.2)
    second = shared_runs.train_and_evaluate(config, str(tmp_path))
    sgd = second["optimizers"]["sgd"]
    assert sgd["schedule"] == "refined" and sgd["refined_from"] == str(workdir)
    schedule = gdtx.refined(
        results["optimizers"]["sgd"]["grad_norms"],
        total_steps=NUM_STEPS,
        smoothing=0.2,
        norm="l2",
        peak=LR,
    )
    expected = np.asarray(schedule(np.arange(NUM_STEPS)))
    applied = np.divide(sgd["update_norms"], sgd["grad_norms"])
    np.testing.assert_allclose(applied, expected, rtol=1e-4, atol=1e-9)
    assert applied[-1] < 1e-9 < applied[0]  # refinement ends at exactly 0
    assert not np.allclose(applied, LR)
    # The Adam-type entry refines from its own l1 norms.
    assert second["optimizers"]["adam"]["schedule"] == "refined"
    assert (
        second["optimizers"]["adam"]["final_train_loss"]
        != (results["optimizers"]["adam"]["final_train_loss"])
    )


def test_refine_from_errors_name_the_flag(first, tmp_path):
    workdir, _ = first
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"--config\.refine_from=.*nowhere.*no such run"):
        shared_runs.train_and_evaluate(_config(str(missing)), str(tmp_path / "a"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"--config\.refine_from=.*results\.json"):
        shared_runs.train_and_evaluate(_config(str(tmp_path / "empty")), str(tmp_path / "b"))
    edited = tmp_path / "edited"
    edited.mkdir()
    previous = json.loads((workdir / "results.json").read_text())
    adam = previous["optimizers"].pop("adam")
    (edited / "results.json").write_text(json.dumps(previous))
    with pytest.raises(ValueError, match=r"--config\.refine_from=.*no optimizer 'adam'"):
        shared_runs.train_and_evaluate(_config(str(edited)), str(tmp_path / "c"))
    previous["optimizers"]["adam"] = adam
    del previous["optimizers"]["sgd"]["grad_norms"]
    (edited / "results.json").write_text(json.dumps(previous))
    with pytest.raises(
        ValueError, match=r"--config\.refine_from=.*'sgd'.*no recorded `grad_norms`"
    ):
        shared_runs.train_and_evaluate(_config(str(edited)), str(tmp_path / "d"))
    assert not (tmp_path / "d" / "results.json").exists()


def test_a_refined_run_does_not_resume_an_unrefined_checkpoint(first, tmp_path):
    workdir, _ = first
    plain = _config(checkpoint_every=4)
    with plain.unlocked():
        plain.optimizers = plain.optimizers[:1]
    assert shared_runs.train_and_evaluate(plain, str(tmp_path), stop_after=4) is None
    refined = _config(str(workdir), checkpoint_every=4)
    with refined.unlocked():
        refined.optimizers = refined.optimizers[:1]
    with pytest.raises(ValueError, match="different config"):
        shared_runs.train_and_evaluate(refined, str(tmp_path))


def test_grad_norm_kind_auto_and_forced():
    config = _config()
    sam = ml_collections.ConfigDict(
        {"name": "gdtx.sam", "learning_rate": 0.1, "kwargs": {"inner": {"name": "adamw"}}}
    )
    assert train.grad_norm_kind(config, sam) == "l1"
    assert train.grad_norm_kind(config, config.optimizers[0]) == "l2"
    with config.unlocked():
        config.grad_norm = "l2"
    assert train.grad_norm_kind(config, sam) == "l2"
    with config.unlocked():
        config.grad_norm = "l3"
    with pytest.raises(ValueError, match=r"--config\.grad_norm"):
        train.grad_norm_kind(config, sam)
