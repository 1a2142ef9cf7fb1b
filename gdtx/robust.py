"""Robust aggregation against Byzantine devices: NNM, median, trimmed mean, Krum, clipping.

The family's contract. Each of the ``n`` devices on ``axis_name`` holds its own
gradient ``x_i``; up to ``f = num_byzantine`` of them may send anything. A
*rule* (a GAR, "gradient aggregation rule") maps the ``n`` vectors to one
vector that stays close to the mean of the honest ones when ``f < n/2``:
:func:`robust_mean` all-gathers the ``x_i`` over the axis (``(n - 1)`` times a
gradient received per device per step, in the gradients' dtype) and applies the
same rule on every device, so the result is replicated and ``out_specs=P()``
type-checks under ``jax.shard_map``.

Conventions (those of the official code of Farhadkhani et al., LPD-EPFL
``robust-collaborative-learning``): a vector is the **whole** gradient, all
leaves flattened together; distances are Euclidean over all leaves, never per
leaf; ties in a sort keep the device order (stable sort) and ``argmin`` takes
the lowest index. A non-finite distance counts as ``+inf``, so a device that
sends NaN is the farthest from everybody. Arithmetic runs in at least float32;
updates come back in the gradients' dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gdtx._core import dtypes, validation
from gdtx._core.collectives import (
    all_gather_replicated,
    as_per_device,
    axis_index,
    bound_axis_size,
    check_axis_name,
    check_per_device,
    sharded_like,
    unsharded,
)
from gdtx.distributed import record_exchange

_OWNER = "gdtx.robust_mean"
RULES = ("mean", "median", "trimmed_mean", "krum", "multi_krum", "centered_clipping", "nnm")
_SECOND_RULES = tuple(rule for rule in RULES if rule != "nnm")


# --- rules on a stack: a list of leaves, each with a leading axis of the n devices ---------


def _row(x: jax.Array, i: jax.Array) -> jax.Array:
    return jax.lax.dynamic_index_in_dim(x, i, axis=0, keepdims=True)


def _squared_distances(xs: list[jax.Array]) -> jax.Array:
    """``D[i, j] = sum over leaves and coordinates of (x_i - x_j)^2``; non-finite -> +inf.

    Row by row (``lax.map``): memory ``n`` vectors, not ``n^2``; no Gram-matrix
    trick (its cancellation loses the small distances in float32).
    """
    n = xs[0].shape[0]

    def row(i):
        return sum(jnp.sum(jnp.reshape((x - _row(x, i)) ** 2, (n, -1)), axis=1) for x in xs)

    d = jax.lax.map(row, jnp.arange(n))
    return jnp.where(jnp.isfinite(d), d, jnp.inf)


def _broadcast_rows(w: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.reshape(w, w.shape + (1,) * (x.ndim - 1))


def _mean(xs, f, options, prev):
    del f, options, prev
    return [jnp.mean(x, axis=0) for x in xs]


def _median(xs, f, options, prev):
    del f, options, prev
    return [jnp.median(x, axis=0) for x in xs]


def _trimmed_mean(xs, f, options, prev):
    del options, prev
    n = xs[0].shape[0]
    return [jnp.mean(jnp.sort(x, axis=0)[f : n - f], axis=0) for x in xs]


def _krum_scores(xs, f, squared):
    n = xs[0].shape[0]
    d = _squared_distances(xs)
    if not squared:
        d = jnp.sqrt(d)
    d = jnp.where(jnp.eye(n, dtype=bool), jnp.inf, d)
    k = max(n - f - 1, 0)
    return jnp.sum(jnp.sort(d, axis=1)[:, :k], axis=1)


def _krum(xs, f, options, prev):
    del prev
    best = jnp.argmin(_krum_scores(xs, f, options["squared"]))
    return [_row(x, best)[0] for x in xs]


def _multi_krum(xs, f, options, prev):
    del prev
    n = xs[0].shape[0]
    m = n - f if options["num_selected"] is None else min(options["num_selected"], n)
    chosen = jnp.argsort(_krum_scores(xs, f, options["squared"]), stable=True)[:m]
    return [jnp.mean(x[chosen], axis=0) for x in xs]


def _distances_to(xs, v):
    """``||x_i - v||`` over all leaves, one per device.

    Squares ``v - x``, not the move's ``x - v``: one shared ``x - v`` was written
    to a leaf-sized temporary and read back by both the norm and the move (two
    passes more per iteration); as two expressions each fuses into its own loop.
    """
    n = xs[0].shape[0]
    return jnp.sqrt(
        sum(
            jnp.sum(jnp.reshape((vi[None] - x) ** 2, (n, -1)), axis=1)
            for x, vi in zip(xs, v, strict=True)
        )
    )


def _centered_clipping(xs, f, options, prev):
    del f
    tau = options["tau"]
    v = list(prev)
    for _ in range(options["iterations"]):
        norm = _distances_to(xs, v)
        diffs = [x - vi[None] for x, vi in zip(xs, v, strict=True)]
        finite = jnp.isfinite(norm)
        scale = jnp.where(norm > tau, tau / jnp.where(norm > 0, norm, 1.0), 1.0)
        v = [
            vi
            + jnp.mean(
                jnp.where(_broadcast_rows(finite, d), d * _broadcast_rows(scale, d), 0.0), axis=0
            )
            for vi, d in zip(v, diffs, strict=True)
        ]
    return v


def _nnm(xs, f, options, prev):
    """Nearest-neighbour mixing: ``x_i <- mean of the n - f vectors nearest x_i``, then ``then``."""
    n = xs[0].shape[0]
    nearest = jnp.argsort(_squared_distances(xs), axis=1, stable=True)[:, : n - f]
    mixed = [jnp.mean(x[nearest], axis=1) for x in xs]
    return _APPLY[options["then"]](mixed, f, options, prev)


_APPLY = {
    "mean": _mean,
    "median": _median,
    "trimmed_mean": _trimmed_mean,
    "krum": _krum,
    "multi_krum": _multi_krum,
    "centered_clipping": _centered_clipping,
    "nnm": _nnm,
}


# --- the transformation --------------------------------------------------------------------


class RobustMeanState(NamedTuple):
    """State of :func:`robust_mean`.

    Attributes:
      count: number of updates so far, shape ``()``, int32 (saturating).
      prev: the last aggregate, shaped like the params (zeros at ``init``), the
        same on every device: the centre ``v_0`` of centered clipping. None for
        the rules that do not use it.
    """

    count: jax.Array
    prev: Any


def _bound_honest_majority(owner, axis_name, f):
    """The devices ``n`` on ``axis_name``; refuses ``f >= n/2`` (n is known only when traced)."""
    n = bound_axis_size(owner, axis_name)
    if 2 * f >= n:
        raise ValueError(
            f"{owner}: `num_byzantine` must be < n/2 for the n = {n} devices of "
            f"axis_name={axis_name!r} (a majority must be honest), got {f}."
        )
    return n


def _rule_options(owner, then, num_selected, squared, tau, iterations, *, scalar_tau):
    """Validates the options of the rules (``then`` is checked by the caller); returns them.

    ``scalar_tau``: :func:`robust_mean` also refuses a non-scalar ``tau``.
    """
    if num_selected is not None:
        num_selected = validation.check_static_integer(owner, "num_selected", num_selected, 1)
    validation.check_flags(owner, squared=squared)
    validation.check_positive(owner, "tau", tau)
    if scalar_tau:
        validation.check_scalar(owner, "tau", tau)
    iterations = validation.check_static_integer(owner, "iterations", iterations, 1)
    return {
        "then": then,
        "num_selected": num_selected,
        "squared": bool(squared),
        "tau": tau,
        "iterations": iterations,
    }


def _gather_stacks(owner, axis_name, leaves, n):
    """Every device's leaves, all-gathered (declared as exchanges) in the compute dtype."""
    stacks = []
    for g in leaves:
        record_exchange(owner, axis_name, "all-gather", g.dtype, g.size * g.dtype.itemsize, n)
        gathered = all_gather_replicated(unsharded(g), axis_name)
        stacks.append(gathered.astype(dtypes.compute_dtype(g)))
    return stacks


