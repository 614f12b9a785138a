"""Measurements shared by the SGD-NESS studies (``ft-regression``, ``ft-mnist``): K SGD
chains with entropy production on the fly, the one-step check of D, docs/science.md §5's cheap IFT
check,
the fluctuation-theorem results (``docs/thermo.md``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ... import thermo
from ...thermo.batching import EnsembleBatches


def entropy_matrix(ness: thermo.GaussianNESS) -> Tensor:
    r""":math:`M = (C\Sigma^{-1})^\top D^{-1}`, so that σ = −((w − μ) M)·Δw per chain."""
    m = (ness.circulation @ np.linalg.inv(ness.covariance)).T @ np.linalg.inv(ness.diffusion)
    return torch.from_numpy(m)


def stationary_chains(grad: Callable[[Tensor, Tensor], Tensor], w0: Tensor, lr: float,
                      batches: EnsembleBatches, steps: int, centre: Tensor,
                      matrices: dict[str, Tensor]) -> dict[str, Any]:
    """Run K SGD chains ``w ← w − h ∇L_B(w)`` from ``w0 (K, P)`` for ``steps`` steps and
    measure on the fly: σ per step and chain for every entropy matrix in ``matrices``
    (``(K, steps)`` each), the sums for the areal velocity and the per-coordinate moments
    (all relative to ``centre``), and per chain its share of the pooled per-coordinate
    variance: the chains are independent, so the shares' spread over √K is the pooled
    variance's standard error (``variance_se``)."""
    k, p = w0.shape
    w = w0.clone()
    sigma = {name: torch.empty(k, steps, dtype=torch.float64) for name in matrices}
    cross = torch.zeros(p, p, dtype=torch.float64)
    last = torch.zeros(p, dtype=torch.float64)
    chain_first = torch.zeros(k, p, dtype=torch.float64)
    chain_sq = torch.zeros(k, p, dtype=torch.float64)
    for n in range(steps):
        w_new = w - lr * grad(w, batches.next())
        a, b, dw = w - centre, w_new - centre, w_new - w
        for name, m in matrices.items():
            sigma[name][:, n] = -((a @ m) * dw).sum(1)
        cross += a.T @ b
        last += b.sum(0)
        chain_first += a
        chain_sq += a.square()
        w = w_new
    first, sq = chain_first.sum(0), chain_sq.sum(0)
    count = k * steps
    mean = first / count
    # chain k's share of the pooled variance: its mean squared deviation from the pooled
    # mean (these average to the pooled variance exactly; chains shorter than the slowest
    # relaxation time differ mostly in their means, which this keeps)
    chain_var = chain_sq / steps - 2 * mean * chain_first / steps + mean.square()
    # Σ_n (a − m)(b − m)ᵀ with the empirical mean m, from the raw sums (exact)
    centred = cross - torch.outer(mean, last) - torch.outer(first, mean) \
        + count * torch.outer(mean, mean)
    m_ = centred / (2 * count)
    return {"sigma": {n: s.numpy() for n, s in sigma.items()},
            "areal_velocity": (m_ - m_.T).numpy(), "mean": (mean + centre).numpy(),
            "variance": (sq / count - mean.square()).numpy(),
            "variance_se": chain_spread(chain_var.numpy()), "final": w}


def chain_spread(per_chain: np.ndarray) -> np.ndarray:
    """The standard error of the mean over independent chains (axis 0): their sample
    standard deviation over √K (``nan`` for one chain)."""
    k = per_chain.shape[0]
    if k < 2:
        return np.full(per_chain.shape[1:], np.nan)
    return per_chain.std(0, ddof=1) / np.sqrt(k)


def cheap_check(ness: thermo.GaussianNESS, grad: Callable[[Tensor, Tensor], Tensor],
                lr: float, batches: EnsembleBatches, seed: int) -> dict[str, float]:
    """docs/science.md §5's cheap exact check: w ~ N(w*, Σ), one WR step each; ⟨e^{−σ}⟩ and ⟨σ⟩."""
    n = batches.members
    w = torch.from_numpy(ness.sample(n, np.random.default_rng(seed)))
    idx, chunk = batches.next(), 50_000
    w_new = torch.cat([wc - lr * grad(wc, ic) for wc, ic in zip(w.split(chunk), idx.split(chunk),
                                                                strict=True)])
    s = ness.entropy_production(w.numpy(), w_new.numpy())
    e = np.exp(-s)
    return {"samples": n, "exp_minus_sigma": float(e.mean()),
            "exp_minus_sigma_se": float(e.std(ddof=1) / np.sqrt(n)),
            "mean_sigma": float(s.mean()), "mean_sigma_se": float(s.std(ddof=1) / np.sqrt(n)),
            "sigma_sd": float(s.std(ddof=1))}


def one_step_check(per_sample: Tensor, d: np.ndarray, lr: float, batches: EnsembleBatches
                   ) -> dict[str, float]:
    """½Cov(Δw) of many one-step WR updates from one point against D."""
    idx = batches.next()
    dw = np.concatenate([(-lr * per_sample[part].mean(1)).numpy()  # chunks bound the memory
                         for part in idx.split(max(1, 2**24 // (idx.shape[1]
                                                               * per_sample.shape[1])))])
    est = 0.5 * np.cov(dw.T)
    return {"samples": int(dw.shape[0]),
            "frobenius_relative_error": float(np.linalg.norm(est - d) / np.linalg.norm(d)),
            "max_diagonal_relative_error": float(np.max(np.abs(np.diag(est) / np.diag(d) - 1))),
            "expected_diagonal_se": float(np.sqrt(2 / dw.shape[0]))}


def fluctuation_results(sigma: np.ndarray, ks: list[int], bins: int) -> dict[str, Any]:
    """Integral FT for every k, detailed FT for k = 1 and the largest k."""
    ift = thermo.integral_fluctuation_theorem(sigma, k=ks)
    out: dict[str, Any] = {"ift": [{"k": r.k, "mean": r.mean, "stderr": r.stderr,
                                    "deviation": r.deviation, "windows": r.windows,
                                    "mean_entropy": r.mean_entropy,
                                    "entropy_stderr": r.entropy_stderr} for r in ift]}
    out["dft"] = []
    for k in sorted({1, max(ks)}):
        d = thermo.detailed_fluctuation_theorem(sigma, k, bins=bins)
        out["dft"].append({"k": k, "slope": d.slope, "stderr": d.stderr,
                           "deviation": d.deviation, "samples": d.samples,
                           "edges": d.edges, "counts": d.counts, "centers": d.centers,
                           "log_ratio": d.log_ratio, "log_ratio_error": d.log_ratio_error})
    s1 = thermo.integral_fluctuation_theorem(sigma, k=1)[0]
    out["mean_sigma"], out["mean_sigma_se"] = s1.mean_entropy, s1.entropy_stderr
    return out
