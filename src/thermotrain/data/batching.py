r"""Explicit minibatch policies for single runs and ensembles (docs/science.md §4).

A :class:`Minibatcher` yields, at every step, an index tensor of shape ``(K, B)``: row ``k``
is the minibatch of ensemble member ``k`` (``K = 1`` for a single run). Gather the data with
:func:`take`, e.g. ``xb, yb = take((X, y), idx)`` gives ``(K, B, ...)`` tensors. No
:class:`torch.utils.data.DataLoader` is involved: the data stay on their device and each
step is one indexing operation.

The two policies of docs/science.md §4:

* **without replacement** (``replacement=False``, the SGWORLD policy; what
  ``DataLoader(shuffle=True, drop_last=True)`` does): at the start of every epoch each member
  draws a fresh permutation :math:`\pi` of :math:`\{0..N-1\}` with its own generator
  (``torch.randperm``) and uses the consecutive batches
  :math:`\pi[jB:(j+1)B]`, :math:`j = 0..\lfloor N/B\rfloor - 1`. The last
  :math:`N \bmod B` entries of each permutation are **dropped** (a different random subset
  each epoch), so every batch has exactly B points and an epoch is :math:`\lfloor N/B\rfloor`
  steps.
* **with replacement** (``replacement=True``, the SGLD policy): every step each member draws
  a fresh batch of B *distinct* points, independently of earlier steps:
  ``torch.randperm(N, generator=g_k)[:B]``.

Member ``k`` owns a CPU :class:`torch.Generator` seeded with ``seeds[k]`` and is advanced
only by its own draws, so member ``k`` of an ensemble yields exactly the index sequence of a
``K = 1`` :class:`Minibatcher` with seed ``seeds[k]`` — an ensemble is K independent runs
side by side. Indices are drawn on the CPU (identical on every device) and moved to
``device`` once per epoch (without replacement) or per step (with replacement).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

from .._checks import check_device, check_int, check_seed, member_seeds

__all__ = ["Minibatcher", "take"]

_STATE_KEYS = frozenset(
    {
        "n",
        "batch_size",
        "replacement",
        "seeds",
        "generator_states",
        "permutation",
        "position",
        "step",
    }
)


class Minibatcher:
    r"""Per-step minibatch indices of shape ``(K, B)`` for K ensemble members (docs/science.md §4).

    Args:
        n: number of data points :math:`N`.
        batch_size: :math:`B`, ``1 <= B <= N``.
        replacement: ``False`` — epoch-wise fresh permutations cut into
            :math:`\lfloor N/B\rfloor` consecutive batches, the remainder dropped (SGWORLD);
            ``True`` — each step a fresh batch of B distinct points (SGLD).
        seed: one int seed; with ``ensemble=K`` the members use seeds
            ``seed, seed + 1, …, seed + K - 1``.
        seeds: explicit per-member seeds (K = ``len(seeds)``); exclusive with ``seed``.
        ensemble: number of members K when ``seed`` is given (default 1); if given together
            with ``seeds`` it must equal ``len(seeds)``.
        device: device of the returned index tensors — the device of the data (default CPU).

    Every seed must satisfy ``0 <= seed < 2**63``.

    Example:
        >>> batcher = Minibatcher(10, 4, seeds=[0, 1])
        >>> idx = next(batcher)
        >>> idx.shape, batcher.steps_per_epoch
        (torch.Size([2, 4]), 2)
        >>> X = torch.arange(10.0).unsqueeze(1)
        >>> take(X, idx).shape
        torch.Size([2, 4, 1])
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        replacement: bool = False,
        seed: int | None = None,
        seeds: Sequence[int] | None = None,
        ensemble: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self._n = check_int("n", n, minimum=1)
        self._batch_size = check_int("batch_size", batch_size, minimum=1)
        if self._batch_size > self._n:
            raise ValueError(f"batch_size must be <= n = {self._n}, got {self._batch_size}")
        if not isinstance(replacement, bool):
            raise TypeError(f"replacement must be True or False, got {replacement!r}")
        self._replacement = replacement
        self._seeds = _resolve_seeds(seed, seeds, ensemble)
        self._device = check_device(device)
        self._generators = [torch.Generator(device="cpu").manual_seed(s) for s in self._seeds]
        self._permutation: Tensor | None = None  # (K, n) on device, current epoch
        self._position = 0  # batch index within the current epoch (without replacement)
        self._step = 0  # batches drawn so far

    # ------------------------------------------------------------------ properties
    @property
    def n(self) -> int:
        """Number of data points :math:`N`."""
        return self._n

    @property
    def batch_size(self) -> int:
        """Batch size :math:`B`."""
        return self._batch_size

    @property
    def replacement(self) -> bool:
        """``True`` for with-replacement batches, ``False`` for epoch permutations."""
        return self._replacement

    @property
    def ensemble_size(self) -> int:
        """Number of members K (rows of each index tensor)."""
        return len(self._seeds)

    @property
    def seeds(self) -> tuple[int, ...]:
        """The per-member seeds."""
        return self._seeds

    @property
    def device(self) -> torch.device:
        """Device of the returned indices."""
        return self._device

    @property
    def steps_per_epoch(self) -> int:
        r""":math:`\lfloor N/B\rfloor` (also used to count epochs with replacement)."""
        return self._n // self._batch_size

    @property
    def step(self) -> int:
        """Number of batches drawn so far."""
        return self._step

    @property
    def epoch(self) -> int:
        """Number of completed epochs, ``step // steps_per_epoch``."""
        return self._step // self.steps_per_epoch

    # ------------------------------------------------------------------ drawing
    def next(self) -> Tensor:
        """The next minibatch: int64 indices of shape ``(K, B)`` on :attr:`device`."""
        n, b = self._n, self._batch_size
        if self._replacement:
            rows = [torch.randperm(n, generator=g)[:b] for g in self._generators]
            idx = torch.stack(rows).to(self._device)
        else:
            if self._position == 0 or self._permutation is None:
                perms = [torch.randperm(n, generator=g) for g in self._generators]
                self._permutation = torch.stack(perms).to(self._device)
                self._position = 0
            start = self._position * b
            idx = self._permutation[:, start : start + b].clone()
            self._position += 1
            if self._position == self.steps_per_epoch:
                self._position, self._permutation = 0, None
        self._step += 1
        return idx

    def __next__(self) -> Tensor:
        return self.next()

    def __iter__(self) -> Iterator[Tensor]:
        """An endless stream of ``(K, B)`` index tensors (stop it yourself)."""
        return self

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the stream bit for bit.

        Keys: ``n``, ``batch_size``, ``replacement``, ``seeds``, ``generator_states`` (one
        uint8 CPU tensor per member), ``permutation`` (the current epoch's ``(K, N)``
        permutations on the CPU, or ``None`` at an epoch boundary), ``position`` (batches
        already taken from it) and ``step``. All values are copies; the dict can go through
        ``torch.save``/``torch.load(weights_only=True)``.
        """
        return {
            "n": self._n,
            "batch_size": self._batch_size,
            "replacement": self._replacement,
            "seeds": list(self._seeds),
            "generator_states": [g.get_state() for g in self._generators],
            "permutation": None
            if self._permutation is None
            else self._permutation.detach().to("cpu", copy=True),
            "position": self._position,
            "step": self._step,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; ``n``, ``batch_size``, ``replacement`` and K must
        match this batcher (the device may differ)."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping from state_dict(), got {type(state)}")
        missing, extra = _STATE_KEYS - set(state), set(state) - _STATE_KEYS
        if missing or extra:
            raise ValueError(
                f"not a Minibatcher state_dict: missing keys {sorted(missing)}, "
                f"unexpected keys {sorted(extra)}"
            )
        for key, mine in (
            ("n", self._n),
            ("batch_size", self._batch_size),
            ("replacement", self._replacement),
        ):
            if state[key] != mine:
                raise ValueError(
                    f"state_dict has {key}={state[key]!r} but this Minibatcher has {key}={mine!r}"
                )
        generator_states = list(state["generator_states"])
        seeds = tuple(check_seed("seeds[k]", s) for s in state["seeds"])
        k = self.ensemble_size
        if len(generator_states) != k or len(seeds) != k:
            raise ValueError(
                f"state_dict is for {len(generator_states)} members, this Minibatcher has K={k}"
            )
        position = check_int("position", state["position"], minimum=0)
        step = check_int("step", state["step"], minimum=0)
        permutation = state["permutation"]
        if position >= self.steps_per_epoch:
            raise ValueError(
                f"position must be < steps_per_epoch = {self.steps_per_epoch}, got {position}"
            )
        if permutation is None:
            if position != 0 and not self._replacement:
                raise ValueError("state_dict has position > 0 but no permutation")
        elif not isinstance(permutation, Tensor) or tuple(permutation.shape) != (k, self._n):
            raise ValueError(
                f"permutation must be a ({k}, {self._n}) tensor, got "
                f"{getattr(permutation, 'shape', permutation)!r}"
            )
        for g, s in zip(self._generators, generator_states, strict=True):
            g.set_state(s.detach().to("cpu", torch.uint8))
        self._seeds = seeds
        self._permutation = (
            None
            if permutation is None
            else permutation.to(device=self._device, dtype=torch.int64, copy=True)
        )
        self._position, self._step = position, step

    def __repr__(self) -> str:
        policy = "with replacement" if self._replacement else "without replacement"
        return (
            f"Minibatcher(n={self._n}, batch_size={self._batch_size}, {policy}, "
            f"K={self.ensemble_size}, step={self._step}, device={self._device})"
        )


def _resolve_seeds(
    seed: int | None, seeds: Sequence[int] | None, ensemble: int | None
) -> tuple[int, ...]:
    if seed is not None and seeds is not None:
        raise ValueError("pass either seed= (with ensemble=K) or seeds=[...], not both")
    if seeds is not None:
        if isinstance(seeds, str | bytes) or not isinstance(seeds, Sequence):
            raise TypeError(f"seeds must be a sequence of ints, got {seeds!r}")
        if not seeds:
            raise ValueError("seeds must not be empty")
        if ensemble is not None and check_int("ensemble", ensemble, minimum=1) != len(seeds):
            raise ValueError(f"ensemble={ensemble} does not match len(seeds)={len(seeds)}")
        return member_seeds(seeds, len(seeds), "seeds")
    if seed is None:
        raise TypeError("Minibatcher needs an explicit seed=int or seeds=[...] (no global RNG)")
    k = 1 if ensemble is None else check_int("ensemble", ensemble, minimum=1)
    return member_seeds(seed, k)


T = TypeVar("T", Tensor, tuple, list)


def take(data: T, idx: Tensor) -> T:
    """Gather minibatches: ``data[idx]`` for a tensor or each tensor of a tuple/list.

    With ``idx`` of shape ``(K, B)`` (from :class:`Minibatcher`) a tensor of shape
    ``(N, *F)`` becomes ``(K, B, *F)``; with ``idx`` of shape ``(B,)`` it becomes
    ``(B, *F)``. One advanced-indexing gather per tensor, no copies of the full data.

    Args:
        data: a tensor, or a tuple/list of tensors with the same first dimension N.
        idx: integer indices into the first dimension.

    Returns:
        The same structure as ``data`` (a tensor, tuple or list).
    """
    if (
        not isinstance(idx, Tensor)
        or idx.dtype.is_floating_point
        or idx.dtype in (torch.bool, torch.complex64, torch.complex128)
    ):
        raise TypeError(
            f"idx must be an integer tensor, got "
            f"{idx.dtype if isinstance(idx, Tensor) else type(idx).__name__}"
        )
    if isinstance(data, Tensor):
        return data[idx]
    if isinstance(data, tuple | list):
        if not all(isinstance(t, Tensor) for t in data):
            raise TypeError("take: every element of data must be a torch.Tensor")
        sizes = {t.shape[0] for t in data if t.ndim}
        if len(sizes) > 1 or any(t.ndim == 0 for t in data):
            raise ValueError(
                f"take: tensors must share their first dimension N, got first "
                f"dimensions {[tuple(t.shape)[:1] for t in data]}"
            )
        return type(data)(t[idx] for t in data)
    raise TypeError(f"take: data must be a tensor or a tuple/list of tensors, got {type(data)}")
