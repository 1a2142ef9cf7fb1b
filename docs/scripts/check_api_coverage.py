"""Checks (or writes) the API pages: every name in ``gdtx.__all__`` has an entry.

The pages ``docs/api/<module>.md`` hold one mkdocstrings directive
(``::: gdtx.<name>``) per public name, grouped by the module that defines it.
The check parses the Markdown (no docs build needed) and lists the public names
that no page documents; ``tests/test_docs.py`` runs it in the default suite.

Usage::

  python docs/scripts/check_api_coverage.py          # check; exit 1 if a name is missing
  python docs/scripts/check_api_coverage.py --write  # regenerate docs/api/*.md

``--write`` keeps each page's hand-written introduction (everything above the
``<!-- generated -->`` marker) and rewrites the directives below it.
"""

from __future__ import annotations

import argparse
import inspect
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
API_DIR = ROOT / "docs" / "api"
MARKER = "<!-- generated: python docs/scripts/check_api_coverage.py --write -->"
# Names in __all__ that are not documented with a directive of their own.
NOT_DOCUMENTED = {"__version__"}
# Page title per defining module; a module not listed gets a page titled by its name.
TITLES = {
    "gdtx.belief": "AdaBelief",
    "gdtx.sign": "Sign methods",
    "gdtx.variance": "Variance adaptation",
    "gdtx.adaptive": "Adaptive steps: diffGrad, RAdam, rectify, AdaGrad-Norm",
    "gdtx.sharpness": "Sharpness: SALR, SAM, ASAM",
    "gdtx.mfac": "M-FAC",
    "gdtx.compression": "Gradient compression",
    "gdtx.batch_size": "Adaptive batch sizes",
    "gdtx.distributed": "Collectives",
    "gdtx.schedules": "Learning-rate schedules",
    "gdtx.games": "Games: CGD and ACGD",
    "gdtx.frank_wolfe": "Frank-Wolfe and linear minimisation oracles",
    "gdtx.local_sgd": "Local SGD and DiLoCo",
    "gdtx.zeroth_order": "Shared-seed zeroth order (Just One Byte)",
    "gdtx.robust": "Robust aggregation",
    "gdtx.diana": "DIANA and Artemis",
    "gdtx._core.extra_args": "Chaining and extra arguments",
    "gdtx._core.hlo": "Collectives in compiled HLO",
}
# A directive and its indented options; one with ``members: false`` only shows a
# module's docstring (the family's contract) and documents no name.
DIRECTIVE = re.compile(r"^:::\s+gdtx\.(?:[\w.]+\.)?(\w+)[ \t]*\n((?:[ \t]+.*\n?)*)", re.MULTILINE)


def _gdtx():
    sys.path.insert(0, str(ROOT))
    import gdtx

    return gdtx


def documented_names(api_dir: pathlib.Path = API_DIR) -> set[str]:
    """The names that some ``::: gdtx....name`` directive in ``api_dir`` documents."""
    names: set[str] = set()
    for page in sorted(api_dir.glob("*.md")):
        for name, options in DIRECTIVE.findall(page.read_text() + "\n"):
            if "members: false" not in options:
                names.add(name)
    return names


def missing_names(api_dir: pathlib.Path = API_DIR) -> list[str]:
    """Public names of ``gdtx.__all__`` that no API page documents."""
    gdtx = _gdtx()
    return sorted(set(gdtx.__all__) - NOT_DOCUMENTED - documented_names(api_dir))


def _page_name(module: str) -> str:
    module = module.removeprefix("gdtx.")
    return module.replace("_core.extra_args", "core").replace("_core.hlo", "hlo").replace(".", "_")


def _order(gdtx, name: str) -> tuple:
    obj = getattr(gdtx, name)
    # Optimizers first, then their scale_by_* cores, helpers, and state types last.
    return (inspect.isclass(obj), name.startswith("scale_by_"), name)


def write_pages(api_dir: pathlib.Path = API_DIR) -> list[pathlib.Path]:
    """Regenerates the directive part of every page from ``gdtx.__all__``."""
    gdtx = _gdtx()
    by_module: dict[str, list[str]] = {}
    for name in gdtx.__all__:
        if name in NOT_DOCUMENTED:
            continue
        by_module.setdefault(getattr(gdtx, name).__module__, []).append(name)
    api_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for module, names in by_module.items():
        page = api_dir / f"{_page_name(module)}.md"
        if page.exists() and MARKER in page.read_text():
            intro = page.read_text().split(MARKER)[0].rstrip() + "\n\n"
        else:
            title = TITLES.get(module, module)
            intro = f"# {title}\n\n"
            # The module's docstring states the family's contract; skipped where the
            # module shares its name with a public function (gdtx.mfac).
            if not module.startswith("gdtx._core") and module.split(".")[-1] not in names:
                intro += (
                    f"::: {module}\n    options:\n      members: false\n"
                    "      show_root_heading: false\n\n"
                )
        body = "\n".join(f"::: gdtx.{n}\n" for n in sorted(names, key=lambda n: _order(gdtx, n)))
        page.write_text(f"{intro}{MARKER}\n\n{body}")
        written.append(page)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="regenerate docs/api/*.md")
    args = parser.parse_args(argv)
    if args.write:
        for page in write_pages():
            print("wrote", page.relative_to(ROOT))
    missing = missing_names()
    if missing:
        print(
            "gdtx.__all__ names missing from docs/api/*.md: " + ", ".join(missing) + "\n"
            "Run: python docs/scripts/check_api_coverage.py --write",
            file=sys.stderr,
        )
        return 1
    print("every public name of gdtx.__all__ is documented in docs/api/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
