"""MLP / EnsembleLinear: ensemble forward and backward equal K separate plain networks."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from thermotrain.models import MLP, EnsembleLinear, classification_loss, ensemble_loss

F64 = torch.float64
TIGHT = {"rtol": 1e-12, "atol": 1e-12}


def layer_partition(model: nn.Module) -> list[nn.Module]:
    """The samplers' "by layer" partition: modules owning parameters, registration order."""
    return [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]


def _data(k, b, d, n_out, shared, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (b, d) if shared else (k, b, d)
    x = torch.randn(shape, generator=g, dtype=F64)
    n_cls = 2 if n_out == 1 else n_out
    y = torch.randint(0, n_cls, shape[:-1], generator=g)
    return x, y


def test_plain_mlp_is_an_ordinary_pytorch_model():
    net = MLP([2, 100, 1])
    assert [type(m) for m in net.layers] == [nn.Linear, nn.Linear]
    assert [n for n, _ in net.named_parameters()] == [
        "layers.0.weight",
        "layers.0.bias",
        "layers.1.weight",
        "layers.1.bias",
    ]
    x = torch.randn(25, 2)
    expected = net.layers[1](torch.relu(net.layers[0](x)))
    assert torch.equal(net(x), expected)
    assert net(x).shape == (25, 1)


def test_tanh_activation_and_depth():
    net = MLP([3, 4, 5, 2], activation="tanh", dtype=F64)
    x = torch.randn(6, 3, dtype=F64)
    l0, l1, l2 = net.layers
    assert_close(net(x), l2(torch.tanh(l1(torch.tanh(l0(x))))), **TIGHT)


def test_spec_section5_network_has_seven_weights():
    net = MLP([1, 2, 1], activation="tanh")
    assert sum(p.numel() for p in net.parameters()) == 7


@pytest.mark.parametrize("shared", [False, True], ids=["per-member-batches", "shared-batch"])
@pytest.mark.parametrize(
    ("widths", "activation"),
    [([2, 100, 1], "relu"), ([3, 7, 6, 4], "tanh"), ([5, 9, 3], "relu")],
)
def test_ensemble_forward_backward_equals_separate_models(widths, activation, shared):
    k, b = 5, 11
    seeds = [3, 1, 4, 1, 5]
    ens = MLP(widths, ensemble=k, seed=seeds, activation=activation, dtype=F64)
    plains = [MLP(widths, seed=s, activation=activation, dtype=F64) for s in seeds]
    x, y = _data(k, b, widths[0], widths[-1], shared)

    logits = ens(x)
    assert logits.shape == (k, b, widths[-1])
    losses = ensemble_loss(logits, y)
    assert losses.shape == (k,)
    losses.sum().backward()

    for j, net in enumerate(plains):
        xj = x if shared else x[j]
        yj = y if shared else y[j]
        out = net(xj)
        assert_close(logits[j], out, **TIGHT)
        loss = classification_loss(out, yj)
        assert_close(losses[j], loss, **TIGHT)
        loss.backward()
        for p_ens, p in zip(ens.parameters(), net.parameters(), strict=True):
            assert_close(p_ens.grad[j], p.grad, **TIGHT)


def test_input_gradient_of_shared_batch_sums_over_members():
    k = 4
    ens = MLP([2, 6, 1], ensemble=k, dtype=F64, seed=2)
    x = torch.randn(3, 2, dtype=F64, requires_grad=True)
    ens(x).sum().backward()
    expected = torch.zeros_like(x)
    for j in range(k):
        xj = x.detach().clone().requires_grad_(True)
        MLP([2, 6, 1], dtype=F64, seed=2 + j)(xj).sum().backward()
        expected += xj.grad
    assert_close(x.grad, expected, **TIGHT)


def test_layer_partition_matches_plain():
    widths = [2, 100, 50, 1]
    plain, ens = MLP(widths), MLP(widths, ensemble=7)
    lp, le = layer_partition(plain), layer_partition(ens)
    assert len(lp) == len(le) == 3
    assert le == ens.layer_modules() and lp == plain.layer_modules()
    for a, b in zip(lp, le, strict=True):
        pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
        assert list(pa) == list(pb) == ["weight", "bias"]
        for name in pa:
            assert pb[name].shape == (7, *pa[name].shape)


def test_parameter_names_match_plain_and_ensemble_attributes():
    plain, ens = MLP([4, 3, 2]), MLP([4, 3, 2], ensemble=2)
    assert list(dict(plain.named_parameters())) == list(dict(ens.named_parameters()))
    assert plain.ensemble_size is None and not plain.is_ensemble
    assert ens.ensemble_size == 2 and ens.is_ensemble and ens.ensemble_dim == 0
    assert ens.config() == {"widths": [4, 3, 2], "activation": "relu"}


def _graph_size(loss: torch.Tensor) -> int:
    seen, stack = set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(fn for fn, _ in node.next_functions)
    return len(seen)


@pytest.mark.parametrize("shared", [False, True])
def test_ensemble_graph_does_not_grow_with_members(shared):
    """No Python loop over members: the autograd graph is the same for K = 2 and K = 100."""
    sizes = []
    for k in (2, 100):
        ens = MLP([2, 100, 1], ensemble=k)
        x, y = _data(k, 25, 2, 1, shared)
        sizes.append(_graph_size(ensemble_loss(ens(x.float()), y).sum()))
    assert sizes[0] == sizes[1] < 30


def test_ensemble_linear_shapes_and_errors():
    layer = EnsembleLinear(3, 4, 2)
    assert layer.weight.shape == (3, 2, 4) and layer.bias.shape == (3, 2)
    assert layer(torch.zeros(5, 4)).shape == (3, 5, 2)
    assert layer(torch.zeros(3, 5, 4)).shape == (3, 5, 2)
    for bad in [torch.zeros(5, 3), torch.zeros(2, 5, 4), torch.zeros(3, 5, 4, 1), torch.zeros(4)]:
        with pytest.raises(ValueError, match=r"\(K=3, B, 4\)"):
            layer(bad)
    uninit = EnsembleLinear(2, 3, 3, init=None)
    assert uninit.weight.shape == (2, 3, 3)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"widths": []}, ValueError, "at least two"),
        ({"widths": [2]}, ValueError, r"\[2\]"),
        ({"widths": [2, 0, 1]}, ValueError, r"widths\[1\] must be >= 1"),
        ({"widths": [2, -3, 1]}, ValueError, "-3"),
        ({"widths": [2, 1.5, 1]}, TypeError, r"widths\[1\].*1\.5"),
        ({"widths": [2, True, 1]}, TypeError, "True"),
        ({"widths": "21"}, TypeError, "'21'"),
        ({"widths": 3}, TypeError, "3"),
        ({"activation": "sigmoid"}, ValueError, r"\['relu', 'tanh'\], got 'sigmoid'"),
        ({"activation": torch.relu}, TypeError, "activation must be one of"),
        ({"init": "normal"}, ValueError, "standard deviation"),
        ({"init": ("normal", -1.0)}, ValueError, "-1.0"),
        ({"init": "xavier"}, ValueError, "'xavier'"),
        ({"ensemble": 0}, ValueError, "ensemble must be an int >= 1, got 0"),
        ({"ensemble": 2.0}, TypeError, "2.0"),
        ({"ensemble": 3, "seed": [1, 2]}, ValueError, r"ensemble=3 but len\(seed\)=2"),
        ({"seed": [1, 2]}, TypeError, "plain model"),
        ({"seed": -5}, ValueError, "-5"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    kwargs = {"widths": [2, 4, 1], **kwargs}
    widths = kwargs.pop("widths")
    with pytest.raises(error, match=match):
        MLP(widths, **kwargs)


# --- batch norm (SPEC §8: BN after each hidden Linear, before the activation) ---------------


def test_batchnorm_mlp_is_linear_bn_activation_and_keeps_the_linear_init():
    net = MLP([3, 5, 4, 2], batchnorm=True, seed=4, dtype=F64)
    plain = MLP([3, 5, 4, 2], seed=4, dtype=F64)
    for a, b in zip(net.layers, plain.layers, strict=True):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert [type(m) for m in net.norms] == [nn.BatchNorm1d, nn.BatchNorm1d]
    assert layer_partition(net) == net.layer_modules()
    x = torch.randn(16, 3, dtype=F64)
    l0, l1, l2 = net.layers
    n0, n1 = net.norms
    expected = l2(torch.relu(n1(l1(torch.relu(n0(l0(x)))))))
    assert_close(net(x), expected, **TIGHT)
    assert net.config() == {"widths": [3, 5, 4, 2], "activation": "relu", "batchnorm": True}
    assert "norms.0.running_mean" in net.state_dict()


@pytest.mark.parametrize("shared", [False, True], ids=["per-member-batches", "shared-batch"])
def test_batchnorm_ensemble_equals_separate_networks_train_and_eval(shared):
    k = 3
    ens = MLP([4, 6, 5, 3], batchnorm=True, ensemble=k, seed=10, dtype=F64)
    plains = [MLP([4, 6, 5, 3], batchnorm=True, seed=10 + i, dtype=F64) for i in range(k)]
    x, y = _data(k, 12, 4, 3, shared)
    # training mode: batch statistics, running statistics updated per member
    out = ens(x)
    loss = ensemble_loss(out, y).sum()
    loss.backward()
    for i, net in enumerate(plains):
        xi, yi = (x, y) if shared else (x[i], y[i])
        oi = net(xi)
        assert_close(out[i], oi, **TIGHT)
        classification_loss(oi, yi).backward()
        for (name, p_ens), p in zip(ens.named_parameters(), net.parameters(), strict=True):
            assert_close(p_ens.grad[i], p.grad, **TIGHT, msg=name)
        for b_ens, b in zip(ens.buffers(), net.buffers(), strict=True):
            assert_close(b_ens[i], b, **TIGHT)
    # eval mode: running statistics
    ens.eval()
    for i, net in enumerate(plains):
        net.eval()
        xi = x if shared else x[i]
        assert_close(ens(x)[i], net(xi), **TIGHT)
        member = ens.member(i)
        member.eval()
        assert_close(member(xi), net(xi), **TIGHT)


def test_batchnorm_argument_is_checked_and_fused_gradient_declines_bn():
    from thermotrain.models import fused

    with pytest.raises(TypeError, match="batchnorm must be True or False, got 'yes'"):
        MLP([2, 3, 1], batchnorm="yes")
    net = MLP([2, 8, 1], batchnorm=True, ensemble=2)
    x, y = torch.randn(10, 2), torch.randint(0, 2, (10,))
    assert not fused.supports(net, x, y)
