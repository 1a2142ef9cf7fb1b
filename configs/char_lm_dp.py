"""The byte-level Transformer trained data-parallel on 8 devices, one row per exchange.

``configs/char_lm.py``'s model and data, trained with ``gdtx.data_parallel_step``
over a 1-D mesh of 8 devices (simulated CPU devices when the host has fewer:
``gdtx-train`` asks JAX for them before it starts). The global batch of 32
windows is split 4 per device. Each entry of ``config.optimizers`` is one row:
the optimizer (``name``/``learning_rate``/``kwargs``) and, for a compressed
exchange, the ``aggregate`` chained before it (``gdtx.compressed_mean``,
``gdtx.error_feedback``, ``gdtx.diana``: they turn the devices' gradients into
one). Any factory that takes an ``axis_name`` gets ``config.mesh_axis``, so a
row never names the axis. The local-SGD rows (``gdtx.local_sgd``) keep
per-device parameters between synchronisations; the model evaluated is their
mean.

Shrunk so that all rows together finish in about 15-25 minutes niced on 2 shared
CPU cores: 800 steps (char_lm.py runs 2000), evaluation every 50. Run with::

  gdtx-train --config configs/char_lm_dp.py --workdir runs/char_lm_dp

``results.json`` holds per row ``bytes_sent_per_step`` (each device, ring
algorithms), ``payload_bytes_per_step`` and ``hlo_operand_bytes_per_step`` (the
compiled step's collectives), and the curve ``cumulative_bytes_sent``;
``docs/scripts/char_lm_dp_table.py`` turns it into the table and plot of
``docs/guides/data_parallel.md``. (``gdtx.artemis`` without downlink compression
equals DIANA, and ``gdtx.robust_mean`` all-gathers f32 gradients at ~1 step/s
here: add them as rows to see for yourself.)
"""

import ml_collections

from gdtx.experiments.configs import sibling

char_lm = sibling(__file__, "char_lm")

_ADAMW_KWARGS = {"weight_decay": 1e-4}
_QSGD = {"name": "gdtx.qsgd", "kwargs": {"num_levels": 16, "bucket_size": 512}}


def _adamw(label: str, aggregate: dict | None = None) -> dict:
    row = {"label": label, "name": "adamw", "learning_rate": 3e-3}
    row["kwargs"] = dict(_ADAMW_KWARGS)
    if aggregate is not None:
        row["aggregate"] = aggregate
    return row


# Local SGD rows: every device takes `every` AdamW steps on its own batches
# between two all-reduces of the f32 parameters (periodic average: also of the
# AdamW moments; gdtx.local_sgd). Evaluations (every 50 steps) fall on
# synchronising steps, where the evaluated mean is "the" model.
_EVERY = 25

# One dict per row.
ROWS = [
    _adamw("f32 mean (adamw)"),
    {
        "label": "signum_vote packed",
        "name": "gdtx.signum_vote",
        "learning_rate": 1e-3,
        "kwargs": {"wire": "packed", "weight_decay": 1e-4},
    },
    {
        "label": "signum_vote bits",
        "name": "gdtx.signum_vote",
        "learning_rate": 1e-3,
        "kwargs": {"wire": "bits", "weight_decay": 1e-4},
    },
    _adamw(
        "QSGD (s=16) + adamw", {"name": "gdtx.compressed_mean", "kwargs": {"compressor": _QSGD}}
    ),
    _adamw(
        "TernGrad + adamw",
        {"name": "gdtx.compressed_mean", "kwargs": {"compressor": {"name": "gdtx.terngrad"}}},
    ),
    _adamw(
        "EF scaled_sign + adamw",
        {"name": "gdtx.error_feedback", "kwargs": {"compressor": {"name": "gdtx.scaled_sign"}}},
    ),
    _adamw("DIANA QSGD + adamw", {"name": "gdtx.diana", "kwargs": {"compressor": _QSGD}}),
    {
        "label": f"periodic average H={_EVERY} (adamw)",
        "name": "gdtx.periodic_average",
        "learning_rate": 3e-3,
        "kwargs": {"every": _EVERY, "inner": {"name": "adamw", "kwargs": _ADAMW_KWARGS}},
    },
    {
        "label": f"DiLoCo H={_EVERY} (adamw inner)",
        "name": "gdtx.diloco",
        "learning_rate": 3e-3,
        "kwargs": {"every": _EVERY, "inner": {"name": "adamw", "kwargs": _ADAMW_KWARGS}},
    },
]


def get_config() -> ml_collections.ConfigDict:
    """Every row of ``ROWS`` on 8 data-parallel devices, 800 steps."""
    config = char_lm.get_config()
    config.data_parallel_devices = 8
    config.mesh_axis = "data"
    config.num_steps = 800
    config.eval_every = 50
    # Checkpoints are not supported in data-parallel runs yet.
    config.checkpoint_every = 0
    config.optimizers = [ml_collections.ConfigDict(row) for row in ROWS]
    return config
