"""configs/char_lm_dp.py, shrunk: a data-parallel gdtx-train run and the bytes it reports.

Three of the config's rows (the f32 mean of ``optax.adamw``, ``signum_vote``
with the packed wire, ``compressed_mean(qsgd)`` before adamw) train a tiny
byte-level Transformer on 4 of the 8 simulated CPU devices (tests/conftest.py)
for 10 steps. The bytes per device per step in ``results.json`` (the step's
own accounting and the compiled step's HLO) are checked against counts made
here from the parameter shapes and each wire format, written out independently
of gdtx's accounting: 4 bytes per parameter for the f32 mean, 2 bits per
coordinate rounded up to bytes per leaf for the packed vote, and QSGD's 8-bit
codes in 32-bit words plus one float32 scale per bucket. A misconfigured run
(more devices than JAX has, checkpoints, an indivisible batch) fails before it
writes anything, with the error naming the flag to change.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("ml_collections")
pytest.importorskip("orbax.checkpoint")

from flax import nnx  # noqa: E402

from gdtx.experiments import configs, main, models, train  # noqa: E402
from tests.experiments import shared_runs  # noqa: E402

pytestmark = pytest.mark.xdist_group("train")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG_PATH = REPO_ROOT / "configs" / "char_lm_dp.py"

NUM_DEVICES = 4
NUM_STEPS = 10
EVAL_EVERY = 5
# A tiny model and corpus: compilation dominates, three rows take ~20 s on 2 cores.
SHRINK = {
    "data_parallel_devices": NUM_DEVICES,
    "num_steps": NUM_STEPS,
    "eval_every": EVAL_EVERY,
    "max_bytes": 50_000,
    "eval_windows": 16,
    "seq_len": 32,
    "d_model": 32,
    "num_layers": 1,
    "batch_size": 4 * NUM_DEVICES,
    "progress_bar": False,
}
F32, PACKED, QSGD = "f32 mean (adamw)", "signum_vote packed", "QSGD (s=16) + adamw"


def shrunk_config(rows=(F32, PACKED, QSGD), **overrides):
    config = configs.load(CONFIG_PATH).get_config()
    config.update({**SHRINK, **overrides})
    by_label = {row.label: row for row in config.optimizers}
    config.optimizers = [by_label[label] for label in rows]
    config.lock()
    return config


def leaf_sizes(config) -> list[int]:
    """Entries of every parameter leaf of the config's model (its own construction)."""
    model = models.CharTransformer(
        max_len=config.seq_len,
        d_model=config.d_model,
        num_heads=config.num_heads,
        num_layers=config.num_layers,
        dropout=config.dropout,
        rngs=nnx.Rngs(0),
    )
    _, state = nnx.split(model, nnx.Param)
    return [int(np.size(x)) for x in jax.tree.leaves(nnx.to_pure_dict(state))]


def expected_payload(label: str, sizes: list[int]) -> int:
    """Bytes each device puts into the step's collectives, from each wire format."""
    if label == F32:
        return sum(4 * n for n in sizes)  # one f32 per parameter
    if label == PACKED:
        return sum(math.ceil(n / 4) for n in sizes)  # 2 bits per coordinate, per leaf
    if label == QSGD:
        # s = 16 levels: codes in [0, 32] need 8 bits (the next width of 2, 4, 8, 16),
        # four to a uint32 word, and one float32 scale per bucket of 512 entries.
        return sum(4 * math.ceil(8 * n / 32) + 4 * math.ceil(n / 512) for n in sizes)
    raise AssertionError(label)


def expected_sent(label: str, payload: int, n_dev: int) -> float:
    """Bytes each device sends with ring algorithms: all-reduce vs all-gather."""
    if label == F32:
        return 2 * (n_dev - 1) / n_dev * payload
    return (n_dev - 1) * payload


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    config = shrunk_config()
    workdir = tmp_path_factory.mktemp("char_lm_dp")
    results = shared_runs.train_and_evaluate(config, str(workdir))
    return config, workdir, results


def test_the_full_config_builds_every_row_for_its_mesh():
    config = configs.load(CONFIG_PATH).get_config()
    assert config.data_parallel_devices == 8
    assert config.batch_size % config.data_parallel_devices == 0
    assert not config.checkpoint_every
    assert config.num_steps % config.eval_every == 0
    labels = train._labels(config.optimizers)
    assert {F32, PACKED, QSGD} <= set(labels)
    for row in config.optimizers:
        train.training_optimizer(config, row)  # raises on a bad name, kwargs or extra args


