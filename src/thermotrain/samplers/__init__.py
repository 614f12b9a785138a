"""Langevin-type samplers as PyTorch optimizers (SPEC §1–§3).

Functional core: :mod:`.splittings` (every scheme a word of the sub-steps A, B, O, C, D, E,
compiled once to the op list of a step), interpreted by :mod:`.reference` (torch) and
:mod:`.fused` (the C kernel); optimizer shell: :class:`PartitionedLangevin`; the paper's
methods: :mod:`.presets` (:data:`PRESETS`).
"""

from torch import Tensor

from .noise import NoiseSource
from .optimizer import PartitionedLangevin, permuted
from .presets import (
    BAOAB,
    LOL,
    PRESETS,
    SGLD,
    AdaptiveLangevin,
    AdLaLa,
    LaLa,
    Langevin,
    OverdampedLangevin,
    layers,
)
from .splittings import SCHEMES, SPLITTINGS, Scheme, compile_word, get_scheme

__all__ = [
    "PartitionedLangevin",
    "Langevin",
    "BAOAB",
    "SGLD",
    "OverdampedLangevin",
    "AdaptiveLangevin",
    "AdLaLa",
    "LOL",
    "LaLa",
    "PRESETS",
    "layers",
    "SCHEMES",
    "SPLITTINGS",
    "Scheme",
    "compile_word",
    "get_scheme",
    "NoiseSource",
    "permute_optimizer_state",
]


def permute_optimizer_state(opt, param: Tensor, index: Tensor, dim: int,
                            ensemble_dim: int | None = None) -> None:
    """Reorder every per-entry state of ``param`` in any optimizer along ``dim`` — the
    samplers' momenta and per-member ξ (:meth:`PartitionedLangevin.permute_state`), or a
    :mod:`torch.optim` optimizer's buffers shaped like the parameter (SGD's
    ``momentum_buffer``, Adam's ``exp_avg``/``exp_avg_sq``/``max_exp_avg_sq``) — so swap
    moves and replica exchange treat every optimizer alike. A per-member ``(K, n)`` index
    needs ``ensemble_dim`` for torch optimizers (the samplers know theirs)."""
    if isinstance(opt, PartitionedLangevin):
        opt.permute_state(param, index, dim)
        return
    if not any(p is param for g in opt.param_groups for p in g["params"]):
        raise ValueError(f"permute_optimizer_state: a parameter of shape {tuple(param.shape)} "
                         f"is not in this {type(opt).__name__}")
    for value in opt.state.get(param, {}).values():
        if isinstance(value, Tensor) and value.shape == param.shape:
            value.copy_(permuted(value, index, dim, ensemble_dim))
