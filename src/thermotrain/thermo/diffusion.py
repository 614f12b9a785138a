r"""Minibatch noise of SGD: the diffusion matrix D (docs/science.md §5) and the effective loss of
without-replacement SGD (docs/science.md §4); ``docs/thermo.md``.

One SGD step with a minibatch B of B distinct points is
:math:`w_{n+1} = w_n - h\nabla L(w_n) - h\,\xi_n` with the minibatch noise
:math:`\xi_n = \nabla L_B - \nabla L`. With the population covariance of the per-sample
gradients :math:`S = \frac1N\sum_i g_i g_i^\top - \bar g\bar g^\top` and the
finite-population factor :math:`c = \frac{N-B}{B(N-1)}` (a uniformly drawn B-subset),
:math:`\mathrm{Cov}(\xi_n) = cS`, and the per-step diffusion matrix is

.. math:: D = \tfrac12\mathrm{Cov}(\Delta w) = \frac{h^2 c}{2}\,S .
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["finite_population_factor", "minibatch_diffusion", "effective_loss"]


def finite_population_factor(n: int, batch_size: int) -> float:
    r""":math:`c = \frac{N-B}{B(N-1)}`: the variance of the mean of B points drawn without
    repetition from N, per unit population variance (0 for a full batch)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"the number of samples N must be an int >= 2, got {n!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or \
            not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be an int in [1, N={n}], got {batch_size!r}")
    return (n - batch_size) / (batch_size * (n - 1))


def minibatch_diffusion(per_sample_grads: Tensor, lr: float, batch_size: int,
                        replacement: bool = True, mean_gradient: Tensor | None = None
                        ) -> Tensor:
    r"""The per-step minibatch diffusion matrix :math:`D` of SGD (docs/science.md §5).

    .. math::
        D = \frac{h^2 c}{2}\Bigl[\frac1N\sum_{i=1}^N g_i g_i^\top - m\,m^\top\Bigr],
        \qquad c = \frac{N-B}{B(N-1)},

    with :math:`g_i` the rows of ``per_sample_grads`` and :math:`m` = ``mean_gradient``
    (default :math:`\bar g = \frac1N\sum_i g_i`, which makes the bracket the covariance of
    the per-sample gradients). docs/science.md §5 notes that the authors' code subtracts the outer
    product of the **data-term** gradient only (without the prior's :math:`2(N/2\sigma^2)
    \lambda w`); pass that gradient as ``mean_gradient`` to reproduce their variant (their
    published numbers use it). Computed in float64.

    ``replacement`` names the minibatch policy (docs/science.md §4):

    * ``True`` — every step a fresh batch of B distinct points: the steps' noises are
      independent and :math:`D` is the diffusion of every step.
    * ``False`` — each epoch a permutation cut into :math:`M = N/B` batches. Each batch is
      still marginally a uniform B-subset, so the **per-step** noise covariance is the same
      :math:`2D` (that is what is returned); but the M noises of one epoch sum to zero
      (:math:`\sum_n \nabla L_{B_n} = M\nabla L` at fixed w), i.e. they are anticorrelated,
      :math:`\mathrm{Cov}(\xi_n, \xi_m) = -\mathrm{Cov}(\xi_n)/(M-1)` for n ≠ m in one
      epoch. The **per-epoch** diffusion at a fixed point is therefore zero: what remains
      comes from the change of the gradient within the epoch, :math:`O(h^3)`, which is why
      the without-replacement cloud is orders of magnitude tighter (docs/science.md §5) and its mean
      sits at the minimum of :func:`effective_loss`. Gaussian-NESS formulas with this
      :math:`D` describe with-replacement SGD only.

    Args:
        per_sample_grads: ``(N, P)`` (or ``(..., N, P)``, e.g. ``(K, N, P)`` per ensemble
            member) from :func:`~thermotrain.thermo.per_sample_gradients`.
        lr: the step size :math:`h > 0`.
        batch_size: :math:`B`, ``1 <= B <= N``.
        replacement: the minibatch policy (see above).
        mean_gradient: ``(P,)`` (or ``(..., P)``); default the mean of the rows.

    Returns:
        :math:`D`, ``(P, P)`` (or ``(..., P, P)``), float64, symmetric.
    """
    if not isinstance(per_sample_grads, Tensor) or per_sample_grads.ndim < 2:
        raise ValueError("per_sample_grads must be a tensor of shape (N, P) or (..., N, P), got "
                         f"{getattr(per_sample_grads, 'shape', type(per_sample_grads).__name__)}")
    if not isinstance(replacement, bool):
        raise TypeError(f"replacement must be True or False, got {replacement!r}")
    lr = float(lr)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    g = per_sample_grads.to(torch.float64)
    n = g.shape[-2]
    c = finite_population_factor(n, batch_size)
    second = g.transpose(-1, -2) @ g / n
    m = g.mean(-2) if mean_gradient is None else mean_gradient.to(g)
    if m.shape[-1] != g.shape[-1]:
        raise ValueError(f"mean_gradient must have {g.shape[-1]} entries, got {tuple(m.shape)}")
    d = 0.5 * lr**2 * c * (second - m.unsqueeze(-1) * m.unsqueeze(-2))
    return 0.5 * (d + d.transpose(-1, -2))


def effective_loss(per_sample_loss: Callable[[Tensor], Tensor], lr: float, batch_size: int
                   ) -> Callable[[Tensor], Tensor]:
    r"""The effective loss of without-replacement SGD (docs/science.md §4):

    .. math::
        L_\mathrm{eff}(\theta) = L(\theta) + \frac h4\,\mathbb E_B\lVert\nabla L_B(\theta)\rVert^2,
        \quad \mathbb E_B\lVert\nabla L_B\rVert^2 = \lVert\bar g\rVert^2
            + c\Bigl(\frac1N\sum_i\lVert g_i\rVert^2 - \lVert\bar g\rVert^2\Bigr),

    :math:`g_i = \nabla\ell_i`, :math:`c = \frac{N-B}{B(N-1)}` (each batch of an epoch is
    marginally a uniform B-subset). The stationary mean of WOR SGD, recorded at epoch
    boundaries, sits at :math:`\arg\min L_\mathrm{eff}` (the backward-error analysis of one
    epoch; docs/science.md §4 checks it against the authors' hard-coded WOR minimum).

    Args:
        per_sample_loss: ``theta (P,) -> (N,)`` per-sample losses :math:`\ell_i(\theta)` (a
            differentiable function of the flat parameters; e.g. built with ``torch.func``).
        lr: :math:`h`; batch_size: :math:`B`.

    Returns:
        ``theta -> L_eff(theta)`` (a scalar), differentiable twice more by ``torch.func``
        (so Newton's method on it works: :func:`~thermotrain.thermo.minimize_newton`).
    """
    lr = float(lr)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")

    def grads(theta: Tensor) -> Tensor:
        return torch.func.jacrev(per_sample_loss)(theta)  # (N, P)

    def f(theta: Tensor) -> Tensor:
        losses = per_sample_loss(theta)
        g = grads(theta)
        c = finite_population_factor(g.shape[0], batch_size)
        mean = g.mean(0)
        mean_sq = mean.square().sum()
        expected = mean_sq + c * (g.square().sum(1).mean() - mean_sq)
        return losses.mean() + 0.25 * lr * expected

    return f
