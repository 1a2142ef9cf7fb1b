"""Sharpness-aware wrappers: SALR (sharpness-aware learning rates) and SAM / ASAM.

The family's contract. Each transformation here *wraps* an inner optax
transformation (``optax.sgd(0.1)``, ``gdtx.adabelief(1e-3)``, ...) and needs to
look at the loss around the current parameters, which it gets through a declared
extra argument that takes the parameters only and closes over the batch:

=========================  ===========================================  =======================
transformation             extra argument                               calls per ``update``
=========================  ===========================================  =======================
:func:`salr`               ``value_fn(params) -> scalar``               ``n1 + n2`` gradients,
                           (``per_example_value_fn(params) -> (B,)``    2 values (every
                           with ``per_example=True``)                   ``every`` steps)
:func:`sam`                ``grad_fn(params) -> grads``                 1 gradient
=========================  ===========================================  =======================

- The extra argument is declared (:func:`gdtx.required_extra_args`), together
  with whatever the inner transformation declares; a missing one raises a
  ``TypeError`` naming it and the transformation. Unknown extra arguments are
  ignored here and forwarded unchanged to the inner transformation, never into
  ``value_fn`` / ``grad_fn`` (forwarding them there would make an unknown
  argument an error).
- The parameters are never moved by the look-around: SALR walks on copies, SAM
  evaluates ``grad_fn`` at ``params + e`` and hands the result to the inner
  transformation together with the unperturbed ``params``.
- Branches (estimate or not, perturb or not) are selected with ``lax.cond`` /
  ``jnp.where``, never by arithmetic blending, so a NaN or inf in the branch that
  is not taken cannot leak into the result.

Flax users build ``value_fn`` / ``grad_fn`` for an NNX model with
:func:`gdtx.flax.nnx_value_fn` / :func:`gdtx.flax.nnx_grad_fn`; see
``docs/sharpness.md``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdtx._core import dtypes, extra_args, validation

_NO_PARAMS = "{owner} needs the current parameters: call `update(updates, state, params, ...)`."


def _check_inner(owner: str, inner: Any) -> optax.GradientTransformationExtraArgs:
    if not (callable(getattr(inner, "init", None)) and callable(getattr(inner, "update", None))):
        raise TypeError(f"{owner}: `inner` must be an optax transformation, got {inner!r}.")
    return optax.with_extra_args_support(inner)


def _check_flag(owner: str, name: str, value: Any) -> bool:
    """A boolean option: it selects code, so it must be a concrete bool."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{owner}: `{name}` selects code and cannot be traced; with "
            f"optax.inject_hyperparams, list it in `static_args`."
        )
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{owner}: `{name}` must be True or False, got {value!r}.")
    return bool(value)


def _is_masked(x: Any) -> bool:
    return isinstance(x, optax.MaskedNode)


def _check_not_partially_masked(owner: str, fn_name: str, params: Any) -> None:
    """Refuses a params tree in which ``optax.masked`` replaced some leaves.

    ``value_fn`` / ``grad_fn`` is the user's function of the *whole* parameter
    tree; inside ``optax.masked`` this transformation sees only the selected
    subtree (the rest are ``optax.MaskedNode``), which that function cannot take.
    """
    nodes = jax.tree.leaves(params, is_leaf=_is_masked)
    if any(_is_masked(x) for x in nodes) and any(not _is_masked(x) for x in nodes):
        raise ValueError(
            f"{owner} inside optax.masked / optax.multi_transform: `{fn_name}` takes the "
            f"whole parameter tree, but here it would receive only the selected subtree "
            f"(with optax.MaskedNode in place of the rest). Put the mask inside instead, "
            f"e.g. `{owner}(optax.masked(inner, mask), ...)` or "
            f"`{owner}(optax.multi_transform(transforms, labels), ...)`: the look-around "
            f"then uses all parameters and the inner transformation chooses which to update."
        )


def _ascent_direction(grads: Any) -> Any:
    """``jax.grad`` of a real loss, turned into the direction of steepest ascent.

    For a complex leaf ``jax.grad`` returns ``conj(dL/dz*)``-style cotangents
    (optax's convention: conjugate before ``update``); the ascent direction is
    its conjugate. Real leaves are unchanged.
    """
    return jax.tree.map(lambda g: jnp.conj(g) if jnp.iscomplexobj(g) else g, grads)


