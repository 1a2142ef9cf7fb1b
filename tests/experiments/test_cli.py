"""The command line as a newcomer meets it: ``gdtx-train`` and ``python -m gdtx.experiments``.

Every test runs the command in a fresh process, as the README's quick start does:
``--help`` must exit 0 and explain the flags, a default run must print a header,
the progress bars and the summary, and no library INFO lines nor YAML internals.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("absl")
pytest.importorskip("ml_collections")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "configs"
SHIPPED = sorted(p.name for p in CONFIG_DIR.glob("*.py"))

# An absl log line starts with its level and the date: "I1203 08:42:42.582352 ...".
ABSL_INFO_LINE = re.compile(r"^I\d{4} \d\d:\d\d:\d\d", re.MULTILINE)


def _console_script() -> str | None:
    """The installed ``gdtx-train`` next to this interpreter (an editable install has it)."""
    found = pathlib.Path(sys.executable).with_name("gdtx-train")
    return str(found) if found.exists() else shutil.which("gdtx-train")


def _commands():
    yield pytest.param([sys.executable, "-m", "gdtx.experiments"], id="python-m")
    script = _console_script()
    yield pytest.param(
        [script] if script else None,
        id="gdtx-train",
        marks=pytest.mark.skipif(script is None, reason="gdtx-train is not installed"),
    )


def _run(command, *args, timeout=180, cwd=REPO_ROOT):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.pop("XLA_FLAGS", None)
    return subprocess.run(
        [*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("command", list(_commands()))
@pytest.mark.parametrize("flag", ["--help", "--helpshort", "-h"])
def test_help_exits_0_and_explains_the_flags(command, flag):
    proc = _run(command, flag, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    needles = ("--config=", "--workdir=", "--config.num_steps=", "--show_config", "--verbosity")
    for needle in needles:
        assert needle in out, f"{needle} missing from {flag}:\n{out}"
    for name in SHIPPED:
        assert f"configs/{name}" in out, f"shipped config {name} missing from {flag}:\n{out}"
    prog = "gdtx-train" if command[0].endswith("gdtx-train") else "python -m gdtx.experiments"
    assert out.startswith(f"usage: {prog} "), out


def test_help_lists_the_shipped_configs_from_any_directory(tmp_path):
    proc = _run([sys.executable, "-m", "gdtx.experiments"], "--help", timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "default.py" in proc.stdout and "Default config: adam vs. adabelief" in proc.stdout


def test_helpfull_exits_0_and_lists_every_flag():
    proc = _run([sys.executable, "-m", "gdtx.experiments"], "--helpfull", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--config.num_steps=" in proc.stdout
    assert "--[no]logtostderr" in proc.stdout  # One of absl's own flags.


def test_show_config_prints_the_resolved_config_as_json():
    proc = _run(
        [sys.executable, "-m", "gdtx.experiments"],
        f"--config={CONFIG_DIR / 'default.py'}",
        "--config.num_steps=7",
        "--config.optimizers[1].learning_rate=0.003",
        "--show_config",
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "!!python" not in proc.stdout
    config = json.loads(proc.stdout)
    assert config["num_steps"] == 7
    assert config["optimizers"][1] == {"name": "adabelief", "learning_rate": 0.003}


@pytest.mark.parametrize(
    "args, message",
    [
        ([f"--config={CONFIG_DIR / 'default.py'}"], "--workdir is required"),
        (["--workdir=unused"], "--config is required"),
        (
            [f"--config={CONFIG_DIR / 'default.py'}", "--workdir=unused", "--config.nope=1"],
            "cannot apply --config.nope=1",
        ),
        (["--config=configs/no_such_config.py", "--show_config"], "cannot load --config="),
    ],
)
def test_usage_errors_name_the_flag_and_point_at_help(args, message):
    proc = _run([sys.executable, "-m", "gdtx.experiments"], *args, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "python -m gdtx.experiments --help" in proc.stderr
    assert "Traceback" not in proc.stderr


def _quick_default_run(command, workdir, *extra):
    """The README's main job, shrunk: checkpoints on, progress bars on."""
    return _run(
        command,
        f"--config={CONFIG_DIR / 'default.py'}",
        f"--workdir={workdir}",
        "--config.num_steps=8",
        "--config.eval_every=4",
        "--config.checkpoint_every=4",
        *extra,
    )


