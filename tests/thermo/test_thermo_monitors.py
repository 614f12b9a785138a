"""Temperature hooks inside thermotrain.training.train, against BAOAB's exact answers on a
quadratic (SPEC §1: positions exactly τA⁻¹ at every h, full-step momenta τ(I − h²A/4))."""

from __future__ import annotations

import math

import pytest
import torch
from _thermo_helpers import ManualState as _State

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
    with pytest.raises(ValueError, match="laplacian must be 'hvp', 'fd', 'forward' or None"):
        thermo.ConfigurationalTemperature(laplacian="exact")
    # the default estimator: one extra gradient on the step's batch, central elsewhere
    conf = thermo.ConfigurationalTemperature
    assert conf().laplacian == "forward"
    assert conf(data="full").laplacian == conf(subset=5).laplacian == "fd"
    assert conf(lambda m: m(torch.zeros(1, 1)).sum(1)).laplacian == "fd"
    assert conf(laplacian="hvp").laplacian == "hvp"
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
    hvp = thermo.ConfigurationalTemperature(laplacian="hvp", data="full", seed=5)
    fd = thermo.ConfigurationalTemperature(laplacian="fd", data="full", seed=5)
    for hook in (hvp, fd):
        hook.on_start(state)
    assert fd._grad_fn is not None  # the fused path is the one under test
    for (g2a, la), (g2b, lb) in zip(hvp.measure(state), fd.measure(state), strict=True):
        torch.testing.assert_close(g2b, g2a, rtol=1e-3, atol=1e-12)
        torch.testing.assert_close(lb, la, rtol=1e-3, atol=1e-8)
    for p, (t, g) in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.detach(), t) and torch.equal(p.grad, g)


def _copy_of(model, opt, make):
    import copy

    model2 = copy.deepcopy(model)
    for a, b in zip(model2.parameters(), model.parameters(), strict=True):
        a.grad = b.grad.clone()
    opt2 = make(model2)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # own tensors, not opt's
    return model2, opt2


@pytest.mark.parametrize("which", ["baoab", "baoab-per-member-lr", "adlala", "obabo"])
def test_kinetic_hook_equals_finalize_on_a_copy_and_leaves_the_state(one_thread, which):
    """The hook's value from the stored momenta and the current gradient equals
    kinetic_temperature() after finalize() on a copy (same arithmetic up to float32 rounding:
    rtol 1e-5), differs from the stored momenta's (the half kick is resolved), and leaves
    the optimizer untouched (bit for bit) — except OBABO, whose noisy closing sub-steps it
    must apply with finalize()."""
    from thermotrain.models import MLP, fused

    torch.manual_seed(0)
    x, y = torch.randn(100, 2), torch.randint(0, 2, (100,))
    makes = {
        "baoab": lambda m: tt.BAOAB(m.parameters(), lr=0.1, ensemble_dim=0, seed=0),
        "baoab-per-member-lr": lambda m: tt.BAOAB(m.parameters(),
                                                  lr=torch.tensor([0.1, 0.05, 0.2]),
                                                  ensemble_dim=0, seed=0),
        "adlala": lambda m: tt.samplers.AdLaLa(m, ensemble_dim=0, seed=0),
        "obabo": lambda m: tt.Langevin(m.parameters(), lr=0.1, splitting="OBABO",
                                       ensemble_dim=0, seed=0),
    }
    make = makes[which]
    model = MLP([2, 8, 1], ensemble=3, seed=0)
    opt = make(model)
    grad = fused.gradient_fn(model, x, y)
    for _ in range(6):
        grad(torch.randint(0, 100, (3, 10)))
        opt.step()
    grad(torch.randint(0, 100, (3, 10)))
    model2, opt2 = _copy_of(model, opt, make)
    stored = opt.kinetic_temperature()
    momenta = [[None if m is None else m.clone() for m in row] for row in opt.momenta()]
    state = _State(model, opt, x, y, 3)
    state.step = 10
    hook = thermo.KineticTemperature(every=10)
    hook.on_start(state)
    hook.after_gradient(state, torch.zeros(3))
    opt2.finalize()
    exact = opt2.kinetic_temperature()
    assert len(state.logged) == len(exact)
    for g, (t_exact, t_stored) in enumerate(zip(exact, stored, strict=True)):
        t_hook = state.logged[f"kinetic_temperature/group{g}"]
        torch.testing.assert_close(t_hook, t_exact, rtol=1e-5, atol=0)
        assert not torch.allclose(t_stored, t_exact, rtol=1e-3)  # the kick matters here
    if which != "obabo":
        for row, row0 in zip(opt.momenta(), momenta, strict=True):
            assert all(torch.equal(m, m0) for m, m0 in zip(row, row0, strict=True))
        assert all(opt.state[p]["pending"] for p in model.parameters())


