"""Resuming from Orbax checkpoints gives bit-identical results to an uninterrupted run.

A run is stopped after a step that is not a checkpoint step (as a preemption
would), then started again with the same workdir: it restores params, optimizer
state (into its NamedTuple types), the JAX key, the data sampler's state and the
curves from the latest checkpoint, recomputes the lost steps and finishes. All
of that must equal a run that was never interrupted, bit for bit (timings aside).
"""

from __future__ import annotations

import pathlib

import jax
import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("ml_collections")
pytest.importorskip("sklearn")
ocp = pytest.importorskip("orbax.checkpoint")

import gdtx  # noqa: E402
from gdtx import checkpoint  # noqa: E402
from gdtx.experiments import configs, data, train  # noqa: E402
from tests.experiments import shared_runs  # noqa: E402

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"
TIMINGS = ("wall_time_s", "compile_time_s", "steps_per_sec", "resumed_from_step")

pytestmark = [
    pytest.mark.skipif(
        jax.default_backend() != "cpu", reason="bit-identical runs are checked on CPU"
    ),
    # One worker runs the module, so the uninterrupted runs (module fixtures) are shared.
    pytest.mark.xdist_group("resume"),
]


def _digits_config():
    # 1437 examples / 64 = 22 batches per epoch: the run crosses an epoch
    # boundary after the restore, so the saved permutation and NumPy RNG matter.
    config = configs.load(CONFIG_DIR / "default.py").get_config()
    config.update(num_steps=30, eval_every=5, checkpoint_every=10, progress_bar=False)
    config.optimizers = config.optimizers[1:]  # adabelief: a NamedTuple state.
    config.lock()
    return config


def _lm_config():
    # Dropout 0.1: the resumed run must continue the saved JAX key.
    config = configs.load(CONFIG_DIR / "char_lm.py").get_config()
    config.update(
        num_steps=12,
        eval_every=4,
        checkpoint_every=4,
        max_bytes=20_000,
        eval_windows=8,
        seq_len=16,
        d_model=16,
        num_heads=2,
        num_layers=1,
        batch_size=8,
        progress_bar=False,
    )
    config.optimizers = config.optimizers[1:]
    config.lock()
    return config


def _without_timings(results):
    out = {k: v for k, v in results.items() if k != "optimizers"}
    out["optimizers"] = {
        label: {k: v for k, v in r.items() if k not in TIMINGS}
        for label, r in results["optimizers"].items()
    }
    return out


def _final_state(workdir, config, label):
    tx = train.training_optimizer(config, config.optimizers[0])
    from flax import nnx

    from gdtx.experiments import tasks

    task = tasks.make_task(config)
    _, state = nnx.split(task.make_model(nnx.Rngs(config.seed)), nnx.Param)
    params = nnx.to_pure_dict(state)
    key = jax.random.key_data(jax.random.key(0))
    path = pathlib.Path(workdir) / "checkpoints" / label
    with ocp.CheckpointManager(path) as manager:
        assert manager.latest_step() == config.num_steps
        restored = manager.restore(
            config.num_steps,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(checkpoint.abstract_train_state(tx, params, key=key))
            ),
        )
    return restored["state"]


def _run_interrupted(config, workdir, stop_after):
    assert shared_runs.train_and_evaluate(config, str(workdir), stop_after=stop_after) is None
    assert not (workdir / "results.json").exists()
    return shared_runs.train_and_evaluate(config, str(workdir))


@pytest.fixture(scope="session", params=[_digits_config, _lm_config], ids=["digits", "char_lm"])
def straight(request, tmp_path_factory):
    """An uninterrupted run: (config, workdir, results)."""
    config = request.param()
    workdir = tmp_path_factory.mktemp("straight")
    return config, workdir, shared_runs.train_and_evaluate(config, str(workdir))


def test_resumed_run_is_bit_identical(straight, tmp_path):
    config, straight_dir, straight = straight
    label = train._labels(config.optimizers)[0]
    # Stopped after step 7 (digits: 19): the latest checkpoint is step 4 (10),
    # so steps 5..7 (11..19) are computed twice, the second time after a restore.
    stop = 2 * config.checkpoint_every - 1
    resumed = _run_interrupted(config, tmp_path / "resumed", stop)

    assert resumed["optimizers"][label]["resumed_from_step"] == config.checkpoint_every
    assert _without_timings(resumed) == _without_timings(straight)
    a = _final_state(straight_dir, config, label)
    b = _final_state(tmp_path / "resumed", config, label)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # The optimizer state comes back as its own NamedTuple, not a tuple (between
    # the gradient-norm and update-norm recorders of train.training_optimizer).
    assert isinstance(b["opt_state"][0], gdtx.RecordGradNormState)
    assert isinstance(b["opt_state"][1][0], gdtx.ScaleByBeliefState)
    # The per-step norms survive the restore (they are compared above, too).
    assert len(resumed["optimizers"][label]["grad_norms"]) == config.num_steps


def test_resume_without_the_data_order_differs(straight, tmp_path, monkeypatch):
    """The check above can fail: forgetting the sampler's state changes the results."""
    config, _, straight = straight
    if config.task != "digits":
        pytest.skip("one mutant is enough")
    monkeypatch.setattr(data.EpochSampler, "load_state_dict", lambda self, state: None)
    resumed = _run_interrupted(config, tmp_path / "resumed", 17)
    label = train._labels(config.optimizers)[0]
    assert (
        resumed["optimizers"][label]["curves"]["train_loss"]
        != straight["optimizers"][label]["curves"]["train_loss"]
    )


def test_resume_with_another_config_fails(tmp_path):
    config = _digits_config()
    assert shared_runs.train_and_evaluate(config, str(tmp_path), stop_after=12) is None
    other = _digits_config()
    with other.unlocked():
        other.optimizers[0].learning_rate = 0.5
    with pytest.raises(ValueError, match="different config"):
        shared_runs.train_and_evaluate(other, str(tmp_path))


def test_restore_opt_state_helper_keeps_namedtuples(tmp_path):
    tx = gdtx.adabelief(1e-2, rectify=True, amsgrad=True)
    params = {"w": jax.numpy.arange(3.0), "b": {"c": jax.numpy.ones((2, 2))}}
    state = tx.init(params)
    for _ in range(3):
        _, state = tx.update(params, state, params)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp_path / "s", state)
    restored = checkpoint.restore_opt_state(tmp_path / "s", tx, params)
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    assert type(restored[0]) is type(state[0])
    for x, y in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # Without a target, the same checkpoint comes back without the NamedTuples.
    with ocp.StandardCheckpointer() as ckptr:
        generic = ckptr.restore(tmp_path / "s")
    assert not isinstance(generic[0], gdtx.ScaleByBeliefState)


def test_a_checkpoint_holds_the_curves_of_its_own_step(tmp_path, monkeypatch):
    """Orbax saves asynchronously: the metadata handed to it must not be the live curves.

    Otherwise a slow save (a loaded machine) writes points recorded after the
    checkpoint's step, and a resumed run repeats them (duplicate steps, curves
    of different lengths).
    """
    handed = []
    real = ocp.args.JsonSave

    def recording(item):
        handed.append(item)
        return real(item)

    monkeypatch.setattr(ocp.args, "JsonSave", recording)
    config = _digits_config()
    shared_runs.train_and_evaluate(config, str(tmp_path))
    assert len(handed) >= 2
    for item in handed:
        assert max(item["curves"]["step"]) <= item["step"], (
            f"the checkpoint of step {item['step']} holds curves up to step "
            f"{max(item['curves']['step'])}"
        )
