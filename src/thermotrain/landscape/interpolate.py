r"""Monotonic linear interpolation: the loss along the straight line between two states.

SPEC §8 (after Lucas et al. 2021, code AtheMathmo/mli-release; Goodfellow et al. 2015). The
path is

.. math:: \theta(\alpha) = (1 - \alpha)\,\theta_0 + \alpha\,\theta_T ,

evaluated at every α of a grid (default 50 evenly spaced values in [0, 1], endpoints
included; α ∈ [−0.5, 1.5] for the line between two solutions, paper 000 Fig. 3) with a
functional call — the model's own parameters are never touched. An ensemble model
(``ensemble_size = K``, every state entry stacked on axis 0) interpolates member k's start to
member k's end for all K members at once. Several α are evaluated together (a chunk of
``alpha_batch`` α, default as many as fit ``batch_size`` rows): the path states of the chunk
are stacked on a new leading axis and one ``torch.func.vmap``-ed functional call evaluates
them all — for small nets one call per α is Python-overhead bound (``docs/landscape.md``).
Small CPU MLPs with the default loss and accuracy skip all of this: one C call per split,
the first layer at the two ends only (:mod:`thermotrain.landscape._fastline`, same numbers).

Batch norm (SPEC §8), ``batchnorm=``:

* ``"recompute"`` (default, the MLI code): interpolate all state, reset the running
  statistics and re-estimate them with one pass over the train split at EMA momentum 0.1;
* ``"interpolate"``: running statistics interpolated like the weights
  (tomgoldstein/loss-landscape);
* ``"freeze"``: running statistics kept at θ_T's (marcellodebernardi/loss-landscapes).

The largest rise along the path is
:math:`\Delta_{\min} = \max\bigl(0, \max_{i<j} (L_j - L_i)\bigr)`; a run is non-monotone
when :math:`\Delta_{\min}` > tol. See ``docs/landscape.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from .._checks import check_int
from ..models import accuracy, classification_loss, ensemble_accuracy, ensemble_loss
from . import _fastline, _state
from ._state import LossFn

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["InterpolationResult", "interpolate", "alpha_grid", "delta_min", "is_monotone",
           "distance", "BATCHNORM_MODES"]

BATCHNORM_MODES = ("recompute", "interpolate", "freeze")
NORMALIZATIONS = ("start", "end", "none")


def alpha_grid(alphas: int | Sequence[float] | Tensor = 50) -> Tensor:
    """The α values: a count n ≥ 2 (``linspace(0, 1, n)``) or explicit values (float64)."""
    if isinstance(alphas, Tensor):
        grid = alphas.detach().to("cpu", torch.float64).reshape(-1)
    elif isinstance(alphas, Sequence) and not isinstance(alphas, (str, bytes)):
        grid = torch.tensor([float(a) for a in alphas], dtype=torch.float64)
    else:
        n = check_int("alphas", alphas, minimum=2)
        return torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    if grid.numel() < 2 or not bool(torch.isfinite(grid).all()):
        raise ValueError(f"alphas must hold at least two finite values, got {grid.tolist()}")
    if not bool((grid[1:] > grid[:-1]).all()):
        raise ValueError(f"alphas must be strictly increasing, got {grid.tolist()}")
    return grid


@dataclass
class InterpolationResult:
    """The metrics along an interpolation path.

    Attributes:
        alphas: ``(A,)`` float64, the α values.
        loss: ``{split: (A, K)}`` mean loss per α and member (K = 1 for a plain model).
        accuracy: ``{split: (A, K)}`` (empty when no accuracy was asked for).
        metrics: ``{metric: {split: (A, K)}}``, every metric including ``"loss"``.
        members: K (``None`` for a plain model, whose arrays still have K = 1 columns).
        batchnorm: the batch-norm mode used (``None`` if the model has no batch norm).
    """

    alphas: Tensor
    metrics: dict[str, dict[str, Tensor]]
    members: int | None = None
    batchnorm: str | None = None
    loss: dict[str, Tensor] = field(init=False)
    accuracy: dict[str, Tensor] = field(init=False)

    def __post_init__(self) -> None:
        self.loss = self.metrics["loss"]
        self.accuracy = self.metrics.get("accuracy", {})

    @property
    def splits(self) -> list[str]:
        return list(self.loss)

    def delta_min(self, split: str = "train") -> Tensor:
        """Per-member :math:`\\Delta_{\\min}` ``(K,)`` of the loss on ``split``."""
        return delta_min(self.loss[self._split(split)])

    def is_monotone(self, split: str = "train", tol: float = 1e-3) -> Tensor:
        """Per-member bool ``(K,)``: :math:`\\Delta_{\\min} \\le` ``tol``."""
        return self.delta_min(split) <= tol

    def _split(self, split: str) -> str:
        if split not in self.loss:
            raise ValueError(f"split must be one of {self.splits}, got {split!r}")
        return split

    def to_frame(self, seeds: Sequence[int] | None = None, **columns: object) -> pd.DataFrame:
        import pandas as pd

        """Long format: one row per (member, α, split, metric) with columns ``member``,
        ``seed`` (from ``seeds``, else the member index), ``alpha``, ``split``, ``metric``,
        ``value``, plus constant ``columns`` (e.g. ``study=..., method=...``) first."""
        k = next(iter(self.loss.values())).shape[1]
        if seeds is not None and len(seeds) != k:
            raise ValueError(f"seeds must have one entry per member ({k}), got {len(seeds)}")
        seed_col = np.asarray(list(seeds) if seeds is not None else range(k))
        a = self.alphas.numpy()
        parts = []
        for metric, by_split in self.metrics.items():
            for split, values in by_split.items():
                v = values.numpy()  # (A, K)
                parts.append(pd.DataFrame({
                    "member": np.tile(np.arange(k), len(a)),
                    "seed": np.tile(seed_col, len(a)),
                    "alpha": np.repeat(a, k),
                    "split": split, "metric": metric, "value": v.reshape(-1)}))
        frame = pd.concat(parts, ignore_index=True)
        for i, (name, value) in enumerate(columns.items()):
            frame.insert(i, name, value)
        return frame


def _check_mode(batchnorm: object) -> str:
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm must be one of {BATCHNORM_MODES}, got {batchnorm!r}")
    return str(batchnorm)


def _metrics(model: nn.Module, loss: LossFn | None, metrics: object) -> dict[str, LossFn]:
    if metrics == "auto":
        return {"accuracy": _state.default_accuracy(model)} if loss is None else {}
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping) or not all(callable(f) for f in metrics.values()):
        raise TypeError("metrics must be 'auto', None or a dict name -> fn(logits, y) returning "
                        f"the batch mean, got {metrics!r}")
    if "loss" in metrics:
        raise ValueError("metrics must not contain 'loss' (pass the loss as loss=)")
    return dict(metrics)


def path_state(model: nn.Module, start: dict[str, Tensor], end: dict[str, Tensor], alpha: float,
               batchnorm: str, bn_x: Tensor | None, bn_batch_size: int,
               bn_momentum: float | None = 0.1) -> dict[str, Tensor]:
    """θ(α) with the batch-norm buffers set by ``batchnorm`` (see the module docstring)."""
    buffers = {name for name, _ in model.named_buffers()}
    state = {}
    for key in start:
        if key in buffers and batchnorm == "freeze":
            state[key] = end[key].clone()
        else:
            state[key] = _state.lerp(start[key], end[key], alpha).contiguous()
    if batchnorm == "recompute" and bn_x is not None:
        _state.recompute_batchnorm(model, state, bn_x, bn_batch_size, bn_momentum)
    return state


def interpolate(
    model: nn.Module,
    start: Mapping[str, Tensor],
    end: Mapping[str, Tensor],
    data: tuple[Tensor, Tensor] | Mapping[str, tuple[Tensor, Tensor]],
    loss: LossFn | None = None,
    alphas: int | Sequence[float] | Tensor = 50,
    batchnorm: str = "recompute",
    metrics: Mapping[str, LossFn] | str | None = "auto",
    *,
    batch_size: int = 10_000,
    bn_batch_size: int = 512,
    bn_split: str = "train",
    bn_momentum: float | None = 0.1,
    alpha_batch: int | None = None,
) -> InterpolationResult:
    r"""Loss (and accuracy) along :math:`\theta(\alpha) = (1-\alpha)\theta_0 + \alpha\theta_T`.

    Args:
        model: any ``nn.Module`` (used as the function; its parameters are left unchanged);
            a thermotrain ensemble (``ensemble_size = K``) interpolates all K members at once.
        start, end: state dicts :math:`\theta_0`, :math:`\theta_T` with the keys and shapes
            of ``model.state_dict()`` (parameters and buffers).
        data: an ``(x, y)`` pair (the split ``"train"``) or ``{"train": (x, y), "test": ...}``.
        loss: ``loss(logits, y)`` → the batch-mean loss (``(K,)`` per member for an
            ensemble). ``None``: the classification loss (sigmoid/BCE or softmax/CE, SPEC §6).
        alphas: a count n (``linspace(0, 1, n)``, endpoints included) or increasing values
            (e.g. ``torch.linspace(-0.5, 1.5, 41)``).
        batchnorm: ``"recompute"`` (default), ``"interpolate"`` or ``"freeze"`` (SPEC §8);
            ignored for models without batch norm.
        metrics: ``"auto"`` (accuracy when ``loss`` is the default classification loss),
            ``None``, or ``{name: fn(logits, y)}`` returning batch means.
        batch_size: rows per evaluation chunk (memory only; the results are full-split means;
            the fused path keeps blocks of 32 rows in cache whatever its value).
        bn_batch_size: batch size of the "recompute" pass (the MLI code's 512).
        bn_split: the split whose inputs re-estimate the statistics.
        bn_momentum: EMA momentum of the "recompute" pass (the MLI code's 0.1), or ``None``
            for the cumulative average of the batch statistics — for passes of few batches,
            where the reset values (0, 1) would still weigh 0.9ⁿ after n updates.
        alpha_batch: α evaluated in one vectorized call (speed and memory only, the results
            agree to rounding); ``None``: ``max(1, batch_size // (K · rows))`` with ``rows``
            the largest split's evaluation chunk (K = 1 for a plain model) — batching pays
            only while a call is overhead-bound, and at most ``max(batch_size, K · rows)``
            member-rows are in flight; ``1``: one functional call per α (a 20-member
            ensemble on 1000 rows stays there: it is compute-bound, and the vmap-ed call
            measured slower, ``benchmarks/landscape_speed.py``). With ``batchnorm="recompute"`` the
            re-estimation pass still runs once per α (it updates buffers in place); only the
            evaluation is batched. Ignored by the fused path (all α in one call per split).

    Returns:
        :class:`InterpolationResult` (``(A, K)`` arrays per split).

    Example:
        >>> from thermotrain.models import MLP
        >>> net = MLP([2, 16, 1], ensemble=4, seed=0)
        >>> theta0 = {k: v.clone() for k, v in net.state_dict().items()}
        >>> x, y = torch.randn(64, 2), torch.randint(0, 2, (64,))
        >>> res = interpolate(net, theta0, net.state_dict(), (x, y), alphas=11)
        >>> res.loss["train"].shape
        torch.Size([11, 4])
    """
    mode = _check_mode(batchnorm)
    s0 = _state.check_state(model, start, "start")
    s1 = _state.check_state(model, end, "end")
    splits = _state.check_data(data)
    grid = alpha_grid(alphas)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    bn_batch_size = check_int("bn_batch_size", bn_batch_size, minimum=2)
    extra = _metrics(model, loss, metrics)
    loss_fn = loss if loss is not None else _state.default_loss(model)
    if not callable(loss_fn):
        raise TypeError(f"loss must be callable fn(logits, y) or None, got {loss!r}")
    has_bn = bool(_state.batchnorm_modules(model))
    bn_x = None
    if has_bn and mode == "recompute":
        if bn_split not in splits:
            raise ValueError(f"batchnorm='recompute' needs the split {bn_split!r} in data "
                             f"(got {list(splits)}); pass bn_split= or another mode")
        bn_x = splits[bn_split][0]
    if alpha_batch is not None:
        alpha_batch = check_int("alpha_batch", alpha_batch, minimum=1)
    fast = _fastline.evaluate(model, s0, s1, grid, splits, loss, extra, mode, bn_x,
                              bn_batch_size, bn_momentum)
    if fast is not None:  # small CPU MLPs: one C call per split (docs/landscape.md, Speed)
        return InterpolationResult(grid, fast, _state.members(model), mode if has_bn else None)
    rows_per_call = min(batch_size, max(x.shape[0] for x, _ in splits.values()))
    chunk = (max(1, batch_size // (rows_per_call * (_state.members(model) or 1)))
             if alpha_batch is None
             else alpha_batch)
    rows: dict[str, dict[str, list[Tensor]]] = {}
    values_list = grid.tolist()
    for lo in range(0, len(values_list), chunk):
        states = [path_state(model, s0, s1, alpha, mode, bn_x, bn_batch_size, bn_momentum)
                  for alpha in values_list[lo:lo + chunk]]
        if len(states) == 1:
            values = _state.evaluate(model, states[0], splits, loss_fn, extra, batch_size)
            values = {sp: {m: v.unsqueeze(0) for m, v in d.items()} for sp, d in values.items()}
        else:
            values = _evaluate_stacked(model, states, splits, loss_fn, extra, batch_size)
        for split, by_metric in values.items():
            for metric, v in by_metric.items():
                rows.setdefault(metric, {}).setdefault(split, []).append(v.cpu())
    out = {m: {s: torch.cat(v) for s, v in by_split.items()} for m, by_split in rows.items()}
    return InterpolationResult(grid, out, _state.members(model), mode if has_bn else None)


# Metrics that act member by member on (K, B, out) logits: a chunk of A α's logits folded
# to (A·K, B, out) gives all A·K means in one call (a plain model's (A, B, out) likewise).
_FOLDED = {ensemble_loss: ensemble_loss, classification_loss: ensemble_loss,
           ensemble_accuracy: ensemble_accuracy, accuracy: ensemble_accuracy}


def _per_alpha(fn: LossFn, logits: Tensor, y: Tensor, k: int | None) -> Tensor:
    """``fn`` of each α's logits ``(A, [K,] B, out)`` → ``(A, K)`` (K = 1 for a plain model)."""
    folded = _FOLDED.get(fn)
    if folded is not None and y.ndim == 1:
        return folded(logits.reshape(-1, *logits.shape[-2:]), y).reshape(logits.shape[0], -1)
    return torch.stack([_state.per_member(fn(z, y), k) for z in logits])


@torch.no_grad()
def _evaluate_stacked(model: nn.Module, states: list[dict[str, Tensor]],
                      splits: Mapping[str, tuple[Tensor, Tensor]], loss: LossFn,
                      metrics: Mapping[str, LossFn], batch_size: int
                      ) -> dict[str, dict[str, Tensor]]:
    """:func:`_state.evaluate` for A states at once: ``{split: {metric: (A, K)}}``.

    The states are stacked on a new axis 0 and the functional call is ``vmap``-ed over it;
    row chunks are combined with weights ``rows / N`` as in :func:`_state.evaluate`."""
    k = _state.members(model)
    stacked = {key: torch.stack([s[key] for s in states]) for key in states[0]}
    out: dict[str, dict[str, Tensor]] = {}
    with _state.eval_mode(model):
        for split, (x, y) in splits.items():
            n = x.shape[0]
            sums: dict[str, Tensor] = {}
            for lo in range(0, n, batch_size):
                xb, yb = x[lo:lo + batch_size], y[lo:lo + batch_size]
                logits = vmap(lambda st, xb=xb: functional_call(model, st, (xb,)))(stacked)
                w = xb.shape[0] / n
                for name, fn in {"loss": loss, **metrics}.items():
                    v = _per_alpha(fn, logits, yb, k).double() * w
                    sums[name] = sums[name] + v if name in sums else v
            out[split] = sums
    return out


def delta_min(losses: Tensor | np.ndarray | Sequence[float]) -> Tensor:
    r""":math:`\Delta_{\min} = \max(0, \max_{i<j} (L_j - L_i))` along axis 0 (SPEC §8).

    The largest rise of the loss along the path: for each j the rise over the lowest loss
    *before* it, maximized over every j ≥ 1 — including the last α (the MLI code's loop stops
    one short and misses a rise that happens only there).

    Args:
        losses: ``(A,)`` or ``(A, K)`` (one column per run).

    Returns:
        ``()`` or ``(K,)``, ≥ 0. NaN if a column holds a NaN.
    """
    v = torch.as_tensor(np.array(losses, dtype=np.float64) if not isinstance(losses, Tensor)
                        else losses.detach().cpu().double())
    if v.ndim not in (1, 2) or v.shape[0] < 2:
        raise ValueError(f"losses must have shape (A,) or (A, K) with A >= 2, got "
                         f"{tuple(v.shape)}")
    best_before = torch.cummin(v, dim=0).values[:-1]  # min_{i<=j-1} L_i, for j = 1..A-1
    rise = (v[1:] - best_before).amax(dim=0).clamp_min(0.0)
    nan = torch.isnan(v).any(dim=0)
    return torch.where(nan, torch.full_like(rise, float("nan")), rise)


def is_monotone(losses: Tensor | np.ndarray | Sequence[float] | InterpolationResult,
                tol: float = 1e-3, split: str = "train") -> Tensor:
    """Whether :math:`\\Delta_{\\min} \\le` ``tol`` (1e-3 for MNIST MLPs, 0 for CIFAR nets,
    SPEC §8), per column; an :class:`InterpolationResult` uses its ``split`` loss."""
    if isinstance(losses, InterpolationResult):
        losses = losses.loss[losses._split(split)]
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    return delta_min(losses) <= tol


def distance(start: Mapping[str, Tensor], end: Mapping[str, Tensor],
             normalization: str = "start", *, model: nn.Module | None = None,
             ensemble: bool | None = None) -> Tensor:
    r"""Distance travelled :math:`\lVert\theta_T - \theta_0\rVert` over the parameters.

    Batch-norm buffers (running statistics, counters) are excluded: with ``model`` the
    parameters are ``model.named_parameters()``; without it every floating-point entry whose
    name does not end in ``running_mean``/``running_var``/``num_batches_tracked``.

    Args:
        normalization: ``"start"`` — divided by :math:`\lVert\theta_0\rVert` (SPEC §8, the
            reported number); ``"end"`` — by :math:`\lVert\theta_T\rVert` (what the MLI code
            logs in one place); ``"none"`` — the plain Euclidean distance.
        model: tells parameters from buffers and whether it is an ensemble.
        ensemble: per-member distances over axis 0 (default: ``model.ensemble_size`` set).

    Returns:
        ``(K,)`` for an ensemble, else ``()``.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got "
                         f"{normalization!r}")
    if model is not None:
        keys = _state.parameter_names(model)
        if ensemble is None:
            ensemble = _state.members(model) is not None
    else:
        skip = ("running_mean", "running_var", "num_batches_tracked")
        keys = [k for k, v in start.items()
                if isinstance(v, Tensor) and v.dtype.is_floating_point and not k.endswith(skip)]
    missing = [k for k in keys if k not in start or k not in end]
    if missing or not keys:
        raise ValueError(f"start and end must both hold the parameters; missing {missing}")

    def sq(t: Tensor) -> Tensor:
        t = t.detach().double()
        return t.flatten(1).square().sum(1) if ensemble else t.square().sum()

    diff = sum(sq(end[k] - start[k]) for k in keys).sqrt()
    if normalization == "none":
        return diff
    ref = start if normalization == "start" else end
    return diff / sum(sq(ref[k]) for k in keys).sqrt()
