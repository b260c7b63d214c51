"""tdbn: directly-trained deep spiking neural networks with STBP and tdBN.

Implements "Going Deeper With Directly-Trained Larger Spiking Neural Networks" (Zheng et al., AAAI 2021):
iterative LIF neurons trained by spatio-temporal backpropagation with a surrogate gradient, threshold-dependent
batch normalization (tdBN), the paper's spiking ResNets, and BN-scale fusion into a fully spiking network.

One time convention everywhere: tensors are time first, ``[T, N, C, H, W]`` for conv layers and ``[T, N, F]`` for
fully-connected layers. Models also accept static images ``[N, C, H, W]`` and repeat them over T.

A trained run back in Python: ``tdbn.load(run_folder_or_checkpoint)`` (the model, eval mode) and
``tdbn.saved_config(...)`` (its resolved configuration).
"""

import importlib

import torch

#: the oldest PyTorch the package runs on: ``torch.library.custom_op`` and ``register_autograd`` came in 2.4
MIN_TORCH = (2, 4)


def _check_torch(version: str) -> None:
    found = tuple(int(part) for part in version.split("+")[0].split(".")[:2])
    if found < MIN_TORCH:
        raise ImportError(f"tdbn needs torch >= {'.'.join(map(str, MIN_TORCH))} (its operators use "
                          f"torch.library.custom_op), found {version}: pip install 'torch>=2.4'")


_check_torch(torch.__version__)

from . import functional, layers, models  # noqa: E402
from .functional.params import LIFParameters  # noqa: E402
from .fusion import fuse  # noqa: E402
from .layers import (BNTT, LIF, MPBNLIF, TAB, TEBN, TdBatchNorm1d, TdBatchNorm2d, TdBNLIF,  # noqa: E402
                     TimeDistributed, convert_sync_tdbn)

__version__ = "0.1.0"

# imported on first use: ``import tdbn`` loads the core (operators, layers, models, fusion) and no data reader,
# training, streaming, export or analysis module
_LAZY = {"load": ("loading", "load"), "saved_config": ("loading", "saved_config"), "stream": ("stream", None),
         "data": ("data", None), "train": ("train", None), "export": ("export", None), "analysis": ("analysis", None)}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'tdbn' has no attribute {name!r}")
    module, attr = _LAZY[name]
    mod = importlib.import_module(f"{__name__}.{module}")
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "BNTT",
    "LIF",
    "LIFParameters",
    "MPBNLIF",
    "TAB",
    "TEBN",
    "TdBatchNorm1d",
    "TdBatchNorm2d",
    "TdBNLIF",
    "TimeDistributed",
    "convert_sync_tdbn",
    "functional",
    "fuse",
    "layers",
    "load",
    "models",
    "saved_config",
    "stream",
]
