r"""The logged side of a configurational-temperature record (:mod:`.monitors`): the table of
a record — per group ‖∇_g L‖², Δ_g L and, from ``start`` on, the running
:math:`T_\mathrm{conf}` = Σ‖∇_g L‖²/ΣΔ_g L — and the deferred tabulation of the records waiting in
a chunk.

Tabulating a record costs half a dozen small operations; on a small network each one, not
its arithmetic, is the cost. So with a :class:`~thermotrain.training.LoopState`
(``log_deferred``) the records (the fused kernel's: one C call each, its sums written into
a row of a waiting chunk; the others' sums copied there) are tabulated together — when the
rows are read (loggers, checkpoints), when the chunk is full, or before anything that needs
the sums — with the same arithmetic as one at a time (the sums accumulated record after
record), so the values do not depend on when that happens.
"""

from __future__ import annotations

from typing import Any

import numpy as np
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
    _sums: np.ndarray | None  # (G, 2, K) float64
    _deferred: list[tuple[int, bool]]
    _waiting: Tensor | None
    _waiting_rows: list[Tensor]
    _kernel_record: Any
    _tables: dict[int, list]
    _columns: dict[tuple, dict[str, int]]
    _lay: Any
    epsilon: float
    data: str
    _scale: float
    _layout: Any

    def _reduce(self, w: Tensor, u: Tensor | None) -> Tensor:
        """``[‖∇_g L‖², Δ_g L]`` ``(2, ..., K, G)`` from work matrices ``(2, ..., K, P)`` (one
        record, or a bank's): W₀ a gradient, W₁ for one probe u the shifted gradient
        (forward: W₁ ← (W₁ − W₀) ⊙ u) or the difference of the two (central: W₁ ← W₁ ⊙ u);
        for several probes W₁ holds the sum of the products and u = Σu (forward:
        W₁ ← W₁ − W₀ ⊙ Σu)."""
        if u is not None and self.laplacian != "hvp":
            if self.probes == 1:
                if self.laplacian == "forward":
                    w[1].sub_(w[0])
                w[1].mul_(u)
            elif self.laplacian == "forward":
                w[1].addcmul_(w[0], u, value=-1.0)
        w[0].square_()
        return self._lay.group_sums(w)

    def _tabulate(self, res: Tensor, records: list[bool]) -> list:
        """The logged tables of m records from their ``[‖∇_g L‖², Δ_g L]`` ``(2, m, K, G)``,
        in order, as lists (one conversion): per record 2G or, from ``start`` on
        (``records``), 3G lists of K values, one per metric in row order (per group ‖∇L‖²,
        ΔL and the running T_conf). Adds to the sums, in float64, record after record (one
        cumulative sum: a bank at once gives the bits of its records one at a time). In
        NumPy: on these few dozen numbers each torch operation's fixed cost would be the
        whole cost."""
        r = res.detach().to("cpu", torch.float64).numpy().transpose(1, 3, 0, 2)  # (m,G,2,K)
        m, g, _, k = r.shape
        out, i = [], 0
        while i < m:  # runs of records before and from start (one run, or two, in a bank)
            j = i + 1
            while j < m and records[j] == records[i]:
                j += 1
            part = r[i:j]
            if not records[i]:
                out += part.reshape(j - i, 2 * g, k).tolist()
            else:
                sums = self._sums if self._sums is not None else np.zeros((g, 2, k))
                run = np.cumsum(np.concatenate((sums[None], part)), 0)[1:]
                self._sums = run[-1].copy()
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratio = run[:, :, 0] / run[:, :, 1]
                out += np.concatenate((part, ratio[:, :, None]), 2).reshape(j - i, 3 * g,
                                                                            k).tolist()
            i = j
        return out

    #: deferred records wait in chunks of this many (tabulated when one is full)
    CHUNK = 256

    def _defer(self, state: Any, record: bool, res: Tensor | None = None) -> None:
        """This step's record — the kernel's, or ``res`` ``(2, K, G)`` measured otherwise —
        into the next row of the waiting chunk, and its rows logged as a placeholder
        (``LoopState.log_deferred``) until tabulated."""
        lay = self._lay
        if self._waiting is None or self._waiting.shape[1:] != lay.result.shape:
            self._reduce_deferred()
            self._waiting = lay.result.new_empty(self.CHUNK, *lay.result.shape)
            self._waiting_rows = list(self._waiting.unbind(0))
        elif len(self._deferred) == self.CHUNK:
            self._reduce_deferred()
        row = self._waiting_rows[len(self._deferred)]
        if res is None:
            self._kernel_record(row)
        else:
            row.copy_(res)
        self._deferred.append((self._serial, record))
        state.log_deferred(self._metric_columns(lay.groups, record),
                           Resolve(self, self._serial))
        self._serial += 1
        self._batch = None

    def _reduce_deferred(self) -> None:
        """Tabulate the records waiting in the chunk (see :meth:`_defer`) together, in a few
        operations for all of them: the same arithmetic as one at a time, so the values do
        not depend on when."""
        if not self._deferred:
            return
        serials, records = zip(*self._deferred, strict=True)
        res = self._waiting[:len(serials)].transpose(0, 1)  # (2, m, K, G)
        self._deferred.clear()
        self._tables.update(zip(serials, self._tabulate(res, list(records)), strict=True))

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
