r"""The loss along a line for small MLPs in one C call per split (private; ``interpolate``).

For an :class:`~thermotrain.models.MLP` (plain or an ensemble of K, ReLU or tanh, the
default classification loss and accuracy, batch norm or not) every point
:math:`\theta_k(\alpha) = (1-\alpha)\theta_{0,k} + \alpha\theta_{T,k}` of the grid, for every
member, is evaluated on each split by :func:`thermotrain.models.fused.evaluate_line`: work
items (member, block of 32 rows) loop over all α with the block's activations in cache —
never a (K, N, width) array — and the first layer, affine in its parameters, is evaluated
at the two ends only: :math:`z_1(\alpha) = z_1(\theta_0) + \alpha (z_1(\theta_T) -
z_1(\theta_0))`. Batch norm (eval mode) enters as a per-α, per-unit scale and shift
(:func:`_batchnorm`, statistics as ``interpolate``'s ``batchnorm=`` mode says). The results
equal the torch path's (``vmap``-ed ``functional_call`` +
``ensemble_loss`` / ``ensemble_accuracy``) to rounding
(``tests/landscape/test_interpolate_fused.py``).

Whenever the conditions do not hold (another model, a custom loss or metric, a non-CPU
device, a dtype mix, targets the torch path would reject, no C compiler) or the
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


def _norms(model: MLP) -> list[nn.Module]:
    """The hidden layers' batch norms (``[]`` without), each with affine γ, β and running
    statistics, in layer order."""
    return list(model.norms) if model.batchnorm else []


def applies(model: nn.Module, loss: LossFn | None, metrics: Mapping[str, LossFn],
            splits: Mapping[str, Split], states: tuple[Mapping[str, Tensor], ...]) -> bool:
    """Whether :func:`evaluate` computes exactly what the torch path would."""
    if not isinstance(model, MLP):
        return False
    norms = _norms(model)
    if len(_state.batchnorm_modules(model)) != len(norms) or not all(
            getattr(m, "weight", None) is not None and m.running_mean is not None
            for m in norms):
        return False
    if loss is not None and loss is not _state.default_loss(model):
        return False
    accuracy = _state.default_accuracy(model)
    if any(fn is not accuracy for fn in metrics.values()):
        return False
    dtype = model.layers[0].weight.dtype
    if not all(t.device.type == "cpu" and (not t.dtype.is_floating_point or (
            t.dtype == dtype and bool(torch.isfinite(t).all())))
               for s in states for t in s.values()):
        return False
    return all(fused.supports_evaluation(model, x, y, batchnorm=True)
               and bool(torch.isfinite(x).all()) for x, y in splits.values())


def _batchnorm(model: MLP, start: Mapping[str, Tensor], end: Mapping[str, Tensor],
               alphas: Tensor, mode: str, bn_x: Tensor | None, bn_batch_size: int,
               bn_momentum: float | None) -> tuple[Tensor, Tensor] | None:
    r"""Per α, member and hidden unit the eval-mode batch norm as ``z · scale + shift``:
    :math:`s = \gamma(lpha) / \sqrt{\sigma^2(lpha) + \epsilon}`,
    :math:`t = eta(lpha) - \mu(lpha) s` with γ, β interpolated like the weights and the
    running statistics as ``mode`` says (``interpolate.path_state``): interpolated, θ_T's
    ("freeze"), or re-estimated by torch's pass over ``bn_x`` at every α ("recompute", the
    same ``_state.recompute_batchnorm`` call as the torch path). ``(A, K, units)`` each,
    float64 arithmetic, or ``None`` if not finite."""
    norms = _norms(model)
    scales, shifts = [], []
    for alpha in alphas.tolist():
        state = {key: _state.lerp(start[key], end[key], alpha) for key in start}
        if mode == "freeze":
            for i in range(len(norms)):
                for stat in ("running_mean", "running_var"):
                    state[f"norms.{i}.{stat}"] = end[f"norms.{i}.{stat}"]
        elif mode == "recompute" and bn_x is not None:
            _state.recompute_batchnorm(model, state, bn_x, bn_batch_size, bn_momentum)
        s_a, t_a = [], []
        for i, m in enumerate(norms):
            gamma, beta, mu, var = (state[f"norms.{i}.{n}"].double() for n in
                                    ("weight", "bias", "running_mean", "running_var"))
            scale = gamma / torch.sqrt(var + m.eps)
            s_a.append(scale)
            t_a.append(beta - mu * scale)
        scales.append(torch.cat(s_a, dim=-1).reshape(-1, sum(model.widths[1:-1])))
        shifts.append(torch.cat(t_a, dim=-1).reshape(-1, sum(model.widths[1:-1])))
    dtype = model.layers[0].weight.dtype
    out = torch.stack(scales).to(dtype), torch.stack(shifts).to(dtype)
    return out if all(bool(torch.isfinite(t).all()) for t in out) else None


@torch.no_grad()
def evaluate(model: nn.Module, start: Mapping[str, Tensor], end: Mapping[str, Tensor],
             alphas: Tensor, splits: Mapping[str, Split], loss: LossFn | None,
             metrics: Mapping[str, LossFn], batchnorm: str = "recompute",
             bn_x: Tensor | None = None, bn_batch_size: int = 512,
             bn_momentum: float | None = 0.1) -> dict[str, dict[str, Tensor]] | None:
    """``{metric: {split: (A, K)}}`` (``"loss"`` first, then ``metrics`` — accuracies — in
    their order), or ``None`` when the torch path must be taken (see the module docstring).
    ``batchnorm``, ``bn_*``: as for ``interpolate`` (batch-norm models only)."""
    if not applies(model, loss, metrics, splits, (start, end)):
        return None
    bn = None
    if _norms(model):
        bn = _batchnorm(model, start, end, alphas, batchnorm, bn_x, bn_batch_size,
                        bn_momentum)
        if bn is None:
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
            part = None if bn is None else tuple(t[lo:lo + chunk] for t in bn)
            mean_loss, acc = fused.evaluate_line(s0, s1, alphas[lo:lo + chunk],
                                                 model.activation, x, y, part)
            if not bool(torch.isfinite(mean_loss).all()):
                return None
            parts["loss"].setdefault(split, []).append(mean_loss)
            for name in metrics:
                parts[name].setdefault(split, []).append(acc)
    return {m: {s: torch.cat(v) for s, v in by_split.items()} for m, by_split in parts.items()}
