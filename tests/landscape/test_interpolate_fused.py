"""landscape.interpolate's fused path (landscape._fastline: one C call per split for small CPU
MLPs) equals its torch path (the vmap-ed functional call, forced by disabling the fused one)
to rounding, and is taken exactly when it computes the same thing."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.testing import assert_close

from thermotrain import landscape
from thermotrain.landscape import _fastline
from thermotrain.models import MLP, ensemble_loss, fused

needs_kernel = pytest.mark.skipif(fused._library() is None, reason="no C compiler here")


def _pair(net, seed, scale=0.5):
    start = copy.deepcopy(net.state_dict())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return start, copy.deepcopy(net.state_dict())


def _data(n, d, classes, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=dtype),
            torch.randint(0, max(classes, 2), (n,), generator=g))


@pytest.fixture
def calls(monkeypatch):
    """Counts the fused evaluations; ``calls.torch_path()`` forces the torch path."""
    counter = {"n": 0}
    original = fused.evaluate_line

    def spy(*args, **kwargs):
        counter["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(fused, "evaluate_line", spy)

    class Calls:
        @property
        def n(self):
            return counter["n"]

        @staticmethod
        def torch_path(fn):
            with monkeypatch.context() as m:
                m.setattr(_fastline, "evaluate", lambda *a, **k: None)
                return fn()

    return Calls()


def _assert_same(fast, ref, dtype, batchnorm=None):
    # float64: rounding only; float32: per-row losses from 100-term sums in another order
    # and the first layer lerped after (not before) the matrix product: a few ulp of each
    # term (~1e-7 relative), means of N = 60/45 rows in double vs float32
    tol = {"rtol": 1e-11, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-6,
                                                                          "atol": 1e-6}
    assert fast.metrics.keys() == ref.metrics.keys() and fast.members == ref.members
    assert fast.batchnorm == ref.batchnorm == batchnorm
    for metric, by_split in ref.metrics.items():
        assert list(fast.metrics[metric]) == list(by_split)
        for split, v in by_split.items():
            got = fast.metrics[metric][split]
            assert got.dtype == v.dtype == torch.float64 and got.shape == v.shape
            if metric == "accuracy":  # counts / N: no rounding but torch's float32 mean
                assert_close(got, v, rtol=0, atol=1e-6)
            else:
                assert_close(got, v, **tol)


@needs_kernel
@pytest.mark.parametrize(("widths", "act", "k", "dtype"), [
    ([2, 100, 1], "relu", 4, torch.float32),     # the notebook-4turn net, BCE
    ([2, 100, 1], "relu", None, torch.float32),  # a plain member
    ([3, 9, 5, 4], "tanh", 3, torch.float64),    # deeper, tanh, CE
    ([4, 20, 3], "relu", None, torch.float64),   # plain, CE
    ([6, 12, 1], "tanh", 2, torch.float64),      # tanh, BCE
    ([5, 16, 4], "tanh", 2, torch.float32),      # tanh, CE, float32
])
def test_fused_path_equals_the_torch_path(calls, widths, act, k, dtype):
    net = MLP(widths, activation=act, ensemble=k, seed=0, dtype=dtype)
    start, end = _pair(net, 7, scale=1.0)
    data = {"train": _data(60, widths[0], widths[-1], 1, dtype),
            "test": _data(45, widths[0], widths[-1], 2, dtype)}
    alphas = torch.linspace(-0.5, 1.5, 9, dtype=torch.float64)  # beyond the endpoints too
    fast = landscape.interpolate(net, start, end, data, alphas=alphas)
    assert calls.n == 2  # one C call per split
    ref = calls.torch_path(lambda: landscape.interpolate(net, start, end, data, alphas=alphas))
    assert calls.n == 2
    _assert_same(fast, ref, dtype)
    acc = fast.accuracy["train"]
    assert acc.min() < acc.max() and fast.loss["test"].std() > 0.05  # a real comparison
    # explicit default loss and accuracy are the same computation: still fused
    from thermotrain.landscape import _state
    again = landscape.interpolate(net, start, end, data, _state.default_loss(net), alphas,
                                  metrics={"accuracy": _state.default_accuracy(net)})
    assert calls.n == 4
    _assert_same(again, ref, dtype)


def _bn_pair(net, seed):
    """θ₀ at init; θ_T perturbed, γ and β moved, running statistics from a train pass."""
    start = copy.deepcopy(net.state_dict())
    g = torch.Generator().manual_seed(seed)
    dtype = net.layers[0].weight.dtype
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g, dtype=dtype))
        net.train()
        net(torch.randn(50, net.widths[0], generator=g, dtype=dtype) * 2 + 1)
    net.eval()
    return start, copy.deepcopy(net.state_dict())


@needs_kernel
@pytest.mark.parametrize("mode", ["recompute", "interpolate", "freeze"])
@pytest.mark.parametrize(("widths", "act", "k", "dtype"), [
    ([2, 30, 1], "relu", 3, torch.float32),      # one hidden layer, binary (not shlp_logits)
    ([4, 9, 6, 3], "tanh", None, torch.float64),  # plain, two batch norms, softmax
    ([3, 12, 10, 4], "relu", 2, torch.float64),
])
def test_batchnorm_models_fused_equal_the_torch_path(calls, mode, widths, act, k, dtype):
    net = MLP(widths, activation=act, ensemble=k, batchnorm=True, seed=0, dtype=dtype)
    start, end = _bn_pair(net, 9)
    data = {"train": _data(70, widths[0], widths[-1], 1, dtype),
            "test": _data(40, widths[0], widths[-1], 2, dtype)}
    alphas = torch.linspace(-0.5, 1.5, 6, dtype=torch.float64)
    kwargs = dict(alphas=alphas, batchnorm=mode, bn_batch_size=32, bn_momentum=None)
    fast = landscape.interpolate(net, start, end, data, **kwargs)
    assert calls.n == 2 and fast.batchnorm == mode
    ref = calls.torch_path(lambda: landscape.interpolate(net, start, end, data, **kwargs))
    assert calls.n == 2 and ref.batchnorm == mode
    _assert_same(fast, ref, dtype, batchnorm=mode)
    assert fast.loss["test"].std() > 0.01  # the line is not flat (spread 0.03-0.5 here)


@needs_kernel
def test_fused_path_leaves_the_model_unchanged_and_ignores_memory_knobs(calls):
    net = MLP([2, 30, 1], ensemble=3, seed=1)
    start, end = _pair(net, 3)
    before = copy.deepcopy(net.state_dict())
    data = _data(70, 2, 1, 4, torch.float32)
    base = landscape.interpolate(net, start, end, data, alphas=7)
    for kwargs in ({"alpha_batch": 3}, {"batch_size": 16}, {"alpha_batch": 1}):
        other = landscape.interpolate(net, start, end, data, alphas=7, **kwargs)
        assert torch.equal(other.loss["train"], base.loss["train"])
    with pytest.raises(ValueError, match="alpha_batch"):
        landscape.interpolate(net, start, end, data, alphas=7, alpha_batch=0)
    assert all(torch.equal(v, before[n]) for n, v in net.state_dict().items())
    assert calls.n == 4


@needs_kernel
def test_alpha_chunks_of_the_fused_path_agree(calls, monkeypatch):
    net = MLP([2, 10, 3], ensemble=2, seed=2, dtype=torch.float64)
    start, end = _pair(net, 5)
    data = _data(40, 2, 3, 6, torch.float64)
    whole = landscape.interpolate(net, start, end, data, alphas=11)
    monkeypatch.setattr(_fastline, "MAX_PARTIALS", 9)  # 2 members x 2 blocks: 2 α per call
    chunked = landscape.interpolate(net, start, end, data, alphas=11)
    assert calls.n == 1 + 6
    assert torch.equal(whole.loss["train"], chunked.loss["train"])
    assert torch.equal(whole.accuracy["train"], chunked.accuracy["train"])


@needs_kernel
def test_the_torch_path_is_taken_where_the_fused_one_would_differ(calls):
    net = MLP([2, 8, 1], ensemble=2, seed=3)
    start, end = _pair(net, 1)
    data = _data(30, 2, 1, 2, torch.float32)
    landscape.interpolate(net, start, end, data, loss=lambda z, y: ensemble_loss(z, y) * 2,
                          alphas=3)  # a custom loss
    landscape.interpolate(net, start, end, data, alphas=3,
                          metrics={"acc": lambda z, y: (z[..., 0] > 0).float().mean(1)})
    landscape.interpolate(net, start, end, data, alphas=3, metrics=None)  # fused: no metric
    assert calls.n == 1
    # a non-finite state: torch's NaN propagation, not the fast-math kernel's
    bad = {n: v.clone() for n, v in end.items()}
    bad["layers.0.weight"][0, 0, 0] = float("nan")
    res = landscape.interpolate(net, start, bad, data, alphas=3)
    assert calls.n == 1
    assert torch.isnan(res.loss["train"][1:, 0]).all()
    assert torch.isfinite(res.loss["train"][:, 1]).all()
    # data in another dtype is torch's error, unchanged
    with pytest.raises(RuntimeError):
        landscape.interpolate(net, start, end, (data[0].double(), data[1]), alphas=3)
    assert calls.n == 1


def test_without_the_kernel_interpolate_still_works(monkeypatch):
    net = MLP([2, 8, 1], ensemble=2, seed=3)
    start, end = _pair(net, 1)
    data = _data(30, 2, 1, 2, torch.float32)
    monkeypatch.setattr(fused, "_library", lambda: None)  # as without a C compiler
    res = landscape.interpolate(net, start, end, data, alphas=4)
    assert res.loss["train"].shape == (4, 2) and torch.isfinite(res.loss["train"]).all()
