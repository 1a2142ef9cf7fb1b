"""What the step-time benchmark knows about each registry row: traffic and declared floor.

The battery registry (``tests/registry``) says how to build and check a method; it does
not say what a step costs. This table does, keyed by the registry row's name:

- ``reads`` / ``writes``: the float32 arrays of the parameters' size that one step reads
  and writes (grad, params, each state array). ``(R + W) * 4 * N / bandwidth`` is the
  *generic floor*, the same for every elementwise step that touches those arrays once.
- ``floor``: the row's *own floor*, counting what the method must do besides: extra
  passes over arrays (a global norm that must be complete before any coordinate moves,
  a perturbed point an opaque ``grad_fn`` must be handed), the packed payload a vote or a
  compressor writes and reads, and evaluations of the benchmark's own problem (loss,
  gradient, Hessian-vector product), random draws and window products, each timed as a
  primitive in the same interleaved run (``benchmarks/primitives.py``).

A registry row without an entry here stops the benchmark (``check_entries``): a new
method gets its traffic and its floor declared, or it is not measured.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Iterable, Mapping

import gdtx


@dataclasses.dataclass(frozen=True)
class Floor:
    """A declared floor: what a step must do beyond reading ``R`` and writing ``W`` arrays.

    Attributes:
      why: how the floor is counted, in one sentence (it is printed in the docs).
      extra_arrays: float32 array passes per element beyond ``R + W`` (negative where a
        measured primitive replaces arrays that ``R + W`` streams, e.g. M-FAC's window).
      payload_bits: bits per element of a packed payload, written once and read once.
      uses: ``(primitive, count)`` pairs, each primitive timed in the same run.
    """

    why: str
    extra_arrays: int = 0
    payload_bits: float = 0.0
    uses: tuple[tuple[str, int], ...] = ()


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registry row as the benchmark sees it."""

    reads: tuple[str, ...]
    writes: tuple[str, ...]
    floor: Floor


ELEMENTWISE = Floor("elementwise: the arrays it reads and writes, each once")

_ADAM = (("grad", "param", "mu", "nu"), ("param", "mu", "nu"))
_SGD = (("grad", "param"), ("param",))
_MOMENTUM = (("grad", "param", "mu"), ("param", "mu"))


def _bits(compressor) -> float:
    """Payload bits per element of ``compressor`` on a large float32 vector."""
    n = 1 << 20
    return compressor.payload_bits((n,)) / n


def _mfac(m: int) -> Entry:
    # The generic floor streams the window twice (the new Gram row and G^T c); the own
    # floor times those two products instead (primitive window<m>) and keeps the rest.
    window = tuple(f"grads[{i}]" for i in range(m))
    return Entry(
        ("grad", "param", *window, *window, "ema"),
        ("param", "grads[slot]", "ema"),
        Floor(
            f"grad, params and the EMA once, one window row written, and the two products "
            f"with the {m}-row window (Gram row G g, then c^T G) as measured",
            extra_arrays=-2 * m,
            uses=((f"window{m}", 1),),
        ),
    )


def _salr(arrays: tuple) -> Entry:
    return Entry(
        *arrays,
        Floor(
            "the inner step plus the estimate (the timed step is step 0, always an "
            "estimation step, also with every=2): 5 + 5 walk steps, each a gradient, its "
            "norm (1 read) and the move (read p, d, write p), and 2 loss values",
            extra_arrays=10 * 4,
            uses=(("grad", 10), ("loss", 2)),
        ),
    )


def _sam(adaptive: bool) -> Entry:
    norm = "abs(w) g (reads w and g)" if adaptive else "g (1 read)"
    return Entry(
        *_SGD,
        Floor(
            f"the SGD step plus 1 gradient at w + e: the norm of {norm} before e exists, "
            "and w + e written for grad_fn (read w, g, write 1)",
            extra_arrays=(2 if adaptive else 1) + 3,
            uses=(("grad", 1),),
        ),
    )


def _spsa() -> Entry:
    return Entry(
        ("param",),
        ("param",),
        Floor(
            "K = 4 samples: 2 shifted points each (read p, z, write 1), 2 loss values, a "
            "Gaussian direction drawn to perturb and drawn again to accumulate (read and "
            "write the sum, read z), and the update's read of the direction",
            extra_arrays=4 * (6 + 3) + 1,
            uses=(("loss", 8), ("normal", 8)),
        ),
    )


def _exchanging(collective: str, arrays: int, what: str) -> Floor:
    # On the one-device mesh the rows are timed on, XLA:CPU still runs the collective (a
    # runtime call that copies its operand into a temporary): timed as a primitive.
    return Floor(
        f"elementwise, and {what}: {arrays} x {collective} of a float32 array on the "
        "one-device mesh, as measured",
        uses=((collective, arrays),),
    )


def _compressed(arrays: tuple, why: str, bits: float, draws: int, extra: int = 0) -> Entry:
    uses = (("uniform", draws),) if draws else ()
    return Entry(*arrays, Floor(why, extra_arrays=extra, payload_bits=bits, uses=uses))


_ADAM_ENTRY = Entry(*_ADAM, ELEMENTWISE)
_QSGD4 = _bits(gdtx.qsgd(4, bucket_size=4))
_DIANA = (("grad", "param", "h", "hbar", "mu", "nu"), ("param", "h", "hbar", "mu", "nu"))
_ARTEMIS = (
    ("grad", "param", "h", "hbar", "down_memory", "mu", "nu"),
    ("param", "h", "hbar", "down_memory", "mu", "nu"),
)
_ONE_NORM = Floor("the step, and g read once more: its global norm precedes every move", 1)
_DEGENERATE = Floor("the degenerate game (no maximiser, B = 0) is a plain gradient step")
ENTRIES: Mapping[str, Entry] = types.MappingProxyType(
    {
        "diffgrad": Entry(
            ("grad", "param", "mu", "nu", "prev_grad"),
            ("param", "mu", "nu", "prev_grad"),
            ELEMENTWISE,
        ),
        "radam": _ADAM_ENTRY,
        "rectify_belief": _ADAM_ENTRY,
        "adagrad_norm": Entry(*_SGD, _ONE_NORM),
        "adabelief": _ADAM_ENTRY,
        "adabelief_rectified": _ADAM_ENTRY,
        "adabelief_amsgrad": Entry(
            ("grad", "param", "mu", "nu", "nu_max"), ("param", "mu", "nu", "nu_max"), ELEMENTWISE
        ),
        "adabelief_nesterov": _ADAM_ENTRY,
        "compressed_mean_qsgd": _compressed(
            _ADAM,
            "Adam's arrays, the QSGD payload written and read, and 1 uniform per coordinate",
            _bits(gdtx.qsgd(4, bucket_size=4, norm="max")),
            1,
        ),
        "error_feedback_scaled_sign": _compressed(
            (("grad", "param", "error", "mu", "nu"), ("param", "error", "mu", "nu")),
            "Adam's and the error's arrays, g and e read once more for the leaf's l1 norm "
            "that scales the signs, and the packed signs written and read",
            _bits(gdtx.scaled_sign()),
            0,
            extra=2,
        ),
        "diana_qsgd": _compressed(
            _DIANA, "Adam's and the memories' arrays, the QSGD payload, 1 uniform", _QSGD4, 1
        ),
        "artemis_qsgd": _compressed(
            _ARTEMIS,
            "Adam's and the memories' arrays, both QSGD payloads (up 4, down 8 levels), 2 uniforms",
            _QSGD4 + _bits(gdtx.qsgd(8, bucket_size=4)),
            2,
        ),
        "deterministic_frank_wolfe_l2": Entry(*_SGD, _ONE_NORM),
        "one_sample_frank_wolfe_l2": Entry(
            ("grad", "param", "mu", "prev_params"),
            ("param", "mu", "prev_params"),
            Floor(
                "1 Hessian-vector product, its two inputs written for hvp_fn, its output "
                "read, and the new estimate read again after the LMO's norm",
                extra_arrays=4,
                uses=(("hvp", 1),),
            ),
        ),
        # its state is the CG warm start (1 array), as ACGD's
        "cgd_single_player": Entry(
            ("grad", "param", "warm_start"), ("param", "warm_start"), _DEGENERATE
        ),
        "acgd_single_player": Entry(
            ("grad", "param", "nu", "warm_start"), ("param", "nu", "warm_start"), _DEGENERATE
        ),
        "mfl_sgd": Entry(
            ("grad", "param", "trace"),
            ("param", "trace"),
            _exchanging("all_reduce", 2, "the parameters and the momentum averaged every step"),
        ),
        "diloco_adam": Entry(
            ("grad", "param", "mu", "nu", "anchor", "trace"),
            ("param", "mu", "nu", "anchor", "trace"),
            _exchanging("all_reduce", 1, "the parameters averaged (every=1: every step)"),
        ),
        "mfac": _mfac(4),
        "mfac_momentum_wd": _mfac(8),
        "robust_mean_nnm": _ADAM_ENTRY,
        "robust_mean_centered_clipping": Entry(
            ("grad", "param", "prev", "mu", "nu"),
            ("param", "prev", "mu", "nu"),
            Floor(
                "Adam's arrays and 3 clipping iterations, each a norm of g - v (2 reads) "
                "before the move of v (read g, v, write v)",
                extra_arrays=3 * 5 - 3,
            ),
        ),
        "robust_mean_krum": _ADAM_ENTRY,
        "record_grad_norm_adam": Entry(
            *_ADAM, Floor("Adam's arrays: the recorded norm can share Adam's read of g")
        ),
        "salr_sgd": _salr(_SGD),
        "salr_adabelief_code_options": _salr(_ADAM),
        "sam_sgd": _sam(False),
        "asam_sgd": _sam(True),
        "sign_sgd": Entry(*_SGD, ELEMENTWISE),
        "signum": Entry(*_MOMENTUM, ELEMENTWISE),
        "signum_l2": Entry(*_MOMENTUM, ELEMENTWISE),
        "signum_vote": Entry(
            *_MOMENTUM,
            Floor("the momentum's arrays and the packed signs written and read", payload_bits=1),
        ),
        "msvag": _ADAM_ENTRY,
        "svag": Entry(("grad", "grad_variance", "param"), ("param",), ELEMENTWISE),
        "m_ssd": Entry(*_MOMENTUM, ELEMENTWISE),
        "shared_seed_spsa": _spsa(),
        "shared_seed_spsa_log8_stochastic": _spsa(),
    }
)


def check_entries(row_names: Iterable[str], entries: Mapping[str, Entry] = ENTRIES) -> None:
    """Raises ``LookupError`` unless the rows and the entries name the same set."""
    names = list(row_names)
    missing = sorted(set(names) - set(entries))
    stale = sorted(set(entries) - set(names))
    if missing or stale:
        raise LookupError(
            "benchmarks/rows.py must have one entry per registry row: "
            f"rows without an entry: {missing}; entries without a row: {stale}. Declare the "
            "row's reads, writes and floor there (see docs/benchmarks.md, 'Own floors')."
        )


def state_names(entry: Entry) -> set[str]:
    """The distinct state arrays named by an entry (``grads[slot]`` is one of ``grads[i]``)."""
    return {
        x
        for x in (*entry.reads, *entry.writes)
        if x not in ("grad", "param", "grad_variance") and "[slot]" not in x
    }
