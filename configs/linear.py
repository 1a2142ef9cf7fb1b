"""Logistic regression on synthetic, ill-conditioned data: fast optimizer sweeps.

A linear model (50 features, zero initialisation) on Gaussian features whose
scales span a condition number of 1e3, labels from a planted weight vector
with noise. Each optimizer trains in about a second on a CPU, so the list below
is a small learning-rate sweep. Run with::

  gdtx-train --config configs/linear.py --workdir runs/linear

``configs/least_squares.py`` is the same sweep on the least-squares loss.
"""

import ml_collections

from gdtx.experiments.configs import sibling

default = sibling(__file__, "default")


def _sweep(name: str, learning_rates, **kwargs) -> list[ml_collections.ConfigDict]:
    return [
        ml_collections.ConfigDict(
            {"name": name, "learning_rate": lr, **({"kwargs": kwargs} if kwargs else {})}
        )
        for lr in learning_rates
    ]


def get_config() -> ml_collections.ConfigDict:
    """SGD with momentum, Adam and AdaBelief, each at three learning rates."""
    config = default.get_config()
    config.task = "linear"
    del config["test_size"], config["features"]

    # "logistic" or "least_squares" (gdtx.experiments.data.make_linear_problem).
    config.loss = "logistic"
    config.dim = 50
    config.num_train = 2000
    config.num_test = 1000
    config.condition_number = 1e3
    config.noise = 0.1

    config.batch_size = 100
    config.num_steps = 1000
    config.eval_every = 50
    config.checkpoint_every = 0

    config.optimizers = [
        *_sweep("momentum", [1e-2, 1e-1, 1.0]),
        *_sweep("adam", [1e-3, 1e-2, 1e-1]),
        *_sweep("adabelief", [1e-3, 1e-2, 1e-1]),
    ]
    return config
