r"""Projection-free constrained optimisation: Frank-Wolfe and one-sample stochastic Frank-Wolfe.

The family's contract. The problem is ``min_{x ∈ K} F(x)`` for a convex compact
set ``K`` given by its **linear minimisation oracle** (LMO)

.. math::

  \operatorname{lmo}(d) = \arg\min_{v \in K} \langle v, d \rangle,

a function from a gradient-shaped tree ``d`` to a params-shaped tree ``v ∈ K``.
Each step moves towards the oracle's answer, ``x_{t+1} = x_t + η_t (v_t - x_t)``:
a convex combination, so the iterates stay in ``K`` (to rounding) as long as the
**initial parameters are in K** (not checked: make them feasible, e.g. zeros for
a ball or a vertex of the simplex) and ``η_t ∈ (0, 1]``.

- The transformations return that displacement ``η_t (v_t - x_t)``: they need
  ``params`` and must not be followed by ``optax.scale_by_learning_rate`` (the
  step size is theirs). Schedules are functions of optax's 0-based ``count``;
  the papers' ``t = count + 1``.
- The LMOs here (``lmo_*``) are small functions of a radius; the ℓ1, ℓ2 and
  simplex oracles treat the whole tree as one vector unless ``per_leaf=True``
  (the set is then the product of one set per leaf); ℓ∞ is the same either way;
  the nuclear-norm ball is per leaf (2-D leaves). Write your own for other sets:
  any ``d_tree -> v_tree`` function will do.
- Arithmetic in at least float32; updates in the gradients' dtype. Real
  floating-point parameters only.

References:
  Frank, Wolfe, An algorithm for quadratic programming, 1956. Jaggi, `Revisiting
  Frank-Wolfe: projection-free sparse convex optimization
  <https://proceedings.mlr.press/v28/jaggi13.html>`_, ICML 2013. Zhang, Shen,
  Mokhtari, Hassani, Karbasi, `One Sample Stochastic Frank-Wolfe
  <https://arxiv.org/abs/1910.04322>`_, AISTATS 2020 (no official code; community
  code: https://github.com/ZIB-IOL/FrankWolfe-book-code, LMO conventions:
  https://github.com/ZIB-IOL/StochasticFrankWolfe).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gdtx._core import dtypes, extra_args, validation

_CORRECTIONS = ("hvp", "difference")

# --- linear minimisation oracles -------------------------------------------------------------


def _check_radius(owner: str, radius: Any) -> None:
    validation.check_positive(owner, "radius", radius)


def _compute(d: Any) -> Any:
    return jax.tree.map(lambda x: x.astype(dtypes.compute_dtype(x)), d)


def _linear_index(x: jax.Array) -> jax.Array:
    """Each entry's row-major position, built from iotas (no reshape of a sharded leaf)."""
    index = jnp.zeros(x.shape, jnp.int32)
    stride = 1
    for axis in reversed(range(x.ndim)):
        index = index + stride * jax.lax.broadcasted_iota(jnp.int32, x.shape, axis)
        stride *= x.shape[axis]
    return index


def _first_argmax_mask(scores: list[jax.Array]) -> list[jax.Array]:
    """One-hot masks of the first maximal entry over the leaves, in tree order.

    Elementwise operations and reductions only, so it works on sharded leaves
    (``ravel_pytree`` would reshape them).
    """
    best = jnp.max(jnp.stack([jnp.max(s) for s in scores]))
    big = jnp.iinfo(jnp.int32).max
    firsts = [jnp.min(jnp.where(s == best, _linear_index(s), big)) for s in scores]
    masks, taken = [], jnp.array(False)
    for s, first in zip(scores, firsts, strict=True):
        here = (first < big) & ~taken
        masks.append(here & (_linear_index(s) == first))
        taken = taken | here
    return masks


