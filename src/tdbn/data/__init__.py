"""Data sets of the paper (CIFAR-10, ImageNet, DVS128 Gesture, CIFAR10-DVS) plus N-MNIST and MNIST.

Each reader takes the on-disk layout users get from the official source and yields ``(input, label)``:

- static images as ``[C, H, W]`` float (batches ``[N, C, H, W]``); the models repeat them over T;
- event samples as frames ``[T, 2, H, W]`` float32 (channel 0 = OFF, 1 = ON events), batched time-first as
  ``[T, N, 2, H, W]`` by :func:`collate_time_first`.

Batching for training lives in one place, :mod:`tdbn.train.loaders`. Layouts and choices: ``docs/data.md``.
Errors: :class:`DataNotFoundError` (names the expected layout and the
source), :class:`DataFormatError` (names the file and the byte offset).
"""

from tdbn.data.aedat import read_aedat2, read_aedat31
from tdbn.data.cache import FrameCache
from tdbn.data.cifar10 import CIFAR10, CIFAR10_MEAN, CIFAR10_STD
from tdbn.data.cifar10_dvs import CIFAR10_DVS_CLASSES, CIFAR10DVS, load_split, make_split
from tdbn.data.dvs_gesture import GESTURE_CLASSES, DVSGesture, read_gesture_labels
from tdbn.data.errors import DataError, DataFormatError, DataNotFoundError
from tdbn.data.event_dataset import ConversionReport, EventFrameDataset, EventSample, FrameSettings
from tdbn.data.events import Events, collate_time_first, to_frames
from tdbn.data.imagenet import IMAGENET_MEAN, IMAGENET_STD, ImageNet
from tdbn.data.inmemory import InMemoryImages, augment_batch, normalize
from tdbn.data.mnist import FASHION_MNIST_MEAN, FASHION_MNIST_STD, MNIST, MNIST_MEAN, MNIST_STD
from tdbn.data.nmnist import NMNIST, read_bin_events

__all__ = [
    # events -> frames
    "Events",
    "to_frames",
    "collate_time_first",
    "FrameCache",
    "EventFrameDataset",
    "EventSample",
    "FrameSettings",
    "ConversionReport",
    # event data sets and readers
    "NMNIST",
    "read_bin_events",
    "DVSGesture",
    "GESTURE_CLASSES",
    "read_gesture_labels",
    "read_aedat31",
    "CIFAR10DVS",
    "CIFAR10_DVS_CLASSES",
    "read_aedat2",
    "make_split",
    "load_split",
    # static images
    "CIFAR10",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "MNIST",
    "MNIST_MEAN",
    "MNIST_STD",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "InMemoryImages",
    "augment_batch",
    "normalize",
    "ImageNet",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    # errors
    "DataError",
    "DataNotFoundError",
    "DataFormatError",
]
