"""A Griffe extension that turns the reStructuredText in gdtx docstrings into Markdown.

gdtx docstrings follow optax's (Google sections, reST markup), which the docs
site renders with mkdocstrings as Markdown. Before the sections are parsed, this
rewrites, in every docstring:

- ``.. math::`` blocks into ``$$ ... $$`` (rendered by ``pymdownx.arithmatex``);
- ``.. warning::`` / ``.. note::`` blocks into Material admonitions;
- inline ``:math:`x``` into ``$x$``, ``:func:`x``` (and ``:class:``, ``:mod:``,
  ``:attr:``, ``:data:``) into ``x`` in code, double backquotes into single ones;
- ```Title <url>`_`` links into ``[Title](url)``.

Nothing else changes: the docstrings in the code stay as they are (the doctests
and ``help()`` read them).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_INLINE = [
    (re.compile(r":math:`([^`]+)`"), r"$\1$"),
    (re.compile(r":(?:func|class|mod|attr|data|meth|obj):`~?([^`]+)`"), r"`\1`"),
    (re.compile(r"``([^`]+)``"), r"`\1`"),
    (re.compile(r"`([^`<>]+?)\s*<(https?://[^>]+)>`_+"), r"[\1](\2)"),
]
_DIRECTIVE = re.compile(r"^(\s*)\.\. (math|warning|note|tip|important)::\s*(.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def rst_to_markdown(text: str) -> str:
    """The docstring ``text`` with its reST blocks and roles in Markdown."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        pad, kind, rest = match.groups()
        block = [rest] if rest else []
        i += 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(pad)):
            block.append(lines[i])
            i += 1
        while block and not block[-1].strip():
            block.pop()
        while block and not block[0].strip():
            block.pop(0)
        depth = min((_indent(b) for b in block if b.strip()), default=0)
        body = [b[depth:] if b.strip() else "" for b in block]
        if kind == "math":
            out += [pad + "$$", *(pad + b if b else "" for b in body), pad + "$$", ""]
        else:
            out += [f"{pad}!!! {kind}", *(pad + "    " + b if b else "" for b in body), ""]
    text = "\n".join(out)
    # Inline roles, outside the $$ blocks (whose backslashes and backquotes are TeX).
    parts = re.split(r"(\$\$.*?\$\$)", text, flags=re.DOTALL)
    for k in range(0, len(parts), 2):
        for pattern, repl in _INLINE:
            parts[k] = pattern.sub(repl, parts[k])
    return "".join(parts)


class RstToMarkdown(griffe.Extension):
    """Rewrites every docstring as it is loaded (see the module docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
