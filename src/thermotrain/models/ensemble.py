"""Convert between K plain networks and one K-member ensemble network (copying parameters).

``stack([m_0, …, m_{K−1}])`` builds the ensemble whose parameter ``p`` is
``torch.stack([m_k.p for k])`` (the layout of ``torch.func.stack_module_state``); ``unstack``
is its inverse. Both copy: the results share no storage with their inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import StackableModel

__all__ = ["stack", "unstack"]


def stack(models: Sequence[nn.Module]) -> StackableModel:
    """K plain networks of one architecture → one K-member ensemble (parameters copied).

    Args:
        models: a non-empty list of plain (``ensemble_size is None``)
            :class:`~thermotrain.models.MLP` or :class:`~thermotrain.models.CNN` of the same
            class, configuration, dtype and device.

    Returns:
        The ensemble (same class, ``ensemble=K``) whose member k equals ``models[k]``; its
        ``seeds`` are the members' seeds and ``requires_grad`` is taken from ``models[0]``.

    Example:
        >>> from thermotrain.models import MLP
        >>> nets = [MLP([2, 8, 1], seed=s) for s in (3, 5)]
        >>> ens = stack(nets)
        >>> bool((ens.layers[0].weight[1] == nets[1].layers[0].weight).all())
        True
    """
    if isinstance(models, nn.Module) or not isinstance(models, Sequence):
        raise TypeError(
            f"stack expects a list of plain MLP/CNN models, got {type(models).__name__}"
        )
    if len(models) == 0:
        raise ValueError("stack expects at least one model, got an empty list")
    first = models[0]
    for i, m in enumerate(models):
        if not isinstance(m, StackableModel):
            raise TypeError(
                f"stack supports thermotrain MLP and CNN models only; models[{i}] is a "
                f"{type(m).__name__}"
            )
        if m.ensemble_size is not None:
            raise ValueError(
                f"stack expects plain models; models[{i}] is already an ensemble of "
                f"{m.ensemble_size}"
            )
        if type(m) is not type(first) or m.config() != first.config():
            raise ValueError(
                f"stack needs models of one architecture: models[0] is {type(first).__name__}"
                f"({first.config()}) but models[{i}] is {type(m).__name__}({m.config()})"
            )
    p0 = next(first.parameters())
    for i, m in enumerate(models):
        p = next(m.parameters())
        if (p.dtype, p.device) != (p0.dtype, p0.device):
            raise ValueError(
                f"stack needs one dtype and device: models[0] has {p0.dtype} on {p0.device}, "
                f"models[{i}] has {p.dtype} on {p.device}"
            )
    seeds = [m.seeds[0] for m in models]
    ens = first._like(len(models), seeds)
    sources = [dict(m.named_parameters()) for m in models]
    with torch.no_grad():
        for name, dst in ens.named_parameters():
            dst.copy_(torch.stack([src[name] for src in sources]))
            dst.requires_grad_(sources[0][name].requires_grad)
    return ens


def unstack(ensemble: nn.Module) -> list[StackableModel]:
    """One K-member ensemble → K plain networks (parameters copied); inverse of :func:`stack`.

    Example:
        >>> from thermotrain.models import MLP
        >>> nets = unstack(MLP([2, 8, 1], ensemble=3, seed=10))
        >>> [n.seeds for n in nets]
        [(10,), (11,), (12,)]
    """
    if not isinstance(ensemble, StackableModel):
        raise TypeError(
            f"unstack supports thermotrain MLP and CNN ensembles only, got "
            f"{type(ensemble).__name__}"
        )
    if ensemble.ensemble_size is None:
        raise ValueError(
            f"unstack expects an ensemble model, got a plain {type(ensemble).__name__} "
            f"(ensemble=None)"
        )
    return [ensemble.member(k) for k in range(ensemble.ensemble_size)]
