"""tdbn: directly-trained deep spiking neural networks with STBP and tdBN.

Implements "Going Deeper With Directly-Trained Larger Spiking Neural Networks" (Zheng et al., AAAI 2021):
iterative LIF neurons trained by spatio-temporal backpropagation with a surrogate gradient, threshold-dependent
batch normalization (tdBN), the paper's spiking ResNets, and BN-scale fusion into a fully spiking network.

One time convention everywhere: tensors are time first, ``[T, N, C, H, W]`` for conv layers and ``[T, N, F]`` for
fully-connected layers. Models also accept static images ``[N, C, H, W]`` and repeat them over T.

A trained run back in Python: ``tdbn.load(run_folder_or_checkpoint)`` (the model, eval mode) and
``tdbn.saved_config(...)`` (its resolved configuration).
"""

from . import functional, layers, models, stream
from .functional.params import LIFParameters
from .fusion import fuse
from .layers import LIF, TdBatchNorm1d, TdBatchNorm2d, TdBNLIF, TimeDistributed, convert_sync_tdbn, set_lif_backend
from .loading import load, saved_config

__version__ = "0.1.0"

__all__ = [
    "LIF",
    "LIFParameters",
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
    "set_lif_backend",
    "stream",
]
