"""Hessian tools on Hessian-vector products against the exact Hessian (torch.func.hessian)
of each member of a small ensemble."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call
from torch.testing import assert_close

from thermotrain import landscape
from thermotrain.models import MLP, classification_loss

F64 = torch.float64


@pytest.fixture(scope="module")
def setup():
    """A 2-member 3-5-3 tanh ensemble (38 parameters per member), 3-class data, and each
    member's exact Hessian (full and per-layer blocks)."""
    torch.manual_seed(0)  # only for the fixture's data; the tools take explicit seeds
    g = torch.Generator().manual_seed(1)
    net = MLP([3, 5, 3], activation="tanh", ensemble=2, seed=3, dtype=F64)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)  # away from the near-linear regime: an indefinite Hessian
    x = torch.randn(40, 3, generator=g, dtype=F64)
    y = torch.randint(0, 3, (40,), generator=g)
    exact, blocks = [], []
    for k in range(2):
        plain = net.member(k)
        names = [n for n, _ in plain.named_parameters()]
        shapes = [p.shape for p in plain.parameters()]
        sizes = [p.numel() for p in plain.parameters()]

        def f(flat, plain=plain, names=names, shapes=shapes, sizes=sizes):
            parts = torch.split(flat, sizes)
            params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes, strict=True)}
            return classification_loss(functional_call(plain, params, (x,)), y)

        theta = torch.cat([p.detach().reshape(-1) for p in plain.parameters()])
        h = torch.func.hessian(f)(theta)
        exact.append(h)
        cut = [0, sizes[0] + sizes[1], sum(sizes)]
        blocks.append({"layers.0": h[:cut[1], :cut[1]], "layers.1": h[cut[1]:, cut[1]:]})
    return net, (x, y), exact, blocks


@pytest.mark.parametrize("backend", ["autograd", "func"])
def test_hessian_vector_product_is_the_exact_hessian_times_v(setup, backend):
    net, data, exact, _ = setup
    matvec, flat = landscape.hessian.hessian_vector_product(net, None, data, batch_size=13,
                                                            backend=backend)
    v = torch.randn(3, 2, flat.size, generator=torch.Generator().manual_seed(5), dtype=F64)
    hv = matvec(v[0])
    many = matvec(v)  # three vectors per member in one call
    for k in range(2):
        assert_close(hv[k], exact[k] @ v[0, k], rtol=1e-10, atol=1e-12)
        for i in range(3):
            assert_close(many[i, k], exact[k] @ v[i, k], rtol=1e-10, atol=1e-12)
    assert torch.equal(matvec(v[0]), hv)  # the stored graph is reusable


def test_lanczos_top_eigenvalues_match_eigh(setup):
    net, data, exact, _ = setup
    top = landscape.hessian_eigenvalues(net, None, data, k=4)  # 100 steps >= P: exact
    func = landscape.hessian_eigenvalues(net, None, data, k=4, backend="func")
    for k in range(2):
        ref = torch.linalg.eigvalsh(exact[k]).flip(0)[:4]
        assert_close(top[k], ref, rtol=1e-8, atol=1e-10)
        assert_close(func[k], ref, rtol=1e-8, atol=1e-10)
    # a short run still resolves the extreme eigenvalue (Lanczos converges there first)
    short = landscape.hessian_eigenvalues(net, None, data, k=1, iterations=15, seed=2)
    for k in range(2):
        assert short[k, 0].item() == pytest.approx(torch.linalg.eigvalsh(exact[k])[-1].item(),
                                                   rel=1e-4)


def test_power_iteration_with_deflation_finds_the_largest_in_magnitude(setup):
    net, data, exact, _ = setup
    vals = landscape.hessian_eigenvalues(net, None, data, k=2, method="power",
                                         iterations=2000, tol=1e-12)
    for k in range(2):
        ev = torch.linalg.eigvalsh(exact[k])
        ref = ev[ev.abs().argsort(descending=True)][:2]
        assert_close(vals[k], ref, rtol=1e-5, atol=1e-8)


