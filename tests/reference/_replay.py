"""Loading, replaying and scoring the recorded reference trajectories (one copy for all families).

Every recorder (``record_<method>.py``) writes ``fixtures/<method>_<case>.npz`` with the layout
of ``_recording.write_fixture``: a JSON ``config``, the stored ``steps``, every step's raw
``grads/<leaf>`` and the ``params/<leaf>`` at the stored steps. A replay test loads a fixture with
:func:`load`, feeds its gradients through a gdtx transformation with :func:`replay` (float64,
one jitted ``lax.scan``) and scores the result with :func:`trajectory_error`.
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

FIXTURE_DIR = pathlib.Path(__file__).resolve().parent / "fixtures"
TOL = 1e-6


def names(prefix: str) -> list[str]:
    """The fixture names ``<prefix>_*`` (sorted); a test should assert how many it expects."""
    return sorted(p.stem for p in FIXTURE_DIR.glob(f"{prefix}_*.npz"))


def read_config(name: str) -> dict:
    """Only the JSON config of fixture ``name`` (cheap: the arrays are not read)."""
    with np.load(FIXTURE_DIR / f"{name}.npz") as data:
        return json.loads(str(data["config"][()]))


def load(name: str) -> dict:
    """Fixture ``name`` as ``{"name", "config", "steps", "grads", "params"}``.

    ``grads`` and ``params`` map each leaf name (read from the file's keys, in sorted order)
    to its float64 array: ``grads[k][t]`` is step ``t + 1``'s gradient and ``params[k][i]`` the
    parameters after ``steps[i]`` steps.
    """
    with np.load(FIXTURE_DIR / f"{name}.npz") as data:
        leaves = sorted(key.split("/", 1)[1] for key in data.files if key.startswith("grads/"))
        return {
            "name": name,
            "config": json.loads(str(data["config"][()])),
            "steps": np.asarray(data["steps"]),
            "grads": {k: np.asarray(data[f"grads/{k}"]) for k in leaves},
            "params": {k: np.asarray(data[f"params/{k}"]) for k in leaves},
        }


def replay(tx: optax.GradientTransformation, fx: dict) -> dict:
    """Replays the recorded gradients through ``tx`` in float64; params at the stored steps."""
    steps = fx["steps"]
    with jax.enable_x64(True):
        p0 = {k: jnp.asarray(v[0], jnp.float64) for k, v in fx["params"].items()}
        grads = {k: jnp.asarray(v, jnp.float64) for k, v in fx["grads"].items()}

        @jax.jit
        def run(p0, grads):
            def body(carry, g):
                p, state = carry
                updates, state = tx.update(g, state, p)
                p = optax.apply_updates(p, updates)
                return (p, state), p

            return jax.lax.scan(body, (p0, tx.init(p0)), grads)[1]

        trajectory = jax.device_get(run(p0, grads))
    for k, v in trajectory.items():
        # an update that silently dropped to float32 would pass a loose tolerance
        assert v.dtype == np.float64, (k, v.dtype)
    # row t of `full` is the parameters after t steps
    return {
        k: np.concatenate([fx["params"][k][:1], np.asarray(v)])[steps]
        for k, v in trajectory.items()
    }


def trajectory_error(params: dict, ref: dict, steps: np.ndarray) -> tuple[float, str, int]:
    """Worst ``max|p - p_ref| / running_max_{s<=t} max|p_ref(s) - p_ref(0)|``.

    Per leaf and per stored step; returns ``(error, leaf, step)`` of the worst. At a step
    where the reference has not moved yet the error is 0 if the parameters agree exactly and
    infinite otherwise; a NaN anywhere is infinite.
    """
    leaves = sorted(ref)
    worst = (0.0, leaves[0], int(steps[0]))
    for k in leaves:
        p = np.asarray(params[k], np.float64).reshape(len(steps), -1)
        r = np.asarray(ref[k], np.float64).reshape(len(steps), -1)
        num = np.max(np.abs(p - r), axis=1)
        scale = np.maximum.accumulate(np.max(np.abs(r - r[0]), axis=1))
        with np.errstate(divide="ignore", invalid="ignore"):
            err = np.where(scale > 0, num / scale, np.where(num == 0, 0.0, np.inf))
        err = np.where(np.isnan(err), np.inf, err)
        i = int(np.argmax(err))
        if err[i] > worst[0]:
            worst = (float(err[i]), k, int(steps[i]))
    return worst


def replay_error(tx: optax.GradientTransformation, fx: dict) -> tuple[float, str, int]:
    """:func:`trajectory_error` of ``tx`` replayed on fixture ``fx``."""
    return trajectory_error(replay(tx, fx), fx["params"], fx["steps"])


def describe(fx: dict, err: tuple[float, str, int], *config_keys: str) -> str:
    """A failure message: the worst error, where, the tolerance and the named config entries."""
    e, leaf, step = err
    shown = " ".join(f"{key}={fx['config'].get(key)}" for key in config_keys)
    return (
        f"{fx['name']}: worst relative error {e:.3e} at leaf {leaf!r}, step {step} "
        f"(tolerance {TOL:g}); {shown}"
    )