def _previous_aggregate(prev, stacks):
    """The carried last aggregate (centered clipping's ``v_0``), one leaf per stack."""
    return [
        unsharded(p).astype(s.dtype) for p, s in zip(jax.tree.leaves(prev), stacks, strict=True)
    ]


def _carried_aggregate(out, treedef, prev):
    """This step's aggregate as the next ``prev``: its dtypes and sharding."""
    return jax.tree.map(
        lambda o, p: sharded_like(o.astype(p.dtype), p), jax.tree.unflatten(treedef, out), prev
    )


def robust_mean(
    rule: str,
    *,
    num_byzantine: int,
    axis_name: str | Sequence[str],
    then: str = "trimmed_mean",
    num_selected: int | None = None,
    squared: bool = True,
    tau: float = 1.0,
    iterations: int = 3,
) -> optax.GradientTransformationExtraArgs:
    """A Byzantine-robust replacement of the data-parallel mean: all-gather, then a rule.

    Device ``i`` of ``n`` on ``axis_name`` holds its gradient ``x_i`` (a whole
    pytree, one vector); at most ``f = num_byzantine < n/2`` devices may send
    anything. Every device all-gathers ``x_1 .. x_n`` and computes the same
    ``u = R(x_1, .., x_n)``, with distances
    ``d_{ij} = ||x_i - x_j||_2`` over all leaves together:

    - ``"mean"``: ``(1/n) sum_i x_i`` (not robust: the baseline);
    - ``"median"``: the coordinate-wise median (even ``n``: the mean of the
      two middle values);
    - ``"trimmed_mean"``: per coordinate, drop the ``f`` smallest and ``f``
      largest values and average the ``n - 2f`` others;
    - ``"krum"`` (Blanchard et al.): ``x_{k*}`` with
      ``k* = argmin_k sum_{j in N_k} d_{kj}^2``, ``N_k`` the ``n - f - 1``
      nearest others of ``x_k`` (``squared=False``: plain distances, as LPD's
      code); ``"multi_krum"``: the mean of the ``num_selected`` (default
      ``n - f``) vectors of lowest score;
    - ``"centered_clipping"`` (Karimireddy et al.): from ``v_0 = `` the last
      aggregate (zeros at the first step), ``iterations`` times

      .. math::

        v \\leftarrow v + \\frac{1}{n} \\sum_i (x_i - v)
        \\min\\Bigl(1, \\frac{\\tau}{\\lVert x_i - v \\rVert}\\Bigr),

      a non-finite ``x_i`` contributing zero;
    - ``"nnm"`` (nearest-neighbour mixing, Farhadkhani et al.): every vector is
      replaced by the mean of the ``n - f`` vectors nearest to it (itself
      included),

      .. math::

        y_i = \\frac{1}{n - f} \\sum_{j \\in \\mathcal{N}_i} x_j, \\qquad
        u = R_{\\text{then}}(y_1, \\dots, y_n),

      then the rule ``then`` is applied to the ``y_i`` with the same ``f``. With
      ``f = 0`` every ``y_i`` is the mean, so NNM is the mean for any ``then``.
      NNM makes any of these rules reach the optimal breakdown ``f < n/2``
      with an error of the order of ``f/n``.

    On ``n`` devices ``f >= n/2`` raises a ``ValueError`` when ``update`` is
    traced (the number of devices is known only then). Each device sends its
    whole gradient, ``(n - 1)`` times a gradient received per device per step
    (declared to :func:`gdtx.distributed.recording_exchanges`, so
    :func:`gdtx.data_parallel_step` reports the bytes and gives the rule each
    device's own gradient). Krum and NNM hold the ``n x n`` distances and NNM
    ``n (n - f)`` vectors at once.

    ``init`` refuses integer and complex parameters (``TypeError``); with
    ``params`` given, ``update`` checks that the gradients have their shapes.

    .. warning::
      LPD's code runs with Python's ``-OO``, which skips its checks, and its
      Krum sums plain (not squared) distances; gdtx checks ``f < n/2`` and
      defaults to the squared distances of the Krum paper. LPD's MoNNA is a
      peer-to-peer algorithm where each device keeps its own model and mixes
      models; ``robust_mean`` is the parameter-server form (every device
      applies the same aggregate of gradients), with NNM as a pre-aggregation.

    Args:
      rule: one of ``"mean"``, ``"median"``, ``"trimmed_mean"``, ``"krum"``,
        ``"multi_krum"``, ``"centered_clipping"``, ``"nnm"``.
      num_byzantine: ``f``, the number of devices that may be Byzantine, an
        integer >= 0 and < n/2 (checked when traced).
      axis_name: the bound mesh axis (or tuple of axes) of the devices.
      then: with ``rule="nnm"``, the rule applied after the mixing (any rule
        but ``"nnm"``); ignored otherwise.
      num_selected: with ``"multi_krum"`` (and ``then="multi_krum"``), how many
        vectors to average, an integer >= 1, or None for ``n - f``.
      squared: Krum's scores sum squared distances (True, the paper) or plain
        ones (False, LPD's code).
      tau: the clipping radius of ``"centered_clipping"``, a real number > 0.
      iterations: the clipping iterations of ``"centered_clipping"``, an
        integer >= 1.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state
      :class:`RobustMeanState`, to be placed before the optimizer.

    Examples:
      Five devices under ``jax.vmap``: four honest near ``(1, 1)``, one sending
      ``(1000, -1000)``. The mean is ruined; NNM followed by the trimmed mean
      is not, and every device gets the same update:

      >>> import jax, jax.numpy as jnp
      >>> from gdtx.robust import robust_mean
      >>> grads = jnp.array([[1.0, 1.1], [0.9, 1.0], [1.1, 0.9], [1.0, 1.0], [1e3, -1e3]])
      >>> def run(tx):
      ...     state = tx.init(grads[0])
      ...     return jax.vmap(lambda g: tx.update(g, state)[0], axis_name="d")(grads)
      >>> print(run(robust_mean("mean", num_byzantine=1, axis_name="d"))[0])
      [ 200.8 -199.2]
      >>> robust = run(robust_mean("nnm", num_byzantine=1, axis_name="d"))
      >>> print(jnp.round(robust[0], 3), bool((robust == robust[:1]).all()))
      [1. 1.] True

    References:
      Farhadkhani, Guerraoui, Gupta, Hoang, Pinot, Stephan, `Robust
      Collaborative Learning with Linear Gradient Overhead
      <https://arxiv.org/abs/2209.10931>`_, ICML 2023 (MoNNA, nearest-neighbour
      mixing; code: https://github.com/LPD-EPFL/robust-collaborative-learning).

      Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan, `Fixing by
      Mixing: A Recipe for Optimal Byzantine ML under Heterogeneity
      <https://arxiv.org/abs/2302.01772>`_, AISTATS 2023 (NNM before a rule).

      Blanchard, El Mhamdi, Guerraoui, Stainer, `Machine Learning with
      Adversaries: Byzantine Tolerant Gradient Descent
      <https://papers.nips.cc/paper/6617-machine-learning-with-adversaries-byzantine-tolerant-gradient-descent>`_,
      NeurIPS 2017 (Krum, Multi-Krum).

      Yin, Chen, Ramchandran, Bartlett, `Byzantine-Robust Distributed
      Learning: Towards Optimal Statistical Rates
      <https://arxiv.org/abs/1803.01498>`_, ICML 2018 (median, trimmed mean).

      Karimireddy, He, Jaggi, `Learning from History for Byzantine Robust
      Optimization <https://arxiv.org/abs/2012.10333>`_, ICML 2021 (centered
      clipping).
    """
    owner = _OWNER
    validation.check_choice(owner, "rule", rule, RULES)
    validation.check_choice(owner, "then", then, _SECOND_RULES)
    f = validation.check_static_integer(owner, "num_byzantine", num_byzantine, 0)
    check_axis_name(owner, axis_name)
    options = _rule_options(owner, then, num_selected, squared, tau, iterations, scalar_tau=True)
    uses_prev = "centered_clipping" in (rule, then if rule == "nnm" else None)

    def init_fn(params):
        prev = dtypes.zeros_like_params(params, None) if uses_prev else None
        return RobustMeanState(count=jnp.zeros([], jnp.int32), prev=prev)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        validation.check_like_params(owner, updates, params)
        n = _bound_honest_majority(owner, axis_name, f)
        check_per_device(owner, updates, axis_name)
        leaves, treedef = jax.tree.flatten(updates)
        count = optax.safe_increment(state.count)
        if not leaves:
            return updates, RobustMeanState(count=count, prev=state.prev)
        stacks = _gather_stacks(owner, axis_name, leaves, n)
        prev = _previous_aggregate(state.prev, stacks) if uses_prev else None
        out = _APPLY[rule](stacks, f, options, prev)
        new = [sharded_like(o.astype(g.dtype), g) for o, g in zip(out, leaves, strict=True)]
        new_prev = _carried_aggregate(out, treedef, state.prev) if uses_prev else None
        return jax.tree.unflatten(treedef, new), RobustMeanState(count=count, prev=new_prev)

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return validation.checking_params(tx, owner, allow_complex=False)


