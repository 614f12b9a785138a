r"""The loss along a line for small MLPs in one C call per split (private; ``interpolate``).

For an :class:`~thermotrain.models.MLP` (plain or an ensemble of K, no batch norm, ReLU or
tanh, the default classification loss and accuracy) every point
:math:`\theta_k(\alpha) = (1-\alpha)\theta_{0,k} + \alpha\theta_{T,k}` of the grid, for every
member, is evaluated on each split by :func:`thermotrain.models.fused.evaluate_line`: work
items (member, block of 32 rows) loop over all α with the block's activations in cache —
never a (K, N, width) array — and the first layer, affine in its parameters, is evaluated
at the two ends only: :math:`z_1(\alpha) = z_1(\theta_0) + \alpha (z_1(\theta_T) -
z_1(\theta_0))`. The results equal the torch path's (``vmap``-ed ``functional_call`` +
``ensemble_loss`` / ``ensemble_accuracy``) to rounding
(``tests/landscape/test_interpolate_fused.py``).

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

#: (member, block of rows, α) partial sums the kernel holds at once (chunks of α beyond)
MAX_PARTIALS = 1 << 22
ROWS_PER_BLOCK = 32  # EVAL_ROWS in _mlp.c


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
    plain = _state.members(model) is None
    k = _state.members(model) or 1

    def layers(state: Mapping[str, Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        out: tuple[list[Tensor], list[Tensor]] = ([], [])
        for i in range(len(model.layers)):
            for group, name in zip(out, ("weight", "bias"), strict=True):
                t = state[f"layers.{i}.{name}"]
                group.append((t.unsqueeze(0) if plain else t).contiguous())
        return out

    s0, s1 = layers(start), layers(end)
    parts: dict[str, dict[str, list[Tensor]]] = {name: {} for name in ("loss", *metrics)}
    for split, (x, y) in splits.items():
        blocks = -(-x.shape[0] // ROWS_PER_BLOCK)
        chunk = max(1, MAX_PARTIALS // (k * blocks))
        for lo in range(0, alphas.shape[0], chunk):
            mean_loss, acc = fused.evaluate_line(s0, s1, alphas[lo:lo + chunk],
                                                 model.activation, x, y)
            if not bool(torch.isfinite(mean_loss).all()):
                return None
            parts["loss"].setdefault(split, []).append(mean_loss)
            for name in metrics:
                parts[name].setdefault(split, []).append(acc)
    return {m: {s: torch.cat(v) for s, v in by_split.items()} for m, by_split in parts.items()}
