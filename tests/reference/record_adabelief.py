"""Record float64 AdaBelief reference trajectories from the PyTorch packages.

Run by hand (never by CI), with an interpreter that has torch 2.13.0 CPU,
``adabelief-pytorch==0.2.1`` and ``pytorch-optimizer`` installed::

    /tmp/refvenv/bin/python tests/reference/record_adabelief.py

It (re)writes ``tests/reference/fixtures/adabelief_<case>.npz``.  The replay test
(``test_adabelief_reference.py``) feeds the recorded gradients through
``gdtx.adabelief`` and compares the parameter trajectory.

This module is importable without torch: torch and the reference packages are
only imported inside :func:`main`; the shared plumbing (command line, recording loop,
npz writer) is in ``_recording.py``.  It is not named ``test_*`` so pytest never
collects it.

npz layout (keys are relied upon by the replay test):

* ``config``   0-d unicode array holding a JSON object with ``impl``, ``lr``,
  ``b1``, ``b2``, ``eps``, ``weight_decay``, ``options`` (the kwargs given to
  the reference optimizer), ``gdtx_kwargs`` (the kwargs of ``gdtx.adabelief``,
  all but ``learning_rate``, that must reproduce the trajectory; ``null`` for a
  case gdtx cannot express), ``nearest_gdtx_kwargs`` (equal to ``gdtx_kwargs``
  when that is not null) and informational fields (``versions``, ``note``,
  ``num_steps``).
* ``steps``    int64 (K,) stored step indices; 0 is the initial point.
* ``grads/L``  float64 (T, *shape): row t is the raw gradient (before any L2
  term the optimizer adds) used by optimizer step t+1.
* ``params/L`` float64 (K, *shape): parameters after ``steps[k]`` steps.
"""

from __future__ import annotations

import os
import pathlib
import sys

import numpy as np

_ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # run as a script: make `tests` importable
    sys.path.insert(0, str(_ROOT))

from tests.reference import _recording  # noqa: E402

LEAVES = ("a", "b", "c")
NUM_STEPS = 1000
STORE_EVERY = 10
NOISE_SEED = 20240611
LR = 1e-2
B1, B2 = 0.9, 0.999

FIXTURE_DIR = pathlib.Path(__file__).resolve().parent / "fixtures"

# Deterministic problem data (plain literals so the problem never depends on a
# generator's stream layout).
# Shapes a (3,), b (2, 2), c (4,) keep the 19 fixtures under ~2 MB in total.
A_TARGET = np.array([1.0, -2.0, 3.0])
A_CURV = np.array([1.0, 0.5, 2.0])
A_INIT = np.array([0.3, 0.7, 1.2])
B_INIT = np.array([[-1.2, 1.0], [1.7, 2.5]])
C_TARGET = np.array([1.5, -0.5, 2.0, -1.0])
C_CURV = np.array([0.5, 1.0, 2.0, 0.75])
C_INIT = np.array([-0.5, 1.5, 0.0, 1.0])
INITIAL = {"a": A_INIT, "b": B_INIT, "c": C_INIT}

# Per-leaf noise standard deviations (the gradient scales differ by ~1e7).
NOISE_STD = {"a": 3e-6, "b": 0.3, "c": 20.0}


def _gdtx_kwargs(eps, wd, *, weight_decouple, fixed_decay, amsgrad, rectify, degenerated_to_sgd):
    """The gdtx.adabelief keyword arguments that reproduce a reference's options."""
    if not weight_decouple:
        mode = "l2"
    elif fixed_decay:
        mode = "fixed"
    else:
        mode = "decoupled"
    return dict(
        b1=B1,
        b2=B2,
        eps=eps,
        eps_root=eps,
        weight_decay=wd,
        weight_decay_mode=mode,
        amsgrad=amsgrad,
        rectify=rectify,
        degenerated_to_sgd=degenerated_to_sgd,
    )


