"""Least squares on the synthetic problem of ``configs/linear.py``.

Targets are ``x.w + 0.1 * noise``; the loss is ``0.5 (x.w - y)^2`` (no accuracy,
so the plot has the loss only). Run with::

  gdtx-train --config configs/least_squares.py --workdir runs/least_squares
"""

import ml_collections

from gdtx.experiments.configs import sibling

linear = sibling(__file__, "linear")


def get_config() -> ml_collections.ConfigDict:
    """The logistic sweep's optimizers and data, on the squared loss."""
    config = linear.get_config()
    config.loss = "least_squares"
    return config
