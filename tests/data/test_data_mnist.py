"""MNIST: the real mnist.npz, idx files written in the original format, any npz of the same keys."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from tdbn.data import MNIST, DataFormatError, DataNotFoundError, normalize
from tdbn.data.mnist import read_idx


def _write_idx(path, array, *, compress=False):
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def test_real_npz(shared_mnist):
    train = MNIST(shared_mnist / "mnist")
    test = MNIST(shared_mnist / "mnist" / "mnist.npz", train=False)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.classes == [str(d) for d in range(10)] and train.labels[:3].tolist() == [5, 0, 4]
    x = normalize(train.images[:5000], mean=train.mean, std=train.std)
    assert x.shape == (5000, 1, 28, 28) and abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05
    with pytest.raises(ValueError, match="no augmentation"):
        train.augment(train.images[:8], generator=torch.Generator())


@pytest.mark.parametrize("compress", [False, True])
def test_idx_files(tmp_path, compress):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (12, 28, 28)), rng.integers(0, 10, 12)
    suffix = ".gz" if compress else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, compress=compress)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, compress=compress)
    ds = MNIST(tmp_path)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images.astype(np.uint8)))
    assert ds.labels.tolist() == labels.tolist()
    with pytest.raises(DataNotFoundError, match="t10k-images-idx3-ubyte"):
        MNIST(tmp_path, train=False)


def test_truncated_idx_names_the_offset(tmp_path):
    path = _write_idx(tmp_path / "x-idx3-ubyte", np.zeros((3, 4, 4)))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataFormatError) as err:
        read_idx(path)
    assert err.value.offset == 16 + 43 and "needs 48" in str(err.value)


def test_any_npz_with_the_keys(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "fashion.npz"
    np.savez(path, x_train=rng.integers(0, 256, (6, 20, 20)).astype(np.uint8), y_train=np.arange(6),
             x_test=np.zeros((2, 20, 20), np.uint8), y_test=np.zeros(2, np.int64))
    ds = MNIST(path, mean=(0.2860,), std=(0.3530,))
    assert ds.images.shape == (6, 1, 20, 20) and ds.mean == (0.2860,)
    np.savez(path, x_train=np.zeros((2, 20, 20), np.uint8))
    with pytest.raises(DataFormatError, match="y_train"):
        MNIST(path)
