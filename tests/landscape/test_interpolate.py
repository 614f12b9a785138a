"""landscape.interpolate / delta_min / is_monotone / distance (SPEC §8) against references
written out by hand: K plain networks, one at a time, with their state loaded explicitly."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch.testing import assert_close

from thermotrain import landscape
from thermotrain.models import MLP, accuracy, classification_loss

F64 = torch.float64
TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def _data(n, d, classes, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.randint(0, max(classes, 2), (n,), generator=g)
    return x, y


def _trained_pair(k, widths, batchnorm, seed=0):
    """An ensemble at init and a perturbed 'trained' state (BN stats from a train pass)."""
    net = MLP(widths, ensemble=k, batchnorm=batchnorm, seed=seed, dtype=F64)
    start = copy.deepcopy(net.state_dict())
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g, dtype=F64))
        net.train()
        net(torch.randn(50, widths[0], generator=g, dtype=F64) * 2 + 1)  # running stats move
    net.eval()
    return net, start, copy.deepcopy(net.state_dict())


def _reference(member_nets_start, member_nets_end, alpha, mode, x_bn, bn_batch):
    """Member k's plain network at θ(α), built by loading its interpolated state."""
    out = []
    for a, b in zip(member_nets_start, member_nets_end, strict=True):
        net = copy.deepcopy(b)
        sa, sb = a.state_dict(), b.state_dict()
        new = {}
        for key in sb:
            if not sb[key].dtype.is_floating_point:
                new[key] = sb[key]
            elif key.endswith(("running_mean", "running_var")) and mode == "freeze":
                new[key] = sb[key]
            else:
                new[key] = (1 - alpha) * sa[key] + alpha * sb[key]
        net.load_state_dict(new)
        if mode == "recompute" and hasattr(net, "norms"):
            for bn in net.norms:
                bn.reset_running_stats()
            net.train()
            with torch.no_grad():
                for lo in range(0, x_bn.shape[0], bn_batch):
                    net(x_bn[lo:lo + bn_batch])
        net.eval()
        out.append(net)
    return out


def _members(net, state):
    ens = copy.deepcopy(net)
    ens.load_state_dict(state)
    return [ens.member(i) for i in range(ens.ensemble_size)]


@pytest.mark.parametrize(("batchnorm", "mode"),
                         [(False, "recompute"), (True, "recompute"), (True, "interpolate"),
                          (True, "freeze")])
def test_ensemble_interpolation_equals_each_member_alone(batchnorm, mode):
    k, widths = 3, [4, 6, 5, 3]
    net, start, end = _trained_pair(k, widths, batchnorm)
    train, test = _data(40, 4, 3, 1), _data(30, 4, 3, 2)
    alphas = torch.tensor([-0.5, 0.0, 0.3, 1.0, 1.5], dtype=F64)
    res = landscape.interpolate(net, start, end, {"train": train, "test": test},
                                alphas=alphas, batchnorm=mode, bn_batch_size=16)
    assert res.alphas.tolist() == alphas.tolist()
    assert res.batchnorm == (mode if batchnorm else None)
    plain0, plain1 = _members(net, start), _members(net, end)
    for i, alpha in enumerate(alphas.tolist()):
        nets = _reference(plain0, plain1, alpha, mode, train[0], 16)
        for split, (x, y) in (("train", train), ("test", test)):
            for m, member_net in enumerate(nets):
                with torch.no_grad():
                    logits = member_net(x)
                assert_close(res.loss[split][i, m], classification_loss(logits, y).double(),
                             **TIGHT)
                assert_close(res.accuracy[split][i, m], accuracy(logits, y).double(), **TIGHT)