def _vertex_oracle(score, value, per_leaf: bool):
    """``v = value(d)`` at the first entry maximising ``score(d)``, 0 elsewhere."""

    def lmo(d):
        d = _compute(d)
        leaves, treedef = jax.tree.flatten(d)
        if not leaves:
            return d
        groups = [[x] for x in leaves] if per_leaf else [leaves]
        out = []
        for group in groups:
            masks = _first_argmax_mask([score(x) for x in group])
            out += [
                jnp.where(m, value(x), jnp.zeros_like(x)) for m, x in zip(masks, group, strict=True)
            ]
        return jax.tree.unflatten(treedef, out)

    return lmo


def lmo_l1_ball(radius: jax.typing.ArrayLike = 1.0, *, per_leaf: bool = False):
    r"""The LMO of the ℓ1 ball ``{v : ||v||_1 <= radius}``: a signed, scaled basis vector.

    .. math::

      \operatorname{lmo}(d) = -r \operatorname{sign}(d_i) e_i, \quad i = \arg\max_j |d_j|,
      \qquad \langle \operatorname{lmo}(d), d \rangle = -r \lVert d \rVert_\infty

    (the first index on ties; ``d = 0`` gives ``0``).

    Args:
      radius: ``r`` (> 0).
      per_leaf: one ball per leaf (the product set) instead of one for the tree.

    Returns:
      ``lmo(d_tree) -> v_tree``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdtx.frank_wolfe import lmo_l1_ball
      >>> print(lmo_l1_ball(2.0)(jnp.array([0.5, -3.0, 1.0])))
      [0. 2. 0.]

    References:
      Jaggi, `Revisiting Frank-Wolfe <https://proceedings.mlr.press/v28/jaggi13.html>`_,
      ICML 2013 (Table 1).
    """
    _check_radius("gdtx.lmo_l1_ball", radius)

    return _vertex_oracle(jnp.abs, lambda d: -jnp.asarray(radius, d.dtype) * jnp.sign(d), per_leaf)


def lmo_l2_ball(radius: jax.typing.ArrayLike = 1.0, *, per_leaf: bool = False):
    r"""The LMO of the ℓ2 ball ``{v : ||v||_2 <= radius}``: ``-r d / ||d||_2``.

    ``⟨lmo(d), d⟩ = -r ||d||_2`` (Cauchy–Schwarz); ``d = 0`` gives ``0``.

    Args:
      radius: ``r`` (> 0).
      per_leaf: one ball per leaf (the product set) instead of one for the tree.

    Returns:
      ``lmo(d_tree) -> v_tree``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdtx.frank_wolfe import lmo_l2_ball
      >>> print(lmo_l2_ball(10.0)(jnp.array([3.0, -4.0])))
      [-6.  8.]

    References:
      Jaggi, `Revisiting Frank-Wolfe <https://proceedings.mlr.press/v28/jaggi13.html>`_,
      ICML 2013.
    """
    _check_radius("gdtx.lmo_l2_ball", radius)

    def scaled(leaves):
        norm = jnp.sqrt(sum(jnp.sum(x * x) for x in leaves))
        positive = norm > 0
        inverse = jnp.where(positive, 1.0 / jnp.where(positive, norm, 1.0), 0.0)
        return [-jnp.asarray(radius, x.dtype) * inverse * x for x in leaves]

    def lmo(d):
        d = _compute(d)
        leaves, treedef = jax.tree.flatten(d)
        if not leaves:
            return d
        out = [scaled([x])[0] for x in leaves] if per_leaf else scaled(leaves)
        return jax.tree.unflatten(treedef, out)

    return lmo


