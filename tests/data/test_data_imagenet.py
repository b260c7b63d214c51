"""ImageNet reader on a small real class-folder tree made from CIFAR-10 JPEGs: crops, determinism, worker loader."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from tdbn.data import DataNotFoundError, ImageNet
from tdbn.train.loaders import DatasetBatches, ShardedBatchSampler
from tdbn.data.imagenet import random_resized_crop_box

WNIDS = ["n01440764", "n01443537", "n01484850"]


@pytest.fixture(scope="module")
def tree(shared_cifar10, tmp_path_factory):
    """``train/<wnid>/*.JPEG`` (4 per class) and ``val/<wnid>/*.JPEG`` (2 per class) from real JPEG files."""
    root = tmp_path_factory.mktemp("imagenet")
    with zipfile.ZipFile(shared_cifar10 / "cifar10-jpeg" / "test.zip") as archive:
        for wnid, cls in zip(WNIDS, ["airplane", "cat", "ship"]):
            names = sorted(n for n in archive.namelist() if n.startswith(f"test/{cls}/") and n.endswith(".jpg"))
            for split, chosen in (("train", names[:4]), ("val", names[4:6])):
                (root / split / wnid).mkdir(parents=True)
                for i, name in enumerate(chosen):
                    (root / split / wnid / f"{wnid}_{i}.JPEG").write_bytes(archive.read(name))
    return root


def test_train_and_eval_samples(tree):
    with pytest.warns(UserWarning, match=r"32x32, smaller than crop_size=224.*upscaled"):
        train = ImageNet(tree, train=True)
    with pytest.warns(UserWarning, match="image_folder_64"):
        val = ImageNet(tree, train=False)
    assert len(train) == 12 and len(val) == 6 and train.classes == WNIDS and val.classes == WNIDS
    x, label = train[5]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and label == 1
    v1, v2 = val[0][0], val[0][0]
    assert v1.shape == (3, 224, 224) and torch.equal(v1, v2)  # evaluation is deterministic
    assert -2.2 < float(v1.min()) and float(v1.max()) < 2.7  # ImageNet-normalized range


@pytest.mark.filterwarnings("ignore:.*smaller than crop_size")  # 32x32 images, 64 crops: upscaled on purpose
def test_training_crops_follow_the_seed(tree):
    train = ImageNet(tree, train=True, crop_size=64, resize_size=72)
    a, b, c = train[(3, 11)][0], train[(3, 11)][0], train[(3, 12)][0]
    assert a.shape == (3, 64, 64) and torch.equal(a, b) and not torch.equal(a, c)
    val = ImageNet(tree, train=False, crop_size=64, resize_size=72)
    assert val[0][0].shape == (3, 64, 64)


def test_random_resized_crop_box_ranges():
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, right, bottom = random_resized_crop_box(300, 200, rng)
        w, h = right - left, bottom - top
        assert 0 <= left < right <= 300 and 0 <= top < bottom <= 200
        assert 0.07 <= w * h / 60000 <= 1.0 and 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05
    # no 4:3 crop of 99-100 % of a 100x10 image exists: the fallback is the central 13x10 crop (4:3)
    assert random_resized_crop_box(100, 10, rng, scale=(0.99, 1.0)) == (43, 0, 56, 10)


def test_loader_with_worker_processes_is_reproducible(tree):
    train = ImageNet(tree, train=True, crop_size=32, resize_size=36)

    def epoch_batches(loader):
        return [(x.clone(), y.clone()) for x, y in loader]

    def imagenet_loader(dataset, *, workers):  # what tdbn train uses: seeded (index, epoch seed) keys
        sampler = ShardedBatchSampler(len(dataset), batch_size=4, shuffle=True, seed=7, keyed=True)
        return DatasetBatches(dataset, sampler, workers=workers)

    loader = imagenet_loader(train, workers=2)
    first = epoch_batches(loader)
    loader.set_epoch(1)
    second = epoch_batches(loader)
    assert [x.shape for x, _ in first] == [(4, 3, 32, 32)] * 3
    assert sorted(torch.cat([y for _, y in first]).tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, second))  # a new epoch, new crops
    in_process = epoch_batches(imagenet_loader(train, workers=0))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, in_process))


def test_missing_or_flat_val_names_layout(tree, tmp_path):
    with pytest.raises(DataNotFoundError, match="<wnid>") as err:
        ImageNet(tmp_path)
    assert "valprep" in str(err.value)
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"")
    with pytest.raises(DataNotFoundError):
        ImageNet(tmp_path, train=False)
