"""Test configuration shared by every test.

- Eight CPU devices, so that sharding and collective tests have a mesh. This
  must happen before JAX initialises its backend, hence at import time here.
- x64 stays off globally: reference tests switch it on with ``jax.enable_x64``
  as a context, so it cannot leak into other tests in the same worker.
- Hypothesis runs derandomized with a fixed budget under the "ci" profile.
"""

import jax
import numpy as np
import pytest
from hypothesis import settings

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
