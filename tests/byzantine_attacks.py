"""Byzantine attacks as test fixtures (not library API): what ``f`` bad devices send.

Every attack is computed from the **honest** vectors ``H`` (rows = devices, the
``n - f`` honest ones), and all ``f`` Byzantine devices send the same vector
(LPD-EPFL robust-collaborative-learning, attacks/*.py; byzfl attacks.py):

- ``sign_flip``: ``-mean(H)`` (signflipping.py);
- ``large_noise``: each coordinate ``~ N(0, sigma^2)``, a fresh draw per
  Byzantine device (byzfl ``Gaussian``: mean 0, ``sigma = 1`` by default);
- ``alie`` ("a little is enough", Baruch et al. 2019): ``mean(H) + z std(H)``
  per coordinate, ``std`` with ``ddof = 1`` (identical.py, byzfl), ``z = 1.5``
  (byzfl's fixed default);
- ``foe`` ("fall of empires", Xie et al. 2019, inner-product manipulation):
  ``-eps mean(H)``, ``eps = 0.1`` (empire.py's strict form; LPD's ``factor``
  form ``(1 - factor) mean`` is the same with ``factor = 1 + eps``).

LPD searches the factor of ALIE/FOE by a 16-evaluation line search against the
rule in use (``factor=-16``); these fixtures use fixed factors, so one attack
is the same vector for every rule (what the accuracy table compares).

Two forms: NumPy functions on an ``(n - f, d)`` array (the closed-form tests),
and :func:`byzantine`, an optax transformation that, placed first in a chain
under ``jax.shard_map`` or :func:`gdtx.data_parallel_step`, replaces the
gradients of the last ``num_bad`` devices of the axis by the attack (LPD puts
the Byzantine workers last). The attack and ``num_bad`` live in its state as
traced integers, so one compiled step serves every attack and every ``f``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdtx._core.collectives import all_gather_replicated, axis_index, bound_axis_size

SIGMA = 1.0  # large noise: byzfl Gaussian's default standard deviation
ALIE_Z = 1.5  # byzfl ALIE's default factor
FOE_EPS = 0.1  # fall of empires: Xie et al.'s small epsilon

# --- NumPy forms on the honest rows ----------------------------------------------------------


def sign_flip(honest: np.ndarray, rng: np.random.Generator, f: int) -> np.ndarray:
    """``f`` copies of ``-mean(honest)``."""
    del rng
    return np.repeat(-honest.mean(0, keepdims=True), f, axis=0)


def large_noise(
    honest: np.ndarray, rng: np.random.Generator, f: int, sigma: float = SIGMA
) -> np.ndarray:
    """``f`` independent vectors with coordinates ``N(0, sigma^2)``."""
    return sigma * rng.normal(size=(f, *honest.shape[1:]))


def alie(honest: np.ndarray, rng: np.random.Generator, f: int, z: float = ALIE_Z) -> np.ndarray:
    """``f`` copies of ``mean + z std`` (per coordinate, ``ddof = 1``)."""
    del rng
    return np.repeat((honest.mean(0) + z * honest.std(0, ddof=1))[None], f, axis=0)


def foe(honest: np.ndarray, rng: np.random.Generator, f: int, eps: float = FOE_EPS) -> np.ndarray:
    """``f`` copies of ``-eps mean``: the mean shrinks by ``f (1 + eps) / n`` but stays close."""
    del rng
    return np.repeat(-eps * honest.mean(0, keepdims=True), f, axis=0)


ATTACKS = {"sign_flip": sign_flip, "large_noise": large_noise, "alie": alie, "foe": foe}
CODES = {"none": 0, "sign_flip": 1, "large_noise": 2, "alie": 3, "foe": 4}


# --- JAX form: a transformation that makes the last devices Byzantine -------------------------


class ByzantineState(NamedTuple):
    """``code``: the attack (``CODES``, 0 = honest run); ``num_bad``: how many devices
    attack (the last ones on the axis); ``key``: large noise's draws; ``count``: steps."""

    code: jax.Array
    num_bad: jax.Array
    key: jax.Array
    count: jax.Array


def _attack_leaf(code, x, num_bad, noise, *, sigma, z, eps):
    """The attack vector from the gathered ``x`` (rows; the first ``n - num_bad`` are honest)."""
    n = x.shape[0]
    honest = jnp.reshape(jnp.arange(n) < n - num_bad, (n,) + (1,) * (x.ndim - 1))
    h = jnp.maximum(n - num_bad, 1).astype(x.dtype)
    mean = jnp.sum(jnp.where(honest, x, 0.0), axis=0) / h
    var = jnp.sum(jnp.where(honest, (x - mean[None]) ** 2, 0.0), axis=0) / jnp.maximum(h - 1, 1)
    # All candidates, then a select: lax.switch would need the branches' varying-ness to match.
    candidates = [-mean, sigma * noise, mean + z * jnp.sqrt(var), -eps * mean]
    out = mean
    for c, a in enumerate(candidates, start=1):
        out = jnp.where(code == c, a, out)
    return out


