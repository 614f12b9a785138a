"""Explicit, resumable Gaussian noise for the samplers (docs/science.md §0: random numbers only
from an
owned :class:`torch.Generator`, saved in ``state_dict``).

Layout. Each optimizer step needs ``M`` standard normals per ensemble member (the sum over
parameter tensors of their per-member size times the number of draws their scheme makes).
Member ``k`` draws its ``M`` numbers from its own generators, into row ``k`` of a preallocated
``(K, M)`` buffer. The row is cut into chunks of :data:`CHUNK` entries; chunk ``c`` of member
``k`` always comes from generator ``(k, c)``. Hence

* member ``k`` of an ensemble seeded ``[s_0, …, s_{K-1}]`` receives exactly the numbers a
  single run seeded ``s_k`` receives — ensembles equal separate runs bit for bit;
* the numbers do not depend on how many threads draw them. Large draws (many chunks or many
  members) are spread over a small thread pool: torch's CPU generator is single-threaded and
  drawing normals dominates the cost of a Langevin step, so the second core halves it.

Generator ``(k, 0)`` is seeded with ``s_k`` itself; further chunks use seeds derived from
``(s_k, c)`` with :class:`numpy.random.SeedSequence`.

``rng="philox"`` replaces the generators by the counter-based stream of :mod:`.philox`: draw
``d`` of member ``k`` is entries ``[0, M)`` of the Philox stream ``(s_k, d)``. It is about
twice as fast, its state is just the draw counter, and a whole ensemble is filled by one
kernel call.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from .._checks import member_seeds
from .philox import Keys, philox_normal_

__all__ = ["NoiseSource", "CHUNK", "RNGS", "normalize_seeds", "member_view"]

#: the noise sources a sampler can use (``rng=``)
RNGS = ("torch", "philox")

#: entries per generator chunk (fixed: changing it changes every trajectory)
CHUNK = 1 << 20
#: draws smaller than this many numbers in total are made on the calling thread
PARALLEL_THRESHOLD = 1 << 19

_POOL: ThreadPoolExecutor | None = None


def _single_threaded_worker() -> None:
    # OpenMP's thread count is per calling thread: the workers draw serially (torch's CPU
    # generator is serial anyway) instead of each spawning a team that fights for the cores.
    torch.set_num_threads(1)


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        workers = max(1, min(2, os.cpu_count() or 1))
        _POOL = ThreadPoolExecutor(
            max_workers=workers,
            thread_name_prefix="thermotrain-noise",
            initializer=_single_threaded_worker,
        )
    return _POOL


def normalize_seeds(seed: int | Sequence[int] | None, members: int) -> list[int]:
    """Seeds of the ``members`` ensemble members.

    ``None`` draws fresh entropy (recorded, so the run can still be resumed); an int ``s``
    gives members ``s, s+1, …``; a sequence must have one non-negative int per member.
    """
    if seed is None:
        seed = secrets.randbits(62)
    return list(member_seeds(seed, members))


def _chunk_seed(seed: int, chunk: int) -> int:
    if chunk == 0:
        return seed
    state = np.random.SeedSequence([seed, chunk]).generate_state(1, dtype=np.uint64)[0]
    return int(state) >> 1


class _Pending:
    """A draw in progress: ``wait()`` returns the filled ``(K, M)`` buffer."""

    def __init__(self, buffer: Tensor, futures: list[Future]):
        self.buffer = buffer
        self._futures = futures

    def wait(self) -> Tensor:
        for f in self._futures:
            f.result()
        self._futures = []
        return self.buffer


def member_view(rows: Tensor, shape: Sequence[int], ensemble_dim: int | None) -> Tensor:
    """The ``(K, n)`` member rows of a noise draw seen as a tensor of ``shape`` whose ensemble
    axis is ``ensemble_dim`` (``None``: K = 1, the row is the tensor)."""
    if ensemble_dim is None:
        return rows.view(*shape)
    member_shape = [s for i, s in enumerate(shape) if i != ensemble_dim]
    return rows.view(rows.shape[0], *member_shape).movedim(0, ensemble_dim)


class NoiseSource:
    """Per-member, per-chunk generators and a reusable ``(K, M)`` noise buffer.

    (Drawing the next step's numbers ahead on a worker thread during the forward/backward
    pass was tried and measured slower for seed ensembles: the worker's per-member calls
    contend with the main thread for the interpreter. Large draws use the worker threads.)
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str | None = None,
                 rng: str = "philox"):
        if rng not in RNGS:
            raise ValueError(f"rng must be one of {RNGS}, got {rng!r}")
        self.rng = rng
        self.seeds = list(seeds)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._generators: list[list[torch.Generator]] = [[] for _ in self.seeds]
        self._keys = Keys(self.seeds) if rng == "philox" else None
        self._draws = 0  # draws made so far (the philox counter)
        self._buffer: Tensor | None = None
        self._targets: list[tuple[int, int, Tensor, torch.Generator | None]] = []

    @property
    def members(self) -> int:
        return len(self.seeds)

    def peek(self) -> int:
        """The index the next :meth:`advance` returns (a step uses it before it lands)."""
        return self._draws

    def advance(self) -> int:
        """Reserve the next draw of a counter-based (``"philox"``) source; returns its index."""
        if self._keys is None:
            raise RuntimeError("advance() is for rng='philox' sources")
        draw = self._draws
        self._draws += 1
        return draw

    def _generator(self, k: int, c: int) -> torch.Generator:
        gens = self._generators[k]
        while len(gens) <= c:
            g = torch.Generator(device=self.device)
            g.manual_seed(_chunk_seed(self.seeds[k], len(gens)))
            gens.append(g)
        return gens[c]

    def buffer(self, size: int, dtype: torch.dtype) -> Tensor:
        """The preallocated ``(K, size)`` buffer that draws fill."""
        buf = self._buffer
        if buf is None or buf.shape[1] != size or buf.dtype != dtype:
            buf = torch.empty((self.members, size), dtype=dtype, device=self.device)
            self._buffer = buf
            chunks = self.chunks(size)
            # the (member, chunk, row slice, generator) jobs of a draw, built once per buffer
            self._targets = [
                (k, c, buf[k, c * CHUNK : (c + 1) * CHUNK],
                 self._generator(k, c) if self._keys is None else None)
                for k in range(self.members)
                for c in range(chunks)
            ]
        return buf

    def chunks(self, size: int) -> int:
        """Number of generator chunks of a member's row of ``size`` numbers."""
        return max(1, -(-size // CHUNK))

    def parallel(self, size: int) -> bool:
        """Whether a draw of ``size`` numbers per member is spread over the worker threads
        (torch generators only: the Philox kernel runs on torch's own threads)."""
        jobs = self.members * self.chunks(size)
        return (self._keys is None and self.device.type == "cpu" and jobs > 1
                and self.members * size >= PARALLEL_THRESHOLD)

    def draw(
        self,
        size: int,
        dtype: torch.dtype,
        after_chunk: Callable[[int, int, Tensor], None] | None = None,
    ) -> _Pending:
        """Start drawing ``size`` normals per member; returns a handle whose ``wait()`` gives
        the ``(K, size)`` buffer (valid until the next draw). Small draws are made on this
        thread before returning; large ones are shared among the worker threads.

        ``after_chunk(k, c, buffer)``, if given, runs right after chunk ``c`` of member ``k``
        is drawn, on the same thread, while the chunk is still in cache (the optimizer uses it
        to apply elementwise schemes chunk by chunk on the worker threads)."""
        buf = self.buffer(size, dtype)
        jobs = self._targets
        if self._keys is not None:
            # the whole ensemble in one kernel call (on torch's threads), then the callbacks
            philox_normal_(buf, self._keys, self.advance())
            if after_chunk is not None:
                for k, c, _, _ in jobs:
                    after_chunk(k, c, buf)
            return _Pending(buf, [])

        def run(share: list[tuple[int, int, Tensor, torch.Generator | None]]) -> None:
            for k, c, row, gen in share:
                row.normal_(generator=gen)
                if after_chunk is not None:
                    after_chunk(k, c, buf)

        if not self.parallel(size):
            run(jobs)
            return _Pending(buf, [])
        pool = _pool()
        # one task per worker, each an interleaved share of the jobs
        workers = pool._max_workers  # noqa: SLF001 - the pool is ours
        futures = [pool.submit(run, jobs[i::workers]) for i in range(workers) if jobs[i::workers]]
        return _Pending(buf, futures)

    # --- state -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        if self._keys is not None:
            return {"rng": "philox", "seeds": list(self.seeds), "draws": self._draws}
        return {
            "rng": "torch",
            "seeds": list(self.seeds),
            "generators": [[g.get_state() for g in gens] for gens in self._generators],
        }

    def load_state_dict(self, state: dict) -> None:
        seeds = [int(s) for s in state["seeds"]]
        if len(seeds) != self.members:
            raise ValueError(
                f"noise state has {len(seeds)} ensemble members, this optimizer has "
                f"{self.members}"
            )
        saved = state.get("rng", "torch")
        if saved != self.rng:
            raise ValueError(f"noise state was saved with rng={saved!r}, but this optimizer "
                             f"uses rng={self.rng!r}: construct it with rng={saved!r}")
        self.seeds = seeds
        if self._keys is not None:
            self._keys = Keys(seeds)
            self._draws = int(state["draws"])
            self._buffer, self._targets = None, []
            return
        self._generators = [[] for _ in seeds]
        self._buffer, self._targets = None, []
        for k, states in enumerate(state["generators"]):
            for c, s in enumerate(states):
                self._generator(k, c).set_state(s.cpu())
