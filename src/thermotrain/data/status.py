"""Where a data set's files are and whether they verify: :func:`locate_file`,
:func:`check`, :func:`list_datasets`, :func:`verify` (docs/science.md §6)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from . import specs
from .errors import DatasetCorruptError, DatasetNotFoundError
from .specs import DatasetSpec, FileSpec, get_dataset_spec
from .storage import candidate_paths, check_digests, data_dir_source, find_file, resolve_data_dir

__all__ = ["FileStatus", "DatasetStatus", "dataset_folder", "locate_file", "check",
           "list_datasets", "verify"]


def dataset_folder(spec: str | DatasetSpec, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """``resolve_data_dir(data_dir) / spec.folder``: where the files of ``spec`` belong."""
    return resolve_data_dir(data_dir) / get_dataset_spec(spec).folder


def _fix_hint(spec: DatasetSpec) -> str:
    return (
        f"fix: pass --data-dir DIR (data_dir= in Python), set THERMOTRAIN_DATA=DIR, "
        f"or run `thermotrain datasets fetch {spec.name}`"
    )


def locate_file(
    spec: DatasetSpec, file: FileSpec, data_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The path of ``file`` (raw or ``.gz``) or :class:`DatasetNotFoundError` saying where
    it was looked for and how to fix it."""
    folder = dataset_folder(spec, data_dir)
    path = find_file(folder, file.name)
    if path is None:
        looked = candidate_paths(folder, file.name)
        raise DatasetNotFoundError(
            f"{spec.name} file {file.name!r} not found; looked at "
            f"{', '.join(map(str, looked))} (data root from {data_dir_source(data_dir)}); "
            f"{_fix_hint(spec)}",
            paths=looked,
        )
    return path


@dataclass(frozen=True)
class FileStatus:
    """State of one file: ``"ok"`` (verified), ``"present"`` (found, not checked),
    ``"missing"`` or ``"corrupt"``; ``message`` explains anything but ``"ok"``."""

    name: str
    path: Path | None
    state: Literal["ok", "present", "missing", "corrupt"]
    message: str = ""


@dataclass(frozen=True)
class DatasetStatus:
    """State of one data set in one data root."""

    name: str
    description: str
    folder: Path
    data_dir_source: str
    files: tuple[FileStatus, ...]

    @property
    def present(self) -> bool:
        """Every file was found (verified or not)."""
        return all(f.state != "missing" for f in self.files)

    @property
    def verified(self) -> bool | None:
        """``True`` if every file verified, ``False`` if any is missing or corrupt, ``None``
        if files are present but were not checked."""
        states = {f.state for f in self.files}
        if states <= {"ok"}:
            return True
        if states & {"missing", "corrupt"}:
            return False
        return None

    @property
    def state(self) -> str:
        """One word: ``verified``, ``present``, ``missing``, ``partial`` or ``corrupt``."""
        states = {f.state for f in self.files}
        if "corrupt" in states:
            return "corrupt"
        if states == {"missing"}:
            return "missing"
        if "missing" in states:
            return "partial"
        return "verified" if states <= {"ok"} else "present"


def check(
    name: str | DatasetSpec,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    checksums: bool = True,
) -> DatasetStatus:
    """Status of every file of a data set, never raising for missing or corrupt files.

    Args:
        name: registered name or a :class:`DatasetSpec`.
        data_dir: data root (see :func:`~thermotrain.data.storage.resolve_data_dir`).
        checksums: verify the pinned digests (else only check that files exist).
    """
    spec = get_dataset_spec(name)
    folder = dataset_folder(spec, data_dir)
    statuses = []
    for file in spec.files:
        path = find_file(folder, file.name)
        if path is None:
            looked = ", ".join(map(str, candidate_paths(folder, file.name)))
            statuses.append(
                FileStatus(file.name, None, "missing", f"not found; looked at {looked}")
            )
        elif not checksums:
            statuses.append(FileStatus(file.name, path, "present", "checksum not checked"))
        elif not file.digests:
            statuses.append(FileStatus(file.name, path, "present", "no checksum pinned"))
        else:
            try:
                check_digests(
                    path,
                    file.digests,
                    fix=f"run `thermotrain datasets fetch {spec.name}` to replace it",
                )
            except DatasetCorruptError as exc:
                statuses.append(FileStatus(file.name, path, "corrupt", str(exc)))
            else:
                statuses.append(FileStatus(file.name, path, "ok"))
    return DatasetStatus(
        spec.name, spec.description, folder, data_dir_source(data_dir), tuple(statuses)
    )


def list_datasets(
    data_dir: str | os.PathLike[str] | None = None, *, checksums: bool = False
) -> list[DatasetStatus]:
    """Every registered data set (mnist, fashion_mnist, cifar10) and its state under the root.

    Args:
        data_dir: data root (see :func:`~thermotrain.data.storage.resolve_data_dir`).
        checksums: also verify the checksums (reads every file once per process); otherwise
            only presence is checked and :attr:`DatasetStatus.verified` is ``None`` for
            present data sets.

    Example:
        >>> [s.name for s in list_datasets("/nonexistent")]
        ['mnist', 'fashion_mnist', 'cifar10']
    """
    return [check(spec, data_dir, checksums=checksums) for spec in specs.DATASETS.values()]


def verify(
    name: str | DatasetSpec, data_dir: str | os.PathLike[str] | None = None
) -> DatasetStatus:
    """Verify every file of a data set against its pinned checksums.

    Returns the (all ``"ok"``) :class:`DatasetStatus`, or raises
    :class:`DatasetNotFoundError` naming every missing file and where it was looked for, or
    :class:`DatasetCorruptError` for the first file that is truncated or fails its checksum.
    Unknown names raise :class:`UnknownDatasetError` (a :class:`ValueError`).
    """
    spec = get_dataset_spec(name)
    status = check(spec, data_dir)
    missing = [f for f in status.files if f.state == "missing"]
    if missing:
        paths = [p for f in missing for p in candidate_paths(status.folder, f.name)]
        raise DatasetNotFoundError(
            f"{spec.name}: {len(missing)} of {len(status.files)} files missing in "
            f"{status.folder} ({', '.join(f.name for f in missing)}; data root from "
            f"{status.data_dir_source}); {_fix_hint(spec)}",
            paths=paths,
        )
    for f in status.files:
        if f.state == "corrupt":
            raise DatasetCorruptError(f.message, path=f.path)
    return status

