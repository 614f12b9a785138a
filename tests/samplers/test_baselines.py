"""SGD and Adam with per-member hyperparameters: with floats they are torch's own step (bit
for bit); with (K,) tensors member k follows torch's update with its own values (to rounding:
the per-member multiplies are separate operations); bad values are clear errors."""

from __future__ import annotations

import copy

import pytest
import torch

from thermotrain.samplers import MemberAdam, MemberSGD

K, STEPS = 3, 12


def _grads(step: int, shapes):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(s, generator=g) for s in shapes]


def _ensemble_vs_members(make_member, make_plain, steps=STEPS):
    """Train stacked (K, ...) parameters with ``make_member`` and each member alone with
    ``make_plain(k, params)`` on the same gradients; return both final parameter sets."""
    torch.manual_seed(0)
    stacked = [torch.randn(K, 4, 3).requires_grad_(), torch.randn(K, 3).requires_grad_()]
    alone = [[p[k].detach().clone().requires_grad_() for p in stacked] for k in range(K)]
    opt = make_member(stacked)
    opts = [make_plain(k, ps) for k, ps in enumerate(alone)]
    for step in range(steps):
        grads = _grads(step, [p.shape for p in stacked])
        for p, g in zip(stacked, grads, strict=True):
            p.grad = g.clone()
        for k, ps in enumerate(alone):
            for p, g in zip(ps, grads, strict=True):
                p.grad = g[k].clone()
        opt.step()
        for o in opts:
            o.step()
    return stacked, alone


LRS = torch.tensor([0.01, 0.05, 0.2], dtype=torch.float64)


@pytest.mark.parametrize("nesterov", [False, True])
def test_member_sgd_member_k_is_a_separate_torch_sgd(nesterov):
    mom = torch.tensor([0.0, 0.5, 0.9], dtype=torch.float64)  # 0: a plain gradient step
    wd = torch.tensor([0.0, 1e-3, 1e-2], dtype=torch.float64)
    damp = 0.0 if nesterov else 0.1
    if nesterov:
        mom = torch.tensor([0.3, 0.5, 0.9], dtype=torch.float64)  # nesterov needs momentum > 0
    stacked, alone = _ensemble_vs_members(
        lambda ps: MemberSGD(ps, lr=LRS, momentum=mom, dampening=damp, weight_decay=wd,
                             nesterov=nesterov),
        lambda k, ps: torch.optim.SGD(ps, lr=float(LRS[k]), momentum=float(mom[k]),
                                      dampening=damp, weight_decay=float(wd[k]),
                                      nesterov=nesterov))
    for k in range(K):
        for p, q in zip(stacked, alone[k], strict=True):
            torch.testing.assert_close(p[k], q, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(stacked[0][0], stacked[0][2])  # the members really differ


def test_member_adam_member_k_is_a_separate_torch_adam():
    b1 = torch.tensor([0.8, 0.9, 0.95], dtype=torch.float64)
    eps = torch.tensor([1e-8, 1e-6, 1e-3], dtype=torch.float64)
    wd = torch.tensor([0.0, 1e-3, 1e-2], dtype=torch.float64)
    stacked, alone = _ensemble_vs_members(
        lambda ps: MemberAdam(ps, lr=LRS, betas=(b1, 0.99), eps=eps, weight_decay=wd),
        lambda k, ps: torch.optim.Adam(ps, lr=float(LRS[k]), betas=(float(b1[k]), 0.99),
                                       eps=float(eps[k]), weight_decay=float(wd[k])))
    for k in range(K):
        for p, q in zip(stacked, alone[k], strict=True):
            torch.testing.assert_close(p[k], q, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("make,plain", [
    (lambda ps: MemberAdam(ps, lr=0.01), lambda ps: torch.optim.Adam(ps, lr=0.01)),
    (lambda ps: MemberSGD(ps, lr=0.01, momentum=0.9), lambda ps: torch.optim.SGD(
        ps, lr=0.01, momentum=0.9)),
], ids=["Adam", "SGD"])
def test_with_floats_they_are_torchs_step_bit_for_bit(make, plain):
    torch.manual_seed(1)
    a = [torch.randn(5, 4).requires_grad_()]
    b = [a[0].detach().clone().requires_grad_()]
    oa, ob = make(a), plain(b)
    for step in range(5):
        g = _grads(step, [(5, 4)])[0]
        a[0].grad, b[0].grad = g.clone(), g.clone()
        oa.step()
        ob.step()
    assert torch.equal(a[0], b[0])
    assert oa.state_dict()["state"].keys() == ob.state_dict()["state"].keys()


def test_per_member_state_resumes_bit_for_bit():
    def make(ps):
        return MemberAdam(ps, lr=LRS, betas=(0.9, torch.tensor([0.99, 0.999, 0.9999])))

    torch.manual_seed(2)
    a = [torch.randn(K, 6).requires_grad_()]
    oa = make(a)
    for step in range(3):
        a[0].grad = _grads(step, [(K, 6)])[0]
        oa.step()
    b = [a[0].detach().clone().requires_grad_()]
    ob = make(b)
    ob.load_state_dict(copy.deepcopy(oa.state_dict()))  # as from a file (no aliasing)
    for step in range(3, 6):
        g = _grads(step, [(K, 6)])[0]
        a[0].grad, b[0].grad = g.clone(), g.clone()
        oa.step()
        ob.step()
    assert torch.equal(a[0], b[0])


def test_bad_per_member_values_are_clear_errors():
    p = [torch.zeros(K, 2, requires_grad=True)]
    with pytest.raises(ValueError, match=r"lr of member 1 must be finite and >= 0, got -0.1"):
        MemberSGD(p, lr=torch.tensor([0.1, -0.1, 0.1]))
    with pytest.raises(ValueError, match=r"eps of member 2 must be finite"):
        MemberAdam(p, eps=torch.tensor([1e-8, 1e-8, float("nan")]))
    with pytest.raises(ValueError, match=r"shape \(K,\), got shape \(3, 1\)"):
        MemberAdam(p, lr=torch.ones(3, 1))
    with pytest.raises(ValueError, match=r"need amsgrad=False"):
        MemberAdam(p, lr=LRS, amsgrad=True)
    with pytest.raises(ValueError, match=r"member 1 has momentum 0.0"):
        MemberSGD(p, lr=0.1, momentum=torch.tensor([0.9, 0.0, 0.5]), nesterov=True)
    with pytest.raises(ValueError, match=r"member 2 has dampening 0.1"):
        MemberSGD(p, lr=0.1, momentum=0.9, dampening=torch.tensor([0.0, 0.0, 0.1]),
                  nesterov=True)
    opt = MemberSGD(p, lr=torch.tensor([0.1, 0.2]))  # 2 values, 3 members
    p[0].grad = torch.ones(K, 2)
    with pytest.raises(ValueError, match=r"has 2 values but a parameter of shape \(3, 2\) has "
                                         r"3 members along dimension 0"):
        opt.step()
