"""The three weight-decay modes, each against its formula.

``optax.scale_by_sign`` is the direction here because it is non-linear: with a
linear direction "l2" and "decoupled" would coincide and a mix-up could pass.
"""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gdtx._core.weight_decay import chain_with_weight_decay

LR, WD = 0.1, 0.3
PARAMS = {"w": jnp.array([2.0, -1.0, 0.5]), "b": jnp.array([4.0])}
GRADS = {"w": jnp.array([-0.1, 0.2, 0.3]), "b": jnp.array([-5.0])}


def _one_step(mode, weight_decay=WD, learning_rate=LR, mask=None):
    tx = chain_with_weight_decay(
        optax.scale_by_sign(),
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        weight_decay_mode=mode,
        mask=mask,
        owner="test",
    )
    updates, _ = tx.update(GRADS, tx.init(PARAMS), PARAMS)
    return updates


def _expected(mode, decays=(True, True)):
    wd = {"w": WD * decays[0], "b": WD * decays[1]}
    out = {}
    for k in PARAMS:
        p, g = np.asarray(PARAMS[k]), np.asarray(GRADS[k])
        if mode == "decoupled":  # p (1 - lr wd) - lr sign(g)
            out[k] = -LR * (np.sign(g) + wd[k] * p)
        elif mode == "fixed":  # p (1 - wd) - lr sign(g)
            out[k] = -LR * np.sign(g) - wd[k] * p
        else:  # l2: -lr sign(g + wd p)
            out[k] = -LR * np.sign(g + wd[k] * p)
    return out


@pytest.mark.parametrize("mode", ["decoupled", "fixed", "l2"])
def test_each_mode_matches_its_formula(mode):
    updates = _one_step(mode)
    for k in PARAMS:
        np.testing.assert_allclose(updates[k], _expected(mode)[k], rtol=1e-6)


def test_the_modes_really_differ_on_this_problem():
    e = {mode: _expected(mode) for mode in ("decoupled", "fixed", "l2")}
    for a, b in [("decoupled", "fixed"), ("decoupled", "l2"), ("fixed", "l2")]:
        assert not np.allclose(e[a]["w"], e[b]["w"]), (a, b)


@pytest.mark.parametrize("mode", ["decoupled", "fixed", "l2"])
def test_weight_decay_may_be_a_schedule(mode):
    scheduled = _one_step(mode, weight_decay=optax.constant_schedule(WD))
    for k in PARAMS:
        np.testing.assert_allclose(scheduled[k], _expected(mode)[k], rtol=1e-6)


@pytest.mark.parametrize("mode", ["decoupled", "fixed", "l2"])
def test_mask_selects_what_decays(mode):
    updates = _one_step(mode, mask={"w": True, "b": False})
    for k in PARAMS:
        np.testing.assert_allclose(updates[k], _expected(mode, (True, False))[k], rtol=1e-6)


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match=r"test: `weight_decay_mode` must be one of"):
        _one_step("adamw")


@pytest.mark.parametrize("mode", ["decoupled", "fixed", "l2"])
def test_update_without_params_works_when_nothing_decays(mode):
    # optax.adabelief(lr).update(g, state) needs no params; gdtx's always-present
    # decay transformation used to demand them even at weight_decay=0.
    tx = chain_with_weight_decay(
        optax.scale_by_sign(),
        learning_rate=LR,
        weight_decay=0.0,
        weight_decay_mode=mode,
        mask=None,
        owner="gdtx.test_alias",
    )
    updates, _ = tx.update(GRADS, tx.init(PARAMS))
    np.testing.assert_allclose(updates["w"], -LR * np.sign(GRADS["w"]))


@pytest.mark.parametrize("weight_decay", [WD, optax.constant_schedule(WD)])
def test_update_without_params_says_that_decay_needs_them(weight_decay):
    tx = chain_with_weight_decay(
        optax.scale_by_sign(),
        learning_rate=LR,
        weight_decay=weight_decay,
        weight_decay_mode="decoupled",
        mask=None,
        owner="gdtx.test_alias",
    )
    with pytest.raises(ValueError, match=r"gdtx\.test_alias: weight decay needs the parameters"):
        tx.update(GRADS, tx.init(PARAMS))


def test_the_alias_refuses_integer_and_unsupported_complex_params_at_init():
    def make(allow_complex):
        return chain_with_weight_decay(
            optax.scale_by_sign(),
            learning_rate=LR,
            weight_decay=WD,
            weight_decay_mode="decoupled",
            mask=None,
            owner="gdtx.test_alias",
            allow_complex=allow_complex,
        )

    with pytest.raises(TypeError, match=r"gdtx\.test_alias updates floating-point parameters"):
        make(True).init({"w": jnp.arange(3)})
    make(True).init({"w": jnp.zeros(3, jnp.complex64)})
    with pytest.raises(TypeError, match=r"gdtx\.test_alias does not support complex"):
        make(False).init({"w": jnp.zeros(3, jnp.complex64)})