def _upcast(params: Any) -> Any:
    """Floating leaves in at least float32: a 1e-3 step is lost in bfloat16."""

    def cast(p):
        if jnp.issubdtype(p.dtype, jnp.floating):
            return p.astype(dtypes.compute_dtype(p))
        return p

    return jax.tree.map(cast, params)


def _safe_inverse(norm: jax.Array) -> jax.Array:
    # Exactly 0 for a zero vector (its unit direction is taken to be 0), exactly
    # 1/norm otherwise: no eps that would bias the closed forms.
    positive = norm > 0
    return jnp.where(positive, 1.0 / jnp.where(positive, norm, 1.0), 0.0)


def _unit_batch_gradient(value_fn: Callable[[Any], Any], params: Any) -> Any:
    grads = _ascent_direction(jax.grad(value_fn)(params))
    return optax.tree.scale(_safe_inverse(optax.tree.norm(grads)), grads)


def _mean_unit_per_example_gradient(fn: Callable[[Any], Any], params: Any) -> Any:
    jac = _ascent_direction(jax.jacrev(fn)(params))  # leaves (B, *leaf.shape)
    squares = [jnp.sum(jnp.abs(j) ** 2, axis=tuple(range(1, j.ndim))) for j in jax.tree.leaves(jac)]
    inverse = _safe_inverse(jnp.sqrt(sum(squares)))

    def mean_unit(j):
        return jnp.mean(j * inverse.reshape(inverse.shape + (1,) * (j.ndim - 1)), axis=0)

    return jax.tree.map(mean_unit, jac)


def sharpness_estimate(
    value_fn: Callable[[Any], jax.Array],
    params: optax.Params,
    *,
    ascent_steps: int = 5,
    descent_steps: int = 5,
    step_size: jax.typing.ArrayLike = 1e-3,
    per_example: bool = False,
) -> jax.Array:
    """The stochastic sharpness of SALR (the paper's Algorithm 2).

    Two copies of the parameters start at ``params``; one walks ``n_2 =
    ascent_steps`` steps up the loss, the other ``n_1 = descent_steps`` steps
    down, each step of length ``step_size`` along a unit direction:

    .. math::

      \\theta_\\pm^{(i+1)} = \\theta_\\pm^{(i)} \\pm \\gamma\\, d(\\theta_\\pm^{(i)}), \\qquad
      \\hat S = F(\\theta_+^{(n_2)}) - F(\\theta_-^{(n_1)}).

    With ``per_example=True``, ``value_fn`` returns the ``B`` per-example losses
    ``f_j``, ``F`` is their mean and ``d = (1/B) \\sum_j \\nabla f_j / \\lVert\\nabla
    f_j\\rVert`` (Algorithm 2 as typeset). Otherwise ``value_fn`` returns the batch
    loss ``F`` and ``d = \\nabla F / \\lVert\\nabla F\\rVert`` (the two agree for
    ``B = 1``). A zero gradient has direction 0, so at a stationary point the
    walk stays put. Norms are global over the parameter tree.

    Closed forms (``\\gamma`` the step): ``\\hat S = 2\\gamma\\lVert\\nabla f\\rVert`` on
    any quadratic with one step each way; ``\\hat S = 2n\\gamma|f'(x)|`` on
    ``\\tfrac12 a x^2`` with ``n`` steps each way and ``|x| \\ge n\\gamma``;
    ``\\hat S[c f] = c \\hat S[f]`` for ``c > 0``.

    Args:
      value_fn: ``params -> scalar`` batch loss, or ``params -> (B,)`` per-example
        losses when ``per_example`` is True.
      params: the point at which to measure; not modified.
      ascent_steps: ``n_2``, steps up the loss (>= 0).
      descent_steps: ``n_1``, steps down the loss (>= 0).
      step_size: ``\\gamma``, the length of every step (> 0).
      per_example: normalise each example's gradient (needs per-example losses).

    Returns:
      ``\\hat S`` as a scalar in the loss's dtype. Floating parameters are walked
      in at least float32.

    Examples:
      Away from the minimum of ``2 x^2`` the estimate measures the gradient:
      ``2 n \\gamma |f'(x)| = 2 \\cdot 5 \\cdot 0.01 \\cdot 4 = 0.4`` at ``x = 1``:

      >>> import jax.numpy as jnp, gdtx
      >>> f = lambda x: 2.0 * jnp.sum(x**2)
      >>> s = gdtx.sharpness_estimate(f, jnp.array([1.0]), step_size=0.01)
      >>> print(f"{s:.4f}")
      0.4000

    References:
      Yue, Nouiehed, Kontar, `SALR: Sharpness-aware Learning Rates for Improved
      Generalization <https://arxiv.org/abs/2011.05348>`_, 2020 (Algorithm 2).
      Official code: https://github.com/UMDataScienceLab/SALR
    """
    owner = "gdtx.sharpness_estimate"
    validation.check_integer(owner, "ascent_steps", ascent_steps, 0)
    validation.check_integer(owner, "descent_steps", descent_steps, 0)
    validation.check_positive(owner, "step_size", step_size)
    validation.check_params(owner, params, allow_complex=True)
    if _check_flag(owner, "per_example", per_example):

        def batch_value(p):
            return jnp.mean(value_fn(p))

        def direction(p):
            return _mean_unit_per_example_gradient(value_fn, p)
    else:
        batch_value = value_fn

        def direction(p):
            return _unit_batch_gradient(value_fn, p)

    start = _upcast(params)

    def walk(sign, num_steps):
        def body(_, p):
            def move(x, d):
                # The step in each leaf's own dtype keeps the loop carry's type fixed.
                return x + (sign * jnp.asarray(step_size, x.dtype)) * d.astype(x.dtype)

            return jax.tree.map(move, p, direction(p))

        return jax.lax.fori_loop(0, num_steps, body, start)

    top = walk(1.0, ascent_steps)
    bottom = walk(-1.0, descent_steps)
    return batch_value(top) - batch_value(bottom)