def test_per_layer_eigenvalues_are_the_diagonal_blocks(setup):
    net, data, _, blocks = setup
    per = landscape.hessian_eigenvalues(net, None, data, k=2, per_layer=True)
    assert list(per) == ["layers.0", "layers.1"]
    for name, vals in per.items():
        for k in range(2):
            ref = torch.linalg.eigvalsh(blocks[k][name]).flip(0)[:2]
            assert_close(vals[k], ref, rtol=1e-8, atol=1e-10)


def test_hutchinson_trace_is_within_its_monte_carlo_error(setup):
    net, data, exact, blocks = setup
    n = 400
    est = landscape.hessian_trace(net, None, data, samples=n, seed=11)
    for k in range(2):
        h = exact[k]
        # exact variance of v^T H v for Rademacher v: 2 sum_{i != j} H_ij^2; the mean of n
        # samples has sd sqrt(var / n); 5 sd is a false-failure chance of 6e-7 per member
        var = 2 * (h.square().sum() - h.diagonal().square().sum())
        assert abs(est[k] - h.trace()) < 5 * math.sqrt(var / n)
    # same seed, same numbers; per-layer traces estimate the blocks' traces
    assert torch.equal(est, landscape.hessian_trace(net, None, data, samples=n, seed=11))
    per = landscape.hessian_trace(net, None, data, samples=n, seed=12, per_layer=True)
    for name, values in per.items():
        for k in range(2):
            h = blocks[k][name]
            var = 2 * (h.square().sum() - h.diagonal().square().sum())
            assert abs(values[k] - h.trace()) < 5 * math.sqrt(var / n)


def test_slq_nodes_are_the_eigenvalues_and_moments_are_unbiased(setup):
    net, data, exact, _ = setup
    p = exact[0].shape[0]
    full = landscape.hessian_density(net, None, data, steps=p, runs=24, seed=4)
    assert full.nodes.shape == (24, 2, p)
    assert_close(full.weights.sum(-1), torch.ones(24, 2, dtype=F64), rtol=1e-10, atol=1e-10)
    for k in range(2):
        ev = torch.linalg.eigvalsh(exact[k])
        # with m = P steps every run's nodes are the exact spectrum
        assert_close(full.nodes[0, k], ev, rtol=1e-7, atol=1e-9)
        # E[sum_i w_i λ_i^2] = tr(H^2)/P; the run-to-run spread gives the Monte Carlo error
        per_run = (full.weights[:, k] * full.nodes[:, k].square()).sum(-1)
        mean, sd = per_run.mean(), per_run.std() / math.sqrt(24)
        assert abs(mean - ev.square().mean()) < 5 * sd
    grid = torch.linspace(-5, 5, 2001, dtype=F64)
    dens = full.density(grid, sigma=0.05)
    spacing = float(grid[1] - grid[0])
    assert_close(dens.sum(-1) * spacing, torch.ones(2, dtype=F64), rtol=2e-2, atol=0)


def test_plain_model_shapes_and_argument_errors(setup):
    net, data, exact, _ = setup
    plain = net.member(1)
    vals = landscape.hessian_eigenvalues(plain, None, data, k=3)
    assert vals.shape == (3,)
    assert_close(vals, torch.linalg.eigvalsh(exact[1]).flip(0)[:3], rtol=1e-8, atol=1e-10)
    assert landscape.hessian_trace(plain, None, data, samples=3).shape == ()
    with pytest.raises(ValueError, match="method must be 'lanczos' or 'power', got 'qr'"):
        landscape.hessian_eigenvalues(net, None, data, method="qr")
    with pytest.raises(ValueError, match="k must be <= the number of parameters"):
        landscape.hessian_eigenvalues(net, None, data, k=1000)
    with pytest.raises(ValueError, match="backend must be one of .*got 'jax'"):
        landscape.hessian_trace(net, None, data, backend="jax")
    with pytest.raises(ValueError, match="samples must be an int >= 1, got 0"):
        landscape.hessian_trace(net, None, data, samples=0)
