"""thermotrain — thermodynamic training of neural networks.

Langevin-type samplers as drop-in PyTorch optimizers (BAOAB, adaptive Langevin, overdamped
Langevin, SGLD and the partitioned AdLaLa, LOL and LaLa), data, models and seed ensembles,
diagnostics, and reproducible studies of the papers' experiments.
"""

from . import data, landscape, models, samplers, swaps, thermo, training
from .samplers import (
    BAOAB,
    LOL,
    SGLD,
    AdaptiveLangevin,
    AdLaLa,
    LaLa,
    Langevin,
    OverdampedLangevin,
    PartitionedLangevin,
    layers,
)
from .thermo import SGWORLD

__version__ = "0.1.0"

__all__ = [
    "BAOAB",
    "SGLD",
    "OverdampedLangevin",
    "AdaptiveLangevin",
    "AdLaLa",
    "LOL",
    "LaLa",
    "Langevin",
    "PartitionedLangevin",
    "SGWORLD",
    "thermo",
    "layers",
    "data",
    "models",
    "samplers",
    "landscape",
    "swaps",
    "training",
    "__version__",
]
