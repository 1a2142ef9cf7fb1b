"""Parity of ``gdtx.msvag`` with recorded ``pytorch-optimizer`` M-SVAG trajectories.

The fixtures (``fixtures/msvag_*.npz``, written by ``record_msvag.py`` from
``pytorch-optimizer`` 4.1.0, the first release with the ``1 - beta^t`` bias
correction) hold 3000 steps of gradients and the parameters every 10th step.
They are replayed through ``gdtx.msvag`` in float64 and through an independent
NumPy transcription of the paper's Algorithm 2 / the authors' TensorFlow code
(``lballes/msvag``); both must match to 1e-6 of the displacement. Mutants of the
transcription (the ``beta^t`` bias correction that made ``pytorch-optimizer`` go NaN
near step 500, a ``rho`` without its ``(1 + beta)``, ...) must not.
"""

from __future__ import annotations

import numpy as np
import pytest

import gdtx
from tests.reference._replay import TOL, load, names, replay, trajectory_error

LEAVES = ("a", "b", "c", "d")
NAMES = names("msvag")
_load = load


@pytest.fixture(scope="session", params=NAMES)
def fixture(request):
    return _load(request.param)


def test_fixtures_present_and_well_formed():
    # An empty glob would make the parametrised tests vanish silently: fail instead.
    assert NAMES == ["msvag_beta05_loop", "msvag_default"], NAMES
    for name in NAMES:
        fx = _load(name)
        assert fx["grads"]["a"].shape[0] >= 3000
        assert fx["steps"][0] == 0 and fx["steps"][-1] == fx["grads"]["a"].shape[0]
        assert fx["config"]["versions"]["pytorch-optimizer"] >= "4.1.0"
        for k in LEAVES:
            assert fx["params"][k].dtype == np.float64
            assert np.all(np.isfinite(fx["params"][k]))
        # d[0] never sees a gradient: the 0/0 -> gamma = 0 case must keep it still.
        assert np.all(fx["grads"]["d"][:, 0] == 0)
        assert np.all(fx["params"]["d"][:, 0] == fx["params"]["d"][0, 0])


def _error(params: dict, fx: dict) -> float:
    """The worst relative error of ``params`` against the fixture (``_replay.trajectory_error``)."""
    return trajectory_error(params, fx["params"], fx["steps"])[0]


def numpy_msvag(fx: dict, *, rho_max=0.999, mutant=None) -> dict:
    """The paper's Algorithm 2 as in ``lballes/msvag``'s ``MSVAGOptimizer``, in NumPy float64.

    ``mutant`` names one deliberate convention mistake (see the test below).
    """
    lr, beta = fx["config"]["lr"], fx["config"]["beta"]
    steps = set(fx["steps"].tolist())
    p = {k: fx["params"][k][0].copy() for k in LEAVES}
    m_tilde = {k: np.zeros_like(p[k]) for k in LEAVES}
    v_tilde = {k: np.zeros_like(p[k]) for k in LEAVES}
    out = {k: [p[k].copy()] for k in LEAVES}
    num_steps = fx["grads"]["a"].shape[0]
    with np.errstate(all="ignore"):
        for t in range(1, num_steps + 1):
            bp = beta**t  # the code's beta_power, t counted from 1
            rho = (1 - beta) ** 2 * (1 - bp**2) / ((1 - bp) ** 2 * (1 - beta**2))
            if mutant == "rho_without_1_plus_beta":
                rho = (1 - beta) * (1 + bp) / (1 - bp)
            rho = min(rho, rho_max)
            bc = bp if mutant == "bias_correction_beta_t" else 1 - bp
            for k in LEAVES:
                g = fx["grads"][k][t - 1]
                m_tilde[k] = beta * m_tilde[k] + (1 - beta) * g
                v_tilde[k] = beta * v_tilde[k] + (1 - beta) * g * g
                m, v = m_tilde[k] / bc, v_tilde[k] / bc
                if mutant == "no_bias_correction":
                    m, v = m_tilde[k], v_tilde[k]
                s = (v - m * m) / (1 - rho)
                # the mutant takes gamma = m^2 / (m^2 + s): the noise of one gradient
                rho_gamma = 1.0 if mutant == "variance_of_one_gradient" else rho
                factor = np.clip(m * m / (m * m + rho_gamma * s), 0.0, 1.0)
                factor = np.where(np.isnan(factor), 0.0, factor)
                direction = g if mutant == "factor_times_gradient" else m
                p[k] = p[k] - lr * factor * direction
                if t in steps:
                    out[k].append(p[k].copy())
    return {k: np.stack(v) for k, v in out.items()}


def test_gdtx_reproduces_pytorch_optimizer(fixture):
    tx = gdtx.msvag(fixture["config"]["lr"], **fixture["config"]["gdtx_kwargs"])
    err = _error(replay(tx, fixture), fixture)
    assert err <= TOL, err


@pytest.mark.parametrize("rho_max", [0.999, 0.9999], ids=["authors_clip", "kozistr_clip"])
def test_numpy_transcription_of_the_paper_reproduces_it(fixture, rho_max):
    # Both clips of rho agree with the reference: the clip only acts at t = 1.
    err = _error(numpy_msvag(fixture, rho_max=rho_max), fixture)
    assert err <= 1e-10, err


@pytest.mark.parametrize(
    ("mutant", "at_least"),
    [
        ("bias_correction_beta_t", 1e3),  # pytorch-optimizer < 4.1: NaN near step 500
        ("rho_without_1_plus_beta", 1e-4),  # pytorch-optimizer < 4.1
        ("no_bias_correction", 1e-4),
        ("variance_of_one_gradient", 1e-3),
        ("factor_times_gradient", 1e-3),  # the authors' SVAGOptimizer direction
    ],
)
def test_tolerance_catches_convention_mistakes(fixture, mutant, at_least):
    err = _error(numpy_msvag(fixture, mutant=mutant), fixture)
    assert err > TOL and err >= at_least, (mutant, err)
