"""The public surface: explicit, documented, and importable with the runtime deps alone."""

import inspect
import re
import subprocess
import sys
import types

import gdtx

SECTIONS = ("Args:", "Returns:", "Examples:", "References:")


def _public_functions():
    return {
        name: obj
        for name in gdtx.__all__
        if isinstance(obj := getattr(gdtx, name), types.FunctionType)
    }


def test_all_lists_exactly_the_public_names():
    assert sorted(gdtx.__all__) == list(gdtx.__all__), "keep __all__ sorted"
    for name in gdtx.__all__:
        assert hasattr(gdtx, name), name
    # Family modules (gdtx.belief, ...) are importable but not part of the flat API.
    public = {
        n
        for n, v in vars(gdtx).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType)
    }
    assert public <= set(gdtx.__all__), public - set(gdtx.__all__)


def test_import_needs_only_the_runtime_dependencies():
    # absl is not on the list: optax and chex import it themselves.
    code = (
        "import sys, gdtx\n"
        "heavy = {'flax', 'orbax', 'ml_collections', 'sklearn', 'matplotlib', 'tqdm'}\n"
        "loaded = heavy & {m.split('.')[0] for m in sys.modules}\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_function_docstrings_have_every_section():
    assert len(_public_functions()) > 60  # the check below must not run over nothing
    for name, fn in _public_functions().items():
        doc = inspect.getdoc(fn) or ""
        # A function without parameters has nothing to list under Args.
        sections = SECTIONS if inspect.signature(fn).parameters else SECTIONS[1:]
        missing = [s for s in sections if s not in doc]
        assert not missing, f"gdtx.{name} lacks {missing}"


def test_documented_arguments_match_the_signatures():
    for name, fn in _public_functions().items():
        doc = inspect.getdoc(fn) or ""
        if "Args:" not in doc:
            continue
        args_block = doc.split("Args:")[1].split("Returns:")[0]
        documented = re.findall(r"^  (\*{0,2}\w+):", args_block, flags=re.MULTILINE)
        params = [
            ("*" if p.kind is p.VAR_POSITIONAL else "**" if p.kind is p.VAR_KEYWORD else "")
            + p.name
            for p in inspect.signature(fn).parameters.values()
        ]
        assert documented == params, f"gdtx.{name}: Args {documented} != signature {params}"


# Modules outside the flat API: their names are documented on their own pages
# (docs/api/flax.md, docs/api/checkpoint.md) as gdtx.<module>.<name>.
_NAMESPACE_MODULES = ("flax", "checkpoint")


def _defined_public_names(module):
    """The functions and classes a module defines itself, without a leading underscore."""
    return sorted(
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == module.__name__
    )


def test_every_public_name_of_every_module_is_public_api():
    import importlib.util
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    pages = "\n".join(p.read_text() for p in (root / "docs" / "api").glob("*.md"))
    modules = sorted(p.stem for p in (root / "gdtx").glob("*.py") if not p.stem.startswith("_"))
    assert "distributed" in modules and "compression" in modules
    stray = []
    for stem in modules:
        if stem in _NAMESPACE_MODULES and importlib.util.find_spec("flax") is None:
            continue
        module = importlib.import_module(f"gdtx.{stem}")
        for name in _defined_public_names(module):
            if stem in _NAMESPACE_MODULES:
                if f"::: gdtx.{stem}.{name}" not in pages:
                    stray.append(f"gdtx.{stem}.{name}")
            elif name not in gdtx.__all__:
                stray.append(f"gdtx.{stem}.{name}")
    assert not stray, f"not public API (export and document them, or prefix with _): {stray}"
