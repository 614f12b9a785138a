r"""Per-sample gradients and Hessians of any small PyTorch model (``torch.func``), flat.

The thermodynamic quantities of docs/science.md §5 (``docs/thermo.md``) need, at one parameter
point θ,
the matrix of per-sample gradients :math:`G_{i\cdot} = \nabla\ell_i(\theta)` (shape
``(N, P)``) and the Hessian :math:`H = \nabla^2 L(\theta)` of the full-data loss
:math:`L = \frac1N\sum_i \ell_i`. Both are computed here for **any** ``nn.Module`` with
``torch.func`` (``vmap(grad(functional_call))`` and ``hessian``), over the model's trainable
parameters flattened in ``named_parameters()`` order (:func:`flatten_parameters`).

The loss convention is the library's (docs/science.md §0): ``loss(prediction, target)`` is the
**mean**
loss of a batch (e.g. ``torch.nn.functional.mse_loss``); the per-sample loss is that loss on
a batch of one, plus an optional parameter ``penalty(params) -> scalar`` (a prior term such as
:math:`\lambda\lVert w\rVert^2`) added to **every** per-sample loss, so that
:math:`L = \frac1N\sum_i \ell_i` is the regularized loss.

Ensembles (:mod:`thermotrain.models`: parameters stacked on axis 0, outputs ``(K, B, ...)``):
pass ``ensemble_dim=0``; ``loss`` then returns the ``(K,)`` per-member losses (like
:func:`thermotrain.models.ensemble_loss`) and ``penalty`` a ``(K,)`` tensor, and the results
are per member: ``(K, N, P)`` gradients and ``(K, P, P)`` Hessians (members never interact,
so the gradient of the sum of member losses is, slice by slice, each member's gradient).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

__all__ = ["per_sample_gradients", "hessian", "flatten_parameters", "unflatten_parameters",
           "full_loss", "chain_gradients"]

LossFn = Callable[[Tensor, Tensor], Tensor]
Penalty = Callable[[Mapping[str, Tensor]], Tensor]


def _check(model: object, x: object, y: object, ensemble_dim: object) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:  # type: ignore[union-attr]
        raise ValueError(f"x and y must have the same non-zero number of samples on axis 0, "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")  # type: ignore[union-attr]
    if ensemble_dim not in (None, 0):
        raise ValueError(f"ensemble_dim must be None or 0 (thermotrain ensembles stack members "
                         f"on axis 0), got {ensemble_dim!r}")


def _params(model: nn.Module, params: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if not names:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    if params is None:
        return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"params is missing {missing}; expected the names {names}")
    return {n: params[n] for n in names}


def flatten_parameters(params: Mapping[str, Tensor] | nn.Module, ensemble_dim: int | None = None
                       ) -> Tensor:
    """The parameters as one flat vector ``(P,)`` (or ``(K, P)`` with ``ensemble_dim=0``),
    in ``named_parameters()`` order (trainable ones only for a module)."""
    if isinstance(params, nn.Module):
        params = _params(params, None)
    if ensemble_dim is None:
        return torch.cat([p.reshape(-1) for p in params.values()])
    k = next(iter(params.values())).shape[0]
    return torch.cat([p.reshape(k, -1) for p in params.values()], dim=1)


def unflatten_parameters(flat: Tensor, like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of :func:`flatten_parameters`: ``flat`` cut into tensors shaped like ``like``
    (``flat`` of shape ``(P,)``; views, differentiable)."""
    out, offset = {}, 0
    for name, t in like.items():
        n = t.numel()
        out[name] = flat[offset:offset + n].view(t.shape)
        offset += n
    if offset != flat.numel():
        raise ValueError(f"flat has {flat.numel()} entries, the parameters {offset}")
    return out