def test_results_and_curves(run):
    config, workdir, results = run
    with open(workdir / "results.json") as f:
        assert json.load(f) == results
    assert list(results["optimizers"]) == [F32, PACKED, QSGD]
    for label, r in results["optimizers"].items():
        curves = r["curves"]
        assert curves["step"] == [0, 5, 10], label
        assert all(math.isfinite(v) for v in curves["test_loss"] + curves["train_loss"]), label
        assert curves["train_loss"][-1] < curves["train_loss"][0], label
        assert r["data_parallel_devices"] == NUM_DEVICES
        assert len(r["update_norms"]) == len(r["bytes_sent"]) == NUM_STEPS
        assert r["steps_per_sec"] > 0
    assert (workdir / "curves.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("label", [F32, PACKED, QSGD])
def test_bytes_per_step_match_the_wire_format(run, label):
    config, _, results = run
    r = results["optimizers"][label]
    payload = expected_payload(label, leaf_sizes(config))
    # The step's own accounting (gdtx.data_parallel_step's metrics).
    assert r["payload_bytes_per_step"] == payload
    assert r["bytes_sent_per_step"] == pytest.approx(expected_sent(label, payload, NUM_DEVICES))
    # The compiled step: the payload plus the f32 mean of the loss, nothing else.
    assert r["hlo_operand_bytes_per_step"] == payload + 4
    # The cumulative curve adds every step's bytes up to each evaluation.
    assert r["curves"]["cumulative_bytes_sent"] == pytest.approx(
        [step * r["bytes_sent_per_step"] for step in r["curves"]["step"]]
    )


def test_only_the_f32_mean_puts_float_gradients_on_the_wire(run):
    """The vote and QSGD see per-device gradients: no f32 all-reduce of the gradient."""
    _, _, results = run
    for label, r in results["optimizers"].items():
        big_f32 = [
            c
            for c in r["hlo_collectives"]
            if "f32" in c["dtypes"] and c["op"].startswith("all-reduce") and c["operand_bytes"] > 4
        ]
        assert bool(big_f32) == (label == F32), (label, r["hlo_collectives"])


def test_too_many_devices_fails_before_writing(tmp_path):
    n = jax.device_count() + 1
    config = shrunk_config(rows=(F32, PACKED), data_parallel_devices=n, batch_size=4 * n)
    with pytest.raises(ValueError, match=rf"data_parallel_devices={n} but JAX has"):
        shared_runs.train_and_evaluate(config, str(tmp_path))
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"checkpoint_every": 5}, r"checkpoints .* not supported in data-parallel runs"),
        ({"batch_size": 4 * NUM_DEVICES + 2}, r"batch_size=18 is not divisible"),
        ({"data_parallel_devices": True}, r"must be an integer >= 1"),
    ],
)
def test_misconfigured_runs_name_the_flag(tmp_path, overrides, match):
    config = shrunk_config(rows=(F32, PACKED), **overrides)
    with pytest.raises(ValueError, match=match):
        shared_runs.train_and_evaluate(config, str(tmp_path))
    assert not os.listdir(tmp_path)


def test_simulate_devices_is_a_no_op_once_jax_runs():
    jax.device_count()  # the backend is up in this process
    main._simulate_devices(jax, 2 * jax.device_count())  # must not raise
    assert jax.config.jax_num_cpu_devices == 8  # tests/conftest.py's, unchanged


def test_simulate_devices_before_jax_starts():
    code = (
        "import jax; from gdtx.experiments import main; "
        "main._simulate_devices(jax, 3); print(jax.device_count())"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == "3"


def test_local_sgd_row_sends_on_synchronising_steps_only(tmp_path):
    """DiLoCo (H = 5): per-device parameters, one f32 all-reduce of them every 5 steps."""
    label = "DiLoCo H=25 (adamw inner)"
    config = configs.load(CONFIG_PATH).get_config()
    config.update(SHRINK)
    (row,) = [r for r in config.optimizers if r.label == label]
    row.kwargs.every = 5
    config.optimizers = [row]
    config.lock()
    r = shared_runs.train_and_evaluate(config, str(tmp_path))["optimizers"][label]
    payload = 4 * sum(leaf_sizes(config))  # the f32 parameters
    sync = 2 * (NUM_DEVICES - 1) / NUM_DEVICES * payload
    assert r["sync_every"] == 5
    assert r["bytes_sent"] == pytest.approx([sync if t % 5 == 0 else 0.0 for t in range(1, 11)])
    assert r["curves"]["cumulative_bytes_sent"] == pytest.approx([0.0, sync, 2 * sync])
    # The compiled step: the parameters in the synchronising branch, and the loss and
    # update norm (two f32 scalars) every step.
    assert r["hlo_operand_bytes"] == payload + 8
    assert r["hlo_operand_bytes_per_step"] == pytest.approx(8 + payload / 5)
    # The model evaluated is the devices' mean: it learns.
    assert r["curves"]["test_loss"][-1] < r["curves"]["test_loss"][0]
