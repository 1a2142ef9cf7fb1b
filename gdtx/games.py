r"""Two-player zero-sum games: competitive gradient descent (CGD) and its adaptive form (ACGD).

The family's contract. The parameters are **one joint tree of two players**,
``{"x": x_tree, "y": y_tree}``, for the game

.. math::

  \min_x \max_y f(x, y):

``x`` (the minimiser, e.g. a GAN's generator) descends ``f`` and ``y`` (the
maximiser, e.g. its discriminator) ascends it. ``updates`` is the plain gradient
``jax.grad(f)(params)`` of that joint tree (no sign flip for the maximiser: the
transformation knows who ascends), and ``f`` itself is the declared extra
argument ``value_fn(params) -> scalar`` (:func:`gdtx.required_extra_args`), from
which the mixed second derivatives are taken:

.. math::

  B v = D^2_{xy} f\, v = \tfrac{d}{d\epsilon} \nabla_x f(x, y + \epsilon v), \qquad
  B^\top u = D^2_{yx} f\, u,

each a forward-mode derivative (``jax.linearize``, once per step) of a reverse-mode
gradient: a dense Hessian is never formed.

Each step plays the Nash equilibrium of the local bilinear game regularised by
the players' step sizes ``L_x``, ``L_y`` (scalars for CGD, RMSProp vectors for
ACGD):

.. math::

  \Delta x = -L_x \odot (g_x + B \Delta y), \qquad \Delta y = L_y \odot (g_y + B^\top \Delta x),

solved for one player by conjugate gradient (CG) on a symmetric positive-definite
system of that player's dimension, the other by one more product:

.. math::

  (I + \sqrt{L_y} B^\top L_x B \sqrt{L_y})\, w &= \sqrt{L_y} \odot (g_y - B^\top (L_x \odot g_x)),
  & \Delta y &= \sqrt{L_y} \odot w \quad\text{(maximiser's system)},\\
  (I + \sqrt{L_x} B L_y B^\top \sqrt{L_x})\, w &= \sqrt{L_x} \odot (g_x + B (L_y \odot g_y)),
  & \Delta x &= -\sqrt{L_x} \odot w \quad\text{(minimiser's system)}.

- The CG solve runs in ``lax.while_loop``: it stops when ``r.r <= max(tol * b.b,
  atol)`` (squared norms, as the official code) or after ``max_cg_iters``
  iterations (default: the solved player's dimension), and starts from the
  scaled solution of the previous step (``warm_start`` in the state; zeros at the
  first step). ``cg_iters`` in the state is the number of CG iterations of the
  last step: log it.
- The learning rates enter the linear system, so these transformations return
  the final displacement: never follow them with ``optax.scale_by_learning_rate``.
- Zero-sum games only (the general-sum form needs GMRES, the official ``GACGD``).
  Real floating-point parameters only (complex ones are refused at ``init``).
- Under ``optax.masked`` the function sees the masked tree: a step with no
  parameters at all is the identity, and a player without parameters makes ``B``
  zero (CGD is then gradient descent for the other player).

References:
  Schäfer, Anandkumar, `Competitive Gradient Descent
  <https://arxiv.org/abs/1905.12103>`_, NeurIPS 2019 (official Julia code:
  https://github.com/f-t-s/CGD). Schäfer, Zheng, Anandkumar, `Implicit competitive
  regularization in GANs <https://arxiv.org/abs/1910.05852>`_, ICML 2020 (official
  code: https://github.com/devzhk/cgds-package, PyPI ``CGDs`` 0.4.5).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gdtx._core import dtypes, extra_args, moments, validation

_PLAYERS = ("x", "y")
_SOLVES = ("alternating", "min", "max")


def _players(owner: str, tree: Any, what: str) -> tuple[Any, Any]:
    """``(tree["x"], tree["y"])``, or a TypeError that shows the expected layout."""
    if not isinstance(tree, Mapping) or set(tree.keys()) != set(_PLAYERS):
        keys = sorted(tree.keys()) if isinstance(tree, Mapping) else None
        raise TypeError(
            f"{owner}: the {what} must be the joint tree of the two players, "
            f'`{{"x": minimiser_params, "y": maximiser_params}}` (x minimises f, y maximises '
            f"it), got a {type(tree).__name__}" + (f" with keys {keys}" if keys else "") + "."
        )
    return tree["x"], tree["y"]


def _has_leaves(tree: Any) -> bool:
    return bool(jax.tree.leaves(tree))


def _dim(tree: Any) -> int:
    return sum(int(jnp.size(leaf)) for leaf in jax.tree.leaves(tree))


def _vdot(a: Any, b: Any, dtype: Any) -> jax.Array:
    products = [jnp.sum(u * v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)]
    return sum(products, jnp.zeros((), dtype))


def _cast(tree: Any, dtype: Any) -> Any:
    return jax.tree.map(lambda x: x.astype(dtype), tree)


def _axpy(alpha: jax.Array, x: Any, y: Any) -> Any:
    return jax.tree.map(lambda u, v: alpha * u + v, x, y)


def _mul(a: Any, b: Any) -> Any:
    return jax.tree.map(jnp.multiply, a, b)


def conjugate_gradient(
    matvec: Callable[[Any], Any],
    b: Any,
    x0: Any,
    *,
    tol: jax.typing.ArrayLike,
    atol: jax.typing.ArrayLike,
    max_iters: jax.typing.ArrayLike,
) -> tuple[Any, jax.Array]:
    r"""Conjugate gradient on pytrees with the stopping rule of the official ACGD code.

    Solves ``A x = b`` for a symmetric positive-definite ``A`` given as ``matvec``,
    starting from ``x0``. Stops when the *squared* residual norm satisfies
    ``r.r <= max(tol * b.b, atol)`` (checked before the first iteration and after
    each one) or after ``max_iters`` iterations, in a ``lax.while_loop``. No
    preconditioner.

    Args:
      matvec: ``v -> A v`` on trees shaped like ``b``.
      b: the right-hand side (a tree of arrays).
      x0: the initial guess, shaped like ``b`` (a warm start, or zeros).
      tol: relative tolerance on the squared residual norm (>= 0).
      atol: absolute tolerance on the squared residual norm (>= 0).
      max_iters: the iteration cap (may be traced).

    Returns:
      ``(x, iterations)``: the approximate solution and the number of iterations
      run (int32; 0 when ``x0`` already satisfies the tolerance).

    Examples:
      On a 2x2 system CG is exact after two iterations:

      >>> import jax.numpy as jnp
      >>> from gdtx.games import conjugate_gradient
      >>> A = jnp.array([[4.0, 1.0], [1.0, 3.0]])
      >>> x, its = conjugate_gradient(lambda v: A @ v, jnp.array([1.0, 2.0]), jnp.zeros(2),
      ...                             tol=1e-12, atol=0.0, max_iters=10)
      >>> print(jnp.round(x, 5), int(its))
      [0.09091 0.63636] 2

    References:
      Hestenes, Stiefel, Methods of conjugate gradients for solving linear systems,
      1952. Stopping rule: ``general_conjugate_gradient`` in
      https://github.com/devzhk/cgds-package (``src/CGDs/cgd_utils.py``).
    """
    dtype = jax.tree.leaves(b)[0].dtype if _has_leaves(b) else jnp.float32
    r = jax.tree.map(jnp.subtract, b, matvec(x0))
    rr = _vdot(r, r, dtype)
    threshold = jnp.maximum(jnp.asarray(tol, dtype) * _vdot(b, b, dtype), jnp.asarray(atol, dtype))

    def cond(carry):
        i, _, _, _, rr, _ = carry
        return (i < max_iters) & (rr > threshold)

    def body(carry):
        # The direction is updated first (p <- r + beta p, beta = 0 at the first
        # iteration), so no loop reads the old p after the one that overwrites it in
        # place: updated last, x's update still read it and XLA copied p every iteration.
        i, x, r, p, rr, beta = carry
        p = _axpy(beta, p, r)
        ap = matvec(p)
        alpha = rr / _vdot(p, ap, dtype)
        x = _axpy(alpha, p, x)
        r = _axpy(-alpha, ap, r)
        rr_new = _vdot(r, r, dtype)
        return i + 1, x, r, p, rr_new, rr_new / rr

    # The first direction is r; b only lends its buffer (0 b + r = r), where starting
    # from r itself made XLA copy it: one array cannot be both r and p.
    carry = (jnp.zeros((), jnp.int32), x0, r, b, rr, jnp.zeros((), dtype))
    i, x, *_ = jax.lax.while_loop(cond, body, carry)
    return x, i


def _mixed_products(value_fn: Callable[[Any], Any], x: Any, y: Any):
    """``(v -> B v, u -> B^T u)`` at ``(x, y)``, each linearised once."""
    if not (_has_leaves(x) and _has_leaves(y)):
        # One player has no parameters (masked out): no coupling.
        return (lambda v: optax.tree.zeros_like(x)), (lambda u: optax.tree.zeros_like(y))

    def grad_x(y_):
        return jax.grad(lambda x_: value_fn({"x": x_, "y": y_}))(x)

    def grad_y(x_):
        return jax.grad(lambda y_: value_fn({"x": x_, "y": y_}))(y)

    _, b = jax.linearize(grad_x, y)
    _, bt = jax.linearize(grad_y, x)
    return b, bt


def _solve_max(gx, gy, lx, ly, b, bt, warm, tol, atol, max_iters):
    """The scaled solutions ``{"x": z_x, "y": z_y}`` with CG on the maximiser's system."""
    sx, sy = jax.tree.map(jnp.sqrt, lx), jax.tree.map(jnp.sqrt, ly)
    rhs = _mul(sy, jax.tree.map(jnp.subtract, gy, bt(_mul(lx, gx))))

    def matvec(w):
        return jax.tree.map(jnp.add, w, _mul(sy, bt(_mul(lx, b(_mul(sy, w))))))

    w, iters = conjugate_gradient(matvec, rhs, warm["y"], tol=tol, atol=atol, max_iters=max_iters)
    h = jax.tree.map(jnp.add, gx, b(_mul(sy, w)))
    return {"x": _mul(sx, h), "y": w}, iters


