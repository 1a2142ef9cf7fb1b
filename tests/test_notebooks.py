"""The notebooks: each jupytext pair is in sync, and each runs top to bottom.

``notebooks/<name>.md`` is the source of truth and ``<name>.ipynb`` its pair
(for Jupyter and the docs). After editing the ``.md``, run
``jupytext --sync notebooks/<name>.md``. The notebooks run here with
``GDTX_SMOKE=1``, which cuts their step counts; ``pytest --nbmake notebooks/*.ipynb``
runs the same notebooks (set ``GDTX_SMOKE=1`` for the short version).
"""

from __future__ import annotations

import os
import pathlib
import tempfile
import warnings

import pytest

jupytext = pytest.importorskip("jupytext")
nbformat = pytest.importorskip("nbformat")

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = sorted(p.stem for p in NOTEBOOKS.glob("*.md"))

# gdtx is not published: no package index has it and github.com/gdtx/gdtx does not
# resolve, so neither an install from there nor a Colab link to it works.
UNPUBLISHED_URLS = ("git+https://github.com/gdtx", "colab.research.google.com/github/gdtx")


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_every_notebook_is_a_pair():
    assert NAMES, "no notebooks found"
    ipynbs = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert ipynbs == NAMES, "each notebooks/<name>.md needs its <name>.ipynb, and vice versa"


@pytest.mark.parametrize("name", NAMES)
def test_pair_is_in_sync(name):
    md = jupytext.read(NOTEBOOKS / f"{name}.md")
    ipynb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert _cells(ipynb) == _cells(md), (
        f"notebooks/{name}.ipynb is out of sync: run jupytext --sync notebooks/{name}.md"
    )
    # Committed without outputs: the docs render the code, CI runs it.
    assert all(not c.get("outputs") for c in ipynb.cells if c.cell_type == "code")


@pytest.mark.parametrize("name", NAMES)
def test_first_cell_says_where_to_install_from(name):
    """gdtx is installed from a clone; no cell installs from a URL that does not exist."""
    md = jupytext.read(NOTEBOOKS / f"{name}.md")
    code = [c.source for c in md.cells if c.cell_type == "code"]
    first = code[0]
    assert 'find_spec("gdtx")' in first and "from a clone of the gdtx repository" in first, (
        f"notebooks/{name}.md: the first code cell checks that gdtx is installed and says "
        "where to install it from"
    )
    assert 'pip install -c constraints.txt -e ".[examples]"' in first
    for src in code:
        live = [line.strip() for line in src.splitlines() if not line.lstrip().startswith("#")]
        runs_pip = "subprocess" in src or any(line.startswith(("!", "%pip")) for line in live)
        assert not runs_pip, f"notebooks/{name}.md installs something: {src[:300]}"
    for path in (NOTEBOOKS / f"{name}.md", NOTEBOOKS / f"{name}.ipynb"):
        text = path.read_text()
        for unpublished in UNPUBLISHED_URLS:
            assert unpublished not in text, f"{path.name} points at {unpublished}: not published"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    traitlets_config = pytest.importorskip("traitlets.config")
    monkeypatch.setenv("GDTX_SMOKE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # The kernel talks over Unix sockets in a directory of its own, not TCP ports: with
    # TCP, jupyter_client picks a free port, releases it and lets the kernel bind it,
    # and another process (the other xdist worker's kernel, a two-process test's
    # coordinator) can take it in between. CI lost a run to exactly that ("Address
    # already in use", then "Kernel didn't respond in 60 seconds"). The socket prefix is
    # absolute (the default, "kernel-ipc", is relative, and the kernel runs in
    # notebooks/ while this client does not) and short (a socket path fits 108 bytes).
    sockets = tempfile.TemporaryDirectory(prefix="gdtx-nb-")
    config = traitlets_config.Config()
    config.KernelManager.transport = "ipc"
    config.KernelManager.ip = os.path.join(sockets.name, "kernel")
    nb = jupytext.read(NOTEBOOKS / f"{name}.md")
    client = nbclient.NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
        config=config,
    )
    with sockets, warnings.catch_warnings():
        # The Jupyter client's own deprecation notices are not the notebook's failures.
        warnings.simplefilter("ignore", DeprecationWarning)
        client.execute()
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, errors
