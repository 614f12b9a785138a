"""Per-sample gradients and Hessians (torch.func) against plain autograd, plain and ensemble."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from thermotrain import thermo
from thermotrain.models import MLP, ensemble_loss, unstack


def _autograd_rows(model, loss, x, y, penalty=None):
    rows = []
    for i in range(x.shape[0]):  # the slow reference: one backward per sample
        model.zero_grad()
        value = loss(model(x[i:i + 1]), y[i:i + 1])
        if penalty is not None:
            value = value + penalty(dict(model.named_parameters()))
        value.backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    return torch.stack(rows)


def test_per_sample_gradients_equal_one_backward_per_sample():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    x, y = torch.randn(7, 3), torch.randn(7, 2)

    def pen(p):
        return 0.1 * sum(t.square().sum() for t in p.values())

    g = thermo.per_sample_gradients(net, F.mse_loss, x, y, penalty=pen)
    assert g.shape == (7, sum(p.numel() for p in net.parameters()))
    torch.testing.assert_close(g, _autograd_rows(net, F.mse_loss, x, y, pen))
    # chunked vmap gives the same rows
    torch.testing.assert_close(
        thermo.per_sample_gradients(net, F.mse_loss, x, y, penalty=pen, chunk_size=3), g)


def test_ensemble_per_member_equals_plain_members():
    ens = MLP([2, 4, 3], ensemble=3, seed=0)
    x, y = torch.randn(6, 2), torch.randint(0, 3, (6,))
    g = thermo.per_sample_gradients(ens, ensemble_loss, x, y, ensemble_dim=0)
    h = thermo.hessian(ens, ensemble_loss, x, y, ensemble_dim=0)
    assert g.shape[:2] == (3, 6) and h.shape == (3, g.shape[2], g.shape[2])
    for k, member in enumerate(unstack(ens)):
        def loss(out, t):
            return F.cross_entropy(out, t)
        ref = _autograd_rows(member, loss, x, y)
        torch.testing.assert_close(g[k], ref, rtol=1e-5, atol=1e-6)
        flat = thermo.flatten_parameters(member).detach()
        f = thermo.full_loss(member, loss, x, y)
        torch.testing.assert_close(h[k], torch.autograd.functional.hessian(f, flat),
                                   rtol=1e-4, atol=1e-6)


def test_hessian_of_a_quadratic_is_exact():
    # L(w) = mean_i (x_i·w − y_i)² has Hessian 2 XᵀX / N exactly.
    net = torch.nn.Linear(3, 1, bias=False).double()
    x, y = torch.randn(50, 3, dtype=torch.float64), torch.randn(50, 1, dtype=torch.float64)
    torch.testing.assert_close(thermo.hessian(net, F.mse_loss, x, y), 2 * x.T @ x / 50)
    g = thermo.per_sample_gradients(net, F.mse_loss, x, y)
    w = net.weight.detach().reshape(-1)
    torch.testing.assert_close(g, 2 * (x @ w - y[:, 0]).unsqueeze(1) * x)


def test_bad_input_is_named():
    net = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match="same non-zero number of samples"):
        thermo.per_sample_gradients(net, F.mse_loss, torch.zeros(3, 2), torch.zeros(4, 1))
    with pytest.raises(ValueError, match="ensemble_dim must be None or 0"):
        thermo.per_sample_gradients(net, F.mse_loss, torch.zeros(3, 2), torch.zeros(3, 1),
                                    ensemble_dim=1)
    with pytest.raises(TypeError, match="nn.Module"):
        thermo.hessian(lambda x: x, F.mse_loss, torch.zeros(3, 2), torch.zeros(3, 1))
