"""The payload bit packing, against a bit-by-bit NumPy transcription of the layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdtx._core import bits

# Every width a gdtx code uses (sign 1, ternary 2, QSGD 2..16) and the word itself.
_WIDTHS = [1, 2, 4, 8, 16, 32]


def _np_pack(codes: np.ndarray, width: int) -> np.ndarray:
    """Code ``i`` in bits ``[width * (i % per), ...)`` of word ``i // per``, low bits first."""
    per = 32 // width
    words = np.zeros(-(-codes.size * width // 32), np.uint64)
    for i, c in enumerate(codes.astype(np.uint64)):
        words[i // per] |= c << np.uint64(width * (i % per))
    return words.astype(np.uint32)


def _codes(width: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2**width, size=n, dtype=np.uint64)
    codes[::3] = 2**width - 1  # all-ones fields: a missing mask or an overlap shows
    return codes.astype(np.uint32)


@pytest.mark.parametrize("width", _WIDTHS)
@pytest.mark.parametrize("n", [1, 5, 32, 37])
def test_pack_matches_the_layout_and_unpack_inverts_it(width, n):
    codes = _codes(width, n, seed=width * 100 + n)
    words = bits.pack(jnp.asarray(codes), width)
    assert words.dtype == jnp.uint32
    assert words.shape == (bits.num_words(n, width),)
    np.testing.assert_array_equal(np.asarray(words), _np_pack(codes, width))
    back = bits.unpack(words, width, n)
    assert back.dtype == jnp.uint32
    np.testing.assert_array_equal(np.asarray(back), codes)


def test_pack_takes_booleans_and_pads_the_last_word_with_zeros():
    # The scaled sign packs `v >= 0` directly; 33 signs need two words, the
    # second holding one set bit and 31 zero bits of padding.
    signs = jnp.ones(33, bool)
    np.testing.assert_array_equal(np.asarray(bits.pack(signs, 1)), [0xFFFFFFFF, 1])


def test_num_words_rounds_up():
    assert [bits.num_words(n, 2) for n in (0, 1, 16, 17)] == [0, 1, 1, 2]
    assert bits.num_words(3, 32) == 3


def test_pack_and_unpack_trace_under_jit():
    codes = jnp.asarray(_codes(4, 21, seed=0))
    roundtrip = jax.jit(lambda c: bits.unpack(bits.pack(c, 4), 4, c.size))
    np.testing.assert_array_equal(np.asarray(roundtrip(codes)), np.asarray(codes))
