"""Data-set registry: list, verify, fetch against a local HTTP server (docs/science.md §6)."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from _data_helpers import idx_bytes, md5, sha256, write_cifar

from thermotrain.data import (
    CIFAR10,
    DATASETS,
    ArchiveSpec,
    DatasetCorruptError,
    DatasetDownloadError,
    DatasetNotFoundError,
    DatasetSpec,
    FileSpec,
    UnknownDatasetError,
    check,
    fetch,
    get_dataset_spec,
    list_datasets,
    load_cifar10,
    load_idx_dataset,
    verify,
)

IMAGES = idx_bytes(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3))
LABELS = idx_bytes(np.array([4, 2], np.uint8))
NOTES = b"plain file served without compression\n"


def _tiny_spec(**overrides) -> DatasetSpec:
    fields = dict(
        name="tiny",
        description="two gz IDX files and one raw file",
        folder="tiny",
        files=(
            FileSpec("images-idx3-ubyte", sha256=sha256(IMAGES), remote="images-idx3-ubyte.gz"),
            FileSpec("labels-idx1-ubyte", sha256=sha256(LABELS), remote="labels-idx1-ubyte.gz"),
            FileSpec("notes.txt", sha256=sha256(NOTES), remote="notes.txt"),
        ),
        splits={"train": ("images-idx3-ubyte", "labels-idx1-ubyte")},
        num_classes=10,
    )
    fields.update(overrides)
    return DatasetSpec(**fields)


def _serve_tiny(root: Path, *, images: bytes = IMAGES) -> None:
    (root / "images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
    (root / "labels-idx1-ubyte.gz").write_bytes(gzip.compress(LABELS))
    (root / "notes.txt").write_bytes(NOTES)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- fetch


def test_fetch_downloads_verifies_and_skips_present_files(http_root, tmp_path):
    _serve_tiny(http_root.root)
    data = tmp_path / "data"
    report = fetch(_tiny_spec(), data, base_url=http_root.url, progress=False)
    assert set(report.downloaded) == {"images-idx3-ubyte", "labels-idx1-ubyte", "notes.txt"}
    assert report.status.verified is True
    folder = data / "tiny"
    assert _leftovers(folder) == ["images-idx3-ubyte.gz", "labels-idx1-ubyte.gz", "notes.txt"]
    assert gzip.decompress((folder / "images-idx3-ubyte.gz").read_bytes()) == IMAGES
    x, y = load_idx_dataset(_tiny_spec(), "train", data)  # the fetched files load
    assert x.shape == (2, 1, 3, 3) and y.tolist() == [4, 2]

    served = len(http_root.requests)
    again = fetch(_tiny_spec(), data, base_url=http_root.url, progress=False)
    assert again.downloaded == () and len(again.already_present) == 3
    assert len(http_root.requests) == served  # nothing re-downloaded

    forced = fetch(_tiny_spec(), data, base_url=http_root.url, progress=False, force=True)
    assert len(forced.downloaded) == 3 and len(http_root.requests) == served + 3


def test_fetch_with_bad_checksum_leaves_nothing_behind(http_root, tmp_path):
    _serve_tiny(http_root.root, images=idx_bytes(np.zeros((2, 3, 3), np.uint8)))
    data = tmp_path / "data"
    with pytest.raises(DatasetCorruptError, match="failed verification, nothing was written"):
        fetch(_tiny_spec(), data, base_url=http_root.url, progress=False)
    assert _leftovers(data / "tiny") == []  # no final file, no .part temp file


def test_fetch_replaces_a_corrupt_file_atomically(http_root, tmp_path):
    _serve_tiny(http_root.root)
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "notes.txt").write_bytes(b"damaged")
    assert check(_tiny_spec(), tmp_path).files[2].state == "corrupt"
    report = fetch(_tiny_spec(), tmp_path, base_url=http_root.url, progress=False)
    assert "notes.txt" in report.downloaded
    assert (folder / "notes.txt").read_bytes() == NOTES
    # A raw copy beside a fetched .gz would shadow it: fetch removes the stale one.
    (folder / "labels-idx1-ubyte").write_bytes(b"stale raw copy")
    fetch(_tiny_spec(), tmp_path, base_url=http_root.url, progress=False)
    assert not (folder / "labels-idx1-ubyte").exists()
    assert verify(_tiny_spec(), tmp_path).verified is True


def test_fetch_reports_unreachable_files(http_root, tmp_path):
    with pytest.raises(DatasetDownloadError, match=r"images-idx3-ubyte\.gz.*404") as info:
        fetch(_tiny_spec(), tmp_path, base_url=http_root.url, progress=False)
    assert info.value.urls == (http_root.url + "images-idx3-ubyte.gz",)
    assert isinstance(info.value, OSError)
    assert _leftovers(tmp_path / "tiny") == []


def test_fetch_falls_back_to_the_next_mirror(http_root, tmp_path):
    (http_root.root / "good").mkdir()
    _serve_tiny(http_root.root / "good")
    spec = _tiny_spec(mirrors=(http_root.url + "missing", http_root.url + "good/"))
    report = fetch(spec, tmp_path, progress=False)
    assert len(report.downloaded) == 3
    assert "/missing/images-idx3-ubyte.gz" in http_root.requests


def test_fetch_from_file_url(tmp_path):
    source = tmp_path / "mirror"
    source.mkdir()
    _serve_tiny(source)
    report = fetch(_tiny_spec(), tmp_path / "data", base_url=source.as_uri(), progress=False)
    assert report.status.verified is True


def test_fetch_without_any_source(tmp_path):
    spec = _tiny_spec(files=(FileSpec("local-only.bin", sha256=sha256(b"x")),), splits={})
    with pytest.raises(DatasetDownloadError, match="no download source"):
        fetch(spec, tmp_path, progress=False)
    with pytest.raises(DatasetDownloadError, match="no download mirrors"):
        fetch(_tiny_spec(), tmp_path, progress=False)


def _cifar_archive(tmp_path: Path) -> tuple[bytes, object]:
    """A tar.gz laid out like cifar-10-python.tar.gz, plus CIFAR10's spec pinned to it."""
    files = write_cifar(tmp_path / "src" / "cifar-10-batches-py", per_batch=2)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(files.folder, arcname="cifar-10-batches-py")
    archive = buffer.getvalue()
    pinned = tuple(
        FileSpec(f.name, md5=md5(files.contents[f.name.rsplit("/", 1)[1]])) for f in CIFAR10.files
    )
    spec = DatasetSpec(
        name="cifar10",
        description=CIFAR10.description,
        folder="cifar10",
        files=pinned,
        splits=CIFAR10.splits,
        archive=ArchiveSpec("cifar-10-python.tar.gz", sha256=sha256(archive)),
        mean=CIFAR10.mean,
        std=CIFAR10.std,
        num_classes=10,
    )
    return archive, (spec, files)


