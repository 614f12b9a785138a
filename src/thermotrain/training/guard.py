r"""Diverging ensemble members: detect, record and freeze them (issue 8 §7.2).

An ensemble trains K independent runs; one of them overflowing (a NaN or inf loss or
parameter) must not end the other K − 1. :class:`DivergenceGuard` watches every step's
per-member losses :math:`L_k` (the ``(K,)`` tensor the gradient returns: one
``isfinite().all()`` per step while nothing diverges) and, at checks every ``every`` steps,
at evaluation steps and at the last step, the parameters of each member. A member k found
non-finite at step t is

* **marked**: ``state.diverged[k] = True``, a row ``metric="diverged", value=t`` is logged
  for its seed, and its later evaluations are logged as NaN (the summary leaves it out of
  means and reports it: ``n_diverged``, ``diverged: [{seed, step}]``);
* **frozen**: its parameters are restored to the last values seen finite (the check at most
  ``every`` steps earlier, or the initial ones) and put back after every later step; its
  gradient is zeroed before every step. Optimizer state the member wrote (momenta, Adam's
  moments) may stay non-finite: it only ever reaches the member's own, overwritten, entries
  (every optimizer here acts per member), and samplers must then be built with
  ``nan_policy="ignore"`` so that their own screen does not end the run.

The other members are untouched: their steps are exactly those of an unguarded run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .hooks import Hook

__all__ = ["DivergenceGuard", "finite_members"]


def finite_members(tensors: list[Any], members: int) -> Tensor:
    """bool ``(K,)``: whether every entry of member k (row k of each tensor) is finite."""
    ok = torch.ones(members, dtype=torch.bool, device=tensors[0].detach().device)
    for t in tensors:
        ok &= torch.isfinite(t.detach().reshape(members, -1)).all(1)
    return ok


class _Plain:
    """A plain model's parameter seen with a member axis of length 1."""

    def __init__(self, p: Tensor):
        self._p = p

    def detach(self) -> Tensor:
        return self._p.detach().unsqueeze(0)

    def dim(self) -> int:
        return self._p.dim() + 1

    @property
    def dtype(self) -> torch.dtype:
        return self._p.dtype

    @property
    def grad(self) -> Tensor | None:
        g = self._p.grad
        return None if g is None else g.unsqueeze(0)


class DivergenceGuard(Hook):
    """Mark and freeze ensemble members whose loss or parameters become non-finite.

    Args:
        every: check the parameters (and refresh the last finite copy) every this many
            steps; the losses are checked at every step.

    Attributes (also in :meth:`state_dict`): ``diverged`` bool ``(K,)``, ``at`` int64
    ``(K,)`` (the step at which each member was found non-finite, −1 if never).
    """

    name = "divergence"

    def __init__(self, every: int = 100):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        self.every = every
        self.diverged: Tensor | None = None
        self.at: Tensor | None = None
        self._good: list[Tensor] | None = None
        self._params: list[Tensor] = []

    # ------------------------------------------------------------------ events
    def on_start(self, state: Any) -> None:
        k = state.members
        params = list(state.model.parameters())
        if all(p.dim() > 0 and p.shape[0] == k for p in params):
            self._params = params
        elif k == 1:  # a plain model: a member axis of length 1 (views share the storage)
            self._params = [_Plain(p) for p in params]  # type: ignore[misc]
        else:
            raise ValueError(f"DivergenceGuard needs parameters stacked on axis 0 with K={k} "
                             "members")
        if self._good is None:  # not restored from a checkpoint
            self._good = [p.detach().clone() for p in self._params]
            self.diverged = torch.zeros(k, dtype=torch.bool, device=self._good[0].device)
            self.at = torch.full((k,), -1, dtype=torch.int64)
        state.diverged = self.diverged.clone()
        self._any = bool(self.diverged.any())

    def after_gradient(self, state: Any, losses: Tensor) -> None:
        if not bool(torch.isfinite(losses).all()):
            self._mark(state, ~torch.isfinite(losses.detach()).to(self.diverged.device))
        if self._any:
            keep = (~self.diverged).to(self._params[0].dtype)
            for p in self._params:
                if p.grad is not None:
                    p.grad.mul_(keep.view(-1, *[1] * (p.dim() - 1)))
                    p.grad.nan_to_num_(0.0, 0.0, 0.0)

    def after_step(self, state: Any) -> None:
        step = state.step
        if self._any:
            self._put_back()
        if step % self.every == 0 or step in state.eval_steps or step == state.total_steps:
            ok = finite_members(self._params, state.members)
            if not bool(ok.all()):
                self._mark(state, ~ok)
                self._put_back()
            if step % self.every == 0:
                fresh = (ok & ~self.diverged).view(-1)
                for g, p in zip(self._good, self._params, strict=True):
                    if bool(fresh.all()):
                        g.copy_(p.detach())
                    else:
                        g[fresh] = p.detach()[fresh]

    # ------------------------------------------------------------------ helpers
    def _mark(self, state: Any, bad: Tensor) -> None:
        new = bad & ~self.diverged
        if not bool(new.any()):
            return
        self.diverged |= new
        self.at[new.cpu()] = state.step
        state.diverged = self.diverged.clone()
        self._any = True
        for k in new.nonzero().flatten().tolist():
            state.rows.append(state.row(k, "diverged", float(state.step)))
        self._put_back()

    @torch.no_grad()
    def _put_back(self) -> None:
        """Diverged members' parameters ← their last finite values."""
        mask = self.diverged
        for g, p in zip(self._good, self._params, strict=True):
            p.detach()[mask] = g[mask]

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        if self._good is None:
            return {}
        return {"every": self.every, "diverged": self.diverged.clone(), "at": self.at.clone(),
                "good": [g.clone() for g in self._good]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.every = int(state["every"])
        self.diverged = state["diverged"].clone()
        self.at = state["at"].clone()
        self._good = [g.clone() for g in state["good"]]

    def report(self, seeds: list[int], members: range | None = None) -> list[dict[str, int]]:
        """``[{seed, step}]`` of the diverged members (for ``summary.json``); ``members``:
        only those (``seeds`` then gives their seeds, in order)."""
        if self.diverged is None:
            return []
        members = range(len(self.diverged)) if members is None else members
        return [{"seed": int(seeds[i]), "step": int(self.at[k])}
                for i, k in enumerate(members) if bool(self.diverged[k])]
