"""MNIST and Fashion-MNIST loaders (IDX files, raw or gzip; docs/science.md §6).

Files are looked up as ``<root>/<folder>/<name>`` then ``<name>.gz`` under the data root of
:func:`~thermotrain.data.storage.resolve_data_dir`; the IDX magic numbers (2051 images,
2049 labels) and the SHA-256 of the decompressed content (pinned in
:mod:`~thermotrain.data.registry`) are verified. Decoded, verified arrays are cached in
memory (keyed by path, size and modification time), so the 47 MB training images are read,
decompressed and hashed once per process; later calls only convert to the requested dtype.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from torch import Tensor

from ._images import check_labels, images_to_float
from .errors import DatasetCorruptError
from .idx import IMAGES_MAGIC, LABELS_MAGIC, parse_idx
from .specs import FASHION_MNIST, MNIST, DatasetSpec, get_dataset_spec
from .status import locate_file
from .storage import check_digests, read_content

__all__ = ["load_idx_dataset", "load_mnist", "load_fashion_mnist", "clear_idx_cache"]


@functools.lru_cache(maxsize=8)
def _read_idx(
    path: str,
    size: int,
    mtime_ns: int,
    digests: tuple[tuple[str, str], ...],
    magic: int,
    fix: str,
) -> Tensor:
    """Read, parse and verify one IDX file; ``size``/``mtime_ns`` key the cache only."""
    content = read_content(Path(path))
    array = parse_idx(content, expected_magic=magic, source=path)
    check_digests(Path(path), dict(digests), content=content, fix=fix)
    return torch.from_numpy(array)


def _load_file(
    spec: DatasetSpec, name: str, data_dir: str | os.PathLike[str] | None, magic: int
) -> Tensor:
    file = spec.file(name)
    path = locate_file(spec, file, data_dir)
    st = path.stat()
    fix = f"delete it and run `thermotrain datasets fetch {spec.name}`"
    return _read_idx(
        str(path.absolute()),
        st.st_size,
        st.st_mtime_ns,
        tuple(sorted(file.digests.items())),
        magic,
        fix,
    )


def clear_idx_cache() -> None:
    """Drop the in-memory cache of decoded IDX files."""
    _read_idx.cache_clear()


def load_idx_dataset(
    spec: str | DatasetSpec,
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    normalize: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""Load one split of an MNIST-like IDX data set (docs/science.md §6).

    The split's two files (images with magic 2051, labels with magic 2049) are located
    (raw or ``.gz``), checked for size and magic, verified against the spec's pinned SHA-256
    of the decompressed content, and cached. Pixels :math:`u \in \{0..255\}` become
    :math:`x = u/255 \in [0, 1]`; with ``normalize=True``, :math:`(x - m)/s` with the spec's
    training-set mean :math:`m` and std :math:`s` (used for both splits).

    Args:
        spec: registered name (``"mnist"``, ``"fashion_mnist"``) or a :class:`DatasetSpec`
            whose ``splits`` map ``"train"``/``"test"`` to ``(images, labels)`` file names.
        split: ``"train"`` or ``"test"``.
        data_dir: data root (see :func:`~thermotrain.data.storage.resolve_data_dir`).
        device: device of the returned tensors (default CPU).
        dtype: floating dtype of the images (default float32).
        normalize: standardize with the training-set mean/std.

    Returns:
        ``(images, labels)``: ``images`` of shape ``(N, 1, H, W)`` in ``dtype``; ``labels``
        of shape ``(N,)``, int64.

    Raises:
        DatasetNotFoundError: a file is missing (the message lists the paths looked at and
            the fixes: ``--data-dir``, ``THERMOTRAIN_DATA``, ``thermotrain datasets fetch``).
        DatasetCorruptError: truncated, wrong magic, bad gzip, or checksum mismatch.
    """
    spec = get_dataset_spec(spec)
    images_file, labels_file = spec.split_files(split)
    images = _load_file(spec, images_file.name, data_dir, IMAGES_MAGIC)
    labels = _load_file(spec, labels_file.name, data_dir, LABELS_MAGIC)
    if images.ndim != 3:
        raise DatasetCorruptError(
            f"{images_file.name}: expected (N, H, W) images, got shape {tuple(images.shape)}"
        )
    check_labels(labels, spec, images.shape[0], f"{spec.name} {split}")
    x = images_to_float(images.unsqueeze(1), spec, device=device, dtype=dtype, normalize=normalize)
    return x, labels.to(device=x.device, dtype=torch.int64)


def load_mnist(
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    normalize: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""MNIST digits: ``images[N, 1, 28, 28]`` in [0, 1] and ``labels[N]`` int64 in 0..9.

    N = 60 000 (``"train"``) or 10 000 (``"test"``). Files ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``
    (each raw or ``.gz``) in ``<data root>/mnist/``. With ``normalize=True`` the images are
    :math:`(x - 0.1307)/0.3081` (training-set pixel mean and std). See
    :func:`load_idx_dataset` for verification, caching and errors (docs/science.md §6).

    Example:
        >>> images, labels = load_mnist("test", "../shared/data")  # doctest: +SKIP
        >>> images.shape, labels.dtype  # doctest: +SKIP
        (torch.Size([10000, 1, 28, 28]), torch.int64)
    """
    return load_idx_dataset(MNIST, split, data_dir, device=device, dtype=dtype, normalize=normalize)


def load_fashion_mnist(
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    normalize: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""Fashion-MNIST: ``images[N, 1, 28, 28]`` in [0, 1] and ``labels[N]`` int64 in 0..9.

    Same files, layout and checks as :func:`load_mnist`, in ``<data root>/fashion_mnist/``;
    ``normalize=True`` uses :math:`(x - 0.2860)/0.3530` (docs/science.md §6).
    """
    return load_idx_dataset(
        FASHION_MNIST, split, data_dir, device=device, dtype=dtype, normalize=normalize
    )