def _solve_min(gx, gy, lx, ly, b, bt, warm, tol, atol, max_iters):
    """The scaled solutions ``{"x": z_x, "y": z_y}`` with CG on the minimiser's system."""
    sx, sy = jax.tree.map(jnp.sqrt, lx), jax.tree.map(jnp.sqrt, ly)
    rhs = _mul(sx, jax.tree.map(jnp.add, gx, b(_mul(ly, gy))))

    def matvec(w):
        return jax.tree.map(jnp.add, w, _mul(sx, b(_mul(ly, bt(_mul(sx, w))))))

    w, iters = conjugate_gradient(matvec, rhs, warm["x"], tol=tol, atol=atol, max_iters=max_iters)
    h = jax.tree.map(jnp.add, gy, bt(jax.tree.map(lambda s, v: -s * v, sx, w)))
    return {"x": w, "y": _mul(sy, h)}, iters


def _moves(lx, ly, z):
    """``(Δx, Δy) = (-sqrt(L_x) z_x, sqrt(L_y) z_y)``: both systems' solutions in one form.

    For the player the product (not CG) moves, ``sqrt(L) (sqrt(L) h)`` is ``L h``
    up to rounding; one form lets the moves be taken after the ``lax.cond``.
    """
    dx = jax.tree.map(lambda lam, v: -jnp.sqrt(lam) * v, lx, z["x"])
    dy = jax.tree.map(lambda lam, v: jnp.sqrt(lam) * v, ly, z["y"])
    return dx, dy


