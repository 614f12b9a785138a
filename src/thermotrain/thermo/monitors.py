r"""Temperature monitors: loop hooks (:class:`thermotrain.training.Hook`) that log the kinetic
and configurational temperatures of a sampler run per parameter group and ensemble member
(SPEC §11, ``docs/thermo.md``).

* kinetic: :math:`T_\mathrm{kin} = \lVert p\rVert^2/N` over a group's momenta, using BAOAB's
  full-step momenta :math:`p - k\nabla L` (the pending half kick, applied on the fly from the
  stored momenta and the step's gradient; the optimizer state is not changed);
* configurational: :math:`T_\mathrm{conf} = \langle\lVert\nabla L\rVert^2\rangle /
  \langle\Delta L\rangle`, the Laplacian :math:`\Delta L = \mathrm{tr}\,\nabla^2L` by
  Hutchinson's estimator :math:`v^\top\nabla^2L\,v` with a Rademacher v (one Hessian-vector
  product by double backward). For :math:`\pi\propto e^{-L/\tau}` integration by parts gives
  :math:`\langle\lVert\nabla_g L\rVert^2\rangle = \tau\langle\Delta_g L\rangle` for every
  group g of coordinates, so both temperatures → τ as h → 0 for a correct full-batch
  sampler; with minibatch gradients the gap measures the gradient-noise heating. By default
  L is the step's own minibatch loss (cheap, biased up by the gradient noise); ``data="full"``
  is the exact-energy choice.

Both hooks act in ``after_gradient`` (the gradient of step n is in ``.grad``, θ is θ_n) every
``every`` steps, and log with :meth:`LoopState.log` (one row per member):
``{name}/group{g}`` (and, for the configurational one, its parts ``{name}/grad_norm2/group{g}``
and ``{name}/laplacian/group{g}``; ``{name}/group{g}`` is then the running ratio of the sums
since ``start``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..training.hooks import Hook
from .kinetic import (
    KineticTemperature,
    _check_every,
    _members_norm2,
    _members_sum,
    kinetic_temperatures,
)

__all__ = ["KineticTemperature", "ConfigurationalTemperature", "kinetic_temperatures"]


class ConfigurationalTemperature(Hook):
    r"""Log :math:`T_\mathrm{conf} = \langle\lVert\nabla L\rVert^2\rangle/\langle\Delta L\rangle`
    per group and member every ``every`` steps (SPEC §11), with a Hutchinson Laplacian.

    Which energy L (``data``):

    * ``"batch"`` (default): the step's own minibatch loss :math:`L_B` (the batch the loop
      drew, captured in ``before_gradient``); ‖∇L_B‖² is read from the loop's gradient in
      ``.grad``, so a record costs the Laplacian only (one or two minibatch gradients with
      ``"fd"``/``"forward"``, one double backward with ``"hvp"``). Since
      :math:`E\lVert\nabla L_B\rVert^2 = \lVert\nabla L\rVert^2 + \mathrm{tr\,Var}\,\nabla L_B`
      and :math:`E\,\Delta L_B = \Delta L`, this reads higher than the full-data value by the
      gradient noise (it is the temperature the minibatch energies see);
    * ``"full"``: the full training-set loss — the exact-energy choice, whose Gibbs measure is
      the sampled one; each record costs two (``"fd"``) or ~three (``"hvp"``) full-batch
      gradients;
    * ``subset=m``: a fixed random subset of m training points (biased like ``"batch"`` by the
      subset's gradient variance, but always the same energy).

    Estimators of :math:`v^\top\nabla^2L\,v` (Rademacher v):

    * ``laplacian="hvp"`` (default): a Hessian-vector product by double backward (exact for
      smooth losses; autograd differentiates ReLU's kink as a zero second derivative, so the
      kinks' delta-function curvature is missed);
    * ``laplacian="fd"``: the central difference
      :math:`v^\top[\nabla L(\theta + \epsilon v) - \nabla L(\theta - \epsilon v)]/2\epsilon`
      (error :math:`O(\epsilon^2)` for smooth losses; it sees the kinks crossed within ε),
      with ‖∇L‖² (``"full"``/subset) from the mean of the two gradients. Two plain gradients,
      no double backward: with the default loss on a model the fused kernel supports
      (:func:`thermotrain.models.fused.gradient_fn`) it is several times cheaper;
    * ``laplacian="forward"`` (``data="batch"`` only): the one-sided difference
      :math:`v^\top[\nabla L_B(\theta + \epsilon v) - \nabla L_B(\theta)]/\epsilon` against the
      loop's gradient: one extra gradient per probe, error :math:`O(\epsilon)`.

    θ is restored bit for bit and the loop's ``.grad`` is put back.

    Args:
        loss: ``loss(model) -> (K,)`` per-member loss (differentiable); when given it is the
            energy and ``data``/``subset`` are ignored; default: the mean classification loss
            (:func:`thermotrain.models.ensemble_loss`) on the data above.
        every: record every this many steps.
        probes: Rademacher vectors per record (the estimator's variance falls as 1/probes).
        data: ``"batch"`` or ``"full"`` (above); ``None``: ``"batch"``, or the subset when
            ``subset`` is given.
        subset: use a fixed random subset of this many training points.
        start: accumulate the running ratio from this step on (burn-in).
        laplacian: ``"hvp"``, ``"fd"`` or ``"forward"`` (above); epsilon: the
            finite-difference step ε.
        seed: seed of the probes' (and the subset's) CPU generator; its state is saved.
        name: hook name and metric prefix.
    """

    def __init__(self, loss: Callable[[torch.nn.Module], Tensor] | None = None, *,
                 every: int = 10, probes: int = 1, data: str | None = None,
                 subset: int | None = None, start: int = 0, laplacian: str = "hvp",
                 epsilon: float = 1e-3, seed: int = 0,
                 name: str = "configurational_temperature"):
        self.loss = loss
        self.every = _check_every(every)
        if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
            raise ValueError(f"probes must be an int >= 1, got {probes!r}")
        if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int)
                                   or subset < 1):
            raise ValueError(f"subset must be None or an int >= 1, got {subset!r}")
        if data not in (None, "batch", "full"):
            raise ValueError(f"data must be 'batch' or 'full', got {data!r}")
        if subset is not None and data is not None:
            raise ValueError(f"give either data={data!r} or subset={subset!r}, not both")
        self.data = "subset" if subset is not None else (data or "batch")
        if loss is not None:
            self.data = "loss"
        if laplacian not in ("hvp", "fd", "forward"):
            raise ValueError(f"laplacian must be 'hvp', 'fd' or 'forward', got {laplacian!r}")
        if laplacian == "forward" and self.data != "batch":
            raise ValueError("laplacian='forward' needs data='batch' (it differences against "
                             f"the loop's minibatch gradient), got data={self.data!r}")
        if not (isinstance(epsilon, (int, float)) and epsilon > 0):
            raise ValueError(f"epsilon must be a number > 0, got {epsilon!r}")
        self.probes, self.subset, self.start, self.name = probes, subset, int(start), name
        self.laplacian, self.epsilon = laplacian, float(epsilon)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.sums: dict[int, list[Tensor]] = {}
        self._index: Tensor | None = None
        self._grad_fn: Callable[[Tensor], Tensor] | None = None
        self._fixed: Tensor | None = None  # (K, n) indices of the full set or the subset
        self._batch: Any = None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "index": self._index,
                "sums": {g: [t.clone() for t in v] for g, v in self.sums.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self._index = state["index"]
        self.sums = {int(g): list(v) for g, v in state["sums"].items()}

    # ------------------------------------------------------------------ events
    def on_start(self, state: Any) -> None:
        n = state.x_train.shape[0]
        if self.subset is not None and self._index is None:
            if self.subset > n:
                raise ValueError(f"{self.name}: subset={self.subset} exceeds the {n} training "
                                 "points")
            self._index = torch.randperm(n, generator=self.generator)[: self.subset]
        if self.laplacian != "hvp" and self.loss is None:
            from ..models import fused

            if fused.supports(state.model, state.x_train, state.y_train):
                self._grad_fn = fused.gradient_fn(state.model, state.x_train, state.y_train)
                idx = (torch.arange(n) if self._index is None else self._index)
                self._fixed = idx.to(state.x_train.device).expand(state.members, -1)

    def before_gradient(self, state: Any, batch: Any) -> Any:
        if self.data == "batch" and state.step % self.every == 0:
            self._batch = batch
        return batch

    def _data(self, state: Any) -> tuple[Tensor, Tensor]:
        x, y = state.x_train, state.y_train
        if self.data == "batch":
            b = self._batch
            if b.x is not None:
                return b.x, b.y
            idx = b.index.to(x.device)
            return x[idx], y[idx]
        if self._index is not None:
            idx = self._index.to(x.device)
            x, y = x[idx], y[idx]
        return x, y

    def _loss(self, state: Any) -> Tensor:
        if self.loss is not None:
            return self.loss(state.model).reshape(-1)
        from ..models import ensemble_loss

        x, y = self._data(state)
        out = state.model(x)
        if out.dim() == 2:
            out = out.unsqueeze(0)
        return ensemble_loss(out, y)

    def _groups(self, state: Any) -> list[tuple[list[Tensor], int | None]]:
        out = []
        default = 0 if state.members > 1 else None
        for g in state.optimizer.param_groups:
            params = [p for p in g["params"] if p.requires_grad]
            out.append((params, g.get("ensemble_dim", default)))
        return out

    def _probe(self, params: list[Tensor]) -> list[Tensor]:
        """One Rademacher vector over all of ``params`` (one draw, split into views)."""
        sizes = [p.numel() for p in params]
        v = torch.randint(0, 2, (sum(sizes),), generator=self.generator,
                          dtype=params[0].dtype).to(params[0].device)
        v = v.mul_(2).sub_(1)
        return [c.view_as(p) for c, p in zip(v.split(sizes), params, strict=True)]

    def _gradient(self, state: Any, params: list[Tensor], copy: bool = True) -> list[Tensor]:
        """∇ of the summed member losses at the current θ (plain, no graph kept); with
        ``copy=False`` possibly the ``.grad`` tensors themselves (valid until the next call)."""
        if self._grad_fn is not None and not (self.data == "batch" and self._batch.rewritten):
            # overwrites .grad (restored by the caller)
            self._grad_fn(self._batch.index if self.data == "batch" else self._fixed)
            grads = [p.grad for p in params]
            return torch._foreach_mul(grads, 1.0) if copy else grads
        with torch.enable_grad():
            return list(torch.autograd.grad(self._loss(state).sum(), params))

    def _hvp(self, state: Any, params: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        with torch.enable_grad():
            total = self._loss(state).sum()  # members independent: ∇ slice k = member k's
            grads = torch.autograd.grad(total, params, create_graph=True)
            lap = [torch.zeros_like(p) for p in params]
            for i in range(self.probes):
                v = self._probe(params)
                hv = torch.autograd.grad(grads, params, grad_outputs=v,
                                         retain_graph=i + 1 < self.probes)
                lap = [a + vi * h for a, vi, h in zip(lap, v, hv, strict=True)]
        return [g.detach() for g in grads], [a.detach() / self.probes for a in lap]

    @torch.no_grad()
    def _fd(self, state: Any, params: list[Tensor]) -> tuple[list[Tensor] | None, list[Tensor]]:
        theta = torch._foreach_mul(params, 1.0)  # copies
        have = all(p.grad is not None for p in params)
        saved = (torch._foreach_mul([p.grad for p in params], 1.0) if have
                 else [None if p.grad is None else p.grad.clone() for p in params])
        eps, central = self.epsilon, self.laplacian == "fd"
        need_grads = not (self.data == "batch" and self.loss is None)
        grads = [torch.zeros_like(p) for p in params] if need_grads else None
        lap: list[Tensor] | None = None
        try:
            for _ in range(self.probes):
                v = self._probe(params)
                torch._foreach_copy_(params, torch._foreach_add(theta, v, alpha=eps))
                plus = self._gradient(state, params, copy=central)
                if central:
                    torch._foreach_copy_(params, torch._foreach_add(theta, v, alpha=-eps))
                    minus = self._gradient(state, params, copy=False)
                    if grads is not None:
                        torch._foreach_add_(grads, torch._foreach_add(plus, minus), alpha=0.5)
                else:  # the loop's gradient at θ
                    minus = saved
                diff = torch._foreach_sub(plus, minus)
                torch._foreach_mul_(diff, v)
                if lap is None:
                    lap = diff
                else:
                    torch._foreach_add_(lap, diff)
        finally:
            torch._foreach_copy_(params, theta)
            if have and all(p.grad is not None and p.grad.shape == g.shape
                            for p, g in zip(params, saved, strict=True)):
                # in place: the fused kernel's prepared call stays valid
                torch._foreach_copy_([p.grad for p in params], saved)
            else:
                for p, g in zip(params, saved, strict=True):
                    p.grad = g
        if grads is not None and self.probes > 1:
            torch._foreach_div_(grads, float(self.probes))
        self._lap_scale = 1.0 / ((2 * eps if central else eps) * self.probes)
        return grads, lap

    def measure(self, state: Any) -> list[tuple[Tensor, Tensor]]:
        """Per group, ``(‖∇_g L‖², Hutchinson Δ_g L)`` per member at the current θ, each
        ``(K,)`` (θ and ``.grad`` are left as they were). With ``data="batch"`` ‖∇L_B‖² is
        the loop's gradient in ``.grad`` (call it in ``after_gradient``)."""
        groups = self._groups(state)
        params = [p for ps, _ in groups for p in ps]
        if self.data == "batch" and self._batch is None:
            raise RuntimeError(f"{self.name}: data='batch' measures the step's minibatch; "
                               "call measure() from after_gradient of a recorded step")
        self._lap_scale = 1.0  # the finite differences' 1/(2ε·probes), applied to the sums
        grads, lap = (self._hvp if self.laplacian == "hvp" else self._fd)(state, params)
        if self.data == "batch" and self.loss is None:
            grads = [p.grad for p in params]  # the loop's ∇L_B (exact, no extra cost)
        out, j = [], 0
        for ps, edim in groups:
            n = len(ps)
            dl = _members_sum(lap[j:j + n], edim)
            if self._lap_scale != 1.0:
                dl = dl.mul_(self._lap_scale)
            out.append((_members_norm2(grads[j:j + n], edim), dl))
            j += n
        return out

    def after_gradient(self, state: Any, losses: Tensor) -> None:
        if state.step % self.every:
            return
        for g, (g2, dl) in enumerate(self.measure(state)):
            state.log(f"{self.name}/grad_norm2/group{g}", g2)
            state.log(f"{self.name}/laplacian/group{g}", dl)
            if state.step >= self.start:
                s = self.sums.get(g)
                if s is None:
                    s = self.sums[g] = [g2.clone(), dl.clone()]
                else:
                    s[0] += g2
                    s[1] += dl
                state.log(f"{self.name}/group{g}", s[0] / s[1])
        self._batch = None

    def temperatures(self) -> list[Tensor]:
        """The running :math:`T_\\mathrm{conf}` per group, ``(K,)`` each."""
        return [s[0] / s[1] for _, s in sorted(self.sums.items())]
