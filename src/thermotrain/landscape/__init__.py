"""Loss landscapes: linear interpolation (MLI), planes and Hessian spectra (docs/science.md §8).

* :func:`interpolate` — the loss/accuracy along :math:`(1-\\alpha)\\theta_0 + \\alpha\\theta_T`
  for every member of an ensemble at once, batch norm "recompute" / "interpolate" /
  "freeze"; :class:`InterpolationResult` (``.alphas``, ``.loss``, ``.accuracy``,
  ``.to_frame()``);
* :func:`delta_min`, :func:`is_monotone`, :func:`distance` — the MLI paper's measures;
* :func:`gauss_length` — the length of the logit direction's path (forward-mode JVPs);
* :func:`plane` over :func:`random_directions` (filter-normalized), :func:`plane_through`
  three solutions, or :func:`trajectory_pca`; figures in :mod:`.plots`;
* :func:`hessian_eigenvalues` (Lanczos / power iteration with deflation),
  :func:`hessian_trace` (Hutchinson), :func:`hessian_density` (stochastic Lanczos
  quadrature) on Hessian-vector products, per member and optionally per layer.

See ``docs/landscape.md``.
"""

from __future__ import annotations

from . import hessian, plots
from .gauss import gauss_length
from .hessian import SpectralDensity, hessian_density, hessian_eigenvalues, hessian_trace
from .interpolate import (
    BATCHNORM_MODES,
    InterpolationResult,
    alpha_grid,
    delta_min,
    distance,
    interpolate,
    is_monotone,
)
from .plane import PlaneResult, plane, plane_through, random_directions, trajectory_pca

__all__ = [
    "interpolate",
    "InterpolationResult",
    "alpha_grid",
    "delta_min",
    "is_monotone",
    "distance",
    "gauss_length",
    "BATCHNORM_MODES",
    "hessian_eigenvalues",
    "hessian_trace",
    "hessian_density",
    "SpectralDensity",
    "hessian",
    "plane",
    "PlaneResult",
    "random_directions",
    "plane_through",
    "trajectory_pca",
    "plots",
]
