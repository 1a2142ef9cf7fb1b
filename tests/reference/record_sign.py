"""Record float64 signSGD / Signum reference trajectories from ``pytorch-optimizer``.

Run by hand (never by CI), with an interpreter that has torch 2.13.0 CPU and
``pytorch-optimizer`` 4.1.0 installed, from the repository root::

    /tmp/refvenv/bin/python tests/reference/record_sign.py

It (re)writes ``tests/reference/fixtures/sign_<case>.npz``. The problem (three
float64 leaves with gradient scales ~1e7 apart, scheduled Gaussian noise, 1000
steps) and the npz layout are those of ``record_adabelief.py`` (see the README); the
replay test is ``test_sign_reference.py``. torch is imported only in
:func:`main`, so pytest can import this module without it; the shared plumbing is in
``_recording.py``.

``pytorch_optimizer.SignSGD(lr, momentum, weight_decay, weight_decouple)`` is the
reference: ``momentum=0`` is signSGD, ``momentum>0`` Signum with the EMA
``buf.lerp_(grad, 1 - momentum)`` and the step ``p -= lr * sign(buf)``; the
decay is decoupled (``p *= 1 - lr wd``) unless ``weight_decouple=False`` (L2).
"""

from __future__ import annotations

import os
import pathlib
import sys

_ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # run as a script: make `tests` importable
    sys.path.insert(0, str(_ROOT))

from tests.reference import _recording  # noqa: E402
from tests.reference.record_adabelief import (  # noqa: E402
    FIXTURE_DIR,
    INITIAL,
    NUM_STEPS,
    STORE_EVERY,
    leaf_loss,
    make_noise,
)

LR = 1e-2


def cases():
    """(name, SignSGD kwargs, gdtx alias name, gdtx kwargs besides learning_rate)."""
    return [
        ("sign_sgd", {"momentum": 0.0}, "sign_sgd", {}),
        (
            "sign_sgd_decoupled_wd",
            {"momentum": 0.0, "weight_decay": 5e-2},
            "sign_sgd",
            {"weight_decay": 5e-2},
        ),
        (
            "sign_sgd_l2",
            {"momentum": 0.0, "weight_decay": 5e-2, "weight_decouple": False},
            "sign_sgd",
            {"weight_decay": 5e-2, "weight_decay_mode": "l2"},
        ),
        ("signum", {"momentum": 0.9}, "signum", {"beta": 0.9}),
        ("signum_beta0.5", {"momentum": 0.5}, "signum", {"beta": 0.5}),
        (
            "signum_decoupled_wd",
            {"momentum": 0.9, "weight_decay": 5e-2},
            "signum",
            {"beta": 0.9, "weight_decay": 5e-2},
        ),
        (
            "signum_l2",
            {"momentum": 0.9, "weight_decay": 5e-2, "weight_decouple": False},
            "signum",
            {"beta": 0.9, "weight_decay": 5e-2, "weight_decay_mode": "l2"},
        ),
    ]


def run_case(torch, opt_cls, options, noise, num_steps):
    # gradients are recorded BEFORE step(): the L2 mode adds wd * p to p.grad in place
    opt_kwargs = {"lr": LR, **options}
    return _recording.record_case(
        torch, opt_cls, opt_kwargs, INITIAL, leaf_loss, noise, num_steps, STORE_EVERY
    )


def main(argv=None):
    args = _recording.parse_args(__doc__.splitlines()[0], FIXTURE_DIR, NUM_STEPS, argv)

    import importlib.metadata as md

    torch = _recording.setup_torch()
    from pytorch_optimizer import SignSGD

    versions = {"torch": torch.__version__, "pytorch-optimizer": md.version("pytorch-optimizer")}
    noise = make_noise(args.steps)
    for name, options, alias, gdtx_kwargs in cases():
        if not _recording.selected(name, args.only):
            continue
        grads, steps, params = run_case(torch, SignSGD, options, noise, args.steps)
        config = {
            "impl": "kozistr",
            "lr": LR,
            "options": options,
            "gdtx_alias": alias,
            "gdtx_kwargs": gdtx_kwargs,
            "num_steps": args.steps,
            "versions": versions,
        }
        path = _recording.write_fixture(args.out / f"sign_{name}.npz", config, steps, grads, params)
        disp = _recording.max_displacement(params)
        print(f"sign_{name}: {os.path.getsize(path) / 1024:.0f} KiB  max displacement {disp}")


if __name__ == "__main__":
    main()