def _competitive_step(
    *,
    grads: Any,
    params: Any,
    value_fn: Callable[[Any], Any],
    rates: Callable[[Any, Any], tuple[Any, Any]],
    warm_start: Any,
    count: jax.Array,
    solve: str,
    tol: Any,
    atol: Any,
    max_cg_iters: Any,
):
    """One CGD/ACGD step in the compute dtype; returns (updates, warm_start, iterations).

    ``rates(gx, gy) -> (L_x, L_y)`` must be elementwise: it is traced inside each
    branch of the solve and once more after it, so that XLA fuses the rates into
    the loops that read them instead of writing them out as operands of the
    ``lax.cond``, and the moves, computed from the scaled solutions after the
    ``cond``, fuse into ``optax.apply_updates`` instead of being written out.
    """
    dtype = dtypes.compute_dtype(*jax.tree.leaves(grads), *jax.tree.leaves(params))
    gx, gy = _cast(grads["x"], dtype), _cast(grads["y"], dtype)
    x, y = _cast(params["x"], dtype), _cast(params["y"], dtype)
    b, bt = _mixed_products(value_fn, x, y)
    warm = _cast(warm_start, dtype)
    cap_x = _dim(x) if max_cg_iters is None else max_cg_iters
    cap_y = _dim(y) if max_cg_iters is None else max_cg_iters

    def solve_max(_):
        return _solve_max(gx, gy, *rates(gx, gy), b, bt, warm, tol, atol, cap_y)

    def solve_min(_):
        return _solve_min(gx, gy, *rates(gx, gy), b, bt, warm, tol, atol, cap_x)

    if solve == "max":
        z, iters = solve_max(None)
    elif solve == "min":
        z, iters = solve_min(None)
    else:  # odd steps (count = 0, 2, ...) solve the maximiser's system, as the official code
        z, iters = jax.lax.cond(count % 2 == 0, solve_max, solve_min, None)
    dx, dy = _moves(*rates(gx, gy), z)
    updates = {
        "x": jax.tree.map(lambda d, g: d.astype(g.dtype), dx, grads["x"]),
        "y": jax.tree.map(lambda d, g: d.astype(g.dtype), dy, grads["y"]),
    }
    new_warm = jax.tree.map(lambda v, old: v.astype(old.dtype), z, warm_start)
    return updates, new_warm, iters


