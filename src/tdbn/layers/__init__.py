"""``nn.Module`` layers on time-first tensors ``[T, N, ...]``."""

from .mpbn import MPBNLIF
from .neuron import LIF
from .norm import TD_NORMS, TdBatchNorm1d, TdBatchNorm2d, convert_sync_tdbn
from .temporal_norm import BNTT, TAB, TEBN, TIME_NORMS
from .time import Flatten, MeanOverTime, TimeDistributed
from .units import TdBNLIF

__all__ = [
    "BNTT", "LIF", "MPBNLIF", "TAB", "TD_NORMS",
    "TEBN", "TIME_NORMS", "TdBatchNorm1d", "TdBatchNorm2d", "convert_sync_tdbn",
    "Flatten", "MeanOverTime", "TdBNLIF", "TimeDistributed",
]
