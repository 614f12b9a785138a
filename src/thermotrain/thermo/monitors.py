r"""Temperature monitors: loop hooks (:class:`thermotrain.training.Hook`) that log the kinetic
and configurational temperatures of a sampler run per parameter group and ensemble member
(SPEC §11, ``docs/thermo.md``).

* kinetic: :math:`T_\mathrm{kin} = \lVert p\rVert^2/N` over a group's momenta, using BAOAB's
  full-step momenta (the pending half kick applied by ``optimizer.finalize()``);
* configurational: :math:`T_\mathrm{conf} = \langle\lVert\nabla L\rVert^2\rangle /
  \langle\Delta L\rangle`, the Laplacian :math:`\Delta L = \mathrm{tr}\,\nabla^2L` by
  Hutchinson's estimator :math:`v^\top\nabla^2L\,v` with a Rademacher v (one Hessian-vector
  product by double backward). For :math:`\pi\propto e^{-L/\tau}` integration by parts gives
  :math:`\langle\lVert\nabla_g L\rVert^2\rangle = \tau\langle\Delta_g L\rangle` for every
  group g of coordinates, so both temperatures → τ as h → 0 for a correct full-batch
  sampler; with minibatch gradients the gap measures the gradient-noise heating.

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

__all__ = ["KineticTemperature", "ConfigurationalTemperature"]


def _check_every(every: object) -> int:
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be an int >= 1, got {every!r}")
    return every


def _member_sum(t: Tensor, edim: int | None) -> Tensor:
    """Sum over every axis but the ensemble axis: ``(K,)`` (or ``(1,)`` without one)."""
    if edim is None:
        return t.sum().reshape(1)
    return t.movedim(edim, 0).reshape(t.shape[edim], -1).sum(1)


class KineticTemperature(Hook):
    r"""Log :math:`T_\mathrm{kin} = \lVert p\rVert^2/N` per group and member every ``every``
    steps (SPEC §11). Needs a :class:`~thermotrain.PartitionedLangevin` optimizer; groups
    without momenta (SGLD) are skipped.

    It calls ``optimizer.finalize()`` (apply the pending half kick with the current gradient,
    so the momenta are BAOAB's full-step ones); the next step then kicks by h/2 only, so the
    trajectory is unchanged up to rounding.
    """

    def __init__(self, every: int = 10, name: str = "kinetic_temperature"):
        self.every = _check_every(every)
        self.name = name

    def on_start(self, state: Any) -> None:
        opt = state.optimizer
        if not (hasattr(opt, "finalize") and hasattr(opt, "kinetic_temperature")):
            raise TypeError(f"{self.name}: the optimizer {type(opt).__name__} has no momenta "
                            "(use a thermotrain sampler such as tt.BAOAB or tt.AdLaLa)")

    def after_gradient(self, state: Any, losses: Tensor) -> None:
        if state.step == 0 or state.step % self.every:
            return  # before the first step the momenta do not exist yet
        opt = state.optimizer
        opt.finalize()
        for g, temp in enumerate(opt.kinetic_temperature()):
            if bool(torch.isnan(temp).all()):
                continue
            state.log(f"{self.name}/group{g}", temp.reshape(-1) if temp.dim() else temp)


class ConfigurationalTemperature(Hook):
    r"""Log :math:`T_\mathrm{conf} = \langle\lVert\nabla L\rVert^2\rangle/\langle\Delta L\rangle`
    per group and member every ``every`` steps (SPEC §11), with a Hutchinson Laplacian.

    Two estimators of :math:`v^\top\nabla^2L\,v` (Rademacher v):

    * ``laplacian="hvp"`` (default): a Hessian-vector product by double backward (exact for
      smooth losses; autograd differentiates ReLU's kink as a zero second derivative, so the
      kinks' delta-function curvature is missed);
    * ``laplacian="fd"``: the central difference
      :math:`v^\top[\nabla L(\theta + \epsilon v) - \nabla L(\theta - \epsilon v)]/2\epsilon`
      (error :math:`O(\epsilon^2)` for smooth losses; it sees the kinks crossed within ε),
      with ‖∇L‖² from the mean of the two gradients. Two plain gradients, no double backward:
      with the default loss on a model the fused kernel supports
      (:func:`thermotrain.models.fused.gradient_fn`) it is several times cheaper. θ is
      restored bit for bit and the loop's ``.grad`` is put back.

    Args:
        loss: ``loss(model) -> (K,)`` per-member loss whose Gibbs measure the sampler samples
            (differentiable); default: the mean classification loss
            (:func:`thermotrain.models.ensemble_loss`) of the model on ``data`` (the full
            training set unless ``subset`` is given).
        every: record every this many steps.
        probes: Rademacher vectors per record (the estimator's variance falls as 1/probes).
        subset: use a fixed random subset of this many training points instead of all of
            them (cheaper; the subset loss :math:`L_S` then stands in for L: its measure is
            not the sampled one, so this biases :math:`T_\mathrm{conf}` upwards by the subset's
            gradient variance — documented in ``docs/thermo.md``).
        start: accumulate the running ratio from this step on (burn-in).
        laplacian: ``"hvp"`` or ``"fd"`` (above); epsilon: the finite-difference step ε.
        seed: seed of the probes' (and the subset's) CPU generator; its state is saved.
        name: hook name and metric prefix.
    """

    def __init__(self, loss: Callable[[torch.nn.Module], Tensor] | None = None, *,
                 every: int = 10, probes: int = 1, subset: int | None = None, start: int = 0,
                 laplacian: str = "hvp", epsilon: float = 1e-3, seed: int = 0,
                 name: str = "configurational_temperature"):
        self.loss = loss
        self.every = _check_every(every)
        if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
            raise ValueError(f"probes must be an int >= 1, got {probes!r}")
        if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int)
                                   or subset < 1):
            raise ValueError(f"subset must be None or an int >= 1, got {subset!r}")
        if laplacian not in ("hvp", "fd"):
            raise ValueError(f"laplacian must be 'hvp' or 'fd', got {laplacian!r}")
        if not (isinstance(epsilon, (int, float)) and epsilon > 0):
            raise ValueError(f"epsilon must be a number > 0, got {epsilon!r}")
        self.probes, self.subset, self.start, self.name = probes, subset, int(start), name
        self.laplacian, self.epsilon = laplacian, float(epsilon)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.sums: dict[int, list[Tensor]] = {}
        self._index: Tensor | None = None
        self._fused: Callable[[Tensor], Tensor] | None = None

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
        if self.laplacian == "fd" and self.loss is None:
            from ..models import fused

            if fused.supports(state.model, state.x_train, state.y_train):
                grad_fn = fused.gradient_fn(state.model, state.x_train, state.y_train)
                idx = (torch.arange(n) if self._index is None else self._index)
                idx = idx.to(state.x_train.device).expand(state.members, -1)
                self._fused = lambda: grad_fn(idx)

    def _data(self, state: Any) -> tuple[Tensor, Tensor]:
        x, y = state.x_train, state.y_train
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
        return [(torch.randint(0, 2, p.shape, generator=self.generator) * 2 - 1).to(p)
                for p in params]

    def _gradient(self, state: Any, params: list[Tensor]) -> list[Tensor]:
        """∇ of the summed member losses at the current θ (plain, no graph kept)."""
        if self._fused is not None:  # overwrites .grad in place (restored by the caller)
            self._fused()
            return [p.grad.clone() for p in params]
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
    def _fd(self, state: Any, params: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        theta = [p.detach().clone() for p in params]
        saved = [None if p.grad is None else p.grad.clone() for p in params]
        eps = self.epsilon
        grads = [torch.zeros_like(p) for p in params]
        lap = [torch.zeros_like(p) for p in params]
        try:
            for _ in range(self.probes):
                v = self._probe(params)
                for p, t, vi in zip(params, theta, v, strict=True):
                    p.copy_(t + eps * vi)
                plus = self._gradient(state, params)
                for p, t, vi in zip(params, theta, v, strict=True):
                    p.copy_(t - eps * vi)
                minus = self._gradient(state, params)
                for g, a, vi, gp, gm in zip(grads, lap, v, plus, minus, strict=True):
                    g += 0.5 * (gp + gm)
                    a += vi * (gp - gm) / (2 * eps)
        finally:
            for p, t, g in zip(params, theta, saved, strict=True):
                p.copy_(t)
                if g is not None and p.grad is not None and p.grad.shape == g.shape:
                    p.grad.copy_(g)  # in place: the fused kernel's prepared call stays valid
                else:
                    p.grad = g
        return [g / self.probes for g in grads], [a / self.probes for a in lap]

    def measure(self, state: Any) -> list[tuple[Tensor, Tensor]]:
        """Per group, ``(‖∇_g L‖², Hutchinson Δ_g L)`` per member at the current θ, each
        ``(K,)`` (θ and ``.grad`` are left as they were)."""
        groups = self._groups(state)
        params = [p for ps, _ in groups for p in ps]
        grads, lap = (self._hvp if self.laplacian == "hvp" else self._fd)(state, params)
        out, j = [], 0
        for ps, edim in groups:
            g2 = sum(_member_sum(grads[j + i].square(), edim) for i in range(len(ps)))
            dl = sum(_member_sum(lap[j + i], edim) for i in range(len(ps)))
            out.append((g2, dl))
            j += len(ps)
        return out

    def after_gradient(self, state: Any, losses: Tensor) -> None:
        if state.step % self.every:
            return
        for g, (g2, dl) in enumerate(self.measure(state)):
            state.log(f"{self.name}/grad_norm2/group{g}", g2)
            state.log(f"{self.name}/laplacian/group{g}", dl)
            if state.step >= self.start:
                s = self.sums.setdefault(g, [torch.zeros_like(g2), torch.zeros_like(dl)])
                s[0] += g2
                s[1] += dl
                state.log(f"{self.name}/group{g}", s[0] / s[1])

    def temperatures(self) -> list[Tensor]:
        """The running :math:`T_\\mathrm{conf}` per group, ``(K,)`` each."""
        return [s[0] / s[1] for _, s in sorted(self.sums.items())]
