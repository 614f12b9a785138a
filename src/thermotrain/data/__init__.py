"""Data for thermotrain: generated sets, image loaders, data-set management, minibatching.

docs/science.md §4-§6. Public API:

- generated (docs/science.md §4, §5, §6): :func:`spirals`, :func:`planar_trig`,
  :func:`bayesian_linear_regression` (→ :class:`BayesianLinearRegression`),
  :func:`tanh_regression`;
- images: :func:`load_mnist`, :func:`load_fashion_mnist`, :func:`load_cifar10`,
  :func:`load_idx_dataset`; data root from :func:`resolve_data_dir`
  (``data_dir`` → ``$THERMOTRAIN_DATA`` → ``~/.cache/thermotrain``);
- management: :func:`list_datasets`, :func:`verify`, :func:`fetch` over
  :class:`DatasetSpec` entries of :data:`DATASETS`;
- minibatching (docs/science.md §4): :class:`Minibatcher`, :func:`take`;
- errors: :class:`DatasetError` and its subclasses.
"""

from __future__ import annotations

from .batching import Minibatcher, take
from .cifar import clear_cifar_cache, load_cifar10, read_cifar_batch
from .colorized import colorize, load_colorized_mnist
from .errors import (
    DatasetCorruptError,
    DatasetDownloadError,
    DatasetError,
    DatasetNotFoundError,
    UnknownDatasetError,
)
from .idx import IMAGES_MAGIC, LABELS_MAGIC, parse_idx
from .mnist import clear_idx_cache, load_fashion_mnist, load_idx_dataset, load_mnist
from .registry import (
    CIFAR10,
    DATASETS,
    FASHION_MNIST,
    MNIST,
    ArchiveSpec,
    DatasetSpec,
    DatasetStatus,
    FetchReport,
    FileSpec,
    FileStatus,
    check,
    fetch,
    get_dataset_spec,
    list_datasets,
    verify,
)
from .regression import BayesianLinearRegression, bayesian_linear_regression, tanh_regression
from .storage import ENV_VAR, clear_digest_cache, resolve_data_dir
from .synthetic import planar_trig, spirals


def clear_cache() -> None:
    """Forget every cached decoded array and verified checksum (next load re-reads files)."""
    clear_idx_cache()
    clear_cifar_cache()
    clear_digest_cache()


__all__ = [
    # generated data
    "spirals",
    "planar_trig",
    "bayesian_linear_regression",
    "BayesianLinearRegression",
    "tanh_regression",
    # image data
    "load_mnist",
    "load_fashion_mnist",
    "load_cifar10",
    "load_colorized_mnist",
    "colorize",
    "load_idx_dataset",
    "read_cifar_batch",
    "parse_idx",
    "IMAGES_MAGIC",
    "LABELS_MAGIC",
    "resolve_data_dir",
    "ENV_VAR",
    "clear_cache",
    # management
    "DatasetSpec",
    "FileSpec",
    "ArchiveSpec",
    "DatasetStatus",
    "FileStatus",
    "FetchReport",
    "DATASETS",
    "MNIST",
    "FASHION_MNIST",
    "CIFAR10",
    "get_dataset_spec",
    "list_datasets",
    "check",
    "verify",
    "fetch",
    # minibatching
    "Minibatcher",
    "take",
    # errors
    "DatasetError",
    "DatasetNotFoundError",
    "DatasetCorruptError",
    "DatasetDownloadError",
    "UnknownDatasetError",
]
