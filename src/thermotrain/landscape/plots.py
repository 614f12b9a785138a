"""Figures of interpolation lines and planes (matplotlib; pass an ``ax`` or get a new figure).

These draw results only (:class:`~.interpolate.InterpolationResult`,
:class:`~.plane.PlaneResult`); they never evaluate a model. Use a non-interactive backend
(``matplotlib.use("Agg")``) in scripts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor

from .interpolate import InterpolationResult
from .plane import PlaneResult

__all__ = ["plot_lines", "plot_contour", "plot_surface"]


def _axes(ax: Any, **kw: Any) -> Any:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=(5, 4), **kw)
    return ax


def plot_lines(result: InterpolationResult, split: str = "train", metric: str = "loss",
               ax: Any = None, labels: Sequence[str] | None = None, **style: Any) -> Any:
    """Every member's ``metric`` on ``split`` against α (one line per member)."""
    ax = _axes(ax)
    values = result.metrics[metric][split].numpy()
    for k in range(values.shape[1]):
        label = labels[k] if labels is not None else None
        ax.plot(result.alphas.numpy(), values[:, k], label=label, **style)
    ax.set_xlabel("α")
    ax.set_ylabel(f"{split} {metric}")
    return ax


def plot_contour(result: PlaneResult, member: int = 0, split: str = "train",
                 metric: str = "loss", ax: Any = None, levels: int = 30, log: bool = True,
                 trajectory: Tensor | np.ndarray | None = None) -> Any:
    """Filled contours of one member's ``metric`` over the plane (log10 by default), with an
    optional trajectory ``(T, 2)`` of plane coordinates drawn on top."""
    ax = _axes(ax)
    z = result.metrics[metric][split][..., member].numpy()
    if log:
        z = np.log10(np.maximum(z, 1e-12))
    gx, gy = np.meshgrid(result.xs.numpy(), result.ys.numpy(), indexing="ij")
    cs = ax.contourf(gx, gy, z, levels=levels, cmap="viridis")
    ax.figure.colorbar(cs, ax=ax, label=f"log10 {split} {metric}" if log else metric)
    if trajectory is not None:
        t = np.asarray(trajectory)
        ax.plot(t[:, 0], t[:, 1], "w.-", lw=1, ms=3)
        ax.plot(t[-1, 0], t[-1, 1], "r*", ms=8)
    ax.set_xlabel("δ₁")
    ax.set_ylabel("δ₂")
    return ax


def plot_surface(result: PlaneResult, member: int = 0, split: str = "train",
                 metric: str = "loss", ax: Any = None) -> Any:
    """A 3-D surface of one member's ``metric`` over the plane."""
    if ax is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(5, 4))
        ax = fig.add_subplot(projection="3d")
    z = result.metrics[metric][split][..., member].numpy()
    gx, gy = np.meshgrid(result.xs.numpy(), result.ys.numpy(), indexing="ij")
    ax.plot_surface(gx, gy, z, cmap="viridis", linewidth=0, antialiased=True)
    ax.set_xlabel("δ₁")
    ax.set_ylabel("δ₂")
    ax.set_zlabel(f"{split} {metric}")
    return ax
