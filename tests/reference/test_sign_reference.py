"""Parity of ``gdtx.sign_sgd`` / ``gdtx.signum`` with recorded ``pytorch-optimizer`` runs.

The fixtures (``fixtures/sign_*.npz``, written by ``record_sign.py`` from
``pytorch-optimizer`` 4.1.0's ``SignSGD``) hold every step's raw gradient and the
parameters every 10th step of 1000. The gradients are replayed in float64 and
the trajectory must match to a relative 1e-6 of the distance travelled (the
metric of ``test_adabelief_reference.py``). A sign method moves every
coordinate by exactly ``lr`` per step, so a single wrong sign anywhere is an
error of ``2 lr`` against a displacement of a few units: about 1e-2, far above
the tolerance. The mutation tests below show that each plausible convention
mistake is caught, and that the one reformulation the module docs call
equivalent (heavy-ball momentum) really is.
"""

from __future__ import annotations

import numpy as np
import optax
import pytest

import gdtx
from tests.reference._replay import TOL, describe, load, names, replay_error, trajectory_error

LEAVES = ("a", "b", "c")
NAMES = names("sign")
_load = load


def _gdtx(fx: dict, **overrides) -> optax.GradientTransformation:
    cfg = fx["config"]
    alias = getattr(gdtx, cfg["gdtx_alias"])
    return alias(cfg["lr"], **{**cfg["gdtx_kwargs"], **overrides})


def _error(fx, tx) -> tuple[float, str, int]:
    return replay_error(tx, fx)


def _describe(fx, err) -> str:
    return describe(fx, err, "options", "gdtx_alias", "gdtx_kwargs")


def test_fixtures_present_and_well_formed():
    assert len(NAMES) == 7, NAMES
    for name in NAMES:
        fx = _load(name)
        assert fx["grads"]["a"].shape[0] >= 1000
        assert fx["steps"][0] == 0 and fx["steps"][-1] == fx["grads"]["a"].shape[0]
        for k in LEAVES:
            assert np.all(np.isfinite(fx["params"][k]))
            # every coordinate's gradient is non-zero: sign(0) is tested in test_sign.py
            assert np.all(fx["grads"][k] != 0)
            # the trajectory really moves, by more than a few hundred steps of lr
            assert np.max(np.abs(fx["params"][k][-1] - fx["params"][k][0])) > 100 * 1e-2 - 1e-9


@pytest.mark.parametrize("name", NAMES)
def test_gdtx_reproduces_pytorch_optimizer(name):
    fx = _load(name)
    err = _error(fx, _gdtx(fx))
    assert err[0] <= TOL, _describe(fx, err)


@pytest.mark.parametrize("name", ["sign_sign_sgd", "sign_signum", "sign_signum_beta0.5"])
def test_optax_agrees(name):
    # optax 0.2.8's sign_sgd / signum (EMA momentum, no decay) are the same method.
    fx = _load(name)
    beta = fx["config"]["gdtx_kwargs"].get("beta")
    tx = optax.sign_sgd(fx["config"]["lr"]) if beta is None else optax.signum(0.01, beta)
    err = _error(fx, tx)
    assert err[0] <= TOL, "optax: " + _describe(fx, err)


# ----------------------------------------------------------------------------
# mutation tests


def _assert_caught(fx, tx, what):
    err = _error(fx, tx)
    assert err[0] > TOL, f"mutant ({what}) was NOT caught: " + _describe(fx, err)


@pytest.mark.parametrize("name", ["sign_signum", "sign_signum_beta0.5"])
def test_mutant_wrong_beta_fails(name):
    fx = _load(name)
    beta = fx["config"]["gdtx_kwargs"]["beta"]
    for wrong in (0.0, 0.99, 0.9 if beta != 0.9 else 0.5):
        _assert_caught(fx, _gdtx(fx, beta=wrong), f"beta={wrong}")


@pytest.mark.parametrize(
    ("name", "wrong_mode"),
    [
        ("sign_sign_sgd_decoupled_wd", "l2"),
        ("sign_sign_sgd_l2", "decoupled"),
        ("sign_signum_decoupled_wd", "l2"),
        ("sign_signum_l2", "decoupled"),
    ],
)
def test_mutant_wrong_weight_decay_fails(name, wrong_mode):
    fx = _load(name)
    _assert_caught(fx, _gdtx(fx, weight_decay_mode=wrong_mode), f"mode {wrong_mode}")
    _assert_caught(fx, _gdtx(fx, weight_decay=0.0), "weight_decay=0")
    # the "fixed" decay p <- p (1 - wd) - lr u of AdaBelief is not a sign-family mode
    fixed = optax.chain(
        gdtx.scale_by_signum(fx["config"]["gdtx_kwargs"].get("beta", 0.0)),
        optax.scale_by_learning_rate(fx["config"]["lr"]),
        optax.add_decayed_weights(-fx["config"]["gdtx_kwargs"]["weight_decay"]),
    )
    _assert_caught(fx, fixed, "fixed decay")


def _momentum_twin(
    fx: dict, *, heavy_ball: bool = False, nesterov: bool = False, previous: bool = False
):
    """Test-local float64 Signum without decay, with convention mutations."""
    cfg = fx["config"]
    lr, beta = cfg["lr"], cfg["gdtx_kwargs"]["beta"]
    p = {k: fx["params"][k][0].copy() for k in LEAVES}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    stored = {k: [p[k].copy()] for k in LEAVES}
    for t in range(1, fx["grads"]["a"].shape[0] + 1):
        for k in LEAVES:
            g = fx["grads"][k][t - 1]
            m_prev = m[k]
            m[k] = beta * m[k] + (g if heavy_ball else (1 - beta) * g)
            if nesterov:
                direction = beta * m[k] + (1 - beta) * g
            elif previous:
                direction = m_prev if t > 1 else g
            else:
                direction = m[k]
            p[k] = p[k] - lr * np.sign(direction)
            if t in fx["steps"]:
                stored[k].append(p[k].copy())
    return {k: np.stack(v) for k, v in stored.items()}


@pytest.mark.parametrize("name", ["sign_signum", "sign_signum_beta0.5"])
def test_momentum_conventions(name):
    fx = _load(name)

    def err(**kw):
        return trajectory_error(_momentum_twin(fx, **kw), fx["params"], fx["steps"])

    assert err()[0] <= TOL, "the twin itself: " + _describe(fx, err())
    # heavy-ball m = b m + g is (1 - b)^-1 times the EMA: the same signs (module docs)
    assert err(heavy_ball=True)[0] <= TOL, _describe(fx, err(heavy_ball=True))
    assert err(nesterov=True)[0] > TOL, "Nesterov mutant NOT caught: " + _describe(fx, err())
    assert err(previous=True)[0] > TOL, "sign(m_{t-1}) mutant NOT caught"
