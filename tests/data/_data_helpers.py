"""Helpers for the data tests: tiny files in the exact IDX and CIFAR-10 on-disk formats."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def idx_bytes(array: np.ndarray, magic_type: int = 0x08) -> bytes:
    """IDX encoding of ``array`` (uint8 by default): magic 0x0000TTDD, sizes, big-endian data."""
    dtypes = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    header = struct.pack(">BBBB", 0, 0, magic_type, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=dtypes[magic_type]).tobytes()


def write_idx(path: Path, content: np.ndarray | bytes, *, gz: bool = False) -> Path:
    """Write an IDX file (``content`` array or raw bytes), gzipped as ``path.gz`` if ``gz``."""
    data = content if isinstance(content, bytes) else idx_bytes(content)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def cifar_batch_bytes(
    data: np.ndarray, labels: list[int], *, protocol: int = 2, str_keys: bool = False
) -> bytes:
    """A CIFAR-10 python batch: pickled dict with b"batch_label", b"labels", b"data",
    b"filenames" (bytes keys as in the Python-2 originals unless ``str_keys``)."""
    batch = {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": list(labels),
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    if str_keys:
        batch = {k.decode(): v for k, v in batch.items()}
    return pickle.dumps(batch, protocol=protocol)


@dataclass
class CifarFiles:
    """Tiny CIFAR-10 batches written by :func:`write_cifar`; ``contents`` maps file name to
    bytes; ``data``/``labels`` are the per-batch arrays in batch order."""

    folder: Path
    contents: dict[str, bytes] = field(default_factory=dict)
    data: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, list[int]] = field(default_factory=dict)


def write_cifar(folder: Path, per_batch: int = 3, seed: int = 0) -> CifarFiles:
    """Write data_batch_1..5, test_batch and batches.meta into ``folder`` (the
    ``cifar-10-batches-py`` directory) with random uint8 pixels and labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = CifarFiles(folder)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        content = cifar_batch_bytes(data, labels)
        (folder / name).write_bytes(content)
        files.contents[name], files.data[name], files.labels[name] = content, data, labels
    meta = pickle.dumps(
        {b"label_names": [b"airplane", b"automobile"], b"num_vis": 3072}, protocol=2
    )
    (folder / "batches.meta").write_bytes(meta)
    files.contents["batches.meta"] = meta
    return files
