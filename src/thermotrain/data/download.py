"""Downloading data sets with :mod:`pooch`: checksummed, atomic, never half-written
(docs/science.md §6).

:func:`fetch` downloads the missing or corrupt files of a data set. Each transfer goes
through :func:`pooch.retrieve` into a private staging folder inside the target folder (pooch
streams into a temporary file and moves it into place only after the hash it was given
matches); the content is then checked against the spec's pinned digests and moved to its
final name with :func:`os.replace` (atomic on one file system). Whatever fails, the staging
folder is removed, so an interrupted or bad download never leaves a file under the real name.

Pooch verifies the SHA-256 of what it downloads whenever that is what the spec pins (plain
files, archives); for ``.gz`` downloads the spec pins the *decompressed* content (robust to
re-compression by a mirror), which is checked after decompression. ``file://`` URLs (local
mirrors) are copied by a small pooch downloader.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pooch

from .._checks import check_float
from .errors import DatasetCorruptError, DatasetDownloadError
from .specs import ArchiveSpec, DatasetSpec, FileSpec, get_dataset_spec
from .status import DatasetStatus, check, dataset_folder, verify
from .storage import candidate_paths, check_content

__all__ = ["FetchReport", "fetch", "check_base_url", "SCHEMES"]


@dataclass(frozen=True)
class FetchReport:
    """What :func:`fetch` did: files downloaded, files already present and verified, and
    the final (verified) status."""

    downloaded: tuple[str, ...]
    already_present: tuple[str, ...]
    status: DatasetStatus


class _RichBar:
    """The progress-bar object pooch's downloaders accept (``total``, ``update``, ``reset``,
    ``close``), drawn with ``rich`` on stderr."""

    def __init__(self, label: str):
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self.total: int | None = None
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                  DownloadColumn(), TransferSpeedColumn(), transient=True)
        self._label, self._task = label, None

    def update(self, n: int) -> None:
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task(self._label, total=self.total or None)
        self._progress.advance(self._task, n)

    def reset(self) -> None:
        if self._task is not None:
            self._progress.reset(self._task)

    def close(self) -> None:
        self._progress.stop()


def _copy_file_url(url: str, output_file: Any, pooch_: Any = None, check_only: bool = False
                   ) -> bool | None:
    """A pooch downloader for ``file://`` URLs (a local mirror)."""
    source = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    if check_only:
        return source.is_file()
    with open(source, "rb") as src:
        if isinstance(output_file, (str, os.PathLike)):
            with open(output_file, "wb") as out:
                shutil.copyfileobj(src, out)
        else:
            shutil.copyfileobj(src, output_file)
    return None


@contextlib.contextmanager
def _quiet_pooch() -> Iterator[None]:
    """Pooch logs every download at INFO on stderr; the CLI prints its own one-line result."""
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _retrieve(url: str, stage: Path, fname: str, known_sha256: str | None, *, timeout: float,
              progress: bool) -> Path:
    """Download ``url`` into ``stage / fname`` with pooch (hash-checked when known)."""
    if url.startswith("file://"):
        downloader: Any = _copy_file_url
    else:
        bar = _RichBar(fname) if progress else False
        downloader = pooch.HTTPDownloader(progressbar=bar, timeout=timeout)
    known = f"sha256:{known_sha256.lower()}" if known_sha256 else None
    with _quiet_pooch():
        return Path(pooch.retrieve(url, known_hash=known, fname=fname, path=stage,
                                   downloader=downloader))


def _reason(exc: BaseException, url: str) -> str:
    import requests

    response = getattr(exc, "response", None)
    if response is not None and getattr(response, "status_code", None) is not None:
        return f"HTTP {response.status_code} {response.reason or ''}".strip()
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return f"cannot connect to {urllib.parse.urlparse(url).netloc}"
    return " ".join(str(getattr(exc, "strerror", None) or exc).split())


#: URL schemes fetch can download from (pooch's HTTP/FTP downloaders, our file:// copy)
SCHEMES = ("http", "https", "ftp", "file")


