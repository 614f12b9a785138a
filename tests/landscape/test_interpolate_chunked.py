"""landscape.interpolate with several α per vectorized call (``alpha_batch``) equals the
per-α path (``alpha_batch=1``, one functional call per α) to rounding, in every batch-norm
mode, for ensembles and plain models, default and custom losses/metrics."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.testing import assert_close

from thermotrain import landscape
from thermotrain.models import MLP

F64 = torch.float64
TIGHT = {"rtol": 1e-10, "atol": 1e-12}  # float64: only summation-order rounding differs


def _data(n, d, classes, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=F64),
            torch.randint(0, max(classes, 2), (n,), generator=g))


def _pair(net, seed):
    start = copy.deepcopy(net.state_dict())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        if getattr(net, "batchnorm", False):
            net.train()
            net(torch.randn(50, net.widths[0], generator=g, dtype=F64) * 2 + 1)
    net.eval()
    return start, copy.deepcopy(net.state_dict())


def _assert_same(a, b):
    assert a.metrics.keys() == b.metrics.keys()
    for metric, by_split in a.metrics.items():
        for split, v in by_split.items():
            assert v.shape == b.metrics[metric][split].shape
            assert_close(v, b.metrics[metric][split], **TIGHT)


@pytest.mark.parametrize(("batchnorm", "mode"),
                         [(False, "recompute"), (True, "recompute"), (True, "interpolate"),
                          (True, "freeze")])
def test_chunked_alphas_equal_the_per_alpha_path(batchnorm, mode):
    net = MLP([4, 6, 5, 3], ensemble=3, batchnorm=batchnorm, seed=0, dtype=F64)
    start, end = _pair(net, 100)
    data = {"train": _data(40, 4, 3, 1), "test": _data(30, 4, 3, 2)}
    alphas = torch.linspace(-0.5, 1.5, 7, dtype=F64)
    ref = landscape.interpolate(net, start, end, data, alphas=alphas, batchnorm=mode,
                                bn_batch_size=16, alpha_batch=1)
    # 3 and 4 do not divide 7 (a short last chunk); 7 is one chunk; None the default; a row
    # chunk smaller than the splits combines row-chunk means inside each α chunk
    for kwargs in ({"alpha_batch": 3}, {"alpha_batch": 4}, {"alpha_batch": 7}, {},
                   {"alpha_batch": 3, "batch_size": 16}):
        got = landscape.interpolate(net, start, end, data, alphas=alphas, batchnorm=mode,
                                    bn_batch_size=16, **kwargs)
        _assert_same(got, ref)


def test_chunked_alphas_plain_models_default_and_custom_metrics():
    net = MLP([3, 8, 1], seed=2, dtype=F64)  # plain: default loss folded over α
    start, end = _pair(net, 7)
    data = {"train": _data(25, 3, 2, 3), "test": _data(9, 3, 2, 4)}
    _assert_same(landscape.interpolate(net, start, end, data, alphas=6, alpha_batch=4),
                 landscape.interpolate(net, start, end, data, alphas=6, alpha_batch=1))

    seq = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    s0 = copy.deepcopy(seq.state_dict())
    s1 = {k: v + 1.0 for k, v in s0.items()}
    x, t = torch.randn(20, 2), torch.randn(20, 1)

    def mse(z, y):
        return (z - y).square().mean()

    metrics = {"mae": lambda z, y: (z - y).abs().mean()}
    # float32 model: the vmap-ed and the plain call may round differently in the last bit
    a = landscape.interpolate(seq, s0, s1, (x, t), mse, alphas=5, metrics=metrics,
                              alpha_batch=5)
    b = landscape.interpolate(seq, s0, s1, (x, t), mse, alphas=5, metrics=metrics,
                              alpha_batch=1)
    for metric in ("loss", "mae"):
        assert_close(a.metrics[metric]["train"], b.metrics[metric]["train"],
                     rtol=1e-6, atol=1e-7)


def test_bad_alpha_batch_names_the_value():
    net = MLP([2, 4, 1], ensemble=2, seed=0)
    s = net.state_dict()
    with pytest.raises((ValueError, TypeError), match="alpha_batch"):
        landscape.interpolate(net, s, s, _data(5, 2, 2, 0), alpha_batch=0)
