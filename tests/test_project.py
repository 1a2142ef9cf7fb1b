"""The newcomer's path: the README's commands are the ones CI and the Makefile run."""

import os
import pathlib
import subprocess
import sys
import tomllib

import pytest

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


# --- constraints.txt admits every Python that pyproject.toml admits ------------------

# A pin that broke the README's test command on Debian 12's Python 3.11.2: the check must
# catch it (see test_the_pin_check_catches_a_pin_that_needs_a_newer_patch_release).
_PIN_THAT_BROKE_3_11_2 = ("pymdown-extensions==13.1", ">=3.11.5")


def supported_pythons() -> list[str]:
    """The oldest Python that ``requires-python`` admits and the x.y.0 of every classifier.

    Fails when a classifier names a Python that ``requires-python`` excludes.
    """
    from packaging.specifiers import SpecifierSet

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requires = SpecifierSet(project["requires-python"])
    lower = [s.version for s in requires if s.operator in (">=", "~=", "==")]
    assert len(lower) == 1, f"requires-python {requires} needs exactly one lower bound"
    oldest = ".".join((lower[0].split(".") + ["0", "0"])[:3])
    prefix = "Programming Language :: Python :: 3."
    minors = [c.removeprefix(prefix) for c in project["classifiers"] if c.startswith(prefix)]
    versions = [oldest] + [f"3.{m}.0" for m in minors if f"3.{m}.0" != oldest]
    excluded = [v for v in versions if v not in requires]
    assert not excluded, f"classifiers name {excluded}, which requires-python {requires} excludes"
    return versions


def pinned_requirements(text: str):
    """The requirements of a constraints file (``name==version[; marker]`` lines)."""
    from packaging.requirements import Requirement

    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            yield Requirement(line)


def pins_excluding(text: str, pythons, requires_python_of):
    """``(pin, python, requires_python)`` for every pin that cannot install on ``python``.

    ``requires_python_of(name, version)`` gives the pinned release's Requires-Python
    (``None`` when it has none or is unknown). A pin whose environment marker excludes a
    Python is not required to install there.
    """
    from packaging.specifiers import SpecifierSet

    bad = []
    for req in pinned_requirements(text):
        (spec,) = req.specifier
        assert spec.operator == "==", f"constraints.txt: {req} is not an exact pin"
        requires = requires_python_of(req.name, spec.version)
        if not requires:
            continue
        for python in pythons:
            minor = ".".join(python.split(".")[:2])
            env = {"python_version": minor, "python_full_version": python}
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            if not SpecifierSet(requires).contains(python, prereleases=True):
                bad.append((str(req), python, requires))
    return bad


def _installed_requires_python(checked):
    """Requires-Python of an installed distribution at the pinned version, else None."""
    import importlib.metadata

    def lookup(name, version):
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            return None
        if dist.version != version:
            return None
        checked.append(name)
        return dist.metadata.get("Requires-Python")

    return lookup


def test_supported_pythons_are_the_documented_ones():
    # The README and the issue that fixed the pins promise these; keep them in step.
    assert supported_pythons() == ["3.11.0", "3.12.0", "3.13.0"]


def test_every_pin_installs_on_every_supported_python():
    """Each pinned release's Requires-Python, read from the installed distributions.

    CI installs exactly these pins (-c constraints.txt), so their metadata is on disk: no
    index is needed. Wheels for each Python are checked by the slow resolver test below.
    """
    checked: list[str] = []
    text = (ROOT / "constraints.txt").read_text()
    bad = pins_excluding(text, supported_pythons(), _installed_requires_python(checked))
    assert not bad, (
        "constraints.txt pins releases that some Python admitted by requires-python cannot "
        "install (pin, Python, the release's Requires-Python): "
        f"{bad}; pin a release every supported Python can install, or add a marker"
    )
    pins = list(pinned_requirements(text))
    assert len(checked) >= len(pins) // 2, (
        f"only {len(checked)} of {len(pins)} pins are installed at their pinned version: "
        'install with pip install -c constraints.txt -e ".[test]" to check them'
    )


def test_the_pin_check_catches_a_pin_that_needs_a_newer_patch_release():
    pin, requires = _PIN_THAT_BROKE_3_11_2
    bad = pins_excluding(pin, ["3.11.0", "3.12.0"], lambda name, version: requires)
    assert bad == [(pin, "3.11.0", requires)]
    # A marker that keeps the pin off the older Pythons is enough.
    marked = f'{pin}; python_full_version >= "3.11.5"'
    assert pins_excluding(marked, ["3.11.0", "3.12.0"], lambda name, version: requires) == []


@pytest.mark.slow
@pytest.mark.parametrize("python", supported_pythons())
def test_pip_resolves_the_test_extra_for_every_supported_python(python, tmp_path):
    """pip's own resolver, for another interpreter version, wheels only (needs the index).

    pip evaluates environment markers against the running interpreter even with
    --python-version, so a constraints file with markers is checked only approximately.
    """
    proc = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--dry-run", "--quiet",
            "--ignore-installed", "--only-binary=:all:", "--target", str(tmp_path),
            "--python-version", python, "-c", str(ROOT / "constraints.txt"),
            f"{ROOT}[test]",
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if proc.returncode and "ResolutionImpossible" not in proc.stderr:
        if "No matching distribution" not in proc.stderr:
            pytest.skip(f"pip could not reach its index: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]


# --- the suite's worker groups hold ---------------------------------------------------

_GROUPED_MODULE = """
import os, pathlib, pytest

pytestmark = pytest.mark.xdist_group("one_worker")


@pytest.mark.parametrize("i", range(6))
def test_records_its_worker(i):
    out = pathlib.Path(os.environ["WORKERS_DIR"]) / f"{i}"
    out.write_text(os.environ.get("PYTEST_XDIST_WORKER", "none"))
"""


def test_xdist_groups_run_on_one_worker(tmp_path):
    # The suite's xdist_group marks keep subprocess tests apart and let a module's
    # expensive fixture (a training run) be built once. pytest 9.2 with pytest-xdist
    # 3.8 ignored them without a word (pytest-xdist#1386): every test of the group
    # then ran wherever the scheduler put it and the fixture was built per worker.
    (tmp_path / "test_grouped.py").write_text(_GROUPED_MODULE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    workers = tmp_path / "workers"
    workers.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-n",
            "2",
            "--dist=loadgroup",
            "-q",
            "-p",
            "no:cacheprovider",
            "test_grouped.py",
        ],
        cwd=tmp_path,
        env={**os.environ, "WORKERS_DIR": str(workers)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = {p.read_text() for p in workers.iterdir()}
    assert len(list(workers.iterdir())) == 6
    assert len(seen) == 1, f"one xdist_group ran on workers {sorted(seen)}: grouping is broken"
