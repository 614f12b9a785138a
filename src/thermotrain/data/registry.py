"""The registry of image data sets and its management: list, verify, fetch (SPEC §6).

A data set is described by a :class:`DatasetSpec`: its folder under the data root
(:func:`~thermotrain.data.storage.resolve_data_dir`), its files with pinned checksums of the
**decompressed** content, the mirrors it can be downloaded from, and which files make up
each split. Specs are plain frozen dataclasses, so tests and users can build their own and
pass them wherever a name is accepted.

- :func:`list_datasets` — every registered data set, where it would be found, whether it is
  present and (optionally) verified.
- :func:`verify` — check every file of one data set; raises on the first problem.
- :func:`fetch` — download missing or corrupt files. Each file is written to a temporary
  file in the target folder and moved into place with :func:`os.replace` only after its
  checksum verifies, so an interrupted or bad download never leaves a half-written file
  under the real name.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from .._checks import check_float
from .errors import (
    DatasetCorruptError,
    DatasetDownloadError,
    DatasetNotFoundError,
    UnknownDatasetError,
)
from .storage import (
    candidate_paths,
    check_content,
    check_digests,
    data_dir_source,
    find_file,
    resolve_data_dir,
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


@dataclass(frozen=True)
class FileSpec:
    """One file of a data set.

    Attributes:
        name: path relative to the data set's folder of the *decompressed* file, e.g.
            ``"train-images-idx3-ubyte"``; it is found as ``name`` or ``name + ".gz"``.
        sha256: SHA-256 (hex) of the decompressed content, or ``None``.
        md5: MD5 (hex) of the decompressed content, or ``None`` (CIFAR-10's published sums).
        remote: file name relative to a mirror's base URL, e.g. ``"train-images-idx3-ubyte.gz"``;
            if it ends in ``.gz`` the download is stored as ``name + ".gz"``. ``None`` means
            the file comes out of the data set's :class:`ArchiveSpec` (or, if there is no
            archive, cannot be downloaded).
    """

    name: str
    sha256: str | None = None
    md5: str | None = None
    remote: str | None = None

    def __post_init__(self) -> None:
        if not self.name or Path(self.name).is_absolute() or ".." in Path(self.name).parts:
            raise ValueError(
                f"FileSpec.name must be a relative path inside the folder, got {self.name!r}"
            )
        for label, value, size in (("sha256", self.sha256, 64), ("md5", self.md5, 32)):
            if value is not None and (
                len(value) != size or any(c not in "0123456789abcdefABCDEF" for c in value)
            ):
                raise ValueError(f"FileSpec.{label} must be {size} hex digits, got {value!r}")

    @property
    def digests(self) -> dict[str, str]:
        """Pinned digests as ``{algorithm: hex}`` (empty if none are pinned)."""
        pinned = {"sha256": self.sha256, "md5": self.md5}
        return {k: v.lower() for k, v in pinned.items() if v is not None}


@dataclass(frozen=True)
class ArchiveSpec:
    """A ``.tar.gz`` archive on a mirror that holds the files whose ``remote`` is ``None``.

    Attributes:
        remote: archive name relative to a mirror's base URL.
        sha256: SHA-256 of the archive file as downloaded (the published hash).
        strip: leading path removed from member names before matching ``FileSpec.name``.
    """

    remote: str
    sha256: str
    strip: str = ""


@dataclass(frozen=True, eq=False)
class DatasetSpec:
    """Everything needed to find, verify and download one data set.

    Attributes:
        name: registry key, e.g. ``"mnist"``.
        description: one line for ``thermotrain datasets list``.
        folder: sub-folder of the data root.
        files: the files, with pinned checksums.
        mirrors: base URLs tried in order by :func:`fetch` (``base_url`` overrides them).
        splits: split name -> names of its files, in the order a loader wants them.
        archive: optional archive holding the files with ``remote=None``.
        mean, std: per-channel training-set pixel mean and std of the [0, 1] images, used by
            the loaders' ``normalize=True``.
        num_classes: labels must lie in ``0 .. num_classes - 1`` (checked by the loaders).
        license: license / credit line.
    """

    name: str
    description: str
    folder: str
    files: tuple[FileSpec, ...]
    mirrors: tuple[str, ...] = ()
    splits: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    archive: ArchiveSpec | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    num_classes: int | None = None
    license: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", tuple(self.files))
        object.__setattr__(self, "mirrors", tuple(self.mirrors))
        object.__setattr__(
            self, "splits", MappingProxyType({k: tuple(v) for k, v in self.splits.items()})
        )
        names = [f.name for f in self.files]
        if len(set(names)) != len(names):
            raise ValueError(f"DatasetSpec {self.name!r} lists a file twice: {names}")
        for split, members in self.splits.items():
            unknown = [m for m in members if m not in names]
            if unknown:
                raise ValueError(f"split {split!r} of {self.name!r} names unknown files {unknown}")

    def file(self, name: str) -> FileSpec:
        """The :class:`FileSpec` called ``name``."""
        for spec in self.files:
            if spec.name == name:
                return spec
        raise KeyError(f"{self.name!r} has no file {name!r}; files: {[f.name for f in self.files]}")

    def split_files(self, split: str) -> tuple[FileSpec, ...]:
        """The files of ``split`` (``"train"`` or ``"test"``), in loader order."""
        if not isinstance(split, str) or split not in self.splits:
            raise ValueError(
                f"split must be one of {sorted(self.splits)} for {self.name!r}, got {split!r}"
            )
        return tuple(self.file(name) for name in self.splits[split])


_IDX = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _idx_spec(
    name: str,
    description: str,
    license: str,
    mirrors: tuple[str, ...],
    sha256: tuple[str, str, str, str],
    mean: float,
    std: float,
) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        description=description,
        folder=name,
        files=tuple(
            FileSpec(f, sha256=h, remote=f"{f}.gz") for f, h in zip(_IDX, sha256, strict=True)
        ),
        mirrors=mirrors,
        splits={"train": _IDX[:2], "test": _IDX[2:]},
        mean=(mean,),
        std=(std,),
        num_classes=10,
        license=license,
    )


#: MNIST. Checksums: SHA-256 of the decompressed IDX files (shared/data/SHA256SUMS.raw.txt).
MNIST = _idx_spec(
    "mnist",
    "MNIST handwritten digits, 60 000 train / 10 000 test, 28x28 grey (IDX)",
    "CC BY-SA 3.0, Yann LeCun and Corinna Cortes",
    (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
    0.1307,
    0.3081,
)

#: Fashion-MNIST, same layout and format as MNIST.
FASHION_MNIST = _idx_spec(
    "fashion_mnist",
    "Fashion-MNIST (Zalando), 60 000 train / 10 000 test, 28x28 grey (IDX)",
    "MIT, Zalando SE 2017",
    ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    (
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
    0.2860,
    0.3530,
)

_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}

#: CIFAR-10, "python version" pickled batches. The archive's SHA-256 and the per-batch MD5s
#: are the published ones (as used by torchvision); no per-batch SHA-256 is published.
CIFAR10 = DatasetSpec(
    name="cifar10",
    description="CIFAR-10, 50 000 train / 10 000 test, 32x32 colour (python pickles)",
    folder="cifar10",
    files=tuple(FileSpec(f"{_CIFAR_DIR}/{k}", md5=v) for k, v in _CIFAR_MD5.items()),
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    splits={
        "train": tuple(f"{_CIFAR_DIR}/data_batch_{i}" for i in range(1, 6)),
        "test": (f"{_CIFAR_DIR}/test_batch",),
    },
    archive=ArchiveSpec(
        remote="cifar-10-python.tar.gz",
        sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    ),
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    num_classes=10,
    license="Alex Krizhevsky, Vinod Nair, Geoffrey Hinton (2009)",
)

#: Registered data sets by name.
DATASETS: Mapping[str, DatasetSpec] = MappingProxyType(
    {spec.name: spec for spec in (MNIST, FASHION_MNIST, CIFAR10)}
)


def get_dataset_spec(name: str | DatasetSpec) -> DatasetSpec:
    """The :class:`DatasetSpec` registered as ``name`` (a spec is returned unchanged)."""
    if isinstance(name, DatasetSpec):
        return name
    if not isinstance(name, str):
        raise TypeError(f"dataset must be a name (str) or a DatasetSpec, got {name!r}")
    key = name.strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}"
        )
    return DATASETS[key]


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
    return [check(spec, data_dir, checksums=checksums) for spec in DATASETS.values()]


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


# --------------------------------------------------------------------------- downloading


@dataclass(frozen=True)
class FetchReport:
    """What :func:`fetch` did: files downloaded, files already present and verified, and
    the final (verified) status."""

    downloaded: tuple[str, ...]
    already_present: tuple[str, ...]
    status: DatasetStatus


ProgressHook = Callable[[int], None]


@contextlib.contextmanager
def _progress_bar(enabled: bool, label: str, total: int | None) -> Iterator[ProgressHook]:
    """A ``rich`` progress bar on stderr, or a no-op if disabled or ``rich`` is missing."""
    if not enabled:
        yield lambda _n: None
        return
    try:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )
    except ImportError:  # rich is optional at run time
        yield lambda _n: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


def _download(url: str, destination: Path, *, timeout: float, progress: bool) -> None:
    """Stream the body of ``url`` into the file ``destination`` (created or truncated)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with (
            open(destination, "wb") as out,
            _progress_bar(progress, url.rsplit("/", 1)[-1], total) as advance,
        ):
            while chunk := response.read(1 << 20):
                out.write(chunk)
                advance(len(chunk))
            out.flush()
            os.fsync(out.fileno())