@pytest.mark.xdist_group("cli_train")
def test_a_default_run_prints_a_header_bars_and_the_summary_only(tmp_path):
    command = [_console_script() or sys.executable]
    if not command[0].endswith("gdtx-train"):
        command += ["-m", "gdtx.experiments"]
    proc = _quick_default_run(command, tmp_path / "run")
    assert proc.returncode == 0, proc.stderr
    both = proc.stdout + proc.stderr
    assert not ABSL_INFO_LINE.search(both), f"library INFO lines in a default run:\n{both}"
    assert "checkpoint_manager" not in both and "!!python" not in both, both
    lines = proc.stdout.splitlines()
    prog = "gdtx-train" if command[0].endswith("gdtx-train") else "python -m gdtx.experiments"
    assert lines[0] == (
        f"{prog}: task digits, optimizers adam, adabelief, 8 steps each, workdir {tmp_path / 'run'}"
    ), lines[0]
    # The summary table: a header, a rule and a row per optimizer; then where the files went.
    assert lines[1].startswith("| optimizer |") and lines[2].startswith("|---")
    assert [line.split("|")[1].strip() for line in lines[3:5]] == ["adam", "adabelief"]
    assert lines[5].startswith("Wrote results.json, curves.png, summary.md, config.json")
    assert len(lines) == 6, proc.stdout
    # One tqdm bar per optimizer, on stderr, and nothing else there.
    bars = proc.stderr.replace("\r", "\n")
    assert "adam: 100%" in bars and "adabelief: 100%" in bars, proc.stderr
    other = [
        line
        for line in bars.splitlines()
        if line.strip() and not line.startswith(("adam:", "adabelief:"))
    ]
    assert not other, other
    # Off a terminal (here a pipe) a bar is drawn when it starts and when it ends, not at
    # every step and evaluation: a log gets two segments per optimizer (this run is far
    # shorter than the 30 s between redraws there).
    for label in ("adam", "adabelief"):
        draws = [line for line in bars.splitlines() if line.startswith(f"{label}:")]
        assert len(draws) == 2 and "100%" in draws[1], draws
    # The resolved config, overrides applied, readable next to the results.
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert config == results["config"] and config["num_steps"] == 8


@pytest.mark.xdist_group("cli_train")
def test_verbosity_0_shows_the_library_info_lines(tmp_path):
    # The check above would see them: at --verbosity=0, absl and Orbax log at INFO.
    proc = _quick_default_run(
        [sys.executable, "-m", "gdtx.experiments"],
        tmp_path / "run",
        "--verbosity=0",
        "--config.progress_bar=False",
    )
    assert proc.returncode == 0, proc.stderr
    assert ABSL_INFO_LINE.search(proc.stderr), proc.stderr
    assert "checkpoint_manager" in proc.stderr


def test_gdtx_train_adds_its_xla_flags_and_keeps_the_users():
    from gdtx.experiments import main

    flags = main._xla_flags("--xla_force_host_platform_device_count=8").split()
    assert flags[0] == "--xla_force_host_platform_device_count=8"
    assert main._DETERMINISTIC_XLA_FLAG in flags
    # the pinned jaxlib has the rendezvous timeout flag: simulated devices on a busy
    # machine must not abort the run after XLA's default 40 s
    assert main._RENDEZVOUS_TIMEOUT_XLA_FLAG in flags
    assert main._xla_flags(" ".join(flags)).split() == flags  # idempotent
    own = "--xla_cpu_collective_call_terminate_timeout_seconds=60"
    assert main._xla_flags(own).split() == [own, main._DETERMINISTIC_XLA_FLAG]
