r"""The classifier averaged over a trajectory of parameter states (paper Fig. 9, docs/science.md
§7).

For W parameter states :math:`\theta_1, \dots, \theta_W` (e.g. the last W steps of a
sampler's trajectory) the averaged classifier predicts

.. math::

    \bar p(y \mid x) = \frac1W \sum_{w=1}^{W} p_{\theta_w}(y \mid x),

with :math:`p_\theta = \sigma(f_\theta)` for one output and :math:`\operatorname{softmax}
(f_\theta)` otherwise (the heads of :mod:`thermotrain.models.losses`). This is a
trajectory (Monte Carlo) average of the predictive distribution, the natural reading of a
sampler's output, and not the classifier of the averaged parameters
:math:`p_{\bar\theta}` (the two differ for any nonlinear network).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

__all__ = ["averaged_probability", "probability"]


def probability(logits: Tensor) -> Tensor:
    """The predicted probabilities of logits ``(..., out)``: sigmoid for ``out = 1``,
    softmax over the last axis otherwise."""
    return torch.sigmoid(logits) if logits.shape[-1] == 1 else torch.softmax(logits, -1)


@torch.no_grad()
def averaged_probability(model: nn.Module, states: Mapping[str, Tensor], x: Tensor) -> Tensor:
    r"""The classifier averaged over W parameter states: :math:`\frac1W\sum_w p_{\theta_w}(x)`.

    Args:
        model: the network (plain or a K-member ensemble); its own parameters are not used
            and not changed, only its architecture.
        states: parameter states with a leading state axis, ``name -> (W, *shape)`` where
            ``shape`` is the model's parameter shape (``(K, ...)`` for an ensemble); e.g. a
            snapshot's ``window["members"]`` for an ensemble of the saved members. Every
            parameter of ``model`` must be given.
        x: inputs as the model takes them (``(N, d)`` for an MLP).

    Returns:
        The averaged probabilities, the shape of the model's output (``(K, N, out)`` for an
        ensemble, ``(N, out)`` for a plain model).

    Raises:
        ValueError: a parameter is missing, or the states disagree on W or the shapes.

    Example:
        >>> from thermotrain.models import MLP
        >>> net = MLP([2, 5, 1], ensemble=3)
        >>> states = {k: torch.stack([v, 2 * v]) for k, v in net.state_dict().items()}
        >>> averaged_probability(net, states, torch.randn(4, 2)).shape
        torch.Size([3, 4, 1])
    """
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(states))
    if missing:
        raise ValueError(f"states lack the parameters {', '.join(missing)} of the model")
    widths = {v.shape[0] for v in states.values()}
    if len(widths) != 1 or 0 in widths:
        raise ValueError(f"states need one common number W >= 1 of states on axis 0, got "
                         f"{sorted(widths)}")
    for name, p in params.items():
        if tuple(states[name].shape[1:]) != tuple(p.shape):
            raise ValueError(f"state {name!r} has shape {tuple(states[name].shape[1:])} per "
                             f"state, the model's parameter has {tuple(p.shape)}")
    (width,) = widths
    total = None
    for w in range(width):  # W states one at a time: memory stays that of one forward pass
        prob = probability(functional_call(model, {k: v[w] for k, v in states.items()},
                                           (x,)))
        total = prob if total is None else total + prob
    assert total is not None
    return total / width
