"""The fused kernel's shifted gradient (``loss_and_grad(shift=...)``) and its finite-difference
Hutchinson record (``fd_laplacian_sums``, the configurational temperature's) against the same
quantities computed with θ perturbed by torch: θ and ``.grad`` untouched, bad arguments clear
errors."""

from __future__ import annotations

import pytest
import torch

from thermotrain.models import MLP, fused

needs_kernel = pytest.mark.skipif(fused._library() is None, reason="no C compiler here")

CASES = [  # widths, activation, ensemble, dtype
    ([2, 100, 1], "relu", 5, torch.float32),
    ([2, 7, 1], "tanh", None, torch.float64),
    ([3, 9, 5, 4], "tanh", 3, torch.float64),
    ([6, 12, 10, 1], "relu", 4, torch.float32),
]


def _setup(widths, act, k, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    model = MLP(widths, activation=act, ensemble=k, seed=1, dtype=dtype)
    x = torch.randn(40, widths[0], generator=g, dtype=dtype)
    y = torch.randint(0, max(2, widths[-1]), (40,), generator=g)
    if widths[-1] == 1:
        y = y.to(dtype)
    idx = torch.randint(0, 40, (k or 1, 12), generator=g)
    if k is None:
        idx = idx[0]
    return model, x, y, idx, g


def _gradient_at(model, x, y, idx, shift):
    """∇ at θ + α v by perturbing θ with torch (and restoring it)."""
    params = list(model.parameters())
    saved = [p.detach().clone() for p in params]
    directions, alpha = shift
    with torch.no_grad():
        for p in params:
            if p in directions:
                p.add_(directions[p], alpha=alpha)
    loss = fused.loss_and_grad(model, x, y, idx)
    grads = [p.grad.clone() for p in params]
    with torch.no_grad():
        for p, s in zip(params, saved, strict=True):
            p.copy_(s)
    return loss, grads


def _tol(dtype):
    return {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12,
                                                                          "atol": 1e-13}


@needs_kernel
@pytest.mark.parametrize("widths,act,k,dtype", CASES)
def test_shifted_gradient_equals_the_gradient_at_the_shifted_point(widths, act, k, dtype):
    """Only some parameters shifted (the last layer's bias not): the kernel's gradient at
    θ + αv equals the gradient after perturbing θ, to rounding (θ + αv may be one fused
    multiply-add in C); θ is not written."""
    model, x, y, idx, g = _setup(widths, act, k, dtype)
    params = list(model.parameters())
    directions = {p: torch.randn(p.shape, generator=g, dtype=dtype) for p in params[:-1]}
    before = [p.detach().clone() for p in params]
    loss_ref, grads_ref = _gradient_at(model, x, y, idx, (directions, 0.3))
    loss = fused.loss_and_grad(model, x, y, idx, shift=(directions, 0.3))
    torch.testing.assert_close(loss, loss_ref, **_tol(dtype))
    for p, ref in zip(params, grads_ref, strict=True):
        torch.testing.assert_close(p.grad, ref, **_tol(dtype))
    for p, b in zip(params, before, strict=True):
        assert torch.equal(p, b)
    # the unshifted call afterwards is the plain gradient again (no state left behind)
    fused.loss_and_grad(model, x, y, idx, shift=(directions, 0.0))
    zero = [p.grad.clone() for p in params]
    fused.loss_and_grad(model, x, y, idx)
    for p, z in zip(params, zero, strict=True):
        assert torch.equal(p.grad, z)


def _probe(bytes_, k, row, scale, dtype):
    """The member-major probe rows the bytes stand for (bit f % 8 of byte f // 8: −scale)."""
    f = torch.arange(k * row)
    bits = (bytes_[f // 8] >> (f % 8)) & 1
    return ((1 - 2 * bits) * scale).to(dtype).view(k, row)


@needs_kernel
@pytest.mark.parametrize("widths,act,k,dtype", CASES)
@pytest.mark.parametrize("central", [False, True])
def test_fd_laplacian_sums_equal_the_record_by_perturbing_theta(widths, act, k, dtype,
                                                                central):
    """Groups: the first layer in group 1, the others in group 0, the last bias in none (not
    shifted, not summed), columns in a row of another order than the model's: ‖∇_g L‖² of
    the gradient in .grad and Σ u (∇L(θ + αu) − ∇L(θ) or ∇L(θ − αu)) per member and group
    equal those computed with torch from θ perturbed, to rounding; θ and .grad untouched."""
    model, x, y, idx, g = _setup(widths, act, k, dtype, seed=1)
    members = k or 1
    params = list(model.parameters())
    grouped = params[:-1]
    groups = {p: (1 if i < 2 else 0) for i, p in enumerate(grouped)}
    sizes = [p.numel() // members for p in grouped]
    order = list(reversed(range(len(grouped))))  # columns in reverse parameter order
    columns, col = {}, 3  # and an unused lead of 3 columns
    for i in order:
        columns[grouped[i]] = col
        col += sizes[i]
    row = col + 2
    bytes_ = torch.randint(0, 256, ((members * row + 7) // 8 + 1,), generator=g)
    scale, alpha = 7.0, 1e-3 / 7.0 if dtype == torch.float64 else 1e-2 / 7.0
    probe = _probe(bytes_, members, row, scale, dtype)
    directions = {p: probe[:, columns[p]:columns[p] + sizes[i]].reshape(p.shape)
                  for i, p in enumerate(grouped)}
    fused.loss_and_grad(model, x, y, idx)
    g0 = [p.grad.clone() for p in params]
    before = [p.detach().clone() for p in params]
    out = torch.empty(2, members, 2, dtype=dtype)
    fused.fd_laplacian_sums(model, x, y, idx, bytes_, row, columns, groups, scale, alpha, out,
                            central=central)
    for p, b, g_ in zip(params, before, g0, strict=True):
        assert torch.equal(p, b) and torch.equal(p.grad, g_)
    _, plus = _gradient_at(model, x, y, idx, (directions, alpha))
    ref_minus = _gradient_at(model, x, y, idx, (directions, -alpha))[1] if central else g0
    ref = torch.zeros(2, members, 2, dtype=torch.float64)
    for i, p in enumerate(grouped):
        gi = groups[p]
        ref[0, :, gi] += g0[i].double().square().reshape(members, -1).sum(1)
        ref[1, :, gi] += (directions[p].double() * (plus[i].double() - ref_minus[i].double())
                          ).reshape(members, -1).sum(1)
    # the differences cancel: compare against the scale of the terms summed
    lap_scale = sum((directions[p].double().abs() * plus[i].double().abs()).reshape(
        members, -1).sum(1) for i, p in enumerate(grouped)).max()
    eps = 1e-6 if dtype == torch.float32 else 1e-14
    torch.testing.assert_close(out[0].double(), ref[0], rtol=eps * 10, atol=0)
    torch.testing.assert_close(out[1].double(), ref[1], rtol=0, atol=eps * 10 * float(lap_scale))


@needs_kernel
def test_shift_and_fd_sums_arguments_are_clear_errors():
    model, x, y, idx, g = _setup([2, 8, 1], "relu", 3, torch.float32)
    params = list(model.parameters())
    fused.loss_and_grad(model, x, y, idx)
    with pytest.raises(ValueError, match="direction of a parameter of shape"):
        fused.loss_and_grad(model, x, y, idx, shift=({params[0]: torch.zeros(3, 8)}, 0.1))
    with pytest.raises(ValueError, match="not the model's parameters"):
        fused.loss_and_grad(model, x, y, idx, shift=({torch.zeros(1): torch.zeros(1)}, 0.1))
    with pytest.raises(TypeError, match="shift must be a tuple"):
        fused.loss_and_grad(model, x, y, idx, shift={params[0]: torch.zeros_like(params[0])})
    with pytest.raises(ValueError, match="contiguous"):  # a transposed direction
        w = params[0]
        fused.loss_and_grad(model, x, y, idx,
                            shift=({w: torch.zeros(w.shape[0], w.shape[2], w.shape[1]).mT},
                                   0.1))
    groups = {p: 0 for p in params}
    columns, col = {}, 0
    for p in params:
        columns[p] = col
        col += p.numel() // 3
    good = torch.randint(0, 256, ((3 * col + 7) // 8,))
    out = torch.empty(2, 3, 1)
    fused.fd_laplacian_sums(model, x, y, idx, good, col, columns, groups, 1.0, 0.1, out)
    with pytest.raises(ValueError, match="probe_bytes"):
        fused.fd_laplacian_sums(model, x, y, idx, good[:-2], col, columns, groups, 1.0, 0.1,
                                out)
    with pytest.raises(ValueError, match="out must be"):
        fused.fd_laplacian_sums(model, x, y, idx, good, col, columns, groups, 1.0, 0.1,
                                torch.empty(2, 3, 2))
    with pytest.raises(ValueError, match="columns must be given"):
        fused.fd_laplacian_sums(model, x, y, idx, good, col, dict(list(columns.items())[1:]),
                                groups, 1.0, 0.1, out)
    with pytest.raises(ValueError, match="column of a parameter"):
        fused.fd_laplacian_sums(model, x, y, idx, good, col, {**columns, params[0]: col},
                                groups, 1.0, 0.1, out)
    with pytest.raises(ValueError, match="groups must map"):
        fused.fd_laplacian_sums(model, x, y, idx, good, col, columns,
                                {**groups, params[0]: -1}, 1.0, 0.1, out)
    with pytest.raises(ValueError, match="idx must index"):
        fused.fd_laplacian_sums(model, x, y, idx + 100, good, col, columns, groups, 1.0, 0.1,
                                out)
