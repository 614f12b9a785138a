"""Specific behaviour of the optimizer shell and the presets."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from harness import loss, make_layers, run

import thermotrain as tt


def _flat(layers):
    return [p for lay in layers for p in lay]


# ---------------------------------------------------------------- deterministic limits
def test_sgld_at_zero_temperature_is_sgd():
    la, lb = make_layers(), make_layers()
    a = run(tt.SGLD(_flat(la), lr=0.05, temperature=0.0, seed=0), la, 50)
    b = run(torch.optim.SGD(_flat(lb), lr=0.05), lb, 50)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_baoab_at_zero_temperature_is_the_damped_momentum_method():
    """θ_{n+1} = θ_n + v_n, v_n = c v_{n-1} − h²(1+c)/2 g_n (first step: half of that),
    c = e^{−γh}: heavy ball with μ = c and SGD lr = h²(1+c)/2 (docs/conventions.md)."""
    h, gamma = 0.1, 2.0
    c = math.exp(-gamma * h)
    la = make_layers()
    a = run(tt.BAOAB(_flat(la), lr=h, friction=gamma, temperature=0.0, seed=0), la, 60)

    lb = make_layers()
    params = _flat(lb)
    v = [torch.zeros_like(p) for p in params]
    for n in range(60):
        for p in params:
            p.grad = None
        loss(lb, n).backward()
        with torch.no_grad():
            scale = 0.5 if n == 0 else 1.0
            for p, vi in zip(params, v, strict=True):
                vi.mul_(c).add_(p.grad, alpha=-scale * h * h * (1 + c) / 2)
                p.add_(vi)
    for x, y in zip(a, params, strict=True):
        torch.testing.assert_close(x, y.detach(), rtol=1e-12, atol=1e-14)


def test_baoab_zero_temperature_matches_torch_sgd_momentum_after_first_step():
    """With the mapping μ = e^{−γh}, lr = h²(1+μ)/2, BAOAB(τ=0) equals torch SGD(momentum=μ)
    whose first step is halved (the authors' opening half kick)."""
    h, gamma = 0.2, 1.0
    mu = math.exp(-gamma * h)
    lr = h * h * (1 + mu) / 2
    la, lb = make_layers(), make_layers()
    a = run(tt.BAOAB(_flat(la), lr=h, friction=gamma, temperature=0.0, seed=0), la, 40)
    sgd = torch.optim.SGD(_flat(lb), lr=lr, momentum=mu)
    # SGD's momentum buffer remembers the first gradient at full weight, so the opening
    # half kick is the first gradient halved:
    params = _flat(lb)
    for n in range(40):
        sgd.zero_grad()
        (loss(lb, n) * (0.5 if n == 0 else 1.0)).backward()
        sgd.step()
    for x, y in zip(a, params, strict=True):
        torch.testing.assert_close(x, y.detach(), rtol=1e-10, atol=1e-12)


def test_overdamped_position_form():
    """θ_{n+1} = θ_n − (h²/2)∇L + (h/2)√τ(R_n + R_{n−1}) (first step: −h²/4 ∇L + h/2 √τ R_0)."""
    h, tau = 0.3, 1e-2
    la = make_layers()
    opt = tt.OverdampedLangevin(_flat(la), lr=h, temperature=tau, seed=4, rng="torch")
    traj = [[p.detach().clone() for p in _flat(la)]]
    grads = []
    for n in range(20):
        opt.zero_grad()
        loss(la, n).backward()
        grads.append([p.grad.clone() for p in _flat(la)])
        opt.step()
        traj.append([p.detach().clone() for p in _flat(la)])
    # recover the noise the scheme used from its own definition, then check the form
    gen = torch.Generator().manual_seed(4)
    sizes = [p.numel() for p in _flat(la)]
    prev = None
    for n in range(20):
        flat = torch.randn(sum(sizes), generator=gen, dtype=torch.float64)
        noise = list(torch.split(flat, sizes))
        for i, p in enumerate(_flat(la)):
            r = noise[i].view(p.shape)
            k = h * h / 4 if n == 0 else h * h / 2
            expect = traj[n][i] - k * grads[n][i] + (h / 2) * math.sqrt(tau) * r
            if prev is not None:
                expect = expect + (h / 2) * math.sqrt(tau) * prev[i].view(p.shape)
            torch.testing.assert_close(traj[n + 1][i], expect, rtol=1e-10, atol=1e-12)
        prev = noise


# ---------------------------------------------------------------- groups and schedules
def test_per_group_hyperparameters_are_honoured():
    """Separable loss: changing group 1's temperature leaves group 0's trajectory unchanged;
    lr=0 freezes a group."""
    def traj(tau1, lr1=0.1, steps=40):
        x = torch.ones(3, dtype=torch.float64, requires_grad=True)
        y = torch.ones(2, dtype=torch.float64, requires_grad=True)
        opt = tt.PartitionedLangevin(
            [{"params": [x], "scheme": "langevin", "temperature": 1e-2},
             {"params": [y], "scheme": "adaptive", "temperature": tau1, "lr": lr1}],
            lr=0.1, seed=0)
        for _ in range(steps):
            opt.zero_grad()
            (x.square().sum() + y.square().sum()).backward()
            opt.step()
        return x.detach().clone(), y.detach().clone()

    x1, y1 = traj(1e-2)
    x2, y2 = traj(1.0)
    assert torch.equal(x1, x2)
    assert not torch.equal(y1, y2)
    _, y3 = traj(1.0, lr1=0.0)
    assert torch.equal(y3, torch.ones(2, dtype=torch.float64))


def test_lr_scheduler_drives_lr():
    la, lb = make_layers(), make_layers()
    opt = tt.BAOAB(_flat(la), lr=0.1, temperature=1e-4, seed=0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
    for n in range(12):
        opt.zero_grad()
        loss(la, n).backward()
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.25)
    # the same through a schedule callable
    opt2 = tt.BAOAB(_flat(lb), lr=lambda n: 0.1 * 0.5 ** (n // 5), temperature=1e-4, seed=0)
    b = run(opt2, lb, 12)
    for x, y in zip(_flat(la), b, strict=True):
        assert torch.equal(x.detach(), y)


def test_add_param_group_and_layers():
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    assert [len(lay) for lay in tt.layers(model)] == [2, 2]
    opt = tt.BAOAB(model[0].parameters(), lr=0.1, temperature=1e-4, seed=0)
    opt.add_param_group({"params": model[2].parameters(), "scheme": "overdamped"})
    assert [g["scheme"] for g in opt.param_groups] == ["langevin", "overdamped"]
    model(torch.randn(8, 2)).sum().backward()
    opt.step()
    assert all(m is not None for group in opt.momenta() for m in group)


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("key", ["lr", "friction", "temperature", "noise", "coupling"])
@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_hyperparameters_raise_naming_the_value(key, bad):
    p = torch.zeros(3, requires_grad=True)
    kwargs = {"lr": 0.1, "scheme": "adaptive" if key in ("noise", "coupling") else "langevin",
              key: bad}
    with pytest.raises(ValueError, match=key):
        tt.PartitionedLangevin([p], **kwargs)


def test_bad_schedule_value_raises_at_step():
    p = torch.zeros(3, requires_grad=True)
    opt = tt.BAOAB([p], lr=0.1, temperature=lambda n: -1.0 if n >= 1 else 0.0, seed=0)
    p.grad = torch.ones(3)
    opt.step()
    with pytest.raises(ValueError, match=r"schedule at step 1.*temperature must be >= 0, got -1.0"):
        opt.step()


def test_construction_errors():
    p = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match="unknown scheme 'nose'.*adaptive"):
        tt.PartitionedLangevin([p], scheme="nose")
    with pytest.raises(ValueError, match="more than one"):
        tt.PartitionedLangevin([{"params": [p]}, {"params": [p]}])
    with pytest.raises(TypeError, match="lr"):
        tt.BAOAB([p], lr="fast")
    with pytest.raises(ValueError, match="nan_policy"):
        tt.BAOAB([p], nan_policy="explode")
    one_layer = torch.nn.Linear(2, 1)
    for preset in (tt.AdLaLa, tt.LOL):
        with pytest.raises(ValueError, match=rf"{preset.__name__} needs at least 2 layers.*has 1"):
            preset(one_layer)
    with pytest.raises(TypeError, match="partitions by layer"):
        tt.AdLaLa(one_layer.parameters())
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Linear(4, 1))
    with pytest.raises(ValueError, match="adaptive_layers"):
        tt.AdLaLa(model, adaptive_layers=(5,))
    with pytest.raises(ValueError, match="3 values but there are 2 layers"):
        tt.LaLa(model, temperature=[1e-4, 1e-4, 1e-4])
    with pytest.raises(ValueError, match="temperature"):
        tt.AdLaLa(model, temperature=(1e-4, 1e-4, 1e-4))
    with pytest.raises(ValueError, match="one seed per ensemble member"):
        tt.BAOAB([torch.zeros(4, 3, requires_grad=True)], ensemble_dim=0, seed=[1, 2])
    with pytest.raises(ValueError, match="ensemble_dim"):
        tt.PartitionedLangevin([{"params": [torch.zeros(4, 3, requires_grad=True)],
                                 "ensemble_dim": 0},
                                {"params": [torch.zeros(3, requires_grad=True)]}])
    with pytest.raises(ValueError, match="ensemble members"):
        tt.BAOAB([torch.zeros(4, 3, requires_grad=True), torch.zeros(5, requires_grad=True)],
                 ensemble_dim=0)
    with pytest.raises(ValueError, match="seed must be an int >= 0, got -1"):
        tt.BAOAB([p], seed=-1)


def test_non_finite_step_raises_or_warns():
    p = torch.ones(3, requires_grad=True)
    opt = tt.BAOAB([p], lr=0.1, temperature=1e-4, seed=0)
    p.grad = torch.tensor([1.0, float("inf"), 1.0])
    with pytest.raises(FloatingPointError, match="non-finite.*shape \\(3,\\)"):
        opt.step()
    q = torch.ones(3, requires_grad=True)
    opt = tt.BAOAB([q], lr=0.1, temperature=1e-4, seed=0, nan_policy="warn")
    q.grad = torch.tensor([float("nan"), 1.0, 1.0])
    with pytest.warns(RuntimeWarning, match="non-finite"):
        opt.step()
    r = torch.ones(3, requires_grad=True)
    opt = tt.BAOAB([r], lr=0.1, temperature=1e-4, seed=0, nan_policy="ignore")
    r.grad = torch.tensor([float("nan"), 1.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()


# ---------------------------------------------------------------- state access
def test_finalize_gives_full_step_momenta_without_moving_positions():
    la, lb = make_layers(), make_layers()
    h = 0.05
    oa = tt.BAOAB(_flat(la), lr=h, temperature=1e-3, seed=0)
    ob = tt.BAOAB(_flat(lb), lr=h, temperature=1e-3, seed=0)
    run(oa, la, 10)
    run(ob, lb, 10)
    ob.zero_grad()
    loss(lb, 10).backward()
    stored = [m.clone() for m in ob.momenta()[0]]
    ob.finalize()
    for m, s, p in zip(ob.momenta()[0], stored, _flat(lb), strict=True):
        torch.testing.assert_close(m, s - h / 2 * p.grad)
    ob.step()  # kicks by h/2 only now
    oa.zero_grad()
    loss(la, 10).backward()
    oa.step()
    for x, y in zip(_flat(la), _flat(lb), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-13, atol=1e-15)


def test_thermostats_and_kinetic_temperature_shapes():
    ens = make_layers(members=4)
    opt = tt.AdLaLa(ens, ensemble_dim=0, seed=0)
    run(opt, ens, 3)
    xi = opt.thermostats()
    assert xi[0][0].shape == (4, 1, 1) and xi[0][1].shape == (4, 1)
    assert xi[1] == [None, None]
    temps = opt.kinetic_temperature()
    assert [t.shape for t in temps] == [(4,), (4,)]
    single = make_layers()
    opt1 = tt.AdLaLa(single, seed=0)
    run(opt1, single, 3)
    assert opt1.thermostats()[0][0].shape == ()
    assert opt1.kinetic_temperature()[0].shape == ()


def test_permute_state_moves_momenta_with_weights():
    w = torch.randn(4, 3, requires_grad=True)
    opt = tt.BAOAB([w], lr=0.1, temperature=1e-3, seed=0)
    w.grad = torch.randn(4, 3)
    opt.step()
    m = opt.momenta()[0][0].clone()
    perm = torch.tensor([2, 0, 3, 1])
    opt.permute_state(w, perm, dim=0)
    assert torch.equal(opt.momenta()[0][0], m[perm])
    # per-member permutation on an ensemble
    we = torch.randn(2, 4, 3, requires_grad=True)
    opt = tt.BAOAB([we], lr=0.1, temperature=1e-3, seed=0, ensemble_dim=0)
    we.grad = torch.randn(2, 4, 3)
    opt.step()
    m = opt.momenta()[0][0].clone()
    idx = torch.tensor([[1, 0, 2, 3], [3, 2, 1, 0]])
    opt.permute_state(we, idx, dim=1)
    assert torch.equal(opt.momenta()[0][0][0], m[0][idx[0]])
    assert torch.equal(opt.momenta()[0][0][1], m[1][idx[1]])


def test_params_without_grad_are_left_alone():
    a = torch.ones(3, requires_grad=True)
    b = torch.ones(2, requires_grad=True)
    opt = tt.BAOAB([a, b], lr=0.1, temperature=1e-2, seed=0)
    a.grad = torch.ones(3)
    opt.step()
    assert torch.equal(b, torch.ones(2)) and not torch.equal(a, torch.ones(3))


@pytest.mark.parametrize("rng", ["torch", "philox"])
def test_a_trailing_ensemble_axis_equals_separate_runs(rng):
    # members stacked on the last axis (not the leading one): the noise views and the
    # per-member reductions must follow it
    K, seeds = 3, [7, 8, 9]
    g = torch.Generator().manual_seed(0)
    w0, b0 = torch.randn(4, K, generator=g, dtype=torch.float64), torch.randn(2, K, generator=g,
                                                                                dtype=torch.float64)
    scale = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)

    def build(w, b, seed, edim):
        return tt.PartitionedLangevin(
            [{"params": [w], "scheme": "adaptive", "temperature": 1e-2},
             {"params": [b], "scheme": "langevin", "temperature": 1e-2, "friction": 1.0}],
            lr=0.1, seed=seed, ensemble_dim=edim, rng=rng)

    w, b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    opt = build(w, b, seeds, 1)
    for _ in range(20):
        opt.zero_grad()
        (0.5 * ((w * w).sum(0) * scale).sum() + 0.5 * ((b * b).sum(0) * scale).sum()).backward()
        opt.step()
    for k in range(K):
        wk, bk = w0[:, k].clone().requires_grad_(True), b0[:, k].clone().requires_grad_(True)
        one = build(wk, bk, seeds[k], None)
        for _ in range(20):
            one.zero_grad()
            (0.5 * (wk * wk).sum() * scale[k] + 0.5 * (bk * bk).sum() * scale[k]).backward()
            one.step()
        torch.testing.assert_close(w.detach()[:, k], wk.detach(), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(b.detach()[:, k], bk.detach(), rtol=1e-10, atol=1e-12)
    assert not torch.allclose(w[:, 0], w[:, 1])
