r"""Minibatches for thousands of chains at once: one generator, vectorized over the ensemble
axis (docs/science.md §4's two policies; ``docs/thermo.md``).

:class:`thermotrain.data.Minibatcher` gives each member its own stream (member k of an
ensemble = the single run seeded ``seed + k``) and draws one permutation per member in a
Python loop; for the thermodynamics studies (10³ chains, 10⁴–10⁶ steps, batches of 10 out of
200) that loop dominates. :class:`EnsembleBatches` draws all members' batches with one
generator in a few tensor operations instead. Members are still independent and identically
distributed, but member k's batches depend on K and on the seed jointly.

* with replacement: every step each member draws B **distinct** points uniformly (Floyd's
  algorithm, vectorized over members: B rounds of one ``randint``);
* without replacement: each epoch every member draws a permutation (``argsort`` of uniforms)
  cut into ⌊N/B⌋ consecutive batches (the remainder dropped, as :class:`Minibatcher`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["EnsembleBatches"]


class EnsembleBatches:
    """``(K, B)`` minibatch indices per step for K members (the loop's batcher protocol:
    ``next()``, ``ensemble_size``, ``state_dict``/``load_state_dict``).

    Args:
        n: number of data points N; batch_size: B (1 ≤ B ≤ N); members: K ≥ 1.
        replacement: ``True`` — a fresh B-subset every step; ``False`` — epoch permutations.
        seed: seed of the CPU generator (its state is in :meth:`state_dict`).
        device: device of the returned indices.
    """

    def __init__(self, n: int, batch_size: int, members: int, *, replacement: bool,
                 seed: int = 0, device: torch.device | str | None = None):
        for name, value, low in (("n", n, 1), ("batch_size", batch_size, 1),
                                 ("members", members, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if batch_size > n:
            raise ValueError(f"batch_size must be <= n = {n}, got {batch_size}")
        if not isinstance(replacement, bool):
            raise TypeError(f"replacement must be True or False, got {replacement!r}")
        self.n, self.batch_size, self.members = n, batch_size, members
        self.replacement = replacement
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.step = 0
        self._perm: Tensor | None = None

    @property
    def ensemble_size(self) -> int:
        return self.members

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.batch_size

    def _distinct(self) -> Tensor:
        # Floyd: for j = N-B .. N-1 pick t ~ U{0..j}; take t unless already chosen, else j.
        k, n, b = self.members, self.n, self.batch_size
        chosen = torch.empty(k, b, dtype=torch.long)
        for r, j in enumerate(range(n - b, n)):
            t = (torch.rand(k, generator=self.generator, dtype=torch.float64) * (j + 1)).long()
            t = t.clamp_(max=j)
            if r:
                taken = (chosen[:, :r] == t.unsqueeze(1)).any(1)
                t = torch.where(taken, torch.full_like(t, j), t)
            chosen[:, r] = t
        return chosen

    def next(self) -> Tensor:
        """The next ``(K, B)`` int64 indices on :attr:`device`."""
        if self.replacement:
            idx = self._distinct()
        else:
            pos = self.step % self.steps_per_epoch
            if pos == 0 or self._perm is None:
                self._perm = torch.rand(self.members, self.n, generator=self.generator
                                        ).argsort(1)
            idx = self._perm[:, pos * self.batch_size:(pos + 1) * self.batch_size]
        self.step += 1
        return idx.to(self.device)

    __next__ = next

    def __iter__(self) -> EnsembleBatches:
        return self

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "step": self.step,
                "perm": self._perm}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.step = int(state["step"])
        self._perm = state["perm"]
