"""The optimizers under test: one row per alias, one file per family.

A row is data, not a special case in a test body. The shared battery in
``tests/test_battery.py`` reads every field; adding a method is adding a row to
its family's file (and that file to ``FAMILIES`` below).
"""

from tests.registry import belief
from tests.registry.case import Case

FAMILIES = (belief,)

ALL_CASES: tuple[Case, ...] = tuple(case for family in FAMILIES for case in family.CASES)

__all__ = ["ALL_CASES", "Case"]
