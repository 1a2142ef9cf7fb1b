"""ACGD against a NumPy float64 transcription of the official code (CGDs 0.4.5).

``_OfficialACGD`` transcribes ``ACGD.step`` of devzhk/cgds-package @ b48e2d9
(``src/CGDs/acgd.py`` with ``general_conjugate_gradient`` from ``cgd_utils.py``)
line by line, for a quadratic game whose mixed Hessian ``B`` is constant; the
players are reordered to gdtx's ``(min, max)``. The spec
(``research/games.md`` §3.3.1) checked this transcription against the official
PyTorch code in float64 to 5.8e-16 over 1000 steps. Each mutant below is a
plausible convention mistake; the tolerance must catch every one of them.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gdtx.games import acgd


def _official_cg(matvec, b, x0, tol, atol):
    """general_conjugate_gradient: stop on r.r < tol * b.b or r.r < atol (squared norms),
    checked before the loop and after each update; at most len(b) iterations.
    Returns (x, iterations actually run)."""
    nsteps = b.shape[0]
    if x0 is None:
        x, r = np.zeros_like(b), b.copy()
    else:
        x = x0.copy()
        r = b - matvec(x)
    p = r.copy()
    rdotr = r @ r
    threshold = tol * (b @ b)
    if rdotr < threshold or rdotr < atol:
        return x, 0
    iterations = 0
    for _ in range(nsteps):
        iterations += 1
        Ap = matvec(p)
        alpha = rdotr / (p @ Ap)
        x = x + alpha * p
        r = r - alpha * Ap
        new = r @ r
        beta = new / rdotr
        rdotr = new
        if rdotr < threshold or rdotr < atol:
            break
        p = r + beta * p
    return x, iterations


class _OfficialACGD:
    """ACGD.step (official defaults: lr 1e-3, beta 0.99, eps 1e-5, tol 1e-12, atol 1e-20;
    first step solves the maximiser's system). ``mutant`` switches one convention."""

    def __init__(self, nx, ny, lr, beta=0.99, eps=1e-5, tol=1e-12, atol=1e-20, mutant=None):
        self.lr, self.beta, self.eps, self.tol, self.atol = lr, beta, eps, tol, atol
        self.mutant = mutant
        self.t = 0
        self.v_x, self.v_y = np.zeros(nx), np.zeros(ny)
        self.z_x = self.z_y = None
        self.solve_min = mutant == "solve_min_first"

    def step(self, gx, gy, B):
        self.t += 1
        b = self.beta
        self.v_x = b * self.v_x + (1 - b) * gx * gx
        self.v_y = b * self.v_y + (1 - b) * gy * gy
        bc = 1.0 if self.mutant == "no_bias_correction" else 1 - b**self.t
        if self.mutant == "eps_inside_root":
            Lx = math.sqrt(bc) * self.lr / np.sqrt(self.v_x + self.eps)
            Ly = math.sqrt(bc) * self.lr / np.sqrt(self.v_y + self.eps)
        else:
            Lx = math.sqrt(bc) * self.lr / (np.sqrt(self.v_x) + self.eps)
            Ly = math.sqrt(bc) * self.lr / (np.sqrt(self.v_y) + self.eps)
        sx, sy = np.sqrt(Lx), np.sqrt(Ly)
        sign = -1.0 if self.mutant == "mixed_sign" else 1.0
        if self.solve_min:
            rhs = sx * (gx + sign * B @ (Ly * gy))
            w, iters = _official_cg(
                lambda v: v + sx * (B @ (Ly * (B.T @ (sx * v)))), rhs, self.z_x, self.tol, self.atol
            )
            self.z_x = w
            dx = -sx * w
            h = gy + B.T @ dx
            dy = Ly * h
            self.z_y = sy * h
        else:
            rhs = sy * (gy - sign * B.T @ (Lx * gx))
            w, iters = _official_cg(
                lambda v: v + sy * (B.T @ (Lx * (B @ (sy * v)))), rhs, self.z_y, self.tol, self.atol
            )
            self.z_y = w
            dy = sy * w
            h = gx + B @ dy
            dx = -Lx * h
            self.z_x = sx * h
        if self.mutant != "no_alternation":
            self.solve_min = not self.solve_min
        return dx, dy, iters


def _game(seed=0, nx=6, ny=5):
    rng = np.random.default_rng(seed)
    P = rng.standard_normal((nx, nx))
    Q = rng.standard_normal((ny, ny))
    P, Q = 0.1 * P @ P.T, 0.1 * Q @ Q.T
    B = rng.standard_normal((nx, ny))
    a, b = rng.standard_normal(nx), rng.standard_normal(ny)
    x0, y0 = rng.standard_normal(nx), rng.standard_normal(ny)
    return P, B, Q, a, b, x0, y0


def _reference(game, lr, steps, mutant=None):
    P, B, Q, a, b, x, y = game
    opt = _OfficialACGD(len(x), len(y), lr, mutant=mutant)
    xs, iters = [], []
    for _ in range(steps):
        gx, gy = P @ x + B @ y + a, B.T @ x - Q @ y + b
        dx, dy, k = opt.step(gx, gy, B)
        x, y = x + dx, y + dy
        xs.append(np.concatenate([x, y]))
        iters.append(k)
    return np.array(xs), np.array(iters)


def _gdtx(game, lr, steps):
    P, B, Q, a, b, x0, y0 = map(jnp.asarray, game)

    def f(p):
        x, y = p["x"], p["y"]
        return 0.5 * x @ P @ x + x @ B @ y - 0.5 * y @ Q @ y + a @ x + b @ y

    tx = acgd(lr)

    def step(carry, _):
        params, state = carry
        updates, state = tx.update(jax.grad(f)(params), state, params, value_fn=f)
        params = optax.apply_updates(params, updates)
        return (params, state), (jnp.concatenate([params["x"], params["y"]]), state.cg_iters)

    start = {"x": x0, "y": y0}
    _, (xs, iters) = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), length=steps))(start)
    return np.asarray(xs), np.asarray(iters)


