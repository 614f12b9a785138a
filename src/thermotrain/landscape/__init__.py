"""Loss landscapes: linear interpolation (MLI), planes and Hessian spectra (SPEC §8).

* :func:`interpolate` — the loss/accuracy along :math:`(1-\\alpha)\\theta_0 + \\alpha\\theta_T`
  for every member of an ensemble at once, batch norm "recompute" / "interpolate" /
  "freeze"; :class:`InterpolationResult` (``.alphas``, ``.loss``, ``.accuracy``,
  ``.to_frame()``);
* :func:`delta_min`, :func:`is_monotone`, :func:`distance` — the MLI paper's measures.

See ``docs/landscape.md``.
"""

from __future__ import annotations

from .interpolate import (
    BATCHNORM_MODES,
    InterpolationResult,
    alpha_grid,
    delta_min,
    distance,
    interpolate,
    is_monotone,
)

__all__ = [
    "interpolate",
    "InterpolationResult",
    "alpha_grid",
    "delta_min",
    "is_monotone",
    "distance",
    "BATCHNORM_MODES",
]
