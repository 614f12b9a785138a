"""State dicts, functional evaluation and batch-norm statistics shared by the landscape tools.

Private. A *state* is a mapping name → tensor with the keys of ``model.state_dict()``;
parameters and buffers are told apart by the model (its ``named_parameters`` /
``named_buffers``). For an ensemble model (``model.ensemble_size = K``) every entry carries
the ensemble axis first, so per-member reductions flatten all but axis 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..models import (
    EnsembleBatchNorm1d,
    accuracy,
    classification_loss,
    ensemble_accuracy,
    ensemble_loss,
)

LossFn = Callable[[Tensor, Tensor], Tensor]
State = Mapping[str, Tensor]
Split = tuple[Tensor, Tensor]

_BN_TYPES = (nn.modules.batchnorm._BatchNorm, EnsembleBatchNorm1d)


def members(model: nn.Module) -> int | None:
    """K for an ensemble model, ``None`` for a plain one."""
    k = getattr(model, "ensemble_size", None)
    return k if isinstance(k, int) else None


def parameter_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters()]


def batchnorm_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(prefix, module)`` of every batch-norm layer that tracks running statistics."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, _BN_TYPES) and getattr(m, "running_mean", None) is not None]


def check_state(model: nn.Module, state: object, what: str) -> dict[str, Tensor]:
    """``state`` as a dict with exactly the model's state-dict keys and shapes."""
    if not isinstance(state, Mapping):
        raise TypeError(f"{what} must be a state dict (name -> tensor, as model.state_dict()), "
                        f"got {type(state).__name__}")
    reference = model.state_dict()
    missing = [k for k in reference if k not in state]
    extra = [k for k in state if k not in reference]
    if missing or extra:
        raise ValueError(f"{what} does not match the model's state dict: missing {missing}, "
                         f"unexpected {extra}")
    out = {}
    for key, ref in reference.items():
        value = state[key]
        if not isinstance(value, Tensor):
            raise TypeError(f"{what}[{key!r}] must be a tensor, got {type(value).__name__}")
        if value.shape != ref.shape:
            raise ValueError(f"{what}[{key!r}] has shape {tuple(value.shape)}, the model's is "
                             f"{tuple(ref.shape)}")
        out[key] = value.detach().to(ref.device)
    return out


def check_split(name: str, pair: object) -> Split:
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2
            and all(isinstance(t, Tensor) for t in pair)):
        raise TypeError(f"data[{name!r}] must be an (x, y) pair of tensors, got "
                        f"{type(pair).__name__}")
    x, y = pair
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"data[{name!r}]: x and y must have the same number (>= 1) of rows, "
                         f"got {x.shape[0]} and {y.shape[0]}")
    return x, y


def check_data(data: object) -> dict[str, Split]:
    """An ``(x, y)`` pair (the split ``"train"``) or a dict of splits ``{name: (x, y)}``."""
    if isinstance(data, Mapping):
        if not data:
            raise ValueError("data must hold at least one split, got an empty dict")
        return {str(k): check_split(str(k), v) for k, v in data.items()}
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor):
        return {"train": check_split("train", data)}
    raise TypeError("data must be an (x, y) pair of tensors or a dict of splits "
                    f"{{'train': (x, y), 'test': (x, y)}}, got {type(data).__name__}")


def default_loss(model: nn.Module) -> LossFn:
    """Mean classification loss of the logits: ``(K,)`` for ensembles, ``()`` for plain."""
    return ensemble_loss if members(model) is not None else classification_loss


def default_accuracy(model: nn.Module) -> LossFn:
    return ensemble_accuracy if members(model) is not None else accuracy


def per_member(value: Tensor, k: int | None) -> Tensor:
    """A metric value as ``(K,)`` (``(1,)`` for a plain model)."""
    value = torch.as_tensor(value)
    if k is None:
        if value.numel() != 1:
            raise ValueError(f"the loss of a plain model must be a scalar (the batch mean), got "
                             f"shape {tuple(value.shape)}")
        return value.reshape(1)
    if value.shape != (k,):
        raise ValueError(f"the loss of a {k}-member ensemble must have shape ({k},) (one mean "
                         f"per member), got {tuple(value.shape)}")
    return value


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module in eval mode for the duration; the previous modes restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.train(mode)


def lerp(a: Tensor, b: Tensor, alpha: float) -> Tensor:
    """``(1 - α) a + α b`` (integer tensors: ``b``'s value, e.g. ``num_batches_tracked``)."""
    if not a.dtype.is_floating_point:
        return b.clone()
    return torch.lerp(a, b, alpha) if 0.0 <= alpha <= 1.0 else a + alpha * (b - a)


@torch.no_grad()
def evaluate(model: nn.Module, state: State, splits: Mapping[str, Split], loss: LossFn,
             metrics: Mapping[str, LossFn], batch_size: int) -> dict[str, dict[str, Tensor]]:
    """``{split: {"loss": (K,), metric: (K,)}}`` of the model at ``state`` in eval mode.

    Each split is evaluated in chunks of ``batch_size`` rows; chunk means are combined with
    weights ``rows / N`` (exact for batch-mean losses and accuracies)."""
    k = members(model)
    out: dict[str, dict[str, Tensor]] = {}
    with eval_mode(model):
        for split, (x, y) in splits.items():
            n = x.shape[0]
            sums: dict[str, Tensor] = {}
            for lo in range(0, n, batch_size):
                xb, yb = x[lo:lo + batch_size], y[lo:lo + batch_size]
                logits = functional_call(model, dict(state), (xb,))
                w = xb.shape[0] / n
                for name, fn in {"loss": loss, **metrics}.items():
                    v = per_member(fn(logits, yb), k).double() * w
                    sums[name] = sums[name] + v if name in sums else v
            out[split] = sums
    return out


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, state: dict[str, Tensor], x: Tensor,
                        batch_size: int, momentum: float | None = 0.1) -> None:
    """Re-estimate the running statistics of ``state`` in place (docs/science.md §8, "recompute").

    Every batch-norm layer's ``running_mean`` / ``running_var`` / ``num_batches_tracked`` are
    reset to 0 / 1 / 0, then one pass over ``x`` in consecutive batches of ``batch_size`` in
    training mode updates them with EMA momentum ``momentum`` (0.1, the MLI code's — its pass
    over 60 000 images is 117 updates, so the reset values are forgotten) or, with ``None``,
    the cumulative average of the batch statistics (what a short pass needs: after n updates
    at momentum 0.1 the reset values still weigh 0.9ⁿ). Other layers stay in eval mode."""
    bns = batchnorm_modules(model)
    if not bns:
        return
    if momentum is not None and not 0.0 < float(momentum) <= 1.0:
        raise ValueError(f"bn_momentum must be in (0, 1] or None, got {momentum!r}")
    for prefix, _ in bns:
        p = f"{prefix}." if prefix else ""
        state[p + "running_mean"] = torch.zeros_like(state[p + "running_mean"])
        state[p + "running_var"] = torch.ones_like(state[p + "running_var"])
        if p + "num_batches_tracked" in state:
            state[p + "num_batches_tracked"] = torch.zeros_like(state[p + "num_batches_tracked"])
    saved = [m.momentum for _, m in bns]
    with eval_mode(model):
        try:
            for _, m in bns:
                m.train()
                m.momentum = momentum
            for lo in range(0, x.shape[0], batch_size):
                xb = x[lo:lo + batch_size]
                if xb.shape[0] < 2 and lo > 0:
                    break  # a batch of one has no variance
                functional_call(model, state, (xb,))
        finally:
            for (_, m), value in zip(bns, saved, strict=True):
                m.momentum = value
