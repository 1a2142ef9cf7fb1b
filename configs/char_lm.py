"""A byte-level Transformer language model on the Python documentation topics.

The corpus is ``pydoc_data.topics`` from the standard library (the text of
``help("topics")``: ~460 KB of English prose and code examples), so nothing is
downloaded. The last 10% of the bytes are held out; the model is a 2-layer,
4-head decoder-only Transformer (d_model 64, ~140k parameters) over windows of
64 bytes with dropout 0.1. Each step is ~1.7 GFLOP: on a 2-core CPU that is
about 15-30 steps/s, so the 2000 steps below take 1-2.5 minutes per optimizer
(add ``--config.num_steps=300`` for a quick look). Run with::

  gdtx-train --config configs/char_lm.py --workdir runs/char_lm

Only the fields that differ from ``configs/default.py`` are set here.
"""

import ml_collections

from gdtx.experiments.configs import sibling

default = sibling(__file__, "default")


def get_config() -> ml_collections.ConfigDict:
    """AdamW vs AdaBelief (both with decoupled weight decay) on the byte-level LM."""
    config = default.get_config()
    config.task = "char_lm"
    del config["test_size"], config["features"]

    # Data: bytes of the corpus (0 = all of it), the held-out tail, the
    # evaluation set (evenly spaced windows of each split).
    config.max_bytes = 0
    config.test_fraction = 0.1
    config.eval_windows = 128

    # Model.
    config.seq_len = 64
    config.d_model = 64
    config.num_heads = 4
    config.num_layers = 2
    config.dropout = 0.1

    config.batch_size = 32
    config.num_steps = 2000
    config.eval_every = 100
    config.checkpoint_every = 500

    # Decoupled weight decay 1e-4 for both: AdaBelief's default
    # (weight_decouple=True) is the AdamW form of decay.
    config.optimizers = [
        ml_collections.ConfigDict(
            {"name": "adamw", "learning_rate": 3e-3, "kwargs": {"weight_decay": 1e-4}}
        ),
        ml_collections.ConfigDict(
            {"name": "adabelief", "learning_rate": 3e-3, "kwargs": {"weight_decay": 1e-4}}
        ),
    ]
    return config
