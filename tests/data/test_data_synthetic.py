"""Generated data sets: docs/science.md §4 (Bayesian linear regression), §5 (tanh
regression), §6."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from thermotrain.data import (
    Minibatcher,
    bayesian_linear_regression,
    planar_trig,
    spirals,
    tanh_regression,
)

# ----------------------------------------------------------------------------- spirals


def test_spirals_matches_spec_formula_exactly():
    """docs/science.md §6 Eq. 16 re-derived from the same generator stream: t first, then
    the noise."""
    n, turns, a, p, c, seed = 40, 3, 1.5, 0.7, 0.05, 123
    X, y = spirals(n, turns=turns, a=a, p=p, noise=c, seed=seed, dtype=torch.float64)

    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n // 2, generator=g, dtype=torch.float64)
    r = t**p
    arm = (
        a
        * r[:, None]
        * torch.stack([torch.cos(2 * math.pi * turns * r), torch.sin(2 * math.pi * turns * r)], 1)
    )
    expected = torch.cat([arm, -arm]) + c * torch.randn(n, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(X, expected, rtol=0, atol=1e-14)
    assert y.tolist() == [0.0] * (n // 2) + [1.0] * (n // 2)


def test_spirals_noise_free_geometry():
    X, y = spirals(200, turns=2, a=2.0, p=0.5, noise=0.0, seed=0, dtype=torch.float64)
    class0, class1 = X[:100], X[100:]
    torch.testing.assert_close(class1, -class0)  # class 1 = -x
    r = class0.norm(dim=1) / 2.0  # = t^p in [0, 1)
    assert float(r.max()) < 1.0
    angle = torch.atan2(class0[:, 1], class0[:, 0])
    expected = 2 * math.pi * 2 * r
    # angle == 2π b r (mod 2π)
    wrapped = torch.remainder(angle - expected + math.pi, 2 * math.pi) - math.pi
    assert float(wrapped.abs().max()) < 1e-9


def test_spirals_noise_has_requested_std():
    c = 0.1
    noisy, _ = spirals(20000, noise=c, seed=5, dtype=torch.float64)
    clean, _ = spirals(20000, noise=0.0, seed=5, dtype=torch.float64)  # same t draws
    residual = noisy - clean
    # 40 000 N(0, c²) draws: std error of the std ≈ c/√(2·40000) ≈ 3.5e-4.
    assert abs(float(residual.std()) - c) < 5 * c / math.sqrt(2 * residual.numel())
    assert abs(float(residual.mean())) < 5 * c / math.sqrt(residual.numel())


def test_spirals_determinism_dtype_and_generator():
    X1, y1 = spirals(100, seed=7)
    X2, y2 = spirals(100, seed=7)
    assert torch.equal(X1, X2) and torch.equal(y1, y2)
    assert X1.dtype == torch.float32 and y1.dtype == torch.float32 and X1.device.type == "cpu"
    X3, _ = spirals(100, seed=8)
    assert not torch.equal(X1, X3)
    X64, y64 = spirals(100, seed=7, dtype=torch.float64)
    torch.testing.assert_close(X64.float(), X1, rtol=0, atol=0)  # same numbers, rounded
    g = torch.Generator().manual_seed(7)
    Xa, _ = spirals(100, seed=g)
    Xb, _ = spirals(100, seed=g)  # the generator advanced: a fresh draw
    assert torch.equal(Xa, X1) and not torch.equal(Xb, X1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n": 7}, ValueError, "n must be even"),
        ({"n": 0}, ValueError, "n must be an int >= 2"),
        ({"n": 10.0}, TypeError, "n must be an int"),
        ({"n": True}, TypeError, "n must be an int"),
        ({"n": 10, "noise": -0.1}, ValueError, "noise must be >= 0"),
        ({"n": 10, "turns": 0}, ValueError, "turns must be > 0"),
        ({"n": 10, "p": float("nan")}, ValueError, "p must be finite"),
        ({"n": 10, "seed": 1.5}, TypeError, "seed must be an int"),
        ({"n": 10, "seed": -1}, ValueError, "seed must be an int >= 0"),
        ({"n": 10, "dtype": torch.int64}, ValueError, "floating-point"),
        ({"n": 10, "dtype": "float32"}, TypeError, "torch.dtype"),
        ({"n": 10, "device": 3.0}, TypeError, "device must be"),
    ],
)
def test_spirals_rejects_bad_arguments(kwargs, error, match):
    kwargs.setdefault("seed", 0)
    with pytest.raises(error, match=match):
        spirals(**kwargs)


def test_seed_is_required():
    with pytest.raises(TypeError, match="seed"):
        spirals(10)  # type: ignore[call-arg]


# ----------------------------------------------------------------------------- planar trig


def test_planar_trig_labels_follow_the_boundary_before_noise():
    a, b = 6.0, 2.0
    clean, y_clean = planar_trig(5000, frequency=a, b=b, noise=0.0, seed=3, dtype=torch.float64)
    assert float(clean.abs().max()) <= 1.0  # U([-1, 1]²)
    boundary = torch.sin(a * math.pi * clean[:, 0]) / b
    assert torch.equal(y_clean, (clean[:, 1] > boundary).double())
    assert 0.4 < float(y_clean.mean()) < 0.6  # the boundary splits the square in halves
    # Same seed with noise: same labels (decided on the clean point), points moved by noise.
    noisy, y_noisy = planar_trig(5000, frequency=a, b=b, noise=0.02, seed=3, dtype=torch.float64)
    assert torch.equal(y_noisy, y_clean)
    residual = noisy - clean
    assert abs(float(residual.std()) - 0.02) < 0.001
    assert float(noisy.abs().max()) > 1.0  # noise pushes some points out of the square


def test_planar_trig_defaults_and_errors():
    X, y = planar_trig(10, seed=0)
    assert X.shape == (10, 2) and y.shape == (10,) and X.dtype == torch.float32
    with pytest.raises(ValueError, match="frequency must be > 0"):
        planar_trig(10, frequency=0.0, seed=0)
    with pytest.raises(ValueError, match="b must be > 0"):
        planar_trig(10, b=-1.0, seed=0)


# ----------------------------------------------------------------------------- Bayesian LR


@pytest.fixture(scope="module")
def blr():
    return bayesian_linear_regression(seed=11, dtype=torch.float64)


def test_blr_posterior_matches_numpy(blr):
    X, y = blr.X.numpy(), blr.y.numpy()
    H = X.T @ X / blr.noise_std**2 + np.eye(2) / blr.prior_std**2
    mu = np.linalg.solve(H, X.T @ y / blr.noise_std**2)
    np.testing.assert_allclose(blr.precision.numpy(), H, rtol=1e-12)
    np.testing.assert_allclose(blr.mean.numpy(), mu, rtol=1e-10)
    np.testing.assert_allclose(blr.covariance.numpy(), np.linalg.inv(H), rtol=1e-10)
    assert blr.X.shape == (200, 2) and blr.y.shape == (200,) and blr.weights_true.shape == (2,)
    # The data carry information: the posterior mean is near the true weights.
    err = blr.mean - blr.weights_true
    assert float(err @ blr.precision @ err) < 20.0  # χ²₂ quantile far in the tail


def test_blr_loss_gradient_and_hessian(blr):
    theta = torch.tensor([0.3, -0.7], dtype=torch.float64, requires_grad=True)
    loss = blr.neg_log_posterior(theta)
    (auto,) = torch.autograd.grad(loss, theta)
    torch.testing.assert_close(blr.grad_neg_log_posterior(theta.detach()), auto)
    hess = torch.autograd.functional.hessian(blr.neg_log_posterior, theta.detach())
    torch.testing.assert_close(hess, blr.precision)
    # The posterior mean is the minimiser.
    assert float(blr.grad_neg_log_posterior(blr.mean).abs().max()) < 1e-9


def test_blr_minibatch_loss_is_unbiased_over_an_epoch(blr):
    """The sum-scaled L_B (docs/science.md §4): over a without-replacement epoch (B | N) the
    mean of the minibatch gradients is the full gradient, for each of K chains with its own
    batches."""
    theta = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    batcher = Minibatcher(blr.n, 10, seeds=[1, 2, 3])
    grads = torch.stack([blr.grad_neg_log_posterior(theta, next(batcher)) for _ in range(20)])
    torch.testing.assert_close(grads.mean(0), blr.grad_neg_log_posterior(theta))
    losses = blr.neg_log_posterior(theta, torch.arange(10).expand(3, 10))
    assert losses.shape == (3,)
    # A shared (B,) index and per-chain (K, B) indices agree.
    idx = torch.arange(10, 20)
    torch.testing.assert_close(
        blr.grad_neg_log_posterior(theta, idx), blr.grad_neg_log_posterior(theta, idx.expand(3, 10))
    )
    with pytest.raises(ValueError, match=r"theta must have shape \(\.\.\., 2\)"):
        blr.neg_log_posterior(torch.zeros(3))


def test_blr_ula_covariance_solves_the_discrete_lyapunov_equation(blr):
    h = 0.5 * blr.max_stable_step()
    sigma_h = blr.ula_covariance(h)
    A = torch.eye(2, dtype=torch.float64) - h * blr.precision
    torch.testing.assert_close(sigma_h, A @ sigma_h @ A.T + 2 * h * torch.eye(2).double())
    # Small-h expansion: Σ_h = H⁻¹ + (h/2) I + O(h²).
    h_small = 1e-5
    torch.testing.assert_close(
        blr.ula_covariance(h_small),
        blr.covariance + 0.5 * h_small * torch.eye(2, dtype=torch.float64),
        rtol=0,
        atol=1e-8,
    )
    with pytest.raises(ValueError, match=r"h must be < 2/lambda_max\(H\)"):
        blr.ula_covariance(1.01 * blr.max_stable_step())
    with pytest.raises(ValueError, match="h must be > 0"):
        blr.ula_covariance(0.0)


def test_blr_ula_chains_reach_ula_covariance_not_posterior():
    """Many parallel ULA chains: the empirical covariance matches [H(I - hH/2)]⁻¹ and is
    measurably different from H⁻¹ (h chosen so that the gap is ~30 %)."""
    problem = bayesian_linear_regression(20, 2, seed=4, dtype=torch.float64)
    h = 0.4 * problem.max_stable_step()
    chains, steps = 20000, 150  # mixing time ~ 1/(h λ_min) ≪ steps
    g = torch.Generator().manual_seed(0)
    # ULA, θ ← θ - h∇U(θ) + √(2h)ξ, written for the deviation δ = θ - μ with ∇U = Hδ
    # (∇U itself is checked against autograd above): δ ← δ(I - hH) + √(2h)ξ.
    step = torch.eye(2, dtype=torch.float64) - h * problem.precision
    delta = torch.zeros(chains, 2, dtype=torch.float64)
    noise = torch.randn(steps, chains, 2, generator=g, dtype=torch.float64)
    for xi in noise:
        delta = torch.addmm(xi, delta, step, alpha=1.0, beta=math.sqrt(2 * h))
    torch.testing.assert_close(
        problem.grad_neg_log_posterior(problem.mean + delta[:3]), delta[:3] @ problem.precision
    )
    empirical = torch.cov(delta.T)
    target = problem.ula_covariance(h)
    rel = float(torch.linalg.matrix_norm(empirical - target) / torch.linalg.matrix_norm(target))
    gap = float(
        torch.linalg.matrix_norm(problem.covariance - target) / torch.linalg.matrix_norm(target)
    )
    assert gap > 0.1  # the two answers are distinguishable ...
    assert rel < 0.04  # ... and ULA sits on its own (MC error ≈ √(2/20000) ≈ 1 %)


def test_blr_dtype_and_arguments():
    p32 = bayesian_linear_regression(50, 3, seed=0)
    assert p32.X.dtype == p32.precision.dtype == p32.ula_covariance(1e-3).dtype == torch.float32
    assert p32.covariance.shape == (3, 3) and p32.n == 50 and p32.dim == 3
    with pytest.raises(ValueError, match="noise_std must be > 0"):
        bayesian_linear_regression(seed=0, noise_std=0.0)
    with pytest.raises(ValueError, match="d must be an int >= 1"):
        bayesian_linear_regression(d=0, seed=0)


# ----------------------------------------------------------------------------- tanh


def test_tanh_regression_grid_and_noise():
    x, y = tanh_regression(0, dtype=torch.float64)
    assert x.shape == y.shape == (200, 1)
    assert float(x[0, 0]) == -3.0 and x[1, 0].item() == pytest.approx(-2.97, abs=1e-12)
    assert x[-1, 0].item() == pytest.approx(2.97, abs=1e-12)
    torch.testing.assert_close(x[1:] - x[:-1], torch.full((199, 1), 0.03, dtype=torch.float64))
    residual = y - torch.exp(-(x**2))
    # 200 N(0, 0.1²) draws: the sample std is within ±25 % with overwhelming probability.
    assert 0.075 < float(residual.std()) < 0.125
    assert abs(float(residual.mean())) < 0.03
    x0, y0 = tanh_regression(0, noise_std=0.0)
    torch.testing.assert_close(y0, torch.exp(-(x0**2)))
    _, y_other = tanh_regression(1)
    assert not torch.equal(y_other, tanh_regression(0)[1])
    with pytest.raises(ValueError, match="noise_std must be >= 0"):
        tanh_regression(0, noise_std=-1.0)
