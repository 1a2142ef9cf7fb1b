"""Example experiments comparing gdtx and optax optimizers.

Needs the optional dependencies of the ``examples`` extra (from a clone of the
repository: ``pip install -e ".[examples]"``). The
command-line entry point is ``gdtx-train`` (``gdtx.experiments.main:run``).
Nothing here is imported by ``import gdtx``.
"""
