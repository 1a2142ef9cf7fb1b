"""End-to-end tests of the digits comparison (gdtx.experiments).

In the style of the Flax examples' ``train_test.py``: the default config,
shrunk to a few steps, trained into a temporary directory.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import pytest

pytest.importorskip("flax")
pytest.importorskip("ml_collections")
pytest.importorskip("sklearn")

from gdtx.experiments import main, train  # noqa: E402
from tests.experiments import shared_runs  # noqa: E402

# One worker runs the module, so the shared run (a session fixture) is trained once.
pytestmark = pytest.mark.xdist_group("train")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG_PATH = REPO_ROOT / "configs" / "default.py"

NUM_STEPS = 60
EVAL_EVERY = 20


def get_default_config():
    """Imports configs/default.py by path: configs/ is not an installed package."""
    spec = importlib.util.spec_from_file_location("gdtx_default_config", CONFIG_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_test_config():
    """The default config, shrunk so that the whole run takes a few seconds."""
    config = get_default_config()
    config.num_steps = NUM_STEPS
    config.eval_every = EVAL_EVERY
    config.progress_bar = False
    config.lock()  # As main.py does: a misspelled override must fail.
    return config


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    """One shrunken run, shared by the tests: (config, workdir, results)."""
    config = get_test_config()
    workdir = tmp_path_factory.mktemp("digits")
    results = shared_runs.train_and_evaluate(config, str(workdir))
    return config, workdir, results


def test_default_config_is_complete():
    config = get_default_config()
    names = [c.name for c in config.optimizers]
    assert "adam" in names and "adabelief" in names
    for c in config.optimizers:
        assert c.name in train.OPTIMIZERS
        assert c.learning_rate > 0
    assert config.num_steps % config.eval_every == 0


def test_writes_results_json(run):
    config, workdir, results = run
    with open(workdir / "results.json") as f:
        on_disk = json.load(f)
    assert on_disk == results
    assert on_disk["config"]["num_steps"] == NUM_STEPS
    assert list(on_disk["optimizers"]) == [c.name for c in config.optimizers]
    for label, r in on_disk["optimizers"].items():
        for key in ("final_train_loss", "final_test_loss", "wall_time_s"):
            assert math.isfinite(r[key]), (label, key)
        assert 0.0 <= r["final_test_accuracy"] <= r["best_test_accuracy"] <= 1.0
        assert r["steps_per_sec"] > 0


def test_writes_the_resolved_config_as_json(run):
    config, workdir, results = run
    text = (workdir / "config.json").read_text()
    assert json.loads(text) == results["config"] == json.loads(config.to_json())
    assert "!!python" not in text and "_allow_dotted_keys" not in text


def test_config_json_of_checkpoints_from_another_config_is_kept(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "config.json").write_text('{"num_steps": 12345}')
    train.write_config(get_test_config(), str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text()) == {"num_steps": 12345}
    # Without checkpoints to belong to, the old file is replaced.
    (tmp_path / "checkpoints").rmdir()
    train.write_config(get_test_config(), str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text())["num_steps"] == NUM_STEPS


def test_curves_png_is_a_png(run):
    _, workdir, _ = run
    png = (workdir / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000  # Two axes with lines, not an empty canvas.


def test_eval_points_match_config(run):
    _, _, results = run
    expected_steps = list(range(0, NUM_STEPS + 1, EVAL_EVERY))  # 0, 20, 40, 60
    for r in results["optimizers"].values():
        curves = r["curves"]
        assert curves["step"] == expected_steps
        for values in curves.values():
            assert len(values) == len(expected_steps)
            assert all(math.isfinite(v) for v in values)


def test_every_optimizer_learns(run):
    _, _, results = run
    for label, r in results["optimizers"].items():
        curves = r["curves"]
        # Step 0 is the untrained model: about chance (0.1) on 10 classes, and
        # the same model for every optimizer. 60 steps of adam/adabelief at
        # lr 1e-3 reach ~0.9; a zero or wrong-signed update stays near 0.1.
        assert curves["test_accuracy"][0] < 0.3, label
        assert r["final_test_accuracy"] > curves["test_accuracy"][0] + 0.4, label
        assert r["final_test_accuracy"] > 0.7, label
        assert r["final_test_loss"] < 0.5 * curves["test_loss"][0], label
    # Same initial parameters for every optimizer.
    initial = {r["curves"]["test_loss"][0] for r in results["optimizers"].values()}
    assert len(initial) == 1


def test_same_config_gives_identical_results(run, tmp_path):
    # Bit-identical on CPU. gdtx-train makes GPU runs deterministic through
    # XLA_FLAGS (gdtx/experiments/main.py), which must be set before JAX starts,
    # so an in-process run on a GPU cannot be held to this.
    if jax.default_backend() != "cpu":
        pytest.skip("bit-identical reruns are checked on CPU; see gdtx-train's XLA_FLAGS")
    _, _, first = run
    second = shared_runs.train_and_evaluate(get_test_config(), str(tmp_path))
    for label, r in first["optimizers"].items():
        assert second["optimizers"][label]["curves"] == r["curves"], label
        assert second["optimizers"][label]["final_train_loss"] == r["final_train_loss"]
        assert second["optimizers"][label]["final_test_loss"] == r["final_test_loss"]


def test_optimizers_differ(run):
    # Guards against a table entry that silently resolves to the wrong thing.
    losses = [r["final_train_loss"] for r in run[2]["optimizers"].values()]
    assert len(set(losses)) == len(losses)


def test_unknown_optimizer_fails_before_training(tmp_path):
    config = get_test_config()
    config.optimizers[0].name = "no-such-optimizer"
    with pytest.raises(ValueError, match="no-such-optimizer"):
        shared_runs.train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "results.json").exists()


def test_command_line(tmp_path):
    """gdtx-train's entry point, with config overrides, in a fresh process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    workdir = tmp_path / "cli"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from gdtx.experiments.main import run; run()",
            f"--config={CONFIG_PATH}",
            f"--workdir={workdir}",
            "--config.num_steps=10",
            "--config.eval_every=5",
            "--config.progress_bar=False",
            "--config.optimizers[1].learning_rate=0.003",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| adabelief | 0.003 |" in proc.stdout
    with open(workdir / "results.json") as f:
        results = json.load(f)
    assert results["config"]["num_steps"] == 10
    assert results["optimizers"]["adabelief"]["learning_rate"] == 0.003
    assert results["optimizers"]["adam"]["curves"]["step"] == [0, 5, 10]


