"""The paper's spiking networks (Table 4) and a registry: ``create(name, num_classes=..., **options)``."""

from . import plain as _plain  # noqa: F401  (registers plain, resnet)
from . import resnet as _resnet  # noqa: F401  (registers resnet17/19/34/34_large/50)
from .net import SpikingNet
from .options import SpikingOptions
from .registry import create, names, options_of
from .resnet import BasicBlock, Bottleneck

__all__ = ["BasicBlock", "Bottleneck", "SpikingNet", "SpikingOptions", "create", "names", "options_of"]
