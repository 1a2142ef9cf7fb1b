"""Test configuration shared by every test.

- Eight CPU devices, so that sharding and collective tests have a mesh, with a
  longer collective rendezvous timeout. This must happen before JAX initialises
  its backend, hence at import time here.
- x64 stays off globally: reference tests switch it on with ``jax.enable_x64``
  as a context, so it cannot leak into other tests in the same worker.
- Hypothesis runs derandomized with a fixed budget under the "ci" profile.
- A battery check that a registry row moves to the slow tier (``Case.slow_tier_checks``)
  is marked ``slow`` here, so ``-m slow`` runs it and ``-m "not slow"`` does not.
"""

import os

import jax
import jaxlib
import numpy as np
import pytest
from hypothesis import settings

# The eight simulated devices share CI's two cores with another xdist worker. When
# one device's thread reaches a collective more than 40 s after the others, XLA:CPU's
# default rendezvous timeout aborts the whole worker process: "Fatal Python error:
# Aborted", XLA's own message lost in pytest's capture (reproduced with a 1 s timeout
# on tests/test_data_parallel.py under load), and pytest-xdist's loadgroup scheduler
# could then hang waiting for it (pytest-xdist#1378). Wait up to ten minutes instead.
# The flag came to XLA in October 2025 (openxla/xla#32115) and
# an older jaxlib aborts on an unknown flag: it is set from the pinned 0.10 series on.
_RENDEZVOUS_TIMEOUT = "--xla_cpu_collective_call_terminate_timeout_seconds=600"
_JAXLIB = tuple(int(part) for part in jaxlib.__version__.split(".")[:2])
if _JAXLIB >= (0, 10) and "collective_call_terminate" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_RENDEZVOUS_TIMEOUT}".strip()

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_numpy_rank_promotion", "raise")

settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile("ci")


@pytest.fixture
def rng():
    """A NumPy generator with a fixed seed, fresh for every test."""
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_digits():
    """The bundled digits, split and scaled once per worker (see tests/tiny_digits.py)."""
    from tests import tiny_digits

    return tiny_digits.load()


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items):
    from tests.registry import Case

    for item in items:
        case = getattr(item, "callspec", None) and item.callspec.params.get("case")
        if isinstance(case, Case) and item.originalname in case.slow_tier_checks:
            item.add_marker(pytest.mark.slow)
