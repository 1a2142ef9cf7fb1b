"""optax's own alias tests, run on gdtx's optimizers of the same name.

optax ships ``optax/_src/alias_test.py``: convergence on a parabola and on
Rosenbrock in float32 *and complex64* (gradients conjugated before ``update``),
``optax.tree.map_params`` over the state, no recompilation, extra arguments,
``inject_hyperparams``, explicit state dtypes, dtype preservation, shape/dtype/
sharding stability of the state under ``jax.jit`` and gradient accumulation.
Nobody here wrote it, which is the point: where gdtx has an optimizer under the
name that optax tests (``adabelief``, ``radam``, ``sign_sgd``, ``signum``), the
test is run unchanged with ``optax.adabelief`` & co. replaced by gdtx's.

A test that optax itself skips (e.g. complex ``sign_sgd``) is skipped here too.
"""

from __future__ import annotations

import re
import types
import unittest
from unittest import mock

import pytest

import gdtx

alias_test = pytest.importorskip("optax._src.alias_test")

NAMES = ("adabelief", "radam", "sign_sgd", "signum")
_GDTX_ALIASES = types.SimpleNamespace(**{name: getattr(gdtx, name) for name in NAMES})
_SELECTED = re.compile(rf"opt_name='({'|'.join(NAMES)})'")


def _optax_tests() -> dict[str, unittest.TestCase]:
    suite = unittest.TestLoader().loadTestsFromTestCase(alias_test.AliasTest)
    found = {}
    for test in suite:
        description = test.id()
        if _SELECTED.search(description):
            # "test_optimization1 (opt_name='adabelief', ...)" -> a readable id.
            method = description.split(" ")[0].rsplit(".", 1)[-1]
            found[f"{method}[{_SELECTED.search(description).group(1)}]"] = test
    return found


_TESTS = _optax_tests()


def test_every_gdtx_namesake_is_under_test():
    covered = {key.split("[")[1].rstrip("]") for key in _TESTS}
    assert covered == set(NAMES)


@pytest.mark.parametrize("key", sorted(_TESTS))
def test_optax_alias_test_passes_on_gdtx(key):
    result = unittest.TestResult()
    with mock.patch.object(alias_test, "alias", _GDTX_ALIASES):
        _TESTS[key].run(result)
    problems = [f"{test}:\n{trace}" for test, trace in result.failures + result.errors]
    assert not problems, "\n\n".join(problems)
    if result.skipped and not result.testsRun - len(result.skipped):
        pytest.skip(result.skipped[0][1])