# --- MoNNA: per-device models, worker momentum, nearest-neighbour averaging of models ------

_MONNA = "gdtx.monna"
MONNA_RULES = ("nna", *RULES)


class MonnaState(NamedTuple):
    """State of :func:`monna`.

    Attributes:
      count: number of updates so far, shape ``()``, int32 (saturating); the
        schedule's step. Replicated.
      mu: the worker momentum ``m_i``, per device: each leaf has a leading
        device dimension (length one inside ``jax.shard_map``, ``n`` outside).

    Class attributes read by builders: ``per_device_fields = ("mu",)`` (shard
    ``mu`` with :func:`gdtx.per_device_specs`) and ``per_device_params = True``:
    MoNNA's **parameters** differ between devices too, so a builder carries
    them like per-device state (leading axis ``n`` outside, ``P(axis)``,
    ``theta[0]`` on entry of the per-device step and ``theta[None]`` on exit).
    """

    count: jax.Array
    mu: Any

    per_device_fields = ("mu",)
    per_device_params = True


def _nna(xs, f, own):
    """Mean of the ``n - f`` vectors nearest ``x_own`` (itself included); ties: lower index."""
    n = xs[0].shape[0]
    d = sum(jnp.sum(jnp.reshape((x - _row(x, own)) ** 2, (n, -1)), axis=1) for x in xs)
    d = jnp.where(jnp.isfinite(d), d, jnp.inf)
    nearest = jnp.argsort(d, stable=True)[: n - f]
    return [jnp.mean(x[nearest], axis=0) for x in xs]


