"""Example experiments comparing gdtx and optax optimizers.

Needs the optional dependencies: ``pip install "gdtx[examples]"``. The
command-line entry point is ``gdtx-train`` (``gdtx.experiments.main:run``).
Nothing here is imported by ``import gdtx``.
"""