# lr 1e-3 (the official default) for 300 steps, lr 0.05 for 200 steps: both stay out of
# the regime near the Nash where v -> 0 makes the map expanding (games.md §3.3.1).
_RUNS = [(1e-3, 300), (0.05, 200)]


@pytest.mark.parametrize("lr, steps", _RUNS)
def test_acgd_follows_the_official_code(lr, steps):
    with jax.enable_x64(True):
        game = _game()
        ref, ref_iters = _reference(game, lr, steps)
        ours, our_iters = _gdtx(game, lr, steps)
    start = np.concatenate(game[-2:])
    travelled = np.abs(ref - start).max()
    error = np.abs(ours - ref).max()
    assert travelled > 0.1
    assert error <= 1e-6 * travelled, (error, travelled)
    # The warm-started CG runs the same number of iterations at every step.
    np.testing.assert_array_equal(our_iters, ref_iters)


@pytest.mark.parametrize(
    "mutant",
    ["no_bias_correction", "eps_inside_root", "solve_min_first", "mixed_sign", "no_alternation"],
)
def test_the_tolerance_catches_each_convention_mistake(mutant):
    """Each mutant of the transcription misses the correct one by far more than 1e-6."""
    lr, steps = _RUNS[1]
    game = _game()
    ref, ref_iters = _reference(game, lr, steps)
    bad, bad_iters = _reference(game, lr, steps, mutant=mutant)
    travelled = np.abs(ref - np.concatenate(game[-2:])).max()
    error = np.abs(bad - ref).max()
    # solve order changes only the rounding and the CG iteration counts: caught there.
    assert error > 1e-6 * travelled or np.any(bad_iters != ref_iters), mutant
