"""Fluctuation-theorem estimators on entropy samples with known answers (SPEC §5)."""

from __future__ import annotations

import numpy as np
import pytest

from thermotrain import thermo


def _gaussian_sigma(mean, var, shape, seed):
    return np.random.default_rng(seed).normal(mean, np.sqrt(var), size=shape)


def test_ift_holds_for_gaussian_entropy_with_variance_twice_the_mean():
    # σ ~ N(m, 2m) i.i.d.: ΔS_k ~ N(km, 2km), ⟨e^{−ΔS_k}⟩ = e^{−km + km} = 1 exactly
    sigma = _gaussian_sigma(0.05, 0.1, (20, 30_000), 0)
    results = thermo.integral_fluctuation_theorem(sigma, k=(1, 2, 3))
    assert [r.k for r in results] == [1, 2, 3]
    for r in results:
        assert abs(r.deviation) < 4
        assert r.windows == 20 * (30_000 // r.k)
        assert r.mean_entropy == pytest.approx(0.05 * r.k, abs=4 * r.entropy_stderr)


def test_ift_detects_a_violation():
    # variance 4m: ⟨e^{−σ}⟩ = e^{m} = 1.051, hundreds of standard errors away from 1
    r = thermo.integral_fluctuation_theorem(_gaussian_sigma(0.05, 0.2, (10, 20_000), 1), k=1)[0]
    assert r.mean == pytest.approx(np.exp(0.05), abs=5 * r.stderr)
    assert r.deviation > 20


def test_ift_standard_error_matches_the_spread_of_repeats():
    # the batch-means s.e. is the sd of the estimate over independent repeats (±20 %)
    means, errors = [], []
    for seed in range(40):
        r = thermo.integral_fluctuation_theorem(_gaussian_sigma(0.1, 0.2, (4, 2000), seed), 1)[0]
        means.append(r.mean)
        errors.append(r.stderr)
    assert np.mean(errors) == pytest.approx(np.std(means, ddof=1), rel=0.25)


def test_detailed_ft_slope_is_one_and_half_when_violated():
    good = thermo.detailed_fluctuation_theorem(_gaussian_sigma(0.1, 0.2, 400_000, 2), k=1)
    assert abs(good.deviation) < 4 and good.stderr < 0.1
    assert good.counts.sum() <= good.samples and len(good.edges) == len(good.counts) + 1
    # variance 4m: log P(x)/P(−x) = 2mx/(4m) = x/2
    bad = thermo.detailed_fluctuation_theorem(_gaussian_sigma(0.1, 0.4, 400_000, 3), k=2)
    assert bad.slope == pytest.approx(0.5, abs=4 * bad.stderr)
    assert bad.deviation < -4


def test_windows_are_non_overlapping_sums():
    s = np.arange(10.0)
    np.testing.assert_array_equal(thermo.windowed_entropy(s, 3), [[3.0, 12.0, 21.0]])
    np.testing.assert_array_equal(thermo.windowed_entropy(s, 2, stride=5), [[1.0, 11.0]])
    with pytest.raises(ValueError, match="stride must be >= k"):
        thermo.windowed_entropy(s, 3, stride=2)
    with pytest.raises(ValueError, match="k \\(steps per window\\)"):
        thermo.windowed_entropy(s, 0)
