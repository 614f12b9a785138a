"""GaussianNESS, the diffusion matrix and L_eff against exact answers (SPEC §4, §5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from thermotrain import thermo
from thermotrain.thermo.batching import EnsembleBatches
from thermotrain.thermo.ftnet import BATCH_SIZE, LR, FTRegressionNet

# ---------------------------------------------------------------------------- 2-D system
H2 = np.diag([1.0, 30.0])
S2 = np.array([[1.0, 0.95], [0.95, 1.0]])
STEP = 1e-3
D2 = STEP**2 / 2 * S2


def test_two_dimensional_system_closed_form():
    ness = thermo.GaussianNESS(H2, D2, STEP)
    a, b = np.diag(H2)
    # Lyapunov with diagonal H: Σ_ij = (2/h) D_ij / (H_i + H_j)
    sigma = 2 / STEP * D2 / (np.add.outer([a, b], [a, b]))
    np.testing.assert_allclose(ness.covariance, sigma, rtol=1e-12)
    c12 = STEP / 2 * (a - b) * sigma[0, 1]
    np.testing.assert_allclose(ness.circulation, [[0, c12], [-c12, 0]], rtol=1e-12,
                               atol=1e-300)
    # ⟨σ⟩ = −tr(C D⁻¹ C Σ⁻¹) by 2×2 algebra: C = c J, J = [[0,1],[-1,0]]
    J = np.array([[0.0, 1.0], [-1.0, 0.0]])
    expected = -c12**2 * np.trace(J @ np.linalg.inv(D2) @ J @ np.linalg.inv(sigma))
    assert ness.mean_entropy_production == pytest.approx(expected, rel=1e-12)
    assert expected > 0
    assert ness.lyapunov_residual() < 1e-12


def test_equilibrium_has_no_current():
    # D ∝ H: detailed balance, C = 0 and no entropy production
    ness = thermo.GaussianNESS(H2, 1e-6 * H2, STEP)
    assert np.abs(ness.circulation).max() < 1e-18
    assert abs(ness.mean_entropy_production) < 1e-15
    np.testing.assert_allclose(ness.current_velocity(np.ones((3, 2))), 0, atol=1e-15)


def test_one_step_from_the_stationary_cloud_obeys_the_ift():
    """SPEC §5's cheap check on the 2-D linear system: w ~ N(0, Σ), one step
    w' = (I − hH)w + ξ, Cov ξ = 2D. 4e5 samples: the s.e. of ⟨σ⟩ is 0.5 % of it, of
    ⟨e^{−σ}⟩ 0.002; 4 s.e. tolerances plus the O(hλ) = 3 % linearization error of ⟨σ⟩."""
    ness = thermo.GaussianNESS(H2, D2, STEP)
    rng = np.random.default_rng(1)
    m = 400_000
    w = ness.sample(m, rng)
    w2 = w - w @ (STEP * H2).T + rng.multivariate_normal([0, 0], 2 * D2, size=m)
    s = ness.entropy_production(w, w2)
    se = s.std() / np.sqrt(m)
    assert abs(s.mean() - ness.mean_entropy_production) < 4 * se + 0.03 * s.mean()
    e = np.exp(-s)
    assert abs(e.mean() - 1) < 4 * e.std() / np.sqrt(m)


def test_areal_velocity_estimates_the_circulation():
    """400 chains of the linear recursion from N(0, Σ): A_12 against C_12 within 4 s.e.
    (the s.e. from the spread of the per-chain A's)."""
    h, H = 0.01, np.diag([1.0, 5.0])
    D = h**2 / 2 * np.array([[1.0, 0.8], [0.8, 1.0]])
    ness = thermo.GaussianNESS(H, D, h)
    rng = np.random.default_rng(2)
    k, t = 400, 2000
    w = np.empty((k, t, 2))
    w[:, 0] = ness.sample(k, rng)
    noise = rng.multivariate_normal([0, 0], 2 * D, size=(k, t))
    a = np.eye(2) - h * H
    for n in range(1, t):
        w[:, n] = w[:, n - 1] @ a.T + noise[:, n]
    per_chain = np.array([thermo.areal_velocity(w[i], mean=np.zeros(2))[0, 1] for i in range(k)])
    a12 = thermo.areal_velocity(w, mean=np.zeros(2))
    assert np.allclose(a12, -a12.T)
    assert a12[0, 1] == pytest.approx(per_chain.mean())
    se = per_chain.std(ddof=1) / np.sqrt(k)
    assert abs(a12[0, 1] - ness.circulation[0, 1]) < 4 * se + 0.02 * abs(ness.circulation[0, 1])
    assert abs(ness.circulation[0, 1]) > 10 * se  # the test can tell C from zero


def test_input_is_checked():
    with pytest.raises(ValueError, match="positive definite"):
        thermo.GaussianNESS(H2, np.zeros((2, 2)), STEP)
    with pytest.raises(ValueError, match="square"):
        thermo.GaussianNESS(np.ones((2, 3)), D2, STEP)
    with pytest.raises(ValueError, match="lr must be > 0"):
        thermo.GaussianNESS(H2, D2, 0.0)
    with pytest.raises(ValueError, match="batch_size must be an int in"):
        thermo.minibatch_diffusion(torch.ones(5, 2), 0.1, 6)


# ---------------------------------------------------------------------------- ft-regression
def _ft_quantities(ft):
    net = FTRegressionNet(ft.w_min)
    g = thermo.per_sample_gradients(net, ft.loss, ft.x, ft.y, penalty=ft.penalty)
    h = thermo.hessian(net, ft.loss, ft.x, ft.y, penalty=ft.penalty)
    data_grad = ft.batch_gradient(ft.w_min.unsqueeze(0), data_only=True)[0]
    return g, h, data_grad


def test_ft_regression_reference_values(ft):
    """SPEC §5's table, to the digits it gives (checked values of both D variants)."""
    g, h, data_grad = _ft_quantities(ft)
    np.testing.assert_allclose(
        np.linalg.eigvalsh(h.numpy()),
        [55.02, 58.52, 397.25, 1848.56, 3097.67, 24658.46, 28317.71], rtol=1e-4)
    spec = thermo.GaussianNESS(h, thermo.minibatch_diffusion(g, LR, BATCH_SIZE), LR)
    authors = thermo.GaussianNESS(
        h, thermo.minibatch_diffusion(g, LR, BATCH_SIZE, mean_gradient=data_grad), LR)
    for ness, d11, s11, c12, sig in ((authors, 1.72743e-10, 7.7408e-7, 3.0335e-12, 3.14828e-4),
                                     (spec, 1.73058e-10, 7.8439e-7, 2.9948e-12, 3.12195e-4)):
        assert ness.diffusion[0, 0] == pytest.approx(d11, rel=5e-6)
        assert ness.covariance[0, 0] == pytest.approx(s11, rel=1e-4)
        assert ness.circulation[0, 1] == pytest.approx(c12, rel=1e-4)
        assert ness.mean_entropy_production == pytest.approx(sig, rel=5e-6)
        assert ness.lyapunov_residual() < 1e-10


def test_diffusion_equals_half_the_covariance_of_one_step_updates(ft):
    """½Cov(Δw) of 4e5 one-step WR updates from w* against D, entry by entry within 5
    Monte Carlo standard errors (each entry's s.e. from the sample variance of the products
    of the centred Δw's), and the diagonal within 1 % (SPEC: 0.3 % for 4e5 samples)."""
    g, _, _ = _ft_quantities(ft)
    d = thermo.minibatch_diffusion(g, LR, BATCH_SIZE).numpy()
    m = 400_000
    idx = EnsembleBatches(ft.n, BATCH_SIZE, m, replacement=True, seed=3).next()
    dw = (-LR * g[idx].mean(1)).numpy()  # SGD's step: −h ∇L_B at w*
    c = dw - dw.mean(0)
    prod = 0.5 * c[:, :, None] * c[:, None, :]
    est, se = prod.mean(0), prod.std(0) / np.sqrt(m)
    assert np.all(np.abs(est - d) < 5 * se)
    np.testing.assert_allclose(np.diag(est), np.diag(d), rtol=0.01)


def test_without_replacement_epoch_noise_sums_to_zero(ft):
    """WOR: every batch is marginally a uniform B-subset (same per-step D), and the M
    batch gradients of one epoch average to the full gradient exactly."""
    g, _, _ = _ft_quantities(ft)
    batches = EnsembleBatches(ft.n, BATCH_SIZE, 50_000, replacement=False, seed=4)
    epoch = torch.stack([batches.next() for _ in range(batches.steps_per_epoch)], 1)
    means = g[epoch].mean(2)  # (K, M, P) batch gradients
    torch.testing.assert_close(means.mean(1), g.mean(0).expand(50_000, -1), rtol=0, atol=1e-9)
    d = thermo.minibatch_diffusion(g, LR, BATCH_SIZE, replacement=False).numpy()
    first = (LR * means[:, 0]).numpy()
    est = 0.5 * np.cov(first.T)
    np.testing.assert_allclose(np.diag(est), np.diag(d), rtol=0.05)  # 5e4 samples: ±1.3 % s.e.


def test_effective_loss_minimum_moves_by_the_checked_amount(ft):
    """SPEC §4: Newton on L_eff (h/4) lands 4.1e-5 (relative) from w*; h/2 would double it."""
    f = thermo.effective_loss(ft.per_sample_loss, LR, BATCH_SIZE)
    w_eff = thermo.minimize_newton(f, ft.w_min, steps=3)  # quadratic convergence from 4e-5
    shift = float((w_eff - ft.w_min).norm() / ft.w_min.norm())
    assert shift == pytest.approx(4.1e-5, rel=0.02)
    assert float(torch.func.grad(f)(w_eff).norm()) < 1e-8


def test_cheap_ift_check_on_the_authors_system(ft, one_thread):
    """SPEC §5: w ~ N(w*, Σ), one WR step each, 4e5 samples: ⟨e^{−σ}⟩ = 1 within 4 s.e.
    (s.e. ≈ 4e-5) and ⟨σ⟩ within 4 s.e. (≈ 4e-5, 13 %) of the theory's 3.12195e-4."""
    g, h, _ = _ft_quantities(ft)
    ness = thermo.GaussianNESS(h, thermo.minibatch_diffusion(g, LR, BATCH_SIZE), LR,
                               mean=ft.w_min)
    m = 400_000
    w = torch.from_numpy(ness.sample(m, np.random.default_rng(5)))
    idx = EnsembleBatches(ft.n, BATCH_SIZE, m, replacement=True, seed=6).next()
    w_next = w - LR * ft.batch_gradient(w, idx)
    s = ness.entropy_production(w.numpy(), w_next.numpy())
    e = np.exp(-s)
    assert abs(e.mean() - 1) < 4 * e.std() / np.sqrt(m)
    assert abs(s.mean() - ness.mean_entropy_production) < 4 * s.std() / np.sqrt(m)
    assert s.std() == pytest.approx(0.025, rel=0.1)  # SPEC: σ's per-step sd ≈ 0.025
