"""The shared tiny model learns: the fixture other tests rely on is sound."""

import jax
import optax

from tests import tiny_digits as td


def test_adam_learns_the_tiny_digits_model(tiny_digits):
    params = td.init_params(jax.random.key(0))
    tx = optax.adam(1e-2)
    xs, ys = td.batches(tiny_digits, 64, 200)

    def step(carry, batch):
        params, state = carry
        grads = jax.grad(td.loss)(params, *batch)
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    before = td.accuracy(params, tiny_digits.x_test, tiny_digits.y_test)
    (params, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), (xs, ys)))(params)
    after = td.accuracy(params, tiny_digits.x_test, tiny_digits.y_test)
    assert before < 0.3 < 0.9 < after, (before, after)
