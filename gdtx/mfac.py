"""Matrix-free second-order preconditioning: M-FAC.

The family's contract. The direction is the gradient multiplied by the inverse
of a damped empirical Fisher built from the last ``m`` gradients,

.. math::

  F_t = \\lambda I_d + \\frac{1}{m} G_t^\\top G_t, \\qquad u_t = F_t^{-1} g_t,

where the rows of ``G_t`` (``m x d``) are the window: a ring buffer in which
the newest gradient overwrites the oldest. ``F`` is never formed: every product
goes through ``G`` and the ``m x m`` Gram matrix ``K = G G^T``, so a step costs
``O(dm + m^3)`` and the state ``m`` copies of the parameters. The conventions
are those of the official ``IST-DASLab/M-FAC`` optimizer (``optim.py``):

- one global ``F`` over all parameters: dot products run over the whole pytree,
  as over the official single flattened vector;
- the current gradient is written into the window *before* it is preconditioned;
- during warm-up the empty slots are zero rows and the factor stays ``1/m``
  (not ``1/t``), so the first step is ``u_1 = m g / (m \\lambda + |g|^2)``;
- products with ``G`` are float32 at full precision (never TF32), and the window
  is stored in float32 by default.

gdtx evaluates ``u`` in a form that is algebraically the official one but stable
in float32 (see :func:`scale_by_mfac`).
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gdtx._core import dtypes, extra_args, trees, validation
from gdtx._core.weight_decay import chain_with_weight_decay


class ScaleByMFACState(NamedTuple):
    """State of :func:`scale_by_mfac`.

    Attributes:
      count: gradients seen so far, shape ``()``, int32 (saturating); the next
        gradient goes to slot ``count mod m``.
      grads: the window ``G``: like the params, each leaf of shape
        ``(m, *param.shape)`` in ``grads_dtype`` (zeros until filled). ``init``
        shards it like its parameter with the window axis replicated; ``update``
        is right for any sharding the state arrives in (``nnx.Optimizer``, for
        one, shards a bias's window along the window axis).
      gram: ``K = G G^T``, shape ``(m, m)``, float32 (float64 under x64 with
        ``grads_dtype=float64``).
    """

    count: jax.Array
    grads: optax.Updates
    gram: jax.Array


def _validate(owner: str, num_grads, damping, grads_dtype, max_window_bytes) -> int:
    m = validation.check_static_integer(owner, "num_grads", num_grads, 1)
    validation.check_positive(owner, "damping", damping)
    validation.check_dtype(owner, "grads_dtype", grads_dtype, real=True)
    validation.check_positive(owner, "max_window_bytes", max_window_bytes, optional=True)
    return m


def _default_memory_limit() -> int | None:
    """Memory of one local device (the host's RAM on CPU), or None if unknown."""
    stats = None
    try:
        stats = jax.local_devices()[0].memory_stats()
    except (RuntimeError, NotImplementedError):
        pass
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _check_window_fits(owner: str, m: int, params: Any, store_dtype, limit) -> None:
    leaves = jax.tree.leaves(params)
    nbytes = m * sum(
        math.prod(p.shape) * jnp.dtype(p.dtype if store_dtype is None else store_dtype).itemsize
        for p in leaves
    )
    limit = _default_memory_limit() if limit is None else limit
    if limit is not None and nbytes > limit:
        d = sum(math.prod(p.shape) for p in leaves)
        raise ValueError(
            f"{owner}: the gradient window needs {nbytes / 2**30:.2f} GiB "
            f"(num_grads={m} x {d} parameters), more than the limit of "
            f"{limit / 2**30:.2f} GiB. Lower `num_grads`, store the window in a smaller "
            "`grads_dtype`, or raise `max_window_bytes` (the default is the memory of one "
            "device; a window sharded over several devices may fit where this estimate "
            "does not)."
        )


def _exact_dot(x, y, contracting, like, spec):
    """``lax.dot_general`` of ``x`` and ``y`` over the ``contracting`` axes, no batch axes.

    ``HIGHEST`` keeps the products exact float32 on every backend (never TF32, as
    in the official code). On an Explicit mesh a contraction over sharded axes is
    ambiguous to JAX, so the result's placement ``spec`` on ``like``'s mesh is
    given (None: left to the compiler).
    """
    sharding = None
    if spec is not None:
        mesh = jax.typeof(like).sharding.mesh
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))
    return jax.lax.dot_general(
        x, y, (contracting, ((), ())), precision=jax.lax.Precision.HIGHEST, out_sharding=sharding
    )


