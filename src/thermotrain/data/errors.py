"""Exceptions raised by :mod:`thermotrain.data` (docs/science.md §6).

Every message is a single line that names the offending file or value, says what was
expected, and how to fix it (``--data-dir``, ``THERMOTRAIN_DATA`` or
``thermotrain datasets fetch NAME``), so that the CLI can print it as is.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "DatasetError",
    "DatasetNotFoundError",
    "DatasetCorruptError",
    "DatasetDownloadError",
    "UnknownDatasetError",
]


class DatasetError(Exception):
    """Base class of every data-set problem (missing, corrupt, unknown, not downloadable)."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A data file is missing. ``paths`` holds every location that was looked at."""

    def __init__(self, message: str, *, paths: Iterable[Path] = ()) -> None:
        super().__init__(message)
        self.paths: tuple[Path, ...] = tuple(Path(p) for p in paths)

    def __str__(self) -> str:  # OSError would otherwise format (errno, strerror)
        return str(self.args[0]) if self.args else ""


class DatasetCorruptError(DatasetError, ValueError):
    """A data file exists but is truncated, malformed, or fails its pinned checksum."""

    def __init__(self, message: str, *, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.path: Path | None = Path(path) if path is not None else None


class DatasetDownloadError(DatasetError, OSError):
    """A file could not be downloaded from any of the URLs tried."""

    def __init__(self, message: str, *, urls: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.urls: tuple[str, ...] = tuple(urls)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownDatasetError(DatasetError, ValueError):
    """The data-set name is not in the registry."""