def _temp_path(folder: Path, final_name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final_name}.", suffix=".part", dir=folder)
    os.close(fd)
    return Path(name)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _urls(spec: DatasetSpec, base_url: str | None, remote: str) -> list[str]:
    bases = [base_url] if base_url is not None else list(spec.mirrors)
    if not bases:
        raise DatasetDownloadError(
            f"{spec.name} has no download mirrors; pass base_url= / --base-url URL"
        )
    return [(b if b.endswith("/") else f"{b}/") + remote for b in bases]


def _download_verified(
    spec: DatasetSpec,
    urls: list[str],
    final: Path,
    verify_file: Callable[[Path], None],
    *,
    timeout: float,
    progress: bool,
) -> None:
    """Try ``urls`` in order; keep the first download that ``verify_file`` accepts at
    ``final`` (atomic ``os.replace``). Nothing is left behind on failure."""
    errors: list[str] = []
    corrupt: DatasetCorruptError | None = None
    for url in urls:
        temp = _temp_path(final.parent, final.name)
        try:
            _download(url, temp, timeout=timeout, progress=progress)
            verify_file(temp)
            os.replace(temp, final)
            return
        except DatasetCorruptError as exc:
            corrupt = DatasetCorruptError(
                f"download from {url} failed verification, nothing was written: {exc}",
                path=final,
            )
            errors.append(f"{url}: checksum mismatch")
        except urllib.error.HTTPError as exc:
            errors.append(f"{url}: HTTP {exc.code} {exc.reason}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            errors.append(f"{url}: {reason}")
        finally:
            _remove(temp)
    if corrupt is not None:
        raise corrupt
    raise DatasetDownloadError(
        f"could not download {final.name} for {spec.name} ({'; '.join(errors)}); check the "
        f"network or pass --base-url URL of a mirror (file:// URLs work)",
        urls=urls,
    )


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

    For each file: if it is already present and verifies (and not ``force``), it is kept.
    Otherwise the file is downloaded from ``base_url + remote`` (or each mirror in turn) into
    a temporary file ``.<name>.*.part`` in the target folder; the checksum of its
    decompressed content is checked, and only then is it moved to its final name with
    :func:`os.replace` (atomic on one file system). A checksum mismatch deletes the
    temporary file and raises :class:`DatasetCorruptError` — nothing is left behind.
    ``.gz`` downloads are stored compressed (``name.gz``). Files that live in an archive
    (CIFAR-10) are extracted from it after the archive's own SHA-256 verifies; the archive
    itself is deleted afterwards.

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
    if base_url is not None and not isinstance(base_url, str):
        raise TypeError(f"base_url must be a str or None, got {base_url!r}")
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
        suffix = ".gz" if file.remote.endswith(".gz") and not file.name.endswith(".gz") else ""
        final = folder / f"{file.name}{suffix}"
        final.parent.mkdir(parents=True, exist_ok=True)

        def verify_file(temp: Path, file: FileSpec = file, suffix: str = suffix) -> None:
            # The temp name lacks ".gz": decompress explicitly, then check the content.
            content = _decompressed(temp, gz=bool(suffix))
            check_content(
                content, file.digests, what=f"downloaded {file.remote}", path=temp, fix=fix
            )

        _download_verified(
            spec,
            _urls(spec, base_url, file.remote),
            final,
            verify_file,
            timeout=timeout,
            progress=progress,
        )
        # A stale copy under the other candidate name would shadow or confuse lookups.
        for other in candidate_paths(folder, file.name):
            if other != final:
                _remove(other)
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


def _decompressed(path: Path, *, gz: bool) -> bytes:
    data = path.read_bytes()
    if not gz:
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as exc:
        raise DatasetCorruptError(f"downloaded file is not valid gzip ({exc})", path=path) from None


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
    """Download ``archive``, check its SHA-256, extract ``files`` atomically, delete it."""
    archive_path = folder / f".{Path(archive.remote).name}.download"

    def verify_archive(temp: Path) -> None:
        digest = hashlib.sha256()
        with open(temp, "rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != archive.sha256.lower():
            raise DatasetCorruptError(
                f"archive {archive.remote} has SHA-256 {digest.hexdigest()}, expected "
                f"{archive.sha256}",
                path=temp,
            )

    _download_verified(
        spec,
        _urls(spec, base_url, archive.remote),
        archive_path,
        verify_archive,
        timeout=timeout,
        progress=progress,
    )
    written = []
    try:
        with tarfile.open(archive_path, "r:*") as tar:
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
                        path=archive_path,
                    )
                extracted = tar.extractfile(member)
                assert extracted is not None
                content = extracted.read()
                final = folder / file.name
                temp = _temp_path(final.parent, final.name)
                try:
                    check_content(
                        content,
                        file.digests,
                        what=f"{archive.remote}:{file.name}",
                        path=final,
                        fix="the archive holds a different file",
                    )
                    temp.write_bytes(content)
                    os.replace(temp, final)
                finally:
                    _remove(temp)
                _remove(final.with_name(final.name + ".gz"))
                written.append(file.name)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DatasetCorruptError(
            f"archive {archive.remote} could not be read ({exc})", path=archive_path
        ) from None
    finally:
        _remove(archive_path)
    return written
