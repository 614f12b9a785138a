r"""SGD and Adam with per-member hyperparameters, so a study's SGD or Adam sweep trains as one
ensemble like the samplers' sweeps (docs/runs.md, *Sweeps packed*).

:class:`MemberSGD` and :class:`MemberAdam` are :class:`torch.optim.SGD` and
:class:`torch.optim.Adam`: with float hyperparameters they *are* torch's step (``step``
defers to it). A hyperparameter may also be a tensor of shape ``(K,)`` — one value per
ensemble member, the members stacked along dimension ``ensemble_dim`` (0) of every parameter —
and then each member follows torch's update with its own value:

* SGD (``lr``, ``momentum``, ``dampening``, ``weight_decay``):
  :math:`g \leftarrow g + \lambda\theta`, :math:`b \leftarrow \mu b + (1-d)\,g` (the first
  step :math:`b \leftarrow g`), :math:`g \leftarrow g + \mu b` (Nesterov) or :math:`b`,
  :math:`\theta \leftarrow \theta - \eta\, g`;
* Adam (``lr``, ``betas``, ``eps``, ``weight_decay``):
  :math:`m \leftarrow m + (1-\beta_1)(g - m)`, :math:`v \leftarrow \beta_2 v + (1-\beta_2)g^2`,
  :math:`\theta \leftarrow \theta - \frac{\eta}{1-\beta_1^t}\,
  \frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon}`.

Member k agrees with a separate ``torch.optim`` run with member k's values to rounding (the
per-member multiplies round like torch's scalar ones but are separate operations; tested).
The state (``momentum_buffer``; ``step``, ``exp_avg``, ``exp_avg_sq``) is torch's, so
``state_dict`` files and :func:`~.guard.permute_optimizer_state` work as for torch's.
Options beyond these (amsgrad, maximize, fused, capturable, differentiable, decoupled weight
decay, complex parameters) take torch's own step and refuse per-member tensors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["MemberSGD", "MemberAdam"]


def _member_values(key: str, value: Any) -> tuple[Any, Tensor | None]:
    """``(placeholder float for torch's checks, the (K,) float64 tensor or None)``."""
    if not isinstance(value, Tensor) or value.numel() == 1:
        return value, None
    if value.dim() != 1:
        raise ValueError(f"{key} as a tensor must hold one value per ensemble member, shape "
                         f"(K,), got shape {tuple(value.shape)}")
    t = value.detach().to(torch.float64).cpu()
    bad = ~torch.isfinite(t) | (t < 0)
    if bool(bad.any()):
        k = int(bad.nonzero()[0])
        raise ValueError(f"{key} of member {k} must be finite and >= 0, got {float(t[k])}")
    return float(t[0]), t


def _broadcast(value: Any, p: Tensor, dim: int) -> Any:
    """A float as it is; a (K,) tensor shaped to broadcast along ``dim`` of ``p``."""
    if not isinstance(value, Tensor):
        return value
    if p.dim() <= dim or p.shape[dim] != value.numel():
        have = p.shape[dim] if p.dim() > dim else 0
        raise ValueError(f"a per-member hyperparameter has {value.numel()} values but a "
                         f"parameter of shape {tuple(p.shape)} has {have} members along "
                         f"dimension {dim}")
    shape = [1] * p.dim()
    shape[dim] = value.numel()
    return value.to(device=p.device, dtype=p.dtype).reshape(shape)


class _Members:
    """The per-member tensors of each group, stored beside torch's placeholders."""

    _PLAIN: dict[str, Any] = {}

    def _take_members(self, hp: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Tensor]]:
        plain, members = {}, {}
        for key, value in hp.items():
            if key == "betas" and isinstance(value, (tuple, list)):
                pair, tensors = [], []
                for i, b in enumerate(value):
                    f, t = _member_values(f"betas[{i}]", b)
                    pair.append(f)
                    tensors.append(t)
                plain[key] = tuple(pair)
                for i, t in enumerate(tensors):
                    if t is not None:
                        members[f"beta{i + 1}"] = t
                continue
            f, t = _member_values(key, value)
            plain[key] = f
            if t is not None:
                members[key] = t
        return plain, members

    def _check_plain_options(self, members: dict[str, Tensor]) -> None:
        if not members:
            return
        for key, ok in self._PLAIN.items():
            for g in self.param_groups:
                if g.get(key, ok) != ok:
                    raise ValueError(f"{type(self).__name__}: per-member hyperparameters "
                                     f"({', '.join(members)}) need {key}={ok!r}")
        for g in self.param_groups:
            for p in g["params"]:
                if p.is_complex():
                    raise ValueError(f"{type(self).__name__}: per-member hyperparameters "
                                     "need real parameters")

    def _value(self, group: dict, key: str) -> Any:
        m = group.get("members", {})
        return m[key] if key in m else group[key]

    def _setup(self, members: dict[str, Tensor], ensemble_dim: int) -> None:
        self.ensemble_dim = ensemble_dim
        for g in self.param_groups:
            g["members"] = dict(members)
        self._check_plain_options(members)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch's
        if not any(g.get("members") for g in self.param_groups):
            return super().step(closure)  # torch's own step
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is not None:
                    self._update(g, p)
        return loss

    def _update(self, group: dict, p: Tensor) -> None:
        raise NotImplementedError


