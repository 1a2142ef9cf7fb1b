"""One ``CompiledRuns`` for the experiment tests: consecutive runs of one config compile once.

Import it after the module's ``pytest.importorskip`` lines (it imports the experiments).
"""

from gdtx.experiments import train

COMPILED = train.CompiledRuns()


def train_and_evaluate(config, workdir, **kwargs):
    """``train.train_and_evaluate`` sharing :data:`COMPILED` with the other tests' runs."""
    return train.train_and_evaluate(config, workdir, compiled=COMPILED, **kwargs)
