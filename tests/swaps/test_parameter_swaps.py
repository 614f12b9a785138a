"""Parameter swaps: exact symmetry, exact inverses, greedy descent, Metropolis detailed
balance on an enumerable system, optimizer state moving with the weights."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy import stats

import thermotrain as tt
from thermotrain.models import MLP, ensemble_loss
from thermotrain.swaps import KINDS, ParameterSwap


def _layer(kind):
    return (0, 1) if kind == "inter-layer" else 0


def _net(k=3, dtype=torch.float64):
    return MLP([4, 6, 5, 3], ensemble=k, seed=1, dtype=dtype)


def _data(n=40, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=dtype), torch.randint(0, 3, (n,), generator=g)


def _baoab_steps(net, x, y, steps, opt):
    for _ in range(steps):
        opt.zero_grad()
        ensemble_loss(net(x), y).sum().backward()
        opt.step()


def _snapshot(net, opt):
    params = [p.detach().clone() for p in net.parameters()]
    state = [{k: v.clone() for k, v in opt.state[p].items() if isinstance(v, torch.Tensor)}
             for p in net.parameters()]
    return params, state


def _assert_same(a, b):
    for pa, pb in zip(a[0], b[0], strict=True):
        assert torch.equal(pa, pb)
    for sa, sb in zip(a[1], b[1], strict=True):
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("kind", KINDS)
def test_swap_then_inverse_restores_everything_bit_for_bit(kind):
    net, (x, y) = _net(dtype=torch.float32), _data(dtype=torch.float32)
    opt = tt.BAOAB(net.parameters(), lr=0.05, friction=1.0, temperature=1e-3,
                   ensemble_dim=0, seed=0)
    _baoab_steps(net, x, y, 3, opt)
    before = _snapshot(net, opt)
    move = ParameterSwap(net, kind=kind, layer=_layer(kind), pairs=2, seed=5).propose()
    move.apply(opt)
    moved = _snapshot(net, opt)
    assert any(not torch.equal(a, b) for a, b in zip(before[0], moved[0], strict=True))
    move.inverse().apply(opt)
    _assert_same(before, _snapshot(net, opt))


def test_unit_swap_is_a_symmetry_and_momenta_move_with_the_weights():
    """At τ = 0 BAOAB is deterministic: a unit swap in the middle of a run must leave every
    later output unchanged — which holds only if the momenta were permuted too (checked by
    the control run that swaps the weights alone)."""
    x, y = _data()
    runs = {}
    for variant in ("none", "units", "units-weights-only"):
        net = _net()
        opt = tt.BAOAB(net.parameters(), lr=0.05, friction=0.5, temperature=0.0,
                       ensemble_dim=0, seed=0)
        _baoab_steps(net, x, y, 5, opt)
        if variant != "none":
            swap = ParameterSwap(net, kind="units", layer=0, pairs=2, seed=3)
            out0 = net(x)
            swap.propose().apply(opt if variant == "units" else None)
            # float64: only the summation order of the next layer changes
            torch.testing.assert_close(net(x), out0, rtol=0, atol=1e-13)
        _baoab_steps(net, x, y, 20, opt)
        runs[variant] = net(x).detach()
    torch.testing.assert_close(runs["units"], runs["none"], rtol=0, atol=1e-10)
    assert (runs["units-weights-only"] - runs["none"]).abs().max() > 1e-6


def test_unit_swap_moves_adam_moments_for_a_plain_model():
    x, y = _data()
    runs = {}
    for swapped in (False, True):
        net = MLP([4, 6, 3], seed=2, dtype=torch.float64)          # plain nn.Linear layers
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        for step in range(25):
            if swapped and step == 10:
                ParameterSwap(net, kind="units", layer=0, seed=1).propose().apply(opt)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        runs[swapped] = net(x).detach()
    torch.testing.assert_close(runs[True], runs[False], rtol=0, atol=1e-10)


def test_rows_swap_is_a_real_move_and_metropolis_accepts_units_at_rounding_level():
    net, (x, y) = _net(k=8), _data()
    energy = lambda: ensemble_loss(net(x), y)  # noqa: E731
    rows = ParameterSwap(net, kind="rows", layer=0, acceptance="always", energy=energy)
    e0 = energy()
    rows.apply()
    assert (energy() - e0).abs().max() > 1e-4
    units = ParameterSwap(net, kind="units", layer=1, acceptance="metropolis",
                          temperature=1e-6, energy=energy, seed=1)
    for _ in range(20):
        assert bool(units.apply().all())
        assert float(units.last_delta.abs().max()) < 1e-12


@pytest.mark.parametrize("kind", ["rows", "columns", "in-row", "mixed", "bias-weight",
                                  "inter-layer"])
def test_greedy_never_raises_the_energy(kind):
    net, (x, y) = _net(k=6, dtype=torch.float32), _data(dtype=torch.float32)
    energy = lambda: ensemble_loss(net(x), y)  # noqa: E731
    swap = ParameterSwap(net, kind=kind, layer=_layer(kind), acceptance="greedy",
                         energy=energy, seed=2)
    previous = energy()
    accepted = 0
    for _ in range(60):
        accepted += int(swap.apply().sum())
        now = energy()
        assert bool((now <= previous).all()), (now - previous).max()
        previous = now
    assert accepted > 0  # the test moved something


def test_metropolis_detailed_balance_on_permutations_of_four_weights():
    """State space: the 24 orderings of four distinct weights of a 4→1 layer; in-row moves
    propose a uniformly random transposition (symmetric), so Metropolis must give the exact
    Boltzmann law π(s) ∝ exp(−E(s)/τ) with E = c·w. K = 6000 independent members after 150
    moves (mixing time ≲ 10 moves here) are a multinomial sample of π: a χ² test at
    significance 1e-6 (fails by chance once in a million runs)."""
    k, temp = 6000, 0.5
    net = MLP([4, 1], ensemble=k, seed=0, dtype=torch.float64)
    values = torch.tensor([0.0, 0.3, 0.7, 1.5], dtype=torch.float64)
    coef = torch.tensor([1.0, -0.5, 0.8, 0.2], dtype=torch.float64)
    with torch.no_grad():
        net.layers[0].weight.copy_(values.expand(k, 1, 4))
        net.layers[0].bias.zero_()
    energy = lambda: net.layers[0].weight[:, 0, :] @ coef  # noqa: E731
    swap = ParameterSwap(net, kind="in-row", layer=0, acceptance="metropolis",
                         temperature=temp, energy=energy, seed=11)
    for _ in range(150):
        swap.apply()
    states = list(itertools.permutations(range(4)))
    e = torch.tensor([float(values[list(s)] @ coef) for s in states], dtype=torch.float64)
    exact = torch.softmax(-e / temp, 0)
    w = net.layers[0].weight[:, 0, :].detach()
    code = {tuple(values[list(s)].tolist()): i for i, s in enumerate(states)}
    counts = torch.bincount(torch.tensor([code[tuple(r)] for r in w.tolist()]),
                            minlength=24).double()
    chi2 = float(((counts - k * exact) ** 2 / (k * exact)).sum())
    assert chi2 < stats.chi2.isf(1e-6, df=23), chi2
    # and a wrong temperature is detected by the same test (the test can fail)
    wrong = torch.softmax(-e / (2 * temp), 0)
    assert float(((counts - k * wrong) ** 2 / (k * wrong)).sum()) > stats.chi2.isf(1e-6, 23)
    assert math.isclose(float(swap.acceptance_rate.mean()),
                        float(swap.accepted.sum()) / (k * swap.proposed))


def test_metropolis_takes_the_samplers_temperature():
    net, (x, y) = _net(k=4), _data()
    opt = tt.BAOAB(net.parameters(), lr=0.01, temperature=1e-3, ensemble_dim=0, seed=0)
    swap = ParameterSwap(net, kind="rows", acceptance="metropolis",
                         energy=lambda: ensemble_loss(net(x), y))
    assert float(swap._temperature(opt)[0]) == 1e-3
    with pytest.raises(ValueError, match="temperature"):
        swap.apply()


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "diagonal"}, "kind must be one of"),
    ({"acceptance": "maybe"}, "acceptance must be one of"),
    ({"layer": 7}, "layer index"),
    ({"kind": "units", "layer": -1}, "last layer"),
    ({"kind": "inter-layer", "layer": (1, 1)}, "two different layers"),
    ({"every": 0}, "every must be"),
    ({"temperature": -1.0}, "temperature must be"),
    ({"kind": "rows", "pairs": 4}, "too small"),
])
def test_bad_arguments_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ParameterSwap(_net(), **kwargs)


def test_greedy_without_energy_is_an_error():
    with pytest.raises(ValueError, match="needs an energy"):
        ParameterSwap(_net(), acceptance="greedy").apply()


def test_metropolis_uses_per_member_temperatures():
    """τ = 0 for the first half of the members (greedy), τ huge for the rest (always)."""
    net, (x, y) = _net(k=8), _data()
    energy = lambda: ensemble_loss(net(x), y)  # noqa: E731
    temps = torch.tensor([0.0] * 4 + [1e9] * 4)
    swap = ParameterSwap(net, kind="rows", acceptance="metropolis", temperature=temps,
                         energy=energy, seed=4)
    for _ in range(40):
        before = energy()
        accepted = swap.apply()
        delta = energy() - before
        assert bool((delta[:4] <= 0).all())
        assert bool(accepted[4:].all())


@pytest.mark.parametrize("layer", [0, 1])
def test_unit_swap_is_exact_for_cnn_channels(layer):
    """conv → conv (unit = a channel and its kh·kw inputs) and conv → flattening head (its
    H'·W' block of features): outputs unchanged up to float64 summation order."""
    from thermotrain.models import CNN

    net = CNN((2, 8, 8), 3, channels=(3, 4), kernel_size=3, ensemble=2, seed=0,
              dtype=torch.float64)
    x = torch.rand(5, 2, 8, 8, dtype=torch.float64)
    before = net(x)
    rows = ParameterSwap(net, kind="rows", layer=layer, seed=1)
    ParameterSwap(net, kind="units", layer=layer, pairs=1, seed=1).propose().apply()
    torch.testing.assert_close(net(x), before, rtol=0, atol=1e-12)
    rows.propose().apply()                               # a real move changes the outputs
    assert (net(x) - before).abs().max() > 1e-6