def test_batchnorm_modes_differ_and_endpoints_match_the_end_model():
    net, start, end = _trained_pair(2, [3, 8, 2], True)
    train = _data(64, 3, 2, 5)
    results = {m: landscape.interpolate(net, start, end, train, alphas=5, batchnorm=m)
               for m in landscape.BATCHNORM_MODES}
    # freeze and interpolate use θ_T's statistics at α = 1: the end model in eval mode
    ref = copy.deepcopy(net)
    ref.load_state_dict(end)
    ref.eval()
    with torch.no_grad():
        loss_end = torch.stack([classification_loss(z, train[1]) for z in ref(train[0])])
    for mode in ("freeze", "interpolate"):
        assert_close(results[mode].loss["train"][-1], loss_end.double(), **TIGHT)
    # recompute replaces the statistics: a different number at α = 1
    assert not torch.allclose(results["recompute"].loss["train"][-1], loss_end.double())
    assert not torch.allclose(results["freeze"].loss["train"][0],
                              results["interpolate"].loss["train"][0])


def test_model_is_left_unchanged_and_chunking_does_not_change_results():
    net, start, end = _trained_pair(2, [3, 8, 2], True)
    net.train()
    before = copy.deepcopy(net.state_dict())
    data = {"train": _data(50, 3, 2, 3), "test": _data(21, 3, 2, 4)}
    a = landscape.interpolate(net, start, end, data, alphas=7, bn_batch_size=10)
    b = landscape.interpolate(net, start, end, data, alphas=7, bn_batch_size=10, batch_size=8)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(m.training for m in net.modules())
    for split in data:
        assert_close(a.loss[split], b.loss[split], **TIGHT)
        assert_close(a.accuracy[split], b.accuracy[split], **TIGHT)


def test_plain_model_custom_loss_and_frame():
    net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    start = copy.deepcopy(net.state_dict())
    end = {k: v + 1.0 for k, v in start.items()}
    x = torch.randn(20, 2)
    y = torch.randn(20, 1)

    def mse(z, t):
        return (z - t).square().mean()

    res = landscape.interpolate(net, start, end, (x, y), mse, alphas=[0.0, 0.5, 1.0])
    assert res.members is None and res.accuracy == {}
    mid = copy.deepcopy(net)
    mid.load_state_dict({k: 0.5 * (start[k] + end[k]) for k in start})
    with torch.no_grad():
        assert_close(res.loss["train"][1, 0], mse(mid(x), y).double(), rtol=1e-6, atol=1e-7)
    frame = res.to_frame(study="s", method="m")
    assert list(frame.columns) == ["study", "method", "member", "seed", "alpha", "split",
                                   "metric", "value"]
    assert len(frame) == 3 and set(frame["metric"]) == {"loss"}


def test_frame_has_one_row_per_member_alpha_split_metric():
    net, start, end = _trained_pair(3, [2, 5, 1], False)
    data = {"train": _data(10, 2, 1, 0), "test": _data(10, 2, 1, 1)}
    res = landscape.interpolate(net, start, end, data, alphas=4)
    frame = res.to_frame(seeds=[7, 8, 9])
    assert len(frame) == 3 * 4 * 2 * 2
    row = frame[(frame.seed == 8) & (frame.split == "test") & (frame.metric == "loss")]
    assert_close(torch.tensor(row["value"].to_numpy()), res.loss["test"][:, 1], **TIGHT)


def _delta_min_brute(v):
    return max([0.0] + [v[j] - v[i] for i, j in itertools.combinations(range(len(v)), 2)])


def test_delta_min_is_the_largest_rise_including_one_at_the_last_alpha():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(12, 40, generator=g, dtype=F64)
    expected = torch.tensor([_delta_min_brute(values[:, j].tolist()) for j in range(40)],
                            dtype=F64)
    assert_close(landscape.delta_min(values), expected, **TIGHT)
    # a path that decreases and rises only at the final α (the MLI code misses this)
    last_rise = [1.0, 0.8, 0.5, 0.2, 0.1, 0.35]
    assert landscape.delta_min(last_rise).item() == pytest.approx(0.25)
    assert not bool(landscape.is_monotone(last_rise))
    assert landscape.delta_min([3.0, 2.0, 1.0]).item() == 0.0
    assert bool(landscape.is_monotone([3.0, 2.0, 2.0005]))          # within tol = 1e-3
    assert not bool(landscape.is_monotone([3.0, 2.0, 2.0005], tol=0))
    assert torch.isnan(landscape.delta_min([1.0, float("nan"), 0.5]))
    with pytest.raises(ValueError, match=r"A >= 2, got \(1,\)"):
        landscape.delta_min([1.0])


