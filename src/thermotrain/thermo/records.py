r"""The logged side of a configurational-temperature record (:mod:`.monitors`): the table of
a record — per group ‖∇_g L‖², Δ_g L and, from ``start`` on, the running
:math:`T_\mathrm{conf}` = Σ‖∇_g L‖²/ΣΔ_g L — and the deferred reduction of the records of a
probe bank.

A record costs a couple of dozen small tensor operations; on a small network each one, not
its arithmetic, is the cost, and it is several times dearer cold (once every ``every``
steps, between training steps) than in a burst. So with a :class:`~thermotrain.training.
LoopState` (``log_deferred``) the hook keeps only ∇L_B(θ_n) in the record's slot and
finishes the records of a bank together, in order — when the bank is full, when the loop's
rows are read (loggers, checkpoints), or before anything that needs the sums — with the
same operations as one at a time, so the values do not depend on when that happens.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["RecordTables", "Resolve"]


class RecordTables:
    """Mixin of :class:`~.monitors.ConfigurationalTemperature`: record tables, sums and the
    deferred records (``_sums``, ``_deferred``, ``_tables``, ``_lay``, ``name`` and
    ``_columns`` set by the hook)."""

    name: str
    laplacian: str
    probes: int
    _sums: Tensor | None
    _deferred: list[tuple[int, int, bool]]
    _tables: dict[int, list]
    _columns: dict[tuple, dict[str, int]]
    _lay: Any
    epsilon: float
    data: str
    _scale: float
    _layout: Any
    _param_gradient: Any

    def _defers(self, state: Any) -> bool:
        return self.data == "batch" and self.probes == 1 and hasattr(state, "log_deferred")

    @torch.no_grad()
    def _shifted_gradients(self, state: Any, groups: list) -> None:
        """A deferred record's part at θ_n (restored bit for bit): ∇L_B(θ + εv) (central:
        minus ∇L_B(θ − εv)) copied, per parameter, into the record's slot of the bank."""
        self._layout(state, groups)
        lay = self._lay
        params, theta, alpha = lay.params, lay.theta, self.epsilon / self._scale
        if self._deferred and lay.drawn % lay.slots == 0:
            self._reduce_deferred()  # before the next bank overwrites their slots
        torch._foreach_copy_(theta, params)
        try:
            lay.next()
            torch._foreach_add_(params, lay.views, alpha=alpha)
            out = lay.shifted[lay.slot]
            torch._foreach_copy_(out, self._param_gradient(state))
            if self.laplacian == "fd":
                torch._foreach_add_(params, lay.views, alpha=-2.0 * alpha)
                torch._foreach_sub_(out, self._param_gradient(state))
        finally:
            torch._foreach_copy_(params, theta)

    def _reduce(self, w: Tensor, u: Tensor | None) -> Tensor:
        """``[‖∇_g L‖² | Δ_g L]`` ``(G, 2K)`` from a record's work matrices: W₀ a gradient,
        W₁ for one probe u the shifted gradient (forward: W₁ ← (W₁ − W₀) ⊙ u) or the
        difference of the two (central: W₁ ← W₁ ⊙ u); for several probes W₁ holds the sum
        of the products and u = Σu (forward: W₁ ← W₁ − W₀ ⊙ Σu)."""
        if u is not None and self.laplacian != "hvp":
            if self.probes == 1:
                if self.laplacian == "forward":
                    w[1].sub_(w[0])
                w[1].mul_(u)
            elif self.laplacian == "forward":
                w[1].addcmul_(w[0], u, value=-1.0)
        w[0].square_()
        return torch.mm(self._lay.indicator, w.view(-1, w.shape[2]).T)

    def _table(self, res: Tensor, record: bool) -> Tensor:
        """The logged values of a record ``(2G or 3G, K)``, row per metric in row order (per
        group ‖∇L‖², ΔL and, from ``start`` on, the running T_conf); adds to the sums."""
        k = res.shape[1] // 2
        if not record:
            return res.view(-1, k)
        self._sums = res.clone() if self._sums is None else self._sums.add_(res)
        return torch.cat((res, self._sums[:, :k] / self._sums[:, k:]), 1).view(-1, k)

    @torch.no_grad()
    def _reduce_deferred(self) -> None:
        """Finish the records waiting in the bank (see ``after_gradient``), in order, in one
        warm burst: the same operations as at once, so the values do not depend on when."""
        lay = self._lay
        for serial, slot, record in self._deferred:
            w = lay.work_bank[slot]
            lay.flat(lay.loop_grad[slot], w[0])
            lay.flat(lay.shifted[slot], w[1])
            res = self._reduce(w, lay.probe_bank[slot])
            self._tables[serial] = self._table(res, record).tolist()
        self._deferred.clear()

    def _resolved(self, serial: int) -> list:
        if serial not in self._tables:
            self._reduce_deferred()
        return self._tables.pop(serial)

    def _metric_columns(self, groups: int, ratio: bool) -> dict[str, int]:
        """Metric → column of the logged table, whose columns are per group
        ``‖∇L‖², ΔL`` (and ``T_conf``): the order of the rows."""
        key = (groups, ratio)
        if key not in self._columns:
            parts = ("grad_norm2/", "laplacian/", "")[:3 if ratio else 2]
            self._columns[key] = {f"{self.name}/{part}group{g}": len(parts) * g + i
                                  for g in range(groups) for i, part in enumerate(parts)}
        return self._columns[key]



class Resolve:
    """A deferred record's table, computed when the loop's rows are read."""

    __slots__ = ("hook", "serial")

    def __init__(self, hook: RecordTables, serial: int):
        self.hook, self.serial = hook, serial

    def __call__(self) -> list:
        return self.hook._resolved(self.serial)
