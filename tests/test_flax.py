"""gdtx.flax: extra arguments through nnx.Optimizer (in nnx.jit) and a Linen TrainState."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import gdtx
import gdtx.flax


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, batch_norm: bool = False):
        self.hidden = nnx.Linear(64, 32, rngs=rngs)
        self.norm = nnx.BatchNorm(32, rngs=rngs) if batch_norm else None
        self.out = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x):
        h = self.hidden(x)
        if self.norm is not None:
            h = self.norm(h)
        return self.out(jnp.tanh(h))


def _loss(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def _per_example_loss(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y)


# SAM through nnx.Optimizer is the doctest of gdtx.flax.nnx_grad_fn.
@pytest.mark.parametrize("method", ["salr", "salr_per_example"])
def test_nnx_model_trains_through_nnx_optimizer_in_nnx_jit(tiny_digits, method):
    from tests import tiny_digits as td

    xs, ys = td.batches(tiny_digits, 32, 60, seed=1)
    model = MLP(nnx.Rngs(0))
    tx = gdtx.salr(optax.sgd(0.3), every=2, per_example=method == "salr_per_example")
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        def loss_fn(m):
            return _loss(m, x, y)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        if method == "salr":
            extra = {"value_fn": gdtx.flax.nnx_value_fn(model, loss_fn)}
        else:
            pe = gdtx.flax.nnx_value_fn(model, lambda m: _per_example_loss(m, x, y))
            extra = {"per_example_value_fn": pe}
        optimizer.update(model, grads, **extra)
        return loss

    before = float(_loss(model, tiny_digits.x_test, tiny_digits.y_test))
    losses = [float(train_step(model, optimizer, x, y)) for x, y in zip(xs, ys, strict=True)]
    after = float(_loss(model, tiny_digits.x_test, tiny_digits.y_test))
    assert all(np.isfinite(losses))
    assert after < 0.5 * before, (before, after)
    assert int(optimizer.step[...]) == len(xs)
    state = optimizer.opt_state
    assert int(state.history_count[...]) == len(xs) // 2
    assert float(state.multiplier[...]) > 0


def test_nnx_value_fn_is_the_loss_and_does_not_touch_model_state():
    # BatchNorm in training mode updates its running statistics on every call; the
    # look-around must evaluate the loss on a copy, leaving the model's state alone.
    model = MLP(nnx.Rngs(0), batch_norm=True)
    x = jnp.linspace(-1.0, 1.0, 8 * 64).reshape(8, 64)
    y = jnp.arange(8) % 10
    value_fn = gdtx.flax.nnx_value_fn(model, lambda m: _loss(m, x, y))
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    stats_before = jax.tree.map(jnp.copy, nnx.as_pure(nnx.state(model, nnx.BatchStat)))
    copy = nnx.clone(model)
    expected = _loss(copy, x, y)
    got = jax.jit(value_fn)(params)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    stats_after = nnx.as_pure(nnx.state(model, nnx.BatchStat))
    for a, b in zip(jax.tree.leaves(stats_after), jax.tree.leaves(stats_before), strict=True):
        np.testing.assert_array_equal(a, b)
    # ...while evaluating the model itself does move them (the check can fail).
    _loss(model, x, y)
    moved = nnx.as_pure(nnx.state(model, nnx.BatchStat))
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(moved), jax.tree.leaves(stats_before), strict=True)
    )


def test_nnx_grad_fn_matches_nnx_grad():
    model = MLP(nnx.Rngs(1))
    x = jnp.linspace(-1.0, 1.0, 4 * 64).reshape(4, 64)
    y = jnp.array([1, 2, 3, 4])
    grad_fn = gdtx.flax.nnx_grad_fn(model, lambda m: _loss(m, x, y))
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    expected = nnx.as_pure(nnx.state(nnx.grad(lambda m: _loss(m, x, y))(model), nnx.Param))
    got = grad_fn(params)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_linen_apply_gradients_forwards_extra_args():
    def loss(p):
        return jnp.sum((p["w"] - 1.0) ** 2)

    tx = gdtx.salr(optax.sgd(0.1), step_size=0.01)
    state = train_state.TrainState.create(apply_fn=None, params={"w": jnp.zeros(3)}, tx=tx)
    with pytest.raises(TypeError, match="`value_fn`"):
        state.apply_gradients(grads=jax.grad(loss)(state.params))  # Flax's own: no way in

    step = jax.jit(
        lambda s: gdtx.flax.apply_gradients(s, grads=jax.grad(loss)(s.params), value_fn=loss)
    )
    for _ in range(3):
        state = step(state)
    assert int(state.step) == 3
    expected = gdtx.salr(optax.sgd(0.1), step_size=0.01)
    params, opt_state = {"w": jnp.zeros(3)}, expected.init({"w": jnp.zeros(3)})
    for _ in range(3):
        updates, opt_state = expected.update(
            jax.grad(loss)(params), opt_state, params, value_fn=loss
        )
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(state.params["w"], params["w"], rtol=1e-6)
    assert float(state.opt_state.multiplier) < 1.0