def _rate(value: Any, count: jax.Array, dtype: Any) -> jax.Array:
    return jnp.asarray(value(count) if callable(value) else value, dtype)


def _check_common(owner, learning_rate, max_learning_rate, tol, atol, max_cg_iters):
    validation.check_positive(owner, "learning_rate", learning_rate, schedule=True)
    validation.check_positive(
        owner, "max_learning_rate", max_learning_rate, schedule=True, optional=True
    )
    validation.check_non_negative(owner, "tol", tol)
    validation.check_non_negative(owner, "atol", atol)
    validation.check_integer(owner, "max_cg_iters", max_cg_iters, 1, optional=True)


def _prepare(owner, updates, state, params, extra):
    if params is None:
        raise ValueError(
            f"{owner} needs the current parameters (it differentiates `value_fn` at them): "
            f"call `update(updates, state, params, value_fn=...)`."
        )
    _players(owner, updates, "updates")
    _players(owner, params, "params")
    validation.check_like_params(owner, updates, params)
    (value_fn,) = extra_args.get_required(owner, extra, ["value_fn"])
    return value_fn


class CGDState(NamedTuple):
    """State of :func:`cgd`.

    Attributes:
      count: number of updates so far, shape ``()``, int32 (saturating).
      warm_start: ``{"x": z_x, "y": z_y}``, the scaled solutions of the last step
        (``z_x = -Δx / sqrt(η_x)``, ``z_y = Δy / sqrt(η_y)``), the next CG start;
        params-shaped, in the parameters' dtype.
      cg_iters: CG iterations run in the last step, shape ``()``, int32: log it.
    """

    count: jax.Array
    warm_start: Any
    cg_iters: jax.Array