def per_sample_gradients(model: nn.Module, loss: LossFn, x: Tensor, y: Tensor, *,
                         penalty: Penalty | None = None,
                         params: Mapping[str, Tensor] | None = None,
                         ensemble_dim: int | None = None,
                         chunk_size: int | None = None) -> Tensor:
    r"""The gradient of every per-sample loss, :math:`G_{i\cdot} = \nabla_\theta\ell_i(\theta)`.

    :math:`\ell_i(\theta) = \mathrm{loss}(f(x_i;\theta), y_i) + \mathrm{penalty}(\theta)`,
    computed as ``vmap(grad(functional_call))`` over the samples (docs/science.md §5: the minibatch
    noise of SGD is built from these; ``docs/thermo.md``).

    Args:
        model: any ``nn.Module`` (buffers are used as they are; no batch-norm updates).
        loss: ``loss(prediction, target)``, the batch-mean loss; with ``ensemble_dim=0`` it
            must return the ``(K,)`` per-member losses.
        x, y: the data, samples on axis 0 (shared by all members of an ensemble).
        penalty: optional ``penalty(params) -> scalar`` (``(K,)`` for an ensemble) added to
            each per-sample loss.
        params: the point θ as a ``{name: tensor}`` dict (default: the model's parameters).
        ensemble_dim: ``None`` or ``0`` (a :mod:`thermotrain.models` ensemble).
        chunk_size: samples per vectorized chunk (bounds memory; default all at once).

    Returns:
        ``(N, P)`` per-sample gradients, or ``(K, N, P)`` per member, in the dtype of the
        parameters, columns in :func:`flatten_parameters` order.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(3, 1)
        >>> x, y = torch.randn(5, 3), torch.randn(5, 1)
        >>> per_sample_gradients(net, torch.nn.functional.mse_loss, x, y).shape
        torch.Size([5, 4])
    """
    _check(model, x, y, ensemble_dim)
    prm = _params(model, params)
    buffers = dict(model.named_buffers())

    def single(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        value = loss(functional_call(model, (p, buffers), (xi.unsqueeze(0),)), yi.unsqueeze(0))
        if penalty is not None:
            value = value + penalty(p)
        return value.sum()  # an ensemble's members are independent: slice k = member k

    g = vmap(grad(single), in_dims=(None, 0, 0), chunk_size=chunk_size)(prm, x, y)
    n = x.shape[0]
    if ensemble_dim is None:
        return torch.cat([g[name].reshape(n, -1) for name in prm], dim=1)
    k = next(iter(prm.values())).shape[0]
    return torch.cat([g[name].reshape(n, k, -1) for name in prm], dim=2).transpose(0, 1)


def full_loss(model: nn.Module, loss: LossFn, x: Tensor, y: Tensor,
              penalty: Penalty | None = None) -> Callable[[Tensor], Tensor]:
    r"""The full-data loss :math:`L(\theta)=\mathrm{loss}(f(X;\theta),Y)+\mathrm{penalty}(\theta)`
    as a function of the flat parameter vector (``(P,)`` → scalar, or ``(K, P)`` → ``(K,)``
    for an ensemble), for ``torch.func`` transforms."""
    like = _params(model, None)
    buffers = dict(model.named_buffers())
    ensemble = None

    def f(flat: Tensor) -> Tensor:
        nonlocal ensemble
        if flat.ndim == 2:
            k = flat.shape[0]
            p, offset = {}, 0
            for name, t in like.items():
                m = t[0].numel()
                p[name] = flat[:, offset:offset + m].reshape(k, *t.shape[1:])
                offset += m
        else:
            p = unflatten_parameters(flat, like)
        value = loss(functional_call(model, (p, buffers), (x,)), y)
        if penalty is not None:
            value = value + penalty(p)
        return value

    return f


def hessian(model: nn.Module, loss: LossFn, x: Tensor, y: Tensor, *,
            penalty: Penalty | None = None, params: Mapping[str, Tensor] | None = None,
            ensemble_dim: int | None = None) -> Tensor:
    r"""The Hessian :math:`H = \nabla^2_\theta L(\theta)` of the full-data loss, ``(P, P)``.

    :math:`L(\theta) = \mathrm{loss}(f(X;\theta), Y) + \mathrm{penalty}(\theta)` — with a
    batch-mean ``loss`` this is :math:`\frac1N\sum_i\ell_i` of :func:`per_sample_gradients`.
    Computed with ``torch.func.hessian`` (forward-over-reverse) on the flat parameters: meant
    for small models (memory :math:`P^2`; docs/science.md §5 uses it at the minimum w*).

    Same arguments as :func:`per_sample_gradients`; with ``ensemble_dim=0`` returns the
    ``(K, P, P)`` per-member Hessians (the diagonal blocks of the Hessian of the sum of the
    member losses: members are independent, so the off-diagonal blocks are zero).
    """
    _check(model, x, y, ensemble_dim)
    prm = _params(model, params)
    f = full_loss(model, loss, x, y, penalty)
    flat = flatten_parameters(prm, ensemble_dim).detach()
    if ensemble_dim is None:
        return torch.func.hessian(f)(flat)
    h = torch.func.hessian(lambda w: f(w).sum())(flat)  # (K, P, K, P)
    return torch.diagonal(h, dim1=0, dim2=2).permute(2, 0, 1)  # (K, P, P)


def chain_gradients(model: nn.Module, loss: LossFn, x: Tensor, y: Tensor, *,
                    penalty: Penalty | None = None) -> Callable[[Tensor, Tensor], Tensor]:
    r"""Minibatch gradients of many independent chains of one (plain) model, vectorized.

    Returns ``grad(w, idx)``: for flat parameters ``w (K, P)`` (one row per chain, in
    :func:`flatten_parameters` order) and batch indices ``idx (K, B)``, the ``(K, P)``
    gradients :math:`\nabla L_{B_k}(w_k)` with :math:`L_B = \mathrm{loss}(f(X_B; w), Y_B) +
    \mathrm{penalty}(w)` — ``vmap(grad(functional_call))`` over the chains, so K SGD chains
    of any small model run as one computation (the stationary-state studies of
    ``docs/thermo.md``).
    """
    _check(model, x, y, None)
    like = _params(model, None)
    buffers = dict(model.named_buffers())

    def batch_loss(flat: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        p = unflatten_parameters(flat, like)
        value = loss(functional_call(model, (p, buffers), (xb,)), yb)
        if penalty is not None:
            value = value + penalty(p)
        return value

    g = vmap(grad(batch_loss))

    def gradient(w: Tensor, idx: Tensor) -> Tensor:
        return g(w, x[idx], y[idx])

    return gradient