def check_base_url(base_url: str | None) -> str | None:
    """``base_url`` if it is ``None`` or a URL with a scheme of :data:`SCHEMES`, else
    ``ValueError`` naming it."""
    if base_url is None:
        return None
    if not isinstance(base_url, str):
        raise TypeError(f"base_url must be a str or None, got {base_url!r}")
    scheme = urllib.parse.urlparse(base_url).scheme
    if scheme not in SCHEMES or not base_url.split("://", 1)[-1]:
        raise ValueError(f"base_url must be a {'/'.join(SCHEMES)} URL such as "
                         f"https://host/path/ or file:///folder/, got {base_url!r}")
    return base_url


def _urls(spec: DatasetSpec, base_url: str | None, remote: str) -> list[str]:
    bases = [base_url] if base_url is not None else list(spec.mirrors)
    if not bases:
        raise DatasetDownloadError(
            f"{spec.name} has no download mirrors; pass base_url= / --base-url URL"
        )
    return [(b if b.endswith("/") else f"{b}/") + remote for b in bases]


def _download_verified(spec: DatasetSpec, urls: list[str], folder: Path, fname: str,
                       known_sha256: str | None, verify_file: Any, *, timeout: float,
                       progress: bool) -> Path:
    """Try ``urls`` in order; return the first download (in a staging folder that the caller
    removes) that pooch's hash check and ``verify_file`` accept."""
    import requests

    errors: list[str] = []
    corrupt: DatasetCorruptError | None = None
    for url in urls:
        stage = Path(tempfile.mkdtemp(prefix=f".{fname}.", suffix=".fetch", dir=folder))
        try:
            path = _retrieve(url, stage, fname, known_sha256, timeout=timeout,
                             progress=progress)
            verify_file(path)
            return path
        except DatasetCorruptError as exc:
            corrupt = DatasetCorruptError(
                f"download from {url} failed verification, nothing was written: {exc}",
                path=folder / fname)
            errors.append(f"{url}: checksum mismatch")
        except (requests.exceptions.RequestException, OSError) as exc:  # (some are ValueErrors)
            errors.append(f"{url}: {_reason(exc, url)}")
        except ValueError as exc:  # pooch: the SHA-256 of the download does not match
            corrupt = DatasetCorruptError(
                f"download from {url} failed verification, nothing was written: "
                f"{fname} has the wrong SHA-256 (expected {known_sha256}; pooch: "
                f"{' '.join(str(exc).split())})", path=folder / fname)
            errors.append(f"{url}: checksum mismatch")
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        shutil.rmtree(stage, ignore_errors=True)
    if corrupt is not None:
        raise corrupt
    raise DatasetDownloadError(
        f"could not download {fname} for {spec.name} ({'; '.join(errors)}); check the "
        f"network or pass --base-url URL of a mirror (file:// URLs work)",
        urls=urls,
    )


def _decompressed(path: Path, *, gz: bool) -> bytes:
    data = path.read_bytes()
    if not gz:
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as exc:
        raise DatasetCorruptError(f"downloaded file is not valid gzip ({exc})", path=path) from None


