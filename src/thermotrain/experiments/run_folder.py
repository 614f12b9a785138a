"""The run folder: the one module that reads and writes what a run leaves on disk.

(Being built up: today the atomic writers; the config, metrics, checkpoint, snapshot and
summary readers and writers move here from the runner and the report.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_write_text", "atomic_save"]


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and :func:`os.replace`."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then :func:`os.replace` onto ``path``: a reader
    (or a resumed run after a kill) sees the old or the new file, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