def test_fetch_extracts_files_from_a_verified_archive(http_root, tmp_path):
    archive, (spec, files) = _cifar_archive(tmp_path)
    (http_root.root / "cifar-10-python.tar.gz").write_bytes(archive)
    data = tmp_path / "data"
    report = fetch(spec, data, base_url=http_root.url, progress=False)
    assert len(report.downloaded) == 7 and report.status.verified is True
    assert _leftovers(data / "cifar10") == sorted(
        ["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]
    )  # the archive and temp files are gone
    _, labels = load_cifar10("test", data, spec=spec)
    assert labels.tolist() == files.labels["test_batch"]


def test_fetch_rejects_an_archive_with_the_wrong_hash(http_root, tmp_path):
    archive, (spec, _) = _cifar_archive(tmp_path)
    k = len(archive) // 2
    damaged = archive[:k] + bytes([archive[k] ^ 0xFF]) + archive[k + 1 :]
    (http_root.root / "cifar-10-python.tar.gz").write_bytes(damaged)
    with pytest.raises(DatasetCorruptError, match="cifar-10-python.tar.gz has the wrong SHA-256"):
        fetch(spec, tmp_path / "data", base_url=http_root.url, progress=False)
    assert _leftovers(tmp_path / "data" / "cifar10") == []


# ----------------------------------------------------------------------------- list / verify


def test_list_datasets_reports_location_and_presence(tmp_path):
    statuses = list_datasets(tmp_path)
    assert [s.name for s in statuses] == ["mnist", "fashion_mnist", "cifar10"]
    assert [s.folder for s in statuses] == [
        tmp_path / n for n in ("mnist", "fashion_mnist", "cifar10")
    ]
    assert all(
        s.state == "missing" and s.present is False and s.verified is False for s in statuses
    )
    assert all(s.description for s in statuses)


def test_list_and_verify_real_data(shared_data):
    by_name = {s.name: s for s in list_datasets(shared_data)}
    assert by_name["mnist"].present and by_name["mnist"].verified is None  # not hashed
    assert by_name["cifar10"].state == "missing"
    checked = {s.name: s for s in list_datasets(shared_data, checksums=True)}
    assert checked["mnist"].state == "verified" and checked["fashion_mnist"].verified is True
    status = verify("mnist", shared_data)
    assert all(f.state == "ok" and f.path.name.endswith(".gz") for f in status.files)


def test_verify_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="4 of 4 files missing") as info:
        verify("fashion_mnist", tmp_path)
    assert len(info.value.paths) == 8  # raw and .gz candidates of each file
    folder = tmp_path / "mnist"
    folder.mkdir()
    for f in DATASETS["mnist"].files:
        (folder / f.name).write_bytes(b"junk")
    with pytest.raises(DatasetCorruptError, match="SHA-256"):
        verify("mnist", tmp_path)
    assert check("mnist", tmp_path).state == "corrupt"
    assert check("mnist", tmp_path, checksums=False).state == "present"


