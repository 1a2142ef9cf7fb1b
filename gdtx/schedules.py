"""Learning-rate schedules from theory: linear decay, refinement, batch-size rules.

The family's contract. Every schedule here is an ``optax.Schedule``: a pure
function of the optax ``count`` ``s = 0, 1, ...`` (the number of updates already
applied; the paper's 1-based step is ``t = s + 1``). It is jit-safe: it never
branches in Python on the step, so one trace serves every step, and it can be
passed as the ``learning_rate`` of any gdtx or optax optimizer, or to
``optax.inject_hyperparams``.

- :func:`linear_decay`: the worst-case optimal last-iterate schedule
  ``eta_t ∝ 1 - t/T`` of Defazio et al., with an optional linear warm-up.
- :func:`refined` (and the host-side :func:`refined_multipliers`): the
  *refinement* of Defazio et al. Gradient norms ``G_t`` recorded in a first run
  give the weights ``w_t`` (``G_t^{-2}`` for SGD, ``G_t^{-1}`` of the l1 norm
  for Adam-type methods) and the schedule ``eta_t ∝ w_t sum_{p > t} w_p``,
  median-smoothed and normalised to peak 1. :func:`record_grad_norm` records
  the norms during the first run at the cost of one reduction per step.
- :func:`scale_for_batch_size`: the maximal stable learning rate as a function
  of the batch size (Granziol et al.): linear for SGD, square root for
  adaptive methods.

Refinement runs on the host, in NumPy float64: its input is the log of a
finished run. The resulting multipliers are stored in the schedule as a
constant array and read by linear interpolation in the training fraction
``s / (N - 1)``, so a refined schedule recorded on ``T`` steps can drive a run
of any length ``N`` (with ``N == T`` the lookup is exact).

The official code of the refinement (``facebookresearch/adaptive_scheduling``)
is licensed CC BY-NC 4.0; gdtx re-implements it from the mathematics and checks
the result against an independent NumPy transcription of the algorithm.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdtx._core import dtypes, validation

_NORMS = ("l2", "l1")
_RULES = ("linear", "sqrt")


# --------------------------------------------------------------------------------------
# Linear decay


def linear_decay(
    peak: jax.typing.ArrayLike,
    total_steps: int,
    *,
    warmup_steps: int = 0,
) -> optax.Schedule:
    """Linear decay to zero over ``total_steps``, after an optional linear warm-up.

    At the optax ``count`` ``s`` (``W`` = ``warmup_steps``, ``N`` = ``total_steps``):

    .. math::

      \\eta(s) = \\text{peak} \\cdot \\begin{cases}
        (s + 1) / W & s < W \\\\
        \\max(0,\\ 1 - (s - W) / (N - W)) & s \\ge W.
      \\end{cases}

    Defazio et al. show that for convex Lipschitz problems with a known horizon
    the worst-case optimal schedule for the *last* iterate is ``1 - t/T``; this
    is that schedule in optax's convention.

    Off-by-one conventions (three co-exist; this function uses the first):

    - ``warmup_steps=0``: ``1 - s/N``, exactly ``optax.linear_schedule(peak, 0.0,
      N)``: ``peak`` at ``s = 0``, ``peak / N`` at the last update ``s = N - 1``,
      0 from ``s = N`` on.
    - The refinement of constant gradient norms (:func:`refined`) ends at
      exactly 0 at ``s = N - 1``: it is ``(N - 1 - s)/(N - 1)``, i.e.
      ``linear_decay(peak, N - 1)``.
    - The paper's ``1 - t/T`` with the 1-based step ``t = s + 1`` starts at
      ``1 - 1/N``; normalised to peak 1 it is the previous line.

    With a warm-up the first update already uses ``peak / W`` and the peak is
    reached at ``s = W - 1`` and again at ``s = W`` (the warm-up comparator the
    official code draws next to refined schedules, ``visual.py``). This is
    ``optax.join_schedules([optax.linear_schedule(peak / W, peak, W - 1),
    optax.linear_schedule(peak, 0.0, N - W)], [W])``. It differs from
    ``optax.warmup_cosine_decay_schedule`` (and optax's other warm-ups), which
    start at ``init_value`` (0 by default, so the first update is lost) and reach
    the peak at ``s = W``, and which decay along a cosine rather than a line.

    Args:
      peak: the largest value, >= 0 (may be traced).
      total_steps: ``N``, the number of updates of the run, an integer >= 1.
      warmup_steps: ``W``, an integer in ``[0, total_steps)``; 0 for no warm-up.

    Returns:
      An ``optax.Schedule``: a function of the step count, jit-safe.

    Examples:
      No warm-up is ``optax.linear_schedule(peak, 0, N)``; with one, the first
      step is ``peak / W`` and the decay starts from the peak at ``s = W``:

      >>> import jax.numpy as jnp, optax
      >>> from gdtx.schedules import linear_decay
      >>> s = jnp.arange(7)
      >>> print(linear_decay(1.0, 5)(s))
      [1.  0.8 0.6 0.4 0.2 0.  0. ]
      >>> bool(jnp.allclose(linear_decay(1.0, 5)(s), optax.linear_schedule(1.0, 0.0, 5)(s)))
      True
      >>> print(linear_decay(1.0, 6, warmup_steps=2)(s))
      [0.5  1.   1.   0.75 0.5  0.25 0.  ]

    References:
      Defazio, Cutkosky, Mehta and Mishchenko, `When, Why and How Much? Adaptive
      Learning Rate Scheduling by Refinement <https://arxiv.org/abs/2310.07831>`_,
      2023 (v2: "Optimal Linear Decay Learning Rate Schedules and Further
      Refinements"). Warm-up convention: ``visual.py`` of the official code,
      `facebookresearch/adaptive_scheduling
      <https://github.com/facebookresearch/adaptive_scheduling>`_ (CC BY-NC 4.0;
      gdtx re-implements from the mathematics).
    """
    owner = "gdtx.schedules.linear_decay"
    validation.check_non_negative(owner, "peak", peak)
    validation.check_integer(owner, "total_steps", total_steps, 1)
    validation.check_integer(owner, "warmup_steps", warmup_steps, 0)
    n, w = validation.concrete_value(total_steps), validation.concrete_value(warmup_steps)
    if n is not None and w is not None and w >= n:
        raise ValueError(
            f"{owner}: `warmup_steps` must be < `total_steps` ({total_steps!r}), "
            f"got {warmup_steps!r}."
        )

    def schedule(count):
        s = jnp.asarray(count).astype(jnp.result_type(float))
        warm = (s + 1) / jnp.maximum(warmup_steps, 1)
        # (N - s) / (N - W), not 1 - (s - W)/(N - W): exactly 0 from s = N on, even
        # where XLA divides by multiplying with a reciprocal
        decay = jnp.clip((total_steps - s) / (total_steps - warmup_steps), 0, 1)
        return peak * jnp.where(s < warmup_steps, warm, decay)

    return schedule


# --------------------------------------------------------------------------------------
# Recording the gradient norms of a first run


class RecordGradNormState(NamedTuple):
    """State of :func:`record_grad_norm`.

    Attributes:
      count: number of updates recorded so far, shape ``()``, int32 (saturating).
      grad_norm: the norm of the last updates received, shape ``()``, real, at
        least float32 (0 before the first update).
    """

    count: jax.Array
    grad_norm: jax.Array


def _norm_dtype(tree: Any) -> Any:
    leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, "dtype")]
    dtype = jnp.result_type(*(x.dtype for x in leaves)) if leaves else jnp.float32
    return jnp.promote_types(dtypes.real_dtype(dtype), jnp.float32)


def _global_norm(tree: Any, norm: str, dtype: Any) -> jax.Array:
    """The l2 or l1 norm of all leaves flattened into one vector, in ``dtype``."""
    total = jnp.zeros((), dtype)
    for g in jax.tree.leaves(tree):
        # The barrier keeps XLA from merging this g * g with the g * g of an Adam chained
        # after the recorder: the shared product had two users, so XLA:CPU wrote it to a
        # leaf-sized temporary before reducing it (3 passes over g instead of 1).
        g = jax.lax.optimization_barrier(g)
        wide = g.astype(jnp.promote_types(g.dtype, dtype))  # bfloat16 sums in float32
        part = dtypes.abs_sq(wide) if norm == "l2" else jnp.abs(wide)
        total = total + jnp.sum(part).astype(dtype)
    return jnp.sqrt(total) if norm == "l2" else total


def record_grad_norm(norm: str = "l2") -> optax.GradientTransformationExtraArgs:
    """Passes the updates through unchanged and keeps their global norm in its state.

    Put it first in the chain of the run whose norms :func:`refined` will use, so
    that it sees the raw gradient ``g_t`` (before clipping, momentum or Adam):

    .. math::

      G_t = \\|g_t\\|_2 = \\Big(\\sum_i |g_{t,i}|^2\\Big)^{1/2} \\quad (\\text{l2}),
      \\qquad G_t = \\|g_t\\|_1 = \\sum_i |g_{t,i}| \\quad (\\text{l1}),

    over all leaves flattened into one vector (one number per step, as in the
    official recordings). For complex gradients ``|g|^2 = Re(g conj(g))``. The
    sum runs in at least float32. Read the value after each update with
    :func:`recorded_grad_norm` (anywhere in a chain, also under
    ``optax.inject_hyperparams``) and log it; the cost is one reduction over the
    gradients per step, fused into the compiled step.

    Use ``norm="l2"`` for SGD-type runs and ``norm="l1"`` (of the gradient, not
    of the Adam update) for Adam-type runs; :func:`refined` must be given the
    same ``norm``. Inside ``optax.MultiSteps`` it records the norm of the
    averaged gradient once per real update (one number per optimizer step, which
    is what the refinement wants). With ``nnx.Optimizer``, read
    ``float(recorded_grad_norm(optimizer.opt_state))``.

    Args:
      norm: ``"l2"`` or ``"l1"``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state
      :class:`RecordGradNormState`; its updates are its inputs.

    Examples:
      The norm of the gradient ``{w: [3], b: [0, 4]}`` is 5 (l2) or 7 (l1):

      >>> import jax.numpy as jnp, optax
      >>> from gdtx.schedules import record_grad_norm, recorded_grad_norm
      >>> tx = optax.chain(record_grad_norm(), optax.sgd(0.1))
      >>> params = {"w": jnp.array([1.0]), "b": jnp.array([0.0, 2.0])}
      >>> state = tx.init(params)
      >>> grads = {"w": jnp.array([3.0]), "b": jnp.array([0.0, 4.0])}
      >>> updates, state = tx.update(grads, state, params)
      >>> print(recorded_grad_norm(state), updates["w"])
      5.0 [-0.3]
      >>> tx = record_grad_norm("l1")
      >>> print(tx.update(grads, tx.init(params))[1].grad_norm)
      7.0

    References:
      Defazio, Cutkosky, Mehta and Mishchenko, `When, Why and How Much? Adaptive
      Learning Rate Scheduling by Refinement <https://arxiv.org/abs/2310.07831>`_,
      2023; which norm for which method: ``visual.py`` of
      `facebookresearch/adaptive_scheduling
      <https://github.com/facebookresearch/adaptive_scheduling>`_.
    """
    owner = "gdtx.schedules.record_grad_norm"
    validation.check_choice(owner, "norm", norm, _NORMS)

    def init_fn(params):
        validation.check_params(owner, params, allow_complex=True)
        return RecordGradNormState(
            count=jnp.zeros([], jnp.int32), grad_norm=jnp.zeros([], _norm_dtype(params))
        )

    def update_fn(updates, state, params=None, **extra):
        del extra
        validation.check_state_type(owner, state, RecordGradNormState)
        validation.check_like_params(owner, updates, params)
        grad_norm = _global_norm(updates, norm, state.grad_norm.dtype)
        return updates, RecordGradNormState(optax.safe_increment(state.count), grad_norm)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def recorded_grad_norm(state: Any) -> jax.Array:
    """The norm that :func:`record_grad_norm` recorded at the last update.

    Finds the :class:`RecordGradNormState` anywhere in an optimizer state (a
    chain, ``optax.inject_hyperparams``, ``optax.masked``).

    Args:
      state: an optimizer state that contains exactly one
        :class:`RecordGradNormState`.

    Returns:
      The recorded norm, a real scalar array.

    Raises:
      ValueError: if ``state`` contains no :class:`RecordGradNormState`, or more
        than one.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> from gdtx.schedules import record_grad_norm, recorded_grad_norm
      >>> tx = optax.inject_hyperparams(
      ...     lambda learning_rate: optax.chain(record_grad_norm(), optax.adam(learning_rate))
      ... )(learning_rate=1e-3)
      >>> state = tx.init(jnp.zeros(2))
      >>> _, state = tx.update(jnp.array([6.0, 8.0]), state)
      >>> print(recorded_grad_norm(state))
      10.0

    References:
      Defazio, Cutkosky, Mehta and Mishchenko, `When, Why and How Much? Adaptive
      Learning Rate Scheduling by Refinement <https://arxiv.org/abs/2310.07831>`_,
      2023 (the norms its refinement reads).
    """
    owner = "gdtx.schedules.recorded_grad_norm"
    found = [
        leaf
        for leaf in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, RecordGradNormState))
        if isinstance(leaf, RecordGradNormState)
    ]
    if len(found) != 1:
        raise ValueError(
            f"{owner}: `state` must contain exactly one RecordGradNormState, found "
            f"{len(found)}; chain gdtx.schedules.record_grad_norm() once into the optimizer."
        )
    return found[0].grad_norm


# --------------------------------------------------------------------------------------
# Refinement


def _median_filter(g: np.ndarray, width: int) -> np.ndarray:
    """The official median filter of odd ``width`` (exact medians, O(T width) time).

    ``scipy.ndimage.median_filter(np.pad(g, (0, 2 width), "reflect"), size=width,
    mode="nearest")[:-2 width]``: the right end is extended by ``2 width``
    mirrored samples (the edge sample not repeated), both ends then by ``width //
    2`` copies of the edge value, and each output is the middle element of the
    sorted window centred on it.
    """
    if width == 1:
        return g.copy()
    half = width // 2
    extended = np.pad(np.pad(g, (0, 2 * width), mode="reflect"), (half, half), mode="edge")
    window = sorted(extended[:width].tolist())
    out = np.empty(len(g))
    for i in range(len(g)):
        out[i] = window[half]
        if i + 1 < len(g):
            del window[bisect.bisect_left(window, extended[i])]
            bisect.insort(window, extended[i + width])
    return out


def _odd_width(smoothing: float, n: int) -> int:
    return 2 * (int(smoothing * n) // 2) + 1


def _host_norms(owner: str, grad_norms: Any) -> np.ndarray:
    if isinstance(grad_norms, jax.core.Tracer):
        raise TypeError(
            f"{owner}: `grad_norms` must be concrete (the log of a finished run): "
            "refinement runs once, on the host, not under jit."
        )
    try:
        g = np.asarray(grad_norms, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{owner}: `grad_norms` must be a 1-D sequence of real numbers, got "
            f"{type(grad_norms).__name__}."
        ) from None
    if g.ndim != 1 or len(g) < 2:
        raise ValueError(
            f"{owner}: `grad_norms` must be 1-D with at least 2 entries, got shape {g.shape}."
        )
    bad = np.flatnonzero(~(np.isfinite(g) & (g > 0)))
    if bad.size:
        raise ValueError(
            f"{owner}: every entry of `grad_norms` must be finite and > 0 (its inverse "
            f"is a weight), got {float(g[bad[0]])!r} at index {bad[0]} ({bad.size} such entries); "
            "drop the steps that were skipped or overflowed before refining."
        )
    return g


def refined_multipliers(
    grad_norms: Any,
    *,
    smoothing: float = 0.1,
    norm: str = "l2",
    resolution: int | None = None,
) -> np.ndarray:
    """The refined schedule of Defazio et al. as an array of multipliers in [0, 1].

    From the gradient norms ``G_1..G_T`` of a previous run of the same task (one
    per update), median-smoothed into ``Ĝ``:

    .. math::

      w_t = \\hat G_t^{-2} \\ (\\text{l2, SGD}), \\qquad
      w_t = \\hat G_t^{-1} \\ (\\text{l1, Adam-type}), \\qquad
      \\eta_t = w_t \\sum_{p = t + 1}^{T} w_p, \\qquad
      m_t = \\eta_t / \\max_u \\eta_u.

    So ``m_T = 0`` (nothing follows the last step), the peak is exactly 1, and
    constant norms give exactly linear decay ``m = (T - 1 - s)/(T - 1)``
    (``s = t - 1``). The result is invariant to rescaling the norms. Decreasing
    norms can produce a warm-up; non-decreasing norms never do.

    Smoothing is the official median filter (``scipy.ndimage.median_filter``
    with the official padding: the right end is mirrored so that the last steps
    see the trend, the left end repeats the first value) of odd width
    ``2 * (int(smoothing * n) // 2) + 1``. With ``resolution=None`` the filter,
    the refinement and the output are on the recorded steps (``n = T``): the
    width is ``smoothing`` of the run. With ``resolution`` set, this is the
    official pipeline exactly: a run shorter than ``resolution`` is first
    interpolated onto ``resolution`` points, the width is ``smoothing`` of
    ``resolution`` points (for a longer run, a fraction of ``resolution``, not of
    the run), and the filtered norms are resampled onto ``resolution`` points
    before refining. The two agree for constant norms and differ by resampling
    otherwise.

    .. warning::
      What is verified is the official code (``find_schedule.py``, ``visual.py``
      at commit ``37a8a9b``); the paper's own text for the smoothing (its symbol
      and default, whether it says "10 % of the run") and the theory behind the
      l1 variant's power ``-1`` could not be read. gdtx's default ``smoothing=0.1``
      of the recorded steps is the official 10 % of 10 000 points for runs of up
      to 10 000 steps, after the official upsampling.

    Args:
      grad_norms: the recorded norms, 1-D, at least 2 entries, each finite and
        positive (a zero norm would be an infinite weight).
      smoothing: the median filter's width as a fraction of the recorded length
        (or of ``resolution``), in [0, 1]; 0 means no smoothing.
      norm: ``"l2"`` (weights ``Ĝ^-2``, for SGD, the paper's Algorithm 1) or
        ``"l1"`` (weights ``Ĝ^-1`` of l1 norms, for Adam-type methods, Algorithm 2).
        Record with :func:`record_grad_norm` of the same ``norm``.
      resolution: None, or the number of points of the official pipeline (the
        official scripts use 10 000), an integer >= 2.

    Returns:
      A float64 NumPy array of ``T`` (or ``resolution``) multipliers in [0, 1],
      maximum 1, last entry 0.

    Examples:
      Constant norms give linear decay that reaches 0 at the last step; norms
      that fall early on give an automatic warm-up:

      >>> import numpy as np
      >>> from gdtx.schedules import refined_multipliers
      >>> print(refined_multipliers(np.full(5, 3.0)))
      [1.   0.75 0.5  0.25 0.  ]
      >>> m = refined_multipliers(np.arange(1.0, 501.0) ** -0.5, smoothing=0.0)
      >>> int(np.argmax(m)), float(m.max()), float(m[-1])
      (288, 1.0, 0.0)

    References:
      Defazio, Cutkosky, Mehta and Mishchenko, `When, Why and How Much? Adaptive
      Learning Rate Scheduling by Refinement <https://arxiv.org/abs/2310.07831>`_,
      2023 (Algorithms 1 and 2). Official code:
      `facebookresearch/adaptive_scheduling
      <https://github.com/facebookresearch/adaptive_scheduling>`_
      (``find_closed_form_schedule``, and the smoothing of ``README.md`` /
      ``visual.py``); it is licensed CC BY-NC 4.0, so gdtx re-implements it from
      the mathematics and shares no code with it.
    """
    owner = "gdtx.schedules.refined_multipliers"
    return _refine(owner, grad_norms, smoothing, norm, resolution)


def _refine(owner: str, grad_norms: Any, smoothing: Any, norm: str, resolution: Any):
    g = _host_norms(owner, grad_norms)
    # the schedule is a host-side table: smoothing must be concrete
    smoothing = validation.check_static_real(owner, "smoothing", smoothing)
    validation.check_interval(owner, "smoothing", smoothing, 0, 1)
    validation.check_choice(owner, "norm", norm, _NORMS)
    if resolution is None:
        smoothed = _median_filter(g, _odd_width(float(smoothing), len(g)))
    else:
        n = validation.check_static_integer(owner, "resolution", resolution, 2)
        if len(g) < n:
            g = np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(g)), g)
        filtered = _median_filter(g, _odd_width(float(smoothing), n))
        smoothed = np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(g)), filtered)
    smoothed = smoothed / smoothed.max()  # scale-free; keeps the weights far from overflow
    weights = smoothed**-2.0 if norm == "l2" else smoothed**-1.0
    later = np.append(np.cumsum(weights[::-1])[::-1][1:], 0.0)  # sum_{p > t} w_p
    eta = weights * later
    return eta / eta.max()


def refined(
    grad_norms: Any,
    *,
    total_steps: int,
    smoothing: float = 0.1,
    norm: str = "l2",
    peak: jax.typing.ArrayLike = 1.0,
    resolution: int | None = None,
) -> optax.Schedule:
    """The refined schedule of Defazio et al. for a new run of ``total_steps`` updates.

    ``lr(s) = peak * m(s / (N - 1))`` where ``m`` are the multipliers of
    :func:`refined_multipliers` (``w_t = Ĝ_t^{-2}`` or ``Ĝ_t^{-1}``,
    ``eta_t ∝ w_t sum_{p > t} w_p``, smoothed, peak 1), placed at the training
    fractions ``linspace(0, 1, len(m))`` and read by linear interpolation. With
    ``total_steps == len(grad_norms)`` (and ``resolution=None``) the schedule is
    the multipliers themselves; steps from ``N - 1`` on get the last value, 0.
    The multipliers are computed once, on the host, and stored in the schedule
    as a constant; the schedule itself is jit-safe (one trace for every step).

    Constant norms give ``peak * (N - 1 - s)/(N - 1)``, which is
    ``linear_decay(peak, N - 1)``: linear decay that is exactly 0 at the last
    update ``s = N - 1``.

    .. warning::
      How the official experiments stretched a refined array onto the re-run is
      not in the official code; the interpolation in the training fraction is
      gdtx's choice. See :func:`refined_multipliers` for what else is unverified.

    Args:
      grad_norms: the norms recorded in the first run (see
        :func:`record_grad_norm`), 1-D, each finite and > 0.
      total_steps: ``N``, the number of updates of the new run, an integer >= 1
        (static: it is not traced).
      smoothing: the median filter's width as a fraction of the recorded
        length, in [0, 1] (see :func:`refined_multipliers`).
      norm: ``"l2"`` (SGD) or ``"l1"`` (Adam-type), as recorded.
      peak: the learning rate at the schedule's maximum, >= 0.
      resolution: None, or the official pipeline's number of points (10 000).

    Returns:
      An ``optax.Schedule``: a function of the step count, jit-safe, values in
      ``[0, peak]``.

    Examples:
      Refining a run with constant norms gives linear decay to exactly 0:

      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from gdtx.schedules import refined
      >>> schedule = jax.jit(refined(np.full(100, 0.5), total_steps=5, peak=0.1))
      >>> print(schedule(jnp.arange(6)))
      [0.1   0.075 0.05  0.025 0.    0.   ]

    References:
      Defazio, Cutkosky, Mehta and Mishchenko, `When, Why and How Much? Adaptive
      Learning Rate Scheduling by Refinement <https://arxiv.org/abs/2310.07831>`_
      (2023). Official code: `facebookresearch/adaptive_scheduling
      <https://github.com/facebookresearch/adaptive_scheduling>`_ (CC BY-NC 4.0;
      gdtx re-implements from the mathematics).
    """
    owner = "gdtx.schedules.refined"
    num_steps = validation.check_static_integer(owner, "total_steps", total_steps, 1)
    validation.check_non_negative(owner, "peak", peak)
    multipliers = _refine(owner, grad_norms, smoothing, norm, resolution)
    last = len(multipliers) - 1
    ratio = last / max(num_steps - 1, 1)  # a Python float: exactly 1.0 when N == len(table)

    def schedule(count):
        dtype = jnp.result_type(float)
        table = jnp.asarray(multipliers, dtype)
        position = jnp.clip(jnp.asarray(count).astype(dtype) * ratio, 0, last)
        i = jnp.clip(jnp.floor(position).astype(jnp.int32), 0, last - 1)
        frac = position - i
        return peak * ((1 - frac) * table[i] + frac * table[i + 1])

    return schedule


# --------------------------------------------------------------------------------------
# Batch size


def scale_for_batch_size(
    learning_rate: optax.ScalarOrSchedule,
    base_batch_size: jax.typing.ArrayLike,
    batch_size: jax.typing.ArrayLike,
    rule: str = "linear",
) -> optax.ScalarOrSchedule:
    """Rescales a learning rate tuned at ``base_batch_size`` for ``batch_size``.

    Granziol, Zohren and Roberts derive the maximal stable learning rate as a
    function of the batch size ``B`` (from the extremal eigenvalues of the batch
    Hessian): it scales linearly for SGD and as the square root for adaptive
    methods such as Adam:

    .. math::

      \\eta(B) = \\eta(B_0) \\cdot \\frac{B}{B_0} \\ (\\text{linear}), \\qquad
      \\eta(B) = \\eta(B_0) \\cdot \\sqrt{\\frac{B}{B_0}} \\ (\\text{sqrt}).

    The rules compose (``B0 -> B1 -> B2`` is ``B0 -> B2``). They hold below the
    critical batch size beyond which the maximal rate saturates; the paper's
    constants are not part of this helper.

    Every argument except ``rule`` may be traced: inside a function given to
    ``optax.inject_hyperparams``, ``batch_size`` can be a hyperparameter that
    changes from step to step without recompiling (see the example).

    Args:
      learning_rate: the rate at ``base_batch_size``: a number >= 0 or an optax
        schedule (then the result is the schedule times the factor).
      base_batch_size: ``B_0``, the batch size ``learning_rate`` was tuned for, > 0.
      batch_size: ``B``, the batch size to train with, > 0.
      rule: ``"linear"`` (SGD) or ``"sqrt"`` (Adam and other adaptive methods).

    Returns:
      The rescaled learning rate: a number (an array if any input is one) or,
      for a schedule, a schedule.

    Examples:
      Four times the batch: four times the rate for SGD, twice for Adam; the
      batch size as an injected hyperparameter:

      >>> import jax.numpy as jnp, optax
      >>> from gdtx.schedules import scale_for_batch_size
      >>> scale_for_batch_size(0.1, 128, 512), scale_for_batch_size(0.1, 128, 512, "sqrt")
      (0.4, 0.2)
      >>> def adam_for(learning_rate, batch_size):
      ...     return optax.adam(scale_for_batch_size(learning_rate, 128, batch_size, "sqrt"))
      >>> tx = optax.inject_hyperparams(adam_for)(learning_rate=1e-3, batch_size=128)
      >>> state = tx.init(jnp.zeros(1))
      >>> state.hyperparams["batch_size"] = jnp.asarray(512)  # the batch grew
      >>> print(tx.update(jnp.ones(1), state)[0])
      [-0.002]

    References:
      Granziol, Zohren and Roberts, `Learning Rates as a Function of Batch Size: A
      Random Matrix Theory Approach to Neural Network Training
      <https://arxiv.org/abs/2006.09092>`_, JMLR 23(173), 2022.
    """
    owner = "gdtx.schedules.scale_for_batch_size"
    validation.check_non_negative(owner, "learning_rate", learning_rate, schedule=True)
    validation.check_positive(owner, "base_batch_size", base_batch_size)
    validation.check_positive(owner, "batch_size", batch_size)
    validation.check_choice(owner, "rule", rule, _RULES)
    ratio = batch_size / base_batch_size
    factor = ratio if rule == "linear" else ratio**0.5
    if callable(learning_rate):
        schedule: Callable[[Any], Any] = learning_rate
        return lambda count: factor * schedule(count)
    return factor * learning_rate
