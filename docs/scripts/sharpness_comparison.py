"""SALR, SAM and their baselines: a sharp/flat-minimum experiment and the digits task.

Run from the repository root (CPU, a few minutes)::

    .venv/bin/python docs/scripts/sharpness_comparison.py      # full, writes docs/figures
    .venv/bin/python docs/scripts/sharpness_comparison.py --smoke --figures /tmp/figs

It prints Markdown tables (copied into ``docs/sharpness.md``) and writes
``docs/figures/sharpness_*.png``. Every number comes from fixed seeds, so a rerun
on the same versions prints the same tables. ``tests/test_sharpness.py`` runs the
smoke mode in the slow tier.

1. **Sharp or flat.** A 1-D loss with a sharp minimum (curvature 100) and a flat
   one (curvature 2.8) of equal depth, and minibatch-like noise: step ``k`` sees
   the loss ``f(x) + xi_k x`` (a random tilt, so ``value_fn`` and the gradient
   agree). From the same starts and the same noise, how often do SGD and
   SALR-SGD end in the flat basin?
2. **Digits.** The shared 64-32-10 MLP of ``tests/tiny_digits.py`` trained with
   SGD, SALR-SGD, SAM, Adam and SALR-AdaBelief on several seeds; test accuracy and
   two sharpness measures of the final point on the full training set: the top
   Hessian eigenvalue (power iteration on Hessian-vector products) and SALR's own
   estimate ``S`` (Algorithm 2).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import gdtx  # noqa: E402
from tests import tiny_digits as td  # noqa: E402

FIGURES = ROOT / "docs" / "figures"

# --- 1. a sharp and a flat minimum ------------------------------------------------------

SHARP_CENTRE, SHARP_WIDTH = -1.0, 0.1
FLAT_CENTRE, FLAT_WIDTH = 1.5, 0.6
# lr * curvature in the sharp well: 0.5 (SALR destabilises it above a multiplier of 4)
# and 1.5 (above 4/3); in the flat well 0.014 and 0.04: stable for multipliers below 48.
# (learning rate, noise std) settings; the last one is plotted.
SETTINGS = ((0.005, 2.0), (0.015, 0.5), (0.015, 2.0))


def double_well(x):
    """Two Gaussian wells of depth 1: sharp at -1 (curvature 100), flat at 1.5 (2.8)."""
    sharp = jnp.exp(-0.5 * ((x - SHARP_CENTRE) / SHARP_WIDTH) ** 2)
    flat = jnp.exp(-0.5 * ((x - FLAT_CENTRE) / FLAT_WIDTH) ** 2)
    return -jnp.sum(sharp + flat)


def _saddle():
    xs = np.linspace(SHARP_CENTRE, FLAT_CENTRE, 20001)
    values = np.asarray(jax.vmap(lambda x: double_well(x[None]))(jnp.asarray(xs)))
    return float(xs[np.argmax(values)])


def sharp_or_flat(tx, starts, noise, num_steps):
    """Final positions of one run per start; ``noise[i, k]`` tilts step ``k`` of run ``i``."""

    def run(x0, xi):
        def step(carry, tilt):
            x, state = carry

            def value_fn(p):
                return double_well(p) + tilt * jnp.sum(p)

            updates, state = tx.update(jax.grad(value_fn)(x), state, x, value_fn=value_fn)
            return (optax.apply_updates(x, updates), state), None

        x = jnp.array([x0])
        (x, _), _ = jax.lax.scan(step, (x, tx.init(x)), xi)
        return x[0]

    return np.asarray(jax.jit(jax.vmap(run))(jnp.asarray(starts), jnp.asarray(noise)))


def experiment_sharp_or_flat(smoke: bool):
    num_starts, num_steps = (16, 200) if smoke else (400, 3000)
    rng = np.random.default_rng(0)
    starts = rng.uniform(-2.0, 3.0, size=num_starts).astype(np.float32)
    saddle = _saddle()
    rows = []
    finals = {}
    for lr, sigma in SETTINGS:
        noise = (sigma * rng.standard_normal((num_starts, num_steps))).astype(np.float32)
        methods = {
            "SGD": optax.sgd(lr),
            "SALR-SGD (defaults)": gdtx.salr(optax.sgd(lr), step_size=0.01),
            "SALR-SGD (code options)": gdtx.salr(
                optax.sgd(lr), step_size=0.01, every=2, max_multiplier=5.0, dead_band=1.0
            ),
        }
        for name, tx in methods.items():
            final = sharp_or_flat(tx, starts, noise, num_steps)
            finals[(lr, sigma, name)] = final
            started_sharp = starts < saddle
            in_flat = final > saddle
            rows.append(
                (
                    lr,
                    sigma,
                    name,
                    int(in_flat.sum()),
                    int(in_flat[started_sharp].sum()),
                    int(started_sharp.sum()),
                    int((~in_flat[~started_sharp]).sum()),
                    int((~started_sharp).sum()),
                )
            )
    print(f"\n### Sharp or flat ({num_starts} starts in [-2, 3], {num_steps} steps)\n")
    print(f"saddle at x = {saddle:.3f}\n")
    print(
        "| lr | noise std | method | end in flat | sharp -> flat | flat -> sharp |\n"
        "|---|---|---|---|---|---|"
    )
    for lr, sigma, name, flat, s2f, n_sharp, f2s, n_flat in rows:
        print(
            f"| {lr} | {sigma} | {name} | {flat}/{num_starts} | {s2f}/{n_sharp} | {f2s}/{n_flat} |"
        )
    return starts, finals, saddle


# --- 2. digits --------------------------------------------------------------------------


def top_hessian_eigenvalue(loss, params, iterations=50):
    """Power iteration on Hessian-vector products (forward-over-reverse)."""
    flat, unravel = ravel_pytree(params)

    def hvp(v):
        return jax.jvp(lambda p: ravel_pytree(jax.grad(loss)(unravel(p)))[0], (flat,), (v,))[1]

    def body(_, v):
        w = hvp(v)
        return w / jnp.linalg.norm(w)

    v = jax.random.normal(jax.random.key(0), flat.shape)
    v = jax.lax.fori_loop(0, iterations, body, v / jnp.linalg.norm(v))
    return v @ hvp(v)


def digits_methods(steps):
    del steps
    return {
        "SGD": optax.sgd(0.1),
        "SALR-SGD": gdtx.salr(optax.sgd(0.1)),
        "SAM": gdtx.sam(optax.sgd(0.1), rho=0.05),
        "Adam": optax.adam(1e-3),
        "SALR-AdaBelief": gdtx.salr(gdtx.adabelief(1e-3)),
    }


def train_digits(tx, data, seed, num_steps, batch_size=32):
    xs, ys = td.batches(data, batch_size, num_steps, seed=seed)

    @jax.jit
    def train(params, xs, ys):
        def step(carry, batch):
            params, state = carry
            x, y = batch

            def value_fn(p):
                return td.loss(p, x, y)

            grad_fn = jax.grad(value_fn)
            updates, state = tx.update(
                grad_fn(params), state, params, value_fn=value_fn, grad_fn=grad_fn
            )
            multiplier = optax.tree.get(state, "multiplier", jnp.ones([]))
            return (optax.apply_updates(params, updates), state), multiplier

        (params, _), multipliers = jax.lax.scan(step, (params, tx.init(params)), (xs, ys))
        return params, multipliers

    return train(td.init_params(jax.random.key(seed)), xs, ys)


def experiment_digits(smoke: bool):
    data = td.load()
    seeds, num_steps = ((0,), 50) if smoke else ((0, 1, 2, 3, 4), 3000)
    x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)

    def full_loss(p):
        return td.loss(p, x_train, y_train)

    measures = jax.jit(
        lambda p: (
            td.accuracy(p, data.x_test, data.y_test),
            full_loss(p),
            top_hessian_eigenvalue(full_loss, p),
            gdtx.sharpness_estimate(full_loss, p),
        )
    )
    results = {}
    multipliers = {}
    for name, tx in digits_methods(num_steps).items():
        start = time.perf_counter()
        for seed in seeds:
            params, m = train_digits(tx, data, seed, num_steps)
            results.setdefault(name, []).append([float(v) for v in measures(params)])
            multipliers.setdefault(name, []).append(np.asarray(m))
        results[name] = np.array(results[name])
        print(f"  {name}: {time.perf_counter() - start:.1f}s", file=sys.stderr)
    print(
        f"\n### Digits ({len(seeds)} seeds, {num_steps} steps of batch 32, "
        "mean +- std over seeds)\n"
    )
    print(
        "| method | test accuracy | train loss | top Hessian eigenvalue | SALR S (5+5, 1e-3) |\n"
        "|---|---|---|---|---|"
    )
    for name, r in results.items():
        mean, std = r.mean(0), r.std(0)
        print(
            f"| {name} | {mean[0]:.4f} +- {std[0]:.4f} | {mean[1]:.4f} +- {std[1]:.4f} "
            f"| {mean[2]:.2f} +- {std[2]:.2f} | {mean[3]:.2e} +- {std[3]:.1e} |"
        )
    return results, multipliers


def plot(starts, finals, saddle, results, multipliers, directory=FIGURES):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    xs = np.linspace(-2.0, 3.0, 1000)
    axes[0].plot(xs, jax.vmap(lambda x: double_well(x[None]))(jnp.asarray(xs)), color="k")
    axes[0].axvline(saddle, color="grey", linestyle=":")
    axes[0].set(xlabel="x", ylabel="loss", title="sharp (left) and flat (right) minimum")
    lr, sigma = SETTINGS[-1]
    bins = np.linspace(-2.0, 3.0, 60)
    for name in ("SGD", "SALR-SGD (defaults)", "SALR-SGD (code options)"):
        axes[1].hist(finals[(lr, sigma, name)], bins=bins, histtype="step", label=name)
    axes[1].set(
        xlabel="final x", ylabel="runs", title=f"final positions, lr {lr}, noise std {sigma}"
    )
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(directory / "sharpness_sharp_or_flat.png", dpi=110)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, r in results.items():
        axes[0].scatter(r[:, 2], r[:, 0], label=name)
    axes[0].set(xlabel="top Hessian eigenvalue (train loss)", ylabel="test accuracy")
    axes[0].legend(fontsize=8)
    for name in ("SALR-SGD", "SALR-AdaBelief"):
        axes[1].plot(multipliers[name][0], label=name, linewidth=0.6)
    axes[1].set(xlabel="step", ylabel="multiplier", yscale="log", title="seed 0")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(directory / "sharpness_digits.png", dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run")
    parser.add_argument("--figures", default=str(FIGURES), help="where the figures go")
    args = parser.parse_args(argv)
    print(f"jax {jax.__version__}, optax {optax.__version__}, backend {jax.default_backend()}")
    starts, finals, saddle = experiment_sharp_or_flat(args.smoke)
    results, multipliers = experiment_digits(args.smoke)
    plot(starts, finals, saddle, results, multipliers, args.figures)


if __name__ == "__main__":
    main()
