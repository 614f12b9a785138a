"""Planes (SPEC §8): filter normalization, the plane through three solutions, trajectory PCA,
and the grid values against states built by hand."""

from __future__ import annotations

import copy

import matplotlib
import pytest
import torch
from torch.testing import assert_close

from thermotrain import landscape
from thermotrain.models import MLP, classification_loss

matplotlib.use("Agg")
F64 = torch.float64
TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def _net(k=2, batchnorm=False):
    return MLP([3, 5, 2], ensemble=k, batchnorm=batchnorm, seed=1, dtype=F64)


def test_filter_normalized_directions_match_the_centre_filters_and_zero_biases():
    net = _net(batchnorm=True)
    center = net.state_dict()
    d1, d2 = landscape.random_directions(net, center, seed=3)
    assert set(d1) == {n for n, _ in net.named_parameters()}
    for name, d in d1.items():
        if name.endswith("weight") and name.startswith("layers"):
            # row i of member k has the norm of the centre's row i of member k
            assert_close(d.norm(dim=-1), center[name].norm(dim=-1), **TIGHT)
            assert not torch.allclose(d, center[name])
        else:  # biases and batch-norm entries
            assert torch.equal(d, torch.zeros_like(d))
    again = landscape.random_directions(net, center, seed=3)
    assert all(torch.equal(d1[n], again[0][n]) for n in d1)
    assert not torch.equal(d1["layers.0.weight"], d2["layers.0.weight"])
    layer = landscape.random_directions(net, center, seed=3, normalization="layer")[0]
    w = "layers.0.weight"
    assert_close(layer[w].flatten(1).norm(dim=1), center[w].flatten(1).norm(dim=1), **TIGHT)


def test_plane_values_equal_the_hand_built_states():
    net = _net()
    center = copy.deepcopy(net.state_dict())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 3, generator=g, dtype=F64)
    y = torch.randint(0, 2, (30,), generator=g)
    dirs = landscape.random_directions(net, center, seed=1)
    res = landscape.plane(net, center, dirs, {"train": (x, y)}, grid=5, normalization="none")
    assert res.loss["train"].shape == (5, 5, 2)
    i, j = 1, 3
    a, b = res.xs[i].item(), res.ys[j].item()
    probe = copy.deepcopy(net)
    probe.load_state_dict({n: center[n] + a * dirs[0][n] + b * dirs[1][n] if n in dirs[0]
                           else center[n] for n in center})
    with torch.no_grad():
        logits = probe(x)
    for m in range(2):
        assert_close(res.loss["train"][i, j, m], classification_loss(logits[m], y).double(),
                     **TIGHT)
    # the centre of the grid is the centre state; random directions from the seed by default
    assert res.xs[2].item() == 0.0
    frame = res.to_frame(study="s")
    assert len(frame) == 5 * 5 * 2 * 2 and frame.columns[0] == "study"
    default = landscape.plane(net, center, None, (x, y), grid=3, seed=1)
    normed = landscape.plane(net, center, dirs, (x, y), grid=3, normalization="none")
    assert_close(default.loss["train"], normed.loss["train"], **TIGHT)


def test_plane_through_three_solutions_puts_them_at_the_unit_points():
    net = _net()
    states = []
    for s in range(3):
        other = _net()
        with torch.no_grad():
            for p in other.parameters():
                p.add_(0.3 * (s + 1))
        states.append(copy.deepcopy(other.state_dict()))
    x, y = torch.randn(20, 3, dtype=F64), torch.randint(0, 2, (20,))
    center, dirs = landscape.plane_through(net, *states)
    res = landscape.plane(net, center, dirs, (x, y), grid=([0.0, 1.0], [0.0, 1.0]),
                          normalization="none")
    for (i, j), state in zip([(0, 0), (1, 0), (0, 1)], states, strict=True):
        probe = copy.deepcopy(net)
        probe.load_state_dict(state)
        with torch.no_grad():
            ref = torch.stack([classification_loss(z, y) for z in probe(x)]).double()
        assert_close(res.loss["train"][i, j], ref, **TIGHT)


def test_trajectory_pca_recovers_a_planar_trajectory():
    net = _net(k=1)
    base = copy.deepcopy(net.state_dict())
    g = torch.Generator().manual_seed(2)
    u = {n: torch.randn(v.shape, generator=g, dtype=F64) for n, v in base.items()}
    w = {n: torch.randn(v.shape, generator=g, dtype=F64) for n, v in base.items()}
    ts = torch.linspace(0, 1, 8, dtype=F64)
    snaps = [{n: base[n] + (1 - t) * u[n] + (1 - t) ** 2 * w[n] for n in base} for t in ts]
    center, dirs, coords, explained = landscape.trajectory_pca(net, snaps)
    assert coords.shape == (1, 8, 2)
    assert explained.sum().item() == pytest.approx(1.0, abs=1e-10)  # the path spans a plane
    # snapshot t is reconstructed exactly from its two coordinates
    for t in (0, 4):
        for n in base:
            rebuilt = center[n] + coords[0, t, 0] * dirs[0][n] + coords[0, t, 1] * dirs[1][n]
            assert_close(rebuilt, snaps[t][n], rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="at least 3 snapshots, got 2"):
        landscape.trajectory_pca(net, snaps[:2])


def test_figures_draw_from_results():
    import matplotlib.pyplot as plt

    net = _net()
    center = net.state_dict()
    x, y = torch.randn(10, 3, dtype=F64), torch.randint(0, 2, (10,))
    res = landscape.plane(net, center, None, (x, y), grid=4)
    line = landscape.interpolate(net, center, center, (x, y), alphas=3)
    landscape.plots.plot_contour(res, member=1, trajectory=[[0, 0], [0.5, 0.5]])
    landscape.plots.plot_surface(res)
    landscape.plots.plot_lines(line, labels=["a", "b"])
    plt.close("all")
    with pytest.raises(ValueError, match="normalization must be one of"):
        landscape.plane(net, center, None, (x, y), normalization="unit")