def cgd(
    learning_rate: optax.ScalarOrSchedule,
    max_learning_rate: optax.ScalarOrSchedule | None = None,
    *,
    tol: jax.typing.ArrayLike = 1e-12,
    atol: jax.typing.ArrayLike = 1e-20,
    max_cg_iters: int | None = None,
    solve: str = "alternating",
) -> optax.GradientTransformationExtraArgs:
    r"""Competitive gradient descent for ``min_x max_y f(x, y)`` (zero sum).

    With ``η_x, η_y`` the two step sizes, ``g = ∇f`` and ``B = D²_xy f``, each step
    is the Nash equilibrium of the bilinear game regularised by the step sizes:

    .. math::

      \Delta x &= -(I/\eta_x + \eta_y B B^\top)^{-1} (g_x + \eta_y B g_y), \\
      \Delta y &= +(I/\eta_y + \eta_x B^\top B)^{-1} (g_y - \eta_x B^\top g_x),

    computed as in the module notes (CG on one player's system, one product for
    the other). On ``f = x y`` it contracts every step by exactly
    ``1/sqrt(1 + η²)`` where simultaneous gradient descent–ascent expands by
    ``sqrt(1 + η²)``; on a convex–concave quadratic its fixed point is the Nash.

    Args:
      learning_rate: ``η_x``, the minimiser's step size (> 0), or a schedule of
        the 0-based step count.
      max_learning_rate: ``η_y``, the maximiser's step size (> 0) or a schedule;
        None: ``learning_rate``.
      tol: CG's relative tolerance on the squared residual norm (>= 0).
      atol: CG's absolute tolerance on the squared residual norm (>= 0).
      max_cg_iters: CG's iteration cap (>= 1); None: the solved player's number
        of parameters (exact in exact arithmetic).
      solve: whose system CG solves: ``"alternating"`` (the maximiser's on steps
        1, 3, ..., the minimiser's on 2, 4, ...: the official code's order),
        ``"min"`` or ``"max"`` (every step). Exact solves agree for all three.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` over the joint tree
      ``{"x": ..., "y": ...}`` whose ``update(grads, state, params,
      value_fn=f)`` returns ``(Δx, Δy)`` as that tree. It requires ``params`` and
      the extra argument ``value_fn`` (the game ``params -> f``, on the same batch
      as ``grads``).

    Examples:
      On ``f = x y`` one step shrinks ``|(x, y)|`` by ``1/sqrt(1 + η²)``:

      >>> import jax, jax.numpy as jnp, optax
      >>> from gdtx.games import cgd
      >>> f = lambda p: p["x"] * p["y"]
      >>> params = {"x": jnp.array(0.6), "y": jnp.array(-0.8)}
      >>> tx = cgd(0.5)
      >>> updates, state = tx.update(jax.grad(f)(params), tx.init(params), params, value_fn=f)
      >>> new = optax.apply_updates(params, updates)
      >>> print(f"{jnp.hypot(new['x'], new['y']):.4f} {1 / (1 + 0.5**2) ** 0.5:.4f}")
      0.8944 0.8944

    References:
      Schäfer, Anandkumar, `Competitive Gradient Descent
      <https://arxiv.org/abs/1905.12103>`_, NeurIPS 2019. Official code:
      https://github.com/f-t-s/CGD (``CG_CGDA!`` in ``optimizers_abstract.jl``);
      PyTorch: ``BCGD`` in https://github.com/devzhk/cgds-package.

    .. warning::
      The official ``BCGD`` caps a warm-started CG at ``n - 1`` iterations (and
      its ``momentum`` option does not work); gdtx caps at ``n`` and has no
      momentum. The warm start is the previous step's scaled solution, as in ACGD.
    """
    owner = "gdtx.cgd"
    _check_common(owner, learning_rate, max_learning_rate, tol, atol, max_cg_iters)
    validation.check_choice(owner, "solve", solve, _SOLVES)
    max_lr = learning_rate if max_learning_rate is None else max_learning_rate

    def init_fn(params):
        _players(owner, params, "params")
        return CGDState(
            count=jnp.zeros((), jnp.int32),
            warm_start=dtypes.zeros_like_params(params, None),
            cg_iters=jnp.zeros((), jnp.int32),
        )

    def update_fn(updates, state, params=None, **extra):
        value_fn = _prepare(owner, updates, state, params, extra)
        if not _has_leaves(updates):
            return updates, state._replace(count=optax.safe_increment(state.count))

        def rates(gx, gy):
            dtype = dtypes.compute_dtype(*jax.tree.leaves(gx), *jax.tree.leaves(gy))
            eta_x = _rate(learning_rate, state.count, dtype)
            eta_y = _rate(max_lr, state.count, dtype)
            return (
                jax.tree.map(lambda g: jnp.full_like(g, eta_x), gx),
                jax.tree.map(lambda g: jnp.full_like(g, eta_y), gy),
            )

        new, warm, iters = _competitive_step(
            grads=updates,
            params=params,
            value_fn=value_fn,
            rates=rates,
            warm_start=state.warm_start,
            count=state.count,
            solve=solve,
            tol=tol,
            atol=atol,
            max_cg_iters=max_cg_iters,
        )
        return new, CGDState(optax.safe_increment(state.count), warm, iters)

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return validation.checking_params(
        extra_args.declare(tx, ["value_fn"]), owner, allow_complex=False
    )


