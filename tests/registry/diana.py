"""Registry rows for compression with memory (gdtx.diana: DIANA and Artemis).

As the compression rows: the data-parallel transformation chained with
``optax.adam`` under the battery's one-device ``shard_map`` on ``"data"``. The
battery's leaves are small, so QSGD uses buckets of 4 entries (the default
memory rate then comes from ``omega = min(4 / s^2, 2 / s)``).
"""

import optax

import gdtx
from gdtx.diana import artemis, diana
from tests.registry.case import Case

_AXIS = "data"


def diana_qsgd_adam(learning_rate, alpha=None, seed=0, memory_dtype=None):
    """``diana(qsgd(4, bucket_size=4))`` followed by Adam (the compressor is fixed here:
    its own arguments are validated in ``gdtx.qsgd``'s name, tested in test_compression)."""
    compressor = gdtx.qsgd(4, bucket_size=4)
    tx = diana(compressor, axis_name=_AXIS, alpha=alpha, seed=seed, memory_dtype=memory_dtype)
    return gdtx.chain(tx, optax.adam(learning_rate))


def artemis_qsgd_adam(learning_rate, alpha=None, down_alpha=None, seed=0):
    """``artemis`` with QSGD both ways and a downlink memory, followed by Adam."""
    compressor = gdtx.qsgd(4, bucket_size=4)
    tx = artemis(
        compressor,
        axis_name=_AXIS,
        alpha=alpha,
        down_compressor=gdtx.qsgd(8, bucket_size=4),
        down_memory=True,
        down_alpha=down_alpha,
        seed=seed,
    )
    return gdtx.chain(tx, optax.adam(learning_rate))


_MEMORY = ("h", "hbar")

CASES = (
    Case(
        name="diana_qsgd",
        factory=diana_qsgd_adam,
        kwargs={"learning_rate": 1e-2},
        static_args=("seed", "memory_dtype"),
        unvalidated_args={"learning_rate": "forwarded to optax.adam"},
        dtype_knobs={"memory_dtype": _MEMORY},
        axis_name=_AXIS,
        owner="gdtx.diana",
        slow_tier_checks={
            check: "artemis_qsgd runs DIANA's uplink with this memory, and more"
            for check in ("test_state_sharding_follows_params", "test_donated_step_runs")
        },
        # A complex leaf is quantized as its real form [Re, Im] (unbiased); Adam is complex too.
        supports_complex=True,
        invalid=(
            ({"alpha": 1.5}, r"gdtx\.diana: `alpha` must be in \[0, 1\], got 1\.5"),
            ({"alpha": -0.1}, r"gdtx\.diana: `alpha` must be in \[0, 1\]"),
            ({"alpha": "0.1"}, r"gdtx\.diana: `alpha`"),
            ({"seed": 1.0}, r"gdtx\.diana: `seed` must be an integer, got 1\.0"),
            ({"memory_dtype": "int32"}, r"`memory_dtype` must be None or a floating-point"),
        ),
    ),
    Case(
        name="artemis_qsgd",
        factory=artemis_qsgd_adam,
        kwargs={"learning_rate": 1e-2},
        static_args=("seed",),
        unvalidated_args={"learning_rate": "forwarded to optax.adam"},
        dtype_knobs={},
        axis_name=_AXIS,
        owner="gdtx.artemis",
        supports_complex=True,
        invalid=(
            ({"alpha": 2.0}, r"gdtx\.artemis: `alpha` must be in \[0, 1\], got 2\.0"),
            ({"down_alpha": -1.0}, r"gdtx\.artemis: `down_alpha` must be in \[0, 1\]"),
            ({"seed": -1}, r"gdtx\.artemis: `seed` must be an integer >= 0, got -1"),
        ),
    ),
)
