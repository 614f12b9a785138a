"""The fused ensemble-MLP gradient (models.fused) against autograd, and its contract."""

from __future__ import annotations

import pytest
import torch

from thermotrain.models import MLP, classification_loss, ensemble_loss, fused

needs_kernel = pytest.mark.skipif(fused._library() is None, reason="no C compiler here")

CASES = [
    # widths, activation, ensemble, dtype
    ([2, 100, 1], "relu", 5, torch.float32),   # the paper's SHLP, binary head
    ([2, 7, 1], "relu", None, torch.float64),  # a plain (non-ensemble) net
    ([3, 9, 5, 4], "tanh", 3, torch.float64),  # deeper, tanh, softmax head
    ([4, 20, 3], "relu", 2, torch.float32),    # in = 4 (its own loop), 3 classes
    ([6, 12, 10, 1], "tanh", 4, torch.float32),  # in > 4 and out < 8 layers
    ([1, 9, 2], "relu", 2, torch.float64),     # in = 1
]


def _autograd(model, x, y, idx):
    model.zero_grad(set_to_none=True)
    if model.ensemble_size is None:
        loss = classification_loss(model(x[idx]), y[idx])
    else:
        loss = ensemble_loss(model(x[idx]), y[idx])
    loss.sum().backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@needs_kernel
@pytest.mark.parametrize("widths,act,k,dtype", CASES)
def test_fused_loss_and_gradient_equal_autograd(widths, act, k, dtype):
    g = torch.Generator().manual_seed(0)
    model = MLP(widths, activation=act, ensemble=k, seed=1, dtype=dtype)
    n = 40
    x = torch.randn(n, widths[0], generator=g, dtype=dtype)
    y = torch.randint(0, max(2, widths[-1]), (n,), generator=g)
    idx = torch.randint(0, n, (k or 1, 11), generator=g)
    idx = idx[0] if k is None else idx
    assert fused.supports(model, x, y)
    loss, grads = _autograd(model, x, y, idx)
    got = fused.loss_and_grad(model, x, y, idx)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12,
                                                                         atol=1e-14)
    torch.testing.assert_close(got, loss, **tol)
    for p, ref in zip(model.parameters(), grads, strict=True):
        torch.testing.assert_close(p.grad, ref, **tol)
    assert any(r.abs().max() > 1e-3 for r in grads)  # not a vacuous comparison


@needs_kernel
def test_fused_gradient_overwrites_and_does_not_depend_on_threads_or_k():
    x = torch.randn(30, 2, generator=torch.Generator().manual_seed(1))
    y = (x[:, 0] > 0).long()
    idx = torch.randint(0, 30, (6, 8), generator=torch.Generator().manual_seed(2))
    threads = torch.get_num_threads()
    out = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            m = MLP([2, 50, 1], ensemble=6, seed=3)
            for p in m.parameters():
                p.grad = torch.full_like(p, 7.0)  # stale: must be overwritten
            fused.loss_and_grad(m, x, y, idx)
            out.append([p.grad.clone() for p in m.parameters()])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*out, strict=True):
        assert torch.equal(a, b)
    # member 4 alone equals member 4 of the ensemble
    single = MLP([2, 50, 1], seed=7)  # ensemble seeds 3..8: member 4 has seed 7
    fused.loss_and_grad(single, x, y, idx[4])
    for p, g in zip(single.parameters(), out[0], strict=True):
        assert torch.equal(p.grad, g[4])


def test_supports_declines_what_it_cannot_do():
    x, y = torch.randn(10, 2), torch.zeros(10)
    assert not fused.supports(MLP([3, 5, 1]), x, y)  # wrong input width
    assert not fused.supports(MLP([2, 5, 1], dtype=torch.float16), x, y)
    assert not fused.supports(MLP([2, 300, 300, 1]), x, y)  # large: autograd's GEMMs win
    assert not fused.supports(torch.nn.Linear(2, 1), x, y)


@needs_kernel
def test_bad_indices_and_targets_are_clear_errors():
    m = MLP([2, 5, 3], ensemble=2)
    x, y = torch.randn(10, 2), torch.randint(0, 3, (10,))
    with pytest.raises(ValueError, match=r"idx must index the 10 rows of x, got values in"):
        fused.loss_and_grad(m, x, y, torch.full((2, 4), 10))
    with pytest.raises(ValueError, match=r"idx must be int64 of shape \(K=2, B\)"):
        fused.loss_and_grad(m, x, y, torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\)"):
        fused.loss_and_grad(m, x, torch.full((10,), 5), torch.zeros(2, 4, dtype=torch.int64))


