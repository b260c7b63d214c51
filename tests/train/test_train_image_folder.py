"""The image_folder_64 preset trains on a small Tiny-ImageNet-style folder of 64x64 images, without upscaling."""

from __future__ import annotations

import io
import warnings
import zipfile

import pytest

from tdbn.train import load_config, train
from tdbn.train.data import build_data
from tdbn_train_helpers import metrics, one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["airplane", "cat", "ship", "truck"]


@pytest.fixture(scope="module")
def folder(shared_cifar10, tmp_path_factory):
    """``train/<class>/images/*.JPEG`` (8 per class, Tiny-ImageNet's nesting) and ``val/<class>/*.JPEG`` (4 per
    class): real CIFAR-10 JPEGs upscaled to 64x64."""
    from PIL import Image

    root = tmp_path_factory.mktemp("tiny")
    with zipfile.ZipFile(shared_cifar10 / "cifar10-jpeg" / "test.zip") as archive:
        for cls in CLASSES:
            names = sorted(n for n in archive.namelist() if n.startswith(f"test/{cls}/") and n.endswith(".jpg"))
            for split, chosen in (("train", names[:8]), ("val", names[8:12])):
                target = root / split / cls / ("images" if split == "train" else "")
                target.mkdir(parents=True, exist_ok=True)
                for i, name in enumerate(chosen):
                    with Image.open(io.BytesIO(archive.read(name))) as image:
                        image.convert("RGB").resize((64, 64), Image.Resampling.BICUBIC).save(
                            target / f"{cls}_{i}.JPEG", quality=90)
    return root


def test_small_image_preset_trains_at_the_image_size(folder, tmp_path):
    cfg = load_config("image_folder_64", [f"data.root={folder}", "model.width=0.0625", "optim.epochs=1",
                                          "optim.batch_size=16", "data.workers=0", "progress=false",
                                          f"run_dir={tmp_path / 'run'}"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no upscaling warning: the crop fits the images
        data = build_data(cfg.data, batch_size=16, timesteps=cfg.model.timesteps, seed=0)
        final = train(cfg, log=lambda s: None)
    assert (data.num_classes, data.in_channels, data.input_size) == (4, 3, 56)
    x, _ = next(iter(data.train))
    assert tuple(x.shape) == (16, 3, 56, 56)
    assert "test_top1" in final and len(metrics(tmp_path / "run")) == 1


def test_the_imagenet_crop_on_small_images_warns(folder):
    cfg = load_config("imagenet_resnet34", [f"data.root={folder}", "data.workers=0"])
    with pytest.warns(UserWarning, match=r"64x64, smaller than crop_size=224"):
        build_data(cfg.data, batch_size=4, timesteps=cfg.model.timesteps, seed=0, train=False)
