r"""Aging observables of training dynamics (docs/science.md §10; Baity-Jesi et al. 2018,
DEEP-GLASS).

With :math:`w(t)` all weights of a member flattened (N entries, float64), at waiting times
:math:`t_w` and lags :math:`t` (in optimizer steps):

.. math::
    \Delta(t_w, t_w+t) = \frac1N \sum_i \bigl(w_i(t_w+t) - w_i(t_w)\bigr)^2, \qquad
    C(t_w, t_w+t) = \frac{\sum_i w_i(t_w)\, w_i(t_w+t)}{\lVert w(t_w)\rVert\,
                    \lVert w(t_w+t)\rVert}, \qquad
    Y = \frac{\sum_i \delta_i^4}{\bigl(\sum_i \delta_i^2\bigr)^2},\ \delta = w(t_w+t) - w(t_w).

:math:`\Delta` is DEEP-GLASS's mean square displacement (their variable ``C``); the
normalised overlap :math:`C` and the participation ratio :math:`Y` (≈ 1/N when every weight
moves alike, → 1 when one weight carries the displacement) are ours (docs/science.md §10). Aging =
:math:`\Delta` depends on :math:`t_w`, not only on :math:`t`. Only the snapshots
:math:`w(t_w)` still needed are stored (one ``(K, N)`` float64 copy per open waiting time);
the observables at :math:`t_w + t` use the current weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..training.hooks import Hook
from ._state import member_count, model_layers

__all__ = ["Aging", "log_spaced_times"]


def log_spaced_times(start: int, stop: int, count: int) -> list[int]:
    """Unique integers log-spaced in ``[start, stop]`` (DEEP-GLASS's grids: waiting times
    from 10, lags from 1, both up to half the run)."""
    if not (isinstance(start, int) and isinstance(stop, int) and 1 <= start <= stop):
        raise ValueError(f"need integers 1 <= start <= stop, got {start!r}, {stop!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be an int >= 1, got {count!r}")
    return sorted({int(round(v)) for v in np.geomspace(start, stop, count)})


def _check_times(name: str, values: Iterable[int], low: int) -> list[int]:
    values = list(values)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= low
                             for v in values):
        raise ValueError(f"{name} must be a non-empty list of ints >= {low}, got {values!r}")
    return sorted(set(values))


class Aging(Hook):
    r"""Records :math:`\Delta`, :math:`C` and :math:`Y` at every :math:`(t_w, t_w + t)` for every
    ensemble member, as a loop hook or through :meth:`observe` in a user's loop.

    Args:
        waiting_times: the :math:`t_w` (steps, ≥ 0).
        lags: the :math:`t` (steps, ≥ 1).
        per_layer: also record each layer's observables (``layer`` = its index; the whole
            network is ``layer = -1``).
        name: hook name and metric prefix.

    Results: :meth:`frame` — a tidy table with columns ``member, layer, t_w, t, msd,
    overlap, participation``. As a hook it also logs ``aging_msd_tw{t_w}`` (and
    ``aging_overlap_…``) at step :math:`t_w + t`, one row per member.

    Example:
        >>> import torch, thermotrain as tt
        >>> net = torch.nn.Linear(3, 2)
        >>> aging = tt.swaps.Aging([1, 2], [1, 2])
        >>> for step in range(5):
        ...     aging.observe(step, net)
        ...     with torch.no_grad(): _ = net.weight.add_(0.1)
        >>> aging.frame().shape[0]                  # 2 waiting times x 2 lags
        4
    """

    def __init__(self, waiting_times: Sequence[int], lags: Sequence[int], *,
                 per_layer: bool = False, name: str = "aging"):
        self.waiting_times = _check_times("waiting_times", waiting_times, 0)
        self.lags = _check_times("lags", lags, 1)
        self.per_layer, self.name = bool(per_layer), name
        self._targets: dict[int, list[int]] = {}
        for tw in self.waiting_times:
            for t in self.lags:
                self._targets.setdefault(tw + t, []).append(tw)
        self._snapshots: dict[int, list[Tensor]] = {}
        self._rows: list[dict[str, Any]] = []
        self._seen = -1

    @property
    def last_step(self) -> int:
        """The last step at which an observable is due."""
        return max(self._targets)

    def _flats(self, model: nn.Module | Sequence[Tensor]) -> list[Tensor]:
        """``(K, N)`` float64 copies: the whole net first, then (per_layer) each layer."""
        if isinstance(model, nn.Module):
            k = member_count(model)
            groups = [list(m.parameters(recurse=False)) for m in model_layers(model)]
        else:
            k, groups = None, [[p] for p in model]
        if k is None:
            k = groups[0][0].shape[0]
        parts = [torch.cat([p.detach().reshape(k, -1) for p in g], dim=1).double()
                 for g in groups]
        whole = torch.cat(parts, dim=1)
        return [whole, *parts] if self.per_layer else [whole]

    @torch.no_grad()
    def observe(self, step: int, model: nn.Module | Sequence[Tensor]) -> None:
        """Call with the step count and the current weights (``model``, or ``(K, ...)``
        tensors); snapshots and measures whatever is due at ``step``."""
        if step <= self._seen:
            return
        self._seen = step
        due = self._targets.get(step, [])
        if step not in self.waiting_times and not due:
            return
        now = self._flats(model)
        for tw in due:
            for layer, (old, new) in enumerate(zip(self._snapshots[tw], now, strict=True)):
                d = new - old
                d2 = d.square().sum(1)
                self._rows.append({
                    "layer": layer - 1 if self.per_layer else -1, "t_w": tw, "t": step - tw,
                    "msd": d2 / d.shape[1],
                    "overlap": (old * new).sum(1) / (old.norm(dim=1) * new.norm(dim=1)),
                    "participation": d.square().square().sum(1) / d2.square()})
        if step in self.waiting_times:
            self._snapshots[step] = now
        for tw in list(self._snapshots):
            if tw + self.lags[-1] <= step:
                del self._snapshots[tw]

    def frame(self):
        """The tidy table of every recorded observable (pandas DataFrame), one row per
        member, layer, t_w and t."""
        import pandas as pd

        columns = ["member", "layer", "t_w", "t", "msd", "overlap", "participation"]
        parts = []
        for r in self._rows:
            k = r["msd"].shape[0]
            parts.append(pd.DataFrame({
                "member": np.arange(k), "layer": r["layer"], "t_w": r["t_w"], "t": r["t"],
                **{key: r[key].numpy() for key in ("msd", "overlap", "participation")}}))
        if not parts:
            return pd.DataFrame(columns=columns)
        return pd.concat(parts, ignore_index=True)[columns]

    # ------------------------------------------------------------------ as a hook
    def on_start(self, state: Any) -> None:
        self.observe(state.step, state.model)

    def after_step(self, state: Any) -> None:
        n_before = len(self._rows)
        self.observe(state.step, state.model)
        for r in self._rows[n_before:]:
            if r["layer"] == -1:
                state.log(f"{self.name}_msd_tw{r['t_w']}", r["msd"])
                state.log(f"{self.name}_overlap_tw{r['t_w']}", r["overlap"])

    def state_dict(self) -> dict[str, Any]:
        return {"snapshots": {k: [t.clone() for t in v] for k, v in self._snapshots.items()},
                "rows": list(self._rows), "seen": self._seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._snapshots = {int(k): list(v) for k, v in state["snapshots"].items()}
        self._rows = list(state["rows"])
        self._seen = int(state["seen"])
