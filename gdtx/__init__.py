"""gdtx: gradient transformations that optax does not have, exact to their papers.

Every public name is re-exported here from the module of its method family;
nothing is defined in this file. Flax helpers (``gdtx.flax``) and the
experiments (``gdtx.experiments``) are not imported: they need extras.
"""

from gdtx._core.extra_args import chain, required_extra_args
from gdtx._version import __version__
from gdtx.belief import ScaleByBeliefState, adabelief, scale_by_belief

__all__ = [
    "ScaleByBeliefState",
    "__version__",
    "adabelief",
    "chain",
    "required_extra_args",
    "scale_by_belief",
]
