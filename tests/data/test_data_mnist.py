"""IDX parsing, MNIST / Fashion-MNIST loading and data-root resolution (docs/science.md §6)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _data_helpers import idx_bytes, sha256, write_idx

from thermotrain.data import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    MNIST,
    DatasetCorruptError,
    DatasetNotFoundError,
    DatasetSpec,
    FileSpec,
    load_fashion_mnist,
    load_idx_dataset,
    load_mnist,
    parse_idx,
    resolve_data_dir,
    verify,
)
from thermotrain.data import mnist as mnist_module
from thermotrain.data import storage as storage_module

# ----------------------------------------------------------------------------- real data


@pytest.mark.parametrize(
    ("loader", "mean", "std"),
    [(load_mnist, 0.1307, 0.3081), (load_fashion_mnist, 0.2860, 0.3530)],
)
def test_real_train_split_statistics(shared_data, loader, mean, std):
    images, labels = loader("train", shared_data)
    assert images.shape == (60000, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (60000,) and labels.dtype == torch.int64
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    assert float(images.double().mean()) == pytest.approx(mean, abs=5e-5)
    assert float(images.double().std()) == pytest.approx(std, abs=5e-5)
    counts = torch.bincount(labels, minlength=10)
    assert counts.numel() == 10 and int(counts.min()) > 5000  # all ten classes, ~6000 each
    normalized, _ = loader("train", shared_data, normalize=True)
    assert float(normalized.double().mean()) == pytest.approx(0.0, abs=1e-3)
    assert float(normalized.double().std()) == pytest.approx(1.0, abs=1e-3)


def test_real_test_split_and_dtype(shared_data):
    images, labels = load_mnist("test", shared_data, dtype=torch.float64)
    assert images.shape == (10000, 1, 28, 28) and images.dtype == torch.float64
    assert labels.shape == (10000,) and 0 <= int(labels.min()) and int(labels.max()) == 9
    # Classic first test labels of MNIST: 7 2 1 0 4 1 4 9 5 9.
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    f_images, f_labels = load_fashion_mnist("test", shared_data)
    assert f_images.shape == (10000, 1, 28, 28) and int(f_labels.max()) == 9
    assert not torch.equal(f_images[:5].float(), images[:5].float())


def test_repeated_loads_are_cached_and_independent(shared_data, monkeypatch):
    load_mnist("train", shared_data)  # warm: read, decoded and verified once per process
    verify("mnist", shared_data)

    def no_reading(*args, **kwargs):
        raise AssertionError("a cached file was read again")

    monkeypatch.setattr(mnist_module, "read_content", no_reading)
    monkeypatch.setattr(storage_module, "_iter_content", no_reading)
    first, labels = load_mnist("train", shared_data)
    assert verify("mnist", shared_data).verified is True  # digests remembered too
    first.fill_(-1.0)
    labels.fill_(-1)
    second, labels2 = load_mnist("train", shared_data)  # a fresh copy, cache unharmed
    assert float(second.min()) == 0.0 and int(labels2.min()) == 0


def test_env_var_is_used_when_no_data_dir(shared_data, monkeypatch):
    monkeypatch.setenv("THERMOTRAIN_DATA", str(shared_data))
    images, _ = load_mnist("test")
    assert images.shape[0] == 10000


def test_bad_split_and_arguments(shared_data):
    with pytest.raises(ValueError, match=r"split must be one of \['test', 'train'\].*'valid'"):
        load_mnist("valid", shared_data)
    with pytest.raises(ValueError, match="floating-point"):
        load_mnist("test", shared_data, dtype=torch.uint8)
    with pytest.raises(TypeError, match="normalize must be True or False"):
        load_mnist("test", shared_data, normalize="yes")


# ----------------------------------------------------------------------------- error paths


def _mnist_dir(root: Path) -> Path:
    return root / "mnist"


def test_missing_files_name_every_path_and_the_fixes(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist("train", tmp_path)
    err = info.value
    assert isinstance(err, FileNotFoundError)
    message = str(err)
    raw = _mnist_dir(tmp_path) / "train-images-idx3-ubyte"
    assert str(raw) in message and f"{raw}.gz" in message
    assert "--data-dir" in message and "THERMOTRAIN_DATA" in message
    assert "thermotrain datasets fetch mnist" in message
    assert "\n" not in message
    assert err.paths == (raw, raw.with_name(raw.name + ".gz"))


def test_missing_files_in_default_cache_say_so(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DatasetNotFoundError, match="default per-user cache") as info:
        load_fashion_mnist("test")
    assert str(tmp_path / "cache" / "thermotrain" / "fashion_mnist") in str(info.value)


@pytest.mark.parametrize("gz", [False, True])
def test_wrong_magic_is_reported(tmp_path, gz):
    # A label file stored under the image file's name.
    write_idx(_mnist_dir(tmp_path) / "t10k-images-idx3-ubyte", np.zeros(3, np.uint8), gz=gz)
    with pytest.raises(DatasetCorruptError, match="magic number is 2049, expected 2051"):
        load_mnist("test", tmp_path)


def test_truncated_and_oversized_idx_files(tmp_path):
    path = _mnist_dir(tmp_path) / "t10k-images-idx3-ubyte"
    full = idx_bytes(np.zeros((5, 28, 28), np.uint8))
    write_idx(path, full[:-100])
    with pytest.raises(DatasetCorruptError, match=r"shape \(5, 28, 28\).*truncated") as info:
        load_mnist("test", tmp_path)
    assert info.value.path == path
    write_idx(path, full + b"\0")
    with pytest.raises(DatasetCorruptError, match="trailing bytes"):
        load_mnist("test", tmp_path)
    write_idx(path, full[:10])
    with pytest.raises(DatasetCorruptError, match="ends inside the IDX header"):
        load_mnist("test", tmp_path)


def test_truncated_and_non_gzip_files(tmp_path):
    path = write_idx(
        _mnist_dir(tmp_path) / "t10k-images-idx3-ubyte",
        np.zeros((5, 28, 28), np.uint8),
        gz=True,
    )
    path.write_bytes(path.read_bytes()[:-20])  # cut the gzip stream
    with pytest.raises(DatasetCorruptError, match="truncated or not valid gzip"):
        load_mnist("test", tmp_path)
    path.write_bytes(b"this is not gzip at all")
    with pytest.raises(DatasetCorruptError, match="not valid gzip"):
        load_mnist("test", tmp_path)


def test_well_formed_file_with_wrong_content_fails_sha256(tmp_path):
    path = write_idx(_mnist_dir(tmp_path) / "t10k-labels-idx1-ubyte", np.zeros(7, np.uint8))
    write_idx(_mnist_dir(tmp_path) / "t10k-images-idx3-ubyte", np.zeros((7, 28, 28), np.uint8))
    with pytest.raises(DatasetCorruptError) as info:
        load_mnist("test", tmp_path)
    message = str(info.value)
    pinned = MNIST.file("t10k-images-idx3-ubyte").sha256
    assert "SHA-256" in message and pinned in message
    assert "thermotrain datasets fetch mnist" in message
    assert info.value.path is not None and info.value.path.parent == path.parent


# ----------------------------------------------------------------------------- tiny data sets


def _tiny_spec(images: np.ndarray, labels: np.ndarray, **kwargs) -> DatasetSpec:
    names = ("img", "lab", "timg", "tlab")
    contents = (idx_bytes(images), idx_bytes(labels), idx_bytes(images), idx_bytes(labels))
    return DatasetSpec(
        name="tiny",
        description="tiny IDX data",
        folder="tiny",
        files=tuple(FileSpec(n, sha256=sha256(c)) for n, c in zip(names, contents, strict=True)),
        splits={"train": ("img", "lab"), "test": ("timg", "tlab")},
        mirrors=("http://127.0.0.1:9/",),
        mean=(0.5,),
        std=(0.25,),
        num_classes=10,
        **kwargs,
    )


@pytest.mark.parametrize("gz", [False, True])
def test_tiny_idx_dataset_raw_or_gzip(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4, 5, 6), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1], np.uint8)
    spec = _tiny_spec(images, labels)
    for name, array in (("img", images), ("lab", labels), ("timg", images), ("tlab", labels)):
        write_idx(tmp_path / "tiny" / name, array, gz=gz)
    x, y = load_idx_dataset(spec, "train", tmp_path, dtype=torch.float64)
    assert x.shape == (4, 1, 5, 6)
    torch.testing.assert_close(x[:, 0], torch.from_numpy(images).double() / 255)
    assert y.tolist() == [3, 1, 4, 1] and y.dtype == torch.int64
    xn, _ = load_idx_dataset(spec, "test", tmp_path, dtype=torch.float64, normalize=True)
    torch.testing.assert_close(xn, (x - 0.5) / 0.25)


def test_tiny_idx_dataset_consistency_errors(tmp_path):
    images = np.zeros((4, 2, 2), np.uint8)
    for labels, match in (
        (np.array([0, 1, 2], np.uint8), "3 labels for 4 images"),
        (np.array([0, 1, 2, 10], np.uint8), r"labels range over \[0, 10\], expected 0\.\.9"),
    ):
        spec = _tiny_spec(images, labels)
        write_idx(tmp_path / "tiny" / "img", images)
        write_idx(tmp_path / "tiny" / "lab", labels)
        with pytest.raises(DatasetCorruptError, match=match):
            load_idx_dataset(spec, "train", tmp_path)


def test_cache_notices_a_replaced_file(tmp_path):
    images = np.zeros((2, 2, 2), np.uint8)
    labels = np.array([1, 2], np.uint8)
    spec = _tiny_spec(images, labels)
    write_idx(tmp_path / "tiny" / "img", images)
    lab = write_idx(tmp_path / "tiny" / "lab", labels)
    load_idx_dataset(spec, "train", tmp_path)
    lab.write_bytes(idx_bytes(np.array([1, 3], np.uint8)))  # same size, new content
    stat = lab.stat()
    os.utime(lab, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(DatasetCorruptError, match="SHA-256"):
        load_idx_dataset(spec, "train", tmp_path)


# ----------------------------------------------------------------------------- parse_idx


def test_parse_idx_types_and_header_checks():
    array = np.arange(-6, 6, dtype=np.int16).reshape(3, 4)
    parsed = parse_idx(idx_bytes(array, 0x0B))
    assert parsed.dtype == np.dtype("int16") and parsed.dtype.isnative
    np.testing.assert_array_equal(parsed, array)
    floats = np.linspace(0, 1, 5)
    np.testing.assert_array_equal(parse_idx(idx_bytes(floats, 0x0E)), floats)
    labels = parse_idx(idx_bytes(np.array([7, 9], np.uint8)), expected_magic=LABELS_MAGIC)
    assert labels.tolist() == [7, 9] and labels.flags.writeable
    with pytest.raises(DatasetCorruptError, match="too short"):
        parse_idx(b"\0\0")
    with pytest.raises(DatasetCorruptError, match="invalid IDX header"):
        parse_idx(b"\0\0\x07\x01\0\0\0\0")  # type 0x07 does not exist
    with pytest.raises(DatasetCorruptError, match="expected 2051"):
        parse_idx(idx_bytes(np.zeros(2, np.uint8)), expected_magic=IMAGES_MAGIC)
    assert IMAGES_MAGIC == 2051 and LABELS_MAGIC == 2049


def test_gzip_and_raw_give_identical_arrays(tmp_path):
    data = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    assert gzip.decompress(gzip.compress(data)) == data
    raw = parse_idx(data)
    assert raw.shape == (2, 3, 4) and int(raw[1, 2, 3]) == 23


# ----------------------------------------------------------------------------- data root


def test_resolve_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "thermotrain"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "thermotrain"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir() == tmp_path / "xdg" / "thermotrain"
    monkeypatch.setenv("THERMOTRAIN_DATA", "")  # empty = unset
    assert resolve_data_dir() == tmp_path / "xdg" / "thermotrain"
    monkeypatch.setenv("THERMOTRAIN_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir("~/d") == tmp_path / "home" / "d"
    with pytest.raises(ValueError, match="data_dir must not be an empty string"):
        resolve_data_dir("")
    with pytest.raises(TypeError, match="data_dir must be a str, a path or None"):
        resolve_data_dir(3)
