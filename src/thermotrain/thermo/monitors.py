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

Both hooks record every ``every`` steps at θ_n, the point of step n's gradient: the kinetic
one in ``after_gradient`` (from ``.grad``), the configurational one's finite differences in
``before_gradient`` (θ perturbed and restored bit for bit; the loop's gradient then
overwrites ``.grad``, so nothing needs saving) and the rest in ``after_gradient``. They log
one row per member (:meth:`LoopState.log_table`, else :meth:`LoopState.log`):
``{name}/group{g}`` (and, for the configurational one, its parts ``{name}/grad_norm2/group{g}``
and ``{name}/laplacian/group{g}``; ``{name}/group{g}`` is then the running ratio of the sums
since ``start``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..training.hooks import Hook
from .kinetic import KineticTemperature, _check_every, kinetic_temperatures
from .probes import Groups, RecordLayout, optimizer_groups, restore_grads
from .records import RecordTables

__all__ = ["KineticTemperature", "ConfigurationalTemperature", "kinetic_temperatures"]


class ConfigurationalTemperature(RecordTables, Hook):
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

    * ``laplacian="hvp"``: a Hessian-vector product by double backward (exact for smooth
      losses; autograd differentiates ReLU's kink as a zero second derivative, so the kinks'
      delta-function curvature is missed; the dearest: ~1.8× a run at every 10 steps);
    * ``laplacian="fd"``: the central difference
      :math:`v^\top[\nabla L(\theta + \epsilon v) - \nabla L(\theta - \epsilon v)]/2\epsilon`
      (error :math:`O(\epsilon^2)` for smooth losses; it sees the kinks crossed within ε),
      with ‖∇L‖² (``"full"``/subset) from the mean of the two gradients. Two plain gradients,
      no double backward: with the default loss on a model the fused kernel supports
      (:func:`thermotrain.models.fused.gradient_fn`) it is several times cheaper;
    * ``laplacian="forward"`` (``data="batch"`` only): the one-sided difference
      :math:`v^\top[\nabla L_B(\theta + \epsilon v) - \nabla L_B(\theta)]/\epsilon` against the
      loop's gradient: one extra gradient per probe (the cheapest). Per probe it is
      :math:`v^\top\nabla^2L\,v + \tfrac{\epsilon}{2}\sum_{ijk}\partial^3_{ijk}L\,v_iv_jv_k +
      O(\epsilon^2)`; the middle term has zero mean over Rademacher v (every odd moment of v
      vanishes), so the estimator is unbiased to :math:`O(\epsilon^2)`, like the central one,
      with a little more variance.

    The default (``laplacian=None``) is ``"forward"`` on the step's batch and ``"fd"`` on any
    other energy: the cheap estimators, which also see ReLU's kinks.

    With the fused kernel a minibatch record with one probe is one C call after the loop's
    gradient (:class:`thermotrain.models.fused.FDRecorder`: θ ± εv made in the kernel's work
    space, θ never written); other records take their finite differences in
    ``before_gradient`` at θ_n (restored bit for bit). Either way the trajectory is that of
    an unmonitored run; if a later hook rewrites the batch, the record is measured in
    ``after_gradient`` on the rewritten data, with the same probes. Probes are drawn for 16
    records at a time (:class:`~.probes.RecordLayout`).

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
        laplacian: ``"hvp"``, ``"fd"``, ``"forward"`` or ``None`` (above); epsilon: the
            finite-difference step ε.
        seed: seed of the probes (each bank of them from a generator seeded by (seed,
            bank), resumed from the saved probe count) and of the subset's generator.
        name: hook name and metric prefix.
    """

    def __init__(self, loss: Callable[[torch.nn.Module], Tensor] | None = None, *,
                 every: int = 10, probes: int = 1, data: str | None = None,
                 subset: int | None = None, start: int = 0, laplacian: str | None = None,
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
        if laplacian is None:  # the cheap estimators (they also see ReLU's kinks)
            laplacian = "forward" if self.data == "batch" else "fd"
        if laplacian not in ("hvp", "fd", "forward"):
            raise ValueError(f"laplacian must be 'hvp', 'fd', 'forward' or None, got "
                             f"{laplacian!r}")
        if laplacian == "forward" and self.data != "batch":
            raise ValueError("laplacian='forward' needs data='batch' (it differences against "
                             f"the loop's minibatch gradient), got data={self.data!r}")
        if not (isinstance(epsilon, (int, float)) and epsilon > 0):
            raise ValueError(f"epsilon must be a number > 0, got {epsilon!r}")
        self.probes, self.subset, self.start, self.name = probes, subset, int(start), name
        self.laplacian, self.epsilon = laplacian, float(epsilon)
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)  # the subset's
        self._sums: Any = None  # (Σ‖∇_g L‖², Σ Δ_g L) since start: NumPy (G, 2, K) f64
        self._columns: dict[tuple, dict[str, int]] = {}
        self._index: Tensor | None = None
        self._grad_fn: Callable[[Tensor], Tensor] | None = None
        # the fused gradient at θ + αv: (idx, ({parameter: v}, α)), into .grad
        self._direct: Callable[[Tensor, tuple], Tensor] | None = None
        # a whole minibatch record by the fused kernel: fused.FDRecorder bound to the run's
        # model and data (_record_fn) and to the layout (_recorder)
        self._record_fn: Callable[..., Any] | None = None
        self._recorder: Any = None
        self._own: set[int] = set()  # ids of the run's model's parameters (fused runs)
        self._shiftable = False  # the layout's parameters are the model's
        self._fixed: Tensor | None = None  # (K, n) indices of the full set or the subset
        self._batch: Any = None  # the recorded step's Batch (and its x when seen)
        self._batch_x: Tensor | None = None
        self._pending: tuple | None = None  # before_gradient's differences
        self._lay: RecordLayout | None = None
        self._layout_key: tuple | None = None
        self._drawn = 0  # probes drawn before the layout exists (resume)
        self._deferred: list[tuple[int, bool]] = []  # (serial, record) of the waiting
        self._waiting: Tensor | None = None  # their results, a chunk (RecordTables._defer)
        self._tables: dict[int, list] = {}  # finished deferred records by serial
        self._serial = 0

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        self._reduce_deferred()
        return {"generator": self.generator.get_state(), "index": self._index,
                "probes_drawn": self._lay.drawn if self._lay is not None else self._drawn,
                "sums": {} if self._sums is None else
                {g: [torch.tensor(s) for s in self._sums[g]]
                 for g in range(self._sums.shape[0])}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self._index = state["index"]
        self._drawn = int(state.get("probes_drawn", 0))
        if self._lay is not None:
            self._lay.drawn = self._drawn
        sums = sorted((int(g), v) for g, v in state["sums"].items())
        self._sums = (torch.stack([torch.stack(v) for _, v in sums]).to("cpu", torch.float64)
                      .numpy() if sums else None)

    # ------------------------------------------------------------------ events
    def on_start(self, state: Any) -> None:
        self._reduce_deferred()  # records of an earlier run with this hook, if unread
        n = state.x_train.shape[0]
        if self.subset is not None and self._index is None:
            if self.subset > n:
                raise ValueError(f"{self.name}: subset={self.subset} exceeds the {n} training "
                                 "points")
            self._index = torch.randperm(n, generator=self.generator)[: self.subset]
        self._grad_fn = self._direct = self._record_fn = None  # this run's model decides
        self._own = set()
        self._layout_key = None  # re-checked against this run's parameters
        if self.laplacian != "hvp" and self.loss is None:
            from ..models import fused

            if fused.supports(state.model, state.x_train, state.y_train):
                self._grad_fn = fused.gradient_fn(state.model, state.x_train, state.y_train)
                model, x, y = state.model, state.x_train, state.y_train
                self._own = {id(p) for p in model.parameters()}
                self._direct = lambda idx, shift: fused.loss_and_grad(model, x, y, idx,
                                                                      shift=shift)
                if self.data == "batch" and self.probes == 1:  # (bound per layout)
                    self._record_fn = functools.partial(fused.FDRecorder, model, x, y)
                idx = (torch.arange(n) if self._index is None else self._index)
                self._fixed = idx.to(state.x_train.device).expand(state.members, -1)

    def _groups(self, state: Any) -> Groups:
        return optimizer_groups(state.optimizer, state.members)

    def _layout(self, state: Any, groups: Groups) -> None:
        """(Re)build the :class:`~.probes.RecordLayout` when the parameters change; its
        probes carry the scale 1/(step·probes) (step 2ε central, ε forward, 1 HVP)."""
        key = RecordLayout.key(groups)
        if key == self._layout_key:
            return
        self._reduce_deferred()
        step = {"fd": 2 * self.epsilon, "forward": self.epsilon}.get(self.laplacian)
        scale = 1.0 if step is None else 1.0 / (step * self.probes)
        drawn = self._lay.drawn if self._lay is not None else self._drawn
        self._lay = RecordLayout(groups, state.members, seed=self.seed, probes=self.probes,
                                 scale=scale, name=self.name)
        self._lay.drawn = drawn
        self._scale, self._layout_key = scale, key
        self._shiftable = all(id(p) in self._own for p in self._lay.params)
        self._recorder = None  # the kernel's records: the members on axis 0 (or none)
        if self._record_fn is not None and self._shiftable \
                and all(e in (0, None) for e in self._lay.edims):
            lay = self._lay
            self._recorder = self._record_fn(lay.row, lay.columns, lay.group_of, scale,
                                             self.epsilon / scale,
                                             central=self.laplacian == "fd")

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

    def _fused(self) -> bool:
        """Whether the energy's gradient is the fused kernel's (not after a rewrite of the
        step's batch by a later hook: the kernel indexes the training set)."""
        return self._grad_fn is not None and not (self.data == "batch" and self._batch.rewritten)

    def _shifts(self) -> bool:
        """Whether the fused kernel takes the shifted gradients itself (θ untouched)."""
        return self._direct is not None and self._shiftable and self._fused()

    def _kernel_records(self) -> bool:
        """Whether a record is one call of the fused kernel (:meth:`_kernel_record`)."""
        return self._recorder is not None and self._shifts()

    def _kernel_record(self, out: Tensor) -> Tensor:
        """A record of the step's batch (one probe) by the fused kernel, after the loop's
        gradient: ``[‖∇_g L_B‖², Δ_g L_B]`` ``(2, K, G)`` into ``out`` from ∇L_B(θ_n) in
        ``.grad`` and the kernel's ∇L_B(θ_n ± εv) (θ and ``.grad`` untouched)."""
        lay = self._lay
        lay.next()
        return self._recorder(self._batch.index, lay.slot_bytes(), out)

    def _param_gradient(self, state: Any, alpha: float = 0.0) -> list[Tensor]:
        """∇ of the summed member losses at the current θ (at θ + alpha·v for the current
        probe v when :meth:`_shifts`), per parameter (the fused path: the ``.grad`` tensors
        themselves, overwritten)."""
        params = self._lay.params
        if self._fused():
            idx = self._batch.index if self.data == "batch" else self._fixed
            if alpha:
                self._direct(idx, (self._lay.direction, alpha))
            else:
                self._grad_fn(idx)
            return [p.grad for p in params]
        with torch.enable_grad():
            return list(torch.autograd.grad(self._loss(state).sum(), params))

    @torch.no_grad()
    def _differences(self, state: Any, groups: list) -> Tensor | None:
        r"""The finite-difference part of a record at θ (restored bit for bit), into the
        work matrices :math:`W` of the layout (probes u = scale·v): :math:`W_1 = \sum
        u\odot[\nabla L(\theta + \epsilon v) - \nabla L(\theta - \epsilon v)]` (central,
        ``"fd"``) and, unless the energy is the step's batch, :math:`W_0` = the sum of the
        ±ε gradients; or (forward) :math:`W_1 = \sum u\odot\nabla L_B(\theta + \epsilon v)`,
        returning :math:`\sum u` for :meth:`_finish` to subtract the loop's gradient. The
        fused path leaves its last gradient in ``.grad``."""
        self._layout(state, groups)
        lay = self._lay
        params, theta = lay.params, lay.theta
        central, alpha = self.laplacian == "fd", self.epsilon / self._scale
        usum = None
        kernel = self._shifts()  # θ ± εv made by the kernel, else θ perturbed here
        if not kernel:
            torch._foreach_copy_(theta, params)
        try:
            for i in range(self.probes):
                lay.next()
                u = lay.probe
                if i == 0:
                    grad_sum, lap = lay.work[0], lay.work[1]  # the record's work matrices
                if kernel:
                    plus = lay.flat(self._param_gradient(state, alpha), lap if i == 0 else None)
                    if central:
                        minus = lay.flat(self._param_gradient(state, -alpha))
                else:
                    torch._foreach_add_(params, lay.views, alpha=alpha)
                    plus = lay.flat(self._param_gradient(state), lap if i == 0 else None)
                    if central:
                        torch._foreach_add_(params, lay.views, alpha=-2.0 * alpha)
                        minus = lay.flat(self._param_gradient(state))
                    torch._foreach_copy_(params, theta)
                if central and self.data != "batch":
                    if i == 0:
                        torch.add(plus, minus, out=grad_sum)
                    else:
                        grad_sum.add_(plus).add_(minus)
                d = plus.sub_(minus) if central else plus
                if i == 0:
                    if self.probes > 1:  # one probe: the product is taken in _reduce
                        lap.mul_(u)
                else:
                    lap.addcmul_(d, u)
                if not central:  # Σ u (the probe itself for one probe)
                    usum = u if self.probes == 1 else (u.clone() if i == 0 else usum.add_(u))
        except BaseException:
            if not kernel:
                torch._foreach_copy_(params, theta)
            raise
        return usum

    @torch.no_grad()
    def _finish(self, usum: Tensor | None) -> Tensor:
        """``[‖∇_g L‖², Δ_g L]`` per member and group ``(2, K, G)`` from the work matrices
        (:meth:`_differences`) and, for the step's batch, the loop's gradient in ``.grad``."""
        lay = self._lay
        w = lay.work
        if self.data == "batch":  # the energy is the step's batch: ∇L_B is the loop's gradient
            lay.flat([p.grad for p in lay.params], w[0])
        elif self.laplacian == "fd":
            w[0].mul_(0.5 / self.probes)  # the mean of the 2·probes gradients
        return self._reduce(w, lay.probe if self.probes == 1 else usum)

    def _hvp(self, state: Any, groups: list) -> Tensor:
        self._layout(state, groups)
        lay = self._lay
        params, w = lay.params, lay.work
        with torch.enable_grad():
            total = self._loss(state).sum()  # members independent: ∇ slice k = member k's
            grads = torch.autograd.grad(total, params, create_graph=True)
            for i in range(self.probes):
                lay.next()
                hv = torch.autograd.grad(grads, params, grad_outputs=lay.views,
                                         retain_graph=i + 1 < self.probes)
                d = lay.flat([h.detach() for h in hv]).mul_(lay.probe)
                if i == 0:
                    w[1].copy_(d)
                else:
                    w[1].add_(d)
        if self.probes > 1:
            w[1].div_(self.probes)
        if self.data == "batch":
            grads = [p.grad for p in params]  # the loop's ∇L_B (exact, no extra cost)
        lay.flat([t.detach() for t in grads], w[0]).square_()
        return lay.group_sums(w)

    def _measure(self, state: Any) -> Tensor:
        groups = self._groups(state)
        if self.data == "batch" and self._batch is None:
            raise RuntimeError(f"{self.name}: data='batch' measures the step's minibatch; "
                               "call measure() from after_gradient of a recorded step")
        if self.laplacian == "hvp":
            return self._hvp(state, groups)
        self._layout(state, groups)
        if self._kernel_records():
            return self._kernel_record(self._lay.result)
        params = [p for ps, _ in groups for p in ps]
        saved = None
        if self._grad_fn is not None:  # the fused kernel writes .grad: keep the loop's
            saved = [None if p.grad is None else p.grad.clone() for p in params]
        try:
            usum = self._differences(state, groups)
        finally:
            if saved is not None:
                restore_grads(params, saved)
        return self._finish(usum)

    def measure(self, state: Any) -> list[tuple[Tensor, Tensor]]:
        """Per group, ``(‖∇_g L‖², Hutchinson Δ_g L)`` per member at the current θ, each
        ``(K,)``, θ and ``.grad`` left as they were (a whole record at once; with
        ``data="batch"`` call it in ``after_gradient``: ‖∇L_B‖² is the loop's ``.grad``)."""
        res = self._measure(state)
        return [(res[0, :, g], res[1, :, g]) for g in range(res.shape[2])]

    def before_gradient(self, state: Any, batch: Any) -> Any:
        if state.step % self.every == 0:
            self._batch, self._batch_x = batch, batch.x
            if self.laplacian != "hvp":
                if self._record_fn is not None:  # one kernel call after the loop's gradient
                    self._pending = ("kernel", None)
                else:
                    groups = self._groups(state)
                    self._pending = (self._differences(state, groups), self._layout_key)
        return batch

    def after_gradient(self, state: Any, losses: Tensor) -> None:
        if state.step % self.every:
            return
        pending, self._pending = self._pending, None
        record = state.step >= self.start
        res = None
        if pending is not None and self._batch.x is self._batch_x:
            if pending[0] == "kernel":  # the kernel's record, if it can take this one
                self._layout(state, self._groups(state))
                if self._kernel_records():
                    if hasattr(state, "log_deferred"):  # tabulated later, many at once
                        self._defer(state, record)
                        return
                    res = self._kernel_record(self._lay.result)
            elif pending[1] == self._layout_key:
                res = self._finish(pending[0])
        if res is None:  # no before_gradient, a later hook rewrote the batch, a new layout
            if pending is not None and pending[0] != "kernel":
                self._lay.drawn -= self.probes  # with the probes of before_gradient
            res = self._measure(state)
        if hasattr(state, "log_deferred"):  # tabulated with the kernel's records
            self._defer(state, record, res)
            return
        self._reduce_deferred()  # the waiting records' sums first
        # (K, M): column per metric, in row order
        table = torch.tensor(self._tabulate(res.unsqueeze(1), [record])[0],
                             dtype=torch.float64).T
        columns = self._metric_columns(res.shape[2], record)
        log_table = getattr(state, "log_table", None)
        if log_table is not None:
            log_table(columns, table)
        else:  # a state with log() only
            for metric, j in columns.items():
                state.log(metric, table[:, j])
        self._batch = None

    def temperatures(self) -> list[Tensor]:
        """The running :math:`T_\\mathrm{conf}` per group, ``(K,)`` each."""
        self._reduce_deferred()
        if self._sums is None:
            return []
        sums = torch.from_numpy(self._sums)
        return list((sums[:, 0] / sums[:, 1]).unbind(0))
