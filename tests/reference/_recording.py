"""Plumbing shared by the hand-run reference recorders (``record*.py``).

Each recorder keeps its own problem, cases and gdtx mapping; this module holds what they
have in common: the command line, the torch setup, the recording loop and the npz writer
(layout in ``README.md``). torch is never imported at module level: :func:`setup_torch`
imports it lazily and the other functions receive it, so pytest (``--doctest-modules``,
no torch in CI) can import this module. The leading ``_`` keeps pytest from collecting it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import pathlib

import numpy as np


def parse_args(description, fixture_dir, num_steps, argv=None):
    """The recorders' common command line: ``--out``, ``--steps``, ``--only``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=pathlib.Path, default=fixture_dir)
    parser.add_argument("--steps", type=int, default=num_steps)
    parser.add_argument("--only", nargs="*", default=None, help="case names to record")
    return parser.parse_args(argv)


def selected(name, only):
    """Whether case ``name`` is recorded under ``--only only`` (None or empty: all).

    >>> selected("a", None), selected("a", []), selected("a", ["a"]), selected("a", ["b"])
    (True, True, True, False)
    """
    return not only or name in only


def setup_torch():
    """Import torch, make float64 its default dtype, seed it with 0, return it."""
    import torch

    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    return torch


def leaf_tensors(torch, initial):
    """Fresh float64 leaf tensors (requiring grad) for a ``{leaf: array}`` initial point."""
    return {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in initial.items()}


def record_trajectory(torch, opt, params, loss, noise, num_steps, store_every):
    """Run ``opt`` for ``num_steps`` noisy steps and record the trajectory.

    ``params`` maps each leaf (in leaf order) to the tensor ``opt`` updates;
    ``loss(torch, params)`` is the deterministic loss; ``noise[k][t]`` is added to leaf
    ``k``'s gradient at step ``t+1``. Returns ``(grads, steps, stored)``: ``grads[k]``
    (T, *shape) the gradients recorded BEFORE ``step()`` (an L2 mode adds ``wd * p`` to
    ``p.grad`` in place), ``steps`` the int64 stored step indices (0, every
    ``store_every``-th step and the last) and ``stored[k]`` (K, *shape) the parameters
    after those steps.
    """
    leaves = tuple(params)
    grads = {k: np.zeros((num_steps, *params[k].shape)) for k in leaves}
    stored_steps = [0]
    stored = {k: [params[k].detach().numpy().copy()] for k in leaves}
    for t in range(num_steps):
        opt.zero_grad(set_to_none=True)
        loss(torch, params).backward()
        with torch.no_grad():
            for k in leaves:
                params[k].grad.add_(torch.as_tensor(noise[k][t]))
                grads[k][t] = params[k].grad.detach().numpy().copy()
        opt.step()
        step = t + 1
        if step % store_every == 0 or step == num_steps:
            stored_steps.append(step)
            for k in leaves:
                stored[k].append(params[k].detach().numpy().copy())
    for k in leaves:
        if not all(np.all(np.isfinite(x)) for x in stored[k]):
            raise RuntimeError(f"non-finite trajectory for leaf {k}")
    return (
        grads,
        np.asarray(stored_steps, dtype=np.int64),
        {k: np.stack(v) for k, v in stored.items()},
    )


def record_case(torch, opt_cls, opt_kwargs, initial, loss, noise, num_steps, store_every):
    """Build ``opt_cls(leaves, **opt_kwargs)`` at ``initial`` and :func:`record_trajectory` it.

    The constructor's stdout (some packages print a banner) is swallowed.
    """
    params = leaf_tensors(torch, initial)
    with contextlib.redirect_stdout(io.StringIO()):
        opt = opt_cls(list(params.values()), **opt_kwargs)
    return record_trajectory(torch, opt, params, loss, noise, num_steps, store_every)


def write_fixture(path, config, steps, grads, params):
    """Write one fixture: JSON ``config``, ``steps``, then ``grads/<leaf>``, ``params/<leaf>``."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"config": np.array(json.dumps(config, sort_keys=True)), "steps": steps}
    for k in grads:
        arrays[f"grads/{k}"] = grads[k]
        arrays[f"params/{k}"] = params[k]
    np.savez_compressed(path, **arrays)
    return path


def max_displacement(params):
    """``{leaf: max |p_k - p_0|}`` over a stored trajectory, for the recorders' summaries.

    >>> max_displacement({"a": np.array([[0.0, 1.0], [0.5, -1.0]])})
    {'a': 2.0}
    """
    return {k: float(np.max(np.abs(v - v[0]))) for k, v in params.items()}
