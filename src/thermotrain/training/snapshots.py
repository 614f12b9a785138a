r"""Parameter snapshots during training, and per-member evaluation on a whole data set.

:class:`Snapshots` keeps, at chosen steps s, the first layer's weights and biases of every
member and all parameters of some members (``keep``: the members whose decision boundaries a
report draws). With ``window`` W > 1 every snapshot also keeps the parameters of those members
at the last W steps :math:`\max(0, s - W + 1), …, s` (``snap["window"]``): the averaged
classifier of paper Fig. 9 (the mean of the W predicted probabilities, docs/science.md §7). Its
state —
snapshots taken and the window states still needed — is checkpointed like any hook's.

:func:`evaluate` is the per-member mean loss and accuracy :math:`L_k, A_k` of the current
parameters on a whole set, in chunks (bounded memory on MNIST).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..models import ensemble_accuracy, ensemble_loss
from .hooks import Hook

__all__ = ["Snapshots", "evaluate"]


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: Tensor, y: Tensor, chunk: int = 10_000
             ) -> tuple[Tensor, Tensor]:
    """Per-member mean loss and accuracy (fraction) on the set ``(x, y)``: two ``(K,)``
    tensors, computed over chunks of ``chunk`` points."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
    n = x.shape[0]
    loss_sum: Tensor | None = None
    correct: Tensor | None = None
    for start in range(0, n, chunk):
        xb, yb = x[start : start + chunk], y[start : start + chunk]
        logits = model(xb)
        ls = ensemble_loss(logits, yb, reduction="sum")
        acc = ensemble_accuracy(logits, yb) * xb.shape[0]
        loss_sum = ls if loss_sum is None else loss_sum + ls
        correct = acc if correct is None else correct + acc
    if loss_sum is None or correct is None:
        raise ValueError("evaluate needs a non-empty data set")
    return loss_sum / n, correct / n


def _window_steps(snap_steps: Iterable[int], width: int) -> set[int]:
    if width <= 1:
        return set()
    return {t for s in snap_steps for t in range(max(0, s - width + 1), s + 1)}


class Snapshots(Hook):
    """Keep parameters at the steps ``steps`` (see the module docstring).

    Args:
        steps: the snapshot steps (0 is taken at the start of a fresh run).
        keep: indices of the members whose full parameters are kept.
        window: W ≥ 1, the number of last states kept per snapshot for averaging.

    Attributes:
        snapshots: the snapshots taken, dicts with ``step``, ``first_weight``,
            ``first_bias`` (all members), ``members`` (``{name: (len(keep), ...)}``) and,
            with W > 1, ``window`` (``{"steps": [...], "members": {name: (W', len(keep),
            ...)}}``).
    """

    name = "snapshots"

    def __init__(self, steps: Iterable[int], keep: Sequence[int], window: int = 1):
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}")
        self.steps = sorted({int(s) for s in steps})
        self.keep = [int(k) for k in keep]
        self.width = window if self.keep else 1
        self._window_steps = _window_steps(self.steps, self.width)
        self._needed = set(self.steps) | self._window_steps
        self.snapshots: list[dict[str, Any]] = []
        self.window: list[list[Any]] = []  # [step, {name: (len(keep), ...)}] still needed

    def _members(self, model: torch.nn.Module) -> dict[str, Tensor]:
        idx = torch.tensor(self.keep, dtype=torch.long)
        return {name: p.detach()[idx.to(p.device)].clone()
                for name, p in model.named_parameters()}

    def _record(self, state: Any) -> None:
        step, model = state.step, state.model
        if step in self._window_steps:
            self.window.append([step, self._members(model)])
        if step not in self.steps:
            return
        first = model.layer_modules()[0]
        snap: dict[str, Any] = {"step": step, "first_weight": first.weight.detach().clone(),
                                "first_bias": first.bias.detach().clone(),
                                "members": self._members(model)}
        if self._window_steps:
            states = [(t, m) for t, m in self.window if step - self.width < t <= step]
            snap["window"] = {"steps": [t for t, _ in states],
                              "members": {k: torch.stack([m[k] for _, m in states])
                                          for k in states[0][1]}}
            later = [s for s in self.steps if s > step]
            self.window = [[t, m] for t, m in self.window
                           if any(t > s2 - self.width for s2 in later)]
        self.snapshots.append(snap)

    def on_start(self, state: Any) -> None:
        if state.step == 0 and not self.snapshots and not self.window:
            self._record(state)

    def after_step(self, state: Any) -> None:
        if state.step in self._needed:
            self._record(state)

    def state_dict(self) -> dict[str, Any]:
        return {"snapshots": self.snapshots, "window": self.window}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.snapshots = list(state.get("snapshots", []))
        self.window = [[int(t), m] for t, m in state.get("window", [])]
