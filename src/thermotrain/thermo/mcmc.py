r"""MCMC diagnostics across ensemble members with ArviZ (docs/science.md §11, ``docs/thermo.md``).

An ensemble run of K members recorded at T steps is a trace of shape ``(K, T, ...)``: chains
= members, draws = recorded steps. Effective sample size and :math:`\hat R` come from ArviZ
(``az.ess``, ``az.rhat``, ``az.summary``), not a hand-written estimator; this module only
converts the trace (``az.convert_to_dataset``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["as_dataset", "mcmc_summary", "effective_sample_size", "rhat"]


def _array(name: str, value: object) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.detach().cpu().to(torch.float64).numpy()
    a = np.asarray(value, dtype=np.float64)
    if a.ndim < 2:
        raise ValueError(f"trace {name!r} must have shape (chains, draws, ...), got {a.shape}")
    if a.shape[1] < 4:
        raise ValueError(f"trace {name!r} needs at least 4 draws per chain, got {a.shape[1]}")
    return a


def as_dataset(trace: object):
    """The trace as an ``xarray.Dataset`` (``az.convert_to_dataset``): an array ``(chains,
    draws, ...)`` becomes variable ``"theta"``; a mapping ``{name: array}`` one variable each.

    Ensembles often have more chains than draws (thousands of members): ArviZ's warning about
    that (it suspects swapped axes) is silenced, the axes are as documented."""
    import arviz as az

    if isinstance(trace, Mapping):
        data = {str(k): _array(str(k), v) for k, v in trace.items()}
    else:
        data = {"theta": _array("theta", trace)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="More chains", category=UserWarning)
        return az.convert_to_dataset(data)


def mcmc_summary(trace: object, **kwargs) -> Any:
    """``az.summary`` (a ``pandas.DataFrame``) of the trace (mean, sd, HDI, MCSE,
    ``ess_bulk``, ``ess_tail``, ``r_hat`` per scalar); ``kwargs`` go to ``az.summary``
    (e.g. ``kind="diagnostics"``).

    Example:
        >>> import numpy as np
        >>> table = mcmc_summary(np.random.default_rng(0).normal(size=(4, 500, 2)))
        >>> list(table.index), bool((table["r_hat"] < 1.01).all())
        (['theta[0]', 'theta[1]'], True)
    """
    import arviz as az

    return az.summary(as_dataset(trace), **kwargs)


def effective_sample_size(trace: object, method: str = "bulk") -> np.ndarray:
    """``az.ess`` of an array trace ``(chains, draws, ...)``, shape ``trace.shape[2:]``."""
    import arviz as az

    return np.asarray(az.ess(as_dataset(trace), method=method)["theta"].values)


def rhat(trace: object) -> np.ndarray:
    r"""``az.rhat`` (rank-normalized split :math:`\hat R`) of an array trace ``(chains, draws,
    ...)``, shape ``trace.shape[2:]``."""
    import arviz as az

    return np.asarray(az.rhat(as_dataset(trace))["theta"].values)
