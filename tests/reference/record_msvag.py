"""Record float64 M-SVAG reference trajectories from ``pytorch-optimizer``'s ``MSVAG``.

Run by hand (never by CI), with an interpreter that has torch 2.13.0 CPU and
``pytorch-optimizer>=4.1.0`` (the first release whose ``MSVAG`` bias-corrects by
``1 - beta^t`` and has the ``(1 + beta)`` in ``rho``)::

    /tmp/refvenv/bin/python tests/reference/record_msvag.py

It (re)writes ``tests/reference/fixtures/msvag_<case>.npz``, replayed through
``gdtx.msvag`` by ``test_msvag_reference.py``. Importable without torch (torch is
imported inside :func:`main`; the shared plumbing is in ``_recording.py``); not named
``test_*``, so pytest never collects it.

npz layout (the same as the AdaBelief fixtures, see ``README.md``):

* ``config``   0-d JSON string: ``impl``, ``lr``, ``beta``, ``options`` (the kwargs
  given to ``MSVAG``), ``gdtx_kwargs`` (kwargs of ``gdtx.msvag`` besides
  ``learning_rate``), ``num_steps``, ``versions``, ``note``.
* ``steps``    int64 (K,) stored step indices; 0 is the initial point.
* ``grads/L``  float64 (T, *shape): row t is the gradient used by step t+1.
* ``params/L`` float64 (K, *shape): parameters after ``steps[k]`` steps.

The problem: four leaves whose gradients differ in scale and signal-to-noise
ratio, so that ``gamma`` covers ``[0, 1]``:

====  ======  ================================================  ==============
leaf  shape   deterministic loss                                noise std
====  ======  ================================================  ==============
a     (3,)    ``1e-3 * 0.5 * sum(h (a - a*)^2)``                 3e-3 (SNR < 1)
b     (2, 2)  one Rosenbrock valley ``(1-x)^2 + 5 (y-x^2)^2``    0.3
            per row
c     (4,)    ``10 sum(h (c - c*)^2) + sum(sin 2c) + c.b``       2.0
d     (3,)    ``0.5 sum(d[1:]^2)``; ``d[0]`` gets no gradient    0.1 on d[1:]
              and no noise at all (``m = v = 0``: the 0/0 case)
====  ======  ================================================  ==============
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

_ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # run as a script: make `tests` importable
    sys.path.insert(0, str(_ROOT))

from tests.reference import _recording  # noqa: E402

LEAVES = ("a", "b", "c", "d")
NUM_STEPS = 3000
STORE_EVERY = 10
NOISE_SEED = 20260923
LR = 1e-2

FIXTURE_DIR = pathlib.Path(__file__).resolve().parent / "fixtures"

A_TARGET = np.array([1.0, -2.0, 3.0])
A_CURV = np.array([1.0, 0.5, 2.0])
A_INIT = np.array([0.3, 0.7, 1.2])
B_INIT = np.array([[-1.2, 1.0], [1.7, 2.5]])
C_TARGET = np.array([1.5, -0.5, 2.0, -1.0])
C_CURV = np.array([0.5, 1.0, 2.0, 0.75])
C_INIT = np.array([-0.5, 1.5, 0.0, 1.0])
D_INIT = np.array([0.25, 2.0, -1.5])
INITIAL = {"a": A_INIT, "b": B_INIT, "c": C_INIT, "d": D_INIT}
NOISE_STD = {"a": 3e-3, "b": 0.3, "c": 2.0, "d": np.array([0.0, 0.1, 0.1])}

# (name, MSVAG kwargs besides lr, gdtx.msvag kwargs besides learning_rate, note)
CASES = (
    ("msvag_default", {}, {"beta": 0.9}, "MSVAG defaults (beta=0.9), foreach path"),
    (
        "msvag_beta05_loop",
        {"beta": 0.5, "foreach": False},
        {"beta": 0.5},
        "beta=0.5 (rho_inf = 1/3), per-parameter loop instead of foreach",
    ),
)


def make_noise(num_steps: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(NOISE_SEED)
    return {k: rng.standard_normal((num_steps, *INITIAL[k].shape)) * NOISE_STD[k] for k in LEAVES}


def loss_fn(torch, p):
    a, b, c, d = (p[k] for k in LEAVES)
    loss_a = 1e-3 * 0.5 * (torch.as_tensor(A_CURV) * (a - torch.as_tensor(A_TARGET)) ** 2).sum()
    x, y = b[:, 0], b[:, 1]
    loss_b = ((1.0 - x) ** 2 + 5.0 * (y - x**2) ** 2).sum()
    dc = c - torch.as_tensor(C_TARGET)
    loss_c = (
        10.0 * (torch.as_tensor(C_CURV) * dc**2).sum()
        + torch.sin(2.0 * c).sum()
        + c[:2].sum() * b.sum()
    )
    loss_d = 0.5 * (d[1:] ** 2).sum()
    return loss_a + loss_b + loss_c + loss_d


def run_case(torch, opt_cls, options, noise, num_steps):
    opt_kwargs = {"lr": LR, **options}
    return _recording.record_case(
        torch, opt_cls, opt_kwargs, INITIAL, loss_fn, noise, num_steps, STORE_EVERY
    )


def main(argv=None):
    args = _recording.parse_args(__doc__.splitlines()[0], FIXTURE_DIR, NUM_STEPS, argv)

    import importlib.metadata as md

    from pytorch_optimizer import MSVAG

    version = md.version("pytorch-optimizer")
    if tuple(int(x) for x in version.split(".")[:2]) < (4, 1):
        raise SystemExit(f"pytorch-optimizer {version} has the beta^t bug; need >= 4.1.0")
    torch = _recording.setup_torch()

    versions = {"torch": torch.__version__, "pytorch-optimizer": version}
    noise = make_noise(args.steps)
    for name, options, gdtx_kwargs, note in CASES:
        if not _recording.selected(name, args.only):
            continue
        grads, steps, params = run_case(torch, MSVAG, options, noise, args.steps)
        config = {
            "impl": "pytorch-optimizer MSVAG",
            "lr": LR,
            "beta": gdtx_kwargs["beta"],
            "options": options,
            "gdtx_kwargs": gdtx_kwargs,
            "num_steps": args.steps,
            "versions": versions,
            "note": note,
        }
        path = _recording.write_fixture(args.out / f"{name}.npz", config, steps, grads, params)
        disp = _recording.max_displacement(params)
        print(f"{path.name}: {args.steps} steps, displacement {disp}")


if __name__ == "__main__":
    main()