@needs_kernel
@pytest.mark.parametrize("widths", [[2, 30, 1], [2, 30, 3]])
def test_saturated_logits_give_finite_gradients_equal_to_autograd(widths):
    # |logits| of hundreds: exp(-z) overflows float32; the gradient must stay finite
    model = MLP(widths, ensemble=2, seed=4)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(40.0)
    x = torch.randn(30, 2, generator=torch.Generator().manual_seed(3)) * 5
    y = torch.randint(0, max(2, widths[-1]), (30,), generator=torch.Generator().manual_seed(4))
    # batches of 64: the loss loop is vectorized (where a division of inf became NaN)
    idx = torch.randint(0, 30, (2, 64), generator=torch.Generator().manual_seed(5))
    loss, grads = _autograd(model, x, y, idx)
    with torch.no_grad():
        assert float(model(x).abs().max()) > 100  # really saturated
    got = fused.loss_and_grad(model, x, y, idx)
    torch.testing.assert_close(got, loss, rtol=1e-5, atol=1e-4)
    for p, ref in zip(model.parameters(), grads, strict=True):
        assert torch.isfinite(p.grad).all()
        torch.testing.assert_close(p.grad, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("widths", [[2, 9, 1], [2, 300, 300, 1]])  # fused, then autograd
def test_gradient_fn_leaves_the_ensemble_gradient_either_way(widths):
    model = MLP(widths, ensemble=2, seed=5)
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(6))
    y = (x[:, 0] > 0).long()
    idx = torch.randint(0, 20, (2, 8), generator=torch.Generator().manual_seed(7))
    _, ref = _autograd(model, x, y, idx)
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)  # stale: must not leak into the result
    fused.gradient_fn(model, x, y)(idx)
    for p, r in zip(model.parameters(), ref, strict=True):
        torch.testing.assert_close(p.grad, r, rtol=1e-5, atol=1e-6)


@needs_kernel
def test_prepared_call_follows_replaced_parameters_gradients_and_data():
    """The kernel's prepared pointers are keyed on the registered tensors: a layer weight
    replaced by a new Parameter, .grad set to None, the data changed in place or replaced —
    each next call equals autograd on what the model and data are now (never stale
    addresses)."""
    g = torch.Generator().manual_seed(0)
    model = MLP([3, 9, 1], ensemble=2, seed=1)
    x = torch.randn(30, 3, generator=g)
    y = torch.randint(0, 2, (30,), generator=g).float()
    idx = torch.randint(0, 30, (2, 8), generator=g)

    def check(xx):
        loss = fused.loss_and_grad(model, xx, y, idx)
        grads = [p.grad.clone() for p in model.parameters()]
        ref_loss, ref = _autograd(model, xx, y, idx)
        torch.testing.assert_close(loss, ref_loss)
        for a, b in zip(grads, ref, strict=True):
            torch.testing.assert_close(a, b)

    check(x)
    layer = model.layers[0]
    layer.weight = torch.nn.Parameter(torch.randn(layer.weight.shape, generator=g))
    check(x)
    model.layers[1].bias.grad = None
    check(x)
    with torch.no_grad():
        x.mul_(2.0)  # in place: the kernel's copy of the data must follow
    check(x)
    check(torch.randn(30, 3, generator=g))


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_member_with_a_non_finite_parameter_gets_a_nan_loss_as_with_autograd(dtype):
    """A NaN first-layer weight feeds a ReLU unit that the kernel's v > 0 ? v : 0 would
    switch off (a finite loss, the member's failure unseen); an infinite bias likewise: the
    kernel gives such a member a NaN loss, as autograd does, and the other members' losses
    and gradients are those of the clean model bit for bit."""
    g = torch.Generator().manual_seed(0)
    model = MLP([2, 8, 1], ensemble=3, seed=1, dtype=dtype)
    x = torch.randn(30, 2, generator=g, dtype=dtype)
    y = torch.randint(0, 2, (30,), generator=g).to(dtype)
    idx = torch.randint(0, 30, (3, 10), generator=g)
    clean = fused.loss_and_grad(model, x, y, idx)
    clean_grads = [p.grad.clone() for p in model.parameters()]
    for where, value in (("weight", float("nan")), ("bias", float("inf"))):
        with torch.no_grad():
            t = getattr(model.layers[0], where)
            saved = t[1].clone()
            t[1].view(-1)[0] = value
        loss = fused.loss_and_grad(model, x, y, idx)
        assert torch.isnan(loss[1]) and torch.isnan(_autograd(model, x, y, idx)[0][1])
        fused.loss_and_grad(model, x, y, idx)
        for k in (0, 2):
            assert loss[k] == clean[k]
            for p, c in zip(model.parameters(), clean_grads, strict=True):
                assert torch.equal(p.grad[k], c[k])
        with torch.no_grad():
            t[1] = saved
