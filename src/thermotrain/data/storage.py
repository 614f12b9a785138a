"""Where data files live, how they are read (raw or gzip) and how they are verified
(docs/science.md §6).

One function, :func:`resolve_data_dir`, decides the data root; everything else takes the
root it returns. Files are looked up as ``<root>/<folder>/<name>`` and then
``<root>/<folder>/<name>.gz``; checksums are always of the **decompressed** content, so a
recompressed ``.gz`` (different gzip header) still verifies.

Verified digests are remembered per process, keyed by (path, size, mtime), so hashing a
47 MB file happens once per process unless the file changes.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import DatasetCorruptError

__all__ = [
    "ENV_VAR",
    "resolve_data_dir",
    "data_dir_source",
    "candidate_paths",
    "find_file",
    "read_content",
    "content_digests",
    "check_digests",
    "check_content",
    "compare_digests",
    "clear_digest_cache",
]

#: Environment variable naming the data root (used when no ``data_dir`` is passed).
ENV_VAR = "THERMOTRAIN_DATA"

_CHUNK = 1 << 20


def _default_cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "thermotrain"


def _resolve(data_dir: str | os.PathLike[str] | None) -> tuple[Path, str]:
    if data_dir is not None:
        if not isinstance(data_dir, str | os.PathLike):
            raise TypeError(f"data_dir must be a str, a path or None, got {data_dir!r}")
        text = os.fspath(data_dir)
        if not text:
            raise ValueError("data_dir must not be an empty string; pass None for the default")
        return Path(text).expanduser().absolute(), "data_dir argument / --data-dir"
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env).expanduser().absolute(), f"${ENV_VAR}"
    return _default_cache_dir().absolute(), "default per-user cache"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``data_dir`` if given, else ``$THERMOTRAIN_DATA``, else the user cache.

    Order (docs/science.md §6; the only place this decision is made):

    1. the explicit ``data_dir`` argument (the CLI's ``--data-dir``);
    2. the environment variable ``THERMOTRAIN_DATA`` if set and non-empty;
    3. ``$XDG_CACHE_HOME/thermotrain`` if ``XDG_CACHE_HOME`` is an absolute path, else
       ``~/.cache/thermotrain``.

    ``~`` is expanded and the result made absolute; the folder need not exist. Each data set
    lives in a sub-folder of the root (``mnist/``, ``fashion_mnist/``, ``cifar10/``).

    Example:
        >>> resolve_data_dir("/tmp/data")
        PosixPath('/tmp/data')
    """
    return _resolve(data_dir)[0]


def data_dir_source(data_dir: str | os.PathLike[str] | None = None) -> str:
    """Human-readable origin of :func:`resolve_data_dir`'s answer, for error messages."""
    return _resolve(data_dir)[1]


def candidate_paths(folder: Path, name: str) -> tuple[Path, Path]:
    """The two places a file is looked for: ``folder/name`` then ``folder/name.gz``."""
    return folder / name, folder / f"{name}.gz"


def find_file(folder: Path, name: str) -> Path | None:
    """The first existing regular file among :func:`candidate_paths`, else ``None``."""
    for path in candidate_paths(folder, name):
        if path.is_file():
            return path
    return None


def _is_gzip(path: Path) -> bool:
    return path.name.endswith(".gz")


def _open_content(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def _iter_content(path: Path) -> Iterator[bytes]:
    """Decompressed content of ``path`` in chunks; gzip damage becomes DatasetCorruptError."""
    try:
        with _open_content(path) as stream:
            while chunk := stream.read(_CHUNK):
                yield chunk
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DatasetCorruptError(
            f"{path} is truncated or not valid gzip ({exc}); delete it and fetch it again",
            path=path,
        ) from None


def read_content(path: Path) -> bytes:
    """The whole decompressed content of ``path`` (gunzipped if the name ends in ``.gz``)."""
    return b"".join(_iter_content(path))


# (path, size, mtime_ns, algorithm) -> hex digest of the decompressed content.
_DIGESTS: dict[tuple[str, int, int, str], str] = {}
_DIGESTS_LOCK = threading.Lock()


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.absolute()), st.st_size, st.st_mtime_ns


def _new_hash(algorithm: str) -> hashlib._Hash:
    if algorithm == "md5":
        return hashlib.md5(usedforsecurity=False)
    return hashlib.new(algorithm)


def content_digests(
    path: Path, algorithms: tuple[str, ...], *, content: bytes | None = None
) -> dict[str, str]:
    """Hex digests of the decompressed content of ``path``, cached per (path, size, mtime).

    Args:
        path: the file (raw or ``.gz``).
        algorithms: e.g. ``("sha256",)`` or ``("sha256", "md5")``.
        content: the decompressed bytes if the caller already has them (avoids a re-read).
    """
    key = _stat_key(path)
    with _DIGESTS_LOCK:
        known = {a: _DIGESTS[(*key, a)] for a in algorithms if (*key, a) in _DIGESTS}
    missing = [a for a in algorithms if a not in known]
    if missing:
        hashes = {a: _new_hash(a) for a in missing}
        chunks = (content,) if content is not None else _iter_content(path)
        for chunk in chunks:
            for h in hashes.values():
                h.update(chunk)
        computed = {a: h.hexdigest() for a, h in hashes.items()}
        with _DIGESTS_LOCK:
            for a, digest in computed.items():
                _DIGESTS[(*key, a)] = digest
        known.update(computed)
    return known


def compare_digests(
    actual: dict[str, str], expected: dict[str, str], *, what: str, path: Path | None, fix: str
) -> None:
    """Raise :class:`DatasetCorruptError` naming ``what`` unless ``actual`` matches
    ``expected`` for every algorithm in ``expected``."""
    for algorithm, want in expected.items():
        got = actual[algorithm]
        if got != want.lower():
            label = algorithm.upper().replace("SHA", "SHA-")
            raise DatasetCorruptError(
                f"{what}: {label} of the decompressed content is {got}, expected {want.lower()} "
                f"(truncated, corrupt or a different file); {fix}",
                path=path,
            )


def check_content(
    content: bytes,
    expected: dict[str, str],
    *,
    what: str,
    path: Path | None = None,
    fix: str = "delete it and fetch it again",
) -> None:
    """Check in-memory (decompressed) ``content`` against ``expected`` digests; no caching."""
    hashes = {a: _new_hash(a) for a in expected}
    for h in hashes.values():
        h.update(content)
    compare_digests(
        {a: h.hexdigest() for a, h in hashes.items()}, expected, what=what, path=path, fix=fix
    )


def check_digests(
    path: Path,
    expected: dict[str, str],
    *,
    content: bytes | None = None,
    fix: str = "delete it and fetch it again",
) -> None:
    """Raise :class:`DatasetCorruptError` unless every ``expected`` digest of the decompressed
    content of ``path`` matches (digests are cached per path, size and mtime).

    Args:
        path: the file (raw or ``.gz``; the decompressed content is hashed).
        expected: algorithm name -> hex digest; empty means nothing to check.
        content: the decompressed bytes, if already read.
        fix: the remedy appended to the error message.
    """
    if not expected:
        return
    actual = content_digests(path, tuple(expected), content=content)
    compare_digests(actual, expected, what=str(path), path=path, fix=fix)


def clear_digest_cache() -> None:
    """Forget every remembered digest (the next verification re-reads the files)."""
    with _DIGESTS_LOCK:
        _DIGESTS.clear()
