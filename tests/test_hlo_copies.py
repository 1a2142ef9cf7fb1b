"""Compiled steps that copy no donated state buffer and make no leaf-sized temporary (issue 21).

Each test compiles ``update + optax.apply_updates`` as ``benchmarks/step_time.py``
does (``jax.jit``, params and state donated, a one-device ``jax.shard_map`` for
a collective row) and reads the compiled entry computation:

- a ``copy`` of a leaf-sized array is a full extra pass over memory: XLA makes
  one when a loop still reads a donated buffer after (or unordered with) the
  loop that overwrites it in place, or when a value must move into a buffer of
  its own (a conditional's result, an output that is an input);
- ``memory_analysis().temp_size_in_bytes`` counts the leaf-sized arrays the
  step writes and reads back besides its inputs and outputs.

The formulations that keep both at their minimum are explained where they are
written (gdtx/sign.py, gdtx/sharpness.py, gdtx/local_sgd.py, gdtx/robust.py,
gdtx/_core/collectives.py, gdtx/schedules.py); diffGrad and one-sample Frank-Wolfe
keep the copies that XLA:CPU does not avoid (see their tests). AdaBelief's own pin is
in tests/test_belief.py.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import optax
import pytest

import gdtx
from gdtx.local_sgd import diloco, periodic_average
from tests.hlo_steps import N, compile_step, leaf_copies, temp_leaves
from tests.registry.robust import robust_cc_adam, robust_krum_adam, robust_nnm_adam


def test_leaf_copies_finds_the_copy_of_a_donated_buffer():
    # The counter itself: a donated buffer returned unchanged next to its own
    # in-place update cannot hold both, so XLA copies it; without donation the
    # update gets a buffer of its own and nothing is copied.
    p = jnp.zeros(N)

    def compiled_text(fn):
        return jax.jit(fn, donate_argnums=0).lower(p).compile().as_text()

    donated = compiled_text(lambda p: (p + 1.0, p))
    assert len(leaf_copies(donated)) == 1
    assert leaf_copies(donated, n=N + 1) == []  # only arrays of n or more elements count
    assert leaf_copies(compiled_text(lambda p: p + 1.0)) == []


# --- signum_vote ------------------------------------------------------------------------


@pytest.mark.parametrize("wire", ["auto", "bits", "int8", "int32"])
@pytest.mark.parametrize("tree", [False, True], ids=["one_leaf", "tree"])
def test_signum_vote_step_copies_no_momentum(wire, tree):
    # The packed signs are read from the momentum the step stores; recomputed from
    # the donated old momentum, the packing loop would run unordered with the
    # in-place update of `mu` and XLA would copy the old one first.
    tx = gdtx.signum_vote(1e-2, 0.9, axis_name="data", wire=wire, weight_decay=1e-3)
    params = jnp.zeros(N)
    if tree:
        params = {"w": jnp.zeros((64, N // 64)), "b": jnp.zeros(N)}
    grads = jax.tree.map(jnp.ones_like, params)
    compiled = compile_step(tx, params, grads, axis_name="data")
    assert leaf_copies(compiled.as_text()) == []
    # Only the wire payload is temporary: the signs sent and the sum received (an
    # int8 psum on one device, which "auto" picks there: half a float32 leaf; two
    # leaves for int32), or the packed bits (under 1/8 of a leaf).
    payload = {"auto": 0.55, "bits": 0.15, "int8": 0.55, "int32": 2.05}[wire]
    assert temp_leaves(compiled, sum(x.size for x in jax.tree.leaves(params))) <= payload


# --- SAM and ASAM -----------------------------------------------------------------------


def _sam_extra():
    return {"grad_fn": jax.grad(lambda p: 0.5 * sum(jnp.sum(x**2) for x in jax.tree.leaves(p)))}


@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
@pytest.mark.parametrize("momentum", [None, 0.9], ids=["sgd", "heavy_ball"])
def test_sam_step_copies_no_gradient_and_keeps_one_temporary(adaptive, momentum):
    # The unperturbed branch returns a select of g (a branch returning its operand
    # is a copy of g on every step), and the perturbed branch rebuilds T and T g
    # from w and g (arrays that enter a conditional are materialised first).
    tx = gdtx.sam(optax.sgd(0.1, momentum=momentum), 0.05, adaptive=adaptive)
    params = jnp.zeros(N)
    compiled = compile_step(tx, params, jnp.ones(N), extra=_sam_extra())
    assert leaf_copies(compiled.as_text()) == []
    # The one temporary is the gradient at w + e (the conditional's result).
    assert temp_leaves(compiled) < 1.1


# --- local SGD: DiLoCo and periodic averaging ------------------------------------------


@pytest.mark.parametrize("every", [1, 4])
@pytest.mark.parametrize("kind", ["diloco_adam", "mfl_sgd"])
def test_local_sgd_step_copies_no_inner_state(kind, every):
    # The inner optimizer runs on its state's stored (1, ...) layout (a vmap of
    # length one): run on the local view, its new moments were reshaped on the
    # way out, recomputed in the parameter loop, and both donated moments copied.
    if kind == "diloco_adam":
        tx = diloco(optax.adam(1e-2), axis_name="data", every=every, outer_momentum=0.5)
    else:
        tx = periodic_average(optax.sgd(0.1, momentum=0.9), every, "data")
    compiled = compile_step(tx, jnp.zeros(N), jnp.ones(N), axis_name="data")
    assert leaf_copies(compiled.as_text()) == []
    # What is left is the averaging's: the all-reduce's operands (the local model,
    # and MFL's momentum) and a result of its own, even on one device.
    assert temp_leaves(compiled) < {"diloco_adam": 2.1, "mfl_sgd": 3.1}[kind]


# --- diffGrad: the one copy XLA:CPU keeps -----------------------------------------------


def _copied(text: str) -> list[str]:
    """The operands of the leaf-sized copies, e.g. ``["s_0__prev_grad.1", "g.1"]``."""
    return sorted(re.search(r"copy(?:-start)?\(%([^)\s,]+)", c).group(1) for c in leaf_copies(text))


def test_diffgrad_step_copies_no_moment_and_prev_grad_once():
    # The new prev_grad is g, written over the donated old one, which the parameter
    # loop (outside the transformation: apply_updates) still reads for the
    # friction. XLA:CPU orders loops by data dependence only and nothing the
    # transformation returns can depend on that loop, so it saves the old
    # prev_grad first (one copy) and then writes g (the state write itself, a copy
    # of an input). The exact reformulations tried keep this pass or add one (the
    # new prev_grad as a select: 1 copy and 1 more loop; optimisation barriers:
    # expanded before fusion; a materialised friction or update: as many passes).
    # What this pins is that mu and nu are never copied.
    compiled = compile_step(gdtx.diffgrad(1e-2), jnp.zeros(N), jnp.ones(N))
    copied = _copied(compiled.as_text())
    assert len(copied) == 2, copied
    assert copied[0].startswith("g") and "prev_grad" in copied[1], copied
    assert temp_leaves(compiled) < 1.1  # the saved prev_grad


# --- record_grad_norm before Adam: the norm reads g once --------------------------------


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_recorded_norm_reads_the_gradient_without_a_temporary(norm):
    # The l2 norm's g * g is also Adam's: merged into one product with two users,
    # XLA:CPU wrote it to a leaf-sized temporary and reduced that (1 write and 2
    # reads of a leaf instead of 1 read). gdtx.schedules keeps them apart.
    tx = optax.chain(gdtx.schedules.record_grad_norm(norm), optax.adam(1e-2))
    compiled = compile_step(tx, jnp.zeros(N), jnp.ones(N))
    assert leaf_copies(compiled.as_text()) == []
    assert temp_leaves(compiled) < 0.1


# --- robust_mean on one device ----------------------------------------------------------


@pytest.mark.parametrize("factory", [robust_nnm_adam, robust_krum_adam, robust_cc_adam])
@pytest.mark.parametrize("tree", [False, True], ids=["one_leaf", "tree"])
def test_robust_mean_step_on_one_device_makes_no_leaf_temporary(factory, tree):
    # The benchmark's rows: replicated gradients under a one-device shard_map. Their
    # gather is x[None] (gdtx/_core/collectives.py), not an all-gather into a fresh
    # leaf; and centered clipping squares v - x for its norm, so no x - v shared by
    # the norm and the move is written and read back in each iteration.
    params = {"w": jnp.zeros((64, N // 64)), "b": jnp.zeros(N)} if tree else jnp.zeros(N)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    compiled = compile_step(factory(1e-2), params, grads, axis_name="data")
    text = compiled.as_text()
    assert "all-gather" not in text
    assert leaf_copies(text) == []
    assert temp_leaves(compiled) < 0.1


# --- one-sample Frank-Wolfe: the copies XLA:CPU keeps -----------------------------------


def test_one_sample_frank_wolfe_copies_the_parameters_and_prev_params_never_mu():
    # The new prev_params is the current x, written over the donated old x_{t-1}
    # that the estimate's loop still reads, while apply_updates moves x in place
    # after the LMO's norm. Nothing the transformation returns orders those three
    # uses, so XLA:CPU saves x and x_{t-1} first and then writes x into the state
    # (3 copies; an optimisation barrier tying x and prev_params to the estimate is
    # removed before copy insertion and changes nothing). What this pins is that the
    # momentum estimate mu, the largest state write, is never copied.
    loss = lambda p: 0.5 * jnp.sum(p**2)  # noqa: E731
    tx = gdtx.one_sample_frank_wolfe(gdtx.lmo_l2_ball(12.0))
    extra = {"hvp_fn": gdtx.frank_wolfe.hessian_vector_product(loss)}
    compiled = compile_step(tx, jnp.zeros(N), jnp.ones(N), extra=extra)
    copied = _copied(compiled.as_text())
    assert len(copied) == 3 and {"p.1", "s_prev_params.1"} <= set(copied), copied
    assert not any("mu" in c for c in copied), copied
    assert temp_leaves(compiled) < 1.1  # the saved x