class MemberSGD(_Members, torch.optim.SGD):
    """:class:`torch.optim.SGD` whose ``lr``, ``momentum``, ``dampening`` and
    ``weight_decay`` may be ``(K,)`` tensors, one value per member along ``ensemble_dim``."""

    _PLAIN = {"maximize": False, "differentiable": False, "fused": None}

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]],
                 lr: float | Tensor = 0.001, momentum: float | Tensor = 0,
                 dampening: float | Tensor = 0, weight_decay: float | Tensor = 0,
                 nesterov: bool = False, *, ensemble_dim: int = 0, **options: Any) -> None:
        plain, members = self._take_members({"lr": lr, "momentum": momentum,
                                             "dampening": dampening,
                                             "weight_decay": weight_decay})
        if nesterov:  # torch's condition, for every member (torch checks the first only here)
            for key, zero_ok in (("momentum", False), ("dampening", True)):
                t = members.get(key)
                if t is not None and bool(((t == 0) != zero_ok).any()):
                    k = int(((t == 0) != zero_ok).nonzero()[0])
                    raise ValueError(f"Nesterov momentum requires a momentum and zero dampening"
                                     f" for every member; member {k} has {key} {float(t[k])}")
        super().__init__(params, nesterov=nesterov, **plain, **options)
        self._setup(members, ensemble_dim)

    def _update(self, g: dict, p: Tensor) -> None:
        lr, mom, damp, wd = (_broadcast(self._value(g, k), p, self.ensemble_dim) for k in
                             ("lr", "momentum", "dampening", "weight_decay"))
        grad = p.grad
        if isinstance(wd, Tensor) or wd != 0:
            grad = grad + wd * p
        if isinstance(mom, Tensor) or mom != 0:
            st = self.state[p]
            buf = st.get("momentum_buffer")
            if buf is None:
                buf = st["momentum_buffer"] = torch.clone(grad).detach()
            elif isinstance(damp, Tensor):
                buf.mul_(mom).add_((1 - damp) * grad)
            else:
                buf.mul_(mom).add_(grad, alpha=1 - damp)
            step = grad + mom * buf if g["nesterov"] else buf
            # a member with momentum 0 steps along its gradient, as torch's SGD does
            grad = torch.where(mom == 0, grad, step) if isinstance(mom, Tensor) else step
        if isinstance(lr, Tensor):
            p.sub_(lr * grad)
        else:
            p.add_(grad, alpha=-lr)


class MemberAdam(_Members, torch.optim.Adam):
    """:class:`torch.optim.Adam` whose ``lr``, ``betas``, ``eps`` and ``weight_decay`` may be
    ``(K,)`` tensors, one value per member along ``ensemble_dim``."""

    _PLAIN = {"amsgrad": False, "maximize": False, "capturable": False,
              "differentiable": False, "fused": None, "decoupled_weight_decay": False}

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]],
                 lr: float | Tensor = 0.001,
                 betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
                 eps: float | Tensor = 1e-08, weight_decay: float | Tensor = 0,
                 amsgrad: bool = False, *, ensemble_dim: int = 0, **options: Any) -> None:
        plain, members = self._take_members({"lr": lr, "betas": tuple(betas), "eps": eps,
                                             "weight_decay": weight_decay})
        super().__init__(params, amsgrad=amsgrad, **plain, **options)
        self._setup(members, ensemble_dim)

    def _update(self, g: dict, p: Tensor) -> None:
        m, dim = g["members"], self.ensemble_dim
        st = self.state[p]
        if not st:
            st["step"] = torch.tensor(0.0, dtype=torch.float32)
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        st["step"] += 1
        t = st["step"].item()
        lr, eps, wd = (_broadcast(self._value(g, k), p, dim) for k in ("lr", "eps", "weight_decay"))
        b1 = _broadcast(m.get("beta1", g["betas"][0]), p, dim)
        b2 = _broadcast(m.get("beta2", g["betas"][1]), p, dim)
        grad = p.grad
        if isinstance(wd, Tensor) or wd != 0:
            grad = grad + wd * p
        exp_avg, exp_avg_sq = st["exp_avg"], st["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - b1)
        if isinstance(b2, Tensor):
            exp_avg_sq.mul_(b2).add_((1 - b2) * grad * grad)
        else:
            exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        bc1 = 1 - b1**t
        bc2_sqrt = (1 - b2**t) ** 0.5 if isinstance(b2, Tensor) else math.sqrt(1 - b2**t)
        denom = (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)
        step_size = lr / bc1
        if isinstance(step_size, Tensor):
            p.sub_(step_size * exp_avg / denom)
        else:
            p.addcdiv_(exp_avg, denom, value=-step_size)
