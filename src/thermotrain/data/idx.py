"""Parser for the IDX file format of MNIST and Fashion-MNIST (docs/science.md §6).

An IDX file is a big-endian header followed by the raw array::

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64
    byte  3     number of dimensions k
    4k bytes    the k dimension sizes, big-endian uint32
    rest        prod(sizes) elements, big-endian, C order

Read as one big-endian int32, the first four bytes are the *magic number*: 2051 (0x00000803)
for MNIST image files (uint8, 3 dims) and 2049 (0x00000801) for label files (uint8, 1 dim).
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from .errors import DatasetCorruptError

__all__ = ["IMAGES_MAGIC", "LABELS_MAGIC", "parse_idx"]

#: Magic number of an IDX file of uint8 images (3 dims: N, rows, cols).
IMAGES_MAGIC = 2051
#: Magic number of an IDX file of uint8 labels (1 dim: N).
LABELS_MAGIC = 2049

_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(
    data: bytes, *, expected_magic: int | None = None, source: str | Path = "<bytes>"
) -> np.ndarray:
    """Decode IDX bytes into a native-endian, writable :class:`numpy.ndarray`.

    Args:
        data: the whole (decompressed) file content.
        expected_magic: if given (e.g. :data:`IMAGES_MAGIC`), the magic number must equal it.
        source: file name used in error messages.

    Returns:
        The array with the shape stored in the header.

    Raises:
        DatasetCorruptError: wrong magic, unknown type, or a size that does not match the
            header (truncated file or trailing bytes).

    Example:
        >>> parse_idx(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 9]), expected_magic=LABELS_MAGIC)
        array([7, 9], dtype=uint8)
    """
    if len(data) < 4:
        raise DatasetCorruptError(
            f"{source}: {len(data)} bytes is too short for an IDX header (truncated?)",
            path=_as_path(source),
        )
    (magic,) = struct.unpack(">i", data[:4])
    if expected_magic is not None and magic != expected_magic:
        raise DatasetCorruptError(
            f"{source}: IDX magic number is {magic}, expected {expected_magic} "
            f"({_magic_name(expected_magic)}); not an IDX file of that kind or corrupt",
            path=_as_path(source),
        )
    zero, type_code, ndim = data[0] << 8 | data[1], data[2], data[3]
    if zero != 0 or type_code not in _TYPES or ndim == 0:
        raise DatasetCorruptError(
            f"{source}: invalid IDX header (magic {magic}: type 0x{type_code:02x}, "
            f"{ndim} dims); not an IDX file",
            path=_as_path(source),
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetCorruptError(
            f"{source}: file ends inside the IDX header ({len(data)} < {header} bytes); truncated",
            path=_as_path(source),
        )
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _TYPES[type_code]
    expected_size = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected_size:
        what = "truncated" if len(data) < expected_size else "has trailing bytes"
        raise DatasetCorruptError(
            f"{source}: IDX header says shape {shape} ({expected_size} bytes) but the file "
            f"has {len(data)} bytes; {what}",
            path=_as_path(source),
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def _magic_name(magic: int) -> str:
    return {IMAGES_MAGIC: "uint8 images", LABELS_MAGIC: "uint8 labels"}.get(magic, "IDX")


def _as_path(source: str | Path) -> Path | None:
    return None if str(source) == "<bytes>" else Path(source)
