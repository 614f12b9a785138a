r"""SGWORLD: stochastic gradient Langevin dynamics with without-replacement minibatches
(docs/science.md §4, ``docs/thermo.md``)."""

from __future__ import annotations

import warnings

from ..samplers import SGLD
from ..samplers.optimizer import Hyperparameter

__all__ = ["SGWORLD", "check_minibatch_policy", "WITHOUT_REPLACEMENT_METHODS"]

#: names of the methods that are meant for without-replacement (epoch-reshuffled) batches
WITHOUT_REPLACEMENT_METHODS = frozenset({"SGWORLD"})


class SGWORLD(SGLD):
    r"""SGLD meant for **without-replacement** (epoch-reshuffled) minibatches: SGWORLD.

    The update is SGLD's, :math:`\theta \leftarrow \theta - h\nabla L_B(\theta) +
    \sqrt{2\tau h}\,R`, for Bayesian sampling at :math:`\tau = 1` with the sum-scaled loss
    :math:`L_B(\theta) = \frac NB\sum_{i\in B} -\log p(y_i\mid x_i,\theta) - \log p(\theta)`
    (docs/science.md §4; the abstract of "Machine learning in and out of equilibrium").

    **Why without replacement.** With batches drawn independently each step (with
    replacement), the minibatch noise adds a diffusion :math:`D \propto h^2 (N/B)` per step on
    top of the injected :math:`h\tau`, so SGLD's stationary covariance is too wide by a term
    that grows ∝ h with a prefactor ≈ N/B times ULA's discretization error. With each epoch a
    fresh permutation cut into N/B batches, the epoch's minibatch noises sum to zero (every
    point is used once), the extra diffusion per epoch vanishes to leading order and the
    sampler falls onto the full-gradient (ULA) error floor :math:`[H(I - hH/2)]^{-1}` once
    :math:`(N/B)\,h\,\lambda_{\max}(H) \lesssim 0.5` (docs/science.md §4's Bayesian linear
    regression:
    at h = 1e-4, SGLD's covariance error 0.18–0.21 vs SGWORLD's 0.03).

    .. warning:: The optimizer cannot see how batches are drawn. Feed it
       :class:`thermotrain.data.Minibatcher` with ``replacement=False`` (or a
       ``DataLoader(shuffle=True, drop_last=True)``). **With with-replacement batches SGWORLD
       is just SGLD** and carries SGLD's bias; :func:`check_minibatch_policy` warns about that
       pairing (the studies call it for their ``replacement`` option).

    Args:
        params: tensors or param-group dicts, as for any torch optimizer.
        lr: step size :math:`h`.
        temperature: :math:`\tau` (default 1: the Bayesian posterior of a sum-scaled loss).
        **kwargs: ``seed``, ``ensemble_dim``, ``rng``, … of
            :class:`~thermotrain.PartitionedLangevin`.

    Example:
        >>> import torch, thermotrain as tt
        >>> theta = torch.zeros(1000, 2, requires_grad=True)        # 1000 chains
        >>> opt = tt.SGWORLD([theta], lr=1e-4, seed=0, ensemble_dim=0)
        >>> theta.grad = torch.zeros_like(theta); opt.step()
    """

    def __init__(self, params, lr: Hyperparameter = 1e-4, temperature: Hyperparameter = 1.0,
                 **kwargs):
        super().__init__(params, lr=lr, temperature=temperature, **kwargs)


def check_minibatch_policy(method: object, replacement: bool, where: str = "") -> None:
    """Warn (``UserWarning``) when SGWORLD is paired with with-replacement batches.

    Args:
        method: an optimizer instance or a method name (e.g. ``"SGWORLD"``).
        replacement: the minibatch policy of the run (``True`` = with replacement).
        where: prefix for the message (e.g. the study file and method key).
    """
    name = method if isinstance(method, str) else type(method).__name__
    if replacement and (name in WITHOUT_REPLACEMENT_METHODS or isinstance(method, SGWORLD)):
        prefix = f"{where}: " if where else ""
        warnings.warn(f"{prefix}SGWORLD with with-replacement batches (replacement=true) is "
                      "plain SGLD and keeps its O(N/B·h) bias; use replacement=false",
                      UserWarning, stacklevel=2)