def lmo_linf_ball(radius: jax.typing.ArrayLike = 1.0):
    r"""The LMO of the ℓ∞ ball (box ``[-r, r]^n``): ``-r`` where ``d > 0``, ``+r`` elsewhere.

    Always a vertex, also for ``d = 0`` (``+r``, ZIB-IOL's convention);
    ``⟨lmo(d), d⟩ = -r ||d||_1``. The ball of a tree is the product of its leaves'
    balls, so there is no ``per_leaf`` switch.

    Args:
      radius: ``r`` (> 0).

    Returns:
      ``lmo(d_tree) -> v_tree``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdtx.frank_wolfe import lmo_linf_ball
      >>> print(lmo_linf_ball(0.5)(jnp.array([2.0, -1.0, 0.0])))
      [-0.5  0.5  0.5]

    References:
      Jaggi, `Revisiting Frank-Wolfe <https://proceedings.mlr.press/v28/jaggi13.html>`_,
      ICML 2013. Convention on zeros:
      https://github.com/ZIB-IOL/StochasticFrankWolfe (``LpBall``).
    """
    _check_radius("gdtx.lmo_linf_ball", radius)

    def lmo(d):
        d = _compute(d)
        return jax.tree.map(lambda x: jnp.where(x > 0, -1.0, 1.0).astype(x.dtype) * radius, d)

    return lmo


def lmo_simplex(radius: jax.typing.ArrayLike = 1.0, *, per_leaf: bool = False):
    r"""The LMO of the scaled simplex ``{v >= 0, Σ v = radius}``: ``r e_i``, ``i = argmin d``.

    ``⟨lmo(d), d⟩ = r min_i d_i`` (the first index on ties).

    Args:
      radius: ``r`` (> 0), the sum of the entries.
      per_leaf: one simplex per leaf (the product set) instead of one for the tree.

    Returns:
      ``lmo(d_tree) -> v_tree``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdtx.frank_wolfe import lmo_simplex
      >>> print(lmo_simplex()(jnp.array([0.3, -0.2, 0.1])))
      [0. 1. 0.]

    References:
      Jaggi, `Revisiting Frank-Wolfe <https://proceedings.mlr.press/v28/jaggi13.html>`_,
      ICML 2013.
    """
    _check_radius("gdtx.lmo_simplex", radius)

    return _vertex_oracle(
        jnp.negative, lambda d: jnp.full_like(d, jnp.asarray(radius, d.dtype)), per_leaf
    )


def _top_singular_pair_power(d: jax.Array, iterations: int):
    """Power iteration on ``D^T D`` from a fixed random start (deterministic)."""
    v = jax.random.normal(jax.random.PRNGKey(0), (d.shape[1],), d.dtype)

    def body(_, v):
        u = d @ v
        u = u / jnp.maximum(jnp.linalg.norm(u), jnp.finfo(d.dtype).tiny)
        v = d.T @ u
        return v / jnp.maximum(jnp.linalg.norm(v), jnp.finfo(d.dtype).tiny)

    v = jax.lax.fori_loop(0, iterations, body, v / jnp.linalg.norm(v))
    u = d @ v
    sigma = jnp.linalg.norm(u)
    return u / jnp.maximum(sigma, jnp.finfo(d.dtype).tiny), sigma, v


