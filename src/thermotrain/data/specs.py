"""The registry of image data sets: what each one is, where its files belong, their pinned
checksums and mirrors (docs/science.md §6).

A data set is described by a :class:`DatasetSpec`: its folder under the data root
(:func:`~thermotrain.data.storage.resolve_data_dir`), its files with pinned checksums of the
**decompressed** content, the mirrors it can be downloaded from, and which files make up
each split. Specs are plain frozen dataclasses, so tests and users can build their own and
pass them wherever a name is accepted. Checking them is :mod:`.status`, downloading them
:mod:`.download`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from .errors import UnknownDatasetError

__all__ = ["FileSpec", "ArchiveSpec", "DatasetSpec", "MNIST", "FASHION_MNIST", "CIFAR10",
           "DATASETS", "get_dataset_spec"]


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

