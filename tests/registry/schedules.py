"""Registry rows for gdtx.schedules: the norm recorder, chained in front of optax.adam.

``record_grad_norm`` passes its updates through, so on its own it solves nothing:
the row chains it in front of ``optax.adam`` (the first run of a refinement),
and the battery checks the recorder where the chain depends on it (complex and
integer params at ``init``, wrong-shaped gradients, empty trees, ``lax.cond``,
sharding, donation, ``MultiSteps``); its messages name
``gdtx.schedules.record_grad_norm``.
"""

import optax

from gdtx.schedules import record_grad_norm
from tests.registry.case import Case


def adam_recording_grad_norms(learning_rate=1e-2, norm="l2"):
    """``optax.chain(record_grad_norm(norm), optax.adam(learning_rate))``."""
    return optax.chain(record_grad_norm(norm), optax.adam(learning_rate))


# One row: the norm (l2 or l1) changes one reduction, not what the battery checks;
# tests/test_schedules.py checks both norms (real, bfloat16, complex, empty, x64).
CASES = (
    Case(
        name="record_grad_norm_adam",
        factory=adam_recording_grad_norms,
        kwargs={"learning_rate": 1e-2, "norm": "l2"},
        static_args=("norm",),
        supports_complex=True,
        invalid=(({"norm": "linf"}, r"gdtx\.schedules\.record_grad_norm: `norm` must be one of"),),
        owner="gdtx.schedules.record_grad_norm",
        unvalidated_args={"learning_rate": "forwarded to optax.adam, which does not validate"},
    ),
)
