"""stack / unstack: K plain models <-> one ensemble, both ways, as copies."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import stack_module_state
from torch.testing import assert_close

from thermotrain.models import CNN, MLP, stack, unstack

F64 = torch.float64


def _train_a_bit(model, x, y):
    """Move the parameters away from their seeded init (so copies are really tested)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


MAKERS = {
    "mlp": lambda s, **kw: MLP([3, 6, 2], seed=s, dtype=F64, **kw),
    "cnn": lambda s, **kw: CNN((2, 6, 6), 2, channels=(3,), kernel_size=3, seed=s, dtype=F64, **kw),
}
INPUTS = {"mlp": (4, 3), "cnn": (4, 2, 6, 6)}


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_stack_then_unstack_round_trip(kind):
    models = [MAKERS[kind](s) for s in (8, 2, 5)]
    x = torch.randn(INPUTS[kind], dtype=F64)
    for m in models:
        _train_a_bit(m, x, torch.ones(4, 2, dtype=F64))
    ens = stack(models)
    assert type(ens) is type(models[0]) and ens.ensemble_size == 3
    assert ens.seeds == (8, 2, 5)
    # parameters copied bit for bit, in the layout of torch.func.stack_module_state
    stacked, _ = stack_module_state(models)
    ens_params = dict(ens.named_parameters())
    assert list(stacked) == list(ens_params)
    for name, p in stacked.items():
        assert torch.equal(ens_params[name], p)
    # the ensemble computes the members
    out = ens(x)
    for j, m in enumerate(models):
        assert_close(out[j], m(x), rtol=1e-12, atol=1e-12)
    # and unstack gives them back
    back = unstack(ens)
    assert len(back) == 3
    for m, b in zip(models, back, strict=True):
        assert type(b) is type(m) and b.ensemble_size is None and b.seeds == m.seeds
        for p, q in zip(m.parameters(), b.parameters(), strict=True):
            assert torch.equal(p, q) and q.requires_grad


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_unstack_then_stack_round_trip(kind):
    ens = MAKERS[kind]([4, 1], ensemble=2)
    members = unstack(ens)
    for j, m in enumerate(members):
        fresh = MAKERS[kind]([4, 1][j])
        for p, q in zip(m.parameters(), fresh.parameters(), strict=True):
            assert torch.equal(p, q)
    again = stack(members)
    for p, q in zip(ens.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)


def test_stack_and_unstack_copy_rather_than_share():
    models = [MLP([2, 3, 1], seed=s) for s in (0, 1)]
    ens = stack(models)
    with torch.no_grad():
        models[0].layers[0].weight.add_(1.0)
    assert not torch.equal(ens.layers[0].weight[0], models[0].layers[0].weight)
    members = unstack(ens)
    with torch.no_grad():
        ens.layers[0].weight.zero_()
    assert members[1].layers[0].weight.abs().sum() > 0


def test_member_copies_requires_grad_and_checks_index():
    ens = MLP([2, 3, 1], ensemble=2)
    ens.layers[0].requires_grad_(False)
    m = ens.member(1)
    assert [p.requires_grad for p in m.parameters()] == [False, False, True, True]
    with pytest.raises(ValueError, match=r"\[0, 2\), got 2"):
        ens.member(2)
    with pytest.raises(ValueError, match="plain MLP"):
        MLP([2, 3, 1]).member(0)


def test_stack_errors():
    with pytest.raises(ValueError, match="empty"):
        stack([])
    with pytest.raises(TypeError, match="Linear"):
        stack([nn.Linear(2, 1)])
    with pytest.raises(TypeError, match="list"):
        stack(MLP([2, 3, 1]))
    with pytest.raises(ValueError, match="already an ensemble of 2"):
        stack([MLP([2, 3, 1], ensemble=2)])
    with pytest.raises(ValueError, match=r"models\[1\] is MLP\(\{'widths': \[2, 4, 1\]"):
        stack([MLP([2, 3, 1]), MLP([2, 4, 1])])
    with pytest.raises(ValueError, match="one architecture"):
        stack([MLP([2, 3, 1]), MLP([2, 3, 1], activation="tanh")])
    with pytest.raises(ValueError, match="one architecture"):
        stack([MLP([784, 3, 10]), CNN(channels=(3,))])
    with pytest.raises(ValueError, match="torch.float64"):
        stack([MLP([2, 3, 1]), MLP([2, 3, 1], dtype=F64)])


def test_unstack_errors():
    with pytest.raises(ValueError, match="ensemble=None"):
        unstack(MLP([2, 3, 1]))
    with pytest.raises(TypeError, match="Sequential"):
        unstack(nn.Sequential(nn.Linear(2, 1)))


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_config_state_dict_and_deepcopy_rebuild_the_same_model(kind):
    import copy
    import pickle

    ens = MAKERS[kind]([3, 6], ensemble=2)
    x = torch.randn(INPUTS[kind], dtype=F64)
    _train_a_bit(ens, x, torch.ones(2, 4, 2, dtype=F64))
    rebuilt = type(ens)(**ens.config(), ensemble=2, seed=0, dtype=F64)
    assert not torch.equal(rebuilt(x), ens(x))
    rebuilt.load_state_dict(ens.state_dict())
    for other in (rebuilt, copy.deepcopy(ens), pickle.loads(pickle.dumps(ens))):
        assert torch.equal(other(x), ens(x))
