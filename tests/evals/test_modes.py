"""Mode coverage on the ring: perfect, collapsed, partial and hopeless samples."""

import numpy as np
import pytest

from zoo.data.ring import ring_modes
from zoo.evals.modes import mode_coverage

MODES = ring_modes(8, 2.0)
STD = 0.02


def _samples(mode_ids, std=STD, seed=0):
    rng = np.random.default_rng(seed)
    mode_ids = np.asarray(mode_ids)
    return MODES[mode_ids] + std * rng.standard_normal((len(mode_ids), 2))


def test_perfect_samples_cover_everything():
    points = _samples(np.arange(4000) % 8)
    result = mode_coverage(points, MODES, STD)
    assert set(result) == {"modes_covered", "high_quality", "mode_kl"}
    assert result["modes_covered"] == 8.0 and isinstance(result["modes_covered"], float)
    # Within 3 std in 2-D: P(chi2_2 <= 9) = 1 - exp(-4.5) = 0.989.
    assert result["high_quality"] == pytest.approx(1 - np.exp(-4.5), abs=0.01)
    assert 0.0 <= result["mode_kl"] < 1e-3
    exact = mode_coverage(MODES[np.arange(16) % 8], MODES, STD)
    assert exact == {"modes_covered": 8.0, "high_quality": 1.0, "mode_kl": 0.0}


def test_collapse_to_one_mode():
    result = mode_coverage(_samples(np.full(500, 3)), MODES, STD)
    assert result["modes_covered"] == 1.0
    assert result["high_quality"] > 0.95
    assert result["mode_kl"] == pytest.approx(np.log(8))


def test_far_noise_is_not_high_quality():
    rng = np.random.default_rng(1)
    points = rng.uniform(10.0, 20.0, (300, 2))
    result = mode_coverage(points, MODES, STD)
    assert result["high_quality"] == 0.0 and result["modes_covered"] == 0.0
    assert np.isnan(result["mode_kl"])


def test_min_share_rule_and_threshold():
    # 6 modes well fed, mode 6 gets 2% of samples (< 1/32 = 3.1%), mode 7 gets none.
    ids = np.concatenate([np.repeat(np.arange(6), 163), np.full(20, 6)])
    points = MODES[ids]
    assert mode_coverage(points, MODES, STD)["modes_covered"] == 6.0
    assert mode_coverage(points, MODES, STD, min_share=0.01)["modes_covered"] == 7.0
    # Samples 4 std off their mode are low quality at 3 std, high quality at 5.
    off = MODES + np.array([4 * STD, 0.0])
    assert mode_coverage(off, MODES, STD)["high_quality"] == 0.0
    assert mode_coverage(off, MODES, STD, threshold_stds=5.0)["high_quality"] == 1.0


@pytest.mark.parametrize(
    "points, modes, std, kw",
    [
        (np.zeros((4, 3)), MODES, STD, {}),
        (np.zeros((0, 2)), MODES, STD, {}),
        (np.zeros((4, 2)), MODES, 0.0, {}),
        (np.zeros((4, 2)), MODES, STD, {"min_share": 1.5}),
    ],
)
def test_bad_input_raises(points, modes, std, kw):
    with pytest.raises(ValueError):
        mode_coverage(points, modes, std, **kw)
