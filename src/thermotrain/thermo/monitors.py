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
        self._sums: list[Tensor] | None = None  # Σ‖∇L‖², ΣΔL since start, (K, G) each
        self._index: Tensor | None = None
        self._grad_fn: Callable[[Tensor], Tensor] | None = None
        self._fixed: Tensor | None = None  # (K, n) indices of the full set or the subset
        self._batch: Any = None  # the recorded step's Batch (and its x when seen)
        self._batch_x: Tensor | None = None
        self._pending: tuple | None = None  # before_gradient's differences
        self._generator_state: Tensor | None = None
        self._layout_key: tuple | None = None
        self._lap_scale = 1.0  # the finite differences' 1/(2ε·probes), applied to the sums

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "index": self._index,
                "sums": {} if self._sums is None else
                {g: [t[:, g].clone() for t in self._sums] for g in range(self._sums[0].shape[1])}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self._index = state["index"]
        sums = sorted((int(g), v) for g, v in state["sums"].items())
        self._sums = [torch.stack([v[i] for _, v in sums], 1) for i in (0, 1)] if sums else None

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

    def _groups(self, state: Any) -> list[tuple[list[Tensor], int | None]]:
        out = []
        default = 0 if state.members > 1 else None
        for g in state.optimizer.param_groups:
            params = [p for p in g["params"] if p.requires_grad]
            out.append((params, g.get("ensemble_dim", default)))
        return out

    def _layout(self, state: Any, groups: list[tuple[list[Tensor], int | None]]) -> None:
        """(Re)build, when the parameters change, the layout of a record: every coordinate
        as one ``(K, P)`` matrix (member k's coordinates in row k, groups in consecutive
        columns; :meth:`_flat`), the Rademacher probe buffer in it and its per-parameter
        views, the ``(P, G)`` group indicator (per group sums are one matmul) and the
        buffer θ is saved in."""
        params = [p for ps, _ in groups for p in ps]
        edims = [e for ps, e in groups for _ in ps]
        key = (tuple((id(p), p.shape) for p in params), tuple(edims))
        if key == self._layout_key:
            return
        k = state.members
        for p, e in zip(params, edims, strict=True):
            if (e is None and k != 1) or (e is not None and p.shape[e] != k):
                raise ValueError(f"{self.name}: a parameter of shape {tuple(p.shape)} with "
                                 f"ensemble_dim={e} does not hold the run's {k} members")
        sizes = [p.numel() // k for p in params]
        like = params[0]
        n = k * sum(sizes)
        # the probe's storage, padded to whole bytes of random bits (see _draw)
        self._probe_bytes = torch.empty((n + 7) // 8, 8, dtype=like.dtype, device=like.device)
        buf = self._probe_bytes.view(-1)[:n].view(k, -1)
        bits = (torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1
        self._signs = (1 - 2 * bits).to(like)  # row b: the ±1 of byte b's 8 bits
        ind = torch.zeros(sum(sizes), len(groups), dtype=buf.dtype, device=buf.device)
        views, col = [], 0
        for p, e, m in zip(params, edims, sizes, strict=True):
            piece = buf[:, col:col + m]
            col += m
            if e is None:
                views.append(piece.view(p.shape))
            else:
                rest = [s for i, s in enumerate(p.shape) if i != e]
                views.append(piece.view(k, *rest).movedim(0, e))
        col = 0
        for g, (ps, _) in enumerate(groups):
            m = sum(p.numel() // k for p in ps)
            ind[col:col + m, g] = 1
            col += m
        self._params, self._edims, self._probe, self._probe_views = params, edims, buf, views
        self._indicator = ind
        self._theta = [torch.empty_like(p) for p in params]
        self._layout_key = key

    def _flat(self, ts: list[Tensor]) -> Tensor:
        """Tensors shaped like the parameters as one ``(K, P)`` copy (:meth:`_layout`)."""
        k = self._probe.shape[0]
        return torch.cat([(t if e in (0, None) else t.movedim(e, 0)).reshape(k, -1)
                          for t, e in zip(ts, self._edims, strict=True)], 1)

    def _draw(self) -> None:
        """A fresh Rademacher vector in the probe buffer (its views see it): uniform random
        bytes, each looked up as the ±1 signs of its 8 bits (i.i.d. fair signs; one small
        ``randint`` and one gather instead of a ``randint`` per coordinate)."""
        out = self._probe_bytes
        idx = torch.randint(0, 256, (out.shape[0],), generator=self.generator)
        torch.index_select(self._signs, 0, idx.to(out.device), out=out)

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

    def _gradient(self, state: Any) -> Tensor:
        """∇ of the summed member losses at the current θ as a ``(K, P)`` copy (the fused
        path overwrites ``.grad``)."""
        params = self._params
        if self._grad_fn is not None and not (self.data == "batch" and self._batch.rewritten):
            self._grad_fn(self._batch.index if self.data == "batch" else self._fixed)
            return self._flat([p.grad for p in params])
        with torch.enable_grad():
            return self._flat(list(torch.autograd.grad(self._loss(state).sum(), params)))

    @torch.no_grad()
    def _differences(self, state: Any, groups: list) -> tuple:
        r"""The finite-difference part of a record at θ (restored bit for bit), as ``(K, P)``
        matrices: central (``"fd"``): :math:`\sum_{\rm probes} v\odot[\nabla L(\theta+
        \epsilon v) - \nabla L(\theta-\epsilon v)]` and, unless the energy is the step's
        batch, the sum of the two gradients; forward: :math:`\sum v\odot\nabla
        L_B(\theta+\epsilon v)` and :math:`\sum v`, finished against the loop's gradient by
        :meth:`_finish`. The fused path leaves its last gradient in ``.grad``."""
        self._layout(state, groups)
        params, theta, views, v = self._params, self._theta, self._probe_views, self._probe
        eps, central = self.epsilon, self.laplacian == "fd"
        lap = gsum = vsum = None
        torch._foreach_copy_(theta, params)
        try:
            for _ in range(self.probes):
                self._draw()
                torch._foreach_add_(params, views, alpha=eps)
                plus = self._gradient(state)
                if central:
                    torch._foreach_add_(params, views, alpha=-2.0 * eps)
                    minus = self._gradient(state)
                torch._foreach_copy_(params, theta)
                if central:
                    d = (plus - minus).mul_(v)
                    if self.data != "batch":
                        gsum = plus.add_(minus) if gsum is None else gsum.add_(plus).add_(minus)
                else:
                    d = plus.mul_(v)
                    vsum = v.clone() if vsum is None else vsum.add_(v)
                lap = d if lap is None else lap.add_(d)
        except BaseException:
            torch._foreach_copy_(params, theta)
            raise
        self._lap_scale = 1.0 / ((2 * eps if central else eps) * self.probes)
        g2 = None if gsum is None else (gsum.square_() @ self._indicator).div_(
            (2.0 * self.probes) ** 2)
        return g2, lap, vsum

    @torch.no_grad()
    def _finish(self, pending: tuple) -> tuple[Tensor, Tensor]:
        """``(‖∇_g L‖², Δ_g L)``, each ``(K, G)``, from :meth:`_differences`' results and,
        for the step's batch, the loop's gradient in ``.grad``."""
        g2, lap, vsum = pending
        if g2 is None:  # the energy is the step's batch: ∇L_B is the loop's gradient
            g0 = self._flat([p.grad for p in self._params])
            g2 = g0.square() @ self._indicator
            if vsum is not None:  # forward: Σ vᵀ[∇L_B(θ + εv) − ∇L_B(θ)]
                lap = lap.sub_(g0.mul_(vsum))
        return g2, (lap @ self._indicator).mul_(self._lap_scale)

    def _hvp(self, state: Any, groups: list) -> tuple[Tensor, Tensor]:
        self._layout(state, groups)
        params = self._params
        with torch.enable_grad():
            total = self._loss(state).sum()  # members independent: ∇ slice k = member k's
            grads = torch.autograd.grad(total, params, create_graph=True)
            lap = None
            for i in range(self.probes):
                self._draw()
                hv = torch.autograd.grad(grads, params, grad_outputs=self._probe_views,
                                         retain_graph=i + 1 < self.probes)
                d = self._flat([h.detach() for h in hv]).mul_(self._probe)
                lap = d if lap is None else lap.add_(d)
        if self.data == "batch":
            grads = [p.grad for p in params]  # the loop's ∇L_B (exact, no extra cost)
        g = self._flat([t.detach() for t in grads])
        return (g.square_() @ self._indicator,
                (lap @ self._indicator).div_(self.probes))

    def _restore_grads(self, params: list[Tensor], saved: list[Tensor | None]) -> None:
        if all(p.grad is not None and g is not None and p.grad.shape == g.shape
               for p, g in zip(params, saved, strict=True)):
            # in place: the fused kernel's prepared call stays valid
            torch._foreach_copy_([p.grad for p in params], saved)
        else:
            for p, g in zip(params, saved, strict=True):
                p.grad = g

    def _measure(self, state: Any) -> tuple[Tensor, Tensor]:
        groups = self._groups(state)
        if self.data == "batch" and self._batch is None:
            raise RuntimeError(f"{self.name}: data='batch' measures the step's minibatch; "
                               "call measure() from after_gradient of a recorded step")
        if self.laplacian == "hvp":
            return self._hvp(state, groups)
        params = [p for ps, _ in groups for p in ps]
        saved = None
        if self._grad_fn is not None:  # the fused kernel writes .grad: keep the loop's
            saved = [None if p.grad is None else p.grad.clone() for p in params]
        try:
            pending = self._differences(state, groups)
        finally:
            if saved is not None:
                self._restore_grads(params, saved)
        return self._finish(pending)

    def measure(self, state: Any) -> list[tuple[Tensor, Tensor]]:
        """Per group, ``(‖∇_g L‖², Hutchinson Δ_g L)`` per member at the current θ, each
        ``(K,)`` (θ and ``.grad`` are left as they were). With ``data="batch"`` ‖∇L_B‖² is
        the loop's gradient in ``.grad`` (call it in ``after_gradient``). The hook itself
        does the finite differences in ``before_gradient`` (θ_n is the point of the
        step's gradient too, and the loop's gradient then overwrites ``.grad``: nothing to
        save) and finishes them here in ``after_gradient``."""
        g2, lap = self._measure(state)
        return [(g2[:, g], lap[:, g]) for g in range(g2.shape[1])]

    def before_gradient(self, state: Any, batch: Any) -> Any:
        if state.step % self.every == 0:
            self._batch, self._batch_x = batch, batch.x
            if self.laplacian != "hvp":
                # a fallback measure (batch rewritten later) redraws the same probes
                self._generator_state = self.generator.get_state()
                self._pending = (self._differences(state, self._groups(state)),
                                 self._layout_key)
        return batch

    def after_gradient(self, state: Any, losses: Tensor) -> None:
        if state.step % self.every:
            return
        pending, self._pending = self._pending, None
        if pending is not None and self._batch.x is self._batch_x \
                and pending[1] == self._layout_key:
            g2, lap = self._finish(pending[0])
        else:  # no before_gradient, or a later hook rewrote the batch: measure now
            if pending is not None:
                self.generator.set_state(self._generator_state)
            g2, lap = self._measure(state)
        ratio = None
        if state.step >= self.start:
            if self._sums is None:
                self._sums = [g2.clone(), lap.clone()]
            else:
                self._sums[0] += g2
                self._sums[1] += lap
            ratio = self._sums[0] / self._sums[1]
        for g in range(g2.shape[1]):
            state.log(f"{self.name}/grad_norm2/group{g}", g2[:, g])
            state.log(f"{self.name}/laplacian/group{g}", lap[:, g])
            if ratio is not None:
                state.log(f"{self.name}/group{g}", ratio[:, g])
        self._batch = None

    def temperatures(self) -> list[Tensor]:
        """The running :math:`T_\\mathrm{conf}` per group, ``(K,)`` each."""
        if self._sums is None:
            return []
        ratio = self._sums[0] / self._sums[1]
        return [ratio[:, g] for g in range(ratio.shape[1])]