def test_distance_normalizations_exclude_batchnorm_buffers():
    net, start, end = _trained_pair(2, [3, 4, 2], True)
    names = [n for n, _ in net.named_parameters()]
    diff = torch.stack([sum((end[n][k] - start[n][k]).square().sum() for n in names)
                        for k in range(2)]).sqrt()
    n0 = torch.stack([sum(start[n][k].square().sum() for n in names) for k in range(2)]).sqrt()
    n1 = torch.stack([sum(end[n][k].square().sum() for n in names) for k in range(2)]).sqrt()
    assert_close(landscape.distance(start, end, "none", model=net), diff, **TIGHT)
    assert_close(landscape.distance(start, end, model=net), diff / n0, **TIGHT)
    assert_close(landscape.distance(start, end, "end", model=net), diff / n1, **TIGHT)
    # without the model: buffers recognized by name
    assert_close(landscape.distance(start, end, "none", ensemble=True), diff, **TIGHT)
    with pytest.raises(ValueError, match="normalization must be one of .*got 'init'"):
        landscape.distance(start, end, "init")


def test_bad_arguments_name_the_value():
    net, start, end = _trained_pair(2, [3, 4, 2], True)
    data = _data(10, 3, 2, 0)
    with pytest.raises(ValueError, match="batchnorm must be one of .*got 'reset'"):
        landscape.interpolate(net, start, end, data, batchnorm="reset")
    with pytest.raises(ValueError, match=r"start does not match .*missing \['layers.0.bias'\]"):
        landscape.interpolate(net, {k: v for k, v in start.items() if k != "layers.0.bias"},
                              end, data)
    with pytest.raises(ValueError, match="alphas must be strictly increasing"):
        landscape.interpolate(net, start, end, data, alphas=[0.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="alphas must be an int >= 2, got 1"):
        landscape.interpolate(net, start, end, data, alphas=1)
    with pytest.raises(TypeError, match="data must be an"):
        landscape.interpolate(net, start, end, [1, 2, 3])
    with pytest.raises(ValueError, match="needs the split 'train'"):
        landscape.interpolate(net, start, end, {"test": data})
    with pytest.raises(ValueError, match=r"shape \(2,\) \(one mean per member\), got \(\)"):
        landscape.interpolate(net, start, end, data, lambda z, y: z.mean())


def test_recompute_with_cumulative_momentum_is_the_mean_of_the_batch_statistics():
    from thermotrain.landscape.interpolate import path_state

    net, start, end = _trained_pair(2, [3, 4, 2], True)
    x = _data(60, 3, 2, 9)[0]
    state = path_state(net, start, end, 1.0, "recompute", x, 20, None)
    with torch.no_grad():
        pre = torch.einsum("bi,koi->kbo", x, end["layers.0.weight"]) + end["layers.0.bias"][:, None]
    chunks = pre.split(20, dim=1)  # three batches of 20
    mean = torch.stack([c.mean(1) for c in chunks]).mean(0)
    var = torch.stack([c.var(1, unbiased=True) for c in chunks]).mean(0)
    assert_close(state["norms.0.running_mean"], mean, **TIGHT)
    assert_close(state["norms.0.running_var"], var, **TIGHT)
    assert state["norms.0.num_batches_tracked"].tolist() == [3, 3]
    ema = path_state(net, start, end, 1.0, "recompute", x, 20, 0.1)
    # EMA 0.1 from the reset value 0 after three batches: 0.271 of the batch means' weight
    assert_close(ema["norms.0.running_mean"],
                 sum(0.1 * 0.9 ** (2 - i) * c.mean(1) for i, c in enumerate(chunks)), **TIGHT)
    assert all(m.momentum == 0.1 for m in net.norms)  # the modules' momentum is restored
