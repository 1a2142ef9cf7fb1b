"""The documentation: every public name has an API entry; the nav points at real pages.

The API-coverage check parses ``docs/api/*.md`` (no build). Building the site
itself needs the ``docs`` extra (mkdocs); where it is installed the strict build
runs too (about 10 s).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _coverage_module():
    path = ROOT / "docs" / "scripts" / "check_api_coverage.py"
    spec = importlib.util.spec_from_file_location("check_api_coverage", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_public_name_is_in_the_api_pages():
    missing = _coverage_module().missing_names()
    assert not missing, (
        f"gdtx.__all__ names missing from docs/api/*.md: {missing}; "
        "run python docs/scripts/check_api_coverage.py --write"
    )


def test_the_coverage_check_catches_a_missing_name(tmp_path):
    cov = _coverage_module()
    api = tmp_path / "api"
    shutil.copytree(ROOT / "docs" / "api", api)
    page = api / "belief.md"
    page.write_text(page.read_text().replace("::: gdtx.adabelief\n", ""))
    assert cov.missing_names(api) == ["adabelief"]
    # A module directive that shows only the docstring documents no name.
    page.write_text(page.read_text() + "\n::: gdtx.adabelief\n    options:\n      members: false\n")
    assert cov.missing_names(api) == ["adabelief"]


def _nav_files(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _nav_files(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _nav_files(value)


def test_every_nav_entry_exists():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    for entry in _nav_files(config["nav"]):
        # Notebooks are added from notebooks/ by docs/scripts/mkdocs_hooks.py.
        path = ROOT / entry if entry.startswith("notebooks/") else ROOT / "docs" / entry
        assert path.exists(), f"mkdocs.yml nav: {entry} does not exist"


def test_conventions_page_covers_every_family():
    text = (ROOT / "docs" / "conventions.md").read_text()
    for method in ("AdaBelief", "Signum", "M-SVAG", "RAdam", "diffGrad", "SAM", "SALR", "M-FAC"):
        assert f"| {method}" in text, method


def test_docs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    pytest.importorskip("mkdocs_jupyter")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = tmp_path / "site"
    assert (site / "api" / "belief" / "index.html").exists()
    assert "scale_by_belief" in (site / "api" / "belief" / "index.html").read_text()
    assert (site / "notebooks" / "quick_tour" / "index.html").exists()


def test_rst_docstrings_become_markdown():
    path = ROOT / "docs" / "scripts" / "griffe_rst.py"
    spec = importlib.util.spec_from_file_location("griffe_rst", path)
    if importlib.util.find_spec("griffe") is None:
        pytest.skip("griffe (docs extra) is not installed")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = (
        "Scales by :func:`scale_by_belief` with ``eps``:\n\n"
        ".. math::\n\n  u = m / (\\sqrt{s} + \\epsilon),\n\n"
        "Args:\n  eps: see `Zhuang et al <https://arxiv.org/abs/2010.07468>`_.\n\n"
        "    .. warning::\n      keep ``eps == eps_root``.\n\n"
        "Returns:\n  a transformation."
    )
    assert module.rst_to_markdown(text) == (
        "Scales by `scale_by_belief` with `eps`:\n\n"
        "$$\nu = m / (\\sqrt{s} + \\epsilon),\n$$\n\n"
        "Args:\n  eps: see [Zhuang et al](https://arxiv.org/abs/2010.07468).\n\n"
        "    !!! warning\n        keep `eps == eps_root`.\n\n"
        "Returns:\n  a transformation."
    )


# --- claims the README makes ------------------------------------------------------------


def _readme():
    return (ROOT / "README.md").read_text()


def _sharding_cases():
    import jax
    import jax.numpy as jnp
    import optax

    import gdtx

    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices (tests/conftest.py sets jax_num_cpu_devices)")
    P = jax.sharding.PartitionSpec
    results = {}
    for kind in ("Auto", "Explicit"):
        mesh = jax.make_mesh((8,), ("data",), axis_types=(getattr(jax.sharding.AxisType, kind),))
        sharding = jax.sharding.NamedSharding(mesh, P("data", None))
        params = {"w": jax.device_put(jnp.ones((16, 4)), sharding)}
        txs = {"gdtx.adabelief": gdtx.adabelief(1e-3), "optax.adam": optax.adam(1e-3)}
        for name, tx in txs.items():
            with jax.set_mesh(mesh):
                results[kind, "jit under set_mesh", name] = jax.jit(tx.init)(params)[0].mu["w"]
                results[kind, "eager", name] = tx.init(params)[0].mu["w"]
            if kind == "Auto":
                results[kind, "jit without a mesh", name] = jax.jit(tx.init)(params)[0].mu["w"]
    return results


def test_readme_states_where_state_sharding_follows_the_params():
    import jax

    P = jax.sharding.PartitionSpec
    readme = " ".join(_readme().split())
    assert "sharded like the parameters they mirror when `tx.init(params)` runs eagerly" in readme
    assert "On an Auto mesh, `jax.jit(tx.init)(params)` does not carry the params' sharding" in (
        readme
    )
    for (kind, how, name), mu in _sharding_cases().items():
        where = f"{name} on an {kind} mesh, {how}"
        if kind == "Explicit" or how == "eager":
            # What the README promises.
            assert mu.sharding.spec == P("data", None), f"{where}: {mu.sharding}"
        elif how == "jit under set_mesh":
            # What the README warns about: if this starts to hold, update the README.
            assert mu.sharding.spec == P(), f"{where}: {mu.sharding} (update the README)"
        else:
            assert len(mu.sharding.device_set) == 1, f"{where}: {mu.sharding} (update the README)"


def test_readme_methods_table_names_public_functions():
    import gdtx

    table = _readme().split("## Methods")[1].split("###")[0]
    names = set()
    for row in table.splitlines()[2:]:
        if row.startswith("|"):
            names.update(re.findall(r"`([a-z_]+)`", row.split("|")[1]))
    assert names, "no names found in the README's methods table"
    public = set(gdtx.__all__)
    missing = sorted(n for n in names if n not in public and not hasattr(gdtx, n))
    # The adaptive batch-size helpers live in gdtx.batch_size, as the table says.
    from gdtx import batch_size

    missing = [n for n in missing if not hasattr(batch_size, n)]
    assert not missing, f"the README's methods table names {missing}, which gdtx does not export"


def test_install_instructions_name_no_unpublished_url():
    # gdtx is not published: github.com/gdtx/gdtx does not resolve and PyPI has no gdtx.
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for page in pages:
        text = page.read_text()
        assert "git+https://github.com/gdtx" not in text, f"{page.relative_to(ROOT)}"
        assert "pip install gdtx" not in text and 'pip install "gdtx' not in text, (
            f"{page.relative_to(ROOT)} installs gdtx from an index that does not have it"
        )
