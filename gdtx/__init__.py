"""gdtx: gradient transformations that optax does not have, exact to their papers.

Every public name is re-exported here from the module of its method family;
nothing is defined in this file. Flax helpers (``gdtx.flax``) and the
experiments (``gdtx.experiments``) are not imported: they need extras.
"""

from gdtx._core.extra_args import chain, required_extra_args
from gdtx._version import __version__
from gdtx.adaptive import (
    RectifyState,
    ScaleByAdagradNormState,
    ScaleByDiffGradState,
    adagrad_norm,
    diffgrad,
    radam,
    rectify,
    scale_by_adagrad_norm,
    scale_by_diffgrad,
    scale_by_radam,
)
from gdtx.batch_size import (
    AdaptiveBatchHistory,
    BatchGradientStatistics,
    BatchSizeTest,
    allowed_batch_sizes,
    augmented_inner_product_test,
    batch_gradient_statistics,
    next_batch_size,
    norm_test,
    train_with_adaptive_batches,
)
from gdtx.belief import ScaleByBeliefState, adabelief, scale_by_belief
from gdtx.compression import (
    CompressedMeanState,
    ErrorFeedbackState,
    atomo,
    compressed_mean,
    error_feedback,
    qsgd,
    scaled_sign,
    terngrad,
)
from gdtx.distributed import majority_vote, per_device_specs
from gdtx.mfac import ScaleByMFACState, mfac, scale_by_mfac
from gdtx.sharpness import (
    SALRState,
    SAMState,
    salr,
    salr_multiplier,
    sam,
    sharpness_estimate,
)
from gdtx.sign import (
    ScaleBySignumState,
    SignumVoteState,
    scale_by_sign,
    scale_by_signum,
    sign_sgd,
    signum,
    signum_vote,
)
from gdtx.variance import (
    ScaleByMsvagState,
    ScaleBySvagState,
    batch_mean_and_variance,
    m_ssd,
    msvag,
    msvag_gamma,
    scale_by_msvag,
    scale_by_svag,
    svag,
)

__all__ = [
    "AdaptiveBatchHistory",
    "BatchGradientStatistics",
    "BatchSizeTest",
    "CompressedMeanState",
    "ErrorFeedbackState",
    "RectifyState",
    "SALRState",
    "SAMState",
    "ScaleByAdagradNormState",
    "ScaleByBeliefState",
    "ScaleByDiffGradState",
    "ScaleByMFACState",
    "ScaleByMsvagState",
    "ScaleBySignumState",
    "ScaleBySvagState",
    "SignumVoteState",
    "__version__",
    "adabelief",
    "adagrad_norm",
    "allowed_batch_sizes",
    "atomo",
    "augmented_inner_product_test",
    "batch_gradient_statistics",
    "batch_mean_and_variance",
    "chain",
    "compressed_mean",
    "diffgrad",
    "error_feedback",
    "m_ssd",
    "majority_vote",
    "mfac",
    "msvag",
    "msvag_gamma",
    "next_batch_size",
    "norm_test",
    "per_device_specs",
    "qsgd",
    "radam",
    "rectify",
    "required_extra_args",
    "salr",
    "salr_multiplier",
    "sam",
    "scale_by_adagrad_norm",
    "scale_by_belief",
    "scale_by_diffgrad",
    "scale_by_mfac",
    "scale_by_msvag",
    "scale_by_radam",
    "scale_by_sign",
    "scale_by_signum",
    "scale_by_svag",
    "scaled_sign",
    "sharpness_estimate",
    "sign_sgd",
    "signum",
    "signum_vote",
    "svag",
    "terngrad",
    "train_with_adaptive_batches",
]