def _window_dot(window, g, cdt):
    """``G g`` for one leaf: shape ``(m,)``, replicated on an Explicit mesh.

    A vector parameter's window is a matrix, and the dot is XLA:CPU's
    matrix-vector kernel: at ``d = 10^7`` it is 15x faster than ``sum(G * g,
    axis=1)``, one long serial reduction per row. Other windows keep the exact
    multiply-and-reduce, which is as fast there: a dot would need the written
    window reshaped to a matrix, and XLA:CPU fuses a second copy of the ring
    write into that reshape and copies the whole window to keep both in place.
    """
    if window.ndim != 2:
        axes = tuple(range(1, window.ndim))
        return jnp.sum(window.astype(cdt) * g.astype(cdt)[None], axis=axes)
    spec = None if _explicit_spec(window) is None else (None,)
    return _exact_dot(window.astype(cdt), g.astype(cdt), ((1,), (0,)), window, spec)


# Windows of at most this many rows are combined row by row (see _window_combine).
_ROWWISE_COMBINE = 16


def _window_combine(coefficients, window, cdt):
    """``G^T c`` for one leaf: shaped like the parameter.

    For a short window, a sum of scaled rows: XLA fuses it into the loop that
    consumes it (the momentum's), so the direction is never written to a
    leaf-sized temporary, and at ``m = 4`` on XLA:CPU that loop is 3x faster than
    the ``c^T G`` matrix-vector kernel. A longer window (or one sharded along its
    own axis on an Explicit mesh) takes the dot where the window is a matrix and
    a multiply-and-reduce elsewhere (see :func:`_window_dot`).
    """
    spec = _explicit_spec(window)
    m = window.shape[0]
    c = coefficients.astype(cdt)
    if m <= _ROWWISE_COMBINE and (spec is None or spec[0] is None):
        return sum(c[i] * window[i].astype(cdt) for i in range(m))
    if window.ndim != 2:
        return jnp.sum(c.reshape((-1,) + (1,) * (window.ndim - 1)) * window.astype(cdt), axis=0)
    spec = None if spec is None else spec[1:]
    return _exact_dot(c, window.astype(cdt), ((0,), (0,)), window, spec)


def _explicit_spec(x) -> tuple | None:
    """``x``'s partition spec, one entry per axis, when its mesh axes are Explicit.

    None for an array whose sharding is left to the compiler (no mesh, or Auto
    axes): there the sharding is not part of the type and nothing needs pinning.
    """
    sharding = jax.typeof(x).sharding
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or not mesh.explicit_axes:
        return None
    spec = tuple(sharding.spec)
    return spec + (None,) * (x.ndim - len(spec))


def _reshard(x, like, spec):
    """``x`` resharded to ``spec`` on the mesh of ``like`` (no-op off Explicit meshes)."""
    if spec is None or _explicit_spec(x) == tuple(spec):
        return x
    mesh = jax.typeof(like).sharding.mesh
    return jax.sharding.reshard(
        x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))
    )


