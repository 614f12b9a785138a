"""Gauss length (SPEC §8): the half-circle unit check, straight lines, and the exact
derivative against the arc length of the logit direction on a fine grid."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from thermotrain import landscape
from thermotrain.models import MLP

F64 = torch.float64


class HalfCircle(nn.Module):
    """Logits (r cos πw, r sin πw) for every input: w from 0 to 1 traces a half circle."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1, dtype=F64))
        self.r = nn.Parameter(torch.ones(1, dtype=F64))

    def forward(self, x):
        z = self.r * torch.cat([torch.cos(math.pi * self.w), torch.sin(math.pi * self.w)])
        return z.expand(x.shape[0], 2)


def test_logits_tracing_a_half_circle_have_gauss_length_pi():
    net = HalfCircle()
    start = {"w": torch.zeros(1, dtype=F64), "r": torch.ones(1, dtype=F64)}
    end = {"w": torch.ones(1, dtype=F64), "r": torch.ones(1, dtype=F64)}
    x = torch.zeros(5, 1, dtype=F64)
    # v = dz/dα = π r (−sin πα, cos πα) turns at the constant rate π: G = π (trapezoid exact)
    assert landscape.gauss_length(net, start, end, x, alphas=11).item() == pytest.approx(
        math.pi, rel=1e-12)


def test_straight_logit_paths_have_zero_length():
    lin = nn.Linear(3, 4, dtype=F64)  # logits linear in θ: a straight segment in logit space
    start = copy.deepcopy(lin.state_dict())
    end = {k: v + torch.randn_like(v) for k, v in start.items()}
    x = torch.randn(7, 3, dtype=F64)
    assert landscape.gauss_length(lin, start, end, x, alphas=5).item() == pytest.approx(
        0.0, abs=1e-12)


def _direction_arc_length(plain, start, end, x, n):
    """Σ‖u(α_{i+1}) − u(α_i)‖ on a fine grid: the chord approximation of G (no derivatives)."""
    us = []
    for alpha in torch.linspace(0, 1, n, dtype=F64).tolist():
        net = copy.deepcopy(plain)
        net.load_state_dict({k: (1 - alpha) * start[k] + alpha * end[k] for k in start})
        with torch.no_grad():
            us.append(net(x))
    z = torch.stack(us)  # (n, B, out)
    v = (z[2:] - z[:-2])  # central differences ∝ velocity
    u = v / v.norm(dim=-1, keepdim=True)
    return (u[1:] - u[:-1]).norm(dim=-1).sum(0).mean()


def test_ensemble_gauss_length_matches_the_finite_difference_arc_length_of_each_member():
    net = MLP([3, 6, 4], activation="tanh", ensemble=2, seed=0, dtype=F64)
    start = copy.deepcopy(net.state_dict())
    g = torch.Generator().manual_seed(3)
    end = {k: v + 1.5 * torch.randn(v.shape, generator=g, dtype=F64) for k, v in start.items()}
    x = torch.randn(9, 3, generator=g, dtype=F64)
    got = landscape.gauss_length(net, start, end, x, alphas=201, batch_size=4)
    assert got.shape == (2,)
    for k in range(2):
        plain = net.member(k)
        s = {n: t[k] for n, t in start.items()}
        e = {n: t[k] for n, t in end.items()}
        ref = _direction_arc_length(plain, s, e, x, 2001)
        # trapezoid (201 points) vs chords (2000): both O(h²)-accurate, agreeing to ~1e-4
        assert got[k].item() == pytest.approx(ref.item(), rel=2e-3)
        assert landscape.gauss_length(plain, s, e, x, alphas=201).item() == pytest.approx(
            got[k].item(), rel=1e-10)
    assert bool((got > 0.05).all())  # a curved path: not the trivial zero


def test_batchnorm_models_and_bad_input():
    net = MLP([3, 6, 4], batchnorm=True, ensemble=2, seed=0, dtype=F64)
    start = copy.deepcopy(net.state_dict())
    end = {k: (v + 0.5 if v.dtype.is_floating_point else v) for k, v in start.items()}
    x = torch.randn(20, 3, dtype=F64)
    for mode in landscape.BATCHNORM_MODES:
        g = landscape.gauss_length(net, start, end, x, alphas=9, batchnorm=mode, bn_x=x)
        assert g.shape == (2,) and bool(torch.isfinite(g).all())
    with pytest.raises(ValueError, match="x must be a tensor of inputs"):
        landscape.gauss_length(net, start, end, torch.zeros(0, 3))
