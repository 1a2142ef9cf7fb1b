"""Parity of ``gdtx.diffgrad``, ``gdtx.radam`` and ``gdtx.rectify`` with recorded PyTorch runs.

The fixtures (``fixtures/diffgrad_*.npz`` and ``fixtures/radam_*.npz``, written by
``record_adaptive.py`` from ``torch.optim.RAdam``, ``pytorch-optimizer`` 4.1.0 and
``torch-optimizer`` 0.3.0) hold every step's raw gradient and the parameters every
10th step of 1000, on the problem of ``record.py``. The gradients are replayed in
float64 and the trajectory must match to a relative 1e-6 of the distance travelled
(the metric of ``test_adabelief_reference.py``).

The ``rectify`` wrapper is checked here against the same fixtures and the AdaBelief
ones: wrapped around ``optax.scale_by_adam`` it is ``optax.radam`` exactly and
``torch.optim.RAdam`` exactly at ``eps = 0`` (not at ``eps = 1e-8``: the ``eps``
placement differs); wrapped around ``gdtx.scale_by_belief`` it is the official
rectified AdaBelief within 1e-6 at ``eps = 1e-16`` (not at ``1e-8``), and with
``amsgrad=True`` it is ``pytorch-optimizer``'s ``ams_bound`` + ``rectify``; wrapped around
``gdtx.scale_by_diffgrad`` it is ``pytorch-optimizer``'s ``DiffGrad(rectify=True)``.
"""

from __future__ import annotations

import numpy as np
import optax
import pytest

import gdtx
from tests.reference._replay import (
    TOL,
    describe,
    load,
    names,
    read_config,
    replay,
    replay_error,
    trajectory_error,
)

LEAVES = ("a", "b", "c")
LR = 1e-2
_load = load
ALL = names("diffgrad") + names("radam")
MAPPED = [n for n in ALL if read_config(n)["gdtx_kwargs"] is not None]
UNMAPPED = [n for n in ALL if read_config(n)["gdtx_kwargs"] is None]


def _rectified_diffgrad(learning_rate, *, b1, b2, eps, eps_root):
    inner = gdtx.scale_by_diffgrad(b1, b2, eps, eps_root)
    return _with_lr(gdtx.rectify(inner, b1=b1, b2=b2), learning_rate)


_BUILDERS = {
    "diffgrad": gdtx.diffgrad,
    "radam": gdtx.radam,
    "rectify(scale_by_diffgrad)": _rectified_diffgrad,
}


def _gdtx(fx: dict, **overrides) -> optax.GradientTransformation:
    cfg = fx["config"]
    kwargs = {**(cfg["gdtx_kwargs"] or cfg["nearest_gdtx_kwargs"]), **overrides}
    return _BUILDERS[cfg["gdtx"]](cfg["lr"], **kwargs)


def _error(fx: dict, tx: optax.GradientTransformation) -> tuple[float, str, int]:
    return replay_error(tx, fx)


def _describe(fx: dict, err) -> str:
    return describe(fx, err, "reference", "options")


def _with_lr(direction: optax.GradientTransformation, lr=LR) -> optax.GradientTransformation:
    return optax.chain(direction, optax.scale_by_learning_rate(lr))


# ----------------------------------------------------------------------------
# fixtures and parity


def test_fixtures_are_discovered():
    assert len(names("diffgrad")) == 7 and len(names("radam")) == 7, ALL
    assert {read_config(n)["impl"] for n in ALL} == {"torch", "kozistr", "jettify"}


@pytest.mark.parametrize("name", ALL)
def test_fixture_is_well_formed(name):
    fx = _load(name)
    assert fx["grads"]["a"].shape[0] >= 1000
    assert fx["steps"][0] == 0 and fx["steps"][-1] == fx["grads"]["a"].shape[0]
    for k in LEAVES:
        assert fx["grads"][k].dtype == np.float64 and fx["params"][k].dtype == np.float64
        assert np.all(np.isfinite(fx["params"][k]))
    assert fx["config"]["gdtx"] in _BUILDERS
    assert fx["config"]["lr"] == LR


@pytest.mark.parametrize("name", MAPPED)
def test_gdtx_reproduces_reference(name):
    fx = _load(name)
    err = _error(fx, _gdtx(fx))
    assert err[0] <= TOL, _describe(fx, err)


