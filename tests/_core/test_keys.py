"""The carried PRNG key of the stochastic collectives, against its definition written out.

The reference is the key schedule spelled with ``jax.random`` directly: carry
``split(k)[0]``, step ``split(k)[1]``, worker ``(a, b)`` of a ``(A, B)`` grid
folds in ``a * B + b``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdtx._core import keys


def test_one_worker_carries_the_first_half_of_the_split_and_steps_with_the_second():
    key = jax.random.PRNGKey(7)
    carry, step = keys.next_keys(key, None)
    halves = jax.random.split(key)
    np.testing.assert_array_equal(carry, halves[0])
    np.testing.assert_array_equal(step, halves[1])


def test_each_worker_folds_in_its_row_major_index_and_all_carry_the_same_key():
    key = jax.random.PRNGKey(3)

    def per_worker(_):
        return keys.next_keys(key, ("a", "b"))

    # A 2 x 3 grid of workers: the index of (a, b) is a * 3 + b (row-major).
    inner = jax.vmap(per_worker, axis_name="b")
    carry, step = jax.vmap(inner, axis_name="a")(jnp.zeros((2, 3)))
    halves = jax.random.split(key)
    for a in range(2):
        for b in range(3):
            np.testing.assert_array_equal(carry[a, b], halves[0])
            expected = jax.random.fold_in(halves[1], a * 3 + b)
            np.testing.assert_array_equal(step[a, b], expected)


def test_step_keys_never_repeat_over_steps_and_workers():
    def run(_):
        def step(carry, _):
            carry, key = keys.next_keys(carry, "w")
            return carry, key

        return jax.lax.scan(step, jax.random.PRNGKey(0), length=50)[1]

    step_keys = np.asarray(jax.vmap(run, axis_name="w")(jnp.zeros(4))).reshape(-1, 2)
    assert len({tuple(k) for k in step_keys}) == 4 * 50


def test_the_threefry_rounding_key_is_the_step_key_itself():
    step = jax.random.fold_in(jax.random.PRNGKey(1), 2)
    assert keys.rounding_key(step, "threefry2x32") is step


def test_an_rbg_rounding_key_is_seeded_with_four_words_of_the_step_key():
    step = jax.random.fold_in(jax.random.PRNGKey(1), 2)
    key = keys.rounding_key(step, "rbg")
    assert str(jax.random.key_impl(key)) == "rbg"
    np.testing.assert_array_equal(jax.random.key_data(key), jax.random.bits(step, (4,), jnp.uint32))
    # Another worker's step key seeds another rbg stream.
    other = keys.rounding_key(jax.random.fold_in(jax.random.PRNGKey(1), 3), "rbg")
    assert not np.array_equal(jax.random.key_data(key), jax.random.key_data(other))


def test_the_checks_name_the_owner_the_argument_and_the_value():
    keys.check_seed("gdtx.owner", 0)
    keys.check_key_impl("gdtx.owner", "rbg")
    with pytest.raises(ValueError, match=r"gdtx\.owner: `seed` must be an integer >= 0, got -1"):
        keys.check_seed("gdtx.owner", -1)
    with pytest.raises(TypeError, match=r"gdtx\.owner: `seed` must be an integer, got 1\.0"):
        keys.check_seed("gdtx.owner", 1.0)
    with pytest.raises(ValueError, match=r"gdtx\.owner: `key_impl` must be one of .*'unsafe_rbg'"):
        keys.check_key_impl("gdtx.owner", "unsafe_rbg")
    assert keys.KEY_IMPLS == ("threefry2x32", "rbg")
