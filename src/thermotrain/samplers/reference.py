r"""The torch implementation of a step program (docs/science.md §1): the readable reference loop
over
tensors and the ``torch._foreach_*`` fast path, both interpreting the op list that
:func:`.splittings.program` compiles from a scheme's word.

Each op is ``(code, coef1, coef2, draw)`` with coefficients a float or a list of K floats
(one per ensemble member; broadcast along the ensemble axis):

====  =======================================================
A     :math:`\theta \leftarrow \theta + t\,p`
B     :math:`p \leftarrow p - k\,\nabla\tilde L`
O     :math:`p \leftarrow c\,p + d\,R`  (``R``: :math:`p \leftarrow d\,R`)
C     :math:`p \leftarrow e^{-\xi t}\,p`
D     :math:`p \leftarrow p + s\,R`
E     :math:`\xi \leftarrow \xi + a\,(p^\top p - N\tau)` per tensor and member
G     :math:`\theta \leftarrow \theta - t\,\nabla\tilde L`
W     :math:`\theta \leftarrow \theta + s\,R`
====  =======================================================

With float coefficients the reference and foreach paths perform the same floating-point
operations in the same order and agree bit for bit; per-member coefficients use broadcast
multiplies (the same for both paths).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["GroupView", "run_program", "sum_squares"]


@dataclass
class GroupView:
    """The tensors of one parameter group that take part in this step."""

    params: list[Tensor]
    grads: list[Tensor]
    momenta: list[Tensor]
    xis: list[Tensor]
    counts: list[int]  # entries per ensemble member
    ensemble_dims: list[int | None]
    names: list[str] = field(default_factory=list)


def sum_squares(p: Tensor, ensemble_dim: int | None) -> Tensor:
    r""":math:`p^\top p`, per ensemble member (shaped like ξ) when ``ensemble_dim`` is set."""
    if ensemble_dim is None:
        return torch.linalg.vector_norm(p).square()
    dims = [i for i in range(p.dim()) if i != ensemble_dim]
    if not dims:
        return p * p
    return torch.linalg.vector_norm(p, dim=dims, keepdim=True).square()


def _member_shape(t: Tensor, edim: int | None) -> list[int]:
    shape = [1] * t.dim()
    if edim is not None:
        shape[edim] = t.shape[edim]
    return shape


def _coef(value, t: Tensor, edim: int | None, scale: float = 1.0) -> Tensor:
    """A list of K coefficients as a tensor broadcasting against ``t``."""
    c = torch.tensor([scale * v for v in value], dtype=torch.float64).to(t.dtype)
    return c.to(t.device).reshape(_member_shape(t, edim) if edim is not None else [])


def _axpy(xs: Sequence[Tensor], ys: Sequence[Tensor], a, g: GroupView, foreach: bool,
          sign: float = 1.0) -> None:
    """x ← x + sign·a·y."""
    if not isinstance(a, list):
        if foreach:
            torch._foreach_add_(list(xs), list(ys), alpha=sign * a)
        else:
            for x, y in zip(xs, ys, strict=True):
                x.add_(y, alpha=sign * a)
        return
    for x, y, e in zip(xs, ys, g.ensemble_dims, strict=True):
        x.addcmul_(y, _coef(a, x, e, sign))


def _scale(xs: Sequence[Tensor], c, g: GroupView, foreach: bool) -> None:
    if not isinstance(c, list):
        if foreach:
            torch._foreach_mul_(list(xs), c)
        else:
            for x in xs:
                x.mul_(c)
        return
    for x, e in zip(xs, g.ensemble_dims, strict=True):
        x.mul_(_coef(c, x, e))


NoiseFn = Callable[[int], list[Tensor]]


def run_program(ops: Sequence[tuple], g: GroupView, noise: NoiseFn, foreach: bool) -> None:
    """Apply ``ops`` in order to the group's tensors; ``noise(j)`` gives draw ``j``'s normals
    for each tensor."""
    for code, a, b, draw in ops:
        if code == "A":
            _axpy(g.params, g.momenta, a, g, foreach)
        elif code == "B":
            _axpy(g.momenta, g.grads, a, g, foreach, -1.0)
        elif code == "G":
            _axpy(g.params, g.grads, a, g, foreach, -1.0)
        elif code == "O":
            r = noise(draw)
            if not isinstance(a, list) and a == 0.0:
                _resample(g.momenta, r, b, g, foreach)
            else:
                _scale(g.momenta, a, g, foreach)
                _axpy(g.momenta, r, b, g, foreach)
        elif code == "R":
            _resample(g.momenta, noise(draw), a, g, foreach)
        elif code == "D":
            _axpy(g.momenta, noise(draw), a, g, foreach)
        elif code == "W":
            _axpy(g.params, noise(draw), a, g, foreach)
        elif code == "C":
            if isinstance(a, list):
                factors = [torch.exp(xi * -_coef(a, xi, e))
                           for xi, e in zip(g.xis, g.ensemble_dims, strict=True)]
            else:
                factors = [torch.exp(xi * -a) for xi in g.xis]
            if foreach:
                torch._foreach_mul_(g.momenta, factors)
            else:
                for p, f in zip(g.momenta, factors, strict=True):
                    p.mul_(f)
        elif code == "E":
            for xi, p, n, e in zip(g.xis, g.momenta, g.counts, g.ensemble_dims, strict=True):
                if isinstance(a, list) or isinstance(b, list):
                    aa = _coef(a if isinstance(a, list) else [a] * xi.numel(), xi, e)
                    tau = _coef(b if isinstance(b, list) else [b] * xi.numel(), xi, e)
                    xi.add_((sum_squares(p, e) - n * tau) * aa)
                else:
                    xi.add_(sum_squares(p, e) - n * b, alpha=a)
        else:
            raise AssertionError(code)


def _resample(momenta, r, d, g: GroupView, foreach: bool) -> None:
    if foreach:
        torch._foreach_copy_(momenta, r)
    else:
        for p, z in zip(momenta, r, strict=True):
            p.copy_(z)
    _scale(momenta, d, g, foreach)
