"""What keeps the loop's state consistent on disk: atomic checkpoint writes, SIGINT/SIGTERM
deferred to the end of a step (:class:`Interrupted`), and the cyclic GC frozen in the hot loop.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = ["Interrupted", "atomic_torch_save", "deferred_signals", "frozen_gc"]


class Interrupted(KeyboardInterrupt):
    """The loop stopped on SIGINT or SIGTERM after checkpointing a consistent step.

    Attributes:
        signum: the signal number received.
    """

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then :func:`os.replace` onto ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def frozen_gc() -> Iterator[None]:
    """Exempt the objects alive now (all of torch …) from the cyclic garbage collector during
    the hot loop: otherwise every full collection walks them all, ~10 % of a small step."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def deferred_signals(enabled: bool) -> Iterator[list[int]]:
    """SIGINT and SIGTERM set a flag (the signal number) checked at the end of each step; a
    second one raises :class:`KeyboardInterrupt` at once. Only in the main thread."""
    received: list[int] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: object) -> None:
        if received:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopped at once")
        received.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
