"""Record float64 signSGD / Signum reference trajectories from ``pytorch-optimizer``.

Run by hand (never by CI), with an interpreter that has torch 2.13.0 CPU and
``pytorch-optimizer`` 4.1.0 installed, from the repository root::

    /tmp/refvenv/bin/python tests/reference/record_sign.py

It (re)writes ``tests/reference/fixtures/sign_<case>.npz``. The problem (three
float64 leaves with gradient scales ~1e7 apart, scheduled Gaussian noise, 1000
steps) and the npz layout are those of ``record.py`` (see the README); the
replay test is ``test_sign_reference.py``. torch is imported only in
:func:`main`, so pytest can import this module without it.

``pytorch_optimizer.SignSGD(lr, momentum, weight_decay, weight_decouple)`` is the
reference: ``momentum=0`` is signSGD, ``momentum>0`` Signum with the EMA
``buf.lerp_(grad, 1 - momentum)`` and the step ``p -= lr * sign(buf)``; the
decay is decoupled (``p *= 1 - lr wd``) unless ``weight_decouple=False`` (L2).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

import numpy as np

_ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # run as a script: make `tests` importable
    sys.path.insert(0, str(_ROOT))

from tests.reference.record import (  # noqa: E402
    A_INIT,
    B_INIT,
    C_INIT,
    FIXTURE_DIR,
    LEAVES,
    NUM_STEPS,
    STORE_EVERY,
    loss_fn,
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
    params = {
        "a": torch.tensor(A_INIT, dtype=torch.float64, requires_grad=True),
        "b": torch.tensor(B_INIT, dtype=torch.float64, requires_grad=True),
        "c": torch.tensor(C_INIT, dtype=torch.float64, requires_grad=True),
    }
    opt = opt_cls([params[k] for k in LEAVES], lr=LR, **options)
    grads = {k: np.zeros((num_steps, *params[k].shape)) for k in LEAVES}
    stored_steps = [0]
    stored = {k: [params[k].detach().numpy().copy()] for k in LEAVES}
    for t in range(num_steps):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(torch, params["a"], params["b"], params["c"])
        loss.backward()
        with torch.no_grad():
            for k in LEAVES:
                params[k].grad.add_(torch.as_tensor(noise[k][t]))
                # recorded BEFORE step(): the L2 mode adds wd * p to p.grad in place
                grads[k][t] = params[k].grad.detach().numpy().copy()
        opt.step()
        step = t + 1
        if step % STORE_EVERY == 0 or step == num_steps:
            stored_steps.append(step)
            for k in LEAVES:
                stored[k].append(params[k].detach().numpy().copy())
    return (
        grads,
        np.asarray(stored_steps, dtype=np.int64),
        {k: np.stack(v) for k, v in stored.items()},
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=FIXTURE_DIR)
    parser.add_argument("--steps", type=int, default=NUM_STEPS)
    parser.add_argument("--only", nargs="*", default=None, help="case names to record")
    args = parser.parse_args(argv)

    import importlib.metadata as md

    import torch

    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    from pytorch_optimizer import SignSGD

    versions = {"torch": torch.__version__, "pytorch-optimizer": md.version("pytorch-optimizer")}
    noise = make_noise(args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, options, alias, gdtx_kwargs in cases():
        if args.only and name not in args.only:
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
        arrays = {"config": np.array(json.dumps(config, sort_keys=True)), "steps": steps}
        for k in LEAVES:
            arrays[f"grads/{k}"] = grads[k]
            arrays[f"params/{k}"] = params[k]
        path = args.out / f"sign_{name}.npz"
        np.savez_compressed(path, **arrays)
        disp = {k: float(np.max(np.abs(params[k] - params[k][0]))) for k in LEAVES}
        print(f"sign_{name}: {os.path.getsize(path) / 1024:.0f} KiB  max displacement {disp}")


if __name__ == "__main__":
    main()