def byzantine(
    axis_name: str,
    *,
    code: int = 0,
    num_bad: int = 0,
    seed: int = 0,
    sigma: float = SIGMA,
    z: float = ALIE_Z,
    eps: float = FOE_EPS,
) -> optax.GradientTransformation:
    """Replaces the updates of the last ``state.num_bad`` devices by ``state.code``'s attack.

    The attack sees all devices' gradients (an all-gather, not declared as an
    exchange: it is the simulation's, not the method's); honest devices'
    updates pass unchanged. Set ``code``/``num_bad`` at construction or in the
    state (:func:`with_attack`) to reuse one compiled step.
    """

    def init_fn(params):
        del params
        return ByzantineState(
            code=jnp.asarray(code, jnp.int32),
            num_bad=jnp.asarray(num_bad, jnp.int32),
            key=jax.random.key_data(jax.random.PRNGKey(seed)),
            count=jnp.zeros([], jnp.int32),
        )

    def update_fn(updates, state, params=None):
        del params
        n = bound_axis_size("tests.byzantine_attacks.byzantine", axis_name)
        me = axis_index(axis_name)
        bad = (me >= n - state.num_bad) & (state.code > 0)
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.count)
        leaves, treedef = jax.tree.flatten(updates)
        out = []
        for k, g in enumerate(leaves):
            x = all_gather_replicated(g, axis_name)
            noise = jax.random.normal(
                jax.random.fold_in(jax.random.fold_in(key, k), me), g.shape, g.dtype
            )
            a = _attack_leaf(state.code, x, state.num_bad, noise, sigma=sigma, z=z, eps=eps)
            out.append(jnp.where(bad, a.astype(g.dtype), g))
        new = state._replace(count=state.count + 1)
        return jax.tree.unflatten(treedef, out), new

    return optax.GradientTransformation(init_fn, update_fn)


def with_attack(state: Any, attack: str, num_bad: int) -> Any:
    """``state`` (a chain's, ``byzantine`` first) with another attack, keeping shardings."""
    first = state[0]

    def put(value, like):
        return jax.device_put(jnp.asarray(value, like.dtype), like.sharding)

    first = first._replace(
        code=put(CODES[attack], first.code),
        num_bad=put(num_bad, first.num_bad),
        count=put(0, first.count),
    )
    return (first, *state[1:])


# --- MoNNA: the Byzantine devices send half-step *models* ------------------------------------


def monna_under_attack(
    learning_rate: float,
    beta: float,
    *,
    num_byzantine: int,
    axis_name: str,
    code: int = 0,
    num_bad: int = 0,
    seed: int = 0,
    sigma: float = SIGMA,
    z: float = ALIE_Z,
    eps: float = FOE_EPS,
) -> optax.GradientTransformation:
    """``gdtx.monna`` (no dampening) whose last ``state[0].num_bad`` devices send an attack model.

    In MoNNA the devices exchange half-step models ``x_i = theta_i - lr m_i`` with
    ``m_i = beta m_i + g_i``, and LPD's attacks act on those models. A Byzantine
    device here picks the gradient that makes its half-step model the attack of
    the honest half-step models: ``g_i = (theta_i - lr beta m_i - target) / lr``.
    The state is ``(ByzantineState, MonnaState)``; :func:`with_attack` sets the
    attack as for :func:`byzantine`.
    """
    from gdtx.robust import monna

    tx = monna(learning_rate, beta, num_byzantine=num_byzantine, axis_name=axis_name, dampening=0.0)
    attack = byzantine(axis_name, code=code, num_bad=num_bad, seed=seed)

    def init_fn(params):
        return attack.init(params), tx.init(params)

    def update_fn(updates, state, params=None):
        bstate, mstate = state
        n = bound_axis_size("tests.byzantine_attacks.monna_under_attack", axis_name)
        me = axis_index(axis_name)
        bad = (me >= n - bstate.num_bad) & (bstate.code > 0)
        key = jax.random.fold_in(jax.random.wrap_key_data(bstate.key), bstate.count)
        flat_g, treedef = jax.tree.flatten(updates)
        flat_p = treedef.flatten_up_to(params)
        flat_m = treedef.flatten_up_to(mstate.mu)
        out = []
        for k, (g, p, m) in enumerate(zip(flat_g, flat_p, flat_m, strict=True)):
            m = m[0]  # this device's momentum (per-device leaf)
            x = p - learning_rate * (beta * m + g)  # the honest half-step model
            xs = all_gather_replicated(x, axis_name)
            noise = jax.random.normal(
                jax.random.fold_in(jax.random.fold_in(key, k), me), g.shape, g.dtype
            )
            target = _attack_leaf(bstate.code, xs, bstate.num_bad, noise, sigma=sigma, z=z, eps=eps)
            forged = (p - learning_rate * beta * m - target) / learning_rate
            out.append(jnp.where(bad, forged.astype(g.dtype), g))
        u, mstate = tx.update(jax.tree.unflatten(treedef, out), mstate, params)
        return u, (bstate._replace(count=bstate.count + 1), mstate)

    return optax.GradientTransformation(init_fn, update_fn)
