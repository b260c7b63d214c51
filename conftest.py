"""Docstring examples run in the test suite with ``torch``, ``nn`` and ``tdbn`` in scope."""

import pytest
import torch
from torch import nn

import tdbn


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    doctest_namespace.update(torch=torch, nn=nn, tdbn=tdbn)
    torch.manual_seed(0)