def lmo_nuclear_ball(radius: jax.typing.ArrayLike = 1.0, *, power_iterations: int | None = None):
    r"""The LMO of the nuclear-norm ball ``{V : ||V||_* <= radius}``, per 2-D leaf.

    .. math::

      \operatorname{lmo}(D) = -r\, u_1 v_1^\top, \qquad
      \langle \operatorname{lmo}(D), D \rangle = -r \sigma_{\max}(D),

    with ``(u_1, v_1)`` the top singular pair of ``D`` (``D = 0`` gives ``0``). A
    rank-one answer: Frank-Wolfe iterates are sums of few rank-one matrices.

    Args:
      radius: ``r`` (> 0).
      power_iterations: None: the pair from ``jnp.linalg.svd`` (exact; cost of a full
        SVD). An integer (>= 1): that many power iterations on ``DᵀD`` from a fixed
        random start (cheap for large leaves; accurate when ``σ_1/σ_2`` is not
        close to 1).

    Returns:
      ``lmo(d_tree) -> v_tree``; every leaf must be a matrix (a ``ValueError``
      names the leaf otherwise: give other leaves their own oracle, e.g. with
      ``optax.multi_transform``).

    Examples:
      The answer has nuclear norm ``r`` and attains ``-r σ_max``:

      >>> import jax.numpy as jnp
      >>> from gdtx.frank_wolfe import lmo_nuclear_ball
      >>> D = jnp.array([[3.0, 0.0], [0.0, 1.0]])
      >>> print(lmo_nuclear_ball(2.0)(D) + 0.0)  # + 0.0: no signed zeros
      [[-2.  0.]
       [ 0.  0.]]

    References:
      Jaggi, `Revisiting Frank-Wolfe <https://proceedings.mlr.press/v28/jaggi13.html>`_,
      ICML 2013 (trace-norm ball).
    """
    owner = "gdtx.lmo_nuclear_ball"
    _check_radius(owner, radius)
    validation.check_integer(owner, "power_iterations", power_iterations, 1, optional=True)

    def leaf(path, d):
        if d.ndim != 2:
            raise ValueError(
                f"{owner}: the leaf at {jax.tree_util.keystr(path) or '(the root)'} has shape "
                f"{d.shape}; the nuclear-norm ball needs matrices. Reshape it, or give the "
                f"other leaves their own oracle (e.g. with `optax.multi_transform`)."
            )
        if power_iterations is None:
            u, s, vt = jnp.linalg.svd(d, full_matrices=False)
            u1, sigma, v1 = u[:, 0], s[0], vt[0]
        else:
            u1, sigma, v1 = _top_singular_pair_power(d, power_iterations)
        v = -jnp.asarray(radius, d.dtype) * jnp.outer(u1, v1)
        return jnp.where(sigma > 0, v, jnp.zeros_like(v))

    def lmo(d):
        return jax.tree.map_with_path(leaf, _compute(d))

    return lmo


def frank_wolfe_gap(d: Any, params: Any, v: Any) -> jax.Array:
    r"""The Frank-Wolfe gap ``⟨d, x - v⟩`` with ``v = lmo(d)``.

    With ``d = ∇F(x)`` and ``F`` convex it bounds the suboptimality,
    ``F(x) - F* <= ⟨∇F(x), x - v⟩``, and it is 0 exactly at a solution.

    Args:
      d: the gradient (or gradient estimate) tree.
      params: ``x``.
      v: the oracle's answer for ``d``.

    Returns:
      A scalar (at least float32).

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdtx.frank_wolfe import frank_wolfe_gap, lmo_l2_ball
      >>> x, c = jnp.array([0.0, 0.0]), jnp.array([3.0, 4.0])
      >>> d = x - c  # gradient of |x - c|^2 / 2
      >>> print(frank_wolfe_gap(d, x, lmo_l2_ball(1.0)(d)))
      5.0

    References:
      Jaggi, `Revisiting Frank-Wolfe <https://proceedings.mlr.press/v28/jaggi13.html>`_,
      ICML 2013 (Section 2).
    """
    terms = jax.tree.map(
        lambda g, x, s: jnp.sum(g.astype(dtypes.compute_dtype(g)) * (x - s)), d, params, v
    )
    return sum(jax.tree.leaves(terms), jnp.zeros((), jnp.float32))


def hessian_vector_product(value_fn: Callable[[Any], jax.Array]):
    r"""``hvp_fn(params, tangent) = ∇²f(params) · tangent`` for ``f = value_fn``.

    Forward over reverse (``jax.jvp`` of ``jax.grad``): one gradient's cost and
    memory, never a dense Hessian. The form :func:`one_sample_frank_wolfe` takes
    as its ``hvp_fn`` extra argument.

    Args:
      value_fn: ``params -> scalar``, the loss on the current sample.

    Returns:
      ``hvp_fn(params, tangent) -> tree`` shaped like ``params``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdtx.frank_wolfe import hessian_vector_product
      >>> hvp = hessian_vector_product(lambda x: jnp.sum(x**3))  # Hessian diag(6 x)
      >>> print(hvp(jnp.array([1.0, 2.0]), jnp.array([1.0, 1.0])))
      [ 6. 12.]

    References:
      Pearlmutter, Fast exact multiplication by the Hessian, Neural Computation, 1994.
    """

    def hvp_fn(params, tangent):
        return jax.jvp(jax.grad(value_fn), (params,), (tangent,))[1]

    return hvp_fn