def noise_schedule(t: int) -> float:
    """Noise multiplier for step t (1-based): large early, decaying later.

    A shrinking residual makes the AMSGrad running maximum differ from the
    current variance, so the amsgrad fixtures are sensitive to that option.
    """
    return 1.0 + 3.0 * np.exp(-t / 150.0)


def make_noise(num_steps: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(NOISE_SEED)
    shapes = {k: v.shape for k, v in INITIAL.items()}
    noise = {}
    for name in LEAVES:
        noise[name] = rng.standard_normal((num_steps, *shapes[name])) * NOISE_STD[name]
    sched = np.array([noise_schedule(t) for t in range(1, num_steps + 1)])
    for name in LEAVES:
        noise[name] = noise[name] * sched.reshape((-1,) + (1,) * (noise[name].ndim - 1))
    return noise


def loss_fn(torch, a, b, c):
    """Deterministic part of the loss; gradients ~1e-5 / O(1) / O(100)."""
    a_t = torch.as_tensor(A_TARGET)
    a_h = torch.as_tensor(A_CURV)
    c_t = torch.as_tensor(C_TARGET)
    c_h = torch.as_tensor(C_CURV)
    da = a - a_t
    # tiny leaf: quadratic + quartic, weakly coupled to b
    loss_a = 1e-5 * (
        0.5 * (a_h * da**2).sum() + 0.05 * (da**4).sum() + 0.2 * a.sum() * torch.tanh(b).mean()
    )
    # O(1) leaf: one 2-d Rosenbrock valley per row
    x, y = b[:, 0], b[:, 1]
    loss_b = ((1.0 - x) ** 2 + 5.0 * (y - x**2) ** 2).sum()
    # O(100) leaf: stiff quadratic with a wiggle, coupled to b
    dc = c - c_t
    loss_c = 20.0 * (c_h * dc**2).sum() + 5.0 * torch.sin(2.0 * c).sum() + 2.0 * c.sum() * b.sum()
    return loss_a + loss_b + loss_c


def cases():
    """(name, impl, reference kwargs, gdtx kwargs or None, note, nearest gdtx kwargs)."""
    out = []

    def official(name, eps, wd=0.0, note="", **opts):
        options = dict(
            eps=eps,
            weight_decay=wd,
            amsgrad=opts.pop("amsgrad", False),
            weight_decouple=opts.pop("weight_decouple", True),
            fixed_decay=opts.pop("fixed_decay", False),
            rectify=opts.pop("rectify", False),
            degenerated_to_sgd=opts.pop("degenerated_to_sgd", True),
        )
        assert not opts, opts
        kw = _gdtx_kwargs(
            eps,
            wd,
            weight_decouple=options["weight_decouple"],
            fixed_decay=options["fixed_decay"],
            amsgrad=options["amsgrad"],
            rectify=options["rectify"],
            degenerated_to_sgd=options["degenerated_to_sgd"],
        )
        out.append((f"adabelief_official_{name}", "official", options, kw, note, kw))

    def kozistr(name, eps=1e-16, wd=0.0, note="", unmappable=False, **opts):
        options = dict(eps=eps, weight_decay=wd)
        options.update(opts)
        kw = _gdtx_kwargs(
            eps,
            wd,
            weight_decouple=options.get("weight_decouple", True),
            fixed_decay=options.get("fixed_decay", False),
            amsgrad=options.get("ams_bound", False),
            rectify=options.get("rectify", False),
            degenerated_to_sgd=options.get("degenerated_to_sgd", True),
        )
        out.append(
            (f"adabelief_kozistr_{name}", "kozistr", options, None if unmappable else kw, note, kw)
        )

    for eps, tag in ((1e-16, "eps1e-16"), (1e-8, "eps1e-8")):
        official(f"plain_{tag}", eps)
        official(f"rectify_{tag}", eps, rectify=True)
        official(f"amsgrad_{tag}", eps, amsgrad=True)
    official("rectify_nosgd_eps1e-16", 1e-16, rectify=True, degenerated_to_sgd=False)
    official(
        "amsgrad_rectify_eps1e-16",
        1e-16,
        amsgrad=True,
        rectify=True,
        note=(
            "QUIRK: adabelief-pytorch 0.2.1 updates max_exp_avg_var but its rectified "
            "branch divides by exp_avg_var.sqrt()+eps (the current variance, not the "
            "max) and its SGD branch has no denominator, so amsgrad+rectify is exactly "
            "rectify alone (the trajectory is bit-identical to official_rectify_eps1e-16). "
            "gdtx reproduces this with amsgrad=True as well as with amsgrad=False."
        ),
    )
    official("decoupled_wd_eps1e-16", 1e-16, wd=1e-2)
    official("fixed_decay_eps1e-16", 1e-16, wd=1e-3, fixed_decay=True)
    official("l2_eps1e-16", 1e-16, wd=1e-2, weight_decouple=False)
    official(
        "decoupled_wd_rectify_nosgd_eps1e-16",
        1e-16,
        wd=1e-1,
        rectify=True,
        degenerated_to_sgd=False,
        note="weight decay is applied in steps 1..5 although no update is taken there",
    )

    kozistr("default")
    kozistr("rectify", rectify=True)
    kozistr(
        "ams_bound",
        ams_bound=True,
        note="kozistr ams_bound is an AMSGrad max on the stored variance",
    )
    kozistr(
        "ams_bound_rectify",
        ams_bound=True,
        rectify=True,
        unmappable=True,
        note=(
            "NOT EXPRESSIBLE in gdtx: pytorch-optimizer's rectified branch divides by "
            "sqrt(max_k s_k)+eps, while gdtx (following adabelief-pytorch) divides by "
            "sqrt(s_t)+eps there. gdtx_kwargs is null; nearest_gdtx_kwargs is the "
            "closest gdtx call, which the replay test requires to DIVERGE."
        ),
    )
    kozistr("decoupled_wd", wd=1e-2)
    kozistr("fixed_decay", wd=1e-3, fixed_decay=True)
    kozistr("l2", wd=1e-2, weight_decouple=False)
    return out


def leaf_loss(torch, params):
    """:func:`loss_fn` of a ``{leaf: tensor}`` dict."""
    return loss_fn(torch, params["a"], params["b"], params["c"])


def run_case(torch, opt_cls, options, noise, num_steps):
    # gradients are recorded BEFORE step(): both packages add the L2 term to p.grad in place
    opt_kwargs = {"lr": LR, "betas": (B1, B2), **options}
    return _recording.record_case(
        torch, opt_cls, opt_kwargs, INITIAL, leaf_loss, noise, num_steps, STORE_EVERY
    )


def main(argv=None):
    args = _recording.parse_args(__doc__.splitlines()[0], FIXTURE_DIR, NUM_STEPS, argv)

    import importlib.metadata as md

    torch = _recording.setup_torch()
    from adabelief_pytorch import AdaBelief as OfficialAdaBelief
    from pytorch_optimizer import AdaBelief as KozistrAdaBelief

    versions = {
        "torch": torch.__version__,
        "adabelief-pytorch": md.version("adabelief-pytorch"),
        "pytorch-optimizer": md.version("pytorch-optimizer"),
    }
    impls = {"official": OfficialAdaBelief, "kozistr": KozistrAdaBelief}
    noise = make_noise(args.steps)
    for name, impl, options, gdtx_kwargs, note, nearest in cases():
        if not _recording.selected(name, args.only):
            continue
        ref_options = dict(options)
        if impl == "official":
            ref_options["print_change_log"] = False
        grads, steps, params = run_case(torch, impls[impl], ref_options, noise, args.steps)
        config = {
            "impl": impl,
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
        gmax = {k: float(np.max(np.abs(grads[k]))) for k in LEAVES}
        print(
            f"{name}: {os.path.getsize(path) / 1024:.0f} KiB  "
            f"max displacement {disp}  max|g| {gmax}"
        )


if __name__ == "__main__":
    main()
