"""Registry rows for the compression family (gdtx.compression).

A compressor is not an optimizer: each row chains the data-parallel
transformation with ``optax.adam`` (the battery needs a learning rate) and runs
under the battery's one-device ``shard_map`` on the axis ``"data"``. The
battery's leaves are small, so QSGD uses buckets of 4 entries.
"""

import optax

import gdtx
from tests.registry.case import Case

_AXIS = "data"


def qsgd_mean_adam(learning_rate, num_levels=4, bucket_size=None, seed=0):
    """``compressed_mean(qsgd(...))`` followed by Adam."""
    compressor = gdtx.qsgd(num_levels, bucket_size=bucket_size, norm="max")
    return gdtx.chain(gdtx.compressed_mean(compressor, _AXIS, seed=seed), optax.adam(learning_rate))


def ef_sign_adam(learning_rate, seed=0, error_dtype=None):
    """EF-SignSGD's error feedback (``scaled_sign``) followed by Adam."""
    ef = gdtx.error_feedback(
        gdtx.scaled_sign(), axis_name=_AXIS, seed=seed, error_dtype=error_dtype
    )
    return gdtx.chain(ef, optax.adam(learning_rate))


CASES = (
    Case(
        name="compressed_mean_qsgd",
        factory=qsgd_mean_adam,
        kwargs={"learning_rate": 1e-2, "bucket_size": 4},
        static_args=("num_levels", "bucket_size", "seed"),
        unvalidated_args={"learning_rate": "forwarded to optax.adam"},
        axis_name=_AXIS,
        # A complex leaf is quantized as its real form [Re, Im] (unbiased); Adam is complex too.
        supports_complex=True,
        invalid=(
            (
                {"num_levels": 0},
                r"gdtx\.qsgd: `num_levels` must be an integer in \[1, 32767\], got 0",
            ),
            ({"bucket_size": 0}, r"gdtx\.qsgd: `bucket_size` must be an integer >= 1, got 0"),
            ({"num_levels": 2.0}, r"gdtx\.qsgd: `num_levels` must be an integer, got 2\.0"),
            ({"seed": 1.0}, r"gdtx\.compressed_mean: `seed` must be an integer, got 1\.0"),
        ),
    ),
    Case(
        name="error_feedback_scaled_sign",
        factory=ef_sign_adam,
        kwargs={"learning_rate": 1e-2},
        static_args=("seed", "error_dtype"),
        unvalidated_args={"learning_rate": "forwarded to optax.adam"},
        dtype_knobs={"error_dtype": ("error",)},
        axis_name=_AXIS,
        # The scaled sign of a complex leaf is that of its real form [Re, Im].
        supports_complex=True,
        invalid=(
            ({"error_dtype": "int32"}, r"`error_dtype` must be None or a floating-point"),
            ({"seed": 1.0}, r"gdtx\.error_feedback: `seed` must be an integer, got 1\.0"),
            ({"seed": -1}, r"gdtx\.error_feedback: `seed` must be an integer >= 0, got -1"),
        ),
    ),
)
