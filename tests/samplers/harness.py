"""A small regression problem shared by the generic sampler tests: a 3-5-1 tanh network on
fixed data, in float64, with a fixed minibatch schedule. With ``members=K`` every tensor
carries a leading ensemble axis and the loss is the sum of the members' mean losses."""

from __future__ import annotations

import torch

SHAPES = [(5, 3), (5,), (1, 5), (1,)]
N_DATA, BATCH = 64, 16


def data(dtype=torch.float64):
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(N_DATA, 3, generator=g, dtype=dtype)
    y = torch.sin(x.sum(1, keepdim=True))
    return x, y


def init(seed: int, dtype=torch.float64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [(0.5 * torch.randn(s, generator=g, dtype=dtype)) for s in SHAPES]


def make_layers(seed: int = 100, members: int | None = None, dtype=torch.float64):
    """[[W1, b1], [W2, b2]] as leaf tensors; with ``members`` stacked seeds seed+k."""
    if members is None:
        ps = init(seed, dtype)
    else:
        inits = [init(seed + k, dtype) for k in range(members)]
        ps = [torch.stack([m[i] for m in inits]) for i in range(len(SHAPES))]
    ps = [p.clone().requires_grad_(True) for p in ps]
    return [ps[:2], ps[2:]]


def loss(layers, step: int, x=None, y=None) -> torch.Tensor:
    if x is None:
        x, y = data(layers[0][0].dtype)
    lo = (step * BATCH) % N_DATA
    xb, yb = x[lo : lo + BATCH], y[lo : lo + BATCH]
    (w1, b1), (w2, b2) = layers
    if w1.dim() == 2:
        h = torch.tanh(xb @ w1.T + b1)
        out = h @ w2.T + b2
        return ((out - yb) ** 2).mean()
    h = torch.tanh(torch.einsum("bi,kji->kbj", xb, w1) + b1[:, None, :])
    out = torch.einsum("kbj,koj->kbo", h, w2) + b2[:, None, :]
    return ((out - yb) ** 2).mean(dim=(1, 2)).sum()


def run(opt, layers, steps: int, start: int = 0) -> list[torch.Tensor]:
    for n in range(start, start + steps):
        opt.zero_grad()
        loss(layers, n).backward()
        opt.step()
    return [p.detach().clone() for layer in layers for p in layer]