def test_minibatch_configurational_temperature_uses_the_step_batch(one_thread):
    """data="batch", driven as the loop drives it (before_gradient, the loop's gradient,
    after_gradient): ‖∇L_B‖² is the loop's gradient of the step's batch (equal to autograd on
    x[idx] to float64 rounding); on a smooth (tanh) float64 net with the same probe the
    central difference equals the HVP to O(ε²) (rtol 1e-3, as above) and the forward one is
    the difference quotient of its probe (recomputed with autograd: rtol 1e-7); θ is
    unchanged and .grad is the loop's gradient. measure() alone (no before_gradient) gives
    the same values."""
    from thermotrain.models import MLP, ensemble_loss, fused
    from thermotrain.training import Batch

    torch.manual_seed(0)
    x, y = torch.randn(200, 2, dtype=torch.float64), torch.randint(0, 2, (200,))
    model = MLP([2, 8, 1], ensemble=3, activation="tanh", seed=0).double()
    opt = tt.BAOAB(model.parameters(), lr=0.1, ensemble_dim=0, seed=0)
    idx = torch.randint(0, 200, (3, 25))
    theta = [p.detach().clone() for p in model.parameters()]
    res, alone = {}, {}
    for lap in ("hvp", "fd", "forward"):
        state = _State(model, opt, x, y, 3)
        hook = thermo.ConfigurationalTemperature(laplacian=lap, seed=5)
        hook.on_start(state)
        assert hook.before_gradient(state, Batch(idx)).index is idx
        fused.gradient_fn(model, x, y)(idx)  # the loop's gradient of this batch
        loop_grad = [p.grad.clone() for p in model.parameters()]
        hook.after_gradient(state, torch.zeros(3))
        res[lap] = [state.logged[f"configurational_temperature/{q}/group0"]
                    for q in ("grad_norm2", "laplacian")]
        v = [t.sign() for t in hook._lay.views]  # the record's probe (the same for all)
        for p, t, g in zip(model.parameters(), theta, loop_grad, strict=True):
            assert torch.equal(p.detach(), t) and torch.equal(p.grad, g)
        again = thermo.ConfigurationalTemperature(laplacian=lap, seed=5)
        again.on_start(state)
        again._batch = Batch(idx)
        alone[lap] = again.measure(state)
        for p, t, g in zip(model.parameters(), theta, loop_grad, strict=True):
            assert torch.equal(p.detach(), t) and torch.equal(p.grad, g)
    params = list(model.parameters())
    ref = torch.autograd.grad(ensemble_loss(model(x[idx]), y[idx]).sum(), params)
    g2_ref = sum(r.square().reshape(3, -1).sum(1) for r in ref)
    assert len(alone["hvp"]) == 1
    for lap in res:
        torch.testing.assert_close(res[lap][0], g2_ref, rtol=1e-10, atol=0)
        torch.testing.assert_close(alone[lap][0][0], res[lap][0], rtol=0, atol=0)
        torch.testing.assert_close(alone[lap][0][1], res[lap][1], rtol=1e-12, atol=0)
    torch.testing.assert_close(res["fd"][1], res["hvp"][1], rtol=1e-3, atol=1e-8)
    # forward: exactly the quotient vᵀ[∇L_B(θ + εv) − ∇L_B(θ)]/ε of its probe (autograd,
    # float64: agreement to rounding); its O(ε) term has zero mean over v (odd moments),
    # tested against the exact trace in test_thermo_laplacian
    eps = 1e-3  # the default ε
    names = [n for n, _ in model.named_parameters()]
    shifted = {n: (p.detach() + eps * vi).requires_grad_()
               for n, p, vi in zip(names, params, v, strict=True)}
    out = torch.func.functional_call(model, shifted, (x[idx],))
    plus = torch.autograd.grad(ensemble_loss(out, y[idx]).sum(), list(shifted.values()))
    quotient = sum(((a - b) * vi).reshape(3, -1).sum(1)
                   for a, b, vi in zip(plus, ref, v, strict=True)) / eps
    torch.testing.assert_close(res["forward"][1], quotient, rtol=1e-7, atol=1e-10)
    with pytest.raises(ValueError, match="laplacian='forward' needs data='batch'"):
        thermo.ConfigurationalTemperature(laplacian="forward", data="full")
    with pytest.raises(ValueError, match="data must be 'batch' or 'full'"):
        thermo.ConfigurationalTemperature(data="all")
