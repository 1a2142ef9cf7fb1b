"""The optimizers under test: one row per alias, one file per family.

A row is data, not a special case in a test body. The shared battery in
``tests/test_battery.py`` reads every field. Every module in this package
except ``case`` is a family file exposing ``CASES``; it is discovered here, so
adding a method is adding a row (or a family file) and nothing else.
"""

import importlib
import pkgutil

from tests.registry.case import Case


def _family_modules():
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name != "case":
            yield importlib.import_module(f"{__name__}.{info.name}")


ALL_CASES: tuple[Case, ...] = tuple(case for module in _family_modules() for case in module.CASES)

__all__ = ["ALL_CASES", "Case"]
