"""Positional encoding gamma (paper eq. 4) vs a float64 numpy reference."""

import numpy as np
import pytest

from zoo.nerf.encoding import encoded_size, positional_encoding


def _reference(x, L, include_input):
    x = np.asarray(x, np.float64)
    parts = [x] if include_input else []
    for k in range(L):
        parts += [np.sin(2.0**k * np.pi * x), np.cos(2.0**k * np.pi * x)]
    return np.concatenate(parts, axis=-1)


@pytest.mark.parametrize("L, include_input", [(10, True), (4, True), (3, False), (0, True)])
def test_matches_float64_reference_and_layout(L, include_input):
    x = np.random.default_rng(0).uniform(-1.5, 1.5, (2, 5, 3)).astype(np.float32)
    got = np.asarray(positional_encoding(x, L, include_input))
    assert got.shape == (2, 5, encoded_size(3, L, include_input))
    assert got.shape[-1] == 3 * (2 * L + include_input)
    # float32 phase error grows with 2^k pi |x|: ~1e-7 * 2^9 * pi * 1.5 at k = 9.
    np.testing.assert_allclose(got, _reference(x, L, include_input), atol=2e-3 if L > 6 else 1e-5)


def test_paper_sizes_and_known_values():
    assert encoded_size(3, 10) == 63 and encoded_size(3, 4) == 27
    g = np.asarray(positional_encoding(np.array([[0.5, 0.0, -0.25]]), 2, include_input=False))[0]
    # [sin(pi x), cos(pi x), sin(2 pi x), cos(2 pi x)], each over the 3 coordinates.
    want = [1, 0, -np.sqrt(0.5), 0, 1, np.sqrt(0.5), 0, 0, -1, -1, 1, 0]
    np.testing.assert_allclose(g, want, atol=1e-6)


def test_negative_freqs_raise():
    with pytest.raises(ValueError, match="num_freqs"):
        positional_encoding(np.zeros((1, 3)), -1)