class SALRState(NamedTuple):
    """State of :func:`salr`.

    Attributes:
      count: number of updates so far, shape ``()``, int32 (saturating).
      multiplier: the factor applied to the inner update at the last step
        (``\\eta_k / \\eta_0``), float32 scalar: log it.
      sharpness: the last estimate ``\\hat S`` (updated every ``every`` steps),
        float32 scalar: log it.
      history: the last ``history`` finite estimates, a float32 ring buffer.
      history_count: how many estimates were ever recorded (int32, saturating);
        the first ``min(history_count, history)`` slots are valid.
      inner_state: the state of the wrapped transformation.
    """

    count: jax.Array
    multiplier: jax.Array
    sharpness: jax.Array
    history: jax.Array
    history_count: jax.Array
    inner_state: Any


def _percentile(sorted_values: jax.Array, num_valid: jax.Array, q: Any) -> jax.Array:
    """``np.percentile(values, q)`` (linear) of the first ``num_valid`` sorted values."""
    position = (
        jnp.asarray(q, sorted_values.dtype) / 100 * (num_valid - 1).astype(sorted_values.dtype)
    )
    lower = jnp.clip(jnp.floor(position).astype(jnp.int32), 0, num_valid - 1)
    upper = jnp.minimum(lower + 1, num_valid - 1)
    fraction = position - lower.astype(sorted_values.dtype)
    low, high = sorted_values[lower], sorted_values[upper]
    return low + fraction * (high - low)


