"""Docstring examples run in the test suite with ``torch``, ``nn`` and ``tdbn`` in scope.

Without a GPU the Triton LIF kernels run in Triton's interpreter, on CPU tensors: the variable must be set
before ``triton`` is first imported, so it is set here, before any test module loads.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
from torch import nn

import tdbn


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    doctest_namespace.update(torch=torch, nn=nn, tdbn=tdbn)
    torch.manual_seed(0)
