"""CIFAR-10: the three layouts, whole-batch augmentation (shapes, exactness, determinism), normalization, loader."""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest
import torch

from tdbn.data import CIFAR10, DataNotFoundError, augment_batch, normalize
from tdbn.train.loaders import TensorBatches

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def small_train(shared_cifar10):
    return CIFAR10(shared_cifar10 / "cifar10-jpeg", train=True, limit_per_class=8)


def test_zip_layout_real_subset(small_train):
    assert small_train.images.shape == (80, 3, 32, 32) and small_train.images.dtype == torch.uint8
    assert small_train.classes == CLASSES
    assert torch.bincount(small_train.labels).tolist() == [8] * 10


def test_full_test_set_statistics_after_normalization(shared_cifar10):
    test = CIFAR10(shared_cifar10 / "cifar10-jpeg", train=False)
    assert test.images.shape == (10000, 3, 32, 32) and torch.bincount(test.labels).tolist() == [1000] * 10
    x = normalize(test.images, mean=test.mean, std=test.std)  # [N, 3, 32, 32] float
    mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))
    assert mean.abs().max() < 0.05 and (std - 1).abs().max() < 0.05, (mean, std)


def test_image_folder_layout_matches_zip(shared_cifar10, small_train, tmp_path):
    with zipfile.ZipFile(shared_cifar10 / "cifar10-jpeg" / "train.zip") as archive:
        for cls in CLASSES:
            names = sorted(n for n in archive.namelist() if n.startswith(f"train/{cls}/") and n.endswith(".jpg"))[:8]
            for name in names:
                (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / name).write_bytes(archive.read(name))
    folder = CIFAR10(tmp_path, train=True)
    assert torch.equal(folder.images, small_train.images) and torch.equal(folder.labels, small_train.labels)


def test_python_pickle_layout(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    batches = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (20, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, 20)]
        with open(root / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f)
        batches.append((data, labels))
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES]}, f)
    train = CIFAR10(tmp_path, train=True)
    assert train.images.shape == (100, 3, 32, 32) and train.classes == CLASSES
    want = torch.from_numpy(np.concatenate([d for d, _ in batches[:5]]).reshape(-1, 3, 32, 32))
    assert torch.equal(train.images, want)  # rows are R plane, G plane, B plane, each 32x32 row-major
    test = CIFAR10(root, train=False)  # the batches folder itself works too
    assert test.labels.tolist() == batches[5][1]


def test_missing_folder_names_layouts(tmp_path):
    with pytest.raises(DataNotFoundError, match="cifar-10-batches-py") as err:
        CIFAR10(tmp_path)
    assert "train.zip" in str(err.value) and "toronto.edu" in str(err.value)


def _naive_crop_flip(image, oy, ox, flip, padding):
    padded = torch.nn.functional.pad(image, (padding,) * 4)
    out = padded[:, oy : oy + image.shape[1], ox : ox + image.shape[2]]
    return out.flip(-1) if flip else out


def test_augment_batch_is_a_padded_crop_and_flip(small_train):
    images = small_train.images[:16]
    out = augment_batch(images, generator=torch.Generator().manual_seed(3))
    assert out.shape == images.shape and out.dtype == torch.uint8
    g = torch.Generator().manual_seed(3)  # replay the draws in their documented order: oy, ox, flip
    oy, ox = torch.randint(0, 9, (16,), generator=g), torch.randint(0, 9, (16,), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    for i in range(16):
        assert torch.equal(out[i], _naive_crop_flip(images[i], int(oy[i]), int(ox[i]), bool(flip[i]), 4))


def test_augment_batch_determinism_and_spread(small_train):
    images = small_train.images
    a = augment_batch(images, generator=torch.Generator().manual_seed(0))
    b = augment_batch(images, generator=torch.Generator().manual_seed(0))
    c = augment_batch(images, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    many = augment_batch(images.repeat(25, 1, 1, 1), generator=torch.Generator().manual_seed(0))  # 2000 images
    unchanged = (many == images.repeat(25, 1, 1, 1)).flatten(1).all(dim=1).float().mean()
    assert unchanged < 0.05  # 1/81 offsets x 1/2 flips keep an image as is


def _batches(ds, **kw) -> TensorBatches:
    """The training loader over an in-memory data set, with its augmentation and normalization."""
    return TensorBatches(ds.images, ds.labels, augment=lambda x, g: ds.augment(x, generator=g),
                         transform=lambda x: normalize(x, mean=ds.mean, std=ds.std), **kw)


def test_batch_loader_epochs_reproducible(small_train):
    def run(seed, epoch=0):
        loader = _batches(small_train, batch_size=32, shuffle=True, seed=seed)
        loader.set_epoch(epoch)
        return [(x.clone(), y.clone()) for x, y in loader]

    first, second = run(0), run(0)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))
    assert [x.shape for x, _ in first] == [(32, 3, 32, 32), (32, 3, 32, 32)]  # the incomplete batch is dropped
    assert len(set(torch.cat([y for _, y in first]).tolist())) > 1
    epoch0, epoch1 = run(0), run(0, epoch=1)
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(epoch0, epoch1))  # a new order each epoch
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(run(0), run(1)))  # and per seed


def test_batch_loader_without_augmentation_is_normalize(small_train):
    x, y = next(iter(_batches(small_train, batch_size=10, shuffle=False)))
    assert torch.allclose(x, normalize(small_train.images[:10], mean=small_train.mean, std=small_train.std))
    assert torch.equal(y, small_train.labels[:10])
    image, label = small_train[3]
    assert image.shape == (3, 32, 32) and torch.allclose(image, x[3]) and label == int(y[3])
