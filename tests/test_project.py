"""The newcomer's path: the README's commands are the ones CI and the Makefile run."""

import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quick start")[1].split("```bash")[1].split("```")[0]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_quick_start_is_two_commands():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    assert "gdtx-train --config configs/default.py" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in ci


def test_makefile_demo_runs_the_readme_demo_command():
    makefile = (ROOT / "Makefile").read_text()
    assert _readme_commands()[0].replace("runs/default", "$(WORKDIR)") in makefile


def test_every_dependency_has_a_lower_bound_and_a_pin():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += [r for r in extra if not r.startswith("gdtx")]
    for requirement in requirements:
        name, _, bound = requirement.partition(">=")
        assert bound, f"{requirement} has no lower bound"
        assert name.lower() in pins, f"{name} is not pinned in constraints.txt"