# --- the transformations ------------------------------------------------------------------------


def _check_lmo(owner: str, lmo: Any) -> None:
    if not callable(lmo):
        raise TypeError(
            f"{owner}: `lmo` must be a linear minimisation oracle, a function "
            f"`d_tree -> v_tree` returning argmin over the set of <v, d>, got {lmo!r} (a "
            f"{type(lmo).__name__}). Pass one of the oracles, e.g. "
            f"`gdtx.lmo_l2_ball(radius)`."
        )


def _check_unit_interval(owner: str, name: str, value: Any) -> None:
    """A step size or momentum weight: a number in (0, 1], a schedule, or None."""
    x = validation.real_values(owner, name, value, schedule=True, optional=True)
    if x is not None and not (jnp.all(x > 0) and jnp.all(x <= 1)):
        raise ValueError(
            f"{owner}: `{name}` must be in (0, 1] (or a schedule of the step count), got {value!r}."
        )


def _evaluate(value: Any, default: Callable[[jax.Array], jax.Array], count, dtype):
    if value is None:
        return default(count.astype(dtype))
    return jnp.asarray(value(count) if callable(value) else value, dtype)


def _no_params(owner: str) -> ValueError:
    return ValueError(
        f"{owner} needs the current parameters (its update is a step towards the oracle's "
        f"answer from them): call `update(updates, state, params, ...)`."
    )


def _move(lmo, d, x, eta, grads):
    """``η (lmo(d) - x)`` in the gradients' dtypes."""
    v = lmo(d)
    return jax.tree.map(
        lambda s, p, g: (eta * (s.astype(p.dtype) - p)).astype(g.dtype), v, x, grads
    )


class DeterministicFrankWolfeState(NamedTuple):
    """State of :func:`deterministic_frank_wolfe`.

    Attributes:
      count: number of updates so far, shape ``()``, int32 (saturating).
    """

    count: jax.Array