def test_registry_names_and_spec_validation():
    assert get_dataset_spec("Fashion-MNIST") is DATASETS["fashion_mnist"]
    assert set(DATASETS) == {"mnist", "fashion_mnist", "cifar10"}
    # Raw SHA-256 pins copied from shared/data/SHA256SUMS.raw.txt.
    assert (
        DATASETS["mnist"].file("train-images-idx3-ubyte").sha256
        == "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    )
    with pytest.raises(
        UnknownDatasetError, match="unknown dataset 'imagenet'; known datasets: mnist"
    ):
        get_dataset_spec("imagenet")
    with pytest.raises(ValueError, match="64 hex digits"):
        FileSpec("a", sha256="abc")
    with pytest.raises(ValueError, match="relative path"):
        FileSpec("../escape")
    with pytest.raises(ValueError, match="lists a file twice"):
        _tiny_spec(files=(FileSpec("a"), FileSpec("a")), splits={})
    with pytest.raises(ValueError, match="names unknown files"):
        _tiny_spec(splits={"train": ("nope",)})


def test_downloads_go_through_pooch_with_the_pinned_hash(http_root, tmp_path, monkeypatch):
    import pooch

    calls = []
    original = pooch.retrieve

    def spy(url, known_hash=None, **kwargs):
        calls.append((url.rsplit("/", 1)[1], known_hash))
        return original(url, known_hash=known_hash, **kwargs)

    monkeypatch.setattr(pooch, "retrieve", spy)
    _serve_tiny(http_root.root)
    fetch(_tiny_spec(), tmp_path, base_url=http_root.url, progress=False)
    # pooch checks the SHA-256 of a plain file itself; a .gz is pinned by its decompressed
    # content, which fetch checks after pooch's download
    assert sorted(calls) == [("images-idx3-ubyte.gz", None), ("labels-idx1-ubyte.gz", None),
                             ("notes.txt", f"sha256:{sha256(NOTES)}")]


def test_a_plain_file_with_the_wrong_hash_is_refused_by_pooch(http_root, tmp_path):
    _serve_tiny(http_root.root)
    (http_root.root / "notes.txt").write_bytes(b"changed upstream\n")
    with pytest.raises(DatasetCorruptError, match="notes.txt has the wrong SHA-256"):
        fetch(_tiny_spec(), tmp_path, base_url=http_root.url, progress=False)
    assert "notes.txt" not in _leftovers(tmp_path / "tiny")
    assert not [p for p in (tmp_path / "tiny").iterdir() if p.name.endswith(".fetch")]