def _monna_needs_params(owner: str) -> ValueError:
    return ValueError(
        f"{owner}: `update` needs `params` (each device's own model theta_i); "
        "call tx.update(grads, state, params)."
    )


def _half_step(owner, axis_name, n, beta, delta, lr, g, p, m):
    """One leaf of MoNNA's local step: the new momentum and the all-gathered half-step models.

    ``m_i = beta m_i + (1 - delta) g_i`` and ``x_i = theta_i - lr m_i`` in the
    parameter's compute dtype; the momentum goes back per device in its dtype.
    """
    ct = dtypes.compute_dtype(p)
    mu_i = beta * m[0].astype(ct) + (1.0 - delta) * g.astype(ct)
    new_mu = _as_per_device_leaf(mu_i.astype(m.dtype), axis_name, init=False)
    x = p.astype(ct) - lr * mu_i
    record_exchange(owner, axis_name, "all-gather", x.dtype, x.size * x.dtype.itemsize, n)
    return new_mu, all_gather_replicated(x, axis_name)


def _mix_models(rule, stacks, f, own, options):
    """Device ``own``'s new model: NNA of the half-step models, or a robust_mean rule of them."""
    if rule == "nna":
        return _nna(stacks, f, own)
    prev = [_row(s, own)[0] for s in stacks]  # CC's v_0: the own half-step model
    return _APPLY[rule](stacks, f, options, prev)


