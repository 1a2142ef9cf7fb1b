"""Record float64 diffGrad and RAdam reference trajectories from the PyTorch packages.

Run by hand (never by CI), with an interpreter that has torch 2.13.0 CPU,
``pytorch-optimizer`` 4.1.0 and ``torch-optimizer`` 0.3.0, from the repository root::

    /tmp/refvenv/bin/python tests/reference/record_adaptive.py

It (re)writes ``tests/reference/fixtures/{diffgrad,radam}_<case>.npz``. The problem
(three float64 leaves with gradient scales ~1e7 apart, scheduled Gaussian noise,
1000 steps, ``lr=1e-2``, ``betas=(0.9, 0.999)``) and the npz layout are those of
``record_adabelief.py`` (see the README), plus ``config["gdtx"]``: the name of the gdtx alias
that replays it. The replay test is ``test_adaptive_reference.py``. torch is
imported only in :func:`main`, so pytest can import this module without it.

References:

* ``torch``: ``torch.optim.RAdam`` (``foreach=False``: the single-tensor loop).
* ``kozistr``: ``pytorch_optimizer.DiffGrad`` and ``pytorch_optimizer.RAdam``.
* ``jettify``: ``torch_optimizer.DiffGrad`` (the official diffGrad code, packaged).

Fixtures -> the gdtx call that reproduces them (all ``lr=1e-2, b1=0.9, b2=0.999,
eps=1e-8`` unless said; worst error with the README's metric, tolerance 1e-6):

* ``diffgrad_kozistr_default`` -> ``diffgrad(eps_root=1e-15)`` (1e-15); ``_decoupled_wd``
  (wd 1e-2) -> ``weight_decay=1e-2`` (2e-14); ``_fixed_decay`` (wd 1e-3, fixed_decay) ->
  ``weight_decay_mode="fixed"`` (1e-14); ``_l2`` (wd 1e-2, weight_decouple=False) ->
  ``weight_decay_mode="l2"`` (1e-15).
* ``diffgrad_kozistr_rectify`` (rectify=True) -> ``chain(rectify(scale_by_diffgrad(
  eps_root=1e-15)), scale_by_learning_rate(1e-2))``, recorded as the ``gdtx`` name
  ``"rectify(scale_by_diffgrad)"``.
* ``diffgrad_jettify_default`` -> ``diffgrad(eps_root=0)`` (1e-15); ``_l2`` (wd 1e-2, the
  package's only decay) -> ``weight_decay_mode="l2"`` (4e-16).
* ``radam_torch_default`` -> ``radam()`` (1e-15); ``_eps0`` -> ``radam(eps=0)`` (2e-15);
  ``_l2`` (wd 1e-2, torch's default coupling) -> ``weight_decay_mode="l2"`` (7e-16);
  ``_decoupled_wd`` (decoupled_weight_decay=True) -> ``weight_decay=1e-2`` (2e-13).
* ``radam_kozistr_default`` (degenerated_to_sgd=False) ->
  ``radam(degenerated_to_sgd=False)`` (5e-15); ``_sgd`` -> ``radam()`` (1e-15);
  ``_decoupled_wd_nosgd`` (wd 1e-1): **null**, the package skips the decay in steps 1..5;
  the replay test checks that the gap is exactly that.

Conventions read in the sources: both diffGrad packages put ``eps`` outside the root of
the raw ``v`` with ``sqrt(bc2) / bc1`` in the step size; ``pytorch-optimizer`` adds a
hard-coded ``1e-15`` inside the root (``apply_ams_bound(exp_avg_sq_eps=1e-15)``); with L2
both store the decayed gradient as ``previous_grad``. ``torch.optim.RAdam`` rectifies when
``rho_t > 5`` (gdtx: ``>=``; no step of ``b2=0.999`` has ``rho_t = 5``). ``pytorch-optimizer``'s
``RAdam`` applies its (decoupled-only) decay only in the steps it takes.
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
    B1,
    B2,
    FIXTURE_DIR,
    LR,
    NUM_STEPS,
    make_noise,
    run_case,
)

_UNMAPPED_NOTE = (
    "NOT EXPRESSIBLE in gdtx: pytorch-optimizer's RAdam skips the weight decay in the "
    "steps it does not take (rho_t < 5 with degenerated_to_sgd=False); a gdtx chain "
    "decays in every step. gdtx_kwargs is null; the replay test checks the exact gap."
)


def cases():
    """(name, impl, class, reference kwargs, gdtx alias, gdtx kwargs or None, note, nearest)."""
    out = []

    def diffgrad(name, impl, eps_root, wd=0.0, mode="decoupled", **options):
        options = {"eps": 1e-8, "weight_decay": wd, **options}
        kw = {"b1": B1, "b2": B2, "eps": 1e-8, "eps_root": eps_root}
        kw.update(weight_decay=wd, weight_decay_mode=mode)
        out.append((f"diffgrad_{name}", impl, "DiffGrad", options, "diffgrad", kw, "", kw))

    diffgrad("kozistr_default", "kozistr", 1e-15)
    diffgrad("kozistr_decoupled_wd", "kozistr", 1e-15, wd=1e-2)
    diffgrad("kozistr_fixed_decay", "kozistr", 1e-15, wd=1e-3, mode="fixed", fixed_decay=True)
    diffgrad("kozistr_l2", "kozistr", 1e-15, wd=1e-2, mode="l2", weight_decouple=False)
    diffgrad("jettify_default", "jettify", 0.0)
    diffgrad("jettify_l2", "jettify", 0.0, wd=1e-2, mode="l2")
    # pytorch-optimizer's rectified diffGrad is gdtx.rectify around scale_by_diffgrad.
    options = {"eps": 1e-8, "weight_decay": 0.0, "rectify": True}
    kw = {"b1": B1, "b2": B2, "eps": 1e-8, "eps_root": 1e-15}
    alias = "rectify(scale_by_diffgrad)"
    out.append(("diffgrad_kozistr_rectify", "kozistr", "DiffGrad", options, alias, kw, "", kw))

    def radam(name, impl, eps=1e-8, wd=0.0, mode="decoupled", sgd=True, mapped=True, **options):
        options = {"eps": eps, "weight_decay": wd, **options}
        kw = {"b1": B1, "b2": B2, "eps": eps, "degenerated_to_sgd": sgd}
        kw.update(weight_decay=wd, weight_decay_mode=mode)
        note = "" if mapped else _UNMAPPED_NOTE
        mapped_kw = kw if mapped else None
        out.append((f"radam_{name}", impl, "RAdam", options, "radam", mapped_kw, note, kw))

    radam("torch_default", "torch", foreach=False)
    radam("torch_eps0", "torch", eps=0.0, foreach=False)
    radam("torch_l2", "torch", wd=1e-2, mode="l2", foreach=False)
    radam("torch_decoupled_wd", "torch", wd=1e-2, decoupled_weight_decay=True, foreach=False)
    radam("kozistr_default", "kozistr", sgd=False)
    radam("kozistr_sgd", "kozistr", degenerated_to_sgd=True)
    radam("kozistr_decoupled_wd_nosgd", "kozistr", wd=1e-1, sgd=False, mapped=False)
    return out


def main(argv=None):
    args = _recording.parse_args(__doc__.splitlines()[0], FIXTURE_DIR, NUM_STEPS, argv)

    import importlib.metadata as md

    import pytorch_optimizer
    import torch_optimizer

    torch = _recording.setup_torch()

    versions = {
        "torch": torch.__version__,
        "pytorch-optimizer": md.version("pytorch-optimizer"),
        "torch-optimizer": md.version("torch-optimizer"),
    }
    modules = {"torch": torch.optim, "kozistr": pytorch_optimizer, "jettify": torch_optimizer}
    noise = make_noise(args.steps)
    for name, impl, cls, options, alias, gdtx_kwargs, note, nearest in cases():
        if not _recording.selected(name, args.only):
            continue
        opt_cls = getattr(modules[impl], cls)
        grads, steps, params = run_case(torch, opt_cls, dict(options), noise, args.steps)
        config = {
            "impl": impl,
            "reference": f"{modules[impl].__name__}.{cls}",
            "gdtx": alias,
            "lr": LR,
            "b1": B1,
            "b2": B2,
            "eps": options["eps"],
            "weight_decay": options["weight_decay"],
            "options": options,
            "gdtx_kwargs": gdtx_kwargs,
            "nearest_gdtx_kwargs": nearest,
            "num_steps": args.steps,
            "versions": versions,
            "note": note,
        }
        path = _recording.write_fixture(args.out / f"{name}.npz", config, steps, grads, params)
        disp = _recording.max_displacement(params)
        print(f"{name}: {os.path.getsize(path) / 1024:.0f} KiB  max displacement {disp}")


if __name__ == "__main__":
    main()
