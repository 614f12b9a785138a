r"""Swap Monte Carlo moves, replica exchange and aging observables (docs/science.md §9, §10).

Moves for network training, usable in a user's own loop or as loop hooks
(:class:`thermotrain.training.Hook`); see docs/swaps.md:

- :class:`DataSwap` — the poster's data swaps on a copy of each batch ("1SA", pixel pairs,
  batch channels, pixels);
- :class:`ParameterSwap` — weight swaps (rows, columns, in-row, in-column, mixed, whole
  units, biases, inter-layer) accepted always, greedily or by Metropolis, optimizer state
  moved with the weights; :class:`Permutation` is one proposed move;
- :class:`ReplicaExchange` — parallel tempering over the ensemble axis, several ladders;
- :class:`Aging` — Δ(t_w, t_w + t), the overlap C and the participation ratio Y
  (Baity-Jesi et al. 2018), :func:`log_spaced_times` for their grids.
"""

from .aging import Aging, log_spaced_times
from .data import DATA_KINDS, DataSwap
from .exchange import ReplicaExchange
from .parameters import ACCEPTANCES, KINDS, ParameterSwap, Permutation

__all__ = ["DataSwap", "DATA_KINDS", "ParameterSwap", "Permutation", "KINDS", "ACCEPTANCES",
           "ReplicaExchange", "Aging", "log_spaced_times"]
