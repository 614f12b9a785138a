"""The data-set registry and its management, by job (docs/science.md §6):

- :mod:`.specs` — :class:`DatasetSpec` and the registered sets (:data:`DATASETS`);
- :mod:`.status` — :func:`locate_file`, :func:`check`, :func:`list_datasets`, :func:`verify`;
- :mod:`.download` — :func:`fetch` (checksummed downloads with :mod:`pooch`).

This module re-exports them (``from thermotrain.data.registry import fetch`` keeps working).
"""

from __future__ import annotations

from .download import FetchReport, fetch
from .specs import (
    CIFAR10,
    DATASETS,
    FASHION_MNIST,
    MNIST,
    ArchiveSpec,
    DatasetSpec,
    FileSpec,
    get_dataset_spec,
)
from .status import (
    DatasetStatus,
    FileStatus,
    check,
    dataset_folder,
    list_datasets,
    locate_file,
    verify,
)

__all__ = [
    "FileSpec",
    "ArchiveSpec",
    "DatasetSpec",
    "FileStatus",
    "DatasetStatus",
    "FetchReport",
    "MNIST",
    "FASHION_MNIST",
    "CIFAR10",
    "DATASETS",
    "get_dataset_spec",
    "dataset_folder",
    "locate_file",
    "list_datasets",
    "check",
    "verify",
    "fetch",
]