def deterministic_frank_wolfe(
    lmo: Callable[[Any], Any], *, step_size: optax.ScalarOrSchedule | None = None
) -> optax.GradientTransformationExtraArgs:
    r"""Frank-Wolfe (conditional gradient) with the full gradient.

    .. math::

      v_k = \operatorname{lmo}(\nabla F(x_k)), \qquad x_{k+1} = x_k + \gamma_k (v_k - x_k),
      \qquad \gamma_k = \frac{2}{k + 2}\ \text{by default}\ (k = \text{count} = 0, 1, \dots),

    for which ``F(x_k) - F* <= 2 L D² / (k + 2)`` on an ``L``-smooth convex ``F``
    over a set of diameter ``D`` (Jaggi 2013). The degenerate case of
    :func:`one_sample_frank_wolfe`: momentum weight 1, so ``d_t = ∇F(x_t)`` and no
    Hessian-vector product is needed.

    Args:
      lmo: the linear minimisation oracle of the set (``gdtx.lmo_*`` or your own).
      step_size: ``γ_k`` in (0, 1], a schedule of the 0-based count, or None
        (``2 / (count + 2)``).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update(grads, state,
      params)`` returns ``γ_k (v_k - x_k)``; it requires ``params``.

    Examples:
      From the centre of the unit ℓ2 ball towards ``c = (3, 4)``: the iterates stay
      in the ball and approach ``c / |c| = (0.6, 0.8)``:

      >>> import jax, jax.numpy as jnp, optax
      >>> from gdtx.frank_wolfe import deterministic_frank_wolfe, lmo_l2_ball
      >>> loss = lambda x: 0.5 * jnp.sum((x - jnp.array([3.0, 4.0])) ** 2)
      >>> tx = deterministic_frank_wolfe(lmo_l2_ball(1.0))
      >>> x = jnp.zeros(2); state = tx.init(x); update = jax.jit(tx.update)
      >>> for _ in range(200):
      ...     u, state = update(jax.grad(loss)(x), state, x)
      ...     x = optax.apply_updates(x, u)
      >>> print(jnp.round(x, 2), bool(jnp.linalg.norm(x) <= 1.0 + 1e-6))
      [0.6 0.8] True

    References:
      Frank, Wolfe, An algorithm for quadratic programming, Naval Research Logistics
      Quarterly, 1956. Jaggi, `Revisiting Frank-Wolfe: projection-free sparse convex
      optimization <https://proceedings.mlr.press/v28/jaggi13.html>`_, ICML 2013.
    """
    owner = "gdtx.deterministic_frank_wolfe"
    _check_lmo(owner, lmo)
    _check_unit_interval(owner, "step_size", step_size)

    def init_fn(params):
        del params
        return DeterministicFrankWolfeState(jnp.zeros((), jnp.int32))

    def update_fn(updates, state, params=None, **extra):
        del extra
        if params is None:
            raise _no_params(owner)
        validation.check_like_params(owner, updates, params)
        count = optax.safe_increment(state.count)
        if not jax.tree.leaves(updates):
            return updates, DeterministicFrankWolfeState(count)
        dtype = dtypes.compute_dtype(*jax.tree.leaves(updates), *jax.tree.leaves(params))
        eta = _evaluate(step_size, lambda k: 2.0 / (k + 2.0), state.count, dtype)
        x = jax.tree.map(lambda p: p.astype(dtype), params)
        d = jax.tree.map(lambda g: g.astype(dtype), updates)
        return _move(lmo, d, x, eta, updates), DeterministicFrankWolfeState(count)

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return validation.checking_params(extra_args.declare(tx, []), owner, allow_complex=False)


def _gradient_change(correction, fn, key, x, prev, g, dtype):
    """1-SFW's correction, an unbiased estimate of ``∇f(x_t; z_t) - ∇f(x_{t-1}; z_t)``.

    ``"hvp"``: ``∇²f(x_a; z_t) (x_t - x_{t-1})`` at ``x_a`` drawn uniformly on the
    segment (``fn`` is ``hvp_fn``); ``"difference"``: the two gradients (``fn``
    is ``grad_fn``, ``g`` the current one).
    """
    if correction == "hvp":
        a = jax.random.uniform(key, (), dtype)
        x_a = jax.tree.map(lambda u, v: v + a * (u - v), x, prev)
        return fn(x_a, jax.tree.map(jnp.subtract, x, prev))
    return jax.tree.map(jnp.subtract, g, fn(prev))


def _momentum_estimate(mu, delta, g, rho, first, dtype):
    """``d_t = (1 - ρ) (d_{t-1} + delta) + ρ g`` per leaf, and ``d_1 = g`` at the first step."""

    def estimate(m, dl, gg):
        d = (1 - rho) * (m.astype(dtype) + dl.astype(dtype)) + rho * gg
        return jnp.where(first, gg, d)

    return jax.tree.map(estimate, mu, delta, g)


class OneSampleFrankWolfeState(NamedTuple):
    """State of :func:`one_sample_frank_wolfe`.

    Attributes:
      count: number of updates so far, shape ``()``, int32 (saturating).
      mu: ``d_t``, the momentum estimate of the gradient, params-shaped, in
        ``mu_dtype``.
      prev_params: ``x_t`` of the last update (the next step's ``x_{t-1}``),
        params-shaped, in the parameters' dtype.
      key: the PRNG key (uint32[2]) for the interpolation point ``a ~ U[0, 1]``.
    """

    count: jax.Array
    mu: Any
    prev_params: Any
    key: jax.Array