def _write(window, g, slot):
    """The window with row ``slot`` set to ``g`` (in place when the state is donated).

    A dynamic_update_slice, unless an Explicit mesh shards the window axis itself:
    then a one-hot select, which keeps that sharding (a slice of one row cannot
    be sharded like the window's first axis).
    """
    spec = _explicit_spec(window)
    if spec is not None and spec[0] is not None:
        hot = (jnp.arange(window.shape[0]) == slot).reshape((-1,) + (1,) * g.ndim)
        return jnp.where(hot, g[None], window)
    return jax.lax.dynamic_update_index_in_dim(window, g, slot, 0)


def _set_row_and_column(gram, row, slot):
    """``K`` with row and column ``slot`` set to ``row`` (``K`` stays symmetric).

    One-hot selects, not ``gram.at[slot, :].set(row).at[:, slot].set(row)``: on
    jax 0.10.2 the SPMD partitioner miscompiles that pair of scatters when
    ``row`` is sharded (it is whenever the window's first axis is, e.g. the
    ``P("model")`` that ``nnx.Optimizer`` copies from a bias onto its window):
    every shard's local copy of ``row[slot]`` lands in row ``slot``
    (``[K00, 0, K00, 0, ...]`` instead of ``[K00, 0, 0, 0, ...]``), ``K`` stops
    being positive definite and the step is NaN. Selects are elementwise, so
    they are right under any sharding, and ``K`` is only ``m x m``.
    """
    hot = jnp.arange(gram.shape[0]) == slot
    gram = jnp.where(hot[:, None], row[None, :], gram)
    return jnp.where(hot[None, :], row[:, None], gram)


_CHOLESKY_RETRIES = 3


@jax.custom_jvp
def _robust_cholesky(matrix):
    """Cholesky factor of an SPD ``matrix``, with a jitter only where it is needed.

    ``K + m lambda I`` is positive definite, but the computed ``K`` carries a
    rounding error of about ``m eps max_i K_ii``; when the window is nearly
    rank-deficient (nearly parallel gradients) and ``m lambda`` is below that,
    the factorisation breaks down into NaN. Then it is retried with ten times
    that amount added to the diagonal (and ten times more on each further
    retry, at most three): the directions it changes are the ones float32 cannot
    resolve anyway, and the step stays finite and bounded. A well-conditioned
    window never takes the retry.

    The retries are a fixed number of ``lax.cond`` (not a ``while_loop``), and the
    derivative is the Cholesky one taken at the factor that was kept
    (``dL = L Phi(L^{-1} dA L^{-T})``), so ``jax.grad`` goes through a step,
    retried or not, without the NaN of a failed attempt leaking into it.
    """
    m = matrix.shape[0]
    eye = jnp.eye(m, dtype=matrix.dtype)
    jitter = 10 * m * jnp.finfo(matrix.dtype).eps * jnp.max(jnp.diagonal(matrix))
    factor = jnp.linalg.cholesky(matrix)
    for attempt in range(_CHOLESKY_RETRIES):
        shift = (jitter * 10.0**attempt) * eye
        factor = jax.lax.cond(
            jnp.all(jnp.isfinite(factor)),
            lambda f: f,
            lambda f, shift=shift: jnp.linalg.cholesky(matrix + shift),
            factor,
        )
    return factor


@_robust_cholesky.defjvp
def _robust_cholesky_jvp(primals, tangents):
    (matrix,), (tangent,) = primals, tangents
    factor = _robust_cholesky(matrix)
    solve = functools.partial(jax.scipy.linalg.solve_triangular, factor, lower=True)
    inner = solve(solve(tangent).T).T  # L^{-1} dA L^{-T} (symmetric)
    phi = jnp.tril(inner) - 0.5 * jnp.diag(jnp.diagonal(inner))
    return factor, factor @ phi


