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
    _sums: Tensor | None
    _deferred: list[tuple[int, int, bool]]
    _tables: dict[int, list]
    _columns: dict[tuple, dict[str, int]]
    _lay: Any

    def _reduce(self, w: Tensor, usum: Tensor | None) -> Tensor:
        """``[‖∇_g L‖² | Δ_g L]`` ``(G, 2K)`` from a record's work matrices (W₀ a gradient,
        W₁ the Laplacian terms; ``usum``: forward, subtract W₀ ⊙ Σu first)."""
        if usum is not None:  # forward: Σ u ⊙ [∇L_B(θ + εv) − ∇L_B(θ)]
            w[1].addcmul_(w[0], usum, value=-1.0)
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
        lay, forward = self._lay, self.laplacian == "forward"
        for serial, slot, record in self._deferred:
            res = self._reduce(lay.work_bank[slot], lay.probe_bank[slot] if forward else None)
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