def _second_moments(nu, grads, b2, dtype):
    """RMSProp's ``v <- b2 v + (1 - b2) g^2`` over the joint tree, in the compute dtype."""
    beta = jnp.asarray(b2, dtype)
    return jax.tree.map(lambda v, g: moments.ema_abs_sq(beta, v, g.astype(dtype), dtype), nu, grads)


def _rmsprop_rates(nu, count, new_count, learning_rate, max_lr, b2, eps):
    """ACGD's per-coordinate rates ``L = sqrt(1 - b2^t) lr / (sqrt(v) + eps)`` from the new ``v``.

    ``count`` is the 0-based step (it evaluates the schedules), ``new_count = t``
    the bias correction's exponent; ``nu`` is in the compute dtype.
    """
    dtype = dtypes.compute_dtype(*jax.tree.leaves(nu))
    scale = jnp.sqrt(1 - jnp.asarray(b2, dtype) ** new_count.astype(dtype))
    eps_ = jnp.asarray(eps, dtype)

    def rate(lr, v):
        return scale * _rate(lr, count, dtype) / (jnp.sqrt(v) + eps_)

    return (
        jax.tree.map(lambda v: rate(learning_rate, v), nu["x"]),
        jax.tree.map(lambda v: rate(max_lr, v), nu["y"]),
    )


class ACGDState(NamedTuple):
    """State of :func:`acgd`.

    Attributes:
      count: number of updates so far, shape ``()``, int32 (saturating).
      nu: ``{"x": v_x, "y": v_y}``, the EMAs of the squared gradients (RMSProp's
        second moment), params-shaped, in ``nu_dtype``.
      warm_start: ``{"x": z_x, "y": z_y}``, the scaled solutions of the last step
        (``z_x = -Δx / sqrt(L_x)``, ``z_y = Δy / sqrt(L_y)``), the next CG start;
        params-shaped, in the parameters' dtype.
      cg_iters: CG iterations run in the last step, shape ``()``, int32: log it.
    """

    count: jax.Array
    nu: Any
    warm_start: Any
    cg_iters: jax.Array