# One compiled program: an eager (un-jitted) update then costs one dispatch, and
# inside a jitted step it is inlined like any other function.
@jax.jit
def _step(updates, window, gram, count, damping):
    """Writes ``updates`` into the window and returns ``(F^{-1} g, window, gram)``.

    Right for whatever sharding the state arrives in. Under Auto sharding the
    compiler places every intermediate; on an Explicit mesh each gradient is
    resharded like its window's trailing axes, the Gram row and ``K`` are
    replicated, and the update goes back to the gradient's own sharding.
    """
    m = gram.shape[0]
    gram_spec = _explicit_spec(gram)
    gram = _reshard(gram, gram, None if gram_spec is None else (None, None))
    cdt = gram.dtype
    slot = count % m

    def leaf_in(w, g):
        spec = _explicit_spec(w)
        return _reshard(g.astype(w.dtype), w, None if spec is None else spec[1:])

    stored = jax.tree.map(leaf_in, window, updates)
    # The ring write is a dynamic_update_slice: in place when the state is donated.
    window = jax.tree.map(lambda w, g: _write(w, g, slot), window, stored)
    # The stored (rounded) gradient enters the Gram row, so K stays G G^T exactly.
    rows = jax.tree.map(lambda w, g: _window_dot(w, g, cdt), window, stored)
    rows = [
        _reshard(r, r, None if _explicit_spec(r) is None else (None,))
        for r in jax.tree.leaves(rows)
    ]
    row = sum(rows)
    gram = _set_row_and_column(gram, row, slot)
    # u = F^{-1} g with g = G^T e_slot in the window: by push-through,
    # u = G^T c with (K + m lambda I) c = m e_slot. The official
    # x/lambda - G^T(...) form subtracts two nearly equal vectors and loses
    # about eps * |g|^2 / (m lambda) in float32; this form does not.
    shifted = gram + (m * jnp.asarray(damping, cdt)) * jnp.eye(m, dtype=cdt)
    factor = _robust_cholesky(shifted)
    rhs = m * jax.nn.one_hot(slot, m, dtype=cdt)
    coefficients = jax.scipy.linalg.cho_solve((factor, True), rhs)

    def leaf_out(w, g):
        u = _window_combine(coefficients, w, cdt).astype(g.dtype)
        return _reshard(u, g, _explicit_spec(g))

    new_updates = jax.tree.map(leaf_out, window, updates)
    return new_updates, window, _reshard(gram, gram, gram_spec)


def _scale_by_mfac(
    owner: str, num_grads: int, damping, grads_dtype, max_window_bytes
) -> optax.GradientTransformationExtraArgs:
    m = num_grads

    def store_dtype(p):
        return jnp.dtype(p.dtype) if grads_dtype is None else dtypes.canonical_dtype(grads_dtype)

    def init_fn(params):
        # Leaves without a dtype (optax.tree_map_params' placeholder, optax.masked's
        # MaskedNode) are empty subtrees: they stay as they are in the window.
        leaves = [p for p in jax.tree.leaves(params) if hasattr(p, "dtype")]
        _check_window_fits(owner, m, leaves, dtypes.canonical_dtype(grads_dtype), max_window_bytes)
        zeros = optax.tree.zeros_like(params)
        # Broadcasting the zeros (rather than jnp.zeros) keeps each parameter's
        # sharding on the trailing axes; the window axis is replicated.
        window = jax.tree.map(
            lambda z: jnp.broadcast_to(z.astype(store_dtype(z))[None], (m, *z.shape)), zeros
        )
        stored = [store_dtype(p) for p in leaves] or [store_dtype(jnp.zeros((), jnp.float32))]
        gram_dtype = dtypes.compute_dtype(*(jnp.zeros((), dtype) for dtype in stored))
        return ScaleByMFACState(
            count=jnp.zeros([], jnp.int32),
            grads=window,
            gram=jnp.zeros((m, m), gram_dtype),
        )

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        like = jax.tree.map(lambda w: jax.ShapeDtypeStruct(w.shape[1:], w.dtype), state.grads)
        validation.check_like_state(owner, updates, like)
        count = optax.safe_increment(state.count)
        if not jax.tree.leaves(updates):
            # An empty subtree (optax.masked with an all-False mask, an unused
            # optax.multi_transform label): nothing to precondition.
            return updates, state._replace(count=count)
        new_updates, window, gram = _step(updates, state.grads, state.gram, state.count, damping)
        return new_updates, ScaleByMFACState(count=count, grads=window, gram=gram)

    return validation.checking_params(
        optax.GradientTransformationExtraArgs(init_fn, update_fn), owner, allow_complex=False
    )


