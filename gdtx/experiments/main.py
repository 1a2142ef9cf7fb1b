"""Command-line entry point: ``gdtx-train --config ... --workdir ...``.

Trains the config's model (the digits CNN, the byte-level Transformer LM or
a linear model: ``gdtx.experiments.tasks``) once per optimizer listed in the
config and writes the comparison to the workdir; see ``gdtx.experiments.train``.
Starting again with the same workdir resumes from its checkpoints. Examples::

  gdtx-train --config configs/default.py --workdir runs/default \\
      --config.num_steps=500
  gdtx-train --config configs/char_lm.py --workdir runs/char_lm
  gdtx-train --config configs/linear.py --workdir runs/linear

This module imports only the standard library at import time, so that
``run()`` can explain a missing optional dependency instead of failing with
an ImportError.
"""

from __future__ import annotations

import importlib.util
import os
import sys

# GPU convolution gradients use atomics by default, so two runs of the same
# config would differ in the last bits; the comparison must be reproducible.
_DETERMINISTIC_XLA_FLAG = "--xla_gpu_deterministic_ops=true"

# Top-level modules needed by the experiments beyond jax/optax/chex; they
# come with ``pip install "gdtx[examples]"``.
OPTIONAL_DEPENDENCIES = (
    "absl",
    "ml_collections",
    "flax",
    "orbax",
    "sklearn",
    "matplotlib",
    "tqdm",
)


def missing_dependency() -> str | None:
    """The first optional dependency that cannot be imported, or None."""
    for name in OPTIONAL_DEPENDENCIES:
        try:
            # Returns None for a module that isn't installed (or is blocked by a
            # ``sys.modules[name] = None`` entry).
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            return name
    return None


def _define_flags() -> None:
    """Defines --config and --workdir (once; absl flags are process-global)."""
    from absl import flags
    from ml_collections import config_flags

    if "workdir" in flags.FLAGS:
        return
    flags.DEFINE_string(
        "workdir",
        None,
        "Directory for results.json, curves.png, summary.md and checkpoints/ "
        "(a workdir with checkpoints of the same config resumes).",
    )
    config_flags.DEFINE_config_file(
        "config",
        None,
        "File path to the training hyperparameter configuration.",
        lock_config=True,
    )
    flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    import jax
    from absl import app, flags, logging

    from gdtx.experiments import train

    if len(argv) > 1:
        raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
    logging.info("JAX devices: %r", jax.devices())
    logging.info("Config:\n%s", flags.FLAGS.config)
    train.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


def run() -> None:
    """Console-script entry point (``gdtx-train``)."""
    missing = missing_dependency()
    if missing is not None:
        print(
            f"gdtx-train: missing optional dependency {missing!r}; "
            'install it with: pip install "gdtx[examples]"',
            file=sys.stderr,
        )
        sys.exit(1)
    if _DETERMINISTIC_XLA_FLAG not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_DETERMINISTIC_XLA_FLAG}"
    from absl import app

    _define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
