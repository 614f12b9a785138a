"""Temperature hooks inside thermotrain.training.train, against BAOAB's exact answers on a
quadratic (SPEC §1: positions exactly τA⁻¹ at every h, full-step momenta τ(I − h²A/4))."""

from __future__ import annotations

import math

import pytest
import torch

import thermotrain as tt
from thermotrain import thermo
from thermotrain.training import train

K, H, GAMMA = 2000, 0.5, 1.0
A1, A2 = torch.tensor([1.0]), torch.tensor([4.0, 9.0])  # curvatures of the two groups
TAU1, TAU2 = 0.5, 0.1


class Quadratic(torch.nn.Module):
    """K chains of L = ½ Σ a θ² in two parameters (two groups, two temperatures)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = torch.nn.Parameter(torch.randn(K, 1, generator=g) * (TAU1 / A1).sqrt())
        self.b = torch.nn.Parameter(torch.randn(K, 2, generator=g) * (TAU2 / A2).sqrt())

    def loss(self, model=None):
        return 0.5 * ((self.a.square() * A1).sum(1) + (self.b.square() * A2).sum(1))


class Batches:
    ensemble_size = K

    def next(self):
        return torch.zeros(K, 1, dtype=torch.long)

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def _run(hooks, steps=400):
    model = Quadratic()
    opt = tt.PartitionedLangevin([
        {"params": [model.a], "temperature": TAU1}, {"params": [model.b], "temperature": TAU2}],
        lr=H, friction=GAMMA, ensemble_dim=0, seed=0)

    def gradient(idx):
        model.zero_grad()
        losses = model.loss()
        losses.sum().backward()
        return losses.detach()

    x = torch.zeros(4, 1)
    return train(model, opt, Batches(), steps=steps, x_train=x, y_train=x, gradient=gradient,
                 hooks=hooks, handle_signals=False)


def _mean(rows, metric, first):
    vals = [r[6] for r in rows if r[5] == metric and r[3] >= first]
    return sum(vals) / len(vals), len(vals)


@pytest.mark.parametrize("laplacian", ["hvp", "fd"])
def test_kinetic_and_configurational_temperatures_are_exact_for_baoab(one_thread, laplacian):
    """Per record T_kin averages N·K = 2000 (group 0) or 4000 squared momenta: relative sd
    √(2/NK) ≤ 3.2 %; 30 records (every 10 steps, ≥ 3 O-step relaxation times 1/(γh) apart)
    bring it to ≤ 0.6 %, and the same for T_conf's numerator (the Hutchinson Laplacian is
    exact here: vᵀAv = tr A for Rademacher v and diagonal A). Tolerance 3 % ≈ 5 sd."""
    kin = thermo.KineticTemperature(every=10)
    conf = thermo.ConfigurationalTemperature(lambda m: m.loss(), every=10, start=100,
                                             laplacian=laplacian)
    state = _run([kin, conf])
    for g, (a, tau) in enumerate(((A1, TAU1), (A2, TAU2))):
        t_kin, n = _mean(state.rows, f"kinetic_temperature/group{g}", 100)
        assert n == 30 * K
        expected = tau * float((1 - H**2 * a / 4).mean())
        assert t_kin == pytest.approx(expected, rel=0.03)
        assert not math.isclose(expected, tau, rel_tol=0.03)  # the h² term is resolved
        t_conf = conf.temperatures()[g]
        assert t_conf.shape == (K,)
        assert float(t_conf.mean()) == pytest.approx(tau, rel=0.03)
        lap, _ = _mean(state.rows, f"configurational_temperature/laplacian/group{g}", 0)
        assert lap == pytest.approx(float(a.sum()), rel=1e-6 if laplacian == "hvp" else 1e-3)


def test_monitors_check_their_arguments():
    with pytest.raises(ValueError, match="every must be an int >= 1"):
        thermo.KineticTemperature(every=0)
    with pytest.raises(ValueError, match="probes must be an int >= 1"):
        thermo.ConfigurationalTemperature(probes=0)
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    class State:
        optimizer = opt

    with pytest.raises(TypeError, match="has no momenta"):
        thermo.KineticTemperature().on_start(State())


def test_finite_difference_laplacian_matches_hvp_and_restores_the_state(one_thread):
    """On a smooth (tanh) ensemble MLP the fused-kernel central difference (ε = 1e-3, float64)
    agrees with the double-backward HVP for the same probes to O(ε²) = 1e-6 times third-
    derivative ratios of the net (≲ 1e2 here: measured 6e-5 for ‖∇L‖²), so rtol 1e-3; θ and
    .grad unchanged."""
    from thermotrain.models import MLP, fused

    torch.manual_seed(0)
    x, y = torch.randn(200, 2, dtype=torch.float64), torch.randint(0, 2, (200,))
    model = MLP([2, 8, 1], ensemble=3, activation="tanh", seed=0).double()
    opt = tt.BAOAB(model.parameters(), lr=0.1, ensemble_dim=0, seed=0)

    class State:
        pass

    state = State()
    state.model, state.optimizer, state.members = model, opt, 3
    state.x_train, state.y_train = x, y
    fused.gradient_fn(model, x, y)(torch.randint(0, 200, (3, 10)))  # a loop gradient in .grad
    before = [(p.detach().clone(), p.grad.clone()) for p in model.parameters()]
    hvp = thermo.ConfigurationalTemperature(laplacian="hvp", seed=5)
    fd = thermo.ConfigurationalTemperature(laplacian="fd", seed=5)
    for hook in (hvp, fd):
        hook.on_start(state)
    assert fd._fused is not None  # the fused path is the one under test
    for (g2a, la), (g2b, lb) in zip(hvp.measure(state), fd.measure(state), strict=True):
        torch.testing.assert_close(g2b, g2a, rtol=1e-3, atol=1e-12)
        torch.testing.assert_close(lb, la, rtol=1e-3, atol=1e-8)
    for p, (t, g) in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.detach(), t) and torch.equal(p.grad, g)
