"""ArviZ diagnostics across members: exact AR(1) ESS and R̂ (SPEC §11)."""

from __future__ import annotations

import numpy as np
import pytest

from thermotrain import thermo


def _ar1(phi, n, chains, seed):
    rng = np.random.default_rng(seed)
    x = np.empty((chains, n))
    x[:, 0] = rng.normal(size=chains) / np.sqrt(1 - phi**2)
    noise = rng.normal(size=(chains, n))
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + noise[:, t]
    return x


def test_ess_of_an_ar1_chain():
    """φ = 0.9, n = 1e5: ESS = n(1 − φ)/(1 + φ) = 5263. The relative sd of an
    autocorrelation-time estimate over a window of ~3τ lags is ≈ √(2·(6τ)/n) ≈ 5 %, so 15 %
    is 3 sd."""
    ess = thermo.effective_sample_size(_ar1(0.9, 100_000, 1, 0)[..., None])
    assert ess.shape == (1,)
    assert ess[0] == pytest.approx(1e5 * 0.1 / 1.9, rel=0.15)


def test_rhat_separates_shifted_chains():
    chains = _ar1(0.5, 2000, 4, 1)[..., None]
    assert thermo.rhat(chains)[0] < 1.01
    shifted = chains.copy()
    shifted[0] += 1.0
    assert thermo.rhat(shifted)[0] > 1.01


def test_summary_table_has_one_row_per_coordinate():
    table = thermo.mcmc_summary(np.random.default_rng(0).normal(size=(4, 500, 3)))
    assert list(table.index) == ["theta[0]", "theta[1]", "theta[2]"]
    assert {"ess_bulk", "r_hat", "mean"} <= set(table.columns)
    named = thermo.mcmc_summary({"w": np.zeros((2, 10)) + np.arange(10)})
    assert list(named.index) == ["w"]
    with pytest.raises(ValueError, match="at least 4 draws"):
        thermo.mcmc_summary(np.zeros((2, 3)))
