r"""Two-dimensional slices of the loss landscape (docs/science.md §8; Li et al. 2018).

The loss is evaluated on the plane

.. math:: \theta(a, b) = \theta_c + a\,\delta_1 + b\,\delta_2

over a grid of (a, b) (default 51 × 51 on [−1, 1]²). Directions:

* :func:`random_directions` — Gaussian directions, *filter-normalized*: every filter (row of
  a weight matrix, output channel of a convolution — per ensemble member) of
  :math:`\delta` is rescaled to the norm of the matching filter of :math:`\theta_c`, and
  biases and batch-norm entries (every parameter with one entry per filter) are zeroed
  (tomgoldstein/loss-landscape's ``filter`` / ``biasbn`` defaults);
* :func:`plane_through` — the plane through three parameter vectors
  :math:`\theta_A, \theta_B, \theta_C` (centre A, directions B − A and C − A, so the three sit
  at (0, 0), (1, 0), (0, 1));
* :func:`trajectory_pca` — a run's snapshots projected on their first two principal
  directions about the final point (the anchors' most asked-for plot), with the coordinates
  of each snapshot in that plane.

An ensemble evaluates all K members at each grid point in one call (every member has its own
centre and directions). Buffers (batch-norm statistics) stay at the centre's
(``batchnorm="freeze"``) or are re-estimated at each point (``"recompute"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from .._checks import check_int, check_seed
from . import _state
from ._state import LossFn
from .interpolate import _metrics

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["PlaneResult", "plane", "random_directions", "plane_through", "trajectory_pca",
           "DIRECTION_NORMALIZATIONS"]

DIRECTION_NORMALIZATIONS = ("filter", "layer", "none")


def _lead(model: nn.Module) -> int:
    return 1 if _state.members(model) is not None else 0


def normalize_direction(model: nn.Module, direction: Mapping[str, Tensor],
                        center: Mapping[str, Tensor], normalization: str) -> dict[str, Tensor]:
    """Rescale a direction (parameters only) as :func:`random_directions` describes."""
    if normalization not in DIRECTION_NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {DIRECTION_NORMALIZATIONS}, got "
                         f"{normalization!r}")
    lead = _lead(model)
    out = {}
    for name in _state.parameter_names(model):
        d, c = direction[name].to(center[name]), center[name]
        if normalization == "none":
            out[name] = d.clone()
        elif d.ndim - lead <= 1:
            out[name] = torch.zeros_like(d)  # biases and batch-norm weights: zeroed
        else:
            axes = tuple(range(lead + 1 if normalization == "filter" else lead, d.ndim))
            scale = c.norm(dim=axes, keepdim=True) / d.norm(dim=axes, keepdim=True).clamp_min(
                1e-30)
            out[name] = d * scale
    return out


def random_directions(model: nn.Module, center: Mapping[str, Tensor], seed: int = 0,
                      normalization: str = "filter") -> tuple[dict[str, Tensor], ...]:
    """Two Gaussian directions (parameters only) from ``torch.Generator().manual_seed(seed)``,
    normalized by ``"filter"`` (default), ``"layer"`` (each tensor to the norm of the centre's
    tensor, per member) or ``"none"``."""
    gen = torch.Generator().manual_seed(check_seed("seed", seed))
    center = _state.check_state(model, center, "center")
    out = []
    for _ in range(2):
        raw = {n: torch.randn(center[n].shape, generator=gen, dtype=torch.float64)
               for n in _state.parameter_names(model)}
        out.append(normalize_direction(model, raw, center, normalization))
    return tuple(out)


def plane_through(model: nn.Module, a: Mapping[str, Tensor], b: Mapping[str, Tensor],
                  c: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], tuple[dict, dict]]:
    """``(center, (δ₁, δ₂))`` = ``(A, (B − A, C − A))`` over the parameters (buffers of
    the centre kept); use with ``normalization="none"``."""
    sa = _state.check_state(model, a, "a")
    sb, sc = _state.check_state(model, b, "b"), _state.check_state(model, c, "c")
    names = _state.parameter_names(model)
    return sa, ({n: sb[n] - sa[n] for n in names}, {n: sc[n] - sa[n] for n in names})


def trajectory_pca(model: nn.Module, snapshots: Sequence[Mapping[str, Tensor]]
                   ) -> tuple[dict[str, Tensor], tuple[dict, dict], Tensor, Tensor]:
    """Principal directions of a trajectory about its last snapshot.

    With :math:`M` the matrix of :math:`\\theta_t - \\theta_{\\text{last}}` (one row per
    snapshot, parameters only), the directions are its two leading right singular vectors
    (per member for an ensemble, one batched SVD).

    Returns:
        ``(center, (δ₁, δ₂), coords, explained)``: the last snapshot, the unit directions,
        the snapshots' coordinates ``(K, T, 2)`` (``(T, 2)`` plain) in the plane, and the
        fraction of the variance each direction explains ``(K, 2)`` (``(2,)``).
    """
    if len(snapshots) < 3:
        raise ValueError(f"trajectory_pca needs at least 3 snapshots, got {len(snapshots)}")
    states = [_state.check_state(model, s, f"snapshots[{i}]") for i, s in enumerate(snapshots)]
    names = _state.parameter_names(model)
    k = _state.members(model)
    rows = k or 1

    def flat(s: Mapping[str, Tensor]) -> Tensor:
        return torch.cat([s[n].double().reshape(rows, -1) for n in names], dim=1)

    center = states[-1]
    m = torch.stack([flat(s) - flat(center) for s in states], dim=1)  # (K, T, P)
    _, sv, vh = torch.linalg.svd(m, full_matrices=False)
    dirs = vh[:, :2]  # (K, 2, P)
    coords = torch.einsum("ktp,kdp->ktd", m, dirs)
    explained = sv[:, :2].square() / sv.square().sum(-1, keepdim=True)
    sizes = [center[n][0].numel() if k is not None else center[n].numel() for n in names]
    pair = []
    for d in range(2):
        parts = torch.split(dirs[:, d], sizes, dim=1)
        pair.append({n: p.reshape(center[n].shape).to(center[n].dtype)
                     for n, p in zip(names, parts, strict=True)})
    if k is None:
        coords, explained = coords[0], explained[0]
    return center, (pair[0], pair[1]), coords, explained


@dataclass
class PlaneResult:
    """Metrics on a grid of the plane :math:`\\theta_c + a\\delta_1 + b\\delta_2`.

    Attributes:
        xs, ys: ``(G₁,)``, ``(G₂,)`` float64 coordinates a and b.
        metrics: ``{metric: {split: (G₁, G₂, K)}}`` (K = 1 for a plain model); ``loss`` and
            ``accuracy`` are its entries.
    """

    xs: Tensor
    ys: Tensor
    metrics: dict[str, dict[str, Tensor]]

    @property
    def loss(self) -> dict[str, Tensor]:
        return self.metrics["loss"]

    @property
    def accuracy(self) -> dict[str, Tensor]:
        return self.metrics.get("accuracy", {})

    def to_frame(self, **columns: object) -> pd.DataFrame:
        import pandas as pd

        """Long format: ``member, x, y, split, metric, value`` (plus constant ``columns``)."""
        parts = []
        gx, gy = np.meshgrid(self.xs.numpy(), self.ys.numpy(), indexing="ij")
        for metric, by_split in self.metrics.items():
            for split, v in by_split.items():
                k = v.shape[-1]
                parts.append(pd.DataFrame({
                    "member": np.tile(np.arange(k), gx.size),
                    "x": np.repeat(gx.reshape(-1), k), "y": np.repeat(gy.reshape(-1), k),
                    "split": split, "metric": metric, "value": v.numpy().reshape(-1)}))
        frame = pd.concat(parts, ignore_index=True)
        for i, (name, value) in enumerate(columns.items()):
            frame.insert(i, name, value)
        return frame


def _axis(grid: int | Sequence[float] | Tensor, span: tuple[float, float]) -> Tensor:
    if isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):
        return torch.linspace(span[0], span[1], check_int("grid", grid, minimum=2),
                              dtype=torch.float64)
    return torch.as_tensor(grid, dtype=torch.float64).reshape(-1)


def plane(
    model: nn.Module,
    center: Mapping[str, Tensor],
    directions: tuple[Mapping[str, Tensor], Mapping[str, Tensor]] | None,
    data: tuple[Tensor, Tensor] | Mapping[str, tuple[Tensor, Tensor]],
    loss: LossFn | None = None,
    grid: int | tuple[Sequence[float] | Tensor, Sequence[float] | Tensor] = 51,
    normalization: str = "filter",
    *,
    span: tuple[float, float] = (-1.0, 1.0),
    seed: int = 0,
    metrics: Mapping[str, LossFn] | str | None = "auto",
    batchnorm: str = "freeze",
    batch_size: int = 10_000,
    bn_batch_size: int = 512,
) -> PlaneResult:
    r"""The loss (and accuracy) on the plane :math:`\theta_c + a\delta_1 + b\delta_2`.

    Args:
        model, data, loss, metrics: as for :func:`~thermotrain.landscape.interpolate`.
        center: the state :math:`\theta_c` (``model.state_dict()`` keys).
        directions: two parameter dicts :math:`(\delta_1, \delta_2)`, normalized by
            ``normalization`` (``"filter"``, ``"layer"``, ``"none"`` — use ``"none"`` for
            :func:`plane_through` / :func:`trajectory_pca` directions); ``None``: two random
            Gaussian directions from ``seed`` (:func:`random_directions`).
        grid: points per axis on ``span`` (default 51 on [−1, 1]), or the coordinates
            ``(xs, ys)``.
        batchnorm: ``"freeze"`` (the centre's statistics, default) or ``"recompute"`` (one
            pass over the ``train`` split at every grid point).

    Returns:
        :class:`PlaneResult`.
    """
    c = _state.check_state(model, center, "center")
    splits = _state.check_data(data)
    if batchnorm not in ("freeze", "recompute"):
        raise ValueError(f"batchnorm must be 'freeze' or 'recompute' for a plane, got "
                         f"{batchnorm!r}")
    if directions is None:
        d1, d2 = random_directions(model, c, seed, normalization)
    else:
        if not (isinstance(directions, (tuple, list)) and len(directions) == 2):
            raise TypeError("directions must be a pair of parameter dicts (or None for random "
                            f"ones), got {type(directions).__name__}")
        d1, d2 = (normalize_direction(model, d, c, normalization) for d in directions)
    if isinstance(grid, (tuple, list)) and len(grid) == 2 and not isinstance(grid[0], float):
        xs, ys = _axis(grid[0], span), _axis(grid[1], span)
    else:
        xs = ys = _axis(grid, span)  # type: ignore[arg-type]
    extra = _metrics(model, loss, metrics)
    loss_fn = loss if loss is not None else _state.default_loss(model)
    bn_x = splits["train"][0] if batchnorm == "recompute" and "train" in splits else None
    if batchnorm == "recompute" and bn_x is None:
        raise ValueError("batchnorm='recompute' needs a 'train' split in data")
    values: dict[str, dict[str, list[Tensor]]] = {}
    for a in xs.tolist():
        for b in ys.tolist():
            state = dict(c)
            for n in d1:
                state[n] = c[n] + (a * d1[n] + b * d2[n]).to(c[n].dtype)
            if bn_x is not None:
                _state.recompute_batchnorm(model, state, bn_x, bn_batch_size)
            res = _state.evaluate(model, state, splits, loss_fn, extra, batch_size)
            for split, by_metric in res.items():
                for metric, v in by_metric.items():
                    values.setdefault(metric, {}).setdefault(split, []).append(v.cpu())
    g1, g2 = len(xs), len(ys)
    out = {m: {s: torch.stack(v).reshape(g1, g2, -1) for s, v in by_split.items()}
           for m, by_split in values.items()}
    return PlaneResult(xs, ys, out)
