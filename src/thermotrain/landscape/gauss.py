r"""Gauss length of the logit path along a linear interpolation (docs/science.md §8, Lucas et al.
2021).

For an input :math:`x` and the path :math:`\theta(\alpha) = (1-\alpha)\theta_0 + \alpha\theta_T`
let :math:`z(\alpha) = f(x; \theta(\alpha))` be the logits, :math:`v = dz/d\alpha` their
velocity and :math:`u = v / \lVert v\rVert` its direction. The Gauss length is the length of
the curve that :math:`u` traces on the unit sphere,

.. math:: G(x) = \int_0^1 \Bigl\lVert \frac{d}{d\alpha}\frac{v}{\lVert v\rVert}\Bigr\rVert\,
          d\alpha, \qquad
          \frac{du}{d\alpha} = \frac{a - (u^\top a)\,u}{\lVert v\rVert},\quad
          a = \frac{d^2 z}{d\alpha^2},

computed exactly at every grid α with forward-mode derivatives (``torch.func.jvp`` for
:math:`v`, a nested ``jvp`` for :math:`a`, tangent :math:`\theta_T - \theta_0`), integrated by
the trapezoid rule over the grid and averaged over the inputs. A model whose logits trace a
half circle in α has G = π; logits moving on a straight line have G = 0. With a single logit
(binary head) :math:`u = \pm 1` and G = 0 (only sign flips, which have no length).

Batch norm: the statistics are re-estimated at every α (``"recompute"``, default), or follow
the modes of :func:`~thermotrain.landscape.interpolate`. Within one α the statistics are held
fixed while differentiating (the tangent is the parameters' only): how the statistics change
with α is not differentiated ([ours], docs/landscape.md; ``F.batch_norm`` has no forward
derivative in its running statistics).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp

from .._checks import check_int
from . import _state
from .interpolate import _check_mode, alpha_grid, path_state

__all__ = ["gauss_length"]


def _direction_speed(model: nn.Module, state: dict[str, Tensor], tangent: dict[str, Tensor],
                     x: Tensor) -> Tensor:
    """:math:`\\lVert du/d\\alpha\\rVert` per input: ``(K, B)`` (``(1, B)`` plain)."""
    moving = {k: state[k] for k in tangent}
    fixed = {k: v for k, v in state.items() if k not in tangent}

    def logits(p: dict[str, Tensor]) -> Tensor:
        return functional_call(model, {**fixed, **p}, (x,))

    def velocity(p: dict[str, Tensor]) -> Tensor:
        return jvp(logits, (p,), (tangent,))[1]

    v, a = jvp(velocity, (moving,), (tangent,))
    if _state.members(model) is None:
        v, a = v.unsqueeze(0), a.unsqueeze(0)
    v, a = v.reshape(*v.shape[:2], -1), a.reshape(*a.shape[:2], -1)  # (K, B, out)
    speed = v.norm(dim=-1, keepdim=True)
    u = v / speed.clamp_min(torch.finfo(v.dtype).tiny)
    du = (a - (u * a).sum(-1, keepdim=True) * u) / speed.clamp_min(torch.finfo(v.dtype).tiny)
    return torch.where(speed[..., 0] > 0, du.norm(dim=-1), torch.zeros_like(speed[..., 0]))


@torch.no_grad()
def gauss_length(
    model: nn.Module,
    start: Mapping[str, Tensor],
    end: Mapping[str, Tensor],
    x: Tensor,
    alphas: int | Sequence[float] | Tensor = 50,
    *,
    batchnorm: str = "recompute",
    bn_x: Tensor | None = None,
    bn_batch_size: int = 512,
    bn_momentum: float | None = 0.1,
    batch_size: int = 2_000,
) -> Tensor:
    r"""Mean Gauss length :math:`\frac1N\sum_x G(x)` of the logits along the path (module
    docstring), per member.

    Args:
        model, start, end: as for :func:`~thermotrain.landscape.interpolate`.
        x: the inputs ``(N, ...)`` (the test set in the MLI protocol).
        alphas: the grid (count or increasing values; the trapezoid rule runs over it, so
            ``[0, 1]`` gives :math:`\int_0^1`).
        batchnorm: ``"recompute"`` (statistics re-estimated at every α from ``bn_x``, the
            train inputs), ``"interpolate"`` or ``"freeze"``.
        bn_x: inputs of the re-estimation pass (default ``x``).
        bn_momentum: its EMA momentum, or ``None`` (cumulative average), as for
            :func:`~thermotrain.landscape.interpolate`.
        batch_size: inputs per forward-mode evaluation (memory only).

    Returns:
        ``(K,)`` for an ensemble, ``()`` for a plain model.
    """
    mode = _check_mode(batchnorm)
    s0 = _state.check_state(model, start, "start")
    s1 = _state.check_state(model, end, "end")
    if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a tensor of inputs (N, ...) with N >= 1, got "
                         f"{getattr(x, 'shape', x)!r}")
    grid = alpha_grid(alphas)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    params = set(_state.parameter_names(model))
    tangent = {k: (s1[k] - s0[k]) for k in s0 if k in params}
    has_bn = bool(_state.batchnorm_modules(model))
    reestimate = bn_x if bn_x is not None else x
    speeds = []
    with _state.eval_mode(model):
        for alpha in grid.tolist():
            state = path_state(model, s0, s1, alpha, mode, reestimate if has_bn else None,
                               bn_batch_size, bn_momentum)
            parts = [_direction_speed(model, state, tangent, x[lo:lo + batch_size])
                     for lo in range(0, x.shape[0], batch_size)]
            speeds.append(torch.cat(parts, dim=1).double().cpu())  # (K, N)
    g = torch.trapezoid(torch.stack(speeds), grid, dim=0)  # (K, N)
    out = g.mean(dim=1)
    return out[0] if _state.members(model) is None else out
