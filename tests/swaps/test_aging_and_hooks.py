"""Aging observables against exact trajectories; every move as a hook of
``thermotrain.training.train``, resumed bit for bit; the stored data never changes."""

from __future__ import annotations

import io

import pytest
import torch

import thermotrain as tt
from thermotrain.data import Minibatcher
from thermotrain.models import MLP
from thermotrain.swaps import Aging, DataSwap, ParameterSwap, ReplicaExchange, log_spaced_times
from thermotrain.training import train


def test_aging_matches_an_exact_linear_trajectory():
    """w(t) = a + t·v per member: Δ = t²‖v‖²/N, C = a·(a+tv)/(‖a‖‖a+tv‖), Y = Σv⁴/(Σv²)²."""
    k, n = 3, 7
    g = torch.Generator().manual_seed(0)
    a = torch.randn(k, n, generator=g, dtype=torch.float64)
    v = torch.randn(k, n, generator=g, dtype=torch.float64)
    w = torch.zeros(k, n, dtype=torch.float64)
    aging = Aging([2, 5], [1, 3, 4])
    for step in range(10):
        w.copy_(a + step * v)
        aging.observe(step, [w])
        assert len(aging._snapshots) <= 2
    assert not aging._snapshots                 # every snapshot freed once used
    table = aging.frame()
    assert len(table) == 2 * 3 * k
    for row in table.itertuples():
        m, tw, t = row.member, row.t_w, row.t
        old, new = a[m] + tw * v[m], a[m] + (tw + t) * v[m]
        assert row.msd == pytest.approx(float(t**2 * v[m].square().sum() / n), rel=1e-12)
        assert row.overlap == pytest.approx(float(old @ new / (old.norm() * new.norm())),
                                            rel=1e-12)
        assert row.participation == pytest.approx(
            float(v[m].pow(4).sum() / v[m].square().sum() ** 2), rel=1e-10)


def test_aging_per_layer_and_grids():
    net = MLP([3, 4, 2], ensemble=2, seed=0)
    aging = Aging([0], [1], per_layer=True)
    aging.observe(0, net)
    with torch.no_grad():
        net.layers[1].weight.add_(1.0)
    aging.observe(1, net)
    table = aging.frame()
    assert sorted(set(table.layer)) == [-1, 0, 1]
    assert (table[table.layer == 0].msd == 0).all() and (table[table.layer == 1].msd > 0).all()
    assert log_spaced_times(1, 100, 5) == [1, 3, 10, 32, 100]
    with pytest.raises(ValueError, match="lags must be"):
        Aging([10], [0])


def _problem(k=4):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 2 * 4 * 4, generator=g)          # 2-channel 4x4 "images", flattened
    y = torch.randint(0, 3, (64,), generator=g)
    net = MLP([32, 10, 3], ensemble=k, seed=0)
    opt = tt.BAOAB(net.parameters(), lr=0.05, friction=1.0, temperature=1e-3,
                   ensemble_dim=0, seed=0)
    hooks = [DataSwap("1SA", rate=0.5, image_shape=(2, 4, 4), seed=1),
             ParameterSwap(net, kind="rows", layer=0, every=3, acceptance="metropolis",
                           subset=32, seed=2),
             ReplicaExchange(opt, [1e-3, 2e-3, 4e-3, 8e-3], every=2, seed=3),
             Aging([2, 6], [1, 4, 8])]
    return x, y, net, opt, Minibatcher(64, 8, seed=0, ensemble=k), hooks


def test_hooks_in_the_loop_resume_bit_for_bit_and_never_touch_the_data():
    x, y, net, opt, batcher, hooks = _problem()
    stored = x.clone(), y.clone()
    state = train(net, opt, batcher, steps=20, x_train=x, y_train=y, hooks=hooks,
                  handle_signals=False)
    assert torch.equal(x, stored[0]) and torch.equal(y, stored[1])
    full = [p.detach().clone() for p in net.parameters()]
    metrics = {r[5] for r in state.rows}
    assert {"swap_rows_0/accepted", "replica_exchange/round_trips",
            "aging_msd_tw2"} <= metrics
    assert hooks[0].swapped > 0 and hooks[1].proposed == 6 and hooks[2].rounds == 10

    x, y, net, opt, batcher, hooks = _problem()
    saved = {}

    def keep(obj):
        buf = io.BytesIO()
        torch.save(obj, buf)
        saved["ckpt"] = buf.getvalue()

    def interrupt(step):
        if step == 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(net, opt, batcher, steps=20, x_train=x, y_train=y, hooks=hooks, checkpoint=keep,
              callback=interrupt, handle_signals=False)
    x, y, net, opt, batcher, hooks = _problem()
    ckpt = torch.load(io.BytesIO(saved["ckpt"]), weights_only=False)
    assert ckpt["step"] == 9
    train(net, opt, batcher, steps=20, x_train=x, y_train=y, hooks=hooks, resume_from=ckpt,
          handle_signals=False)
    for p, q in zip(net.parameters(), full, strict=True):
        assert torch.equal(p, q)