def monna(
    learning_rate: float | optax.Schedule,
    beta: float = 0.99,
    *,
    num_byzantine: int,
    axis_name: str | Sequence[str],
    rule: str = "nna",
    dampening: float | None = None,
    then: str = "trimmed_mean",
    num_selected: int | None = None,
    squared: bool = True,
    tau: float = 2.0,
    iterations: int = 3,
) -> optax.GradientTransformationExtraArgs:
    """MoNNA: worker momentum, then each device averages the models nearest its own.

    Device ``i`` of ``n`` on ``axis_name`` keeps its **own** parameters
    ``theta_i`` and momentum ``m_i``; at most ``f = num_byzantine < n/2``
    devices may send anything. One step, with ``g_i`` the device's gradient at
    ``theta_i``, ``gamma_t = learning_rate(count)`` and ``delta = dampening``:

    .. math::

      m_i \\leftarrow \\beta m_i + (1 - \\delta) g_i, \\qquad
      x_i = \\theta_i - \\gamma_t m_i, \\qquad
      \\theta_i \\leftarrow \\frac{1}{n - f} \\sum_{j \\in \\mathcal{N}_i} x_j,

    ``N_i`` the ``n - f`` half-step models nearest ``x_i`` (itself included;
    Euclidean over all leaves; ties keep the device order; a non-finite model
    is the farthest). The update returned is ``u_i = theta_i^new - theta_i``,
    different on every device (apply it with ``optax.apply_updates``). With
    ``f = 0`` every device gets the mean of the half-step models (exact
    consensus); a Byzantine model far from the honest ones is never averaged.

    ``rule`` other than ``"nna"`` puts a :func:`robust_mean` rule in the mixing
    slot instead (decentralised SGD with robust mixing of models; the result is
    then the same on every device; ``"centered_clipping"`` starts from the
    device's own half-step model, as LPD's peer-to-peer code).

    Each device all-gathers the half-step models in float32 (at least):
    ``(n - 1)`` models received per device per step, declared to
    :func:`gdtx.distributed.recording_exchanges`. ``f >= n/2`` raises a
    ``ValueError`` when ``update`` is traced.

    Per-device parameters: under ``jax.shard_map`` pass ``params`` with a
    leading device axis and ``in_specs=P(axis)`` and call ``update`` on
    ``theta[0]``; :class:`MonnaState` declares ``per_device_params = True`` and
    ``per_device_fields = ("mu",)`` for builders.

    .. warning::
      LPD's simulation gives each honest worker its own model, ``n - 2f - 1``
      random other honest ones and the ``f`` Byzantine ones (``n - f``
      vectors) and averages the ``n - 2f`` nearest; here every device receives
      all ``n`` and averages ``n - f``. The momentum starts at zero with no bias
      correction (as LPD): with ``beta = 0.99`` the first steps move by 1% of a
      gradient step.

    Args:
      learning_rate: ``gamma_t``, a real number > 0 or a schedule of the step
        count (LPD: ``0.75 / (t // 50 + 1)``).
      beta: the momentum, in [0, 1).
      num_byzantine: ``f``, an integer >= 0 and < n/2 (checked when traced).
      axis_name: the bound mesh axis (or tuple of axes) of the devices.
      rule: ``"nna"`` (MoNNA), or a :func:`robust_mean` rule applied to the
        gathered half-step models.
      dampening: ``delta`` in [0, 1), or None for ``delta = beta`` (LPD's runs).
      then: as in :func:`robust_mean`, for ``rule="nnm"``.
      num_selected: as in :func:`robust_mean`, for ``"multi_krum"``.
      squared: as in :func:`robust_mean`, for the Krum rules.
      tau: as in :func:`robust_mean`, for ``"centered_clipping"`` (default
        LPD's 2).
      iterations: as in :func:`robust_mean`, for ``"centered_clipping"``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state
      :class:`MonnaState` whose ``update`` needs ``params``.

    Examples:
      Five devices under ``jax.vmap`` with ``beta = 0`` and ``f = 1``: device 4
      holds a model far away. The four honest devices agree on the mean of the
      honest half-step models; the far one is dropped:

      >>> import jax, jax.numpy as jnp
      >>> from gdtx.robust import monna
      >>> theta = jnp.array([[0.0], [1.0], [2.0], [3.0], [100.0]])
      >>> grads = jnp.zeros_like(theta)
      >>> tx = monna(0.1, 0.0, num_byzantine=1, axis_name="d", dampening=0.0)
      >>> def step(p, g):
      ...     state = tx.init(p)
      ...     return tx.update(g, state, p)[0]
      >>> new = theta + jax.vmap(step, axis_name="d")(theta, grads)
      >>> print(new[:4, 0])
      [1.5 1.5 1.5 1.5]

    References:
      Farhadkhani, Guerraoui, Gupta, Hoang, Pinot, Stephan, `Robust
      Collaborative Learning with Linear Gradient Overhead
      <https://arxiv.org/abs/2209.10931>`_, ICML 2023 (code:
      https://github.com/LPD-EPFL/robust-collaborative-learning,
      ``peerToPeer.py``, ``aggregators/cva.py``).
    """
    owner = _MONNA
    validation.check_positive(owner, "learning_rate", learning_rate, schedule=True)
    validation.check_decay(owner, "beta", beta)
    validation.check_decay(owner, "dampening", dampening, optional=True)
    validation.check_choice(owner, "rule", rule, MONNA_RULES)
    validation.check_choice(owner, "then", then, _SECOND_RULES)
    f = validation.check_static_integer(owner, "num_byzantine", num_byzantine, 0)
    check_axis_name(owner, axis_name)
    options = _rule_options(owner, then, num_selected, squared, tau, iterations, scalar_tau=False)
    delta = beta if dampening is None else dampening

    def init_fn(params):
        mu = dtypes.zeros_like_params(params, None)
        mu = jax.tree.map(lambda z: _as_per_device_leaf(z, axis_name, init=True), mu)
        return MonnaState(count=jnp.zeros([], jnp.int32), mu=mu)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise _monna_needs_params(owner)
        validation.check_like_params(owner, updates, params)
        n = _bound_honest_majority(owner, axis_name, f)
        check_per_device(owner, updates, axis_name)
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        g_leaves, treedef = jax.tree.flatten(updates)
        p_leaves = treedef.flatten_up_to(params)
        m_leaves = treedef.flatten_up_to(state.mu)
        count = optax.safe_increment(state.count)
        if not g_leaves:
            return updates, MonnaState(count=count, mu=state.mu)
        new_mu, stacks = [], []
        for g, p, m in zip(g_leaves, p_leaves, m_leaves, strict=True):
            mu_i, stack = _half_step(owner, axis_name, n, beta, delta, lr, g, p, m)
            new_mu.append(mu_i)
            stacks.append(stack)
        mixed = _mix_models(rule, stacks, f, axis_index(axis_name), options)
        out = [
            (mx - p.astype(mx.dtype)).astype(p.dtype) for mx, p in zip(mixed, p_leaves, strict=True)
        ]
        new_state = MonnaState(count=count, mu=jax.tree.unflatten(treedef, new_mu))
        return jax.tree.unflatten(treedef, out), new_state

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return validation.checking_params(tx, owner, allow_complex=False)


def _as_per_device_leaf(x, axis_name, *, init):
    return as_per_device(x, axis_name, init=init)
