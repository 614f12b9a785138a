"""CNN / EnsembleConv2d: the grouped-convolution ensemble equals K separate plain CNNs."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from thermotrain.models import CNN, EnsembleConv2d, classification_loss, ensemble_loss

F64 = torch.float64
TIGHT = {"rtol": 1e-11, "atol": 1e-12}


def test_plain_cnn_architecture_and_reference_forward():
    net = CNN((1, 28, 28), 10, seed=0, dtype=F64)
    assert [type(m) for m in net.layer_modules()] == [nn.Conv2d, nn.Conv2d, nn.Linear]
    assert net.convs[0].weight.shape == (16, 1, 5, 5)
    assert net.convs[1].weight.shape == (32, 16, 5, 5)
    assert net.head.weight.shape == (10, 32 * 7 * 7)
    x = torch.randn(4, 1, 28, 28, dtype=F64)
    h = F.max_pool2d(torch.relu(net.convs[0](x)), 2)
    h = F.max_pool2d(torch.relu(net.convs[1](h)), 2)
    assert_close(net(x), net.head(h.flatten(1)), **TIGHT)
    # the flattened input is accepted too
    assert_close(net(x.flatten(1)), net(x), **TIGHT)


def test_cifar_shape():
    net = CNN((3, 32, 32), 10)
    assert net.head.in_features == 32 * 8 * 8
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    ens = CNN((3, 32, 32), 10, ensemble=3)
    assert ens(torch.zeros(2, 3, 32, 32)).shape == (3, 2, 10)
    assert ens.convs[0].weight.shape == (3, 16, 3, 5, 5)


@pytest.mark.parametrize("layout", ["images", "flat"])
@pytest.mark.parametrize("shared", [False, True], ids=["per-member-batches", "shared-batch"])
@pytest.mark.parametrize(
    ("in_shape", "n_out", "activation"), [((3, 9, 8), 4, "relu"), ((1, 8, 8), 1, "tanh")]
)
def test_ensemble_forward_backward_equals_separate_cnns(
    in_shape, n_out, activation, shared, layout
):
    k, b = 3, 5
    seeds = [5, 0, 9]
    kw = dict(channels=(4, 6), kernel_size=3, activation=activation, dtype=F64)
    ens = CNN(in_shape, n_out, ensemble=k, seed=seeds, **kw)
    plains = [CNN(in_shape, n_out, seed=s, **kw) for s in seeds]
    g = torch.Generator().manual_seed(1)
    lead = (b,) if shared else (k, b)
    x = torch.randn(*lead, *in_shape, generator=g, dtype=F64)
    y = torch.randint(0, max(n_out, 2), lead, generator=g)
    if layout == "flat":
        x = x.flatten(len(lead))

    logits = ens(x)
    assert logits.shape == (k, b, n_out)
    losses = ensemble_loss(logits, y)
    losses.sum().backward()
    for j, net in enumerate(plains):
        xj, yj = (x, y) if shared else (x[j], y[j])
        out = net(xj)
        assert_close(logits[j], out, **TIGHT)
        loss = classification_loss(out, yj)
        assert_close(losses[j], loss, **TIGHT)
        loss.backward()
        for (name, p_ens), p in zip(ens.named_parameters(), net.parameters(), strict=True):
            assert p_ens.shape == (k, *p.shape), name
            assert_close(p_ens.grad[j], p.grad, **TIGHT)


def test_mnist_sized_ensemble_matches_members():
    ens = CNN((1, 28, 28), 10, ensemble=2, seed=3, dtype=F64)
    x = torch.randn(2, 3, 1, 28, 28, dtype=F64)
    out = ens(x)
    for j in range(2):
        assert_close(out[j], CNN((1, 28, 28), 10, seed=3 + j, dtype=F64)(x[j]), **TIGHT)


def test_layer_partition_matches_plain():
    plain, ens = CNN(), CNN(ensemble=4)
    part = [m for m in ens.modules() if any(True for _ in m.parameters(recurse=False))]
    part_plain = [m for m in plain.modules() if any(True for _ in m.parameters(recurse=False))]
    assert len(part) == len(part_plain) == 3
    assert part == ens.layer_modules()
    names = [type(m).__name__ for m in part]
    assert names == ["EnsembleConv2d", "EnsembleConv2d", "EnsembleLinear"]
    for a, b in zip(part_plain, part, strict=True):
        assert [(n, (4, *p.shape)) for n, p in a.named_parameters()] == [
            (n, tuple(p.shape)) for n, p in b.named_parameters()
        ]


def test_graph_does_not_grow_with_members():
    sizes = []
    for k in (2, 20):
        ens = CNN((1, 8, 8), 3, channels=(2, 3), kernel_size=3, ensemble=k)
        loss = ensemble_loss(ens(torch.randn(k, 4, 1, 8, 8)), torch.zeros(4, dtype=torch.long))
        seen, todo = set(), [loss.sum().grad_fn]
        while todo:
            node = todo.pop()
            if node is not None and node not in seen:
                seen.add(node)
                todo.extend(fn for fn, _ in node.next_functions)
        sizes.append(len(seen))
    assert sizes[0] == sizes[1]


def test_ensemble_conv2d_standalone_matches_conv2d():
    layer = EnsembleConv2d(3, 2, 4, 3, padding=1, seed=[1, 2, 3], dtype=F64)
    x = torch.randn(3, 5, 2, 6, 7, dtype=F64)
    y = layer(x)
    assert y.shape == (3, 5, 4, 6, 7)
    y_shared = layer(x[0])
    for j, s in enumerate([1, 2, 3]):
        with torch.random.fork_rng():
            torch.manual_seed(s)
            ref = nn.Conv2d(2, 4, 3, padding=1, dtype=F64)
        assert torch.equal(layer.weight[j], ref.weight) and torch.equal(layer.bias[j], ref.bias)
        assert_close(y[j], ref(x[j]), **TIGHT)
        assert_close(y_shared[j], ref(x[0]), **TIGHT)
    with pytest.raises(ValueError, match=r"\(K=3, B, 2, H, W\)"):
        layer(torch.zeros(2, 5, 2, 6, 7))
    with pytest.raises(ValueError, match="padding"):
        EnsembleConv2d(3, 2, 4, 3, padding=-1)


@pytest.mark.parametrize(
    ("x_shape", "ensemble"),
    [
        ((4, 1, 28, 27), None),
        ((4, 2, 28, 28), None),
        ((4, 785), None),
        ((3, 4, 1, 28, 28), None),
        ((3, 4, 1, 28, 28), 2),
        ((3, 4, 784), 2),
        ((4, 28, 28), 2),
    ],
)
def test_bad_input_shapes(x_shape, ensemble):
    net = CNN((1, 28, 28), 10, channels=(2,), ensemble=ensemble)
    with pytest.raises(ValueError, match=r"in_shape=\(1, 28, 28\).*got " + re.escape(str(x_shape))):
        net(torch.zeros(x_shape))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"in_shape": (28, 28)}, TypeError, r"\(28, 28\)"),
        ({"in_shape": (1, 0, 28)}, ValueError, r"\(1, 0, 28\)"),
        ({"in_shape": (1, 3, 3)}, ValueError, "too small"),
        ({"num_classes": 0}, ValueError, "num_classes"),
        ({"channels": ()}, ValueError, "at least one"),
        ({"channels": (16, 0)}, ValueError, r"channels\[1\]"),
        ({"kernel_size": 4}, ValueError, "odd"),
        ({"activation": "gelu"}, ValueError, "'gelu'"),
        ({"ensemble": -1}, ValueError, "-1"),
        ({"ensemble": 2, "seed": [1]}, ValueError, r"len\(seed\)=1"),
        ({"init": ("normal",)}, ValueError, "normal"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        CNN(**kwargs)
