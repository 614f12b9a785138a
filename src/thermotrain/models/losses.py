r"""Classification heads as loss functions of the logits, for plain and ensemble networks.

The networks output logits :math:`z`; the head is in the loss (docs/science.md §6):

* **binary** (one logit per sample): :math:`p = \sigma(z)`, loss = binary cross-entropy
  :math:`\ell(z, y) = -y\log\sigma(z) - (1-y)\log(1-\sigma(z))
  = \max(z, 0) - zy + \log(1 + e^{-|z|})`, computed in the stable right-hand form by
  ``F.binary_cross_entropy_with_logits`` (never ``log(sigmoid)``). Same value as
  ``nn.BCELoss()(sigmoid(z), y)`` without its overflow.
* **multi-class** (C ≥ 2 logits): :math:`p = \operatorname{softmax}(z)`, loss = cross-entropy
  :math:`\ell(z, y) = -z_y + \log\sum_c e^{z_c}` (``F.cross_entropy``).

Which head applies is read from the logits: a last axis of size 1 (or 1-D plain logits) is
binary, a last axis of size C ≥ 2 is C-class. The loss :math:`L` is the **mean** over the batch
(docs/science.md §0) unless ``reduction`` says otherwise.

**Ensembles.** :func:`ensemble_loss` maps logits ``(K, B, out)`` to the K per-member mean
losses :math:`(L_1, \dots, L_K)`. The training objective for a seed ensemble is their **sum**
:math:`\mathcal L = \sum_k L_k`: member k's parameters :math:`\theta_k` enter only
:math:`L_k`, so :math:`\nabla_{\theta_k} \mathcal L = \nabla_{\theta_k} L_k` exactly — one
``backward()`` gives every member the gradient of its own mean loss, as K separate runs would
(a mean over members would scale each gradient by 1/K).

**Accuracy.** Binary: predict class 1 iff :math:`\sigma(z) > 0.5 \iff z > 0` (a tie goes to
class 0); multi-class: :math:`\arg\max_c z_c`. Accuracies are returned as tensors (no host
synchronisation); call ``.item()`` / ``.tolist()`` to read them.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "binary_cross_entropy",
    "cross_entropy",
    "classification_loss",
    "ensemble_loss",
    "predict",
    "accuracy",
    "ensemble_accuracy",
]

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: object) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction  # type: ignore[return-value]


def _check_tensor(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def _binary_logits(logits: Tensor) -> Tensor:
    """Plain binary logits ``(B,)`` or ``(B, 1)`` → ``(B,)``."""
    if logits.ndim == 1:
        return logits
    if logits.ndim == 2 and logits.shape[1] == 1:
        return logits[:, 0]
    raise ValueError(f"binary logits must have shape (B,) or (B, 1), got {tuple(logits.shape)}")


def _class_targets(targets: Tensor, expected: tuple[int, ...]) -> Tensor:
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise TypeError(
            f"multi-class targets must be integer class indices, got dtype {targets.dtype}"
        )
    if tuple(targets.shape) != expected:
        raise ValueError(f"targets must have shape {expected}, got {tuple(targets.shape)}")
    return targets.long()


def binary_cross_entropy(logits: Tensor, targets: Tensor, reduction: Reduction = "mean") -> Tensor:
    r"""Sigmoid + BCE from logits: :math:`\max(z,0) - zy + \log(1+e^{-|z|})`.

    Args:
        logits: ``(B,)`` or ``(B, 1)``.
        targets: ``(B,)`` labels in {0, 1} (any dtype; soft labels in [0, 1] are allowed).
        reduction: ``"mean"`` (default, docs/science.md §0), ``"sum"`` or ``"none"`` (per sample).
    """
    z = _binary_logits(_check_tensor("logits", logits))
    targets = _check_tensor("targets", targets)
    if tuple(targets.shape) != tuple(z.shape):
        raise ValueError(
            f"targets must have shape {tuple(z.shape)} to match logits {tuple(logits.shape)}, "
            f"got {tuple(targets.shape)}"
        )
    return F.binary_cross_entropy_with_logits(
        z, targets.to(z.dtype), reduction=_check_reduction(reduction)
    )


def cross_entropy(logits: Tensor, targets: Tensor, reduction: Reduction = "mean") -> Tensor:
    r"""Softmax + cross-entropy: :math:`-z_y + \log\sum_c e^{z_c}`.

    Args:
        logits: ``(B, C)`` with C ≥ 2.
        targets: ``(B,)`` integer class indices in ``[0, C)``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
    """
    logits = _check_tensor("logits", logits)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(
            f"multi-class logits must have shape (B, C) with C >= 2, got {tuple(logits.shape)}"
        )
    y = _class_targets(_check_tensor("targets", targets), (logits.shape[0],))
    return F.cross_entropy(logits, y, reduction=_check_reduction(reduction))


def classification_loss(logits: Tensor, targets: Tensor, reduction: Reduction = "mean") -> Tensor:
    """The loss of a plain network: :func:`binary_cross_entropy` for logits ``(B,)`` or
    ``(B, 1)``, :func:`cross_entropy` for ``(B, C)``, C ≥ 2.

    Example:
        >>> classification_loss(torch.zeros(4, 1), torch.tensor([0, 1, 1, 0]))
        tensor(0.6931)
    """
    logits = _check_tensor("logits", logits)
    if logits.ndim == 1 or (logits.ndim == 2 and logits.shape[1] == 1):
        return binary_cross_entropy(logits, targets, reduction)
    if logits.ndim == 2:
        return cross_entropy(logits, targets, reduction)
    raise ValueError(
        f"classification_loss expects plain logits (B,), (B, 1) or (B, C); got "
        f"{tuple(logits.shape)} (use ensemble_loss for (K, B, out) ensemble logits)"
    )


def _ensemble_targets(logits: Tensor, targets: Tensor) -> Tensor:
    """Targets ``(K, B)`` or shared ``(B,)`` → ``(K, B)`` (a broadcast view)."""
    k, b = logits.shape[:2]
    if tuple(targets.shape) == (b,):
        return targets.expand(k, b)
    if tuple(targets.shape) == (k, b):
        return targets
    raise ValueError(
        f"ensemble targets must have shape (K, B) = {(k, b)} or (B,) = {(b,)} to match logits "
        f"{tuple(logits.shape)}, got {tuple(targets.shape)}"
    )


def _check_ensemble_logits(logits: object) -> Tensor:
    logits = _check_tensor("logits", logits)
    if logits.ndim != 3:
        raise ValueError(f"ensemble logits must have shape (K, B, out), got {tuple(logits.shape)}")
    return logits


def ensemble_loss(logits: Tensor, targets: Tensor, reduction: Reduction = "mean") -> Tensor:
    r"""Per-member losses of an ensemble: ``(K, B, out)`` logits → ``(K,)``.

    Entry k is member k's mean loss :math:`L_k` over its batch (binary head if ``out == 1``,
    softmax cross-entropy if ``out ≥ 2``). **Train on** ``ensemble_loss(...).sum()``: its
    gradient with respect to member k's parameters is exactly :math:`\nabla L_k` (members do
    not interact), i.e. K independent runs.

    Args:
        logits: ``(K, B, out)``.
        targets: ``(K, B)`` (member k's batch) or ``(B,)`` (shared by all members).
        reduction: ``"mean"`` → ``(K,)`` means (default), ``"sum"`` → ``(K,)`` sums,
            ``"none"`` → ``(K, B)`` per-sample losses.

    Example:
        >>> from thermotrain.models import MLP
        >>> ens = MLP([2, 8, 1], ensemble=3)
        >>> x, y = torch.randn(5, 2), torch.tensor([0, 1, 1, 0, 1])
        >>> losses = ensemble_loss(ens(x), y)          # (3,)
        >>> losses.sum().backward()                    # each member: grad of its own mean loss
    """
    logits = _check_ensemble_logits(logits)
    targets = _ensemble_targets(logits, _check_tensor("targets", targets))
    reduction = _check_reduction(reduction)  # type: ignore[assignment]
    if logits.shape[2] == 1:
        per_sample = F.binary_cross_entropy_with_logits(
            logits[..., 0], targets.to(logits.dtype), reduction="none"
        )
    else:
        y = _class_targets(targets, tuple(logits.shape[:2]))
        # F.cross_entropy's (N, C, d) layout: N = K members, class axis second, d = B samples
        per_sample = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum(dim=1)
    return per_sample.mean(dim=1)


def predict(logits: Tensor) -> Tensor:
    """Predicted class labels (``int64``): logits ``(..., 1)`` or 1-D → ``z > 0``;
    ``(..., C)`` with C ≥ 2 → argmax over the last axis. Shape: the logits' without the
    class axis."""
    logits = _check_tensor("logits", logits)
    if logits.ndim == 0:
        raise ValueError("predict needs logits with a batch axis, got a 0-d tensor")
    if logits.ndim == 1:
        return (logits > 0).long()
    if logits.shape[-1] == 1:
        return (logits[..., 0] > 0).long()
    return logits.argmax(dim=-1)


def _correct(logits: Tensor, targets: Tensor) -> Tensor:
    pred = predict(logits)
    if logits.ndim == 1 or logits.shape[-1] == 1:
        truth = targets > 0.5 if targets.dtype.is_floating_point else targets != 0
        return pred == truth.long()
    return pred == _class_targets(targets, tuple(targets.shape)).to(pred.device)


def accuracy(logits: Tensor, targets: Tensor) -> Tensor:
    """Fraction of correct predictions of a plain network (a 0-d float tensor).

    Args:
        logits: ``(B,)``, ``(B, 1)`` (binary: class 1 iff logit > 0, i.e. probability > 0.5)
            or ``(B, C)`` (argmax).
        targets: ``(B,)`` labels (binary targets may be float 0./1.).
    """
    logits = _check_tensor("logits", logits)
    targets = _check_tensor("targets", targets)
    if logits.ndim not in (1, 2) or tuple(targets.shape) != (logits.shape[0],):
        raise ValueError(
            f"accuracy expects logits (B,), (B, 1) or (B, C) and targets (B,), got logits "
            f"{tuple(logits.shape)} and targets {tuple(targets.shape)}"
        )
    dtype = logits.dtype if logits.dtype.is_floating_point else torch.float32
    return _correct(logits, targets).to(dtype).mean()


def ensemble_accuracy(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-member accuracies ``(K,)`` from logits ``(K, B, out)`` and targets ``(K, B)`` or
    ``(B,)`` (same decision rules as :func:`accuracy`)."""
    logits = _check_ensemble_logits(logits)
    targets = _ensemble_targets(logits, _check_tensor("targets", targets))
    dtype = logits.dtype if logits.dtype.is_floating_point else torch.float32
    return _correct(logits, targets).to(dtype).mean(dim=1)
