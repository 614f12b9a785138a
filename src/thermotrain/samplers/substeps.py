r"""The sub-steps of every Langevin-type splitting, written once (SPEC §1).

Each sub-step is a map applied for a time :math:`t` to lists of tensors (the parameters
:math:`\theta`, momenta :math:`p`, thermostat variables :math:`\xi`, noise :math:`R`).
Every scheme in :mod:`thermotrain.samplers.schemes` is a composition of these maps.

=====  ==============================================================================
name   map
=====  ==============================================================================
A      :math:`\theta \leftarrow \theta + t\,p`
B      :math:`p \leftarrow p - t\,\nabla \tilde L(\theta)`
O      :math:`p \leftarrow c\,p + d\,R`, :math:`c = e^{-\gamma t}`,
       :math:`d = \sqrt{(1 - e^{-2\gamma t})\,\tau}` (exact Ornstein–Uhlenbeck solve)
C      :math:`p \leftarrow e^{-\xi t}\,p`
D      :math:`p \leftarrow p + \sigma_A \sqrt{t}\,R`
E      :math:`\xi \leftarrow \xi + t\,\varepsilon\,(p^\top p - N\tau)`, :math:`N` = entries
       of the tensor (per ensemble member)
=====  ==============================================================================

Every function has two implementations selected by ``foreach``: a readable reference that
loops over tensors, and a ``torch._foreach_*`` fast path. Both perform the same floating-point
operations in the same order, so they agree bit for bit (``tests/samplers`` checks it).

The ensemble axis: a tensor may carry a leading (or any) axis of K independent replicas. The
only sub-steps that reduce or broadcast over entries are C and E; they take the thermostat
``xi`` already shaped to broadcast against its tensor (size K on the ensemble axis, 1
elsewhere) and :func:`sum_squares` reduces per member.

Noise ``R`` is a list of tensors, or (``rng="philox"``) a
:class:`~thermotrain.samplers.noise.CounterNoise` that O and D apply fused,
:math:`x \leftarrow a\,x + b\,R` in one pass, without storing R.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .noise import CounterNoise

__all__ = [
    "drift",
    "kick",
    "ou",
    "rescale",
    "inject",
    "thermostat",
    "sum_squares",
    "ou_coefficients",
]


def drift(params: Sequence[Tensor], momenta: Sequence[Tensor], t: float, foreach: bool) -> None:
    r"""A: :math:`\theta \leftarrow \theta + t\,p`."""
    if foreach:
        torch._foreach_add_(params, momenta, alpha=t)
    else:
        for theta, p in zip(params, momenta, strict=True):
            theta.add_(p, alpha=t)


def kick(momenta: Sequence[Tensor], grads: Sequence[Tensor], t: float, foreach: bool) -> None:
    r"""B: :math:`p \leftarrow p - t\,\nabla\tilde L`. Also used with θ in place of p (SGLD)."""
    if foreach:
        torch._foreach_add_(momenta, grads, alpha=-t)
    else:
        for p, g in zip(momenta, grads, strict=True):
            p.add_(g, alpha=-t)


def ou_coefficients(friction: float, temperature: float, t: float) -> tuple[float, float]:
    r"""Return :math:`(c, d) = (e^{-\gamma t}, \sqrt{(1-e^{-2\gamma t})\tau})` of the O-step."""
    c = math.exp(-friction * t)
    d = math.sqrt(-math.expm1(-2.0 * friction * t) * temperature)
    return c, d


def ou(
    momenta: Sequence[Tensor], noise: Sequence[Tensor] | CounterNoise, c: float, d: float,
    foreach: bool,
) -> None:
    r"""O: :math:`p \leftarrow c\,p + d\,R`.

    ``c = 0`` is a full resample :math:`p \leftarrow d R` (the overdamped limit).
    """
    if isinstance(noise, CounterNoise):
        noise.axpby_(momenta, c, d)
    elif foreach:
        if c == 0.0:
            torch._foreach_copy_(momenta, noise)
            torch._foreach_mul_(momenta, d)
        else:
            torch._foreach_mul_(momenta, c)
            torch._foreach_add_(momenta, noise, alpha=d)
    else:
        for p, r in zip(momenta, noise, strict=True):
            if c == 0.0:
                p.copy_(r)
                p.mul_(d)
            else:
                p.mul_(c)
                p.add_(r, alpha=d)


def rescale(momenta: Sequence[Tensor], xis: Sequence[Tensor], t: float, foreach: bool) -> None:
    r"""C: :math:`p \leftarrow e^{-\xi t}\,p` with one ξ per tensor (per ensemble member)."""
    factors = [torch.exp(xi * -t) for xi in xis]
    if foreach:
        torch._foreach_mul_(momenta, factors)
    else:
        for p, f in zip(momenta, factors, strict=True):
            p.mul_(f)


def inject(momenta: Sequence[Tensor], noise: Sequence[Tensor] | CounterNoise, scale: float,
           foreach: bool) -> None:
    r"""D: :math:`p \leftarrow p + s\,R` with :math:`s = \sigma_A\sqrt{t}` (caller computes s)."""
    if isinstance(noise, CounterNoise):
        noise.axpby_(momenta, 1.0, scale)
    elif foreach:
        torch._foreach_add_(momenta, noise, alpha=scale)
    else:
        for p, r in zip(momenta, noise, strict=True):
            p.add_(r, alpha=scale)


def sum_squares(p: Tensor, ensemble_dim: int | None) -> Tensor:
    r""":math:`p^\top p`, per ensemble member (shaped like ξ) when ``ensemble_dim`` is set.

    Computed as a squared 2-norm: one read-only pass, no temporary the size of ``p``."""
    if ensemble_dim is None:
        return torch.linalg.vector_norm(p).square()
    dims = [i for i in range(p.dim()) if i != ensemble_dim]
    if not dims:
        return p * p
    return torch.linalg.vector_norm(p, dim=dims, keepdim=True).square()


def thermostat(
    xis: Sequence[Tensor],
    momenta: Sequence[Tensor],
    counts: Sequence[int],
    ensemble_dims: Sequence[int | None],
    t: float,
    coupling: float,
    temperature: float,
) -> None:
    r"""E: :math:`\xi \leftarrow \xi + t\,\varepsilon\,(p^\top p - N\tau)`, in place.

    ``counts[i]`` is :math:`N`, the number of entries of tensor i per ensemble member. The
    reduction is per tensor and per member, so there is no separate foreach path.
    """
    for xi, p, n, edim in zip(xis, momenta, counts, ensemble_dims, strict=True):
        xi.add_(sum_squares(p, edim) - n * temperature, alpha=t * coupling)
