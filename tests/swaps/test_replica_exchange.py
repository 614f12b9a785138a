"""Replica exchange: exact sampling of a 1-D double well at every rung, state exchange of
the optimizer, ladders, round trips, the Deng correction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate

import thermotrain as tt
from thermotrain.models import MLP, ensemble_loss
from thermotrain.swaps import ReplicaExchange

BARRIER = 2.0
LADDER = [0.1, 0.25, 0.6, 1.5]


def _u(x):
    return BARRIER * (x**2 - 1) ** 2


def _exact(temp, f):
    z = integrate.quad(lambda x: np.exp(-_u(x) / temp), -4, 4, points=[-1, 1])[0]
    return integrate.quad(lambda x: f(x) * np.exp(-_u(x) / temp), -4, 4, points=[-1, 1])[0] / z


def _run(exchange: bool, ladders=300, sweeps=3000, burn=500, seed=0):
    """Random-walk Metropolis at each rung (exact for its own Boltzmann law), plus replica
    exchange every sweep; all members start in the right well."""
    temps = torch.tensor([LADDER] * ladders, dtype=torch.float64)
    k = temps.numel()
    x = torch.ones(k, dtype=torch.float64)
    t_member = temps.reshape(-1)
    gen = torch.Generator().manual_seed(seed)
    rex = ReplicaExchange([x], temps, energy=lambda: _u(x), seed=seed)
    right = torch.zeros(k, dtype=torch.float64)
    x2 = torch.zeros(k, dtype=torch.float64)
    for sweep in range(sweeps):
        prop = x + 0.6 * t_member.sqrt() * torch.randn(k, generator=gen, dtype=torch.float64)
        log_a = (_u(x) - _u(prop)) / t_member
        take = torch.rand(k, generator=gen, dtype=torch.float64).log() < log_a
        x.copy_(torch.where(take, prop, x))
        if exchange:
            rex.step()
        if sweep >= burn:
            right += (x > 0).double()
            x2 += x**2
    n = sweeps - burn
    return (right / n).reshape(ladders, -1), (x2 / n).reshape(ladders, -1), rex


def test_replica_exchange_samples_the_double_well_exactly_at_every_rung():
    """Ladder means are independent across the 300 ladders; each rung's mean over ladders is
    compared with the quadrature value within 5 standard errors."""
    right, x2, rex = _run(exchange=True)
    for r, temp in enumerate(LADDER):
        for values, exact in ((right[:, r], 0.5), (x2[:, r], _exact(temp, lambda v: v * v))):
            se = float(values.std()) / values.shape[0] ** 0.5
            assert abs(float(values.mean()) - exact) < 5 * se + 1e-12, (temp, exact)
    # the coldest rung (barrier/τ = 20: no crossing without exchange) visits both wells
    assert 0.3 < float(right[:, 0].mean()) < 0.7
    assert bool((rex.round_trips > 0).all())
    acc = rex.acceptance
    assert bool(((acc > 0.05) & (acc < 1)).all()), acc


def test_without_exchange_the_coldest_rung_stays_in_its_well():
    right, _, _ = _run(exchange=False, ladders=50, sweeps=1500)
    assert float(right[:, 0].mean()) > 0.99          # the check above can fail


def test_exchange_moves_parameters_momenta_and_thermostats_between_members():
    """Parameters and ξ move bit for bit; momenta move and are rescaled."""
    net = MLP([2, 5, 1], ensemble=4, seed=0)
    x, y = torch.randn(20, 2), torch.randint(0, 2, (20,))
    opt = tt.AdLaLa(net, lr=0.1, ensemble_dim=0, seed=0)
    for _ in range(3):
        opt.zero_grad()
        ensemble_loss(net(x), y).sum().backward()
        opt.step()
    before = [p.detach().clone() for p in net.parameters()]
    mom = [m.clone() for group in opt.momenta() for m in group]
    xi = [t.clone() for group in opt.thermostats() for t in group if t is not None]
    # energies that make every attempted exchange certain: U decreasing up the ladder
    rex = ReplicaExchange(opt, [1.0, 2.0, 3.0, 4.0],
                          energy=lambda: torch.tensor([30.0, 20.0, 10.0, 0.0]), seed=0)
    accepted = rex.step()                              # even round: pairs (0,1), (2,3)
    assert accepted.tolist() == [[True, False, True]]
    order = torch.tensor([1, 0, 3, 2])
    for p, b in zip(net.parameters(), before, strict=True):
        assert torch.equal(p, b[order])
    # momenta arrive rescaled to the receiver's temperature: p·√(τ_k/τ_from) (AdLaLa's
    # Langevin layer; momenta of every group are the samplers' "momentum" state)
    temps = torch.tensor([1.0, 2.0, 3.0, 4.0])
    scale = (temps / temps[order]).sqrt()
    for m, b in zip([m for group in opt.momenta() for m in group], mom, strict=True):
        expect = b[order] * scale.reshape(-1, *[1] * (b.dim() - 1)).to(b.dtype)
        torch.testing.assert_close(m, expect, rtol=1e-6, atol=0)
    new_xi = [t for group in opt.thermostats() for t in group if t is not None]
    assert new_xi and all(torch.equal(t, b[order]) for t, b in zip(new_xi, xi, strict=True))
    assert rex.walker.tolist() == [1, 0, 3, 2]
    assert rex.step().tolist() == [[False, True, False]]   # odd round: pair (1,2)


def test_round_trips_and_several_ladders_with_a_custom_layout():
    theta = torch.zeros(6, 1)
    members = torch.tensor([[0, 2, 4], [1, 3, 5]])      # temperature-major layout
    rex = ReplicaExchange([theta], torch.tensor([[1.0, 2.0, 4.0]] * 2), members=members,
                          energy=lambda: torch.zeros(6), seed=0)
    assert rex.member_temperatures.tolist() == [1.0, 1.0, 2.0, 2.0, 4.0, 4.0]
    for _ in range(8):       # zero energy difference: every exchange is accepted
        rex.step()
    # a walker sweeps cold → hot → cold in 4 rounds: two round trips each in 8 rounds
    assert rex.round_trips.tolist() == [2, 2]
    assert float(rex.acceptance.min()) == 1.0


def test_deng_correction_lowers_the_log_acceptance_by_the_variance_term():
    theta = torch.zeros(2, 1)
    u = torch.tensor([1.0, 0.0])
    plain = ReplicaExchange([theta], [1.0, 2.0], energy=lambda: u, seed=3)
    deng = ReplicaExchange([theta], [1.0, 2.0], energy=lambda: (u, torch.full((2,), 8.0)),
                           correction="deng", seed=3)
    # log α = 0.5·(1 − 0) = 0.5 (always accepted) vs 0.5 − 0.25·8 = −1.5 (α = e^−1.5)
    hits = 0
    for _ in range(4000):       # with two rungs only the even rounds have a pair
        hits += int(deng.step()[0, 0])
    acc = hits / 2000
    assert bool(plain.step()[0, 0])
    # binomial(2000, e^-1.5 = 0.223): s.e. 0.0093, 5 s.e. tolerance
    assert abs(acc - np.exp(-1.5)) < 5 * (0.223 * 0.777 / 2000) ** 0.5


@pytest.mark.parametrize("kwargs, match", [
    ({"temperatures": [1.0]}, "R >= 2"),
    ({"temperatures": [2.0, 1.0]}, "strictly increasing"),
    ({"temperatures": [0.0, 1.0]}, "> 0"),
    ({"correction": "none"}, "correction must be"),
    ({"every": 0}, "every must be"),
])
def test_bad_arguments(kwargs, match):
    args = {"temperatures": [1.0, 2.0], **kwargs}
    with pytest.raises(ValueError, match=match):
        ReplicaExchange([torch.zeros(2)], **args)


def test_parameters_must_have_the_ladder_size():
    with pytest.raises(ValueError, match="K = 3"):
        ReplicaExchange([torch.zeros(2, 4)], [1.0, 2.0, 3.0])


def test_baoab_with_per_member_temperatures_and_exchange_crosses_the_barrier():
    """The library's BAOAB with a (K,) temperature as the rung sampler, exchanges every 10
    steps: the coldest rung visits both wells; ⟨θ²⟩ per rung within 5 standard errors plus
    2e-3 of the quadrature value (BAOAB alone at h = 0.05 is within 1.1e-3 at τ = 1.5;
    exchanging every step leaves −0.006 ± 0.001 at τ = 0.6, see docs/swaps.md)."""
    ladders, temps = 100, torch.tensor([LADDER] * 100, dtype=torch.float64)
    theta = torch.ones(temps.numel(), 1, dtype=torch.float64, requires_grad=True)
    opt = tt.BAOAB([theta], lr=0.05, friction=1.0, temperature=temps.reshape(-1),
                   ensemble_dim=0, seed=0)
    rex = ReplicaExchange(opt, temps, energy=lambda: _u(theta.detach()[:, 0]), seed=0)
    samples = []
    for step in range(3000):
        opt.zero_grad()
        _u(theta[:, 0]).sum().backward()
        opt.step()
        if step % 10 == 0:
            rex.step()
        if step >= 500:
            samples.append(theta.detach()[:, 0].reshape(ladders, -1).clone())
    s = torch.stack(samples)
    right = (s > 0).double().mean(0)                   # (L, R) per-ladder fractions
    assert 0.3 < float(right[:, 0].mean()) < 0.7
    x2 = s.square().mean(0)
    for r, temp in enumerate(LADDER):
        se = float(x2[:, r].std()) / ladders**0.5
        assert abs(float(x2[:, r].mean()) - _exact(temp, lambda v: v * v)) < 5 * se + 2e-3
