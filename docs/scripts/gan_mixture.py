"""A small GAN on a 2-D mixture of eight Gaussians: Adam vs ACGD (run by hand).

    .venv/bin/python docs/scripts/gan_mixture.py           # writes docs/figures/gan_mixture.png
    .venv/bin/python docs/scripts/gan_mixture.py --quick   # a short smoke run

The game is the original GAN's ``min_G max_D f`` with
``f = E log D(x) + E log(1 - D(G(z)))`` (D's logits through a log-sigmoid), on one
joint parameter tree ``{"x": generator, "y": discriminator}``. Adam plays it as
simultaneous descent-ascent (two ``optax.adam`` states, the discriminator's
gradient negated); ACGD (``gdtx.games.acgd``) plays the local Nash equilibrium of
each step, with ``value_fn`` the same batch's ``f``. Both use the same networks
(two-layer tanh MLPs, 64 units), initialisations, batches and learning rate. The
figure shows the generated samples at the end of training over the data's
density, and ACGD's CG iterations per step. About 45 s on 2 CPU cores
(3000 steps; ACGD 5 CG iterations per step on average).
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

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gdtx.games import acgd  # noqa: E402

NUM_MODES, RADIUS, STD = 8, 2.0, 0.05
BATCH, LATENT, HIDDEN = 256, 2, 64
LEARNING_RATE = 1e-3


def sample_data(key, n):
    k1, k2 = jax.random.split(key)
    angle = 2 * jnp.pi * jax.random.randint(k1, (n,), 0, NUM_MODES) / NUM_MODES
    centres = RADIUS * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=1)
    return centres + STD * jax.random.normal(k2, (n, 2))


def mlp_init(key, sizes):
    params = []
    for k, (m, n) in zip(
        jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:], strict=True), strict=True
    ):
        params.append({"w": jax.random.normal(k, (m, n)) / jnp.sqrt(m), "b": jnp.zeros(n)})
    return params


def mlp(params, x):
    for layer in params[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def game_value(params, real, z):
    """f(G, D): the generator (x) minimises it, the discriminator (y) maximises it."""
    fake = mlp(params["x"], z)
    real_logits, fake_logits = mlp(params["y"], real)[:, 0], mlp(params["y"], fake)[:, 0]
    return jnp.mean(jax.nn.log_sigmoid(real_logits)) + jnp.mean(jax.nn.log_sigmoid(-fake_logits))


def init_params(key):
    kg, kd = jax.random.split(key)
    return {
        "x": mlp_init(kg, [LATENT, HIDDEN, HIDDEN, 2]),
        "y": mlp_init(kd, [2, HIDDEN, HIDDEN, 1]),
    }


def batch(key):
    kr, kz = jax.random.split(key)
    return sample_data(kr, BATCH), jax.random.normal(kz, (BATCH, LATENT))


def train_adam(params, key, steps):
    tx = optax.adam(LEARNING_RATE, b1=0.5)

    def step(carry, k):
        params, state = carry
        real, z = batch(k)
        g = jax.grad(game_value)(params, real, z)
        g = {"x": g["x"], "y": jax.tree.map(jnp.negative, g["y"])}  # D ascends
        updates, state = tx.update(g, state, params)
        return (optax.apply_updates(params, updates), state), 0

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(key, steps))
    return params, None


def train_acgd(params, key, steps):
    tx = acgd(LEARNING_RATE)

    def step(carry, k):
        params, state = carry
        real, z = batch(k)

        def f(p):
            return game_value(p, real, z)

        updates, state = tx.update(jax.grad(f)(params), state, params, value_fn=f)
        return (optax.apply_updates(params, updates), state), state.cg_iters

    (params, _), iters = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(key, steps))
    return params, iters


def modes_covered(samples):
    """Modes with at least 2% of the samples within 4 standard deviations of the centre."""
    angle = 2 * np.pi * np.arange(NUM_MODES) / NUM_MODES
    centres = RADIUS * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    dist = np.linalg.norm(samples[:, None, :] - centres[None], axis=-1)
    near = dist.min(axis=1) < 4 * STD
    counts = np.bincount(dist.argmin(axis=1)[near], minlength=NUM_MODES)
    return int(np.sum(counts >= 0.02 * len(samples))), float(near.mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--quick", action="store_true", help="200 steps, no figure")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "docs" / "figures")
    args = parser.parse_args(argv)
    steps = 200 if args.quick else args.steps
    params = init_params(jax.random.PRNGKey(0))
    data_key, eval_key = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
    z_eval = jax.random.normal(eval_key, (2000, LATENT))
    results = {}
    for name, train in (("Adam (simultaneous)", train_adam), ("ACGD", train_acgd)):
        start = time.perf_counter()
        final, iters = jax.jit(train, static_argnums=2)(params, data_key, steps)
        samples = np.asarray(mlp(final["x"], z_eval))
        seconds = time.perf_counter() - start
        covered, near = modes_covered(samples)
        iters = None if iters is None else np.asarray(iters)
        results[name] = (samples, iters)
        extra = "" if iters is None else f", CG iterations/step: mean {iters.mean():.1f}"
        print(
            f"{name:20s} {seconds:6.1f} s  modes covered {covered}/8, "
            f"samples near a mode {near:.0%}{extra}"
        )
    if args.quick:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real = np.asarray(sample_data(jax.random.PRNGKey(3), 2000))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, (name, (samples, _)) in zip(axes[:2], results.items(), strict=True):
        ax.scatter(real[:, 0], real[:, 1], s=2, c="0.8", label="data")
        ax.scatter(
            samples[:, 0], samples[:, 1], s=2, c="C0" if "Adam" in name else "C1", label="generated"
        )
        covered, near = modes_covered(samples)
        ax.set_title(f"{name}: {covered}/8 modes, {near:.0%} near one")
        ax.set_xlim(-3, 3), ax.set_ylim(-3, 3), ax.set_aspect("equal")
        ax.legend(loc="upper right", markerscale=4, fontsize=8)
    iters = results["ACGD"][1]
    axes[2].plot(np.arange(1, len(iters) + 1), iters, lw=0.5, c="C1")
    axes[2].set_xlabel("step"), axes[2].set_ylabel("CG iterations (state.cg_iters)")
    axes[2].set_title("ACGD: conjugate-gradient iterations per step")
    fig.suptitle(
        f"GAN on a mixture of 8 Gaussians, {steps} steps, lr {LEARNING_RATE}, batch {BATCH}"
    )
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gan_mixture.png"
    fig.savefig(path, dpi=100)
    print("wrote", path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    main()
