"""CIFAR-10 loader on tiny batches written in the exact python-pickle format
(docs/science.md §6)."""

from __future__ import annotations

import gzip
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from _data_helpers import cifar_batch_bytes, md5, write_cifar

from thermotrain.data import (
    CIFAR10,
    DatasetCorruptError,
    DatasetNotFoundError,
    FileSpec,
    load_cifar10,
    read_cifar_batch,
    verify,
)


def _batches_dir(root: Path) -> Path:
    return root / "cifar10" / "cifar-10-batches-py"


def _spec_for(files) -> object:
    """CIFAR10's spec with the MD5s of the tiny files instead of the published ones."""
    pinned = tuple(
        FileSpec(f.name, md5=md5(files.contents[f.name.rsplit("/", 1)[1]])) for f in CIFAR10.files
    )
    return replace(CIFAR10, files=pinned)


def test_train_and_test_splits_decode_exactly(tmp_path):
    files = write_cifar(_batches_dir(tmp_path), per_batch=3)
    spec = _spec_for(files)
    images, labels = load_cifar10("train", tmp_path, spec=spec, dtype=torch.float64)
    assert images.shape == (15, 3, 32, 32) and images.dtype == torch.float64
    assert labels.dtype == torch.int64
    expected_labels = sum((files.labels[f"data_batch_{i}"] for i in range(1, 6)), [])
    assert labels.tolist() == expected_labels  # batches 1..5 concatenated in order
    raw = np.concatenate([files.data[f"data_batch_{i}"] for i in range(1, 6)])
    # Row layout: 1024 red, then 1024 green, then 1024 blue values, each 32x32 row-major.
    for i, c, r, col in [(0, 0, 0, 0), (4, 1, 5, 7), (14, 2, 31, 31), (7, 2, 0, 31)]:
        assert images[i, c, r, col].item() == raw[i, c * 1024 + r * 32 + col] / 255.0
    test_images, test_labels = load_cifar10("test", tmp_path, spec=spec)
    assert (
        test_images.shape == (3, 3, 32, 32) and test_labels.tolist() == files.labels["test_batch"]
    )
    torch.testing.assert_close(
        test_images.reshape(3, -1) * 255, torch.from_numpy(files.data["test_batch"]).float()
    )


def test_normalize_is_per_channel(tmp_path):
    files = write_cifar(_batches_dir(tmp_path), per_batch=2, seed=1)
    spec = _spec_for(files)
    x, _ = load_cifar10("test", tmp_path, spec=spec, dtype=torch.float64)
    xn, _ = load_cifar10("test", tmp_path, spec=spec, dtype=torch.float64, normalize=True)
    mean = torch.tensor(CIFAR10.mean, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10.std, dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(xn, (x - mean) / std)


def test_gzipped_batches_are_found(tmp_path):
    files = write_cifar(_batches_dir(tmp_path), per_batch=2)
    path = _batches_dir(tmp_path) / "test_batch"
    path.with_name("test_batch.gz").write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    _, labels = load_cifar10("test", tmp_path, spec=_spec_for(files))
    assert labels.tolist() == files.labels["test_batch"]


def test_published_md5s_reject_other_files(tmp_path):
    write_cifar(_batches_dir(tmp_path), per_batch=2)
    with pytest.raises(
        DatasetCorruptError, match="MD5 .* expected 40351d587109b95175f43aff81a1287e"
    ):
        load_cifar10("test", tmp_path)
    with pytest.raises(DatasetCorruptError, match="MD5"):
        verify("cifar10", tmp_path)


def test_missing_batch(tmp_path):
    files = write_cifar(_batches_dir(tmp_path), per_batch=2)
    (_batches_dir(tmp_path) / "data_batch_3").unlink()
    with pytest.raises(
        DatasetNotFoundError, match="data_batch_3.*thermotrain datasets fetch cifar10"
    ):
        load_cifar10("train", tmp_path, spec=_spec_for(files))
    with pytest.raises(DatasetNotFoundError):
        load_cifar10("train", tmp_path / "elsewhere")


def test_str_keys_and_newer_pickle_protocols_load():
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    for protocol in (2, 4, 5):
        for str_keys in (False, True):
            content = cifar_batch_bytes(data, [1, 2], protocol=protocol, str_keys=str_keys)
            images, labels = read_cifar_batch(content)
            assert images.dtype == torch.uint8 and images.shape == (2, 3, 32, 32)
            assert torch.equal(images.reshape(2, -1), torch.from_numpy(data))
            assert labels.tolist() == [1, 2]


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (pickle.dumps({b"data": _Evil()}, protocol=2), "refusing to load global"),
        (cifar_batch_bytes(np.zeros((2, 3072), np.uint8), [0, 1])[:-30], "truncated or corrupt"),
        (b"not a pickle", "not a readable CIFAR-10 python batch"),
        (pickle.dumps([1, 2], protocol=2), "expected a pickled dict"),
        (pickle.dumps({b"labels": [0]}, protocol=2), "no 'data' entry"),
        (cifar_batch_bytes(np.zeros((2, 3000), np.uint8), [0, 1]), r"shape \(N, 3072\)"),
        (cifar_batch_bytes(np.zeros((2, 3072), np.float32), [0, 1]), "uint8"),
        (cifar_batch_bytes(np.zeros((2, 3072), np.uint8), [0]), "1 labels for 2 images"),
        (cifar_batch_bytes(np.zeros((1, 3072), np.uint8), ["cat"]), "not a list of ints"),
    ],
)
def test_bad_batches_are_rejected(content, match):
    with pytest.raises(DatasetCorruptError, match=match):
        read_cifar_batch(content, source="batch")


def test_labels_out_of_range_are_rejected(tmp_path):
    folder = _batches_dir(tmp_path)
    files = write_cifar(folder, per_batch=2)
    bad = cifar_batch_bytes(np.zeros((2, 3072), np.uint8), [3, 10])
    (folder / "test_batch").write_bytes(bad)
    files.contents["test_batch"] = bad
    with pytest.raises(DatasetCorruptError, match=r"labels range over \[3, 10\]"):
        load_cifar10("test", tmp_path, spec=_spec_for(files))
