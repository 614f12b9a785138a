"""Heads and losses: values against the textbook formulas, ensemble reductions, accuracy."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from thermotrain.models import (
    MLP,
    accuracy,
    binary_cross_entropy,
    classification_loss,
    cross_entropy,
    ensemble_accuracy,
    ensemble_loss,
    predict,
)

F64 = torch.float64
TIGHT = {"rtol": 1e-12, "atol": 1e-12}


def test_binary_cross_entropy_matches_bceloss_of_sigmoid():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 1, generator=g, dtype=F64) * 3
    y = torch.randint(0, 2, (50,), generator=g)
    expected = nn.BCELoss()(torch.sigmoid(z[:, 0]), y.to(F64))
    assert_close(binary_cross_entropy(z, y), expected, **TIGHT)
    assert_close(binary_cross_entropy(z[:, 0], y.float()), expected, **TIGHT)
    assert_close(classification_loss(z, y), expected, **TIGHT)
    assert_close(binary_cross_entropy(z, y, "sum"), 50 * expected, **TIGHT)
    assert binary_cross_entropy(z, y, "none").shape == (50,)


def test_binary_cross_entropy_is_stable_for_large_logits():
    z = torch.tensor([[100.0], [-100.0], [100.0], [-100.0]])
    y = torch.tensor([1, 0, 0, 1])
    per_sample = binary_cross_entropy(z, y, reduction="none")
    assert torch.isfinite(per_sample).all()
    assert_close(per_sample, torch.tensor([0.0, 0.0, 100.0, 100.0]), rtol=1e-6, atol=1e-6)


def test_cross_entropy_matches_log_softmax():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(30, 4, generator=g, dtype=F64)
    y = torch.randint(0, 4, (30,), generator=g)
    expected = -(z.gather(1, y[:, None])[:, 0] - torch.logsumexp(z, dim=1)).mean()
    assert_close(cross_entropy(z, y), expected, **TIGHT)
    assert_close(classification_loss(z, y), expected, **TIGHT)


@pytest.mark.parametrize("n_out", [1, 3])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ensemble_loss_is_per_member_loss(n_out, shared, reduction):
    k, b = 4, 9
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(k, b, n_out, generator=g, dtype=F64)
    y = torch.randint(0, max(n_out, 2), (b,) if shared else (k, b), generator=g)
    out = ensemble_loss(logits, y, reduction)
    assert out.shape == ((k, b) if reduction == "none" else (k,))
    for j in range(k):
        yj = y if shared else y[j]
        assert_close(out[j], classification_loss(logits[j], yj, reduction), **TIGHT)


def test_gradient_of_summed_ensemble_loss_is_each_members_own_mean_loss_gradient():
    """The documented objective: sum over members (a mean would divide each gradient by K)."""
    k = 3
    ens = MLP([2, 8, 3], ensemble=k, seed=0, dtype=F64)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(k, 6, 2, generator=g, dtype=F64)
    y = torch.randint(0, 3, (k, 6), generator=g)
    ensemble_loss(ens(x), y).sum().backward()
    w = ens.layers[0].weight
    for j in range(k):
        wj = w.detach()[j].clone().requires_grad_(True)
        h = torch.relu(x[j] @ wj.T + ens.layers[0].bias.detach()[j])
        logits = h @ ens.layers[1].weight.detach()[j].T + ens.layers[1].bias.detach()[j]
        (grad,) = torch.autograd.grad(cross_entropy(logits, y[j]), wj)
        assert_close(w.grad[j], grad, **TIGHT)


def test_predict_and_accuracy_binary_threshold():
    z = torch.tensor([[-1.0], [0.0], [0.5], [2.0]])
    assert predict(z).tolist() == [0, 0, 1, 1]  # sigmoid(0) = 0.5 is not > 0.5
    assert predict(z[:, 0]).tolist() == [0, 0, 1, 1]
    y = torch.tensor([0, 0, 1, 0])
    assert accuracy(z, y).item() == pytest.approx(0.75)
    assert accuracy(z, y.float()).item() == pytest.approx(0.75)
    assert accuracy(z, y.bool()).item() == pytest.approx(0.75)


def test_predict_and_accuracy_multiclass():
    z = torch.tensor([[0.1, 0.9, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
    assert predict(z).tolist() == [1, 0, 2]
    assert accuracy(z, torch.tensor([1, 2, 2])).item() == pytest.approx(2 / 3)


@pytest.mark.parametrize("n_out", [1, 4])
def test_ensemble_accuracy_per_member(n_out):
    k, b = 5, 40
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(k, b, n_out, generator=g)
    y = torch.randint(0, max(n_out, 2), (k, b), generator=g)
    acc = ensemble_accuracy(logits, y)
    assert acc.shape == (k,)
    expected = torch.stack([accuracy(logits[j], y[j]) for j in range(k)])
    assert torch.equal(acc, expected)
    assert len(set(acc.tolist())) > 1  # members really differ
    shared = ensemble_accuracy(logits, y[0])
    assert torch.equal(shared, torch.stack([accuracy(logits[j], y[0]) for j in range(k)]))


@pytest.mark.parametrize(
    ("fn", "args", "error", "match"),
    [
        (binary_cross_entropy, (torch.zeros(4, 2), torch.zeros(4)), ValueError, r"\(4, 2\)"),
        (binary_cross_entropy, (torch.zeros(4, 1), torch.zeros(5)), ValueError, r"\(5,\)"),
        (cross_entropy, (torch.zeros(4, 3), torch.zeros(4)), TypeError, "torch.float32"),
        (cross_entropy, (torch.zeros(4, 1), torch.zeros(4).long()), ValueError, "C >= 2"),
        (classification_loss, (torch.zeros(2, 4, 1), torch.zeros(4)), ValueError, "ensemble_loss"),
        (classification_loss, (torch.zeros(4, 1), [0, 1, 0, 1]), TypeError, "list"),
        (ensemble_loss, (torch.zeros(4, 1), torch.zeros(4)), ValueError, r"\(K, B, out\)"),
        (ensemble_loss, (torch.zeros(2, 4, 1), torch.zeros(3, 4)), ValueError, r"\(3, 4\)"),
        (ensemble_accuracy, (torch.zeros(2, 4, 3), torch.zeros(5)), ValueError, r"\(5,\)"),
        (accuracy, (torch.zeros(4, 3), torch.zeros(3)), ValueError, r"\(3,\)"),
    ],
)
def test_loss_errors(fn, args, error, match):
    with pytest.raises(error, match=match):
        fn(*args)


def test_bad_reduction():
    with pytest.raises(ValueError, match="'avg'"):
        ensemble_loss(torch.zeros(2, 3, 1), torch.zeros(3), reduction="avg")
    with pytest.raises(ValueError, match="'avg'"):
        binary_cross_entropy(torch.zeros(3, 1), torch.zeros(3), reduction="avg")