def _momentum(momentum, mu_dtype) -> optax.GradientTransformation:
    """``optax.ema(momentum, debias=False)`` under gdtx's dtype policy.

    The same state (:class:`optax.EmaState`) and the same recursion
    ``v = mu v + (1 - mu) u``, but with the accumulator in ``mu_dtype`` (None:
    the parameter's dtype), the arithmetic in at least float32 and the direction
    returned in the gradients' dtype.
    """

    def init_fn(params):
        return optax.EmaState(
            count=jnp.zeros([], jnp.int32), ema=dtypes.zeros_like_params(params, mu_dtype)
        )

    def update_fn(updates, state, params=None):
        del params

        def leaf(u, v):
            cdt = dtypes.compute_dtype(u, v)
            mu = jnp.asarray(momentum, cdt)
            new = (1 - mu) * u.astype(cdt) + mu * v.astype(cdt)
            return new.astype(u.dtype), new.astype(v.dtype)

        directions, ema = trees.unzip(jax.tree.map(leaf, updates, state.ema), updates, 2)
        return directions, optax.EmaState(count=optax.safe_increment(state.count), ema=ema)

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_mfac(
    num_grads: int = 1024,
    damping: jax.typing.ArrayLike = 1e-5,
    *,
    grads_dtype: Any | None = "float32",
    max_window_bytes: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Preconditions by the inverse empirical Fisher of a sliding window (M-FAC).

    With ``m = num_grads``, ``\\lambda = damping``, ``j = (t - 1) \\bmod m`` the
    slot of step ``t``, the step writes the gradient into the window and returns

    .. math::

      G_t[j] = g_t, \\quad K_t = G_t G_t^\\top, \\quad
      u_t = \\Big(\\lambda I + \\frac{1}{m} G_t^\\top G_t\\Big)^{-1} g_t
          = G_t^\\top c_t, \\quad (K_t + m \\lambda I)\\, c_t = m\\, e_j .

    The last form follows from ``g_t = G_t^T e_j`` and the push-through identity
    ``(\\lambda I + G^T G/m)^{-1} G^T = G^T (\\lambda I + G G^T/m)^{-1}``; it needs
    one Cholesky factorisation of an ``m x m`` matrix and two passes over ``G``
    (the new row of ``K`` and ``G^T c``), as the official algorithm does. Unfilled
    slots are zero rows (``1/m`` stays ``1/m`` during warm-up), so the first step is
    ``u_1 = m g / (m \\lambda + |g|^2)``, and without momentum every ``u_t`` lies in
    the span of the window.

    The window ``G`` holds ``m`` copies of the parameters (``4 m d`` bytes in
    float32: 4 GB per million parameters at the default ``m = 1024``). ``init``
    refuses a window larger than ``max_window_bytes`` with a ``ValueError`` rather
    than failing inside XLA. Jit the training step with the optimizer state
    **donated** (``jax.jit(step, donate_argnums=...)``): the ring write is then done
    in place; without donation XLA copies the whole window every step.

    The step is right for whatever sharding the state arrives in (the window
    sharded like its parameter, or along the window axis itself, on an Auto or
    an Explicit mesh), and it can be differentiated with ``jax.grad`` (the
    factorisation's retries are a fixed number of ``lax.cond``). Complex and
    integer parameters are refused at ``init`` with a ``TypeError``: a complex
    M-FAC would need a Hermitian window and Gram matrix, which the official code
    does not define.

    .. warning::
      The official code evaluates ``F^{-1} g = g/\\lambda - G^T(\\dots)``, a
      difference of two nearly equal vectors when ``|g|^2 / (m\\lambda)`` is large
      (with the defaults, ``100 |g|^2``): in float32 it is off by several percent at
      ``|g|^2/(m\\lambda) = 5 \\cdot 10^5``. gdtx computes the same vector as
      ``G^T c``, which stays within about ``10^{-6}`` of the exact solve for a
      window of distinct gradients at any such ratio. Neither form escapes the
      float32 rounding of ``K`` itself: for a window of *nearly parallel*
      gradients the error grows like ``m \\epsilon |g|^2 / (m\\lambda)``, and where
      ``K + m\\lambda I`` is singular to float32 the factorisation is retried with a
      jitter of ``10 m \\epsilon \\max_i K_{ii}`` (finite, bounded steps instead of
      NaN; the official code has no such guard). The official code also rejects
      ``m > 1024`` (a limit of its CUDA kernel); gdtx does not, but the ``m^3``
      factorisation grows quickly past it.

    Args:
      num_grads: the window size ``m`` (a Python int >= 1; it fixes shapes, so
        list it in ``static_args`` of ``optax.inject_hyperparams``).
      damping: ``\\lambda > 0``, added to the diagonal of the Fisher.
      grads_dtype: dtype of the stored window; float32 as in the official code.
        None stores each leaf in its parameter's dtype. The Gram matrix and the
        solve run in at least float32. Give it as a string (``"bfloat16"``) or
        list it in ``static_args`` of ``optax.inject_hyperparams``, which would
        take a dtype class such as ``jnp.bfloat16`` for a schedule.
      max_window_bytes: the largest window ``init`` accepts, in bytes; None uses
        the memory of one local device (the host's RAM on CPU).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`ScaleByMFACState`.

    Examples:
      The window inverts the scale of the gradient: along a direction the window
      has seen only once, ``u = m g / (m \\lambda + |g|^2)``, so two gradients
      ``10^4`` apart in size give steps ``10^4`` apart the other way round:

      >>> import jax.numpy as jnp, gdtx
      >>> tx = gdtx.scale_by_mfac(num_grads=2, damping=1e-12)
      >>> state = tx.init(jnp.zeros(2))
      >>> u1, state = tx.update(jnp.array([100.0, 0.0]), state)
      >>> u2, state = tx.update(jnp.array([0.0, 0.01]), state)
      >>> print(u1.round(4), u2.round(4))
      [0.02 0.  ] [  0. 200.]

    References:
      Frantar, Kurtic and Alistarh, `M-FAC: Efficient Matrix-Free Approximations
      of Second-Order Information <https://arxiv.org/abs/2107.03356>`_, NeurIPS 2021.
      Official code: https://github.com/IST-DASLab/M-FAC (``optim.py``).
    """
    owner = "gdtx.scale_by_mfac"
    m = _validate(owner, num_grads, damping, grads_dtype, max_window_bytes)
    return _scale_by_mfac(owner, m, damping, grads_dtype, max_window_bytes)


def mfac(
    learning_rate: optax.ScalarOrSchedule,
    num_grads: int = 1024,
    damping: jax.typing.ArrayLike = 1e-5,
    *,
    momentum: jax.typing.ArrayLike = 0.0,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    grads_dtype: Any | None = "float32",
    mu_dtype: Any | None = None,
    max_window_bytes: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    """The M-FAC optimizer, as in the official ``IST-DASLab/M-FAC`` code.

    ``chain(add_decayed_weights(wd), scale_by_mfac(m, damping), ema(momentum,
    debias=False), scale_by_learning_rate(lr))``: with ``u_t`` the direction of
    :func:`scale_by_mfac` applied to the decayed gradient,

    .. math::

      \\tilde g_t = g_t + \\mathrm{wd}\\, w_{t-1}, \\quad
      u_t = F_t^{-1} \\tilde g_t, \\quad
      v_t = \\mu v_{t-1} + (1 - \\mu) u_t, \\quad
      w_t = w_{t-1} - \\eta_t v_t,

    with ``v_0 = 0`` and no bias correction. Weight decay is coupled (L2), as in the
    official optimizer: the decayed gradient is what enters the window. With
    ``momentum = 0`` (the default) ``v_t = u_t`` exactly. The defaults
    (``lr = 1e-3``, ``m = 1024``, ``damping = 1e-5``) are the official ones except
    that ``learning_rate`` has no default here.

    Jit the step with the optimizer state donated: see :func:`scale_by_mfac`.

    Args:
      learning_rate: a float or an optax schedule (the official default is 1e-3).
      num_grads: the window size ``m`` (a Python int >= 1).
      damping: ``\\lambda > 0``.
      momentum: ``\\mu`` in [0, 1), an EMA of the directions (official: 0).
      weight_decay: L2 coefficient added to the gradient (a float or a schedule).
      grads_dtype: dtype of the stored window (float32; None: the parameters');
        see :func:`scale_by_mfac`.
      mu_dtype: dtype of the momentum ``v`` (the ``ema`` field of the state);
        None: the parameters' dtype, as for every gdtx moment. Its arithmetic
        runs in at least float32 and the direction comes back in the
        gradients' dtype. (With ``momentum = 0`` the field is still kept, so that
        the state's structure does not depend on a value that may be traced.)
      max_window_bytes: the largest window ``init`` accepts (see
        :func:`scale_by_mfac`).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Examples:
      With ``momentum = 0`` the step is ``-lr F^{-1} g`` for the damped empirical
      Fisher ``F = damping I + G^T G / m`` of the window ``G`` of the last ``m``
      gradients, computed without forming ``F``; here it equals the dense solve:

      >>> import jax.numpy as jnp, numpy as np
      >>> from gdtx.mfac import mfac
      >>> solver = mfac(learning_rate=1.0, num_grads=2, damping=0.5)
      >>> params = jnp.zeros(3)
      >>> state = solver.init(params)
      >>> g1, g2 = jnp.array([1.0, 2.0, 0.0]), jnp.array([0.0, 1.0, -1.0])
      >>> _, state = solver.update(g1, state, params)
      >>> updates, state = solver.update(g2, state, params)
      >>> window = np.stack([g1, g2])
      >>> fisher = 0.5 * np.eye(3) + window.T @ window / 2
      >>> print(np.round(np.asarray(updates), 4), np.round(-np.linalg.solve(fisher, g2), 4))
      [ 0.2857 -0.2857  0.8571] [ 0.2857 -0.2857  0.8571]

    References:
      Frantar, Kurtic and Alistarh, `M-FAC: Efficient Matrix-Free Approximations
      of Second-Order Information <https://arxiv.org/abs/2107.03356>`_, NeurIPS 2021.
      Official code: https://github.com/IST-DASLab/M-FAC (``optim.py``, class ``MFAC``).
    """
    owner = "gdtx.mfac"
    m = _validate(owner, num_grads, damping, grads_dtype, max_window_bytes)
    validation.check_decay(owner, "momentum", momentum)
    validation.check_dtype(owner, "mu_dtype", mu_dtype)
    direction = extra_args.chain(
        _scale_by_mfac(owner, m, damping, grads_dtype, max_window_bytes),
        _momentum(momentum, mu_dtype),
    )
    tx = chain_with_weight_decay(
        direction,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        weight_decay_mode="l2",
        mask=None,
        owner=owner,
        allow_complex=False,
    )

    def update_fn(updates, state, params=None, **extra):
        # The coupled decay g + wd p runs before the window sees g: without this
        # check a (1,) gradient would broadcast onto a (4,) parameter there.
        validation.check_like_params(owner, updates, params)
        return tx.update(updates, state, params, **extra)

    return optax.GradientTransformationExtraArgs(tx.init, update_fn)