def acgd(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    max_learning_rate: optax.ScalarOrSchedule | None = None,
    *,
    b2: jax.typing.ArrayLike = 0.99,
    eps: jax.typing.ArrayLike = 1e-5,
    tol: jax.typing.ArrayLike = 1e-12,
    atol: jax.typing.ArrayLike = 1e-20,
    max_cg_iters: int | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adaptive competitive gradient descent (ACGD) for ``min_x max_y f(x, y)``.

    CGD with RMSProp step sizes per coordinate. At step ``t = 1, 2, ...`` with
    ``β = b2``, ``α_x = learning_rate``, ``α_y = max_learning_rate``:

    .. math::

      v_x &\leftarrow \beta v_x + (1 - \beta) g_x^2, \qquad
      L_x = \sqrt{1 - \beta^t}\, \alpha_x / (\sqrt{v_x} + \epsilon)
      \quad\text{(likewise } v_y, L_y\text{)}, \\
      \Delta x &= -L_x \odot (g_x + B \Delta y), \qquad
      \Delta y = L_y \odot (g_y + B^\top \Delta x),

    solved by CG for the maximiser on odd steps and for the minimiser on even
    steps (the official order), each warm-started from the previous step's
    scaled solution although ``L`` changed (official behaviour).

    Args:
      learning_rate: ``α_x``, the minimiser's rate (> 0), or a schedule of the
        0-based step count. Official default ``1e-3``.
      max_learning_rate: ``α_y``, the maximiser's rate (> 0) or a schedule; None:
        ``learning_rate``.
      b2: ``β``, the decay of the squared-gradient EMA, in [0, 1).
      eps: ``ε``, added outside the root and not bias-corrected (>= 0). The
        official code's ``1e-5`` (the paper's value is not verified here).
      tol: CG's relative tolerance on the squared residual norm (>= 0).
      atol: CG's absolute tolerance on the squared residual norm (>= 0).
      max_cg_iters: CG's iteration cap (>= 1); None: the solved player's number
        of parameters (the official default).
      nu_dtype: dtype of ``nu``; None: the parameters' dtype.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` over ``{"x": ..., "y": ...}``
      whose ``update(grads, state, params, value_fn=f)`` returns ``(Δx, Δy)``.
      It requires ``params`` and the extra argument ``value_fn``.

    Examples:
      The first step on ``f = x y`` has a closed form: ``v = (1 - β) g²``, so
      ``L_x = α sqrt(1-β) / (sqrt(1-β)|y| + ε)``, ``Δy = L_y (x - L_x y) / (1 + L_x L_y)``:

      >>> import jax, jax.numpy as jnp
      >>> from gdtx.games import acgd
      >>> f = lambda p: p["x"] * p["y"]
      >>> params = {"x": jnp.array(0.5), "y": jnp.array(-2.0)}
      >>> tx = acgd(0.1)
      >>> updates, state = tx.update(jax.grad(f)(params), tx.init(params), params, value_fn=f)
      >>> s = (1 - 0.99) ** 0.5
      >>> lx, ly = 0.1 * s / (s * 2.0 + 1e-5), 0.1 * s / (s * 0.5 + 1e-5)
      >>> dy = ly * (0.5 + lx * 2.0) / (1 + lx * ly)
      >>> print(f"{updates['y']:.5f} {dy:.5f}  {updates['x']:.5f} {-lx * (-2.0 + dy):.5f}")
      0.11879 0.11879  0.09406 0.09406

    References:
      Schäfer, Zheng, Anandkumar, `Implicit competitive regularization in GANs
      <https://arxiv.org/abs/1910.05852>`_, ICML 2020. Official code:
      https://github.com/devzhk/cgds-package (``ACGD`` in ``src/CGDs/acgd.py``,
      PyPI ``CGDs`` 0.4.5); older copy:
      https://github.com/devzhk/Implicit-Competitive-Regularization.

    .. warning::
      Players are ordered ``(min, max)`` here; the official
      ``ACGD(max_params, min_params, lr_max, lr_min)`` orders them the other way.
      Constant-rate ACGD on a game with ``D²_xx f, D²_yy f ≠ 0`` settles in an
      ``O(lr)`` neighbourhood of the Nash, not at it (the rates grow to ``lr/ε``
      as the gradients vanish); use CGD or a decaying rate to converge exactly.
    """
    owner = "gdtx.acgd"
    _check_common(owner, learning_rate, max_learning_rate, tol, atol, max_cg_iters)
    validation.check_decay(owner, "b2", b2)
    validation.check_non_negative(owner, "eps", eps)
    validation.check_dtype(owner, "nu_dtype", nu_dtype)
    max_lr = learning_rate if max_learning_rate is None else max_learning_rate

    def init_fn(params):
        _players(owner, params, "params")
        return ACGDState(
            count=jnp.zeros((), jnp.int32),
            nu=dtypes.zeros_like_params(params, nu_dtype),
            warm_start=dtypes.zeros_like_params(params, None),
            cg_iters=jnp.zeros((), jnp.int32),
        )

    def update_fn(updates, state, params=None, **extra):
        value_fn = _prepare(owner, updates, state, params, extra)
        validation.check_like_state(owner, updates, state.nu)
        count = optax.safe_increment(state.count)
        if not _has_leaves(updates):
            return updates, state._replace(count=count)
        dtype = dtypes.compute_dtype(*jax.tree.leaves(updates), *jax.tree.leaves(params))
        nu = _second_moments(state.nu, updates, b2, dtype)

        def rates(gx, gy):
            del gx, gy  # the rates are the new second moments'
            return _rmsprop_rates(nu, state.count, count, learning_rate, max_lr, b2, eps)

        new, warm, iters = _competitive_step(
            grads=updates,
            params=params,
            value_fn=value_fn,
            rates=rates,
            warm_start=state.warm_start,
            count=state.count,
            solve="alternating",
            tol=tol,
            atol=atol,
            max_cg_iters=max_cg_iters,
        )
        nu = jax.tree.map(lambda v, old: v.astype(old.dtype), nu, state.nu)
        return new, ACGDState(count, nu, warm, iters)

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return validation.checking_params(
        extra_args.declare(tx, ["value_fn"]), owner, allow_complex=False
    )