@pytest.mark.parametrize("missing", ["absl", "ml_collections", "flax"])
def test_run_without_optional_dependencies(monkeypatch, capsys, missing):
    # A None entry in sys.modules makes both `import` and find_spec fail.
    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(SystemExit) as exc:
        main.run()
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert missing in err
    assert 'pip install -c constraints.txt -e ".[examples]"' in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_default_config_reaches_the_documented_accuracy(tmp_path):
    """The quick-start job itself, unshrunk: what the README promises a newcomer."""
    config = get_default_config()
    config.progress_bar = False
    results = shared_runs.train_and_evaluate(config, str(tmp_path))
    for label, r in results["optimizers"].items():
        assert r["final_test_accuracy"] >= 0.97, (label, r["final_test_accuracy"])


def test_compiled_runs_reuse_only_the_latest_config():
    built = []
    runs = train.CompiledRuns()

    def build(tag):
        def make():
            built.append(tag)
            return {"tag": tag}

        return make

    first = runs.get("a", build("a"))
    assert runs.get("a", build("a")) is first  # same config: reused, not rebuilt
    assert runs.get("b", build("b"))["tag"] == "b"  # another config replaces it
    assert runs.get("a", build("a")) is not first  # only the latest is kept
    assert built == ["a", "b", "a"]
    assert not hasattr(train, "_CACHE")  # no module-level cache: a call without one compiles
