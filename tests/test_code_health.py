"""Code-health rules a reviewer would otherwise enforce by hand (issue 16).

A public function of gdtx is read by users (it is the one their traceback and
their "go to definition" land in): it stays short enough to read at a glance.
Per-leaf math, validation and the jitted bodies live in named private helpers.
"""

import ast
import pathlib
import types

import pytest

import gdtx

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_CODE_LINES = 50


def _code_lines(node: ast.FunctionDef, source_lines: list[str]) -> int:
    """Lines of a function's body that hold code: no docstring, blank or comment lines."""
    body = node.body
    first = body[0] if body else None
    if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant):
        if isinstance(first.value.value, str):
            body = body[1:]
    lines = set()
    for statement in body:
        for number in range(statement.lineno, statement.end_lineno + 1):
            text = source_lines[number - 1].strip()
            if text and not text.startswith("#"):
                lines.add(number)
    return len(lines)


def _public_functions(source: str):
    """``(qualified name, code lines)`` of module-level public functions and the
    public methods of public classes."""
    tree = ast.parse(source)
    lines = source.splitlines()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            yield node.name, _code_lines(node, lines)
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
                    yield f"{node.name}.{item.name}", _code_lines(item, lines)


def _too_long(source: str) -> list[tuple[str, int]]:
    return [(name, n) for name, n in _public_functions(source) if n > MAX_CODE_LINES]


def test_no_public_function_of_gdtx_is_longer_than_50_code_lines():
    offenders = []
    for path in sorted((ROOT / "gdtx").rglob("*.py")):
        for name, n in _too_long(path.read_text()):
            offenders.append(f"{path.relative_to(ROOT)}:{name} has {n} code lines")
    assert not offenders, (
        f"public functions over {MAX_CODE_LINES} code lines (move per-leaf math, "
        "validation and jitted bodies into named private helpers):\n" + "\n".join(offenders)
    )


def _function(code_lines: int) -> str:
    """A function with ``code_lines`` code lines, a docstring, comments and blank lines."""
    source = 'def f():\n    """Summary.\n\n    More lines of docstring.\n    """\n'
    source += "    # a comment\n\n" * 3
    source += "    x = (\n        1\n    )\n"  # one statement, three code lines
    return source + "".join(f"    y{i} = {i}\n" for i in range(code_lines - 3))


def _long_def(header: str, indent: str, code_lines: int = 60) -> str:
    body = "".join(f"{indent}    a{i} = {i}\n" for i in range(code_lines))
    return f"{indent}{header}\n{body}"


@pytest.mark.parametrize("code_lines", [50, 51, 80])
def test_the_rule_counts_code_lines_not_docstrings_comments_or_blanks(code_lines):
    source = _function(code_lines)
    assert dict(_public_functions(source)) == {"f": code_lines}
    assert bool(_too_long(source)) == (code_lines > MAX_CODE_LINES)


def test_the_rule_covers_public_methods_and_skips_private_names():
    source = "class Public:\n" + _long_def("def run(self):", "    ")
    source += _long_def("def _helper(self):", "    ")
    source += "class _Private:\n" + _long_def("def run(self):", "    ")
    source += _long_def("def _private():", "")
    assert _too_long(source) == [("Public.run", 60)]


def _shadowed_submodules() -> list[str]:
    """Submodules of gdtx whose name ``gdtx/__init__.py`` rebinds to a function (``gdtx.mfac``)."""
    names = [p.stem for p in (ROOT / "gdtx").glob("*.py") if not p.stem.startswith("_")]
    return [n for n in names if not isinstance(getattr(gdtx, n, None), types.ModuleType | None)]


def test_no_doctest_calls_a_function_through_the_name_of_its_own_module():
    # `pytest gdtx/mfac.py` imports the file with --import-mode=importlib, which
    # binds gdtx.mfac to the module: a doctest of gdtx/mfac.py calling gdtx.mfac(...)
    # then fails ("'module' object is not callable"), and in the whole suite it
    # passes or fails with the import order. Such doctests import the function.
    shadowed = _shadowed_submodules()
    assert "mfac" in shadowed  # the rule has something to check
    offenders = [
        f"gdtx/{name}.py"
        for name in shadowed
        if f"gdtx.{name}(" in (ROOT / "gdtx" / f"{name}.py").read_text()
    ]
    assert not offenders, offenders