def one_sample_frank_wolfe(
    lmo: Callable[[Any], Any],
    *,
    step_size: optax.ScalarOrSchedule | None = None,
    momentum: optax.ScalarOrSchedule | None = None,
    correction: str = "hvp",
    seed: int = 0,
    mu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""One-sample stochastic Frank-Wolfe (1-SFW) with its unbiased momentum estimator.

    For ``min_{x ∈ K} F(x) = E_z f(x; z)``, one sample ``z_t`` per step (``t =
    count + 1``): with ``a ~ U[0, 1]`` and ``x_a = a x_t + (1 - a) x_{t-1}``,

    .. math::

      d_1 &= \nabla f(x_1; z_1), \\
      d_t &= (1 - \rho_t) \bigl(d_{t-1} + \nabla^2 f(x_a; z_t) (x_t - x_{t-1})\bigr)
             + \rho_t \nabla f(x_t; z_t), \\
      x_{t+1} &= x_t + \eta_t (\operatorname{lmo}(d_t) - x_t).

    Since ``E_a[∇²f(x_a; z)](x_t - x_{t-1}) = ∇f(x_t; z) - ∇f(x_{t-1}; z)``, the
    estimate is unbiased, ``E d_t = ∇F(x_t)``, with one sample per step. Defaults
    (convex case): ``ρ_t = 1/t`` (so ``ρ_1 = 1``) and ``η_t = 1/(t + 1)``; the
    paper's non-convex setting uses ``ρ_t = (t-1)^{-2/3}`` and a constant
    ``η = T^{-2/3}`` (pass them as schedules).

    Args:
      lmo: the linear minimisation oracle of the set (``gdtx.lmo_*`` or your own).
      step_size: ``η`` in (0, 1], a schedule of the 0-based count, or None
        (``1 / (count + 2)``, i.e. ``1/(t+1)``).
      momentum: ``ρ`` in (0, 1], a schedule of the 0-based count, or None
        (``1 / (count + 1)``, i.e. ``1/t``).
      correction: ``"hvp"`` (the paper's estimator: one Hessian–vector product at
        the random ``x_a``; extra argument ``hvp_fn``) or ``"difference"``
        (``∇f(x_t; z_t) - ∇f(x_{t-1}; z_t)``: the same expectation, a second
        gradient instead of an HVP, no ``a``; extra argument ``grad_fn``). The
        two coincide for quadratic ``f(·; z)``.
      seed: seeds the PRNG key for ``a`` (an integer >= 0).
      mu_dtype: dtype of ``mu`` (``d_t``); None: the parameters' dtype.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update(grads, state,
      params, hvp_fn=...)`` (or ``grad_fn=...``) returns ``η_t (v_t - x_t)``;
      ``grads`` is ``∇f(x_t; z_t)`` on the current sample, and ``hvp_fn(point,
      tangent)`` / ``grad_fn(point)`` evaluate the **same sample** at other points
      (build ``hvp_fn`` with :func:`hessian_vector_product`). It requires
      ``params``; the initial parameters must lie in the set.

    Examples:
      With exact gradients the estimate is the gradient itself (``E = ∇F`` with no
      noise), so 1-SFW is Frank-Wolfe with the same step sizes:

      >>> import jax, jax.numpy as jnp, optax
      >>> from gdtx.frank_wolfe import (deterministic_frank_wolfe, hessian_vector_product,
      ...                               lmo_l2_ball, one_sample_frank_wolfe)
      >>> loss = lambda x: 0.5 * jnp.sum((x - jnp.array([3.0, 4.0])) ** 2)
      >>> sfw = one_sample_frank_wolfe(lmo_l2_ball(1.0))
      >>> fw = deterministic_frank_wolfe(lmo_l2_ball(1.0), step_size=lambda k: 1 / (k + 2))
      >>> x = y = jnp.zeros(2); s, t = sfw.init(x), fw.init(y)
      >>> hvp_fn = hessian_vector_product(loss)
      >>> sfw_update = jax.jit(lambda g, s, x: sfw.update(g, s, x, hvp_fn=hvp_fn))
      >>> fw_update = jax.jit(fw.update)
      >>> for _ in range(50):
      ...     u, s = sfw_update(jax.grad(loss)(x), s, x)
      ...     v, t = fw_update(jax.grad(loss)(y), t, y)
      ...     x, y = optax.apply_updates(x, u), optax.apply_updates(y, v)
      >>> d_is_grad = jnp.allclose(s.mu, jax.grad(loss)(s.prev_params))  # d_t = grad F(x_t)
      >>> print(bool(jnp.allclose(x, y, atol=1e-6)), bool(d_is_grad))
      True True

    References:
      Zhang, Shen, Mokhtari, Hassani, Karbasi, `One Sample Stochastic Frank-Wolfe
      <https://arxiv.org/abs/1910.04322>`_, AISTATS 2020 (PMLR 108:4012–4023). No
      official code; the gradient-difference form is
      ``stochastic_one_sample_frank_wolfe_step`` in
      https://github.com/ZIB-IOL/FrankWolfe-book-code.

    .. warning::
      The paper's algorithm box and theorem constants could not be read here
      (only its abstract): the estimator is the oblivious-sampling one (``z``
      independent of ``x``), with the gradient term at ``x_t``, and the default
      schedules are the ones whose rates the tests check (``docs/frank_wolfe.md``).
    """
    owner = "gdtx.one_sample_frank_wolfe"
    _check_lmo(owner, lmo)
    _check_unit_interval(owner, "step_size", step_size)
    _check_unit_interval(owner, "momentum", momentum)
    validation.check_choice(owner, "correction", correction, _CORRECTIONS)
    validation.check_integer(owner, "seed", seed, 0)
    validation.check_dtype(owner, "mu_dtype", mu_dtype)
    needs = "hvp_fn" if correction == "hvp" else "grad_fn"

    def init_fn(params):
        return OneSampleFrankWolfeState(
            count=jnp.zeros((), jnp.int32),
            mu=dtypes.zeros_like_params(params, mu_dtype),
            # A copy: the state must not alias the params (both may be donated).
            prev_params=jax.tree.map(lambda p: jnp.array(p, copy=True), params),
            key=jax.random.PRNGKey(seed),
        )

    def update_fn(updates, state, params=None, **extra):
        if params is None:
            raise _no_params(owner)
        validation.check_like_params(owner, updates, params)
        validation.check_like_state(owner, updates, state.mu)
        count = optax.safe_increment(state.count)
        if not jax.tree.leaves(updates):
            return updates, state._replace(count=count)
        (fn,) = extra_args.get_required(owner, extra, [needs])
        dtype = dtypes.compute_dtype(*jax.tree.leaves(updates), *jax.tree.leaves(params))
        x = jax.tree.map(lambda p: p.astype(dtype), params)
        prev = jax.tree.map(lambda p: p.astype(dtype), state.prev_params)
        g = jax.tree.map(lambda u: u.astype(dtype), updates)
        key, sub = jax.random.split(state.key)
        delta = _gradient_change(correction, fn, sub, x, prev, g, dtype)
        rho = _evaluate(momentum, lambda k: 1.0 / (k + 1.0), state.count, dtype)
        d = _momentum_estimate(state.mu, delta, g, rho, state.count == 0, dtype)
        eta = _evaluate(step_size, lambda k: 1.0 / (k + 2.0), state.count, dtype)
        new_updates = _move(lmo, d, x, eta, updates)
        new_state = OneSampleFrankWolfeState(
            count=count,
            mu=jax.tree.map(lambda v, m: v.astype(m.dtype), d, state.mu),
            prev_params=jax.tree.map(lambda p, q: p.astype(q.dtype), params, state.prev_params),
            key=key,
        )
        return new_updates, new_state

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return validation.checking_params(extra_args.declare(tx, [needs]), owner, allow_complex=False)