def fetch(
    name: str | DatasetSpec,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    base_url: str | None = None,
    progress: bool = True,
    force: bool = False,
    timeout: float = 60.0,
) -> FetchReport:
    """Download the files of a data set into ``<data root>/<folder>`` and verify them.

    For each file: if it is already present and verifies (and not ``force``), it is kept
    (the data root is the cache). Otherwise the file is fetched with :func:`pooch.retrieve`
    from ``base_url + remote`` (or each mirror in turn) into a staging folder in the target
    folder, its checksum is checked, and only then is it moved to its final name with
    :func:`os.replace`. A checksum mismatch deletes the download and raises
    :class:`DatasetCorruptError` — nothing is left behind. ``.gz`` downloads are stored
    compressed (``name.gz``). Files that live in an archive (CIFAR-10) are extracted from it
    after the archive's own SHA-256 verifies (checked by pooch); the archive is deleted
    afterwards.

    Args:
        name: registered name or a :class:`DatasetSpec` (tests inject their own).
        data_dir: data root (see :func:`~thermotrain.data.storage.resolve_data_dir`).
        base_url: one base URL to use instead of the spec's mirrors (``http(s)://`` or
            ``file://``).
        progress: show a ``rich`` progress bar on stderr.
        force: download even files that are present and verify.
        timeout: socket timeout in seconds for each request.

    Returns:
        A :class:`FetchReport`. Raises :class:`DatasetDownloadError` if no URL worked.
    """
    spec = get_dataset_spec(name)
    timeout = check_float("timeout", timeout, minimum=0.0, strict=True)
    base_url = check_base_url(base_url)
    folder = dataset_folder(spec, data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fix = f"the mirror serves a different file for {spec.name}"

    status = check(spec, data_dir)
    # "present" = found but no checksum pinned: nothing to compare a download with either.
    needed = [
        f
        for f, s in zip(spec.files, status.files, strict=True)
        if force or s.state not in ("ok", "present")
    ]
    kept = tuple(f.name for f in spec.files if f not in needed)
    downloaded: list[str] = []

    for file in (f for f in needed if f.remote is not None):
        gz = file.remote.endswith(".gz") and not file.name.endswith(".gz")
        final = folder / f"{file.name}{'.gz' if gz else ''}"
        final.parent.mkdir(parents=True, exist_ok=True)

        def verify_file(path: Path, file: FileSpec = file, gz: bool = gz) -> None:
            content = _decompressed(path, gz=gz)
            check_content(
                content, file.digests, what=f"downloaded {file.remote}", path=path, fix=fix
            )

        # pooch checks the SHA-256 itself when the pinned digest is of the downloaded bytes
        known = None if gz else file.sha256
        path = _download_verified(spec, _urls(spec, base_url, file.remote), final.parent,
                                  final.name, known, verify_file, timeout=timeout,
                                  progress=progress)
        try:
            os.replace(path, final)
        finally:
            shutil.rmtree(path.parent, ignore_errors=True)
        # A stale copy under the other candidate name would shadow or confuse lookups.
        for other in candidate_paths(folder, file.name):
            if other != final:
                with contextlib.suppress(FileNotFoundError):
                    other.unlink()
        downloaded.append(file.name)

    from_archive = [f for f in needed if f.remote is None]
    if from_archive and spec.archive is None:
        raise DatasetDownloadError(
            f"{spec.name} has no download source for {[f.name for f in from_archive]} "
            f"(no remote name and no archive); place the files in {folder} yourself"
        )
    if from_archive:
        assert spec.archive is not None
        downloaded += _fetch_from_archive(
            spec, spec.archive, from_archive, folder, base_url, timeout=timeout, progress=progress
        )

    return FetchReport(tuple(downloaded), kept, verify(spec, data_dir))


def _fetch_from_archive(
    spec: DatasetSpec,
    archive: ArchiveSpec,
    files: list[FileSpec],
    folder: Path,
    base_url: str | None,
    *,
    timeout: float,
    progress: bool,
) -> list[str]:
    """Download ``archive`` (SHA-256 checked by pooch), extract ``files`` atomically, delete
    it."""
    path = _download_verified(spec, _urls(spec, base_url, archive.remote), folder,
                              Path(archive.remote).name, archive.sha256, lambda _p: None,
                              timeout=timeout, progress=progress)
    written = []
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {}
            for member in tar.getmembers():
                member_name = member.name.removeprefix("./")
                if archive.strip:
                    member_name = member_name.removeprefix(archive.strip.rstrip("/") + "/")
                members[member_name] = member
            for file in files:
                member = members.get(file.name)
                if member is None or not member.isfile():
                    raise DatasetCorruptError(
                        f"archive {archive.remote} has no regular file {file.name!r}",
                        path=path,
                    )
                extracted = tar.extractfile(member)
                assert extracted is not None
                content = extracted.read()
                final = folder / file.name
                check_content(content, file.digests, what=f"{archive.remote}:{file.name}",
                              path=final, fix="the archive holds a different file")
                final.parent.mkdir(parents=True, exist_ok=True)
                fd, temp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part",
                                            dir=final.parent)
                try:
                    with os.fdopen(fd, "wb") as out:
                        out.write(content)
                    os.replace(temp, final)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(temp)
                with contextlib.suppress(FileNotFoundError):
                    final.with_name(final.name + ".gz").unlink()
                written.append(file.name)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DatasetCorruptError(
            f"archive {archive.remote} could not be read ({exc})", path=path
        ) from None
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
    return written
