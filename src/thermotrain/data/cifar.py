"""CIFAR-10 loader for the standard "python version" pickled batches (docs/science.md §6).

Layout (as extracted from ``cifar-10-python.tar.gz`` into ``<data root>/cifar10/``)::

    cifar10/cifar-10-batches-py/data_batch_1 .. data_batch_5   (train, 10 000 images each)
    cifar10/cifar-10-batches-py/test_batch                     (test, 10 000 images)

Each batch is a pickled ``dict`` (written by Python 2, so keys are ``bytes`` when read with
``encoding="bytes"``) with ``b"data"``: uint8 array ``(N, 3072)`` — row-major 32×32 red
plane, then green, then blue — and ``b"labels"``: list of N ints in 0..9.

Pickles can run arbitrary code when loaded, so batches are read with a restricted
unpickler that only allows the globals a numpy array needs; anything else is refused as
corrupt. Files are checked against the published MD5s when the spec pins them.
"""

from __future__ import annotations

import codecs
import functools
import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._images import check_labels, images_to_float
from .errors import DatasetCorruptError
from .specs import CIFAR10, DatasetSpec, get_dataset_spec
from .status import locate_file
from .storage import check_digests, read_content

__all__ = ["load_cifar10", "read_cifar_batch", "clear_cifar_cache"]

_IMAGE_SHAPE = (3, 32, 32)
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's array-unpickling function


def _frombuffer(buffer: bytes, dtype: np.dtype, shape: tuple[int, ...], order: str) -> np.ndarray:
    # Protocol-5 pickles of numpy arrays call numpy's private _frombuffer; this is the same.
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how Python 3 pickles bytes under protocol 2
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name} (not part of a CIFAR batch)"
            ) from None


def read_cifar_batch(content: bytes, *, source: str | Path = "<bytes>") -> tuple[Tensor, Tensor]:
    """Decode one CIFAR-10 python batch into uint8 images ``(N, 3, 32, 32)`` and int64 labels.

    Args:
        content: the pickled batch (``dict`` with ``b"data"`` uint8 ``(N, 3072)`` and
            ``b"labels"``, ``str`` keys are accepted too).
        source: file name used in error messages.

    Raises:
        DatasetCorruptError: not a pickle, disallowed globals, missing keys, wrong shapes.
    """
    try:
        batch = _RestrictedUnpickler(io.BytesIO(content), encoding="bytes").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
    ) as exc:
        raise DatasetCorruptError(
            f"{source}: not a readable CIFAR-10 python batch ({exc}); truncated or corrupt",
            path=None if str(source) == "<bytes>" else Path(source),
        ) from None
    if not isinstance(batch, dict):
        raise DatasetCorruptError(f"{source}: expected a pickled dict, got {type(batch).__name__}")

    def get(key: str) -> object:
        for k in (key.encode(), key):
            if k in batch:
                return batch[k]
        raise DatasetCorruptError(
            f"{source}: batch has no {key!r} entry; keys are {sorted(map(repr, batch))}"
        )

    data, labels = get("data"), get("labels")
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
    ):
        described = (
            f"{data.dtype} array of shape {data.shape}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise DatasetCorruptError(
            f"{source}: b'data' must be a uint8 array of shape (N, 3072), got {described}"
        )
    try:
        label_array = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DatasetCorruptError(f"{source}: b'labels' is not a list of ints ({exc})") from None
    if label_array.shape != (data.shape[0],):
        raise DatasetCorruptError(f"{source}: {label_array.size} labels for {data.shape[0]} images")
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, *_IMAGE_SHAPE).copy())
    return images, torch.from_numpy(label_array)


@functools.lru_cache(maxsize=8)
def _read_batch(
    path: str, size: int, mtime_ns: int, digests: tuple[tuple[str, str], ...], fix: str
) -> tuple[Tensor, Tensor]:
    content = read_content(Path(path))
    check_digests(Path(path), dict(digests), content=content, fix=fix)
    return read_cifar_batch(content, source=path)


def clear_cifar_cache() -> None:
    """Drop the in-memory cache of decoded CIFAR batches."""
    _read_batch.cache_clear()


def load_cifar10(
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    normalize: bool = False,
    spec: DatasetSpec | None = None,
) -> tuple[Tensor, Tensor]:
    r"""CIFAR-10: ``images[N, 3, 32, 32]`` in [0, 1] and ``labels[N]`` int64 in 0..9
    (docs/science.md §6).

    ``"train"`` concatenates ``data_batch_1`` … ``data_batch_5`` in order (N = 50 000);
    ``"test"`` is ``test_batch`` (N = 10 000). Files are found under
    ``<data root>/cifar10/cifar-10-batches-py/`` (raw, or ``.gz``), checked against the
    published MD5s, decoded with a restricted unpickler, and cached per process. Pixels
    become :math:`x = u/255`; ``normalize=True`` then applies
    :math:`(x_c - m_c)/s_c` with the per-channel training-set mean
    (0.4914, 0.4822, 0.4465) and std (0.2470, 0.2435, 0.2616).

    Args:
        split: ``"train"`` or ``"test"``.
        data_dir: data root (see :func:`~thermotrain.data.storage.resolve_data_dir`).
        device, dtype: placement and floating dtype of the images (default CPU, float32).
        normalize: standardize each channel.
        spec: a different :class:`DatasetSpec` with the same layout (e.g. other checksums);
            default :data:`~thermotrain.data.registry.CIFAR10`.

    Raises:
        DatasetNotFoundError: a batch is missing (message lists where it was looked for and
            how to fix it).
        DatasetCorruptError: checksum mismatch, unreadable pickle, or wrong shapes/labels.
    """
    spec = CIFAR10 if spec is None else get_dataset_spec(spec)
    fix = f"delete it and run `thermotrain datasets fetch {spec.name}`"
    images, labels = [], []
    for file in spec.split_files(split):
        path = locate_file(spec, file, data_dir)
        st = path.stat()
        x, y = _read_batch(
            str(path.absolute()),
            st.st_size,
            st.st_mtime_ns,
            tuple(sorted(file.digests.items())),
            fix,
        )
        images.append(x)
        labels.append(y)
    all_images = images[0] if len(images) == 1 else torch.cat(images)
    all_labels = labels[0] if len(labels) == 1 else torch.cat(labels)
    check_labels(all_labels, spec, all_images.shape[0], f"{spec.name} {split}")
    out = images_to_float(all_images, spec, device=device, dtype=dtype, normalize=normalize)
    return out, all_labels.to(device=out.device, copy=True)
