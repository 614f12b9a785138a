r"""The loss along a line for small MLPs in one C call per split (private; ``interpolate``).

For an :class:`~thermotrain.models.MLP` (plain or an ensemble of K, no batch norm, ReLU or
tanh, the default classification loss and accuracy) the path states
:math:`\theta_k(\alpha) = (1-\alpha)\theta_{0,k} + \alpha\theta_{T,k}` of every α of the
grid and every member are tiny (A · K · P numbers for P parameters per member): they are
formed here in torch, one ``torch.lerp`` per tensor, and the A · K "virtual members" are
evaluated on each split by :func:`thermotrain.models.fused.evaluate_members` — member by
member, rows in blocks kept in cache, never a (K, N, width) activation array. The results
equal the torch path's (``vmap``-ed ``functional_call`` + ``ensemble_loss`` /
``ensemble_accuracy``) to rounding (``tests/landscape/test_interpolate_fused.py``).

Whenever the conditions do not hold (another model, a custom loss or metric, batch norm, a
non-CPU device, a dtype mix, targets the torch path would reject, no C compiler) or the
inputs or results are not finite (the kernel is compiled with ``-ffast-math``, which does not
promise torch's NaN/inf propagation), :func:`evaluate` returns ``None`` and ``interpolate``
takes the torch path. See ``docs/landscape.md`` (Speed).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..models import MLP, fused
from . import _state
from ._state import LossFn, Split

#: parameters of the (α, member) pairs formed at once (float32: 16 MB)
MAX_CHUNK_NUMBERS = 1 << 22


def applies(model: nn.Module, loss: LossFn | None, metrics: Mapping[str, LossFn],
            splits: Mapping[str, Split], states: tuple[Mapping[str, Tensor], ...]) -> bool:
    """Whether :func:`evaluate` computes exactly what the torch path would."""
    if not isinstance(model, MLP) or model.batchnorm or _state.batchnorm_modules(model):
        return False
    if loss is not None and loss is not _state.default_loss(model):
        return False
    accuracy = _state.default_accuracy(model)
    if any(fn is not accuracy for fn in metrics.values()):
        return False
    dtype = model.layers[0].weight.dtype
    if not all(t.dtype == dtype and t.device.type == "cpu" and bool(torch.isfinite(t).all())
               for s in states for t in s.values()):
        return False
    return all(fused.supports_evaluation(model, x, y) and bool(torch.isfinite(x).all())
               for x, y in splits.values())


@torch.no_grad()
def evaluate(model: nn.Module, start: Mapping[str, Tensor], end: Mapping[str, Tensor],
             alphas: Tensor, splits: Mapping[str, Split], loss: LossFn | None,
             metrics: Mapping[str, LossFn]) -> dict[str, dict[str, Tensor]] | None:
    """``{metric: {split: (A, K)}}`` (``"loss"`` first, then ``metrics`` — accuracies — in
    their order), or ``None`` when the torch path must be taken (see the module docstring)."""
    if not applies(model, loss, metrics, splits, (start, end)):
        return None
    k = _state.members(model)
    n_layers = len(model.layers)
    keys = [(f"layers.{i}.weight", f"layers.{i}.bias") for i in range(n_layers)]
    per_member = sum(start[w].numel() + start[b].numel() for w, b in keys) // (k or 1)
    a_total = alphas.shape[0]
    chunk = max(1, MAX_CHUNK_NUMBERS // (per_member * (k or 1)))
    parts: dict[str, dict[str, list[Tensor]]] = {"loss": {}}
    for name in metrics:
        parts[name] = {}
    for lo in range(0, a_total, chunk):
        grid = alphas[lo:lo + chunk]
        weights, biases = [], []
        for wk, bk in keys:
            w0, w1, b0, b1 = start[wk], end[wk], start[bk], end[bk]
            if k is None:  # a plain model: one member
                w0, w1, b0, b1 = (t.unsqueeze(0) for t in (w0, w1, b0, b1))
            weights.append(_lerp_all(w0, w1, grid))
            biases.append(_lerp_all(b0, b1, grid))
        for split, (x, y) in splits.items():
            mean_loss, acc = fused.evaluate_members(weights, biases, model.activation, x, y)
            if not bool(torch.isfinite(mean_loss).all()):
                return None
            parts["loss"].setdefault(split, []).append(mean_loss.reshape(grid.shape[0], -1))
            for name in metrics:
                parts[name].setdefault(split, []).append(acc.reshape(grid.shape[0], -1))
    return {m: {s: torch.cat(v) for s, v in by_split.items()} for m, by_split in parts.items()}


def _lerp_all(a: Tensor, b: Tensor, alphas: Tensor) -> Tensor:
    """Member tensors ``(K, ...)`` → ``(A · K, ...)``: row ``i · K + k`` is member k at
    ``alphas[i]``, :math:`(1-\\alpha) a + \\alpha b` (``torch.lerp``, as the torch path's
    ``_state.lerp`` for α ∈ [0, 1]; the same value to rounding outside)."""
    w = alphas.to(a.dtype).reshape(-1, *([1] * a.dim()))
    out = torch.lerp(a.unsqueeze(0), b.unsqueeze(0), w)
    return out.reshape(-1, *a.shape[1:]).contiguous()
