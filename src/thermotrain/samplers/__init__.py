"""Langevin-type samplers as PyTorch optimizers (SPEC §1–§3).

Functional core: :mod:`.substeps` (A, B, O, C, D, E) and :mod:`.schemes` (their
compositions); optimizer shell: :class:`PartitionedLangevin`; the paper's methods:
:mod:`.presets`.
"""

from .noise import NoiseSource
from .optimizer import PartitionedLangevin
from .presets import BAOAB, LOL, SGLD, AdaptiveLangevin, AdLaLa, LaLa, OverdampedLangevin, layers
from .schemes import SCHEMES, Scheme, get_scheme

__all__ = [
    "PartitionedLangevin",
    "BAOAB",
    "SGLD",
    "OverdampedLangevin",
    "AdaptiveLangevin",
    "AdLaLa",
    "LOL",
    "LaLa",
    "layers",
    "SCHEMES",
    "Scheme",
    "get_scheme",
    "NoiseSource",
]
