"""Langevin-type samplers as PyTorch optimizers (docs/science.md §1–§3).

Functional core: :mod:`.splittings` (every scheme a word of the sub-steps A, B, O, C, D, E,
compiled once to the op list of a step), interpreted by :mod:`.reference` (torch) and
:mod:`.fused` (the C kernel); optimizer shell: :class:`PartitionedLangevin`; the paper's
methods: :mod:`.presets` (:data:`PRESETS`); the baselines with per-member hyperparameters:
:mod:`.baselines` (:class:`MemberSGD`, :class:`MemberAdam`).
"""

from .baselines import MemberAdam, MemberSGD
from .guard import permute_optimizer_state
from .noise import NoiseSource
from .optimizer import PartitionedLangevin
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
    "MemberSGD",
    "MemberAdam",
]

