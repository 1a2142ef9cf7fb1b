"""The variance-rectification term of RAdam (Liu et al. 2019), shared by every family.

With ``rho_inf = 2 / (1 - b2) - 1`` and ``rho_t = rho_inf - 2 t b2^t / (1 - b2^t)``,
the rectified step is taken when ``rho_t >= threshold`` and is scaled by

    r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t)).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp


def rectification(b2: Any, count: Any, threshold: Any, dtype: Any) -> tuple[Any, Any]:
    """Returns ``(r_t, use_adaptive_step)`` for step ``count`` (counted from 1).

    ``r_t`` is finite even where the adaptive step is not used (its radicand
    is clipped at 0), so selecting with ``jnp.where`` cannot leak a NaN.

    Precision: just above the threshold ``rho_t`` is a difference of two numbers
    near ``rho_inf`` (about 2000 for ``b2 = 0.999``), so in float32 the first
    rectified steps carry a relative error of about 1e-3 in ``r_t``; from
    ``t ~ 100`` it is below 1e-5. float64 (x64) is exact to the references.
    """
    t = jnp.asarray(count, dtype)
    b2 = jnp.asarray(b2, dtype)
    b2_t = b2**t
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    rho_t = rho_inf - 2.0 * t * b2_t / (1.0 - b2_t)
    radicand = ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf) / (
        (rho_inf - 4.0) * (rho_inf - 2.0) * rho_t
    )
    r_t = jnp.sqrt(jnp.maximum(radicand, 0.0))
    return r_t, rho_t >= threshold