def salr_multiplier(
    sharpness: jax.Array,
    history: jax.Array,
    num_valid: jax.Array,
    *,
    max_multiplier: jax.typing.ArrayLike | None = None,
    dead_band: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """SALR's learning-rate multiplier ``\\hat S_k / median(history)``, made safe.

    ``history`` is a buffer whose first ``num_valid`` entries are the recorded
    estimates, the current one included (so ``num_valid >= 1``). The rule:

    - ``m = max(\\hat S_k, 0) / median`` when the median is > 0; ``m = 1`` (the
      base rate) when the median is <= 0, ``\\hat S_k`` is not finite or the ratio
      overflows, where it means nothing. So the rate is never negative, infinite
      or NaN.
    - ``dead_band = w``: ``m = 1`` when ``\\hat S_k`` lies between the ``50 - w``
      and ``50 + w`` percentiles (linear interpolation, as ``np.percentile``) of
      the history; the authors' code uses ``w = 1``.
    - ``max_multiplier = c``: ``m = min(m, c)``, applied last; the authors' code
      uses ``c = 5`` (CIFAR) and ``4`` (ImageNet).

    Args:
      sharpness: the current estimate ``\\hat S_k``.
      history: the recorded estimates (any order), shape ``(H,)``.
      num_valid: how many leading entries of ``history`` are valid (``1..H``).
      max_multiplier: the cap ``c`` (> 0), or None for no cap.
      dead_band: the half-width ``w`` of the band in percentile points
        (in [0, 50)), or None for no band.

    Returns:
      The multiplier as a scalar in ``history``'s dtype.

    Examples:
      ``m_2 = 2 \\hat S_2 / (\\hat S_1 + \\hat S_2)``: with ``0.4`` then ``0.24``,

      >>> import jax.numpy as jnp, gdtx
      >>> history = jnp.array([0.4, 0.24, 0.0, 0.0])
      >>> print(f"{gdtx.salr_multiplier(jnp.float32(0.24), history, 2):.2f}")
      0.75

    References:
      Yue, Nouiehed, Kontar, `SALR: Sharpness-aware Learning Rates for Improved
      Generalization <https://arxiv.org/abs/2011.05348>`_, 2020.
      Official code (cap, dead band): https://github.com/UMDataScienceLab/SALR
    """
    dtype = history.dtype
    num_valid = jnp.asarray(num_valid, jnp.int32)
    valid = jnp.arange(history.shape[0]) < num_valid
    ordered = jnp.sort(jnp.where(valid, history, jnp.inf))
    s = jnp.asarray(sharpness, dtype)
    median = _percentile(ordered, num_valid, 50)
    usable = (median > 0) & jnp.isfinite(s) & jnp.isfinite(median)
    ratio = jnp.maximum(s, 0) / jnp.where(usable, median, 1)
    usable = usable & jnp.isfinite(ratio)  # a ratio that overflows means nothing either
    multiplier = jnp.where(usable, ratio, jnp.ones_like(ratio))
    if dead_band is not None:
        low = _percentile(ordered, num_valid, 50 - jnp.asarray(dead_band, dtype))
        high = _percentile(ordered, num_valid, 50 + jnp.asarray(dead_band, dtype))
        multiplier = jnp.where((s >= low) & (s <= high), jnp.ones_like(multiplier), multiplier)
    if max_multiplier is not None:
        multiplier = jnp.minimum(multiplier, jnp.asarray(max_multiplier, dtype))
    return multiplier


def _initial_salr_state(inner, params, history_length: int) -> SALRState:
    """:func:`salr`'s state before the first step: multiplier 1, an empty history."""
    return SALRState(
        count=jnp.zeros([], jnp.int32),
        multiplier=jnp.ones([], jnp.float32),
        sharpness=jnp.zeros([], jnp.float32),
        history=jnp.zeros([history_length], jnp.float32),
        history_count=jnp.zeros([], jnp.int32),
        inner_state=inner.init(params),
    )


def _check_salr_options(
    owner, ascent_steps, descent_steps, step_size, every, history, max_multiplier, dead_band
) -> int:
    """Validates :func:`salr`'s numeric options; returns the static window length."""
    validation.check_integer(owner, "ascent_steps", ascent_steps, 0)
    validation.check_integer(owner, "descent_steps", descent_steps, 0)
    validation.check_positive(owner, "step_size", step_size)
    validation.check_integer(owner, "every", every, 1)
    history_length = validation.check_static_integer(owner, "history", history, 1)
    validation.check_positive(owner, "max_multiplier", max_multiplier, optional=True)
    validation.check_interval(owner, "dead_band", dead_band, 0, 50, high_open=True, optional=True)
    return history_length


def _record(s, history_values, history_count, history_length):
    """Writes a finite estimate ``s`` into the ring buffer (a non-finite one is dropped).

    Returns the buffer, the saturating count of recorded estimates and how many
    leading slots are valid (at least 1, so the median is defined even before a
    finite estimate was recorded).
    """
    finite = jnp.isfinite(s)
    slot = jnp.mod(history_count, history_length)
    recorded = jnp.where(finite, s, history_values[slot])
    history_values = history_values.at[slot].set(recorded)
    history_count = jnp.where(finite, optax.safe_increment(history_count), history_count)
    num_valid = jnp.maximum(jnp.minimum(history_count, history_length), 1)
    return history_values, history_count, num_valid


def _estimate_and_record(value_fn, params, walk, history_length, bounds, carry):
    """The branch of a step that measures: ``(multiplier, S, history, history_count)``."""
    history_values, history_count = carry
    s = sharpness_estimate(value_fn, params, **walk).astype(jnp.float32)
    history_values, history_count, num_valid = _record(
        s, history_values, history_count, history_length
    )
    multiplier = salr_multiplier(s, history_values, num_valid, **bounds)
    return multiplier, s, history_values, history_count


def _scale_leaf(multiplier: jax.Array, u: jax.Array) -> jax.Array:
    """``multiplier * u`` in the compute dtype, back in ``u``'s dtype."""
    cdt = dtypes.compute_dtype(u, multiplier)
    return (multiplier.astype(cdt) * u.astype(cdt)).astype(u.dtype)


def _inner_only(inner, updates, state, params, extra):
    """An empty subtree: only the inner transformation runs and the count advances."""
    inner_updates, inner_state = inner.update(updates, state.inner_state, params, **extra)
    new_state = state._replace(count=optax.safe_increment(state.count), inner_state=inner_state)
    return inner_updates, new_state


def salr(
    inner: optax.GradientTransformation,
    *,
    ascent_steps: int = 5,
    descent_steps: int = 5,
    step_size: jax.typing.ArrayLike = 1e-3,
    every: int = 1,
    history: int = 256,
    max_multiplier: jax.typing.ArrayLike | None = None,
    dead_band: jax.typing.ArrayLike | None = None,
    per_example: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """Sharpness-aware learning rates (SALR) around any optax transformation.

    Every ``every`` steps, at the current parameters ``\\theta_k`` (before the
    step), SALR measures the stochastic sharpness ``\\hat S_k`` of
    :func:`sharpness_estimate`, records it in a window of the last ``history``
    estimates and scales the inner update by

    .. math::

      m_k = \\frac{\\hat S_k}{\\operatorname{median}(\\hat S_{k-H+1}, \\dots, \\hat S_k)},
      \\qquad u_k = m_k \\cdot \\operatorname{inner}(g_k),

    made safe and optionally capped or held at 1 inside a dead band as described
    in :func:`salr_multiplier`. Between estimates the last ``m_k`` is reused. For
    an inner optimizer whose update is linear in its learning rate and whose
    state does not depend on it (SGD with or without momentum, Adam, AdaBelief),
    scaling the update by ``m_k`` *is* using the learning rate ``\\eta_0 m_k``.
    (The inner state still sees the raw gradients, so ``m_k`` does not leak into
    moments.) A steep region gets a larger step than the typical one, a flat
    region a smaller one.

    ``update(grads, state, params, value_fn=...)``: ``value_fn(params) -> scalar``
    is the loss on the current batch as a function of the parameters only; with
    ``per_example=True`` pass ``per_example_value_fn(params) -> (B,)`` instead.
    Other extra arguments are forwarded to ``inner``.

    .. warning::
      Choices where the paper (Algorithm 2, the only part of its method section
      available to us) and the authors' code are silent or disagree:

      - the walk follows Algorithm 2: fresh normalised gradients, both copies from
        ``\\theta_k``, parameters untouched. The authors' code instead takes raw,
        accumulated gradient steps clamped to ``5e-4`` per coordinate, chains the
        descent after the ascent, measures after the step and does not restore the
        weights; gdtx does not reproduce that estimator.
      - by default the walk normalises the *batch* gradient (cheap: one gradient
        per step); ``per_example=True`` gives Algorithm 2 as typeset (a
        per-example Jacobian per step, ``B`` times the memory of a gradient).
      - ``step_size`` is its own constant ``\\gamma`` (the code's ``0.001``; the
        paper's box calls ``\\gamma`` "base learning rate"), and ``ascent_steps =
        descent_steps = 5`` are the code's values.
      - the median is over a window of the last ``history`` finite estimates, the
        current one included (the code keeps an unbounded list; the two agree
        while fewer than ``history`` estimates were made). A window keeps shapes
        static under ``jit`` and, unlike a streaming approximation, is exact. It
        also lets the rate recover: on a convex problem ``\\hat S`` only decreases,
        so the multiplier stays <= 1 and, with an unbounded history, ever smaller.
      - ``every = 1`` (the code uses 2), no cap and no dead band by default (the
        code: ``max_multiplier=5, dead_band=1``). ``\\hat S <= 0`` gives ``m = 0``,
        a median <= 0 or a non-finite ``\\hat S`` gives ``m = 1``; non-finite
        estimates are not recorded.

    Args:
      inner: the optax transformation whose update is rescaled, e.g.
        ``optax.sgd(0.1)`` or ``gdtx.adabelief(1e-3)``.
      ascent_steps: ``n_2``, ascent steps of the walk (>= 0; the code uses 5).
      descent_steps: ``n_1``, descent steps of the walk (>= 0; the code uses 5).
      step_size: ``\\gamma``, the length of each walk step (> 0; the code's 1e-3).
      every: estimate every ``every`` steps, starting at the first (>= 1).
      history: window length of the median (a static int >= 1; pass it in
        ``static_args`` of ``optax.inject_hyperparams``).
      max_multiplier: cap on the multiplier (> 0), or None.
      dead_band: half-width in percentile points (in [0, 50)) of the band around
        the median where the multiplier is 1, or None.
      per_example: normalise per-example gradients (needs
        ``per_example_value_fn``) instead of the batch gradient (``value_fn``).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`SALRState`
      that requires ``value_fn`` (or ``per_example_value_fn``) and whatever
      ``inner`` requires.

    Examples:
      On ``2 x^2`` from ``x = 1`` with ``\\gamma = 0.01``, ``\\hat S`` is
      ``2 \\cdot 5 \\gamma |f'(x)|`` and shrinks along the run, so the rate falls
      below the base rate: ``m_2 = 2 \\hat S_2 / (\\hat S_1 + \\hat S_2) = 0.75``.

      >>> import jax, jax.numpy as jnp, optax, gdtx
      >>> f = lambda x: 2.0 * jnp.sum(x**2)
      >>> tx = gdtx.salr(optax.sgd(0.1), step_size=0.01)
      >>> params = jnp.array([1.0])
      >>> state = tx.init(params)
      >>> for _ in range(3):
      ...     updates, state = tx.update(jax.grad(f)(params), state, params, value_fn=f)
      ...     params = optax.apply_updates(params, updates)
      ...     print(f"S {state.sharpness:.3f}  multiplier {state.multiplier:.3f}")
      S 0.400  multiplier 1.000
      S 0.240  multiplier 0.750
      S 0.168  multiplier 0.700

    References:
      Yue, Nouiehed, Kontar, `SALR: Sharpness-aware Learning Rates for Improved
      Generalization <https://arxiv.org/abs/2011.05348>`_, 2020.
      Official code (SGD only): https://github.com/UMDataScienceLab/SALR
    """
    owner = "gdtx.salr"
    inner = _check_inner(owner, inner)
    history_length = _check_salr_options(
        owner, ascent_steps, descent_steps, step_size, every, history, max_multiplier, dead_band
    )
    per_example = _check_flag(owner, "per_example", per_example)
    fn_name = "per_example_value_fn" if per_example else "value_fn"
    walk = {
        "ascent_steps": ascent_steps,
        "descent_steps": descent_steps,
        "step_size": step_size,
        "per_example": per_example,
    }
    bounds = {"max_multiplier": max_multiplier, "dead_band": dead_band}

    def init_fn(params):
        validation.check_params(owner, params, allow_complex=True)
        return _initial_salr_state(inner, params, history_length)

    def update_fn(updates, state, params=None, **extra):
        (value_fn,) = extra_args.get_required(owner, extra, [fn_name])
        if params is None:
            raise ValueError(_NO_PARAMS.format(owner=owner))
        validation.check_like_params(owner, updates, params)
        if not jax.tree.leaves(params):
            # An empty subtree (optax.masked with an all-False mask, an unused
            # optax.multi_transform label): nothing to measure, value_fn unused.
            return _inner_only(inner, updates, state, params, extra)
        _check_not_partially_masked(owner, fn_name, params)
        estimate = functools.partial(
            _estimate_and_record, value_fn, params, walk, history_length, bounds
        )

        def keep(carry):
            return (state.multiplier, state.sharpness) + carry

        due = jnp.mod(state.count, jnp.asarray(every, state.count.dtype)) == 0
        multiplier, sharpness, history_values, history_count = jax.lax.cond(
            due, estimate, keep, (state.history, state.history_count)
        )
        inner_updates, inner_state = inner.update(updates, state.inner_state, params, **extra)
        new_state = SALRState(
            count=optax.safe_increment(state.count),
            multiplier=multiplier,
            sharpness=sharpness,
            history=history_values,
            history_count=history_count,
            inner_state=inner_state,
        )
        return jax.tree.map(lambda u: _scale_leaf(multiplier, u), inner_updates), new_state

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return extra_args.declare(tx, {fn_name} | extra_args.required_extra_args(inner))


def _check_grad_fn_result(owner: str, grads: Any, updates: Any) -> None:
    """``grad_fn`` must return a gradient shaped like the one given to ``update``."""
    try:
        validation.check_like_params(owner, grads, updates)
    except ValueError as error:
        raise ValueError(
            f"{owner}: `grad_fn(params)` must return a gradient tree shaped like the "
            f"updates given to `update`. {error}"
        ) from None
    for g, u in zip(jax.tree.leaves(grads), jax.tree.leaves(updates), strict=True):
        if jnp.iscomplexobj(g) and not jnp.iscomplexobj(u):
            raise TypeError(
                f"{owner}: `grad_fn(params)` returned a complex gradient for a real one "
                f"({g.dtype} for {u.dtype}): its imaginary part would be dropped."
            )


class SAMState(NamedTuple):
    """State of :func:`sam`.

    Attributes:
      count: number of updates so far, shape ``()``, int32 (saturating).
      inner_state: the state of the wrapped transformation.
    """

    count: jax.Array
    inner_state: Any


def sam(
    inner: optax.GradientTransformation,
    rho: jax.typing.ArrayLike = 0.05,
    *,
    adaptive: bool = False,
    eps: jax.typing.ArrayLike = 1e-12,
) -> optax.GradientTransformationExtraArgs:
    """Sharpness-aware minimisation (SAM) and adaptive SAM (ASAM), in one call.

    ``update(grads, state, params, grad_fn=...)`` takes the gradient ``g`` at
    ``w = params`` and ``grad_fn(params) -> grads`` on the same batch, perturbs
    the parameters along the normalised gradient and feeds the gradient there to
    the inner transformation:

    .. math::

      e = \\rho\\, \\frac{T^2 g}{\\lVert T g\\rVert + \\epsilon}, \\qquad
      u = \\operatorname{inner}(\\nabla L(w + e)),

    with ``T = 1`` (SAM) or ``T = |w|`` element-wise (``adaptive=True``, ASAM).
    ``\\lVert\\cdot\\rVert`` is the global norm over the tree. When ``T g = 0`` or
    ``\\rho = 0`` there is no perturbation and ``grad_fn`` is not used: the inner
    transformation receives ``g`` itself (selected by ``lax.cond``).

    .. warning::
      ASAM here is the form of the widely used ``davda54/sam`` (``adaptive=True``):
      ``T = |w|`` on every parameter. The ASAM paper's official code uses
      ``T = |w| + \\eta`` (``\\eta = 0.01``) on weights and ``T = 1`` on biases,
      and its experiments use ``\\rho = 0.5`` or larger with ASAM. ``eps`` is the
      ``1e-12`` of ``davda54/sam``; the SAM paper's JAX code has none.

    Args:
      inner: the transformation that takes the perturbed gradient, e.g.
        ``optax.sgd(0.1, momentum=0.9)``.
      rho: the radius of the perturbation (>= 0).
      adaptive: ASAM's scale-invariant perturbation ``T = |w|``.
      eps: added to the norm in the denominator (>= 0).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`SAMState`
      that requires ``grad_fn`` and whatever ``inner`` requires.

    Examples:
      On ``x^2`` at ``x = 1`` with ``\\rho = 0.5``, SAM takes the gradient at
      ``x + 0.5 = 1.5``, that is ``3`` instead of ``2``:

      >>> import jax, jax.numpy as jnp, optax, gdtx
      >>> f = lambda x: jnp.sum(x**2)
      >>> tx = gdtx.sam(optax.sgd(1.0), rho=0.5)
      >>> params = jnp.array([1.0])
      >>> updates, _ = tx.update(jax.grad(f)(params), tx.init(params), params,
      ...                        grad_fn=jax.grad(f))
      >>> print(updates)
      [-3.]

    References:
      Foret et al., `Sharpness-Aware Minimization for Efficiently Improving
      Generalization <https://arxiv.org/abs/2010.01412>`_, ICLR 2021.
      Kwon et al., `ASAM: Adaptive Sharpness-Aware Minimization for
      Scale-Invariant Learning of Deep Neural Networks
      <https://arxiv.org/abs/2102.11600>`_, ICML 2021.
      Official code: https://github.com/google-research/sam,
      https://github.com/SamsungLabs/ASAM; the PyTorch form followed here:
      https://github.com/davda54/sam
    """
    owner = "gdtx.sam"
    inner = _check_inner(owner, inner)
    validation.check_non_negative(owner, "rho", rho)
    validation.check_non_negative(owner, "eps", eps)
    adaptive = _check_flag(owner, "adaptive", adaptive)

    def init_fn(params):
        validation.check_params(owner, params, allow_complex=True)
        return SAMState(count=jnp.zeros([], jnp.int32), inner_state=inner.init(params))

    def update_fn(updates, state, params=None, **extra):
        (grad_fn,) = extra_args.get_required(owner, extra, ["grad_fn"])
        if params is None:
            raise ValueError(_NO_PARAMS.format(owner=owner))
        validation.check_like_params(owner, updates, params)
        if not jax.tree.leaves(params):
            # An empty subtree (optax.masked with an all-False mask, an unused
            # optax.multi_transform label): no perturbation, grad_fn unused.
            return _inner_only(inner, updates, state, params, extra)
        _check_not_partially_masked(owner, "grad_fn", params)

        def leaf_scale(g, w):
            cdt = dtypes.compute_dtype(g, w)
            return jnp.abs(w).astype(cdt) if adaptive else jnp.ones([], cdt)

        def scale_terms():
            """``(T, T g)`` per leaf."""
            scales = jax.tree.map(leaf_scale, updates, params)
            return scales, jax.tree.map(lambda t, g: t * g.astype(t.dtype), scales, updates)

        norm = optax.tree.norm(scale_terms()[1])
        rho_ = jnp.asarray(rho, norm.dtype)
        factor = rho_ / (norm + jnp.asarray(eps, norm.dtype))
        perturb = (norm > 0) & (rho_ > 0)

        def perturbed_gradient(_):
            def shift(w, t, tg):
                e = factor.astype(tg.dtype) * t * tg
                return (w.astype(tg.dtype) + e).astype(w.dtype)

            # T and T g are recomputed from w and g here rather than passed in:
            # arrays that enter a conditional are materialised first (ASAM's |w|
            # and |w| g were two leaf-sized temporaries, written and read again).
            grads = grad_fn(jax.tree.map(shift, params, *scale_terms()))
            _check_grad_fn_result(owner, grads, updates)
            return jax.tree.map(lambda g, u: g.astype(u.dtype), grads, updates)

        def unperturbed_gradient(_):
            # `g` itself (perturb is False here), but as a select: a branch that
            # returns its operand makes XLA copy the gradient into the
            # conditional's result before it runs, on every step.
            return jax.tree.map(lambda u: jnp.where(perturb, jnp.zeros_like(u), u), updates)

        sam_grads = jax.lax.cond(perturb, perturbed_gradient, unperturbed_gradient, None)
        inner_updates, inner_state = inner.update(sam_grads, state.inner_state, params, **extra)
        new_state = SAMState(count=optax.safe_increment(state.count), inner_state=inner_state)
        return inner_updates, new_state

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return extra_args.declare(tx, {"grad_fn"} | extra_args.required_extra_args(inner))
