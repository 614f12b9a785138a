r"""Non-finite steps (``nan_policy``): per-member finiteness screens, and the copies that keep
frozen ensemble members (``nan_policy="mask"``) at their values while the torch implementation
runs over whole tensors; permutations of per-entry state (swap moves, replica exchange)."""

from __future__ import annotations

import torch
from torch import Tensor

from .reference import GroupView

__all__ = ["finite_per_member", "save_members", "restore_members", "permuted",
           "permute_optimizer_state"]


def finite_per_member(t: Tensor, edim: int | None, members: int) -> Tensor:
    """Bool ``(K,)``: whether member k's entries of ``t`` are all finite (a sum per member
    screens; a non-finite sum is confirmed entry by entry, since a sum can overflow)."""
    if edim is None or t.dim() == 0:
        s = t.sum()
        ok = bool(torch.isfinite(s)) or bool(torch.isfinite(t).all())
        return torch.full((members,), ok, dtype=torch.bool)
    dims = [i for i in range(t.dim()) if i != edim]
    s = t.sum(dim=dims) if dims else t
    ok = torch.isfinite(s).cpu()
    if not bool(ok.all()):
        ok = torch.isfinite(t).all(dim=dims).cpu() if dims else torch.isfinite(t).cpu()
    return ok.reshape(-1)


def save_members(view: GroupView, frozen: Tensor | None) -> list | None:
    """Copies of the frozen members' slices of the group's state (restored after the
    torch implementation ran over the whole tensors)."""
    if frozen is None:
        return None
    idx = frozen.nonzero().flatten()
    edims = view.ensemble_dims
    tensors = [*zip(view.params, edims, strict=True),
               *zip(view.momenta, edims[: len(view.momenta)], strict=True),
               *zip(view.xis, edims[: len(view.xis)], strict=True)]
    out = []
    for t, e in tensors:
        if e is None:
            out.append((t, None, None, t.clone()))
        else:
            i = idx.to(t.device)
            out.append((t, e, i, t.index_select(e, i)))
    return out

def restore_members(saved: list | None) -> None:
    for t, e, i, values in saved or ():
        if e is None:
            t.copy_(values)
        else:
            t.index_copy_(e, i, values)


def permuted(t: Tensor, index: Tensor, dim: int, ensemble_dim: int | None) -> Tensor:
    """``t`` reordered along ``dim`` by ``index`` (1-D), or by a per-member ``(K, n)`` index
    when ``dim`` is not ``ensemble_dim``."""
    index = index.to(t.device)
    if index.dim() == 1:
        return t.index_select(dim, index)
    if ensemble_dim is None:
        raise ValueError("a 2-D index (one permutation per member) needs a tensor with an "
                         "ensemble axis")
    if index.dim() != 2 or index.shape[0] != t.shape[ensemble_dim]:
        raise ValueError(f"a per-member index must have shape (K={t.shape[ensemble_dim]}, n), "
                         f"got {tuple(index.shape)}")
    shape = [1] * t.dim()
    shape[ensemble_dim] = t.shape[ensemble_dim]
    shape[dim] = index.shape[1]
    idx = index.reshape(shape).expand(
        [t.shape[i] if i != dim else index.shape[1] for i in range(t.dim())])
    return torch.gather(t, dim, idx)


def permute_optimizer_state(opt, param: Tensor, index: Tensor, dim: int,
                            ensemble_dim: int | None = None) -> None:
    """Reorder every per-entry state of ``param`` in any optimizer along ``dim`` — the
    samplers' momenta and per-member ξ (:meth:`~.PartitionedLangevin.permute_state`), or a
    :mod:`torch.optim` optimizer's buffers shaped like the parameter (SGD's
    ``momentum_buffer``, Adam's ``exp_avg``/``exp_avg_sq``/``max_exp_avg_sq``) — so swap
    moves and replica exchange treat every optimizer alike. A per-member ``(K, n)`` index
    needs ``ensemble_dim`` for torch optimizers (the samplers know theirs)."""
    if hasattr(opt, "permute_state"):  # the samplers
        opt.permute_state(param, index, dim)
        return
    if not any(p is param for g in opt.param_groups for p in g["params"]):
        raise ValueError(f"permute_optimizer_state: a parameter of shape {tuple(param.shape)} "
                         f"is not in this {type(opt).__name__}")
    for value in opt.state.get(param, {}).values():
        if isinstance(value, Tensor) and value.shape == param.shape:
            value.copy_(permuted(value, index, dim, ensemble_dim))
