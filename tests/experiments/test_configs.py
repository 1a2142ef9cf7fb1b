"""Every config in configs/ loads, names known optimizers and trains (shrunk)."""

from __future__ import annotations

import math
import pathlib

import pytest

pytest.importorskip("flax")
pytest.importorskip("ml_collections")
pytest.importorskip("sklearn")
pytest.importorskip("orbax.checkpoint")

from gdtx.experiments import configs, train  # noqa: E402
from tests.experiments import shared_runs  # noqa: E402

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"
CONFIG_NAMES = sorted(p.stem for p in CONFIG_DIR.glob("*.py"))

# Per config: the overrides that make a smoke run take a few seconds, and how
# many of its optimizers to train (all of them unless the list repeats another
# config's).
SMOKE = {
    # None: trained, shrunk the same way, by tests/experiments/test_train.py.
    "default": None,
    # Trained, shrunk (4 devices, 3 rows), by tests/experiments/test_data_parallel_config.py.
    "char_lm_dp": None,
    # A smaller model than the config's: compilation dominates a smoke run.
    "char_lm": (
        {
            "num_steps": 6,
            "eval_every": 3,
            "max_bytes": 50_000,
            "eval_windows": 16,
            "seq_len": 32,
            "num_layers": 1,
        },
        None,
    ),
    "linear": ({"num_steps": 40, "eval_every": 20}, None),
    # The same optimizers as linear.py, on another loss: two are enough here.
    "least_squares": ({"num_steps": 40, "eval_every": 20}, 2),
}


def test_every_config_has_a_smoke_setting():
    assert set(CONFIG_NAMES) == set(SMOKE), "add the new config to SMOKE"


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_names_known_optimizers(name):
    config = configs.load(CONFIG_DIR / f"{name}.py").get_config()
    assert len(config.optimizers) >= 2, "a config compares optimizers"
    labels = train._labels(config.optimizers)
    assert len(set(labels)) == len(labels)
    for c in config.optimizers:
        # Raises on an unknown name or bad kwargs (with the mesh axis of a data-parallel config).
        train.training_optimizer(config, c)
    assert config.num_steps % config.eval_every == 0
    assert config.task in ("digits", "char_lm", "linear")


@pytest.mark.parametrize("name", [n for n in CONFIG_NAMES if SMOKE.get(n) is not None])
def test_config_trains(name, tmp_path):
    overrides, keep = SMOKE[name]
    config = configs.load(CONFIG_DIR / f"{name}.py").get_config()
    config.update(overrides)
    config.progress_bar = False
    if keep is not None:
        config.optimizers = config.optimizers[:keep]
    config.lock()
    results = shared_runs.train_and_evaluate(config, str(tmp_path))
    assert len(results["optimizers"]) == len(config.optimizers)
    for label, r in results["optimizers"].items():
        curves = r["curves"]
        assert curves["step"] == train.eval_steps(config.num_steps, config.eval_every)
        assert all(math.isfinite(v) for k, vs in curves.items() for v in vs), label
        # A few steps of any sensible optimizer lower the training loss.
        assert curves["train_loss"][-1] < curves["train_loss"][0], label
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    summary = (tmp_path / "summary.md").read_text()
    assert summary.count("\n|") == len(config.optimizers) + 2  # + header and rule


def test_char_lm_corpus_ships_with_python():
    from gdtx.experiments import data

    tokens = data.load_pydoc_topics()
    assert 300_000 < len(tokens) < 2_000_000
    text = tokens[:200_000].tobytes().decode("utf-8", errors="ignore")
    assert "assignment" in text.lower()


def _linear_config(optimizers):
    config = configs.load(CONFIG_DIR / "linear.py").get_config()
    config.update(num_steps=30, eval_every=30, progress_bar=False)
    config.optimizers = optimizers
    config.lock()
    return config


def test_optimizers_with_extra_arguments_train(tmp_path):
    """The loop supplies grad_variance (SVAG), value_fn (SALR) and grad_fn (SAM)."""
    import ml_collections

    entries = [
        {"name": "sgd", "learning_rate": 0.3},
        {"name": "gdtx.svag", "learning_rate": 0.3},
        {"name": "gdtx.salr", "learning_rate": 0.3, "kwargs": {"inner": {"name": "sgd"}}},
        {
            "name": "gdtx.sam",
            "learning_rate": 0.3,
            "kwargs": {"rho": 0.05, "inner": {"name": "sgd"}},
        },
    ]
    config = _linear_config([ml_collections.ConfigDict(e) for e in entries])
    results = shared_runs.train_and_evaluate(config, str(tmp_path))
    losses = {label: r["final_train_loss"] for label, r in results["optimizers"].items()}
    start = results["optimizers"]["sgd"]["curves"]["train_loss"][0]
    assert all(v < start for v in losses.values()), losses
    # Each wrapper changes the trajectory (the extra argument was used).
    assert len(set(losses.values())) == len(losses), losses


def test_an_extra_argument_the_loop_cannot_supply_fails_early(tmp_path, monkeypatch):
    import ml_collections
    import optax

    from gdtx._core import extra_args

    monkeypatch.setitem(
        train.OPTIMIZERS, "needs_hessian", lambda lr: extra_args.declare(optax.sgd(lr), ["hvp"])
    )
    config = _linear_config(
        [ml_collections.ConfigDict({"name": "needs_hessian", "learning_rate": 0.1})]
    )
    with pytest.raises(ValueError, match="hvp"):
        shared_runs.train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "results.json").exists()
