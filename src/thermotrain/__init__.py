"""thermotrain — thermodynamic training of neural networks.

Langevin-type samplers as drop-in PyTorch optimizers (BAOAB, adaptive Langevin, overdamped
Langevin, SGLD and the partitioned AdLaLa, LOL and LaLa), data, models and seed ensembles,
diagnostics, and reproducible studies of the papers' experiments.
"""

from . import data, models, samplers
from .samplers import (
    BAOAB,
    LOL,
    SGLD,
    AdaptiveLangevin,
    AdLaLa,
    LaLa,
    OverdampedLangevin,
    PartitionedLangevin,
    layers,
)

__version__ = "0.1.0"

__all__ = [
    "BAOAB",
    "SGLD",
    "OverdampedLangevin",
    "AdaptiveLangevin",
    "AdLaLa",
    "LOL",
    "LaLa",
    "PartitionedLangevin",
    "layers",
    "data",
    "models",
    "samplers",
    "__version__",
]
