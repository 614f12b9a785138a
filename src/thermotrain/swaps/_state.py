"""Shared plumbing of the swap moves: member views, optimizer state, seeded generators.

Every move works on the *per-member flat view* of a tensor: a parameter with its ensemble
axis first, ``(K, ...)``, reshaped to ``(K, n)`` (a plain parameter is the single member
``(1, n)``). A move is then a per-member permutation of those entries, applied with one
``gather`` for all members (no Python loop over members).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["member_count", "flat", "permute_entries", "permute_optimizer_state",
           "permute_members", "make_generator", "generator_state", "set_generator_state",
           "model_layers", "check_seed", "check_choice"]


def check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
    return seed


def check_choice(name: str, value: object, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def make_generator(seed: int, device: torch.device | str | None = None) -> torch.Generator:
    """An owned generator (docs/science.md §0: no global RNG in library code)."""
    gen = torch.Generator(device=device if device is not None else "cpu")
    gen.manual_seed(check_seed(seed))
    return gen


def generator_state(gen: torch.Generator) -> Tensor:
    return gen.get_state().clone()


def set_generator_state(gen: torch.Generator, state: Tensor) -> None:
    gen.set_state(state.to("cpu", torch.uint8))


def member_count(model: nn.Module) -> int:
    """K for a thermotrain ensemble model (parameters ``(K, ...)``), 1 for a plain model."""
    k = getattr(model, "ensemble_size", None)
    return 1 if k is None else int(k)


def flat(t: Tensor, members: int) -> Tensor:
    """The ``(K, n)`` view of ``t`` (ensemble axis first; a plain tensor is ``K = 1``)."""
    return t.reshape(members, -1)


def model_layers(model: nn.Module) -> list[nn.Module]:
    """The layers of a model: ``model.layer_modules()`` for thermotrain models, else every
    module owning parameters directly, in registration order (docs/science.md §3's "layer")."""
    if hasattr(model, "layer_modules"):
        return list(model.layer_modules())
    return [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]


@torch.no_grad()
def permute_entries(tensors: list[Tensor], perm: Tensor, members: int) -> None:
    """Permute the concatenated per-member entries of ``tensors`` in place.

    With :math:`v_k` the concatenation of member k's flattened entries of every tensor, the
    new values are :math:`v_k' = v_k[\\pi_k]` (``perm`` is ``(K, n_total)``, row k a
    permutation of ``0..n_total-1``). Pure data movement: a permutation followed by its
    inverse (``perm.argsort(1)``) restores every bit.
    """
    views = [flat(t, members) for t in tensors]
    sizes = [v.shape[1] for v in views]
    joined = views[0] if len(views) == 1 else torch.cat(views, dim=1)
    moved = joined.gather(1, perm.to(joined.device))
    for view, t, part in zip(views, tensors, moved.split(sizes, dim=1), strict=True):
        if view.data_ptr() == t.data_ptr() and view.is_contiguous() and t.is_contiguous():
            view.copy_(part)
        else:  # pragma: no cover - non-contiguous parameters
            t.copy_(part.reshape(t.shape))


def _state_tensors(optimizer: torch.optim.Optimizer | None, param: Tensor) -> list[str]:
    """Keys of ``optimizer.state[param]`` holding per-entry state (same shape as ``param``):
    momenta (:class:`~thermotrain.PartitionedLangevin`, SGD's ``momentum_buffer``), Adam's
    ``exp_avg``/``exp_avg_sq``/``max_exp_avg_sq``. Scalars and per-tensor state (step
    counts, the thermostat ξ, one per tensor and member) stay with their tensor."""
    if optimizer is None or param not in optimizer.state:
        return []
    st = optimizer.state[param]
    return [key for key, v in st.items()
            if isinstance(v, Tensor) and v.shape == param.shape and v.dim() > 0]


@torch.no_grad()
def permute_optimizer_state(optimizer: torch.optim.Optimizer | None, params: list[Tensor],
                            perm: Tensor, members: int) -> None:
    """Apply :func:`permute_entries`' permutation to every per-entry optimizer state tensor
    of ``params`` (they move with the weights). A parameter without that state yet (before
    its first step) takes part with a temporary zero tensor — the value the optimizers start
    from — that is not stored."""
    if optimizer is None:
        return
    keys: list[str] = []
    for p in params:
        for key in _state_tensors(optimizer, p):
            if key not in keys:
                keys.append(key)
    for key in keys:
        tensors = []
        for p in params:
            value = optimizer.state[p].get(key) if p in optimizer.state else None
            ok = isinstance(value, Tensor) and value.shape == p.shape
            tensors.append(value if ok else torch.zeros_like(p))
        permute_entries(tensors, perm, members)


@torch.no_grad()
def permute_members(tensors: Iterable[Tensor], order: Tensor, dim: int = 0) -> None:
    """``t ← t.index_select(dim, order)`` in place for every tensor: member k receives the
    configuration member ``order[k]`` had (replica exchange)."""
    for t in tensors:
        t.copy_(t.index_select(dim, order.to(t.device)))
