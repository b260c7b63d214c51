"""Shared test fixtures. Real data: ``../shared/data`` or ``$TDBN_TEST_DATA`` (see tests/realdata.py)."""

from __future__ import annotations

import pytest
import torch

from realdata import shared_cifar10, shared_dvs128, shared_mnist, shared_nmnist  # noqa: F401 (fixtures)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
