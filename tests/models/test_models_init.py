"""Initialisation: seeds, bit-identity of ensemble members, statistics, device/dtype."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from thermotrain.models import CNN, MLP, SHLP, EnsembleLinear, Init, as_init, member_seeds

# ----------------------------------------------------------------------------- seeds / specs


def test_member_seeds_int_and_list():
    assert member_seeds(7, None) == (7,)
    assert member_seeds(7, 3) == (7, 8, 9)
    assert member_seeds([4, 2, 9], 3) == (4, 2, 9)


@pytest.mark.parametrize(
    ("seed", "ensemble", "error", "match"),
    [
        ([1, 2], 3, ValueError, r"ensemble=3 but len\(seed\)=2"),
        ([1, 2, 3, 4], 3, ValueError, r"len\(seed\)=4"),
        ([1, 2], None, TypeError, "plain model"),
        (-1, None, ValueError, "-1"),
        (True, None, TypeError, "True"),
        (1.0, 2, TypeError, "1.0"),
        ("3", 2, TypeError, "'3'"),
        ([1, "a"], 2, TypeError, r"seed\[1\]"),
        (2**63 - 1, 2, ValueError, "2\\*\\*63"),
    ],
)
def test_member_seeds_errors(seed, ensemble, error, match):
    with pytest.raises(error, match=match):
        member_seeds(seed, ensemble)


def test_as_init_accepts_documented_forms():
    assert as_init("default") == Init.default() == Init()
    assert as_init(("normal", 0.5)) == Init("normal", 0.5) == Init.normal(0.5)
    assert as_init(["normal", 1]) == Init.normal(1.0)
    spec = Init.normal(0.01)
    assert as_init(spec) is spec


@pytest.mark.parametrize(
    ("init", "error", "match"),
    [
        ("normal", ValueError, "needs a standard deviation"),
        ("uniform", ValueError, "'uniform'"),
        (("normal", -0.1), ValueError, "-0.1"),
        (("normal", 0.0), ValueError, "std > 0"),
        (("normal", float("nan")), ValueError, "nan"),
        (("normal", "big"), TypeError, "'big'"),
        (("uniform", 0.1), ValueError, "'uniform'"),
        (0.1, TypeError, "0.1"),
        (None, TypeError, "None"),
    ],
)
def test_as_init_errors(init, error, match):
    with pytest.raises(error, match=match):
        as_init(init)


def test_init_default_takes_no_std():
    with pytest.raises(ValueError, match="no std"):
        Init("default", 0.1)


# ------------------------------------------------------------- reproducibility / bit-identity


def _params(model):
    return [p.detach() for p in model.parameters()]


def _assert_bit_identical(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        assert torch.equal(x, y)


def test_same_seed_same_params_different_seed_different_params():
    a, b, c = (MLP([3, 10, 2], seed=s) for s in (4, 4, 5))
    _assert_bit_identical(_params(a), _params(b))
    assert not torch.equal(a.layers[0].weight, c.layers[0].weight)


def test_construction_does_not_touch_the_global_rng():
    state = torch.get_rng_state()
    MLP([2, 30, 1], ensemble=3, seed=1)
    CNN((1, 8, 8), 3, channels=(2,), seed=2)
    CNN((1, 8, 8), 3, channels=(2,), ensemble=2, seed=2)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_default_init_matches_pytorch_after_manual_seed(dtype):
    """Documented draw order: the stream of nn.Linear / nn.Conv2d built after manual_seed."""
    with torch.random.fork_rng():
        torch.manual_seed(11)
        ref = nn.Sequential(
            nn.Linear(2, 100, dtype=dtype), nn.ReLU(), nn.Linear(100, 1, dtype=dtype)
        )
        torch.manual_seed(12)
        ref_cnn = [
            nn.Conv2d(3, 4, 3, padding=1, dtype=dtype),
            nn.Conv2d(4, 5, 3, padding=1, dtype=dtype),
            nn.Linear(5 * 2 * 2, 7, dtype=dtype),
        ]
    _assert_bit_identical(_params(MLP([2, 100, 1], seed=11, dtype=dtype)), _params(ref))
    cnn = CNN((3, 8, 8), 7, channels=(4, 5), kernel_size=3, seed=12, dtype=dtype)
    _assert_bit_identical(_params(cnn), [p.detach() for m in ref_cnn for p in m.parameters()])


def test_normal_init_draw_order_is_layer_by_layer_weight_then_bias():
    s = 0.3
    g = torch.Generator().manual_seed(21)
    expected = []
    for d_in, d_out in [(3, 4), (4, 2)]:
        expected.append(torch.empty(d_out, d_in).normal_(0.0, s, generator=g))
        expected.append(torch.empty(d_out).normal_(0.0, s, generator=g))
    _assert_bit_identical(_params(MLP([3, 4, 2], init=("normal", s), seed=21)), expected)


@pytest.mark.parametrize("init", ["default", ("normal", 0.5)])
@pytest.mark.parametrize("seed", [3, [9, 0, 41, 3]])
def test_ensemble_members_bit_identical_to_plain_mlps(init, seed):
    widths = [2, 17, 5, 1]
    ens = MLP(widths, ensemble=4, init=init, seed=seed, activation="tanh")
    seeds = [3, 4, 5, 6] if isinstance(seed, int) else seed
    assert ens.seeds == tuple(seeds)
    for k, s_k in enumerate(seeds):
        plain = MLP(widths, init=init, seed=s_k, activation="tanh")
        _assert_bit_identical([p[k] for p in _params(ens)], _params(plain))


@pytest.mark.parametrize("init", ["default", ("normal", 0.01)])
def test_ensemble_members_bit_identical_to_plain_cnns(init):
    kw = dict(channels=(3, 4), kernel_size=3, init=init, dtype=torch.float64)
    ens = CNN((2, 8, 8), 5, ensemble=3, seed=[7, 1, 7], **kw)
    for k, s_k in enumerate([7, 1, 7]):
        plain = CNN((2, 8, 8), 5, seed=s_k, **kw)
        _assert_bit_identical([p[k] for p in _params(ens)], _params(plain))
    # members 0 and 2 share a seed: identical; member 1 differs
    assert torch.equal(ens.convs[0].weight[0], ens.convs[0].weight[2])
    assert not torch.equal(ens.convs[0].weight[0], ens.convs[0].weight[1])


def test_standalone_ensemble_linear_members_match_nn_linear():
    layer = EnsembleLinear(3, 4, 6, seed=[8, 9, 10], dtype=torch.float64)
    for k, s in enumerate([8, 9, 10]):
        with torch.random.fork_rng():
            torch.manual_seed(s)
            ref = nn.Linear(4, 6, dtype=torch.float64)
        assert torch.equal(layer.weight[k], ref.weight)
        assert torch.equal(layer.bias[k], ref.bias)


def test_shlp_is_an_mlp_with_one_hidden_layer():
    net = SHLP(2, 20, init=("normal", 0.01), seed=4)
    assert isinstance(net, MLP) and net.widths == (2, 20, 1) and net.activation == "relu"
    _assert_bit_identical(_params(net), _params(MLP([2, 20, 1], init=("normal", 0.01), seed=4)))
    assert SHLP(784, 50, 10, ensemble=3).layers[1].weight.shape == (3, 10, 50)


# --------------------------------------------------------------------------------- statistics


def test_default_init_statistics():
    """U(±b), b = 1/sqrt(fan_in): support, mean, variance b²/3 and reaching the edge."""
    net = MLP([50, 400, 300], seed=0, dtype=torch.float64)
    for layer in net.layers:
        bound = 1 / math.sqrt(layer.in_features)
        for p in (layer.weight, layer.bias):
            x = p.detach().flatten()
            n = x.numel()
            assert x.abs().max() <= bound * (1 + 1e-12)
            # the max of n uniforms falls below b(1 - 25/n) with prob ~ e^{-25/2}
            assert x.abs().max() >= bound * (1 - 25 / n)
            # 5-sigma Monte-Carlo tolerances: sd(mean) = b/sqrt(3n); sd(var) = sqrt(4b^4/(45n))
            assert abs(x.mean().item()) < 5 * bound / math.sqrt(3 * n)
            var = x.pow(2).mean().item()
            assert abs(var - bound**2 / 3) < 5 * math.sqrt(4 * bound**4 / 45 / n)


@pytest.mark.parametrize("std", [0.01, 0.5])
def test_normal_init_statistics(std):
    net = MLP([50, 400, 300], init=("normal", std), seed=1, dtype=torch.float64)
    for p in net.parameters():
        x = p.detach().flatten()
        n = x.numel()
        # sd(mean) = s/sqrt(n); sd of the second moment about 0: s^2 sqrt(2/n)
        assert abs(x.mean().item()) < 5 * std / math.sqrt(n)
        assert abs(x.pow(2).mean().item() / std**2 - 1) < 5 * math.sqrt(2 / n)
    # a normal draw exceeds the 4-sigma level sometimes among 120 000 entries (P ~ 1 - e^{-7})
    assert net.layers[1].weight.abs().max() > 4 * std


def test_conv_default_init_uses_conv_fan_in():
    net = CNN((3, 16, 16), 2, channels=(64,), kernel_size=5, seed=3)
    w = net.convs[0].weight.detach()
    bound = 1 / math.sqrt(3 * 5 * 5)
    assert w.abs().max() <= bound * (1 + 1e-6)
    assert w.abs().max() >= bound * (1 - 25 / w.numel())


# ------------------------------------------------------------------------------ device/dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("ensemble", [None, 3])
def test_dtype_honoured(dtype, ensemble):
    mlp = MLP([2, 5, 1], ensemble=ensemble, dtype=dtype)
    cnn = CNN((1, 8, 8), 2, channels=(2,), kernel_size=3, ensemble=ensemble, dtype=dtype)
    for model in (mlp, cnn):
        assert {p.dtype for p in model.parameters()} == {dtype}
    assert mlp(torch.zeros(4, 2, dtype=dtype)).dtype == dtype


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), "meta"])
@pytest.mark.parametrize("ensemble", [None, 2])
def test_device_honoured(device, ensemble):
    mlp = MLP([2, 5, 1], ensemble=ensemble, device=device)
    cnn = CNN((1, 8, 8), 2, channels=(2,), kernel_size=3, ensemble=ensemble, device=device)
    for model in (mlp, cnn):
        assert {p.device for p in model.parameters()} == {torch.device(device)}
    out = mlp(torch.zeros(4, 2, device=device))
    assert out.device == torch.device(device)
    assert out.shape == ((4, 1) if ensemble is None else (2, 4, 1))


def test_init_is_device_independent():
    """Drawn on the CPU then moved: a model built on another device gets the same numbers."""
    a = MLP([2, 5, 1], ensemble=2, seed=3)
    b = MLP([2, 5, 1], ensemble=2, seed=3, device="cpu")
    _assert_bit_identical(_params(a), _params(b))
    if torch.cuda.is_available():  # pragma: no cover - no GPU on the CI machines
        c = MLP([2, 5, 1], ensemble=2, seed=3, device="cuda")
        _assert_bit_identical(_params(a), [p.cpu() for p in _params(c)])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dtype": torch.int64}, ValueError, "torch.int64"),  # right kind, wrong value
        ({"dtype": "float32"}, TypeError, "'float32'"),
        ({"device": "nonsense"}, ValueError, "'nonsense'"),
        ({"device": 1.5}, TypeError, "1.5"),
    ],
)
def test_bad_device_or_dtype(kwargs, error, match):
    with pytest.raises(error, match=match):
        MLP([2, 3, 1], **kwargs)
