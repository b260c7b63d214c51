"""The paper's spiking networks (Table 4) and a registry: ``create(name, num_classes=..., **options)``."""

from . import depth_nets as _depth_nets  # noqa: F401  (registers plain, resnet: any depth)
from . import resnet as _resnet  # noqa: F401  (registers resnet17/19/34/34_large/50)
from .net import SpikingNet
from .options import SPIKING_OPTIONS, SpikingOptions, spiking_options
from .registry import create, names, options_of
from .resnet import AnalogEncoder, BasicBlock, Bottleneck, MembraneBlock

__all__ = ["SPIKING_OPTIONS", "AnalogEncoder", "BasicBlock", "Bottleneck", "MembraneBlock", "SpikingNet", "SpikingOptions", "create", "names", "options_of",
           "spiking_options"]
