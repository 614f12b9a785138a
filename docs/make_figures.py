"""Regenerate the figures of the README and the user guide: ``python docs/make_figures.py``.

``docs/figures/samplers.png``: 2000 chains of each sampler on U(θ) = ½θᵀAθ at τ = 0.5 after
1000 steps, with the exact 2σ ellipse of e^{−U/τ} (and SGLD's own exact ellipse
τ[A(I − hA/2)]⁻¹ dashed): the BAOAB-type splittings sample the Gibbs covariance exactly on a
Gaussian, SGLD is biased by O(h).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

import thermotrain as tt

OUT = Path(__file__).parent / "figures"
ANGLE = math.pi / 6
ROT = np.array([[math.cos(ANGLE), -math.sin(ANGLE)], [math.sin(ANGLE), math.cos(ANGLE)]])
A = ROT @ np.diag([1.0, 4.0]) @ ROT.T
TAU, CHAINS, STEPS = 0.5, 2000, 1000


def ellipse(cov, **kw):
    vals, vecs = np.linalg.eigh(cov)
    t = np.linspace(0, 2 * np.pi, 200)
    pts = vecs @ (2 * np.sqrt(vals)[:, None] * np.stack([np.cos(t), np.sin(t)]))
    plt.plot(pts[0], pts[1], **kw)


def sample(build):
    x = torch.zeros(CHAINS, 1, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(CHAINS, 1, dtype=torch.float64, requires_grad=True)
    opt = build([[x], [y]])
    a = torch.tensor(A)
    for _ in range(STEPS):
        g = torch.cat([x.detach(), y.detach()], 1) @ a
        x.grad, y.grad = g[:, :1].contiguous(), g[:, 1:].contiguous()
        opt.step()
    return torch.cat([x.detach(), y.detach()], 1).numpy()


def main() -> None:
    OUT.mkdir(exist_ok=True)
    flat = lambda L: [p for lay in L for p in lay]  # noqa: E731
    cases = {
        "BAOAB h=0.3": lambda L: tt.BAOAB(flat(L), lr=0.3, friction=1.0, temperature=TAU, seed=0),
        "AdLaLa h=0.05": lambda L: tt.AdLaLa(L, lr=0.05, friction=1.0, temperature=TAU,
                                             noise=1.0, coupling=1.0 / CHAINS, seed=0),
        "LOL h=0.3": lambda L: tt.LOL(L, lr=0.3, friction=1.0, temperature=TAU, seed=0),
        "SGLD h=0.1": lambda L: tt.SGLD(flat(L), lr=0.1, temperature=TAU, seed=0),
    }
    plt.figure(figsize=(12, 3.4))
    for i, (name, build) in enumerate(cases.items()):
        plt.subplot(1, len(cases), i + 1)
        pts = sample(build)
        plt.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.3)
        ellipse(TAU * np.linalg.inv(A), color="k", label=r"exact $e^{-U/\tau}$")
        if name.startswith("SGLD"):
            ellipse(TAU * np.linalg.inv(A @ (np.eye(2) - 0.1 * A / 2)), color="r", ls="--",
                    label="SGLD's exact bias")
        plt.title(name)
        plt.gca().set_aspect("equal")
        plt.xlim(-2.5, 2.5)
        plt.ylim(-2.5, 2.5)
        if i in (0, len(cases) - 1):
            plt.legend(loc="lower right", fontsize=7)
    plt.tight_layout()
    plt.savefig(OUT / "samplers.png", dpi=110)
    print(f"wrote {OUT / 'samplers.png'}")


if __name__ == "__main__":
    main()
