"""The authors' AdLaLa, written out plainly from SPEC §2–§3 (independent of the library code),
against the library's :class:`thermotrain.AdLaLa` on the same 2-100-1 network, data and noise.

The noise convention the plain version follows is the documented one: each step draws one
vector of standard normals, laid out group by group (layer order), draw by draw, tensor by
tensor (``docs/conventions.md``): from a ``torch.Generator`` seeded with ``seed``
(``rng="torch"``), or entries ``[0, M)`` of Philox draw ``n`` keyed ``seed`` (``rng="philox"``,
the definition :func:`philox_normal_reference`).
"""

from __future__ import annotations

import math

import pytest
import torch

import thermotrain as tt
from thermotrain.samplers.philox import philox_normal_reference

H, GAMMA, TAU1, TAU2, SIGMA_A, EPS, XI0 = 0.25, 0.1, 1e-4, 1e-4, 0.01, 0.05, 0.1
STEPS, BATCH, SEED = 300, 25, 7


def spiral_like_data():
    g = torch.Generator().manual_seed(0)
    t = torch.rand(250, generator=g, dtype=torch.float64).sqrt()
    arm = 2 * t[:, None] * torch.stack([torch.cos(4 * math.pi * t), torch.sin(4 * math.pi * t)], 1)
    x = torch.cat([arm, -arm]) + 0.02 * torch.randn(500, 2, generator=g, dtype=torch.float64)
    y = torch.cat([torch.zeros(250), torch.ones(250)]).to(torch.float64)
    order = torch.randperm(500, generator=g)
    return x[order], y[order]


def make_net():
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(2, 100), torch.nn.ReLU(),
                               torch.nn.Linear(100, 1), torch.nn.Sigmoid()).double()


def batch(x, y, n):
    lo = (n * BATCH) % len(x)
    return x[lo : lo + BATCH], y[lo : lo + BATCH, None]


def plain_adlala(net, x, y, rng="torch"):
    """SPEC §2–§3 written out: merged kicks (h/2 first, then h) on zero initial momenta;
    layer 1 (weight, bias) AdL: A C D E D C A per tensor with its own ξ; layer 2 BAOAB's A O A."""
    layer1 = [net[0].weight, net[0].bias]
    layer2 = [net[2].weight, net[2].bias]
    params = layer1 + layer2
    p = [torch.zeros_like(w) for w in params]
    xi = [XI0 for _ in layer1]
    gen = torch.Generator().manual_seed(SEED)
    sizes = [w.numel() for w in layer1] * 2 + [w.numel() for w in layer2]
    c = math.exp(-GAMMA * H)
    d = math.sqrt((1 - math.exp(-2 * GAMMA * H)) * TAU2)
    loss_fn = torch.nn.BCELoss()
    for n in range(STEPS):
        xb, yb = batch(x, y, n)
        net.zero_grad()
        loss_fn(net(xb), yb).backward()
        if rng == "torch":
            flat = torch.randn(sum(sizes), generator=gen, dtype=torch.float64)
        else:
            flat = philox_normal_reference([SEED], n, sum(sizes), torch.float64)[0]
        R = list(torch.split(flat, sizes))
        k = H / 2 if n == 0 else H
        with torch.no_grad():
            for i, w in enumerate(params):
                p[i] = p[i] - k * w.grad
            for i, w in enumerate(layer1):  # adaptive Langevin
                r1 = R[i].view(w.shape)
                r2 = R[len(layer1) + i].view(w.shape)
                w += H / 2 * p[i]
                p[i] = math.exp(-xi[i] * H / 2) * p[i]
                p[i] = p[i] + SIGMA_A * math.sqrt(H / 2) * r1
                xi[i] = xi[i] + H * EPS * ((p[i] * p[i]).sum().item() - w.numel() * TAU1)
                p[i] = p[i] + SIGMA_A * math.sqrt(H / 2) * r2
                p[i] = math.exp(-xi[i] * H / 2) * p[i]
                w += H / 2 * p[i]
            for j, w in enumerate(layer2):  # Langevin
                i = len(layer1) + j
                r = R[2 * len(layer1) + j].view(w.shape)
                w += H / 2 * p[i]
                p[i] = c * p[i] + d * r
                w += H / 2 * p[i]
    return [w.detach().clone() for w in params], xi


def library_adlala(net, x, y, rng="torch"):
    opt = tt.AdLaLa(net, lr=H, friction=GAMMA, temperature=(TAU1, TAU2), noise=SIGMA_A,
                    coupling=EPS, xi_init=XI0, seed=SEED, rng=rng)
    loss_fn = torch.nn.BCELoss()
    for n in range(STEPS):
        xb, yb = batch(x, y, n)
        opt.zero_grad()
        loss_fn(net(xb), yb).backward()
        opt.step()
    xi = [t.item() for t in opt.thermostats()[0]]
    return [w.detach().clone() for w in net.parameters()], xi


@pytest.mark.parametrize("rng", ["torch", "philox"])
def test_library_adlala_equals_the_authors_algorithm(rng):
    x, y = spiral_like_data()
    ref_params, ref_xi = plain_adlala(make_net(), x, y, rng)
    lib_params, lib_xi = library_adlala(make_net(), x, y, rng)
    start = [w.detach() for w in make_net().parameters()]
    for a, b, s in zip(lib_params, ref_params, start, strict=True):
        assert not torch.allclose(a, s)  # the run moved
        # float64 throughout; the fused kernel may contract multiply-adds and sums pᵀp in
        # another order, so 300 steps agree to rounding, far inside 1e-9 relative
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert lib_xi == [pytest_approx(v) for v in ref_xi]


def pytest_approx(v):
    return pytest.approx(v, rel=1e-9, abs=1e-12)