def test_kozistr_radam_decay_gap_is_exactly_the_skipped_decay():
    # pytorch-optimizer's RAdam (degenerated_to_sgd=False) neither steps nor decays
    # while rho_t < 5 (t <= 5); gdtx decays there too. Every later step is the same
    # affine map p -> (1 - c) p - lr u_t in both (the direction does not depend on p),
    # so the gap is exactly ((1 - c)^t - (1 - c)^max(t - 5, 0)) p_0 with c = lr wd.
    fx = _load(UNMAPPED[0])
    assert UNMAPPED == ["radam_kozistr_decoupled_wd_nosgd"]
    ours = replay(_gdtx(fx), fx)
    err = trajectory_error(ours, fx["params"], fx["steps"])
    assert err[0] > TOL, "the documented gap vanished: " + _describe(fx, err)
    c = fx["config"]["lr"] * fx["config"]["weight_decay"]
    t = fx["steps"].astype(np.float64)
    factor = (1 - c) ** t - (1 - c) ** np.maximum(t - 5, 0)
    for k in LEAVES:
        shape = (-1,) + (1,) * (fx["params"][k].ndim - 1)
        predicted = factor.reshape(shape) * fx["params"][k][0]
        np.testing.assert_allclose(ours[k] - fx["params"][k], predicted, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------
# mutation tests: each convention mistake must fail the metric


def _assert_fails(fx, tx, what):
    err = _error(fx, tx)
    assert err[0] > TOL, f"mutant ({what}) was NOT caught: " + _describe(fx, err)


@pytest.mark.parametrize(
    ("name", "wrong"),
    [("diffgrad_kozistr_default", 0.0), ("diffgrad_jettify_default", 1e-15)],
)
def test_mutant_diffgrad_eps_root_swapped_fails(name, wrong):
    fx = _load(name)
    _assert_fails(fx, _gdtx(fx, eps_root=wrong), f"eps_root={wrong}")


@pytest.mark.parametrize(
    "name",
    [
        "diffgrad_kozistr_decoupled_wd",
        "diffgrad_kozistr_fixed_decay",
        "diffgrad_kozistr_l2",
        "diffgrad_jettify_l2",
        "radam_torch_l2",
        "radam_torch_decoupled_wd",
    ],
)
def test_mutant_wrong_weight_decay_mode_fails(name):
    fx = _load(name)
    right = fx["config"]["gdtx_kwargs"]["weight_decay_mode"]
    for mode in {"decoupled", "fixed", "l2"} - {right}:
        _assert_fails(fx, _gdtx(fx, weight_decay_mode=mode), f"weight_decay_mode={mode}")


@pytest.mark.parametrize("name", ["radam_torch_default", "radam_kozistr_default"])
def test_mutant_radam_flipped_degenerated_to_sgd_fails(name):
    fx = _load(name)
    flipped = not fx["config"]["gdtx_kwargs"]["degenerated_to_sgd"]
    _assert_fails(fx, _gdtx(fx, degenerated_to_sgd=flipped), "flipped degenerated_to_sgd")


def test_mutant_radam_threshold_4_fails():
    # rho_5 = 4.0 + O(1e-3) for b2 = 0.999: a threshold of 4 rectifies step 5.
    fx = _load("radam_torch_default")
    _assert_fails(fx, _gdtx(fx, threshold=4.0), "threshold=4")


# ---- mutants gdtx cannot express: a numpy twin of diffGrad


def _numpy_diffgrad(
    fx: dict,
    *,
    raw_grad_as_previous: bool = False,
    eps_bias_corrected: bool = False,
    friction_half_at_first_step: bool = False,
) -> dict:
    """Test-local float64 diffGrad, correct with all defaults.

    ``raw_grad_as_previous`` stores the gradient before the L2 term as ``g_prev``;
    ``eps_bias_corrected`` uses ``m_hat / (sqrt(v_hat + eps_root) + eps)``;
    ``friction_half_at_first_step`` starts from ``g_prev = g_1`` (friction 1/2).
    """
    kw, steps = fx["config"]["gdtx_kwargs"], fx["steps"]
    b1, b2, eps, eps_root = kw["b1"], kw["b2"], kw["eps"], kw["eps_root"]
    wd, mode = kw["weight_decay"], kw["weight_decay_mode"]
    p = {k: fx["params"][k][0].copy() for k in LEAVES}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    prev = {k: np.zeros_like(x) for k, x in p.items()}
    stored = {k: [p[k].copy()] for k in LEAVES}
    for t in range(1, fx["grads"]["a"].shape[0] + 1):
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        for k in LEAVES:
            raw = fx["grads"][k][t - 1]
            g = raw + wd * p[k] if mode == "l2" else raw
            if t == 1 and friction_half_at_first_step:
                prev[k] = g
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g * g
            xi = 1 / (1 + np.exp(-np.abs(prev[k] - g)))
            if eps_bias_corrected:
                u = xi * (m[k] / bc1) / (np.sqrt(v[k] / bc2 + eps_root) + eps)
            else:
                u = np.sqrt(bc2) / bc1 * xi * m[k] / (np.sqrt(v[k] + eps_root) + eps)
            prev[k] = raw if raw_grad_as_previous else g
            decay = {"decoupled": LR * wd, "fixed": wd, "l2": 0.0}[mode]
            p[k] = p[k] * (1 - decay) - LR * u
            if t in steps:
                stored[k].append(p[k].copy())
    return {k: np.stack(x) for k, x in stored.items()}


@pytest.mark.parametrize(
    ("name", "mutation"),
    [
        ("diffgrad_kozistr_l2", "raw_grad_as_previous"),
        ("diffgrad_jettify_l2", "raw_grad_as_previous"),
        ("diffgrad_kozistr_default", "eps_bias_corrected"),
        ("diffgrad_jettify_default", "friction_half_at_first_step"),
    ],
)
def test_numpy_diffgrad_mutant_fails(name, mutation):
    fx = _load(name)
    good = trajectory_error(_numpy_diffgrad(fx), fx["params"], fx["steps"])
    assert good[0] <= TOL, "the numpy twin itself is wrong: " + _describe(fx, good)
    bad = trajectory_error(_numpy_diffgrad(fx, **{mutation: True}), fx["params"], fx["steps"])
    assert bad[0] > TOL, f"mutant {mutation} was NOT caught: " + _describe(fx, bad)


# ----------------------------------------------------------------------------
# rectify: the equalities its docstring claims


def test_rectified_optax_adam_is_torch_radam_at_eps_zero():
    fx = _load("radam_torch_eps0")
    err = _error(fx, _with_lr(gdtx.rectify(optax.scale_by_adam(eps=0.0))))
    assert err[0] <= 1e-12, _describe(fx, err)


def test_rectified_optax_adam_is_not_torch_radam_at_eps_1e_8():
    # optax.scale_by_adam puts eps on the bias-corrected root; torch on the raw one.
    fx = _load("radam_torch_default")
    _assert_fails(fx, _with_lr(gdtx.rectify(optax.scale_by_adam(eps=1e-8))), "optax eps")


def test_rectified_optax_adam_is_optax_radam():
    fx = _load("radam_torch_default")
    ours = replay(_with_lr(gdtx.rectify(optax.scale_by_adam(eps=1e-8))), fx)
    theirs = replay(optax.radam(LR, eps=1e-8), fx)
    err = trajectory_error(ours, theirs, fx["steps"])
    assert err[0] <= 1e-12, f"rectify(optax.scale_by_adam) vs optax.radam: {err}"


@pytest.mark.parametrize(
    ("name", "degenerated_to_sgd"),
    [
        ("adabelief_official_rectify_eps1e-16", True),
        ("adabelief_official_rectify_nosgd_eps1e-16", False),
    ],
)
def test_rectified_belief_is_official_rectified_adabelief_at_eps_1e_16(name, degenerated_to_sgd):
    # Only the eps placement differs (eps vs eps / sqrt(bc2) next to sqrt(s_t / bc2)):
    # ~1e-10 relative here, four orders of magnitude inside the tolerance.
    fx = _load(name)
    inner = gdtx.scale_by_belief(eps=1e-16, eps_root=1e-16)
    tx = _with_lr(gdtx.rectify(inner, degenerated_to_sgd=degenerated_to_sgd))
    err = _error(fx, tx)
    assert err[0] <= TOL * 1e-2, _describe(fx, err)


def test_rectified_belief_is_not_official_rectified_adabelief_at_eps_1e_8():
    fx = _load("adabelief_official_rectify_eps1e-8")
    inner = gdtx.scale_by_belief(eps=1e-8, eps_root=1e-8)
    _assert_fails(fx, _with_lr(gdtx.rectify(inner)), "eps placement at eps=1e-8")


def test_rectified_diffgrad_needs_the_rectification():
    # The fixture's match (test_gdtx_reproduces_reference) is not vacuous: plain
    # diffGrad, or the wrapper without its momentum fallback, is far from it.
    fx = _load("diffgrad_kozistr_rectify")
    kw = fx["config"]["gdtx_kwargs"]
    _assert_fails(fx, gdtx.diffgrad(LR, **kw), "no rectification")
    inner = gdtx.scale_by_diffgrad(**kw)
    _assert_fails(fx, _with_lr(gdtx.rectify(inner, degenerated_to_sgd=False)), "no fallback")


def test_rectified_amsgrad_belief_is_kozistr_not_official():
    # rectify multiplies the inner's AMSGrad direction, so its rectified step divides by
    # the running maximum: pytorch-optimizer's ams_bound + rectify, which the official
    # package (and gdtx.scale_by_belief(amsgrad=True, rectify=True)) does not do.
    tx = _with_lr(gdtx.rectify(gdtx.scale_by_belief(amsgrad=True)))
    koz = _load("adabelief_kozistr_ams_bound_rectify")
    err = _error(koz, tx)
    assert err[0] <= TOL, _describe(koz, err)
    _assert_fails(
        _load("adabelief_official_amsgrad_rectify_eps1e-16"), tx, "max in the rectified branch"
    )
