"""Pure tensor maths of the paper's equations: LIF (Eq. 1-3, 14-18), tdBN (Eq. 5-8), fusion (Eq. 9-10), and the
training units that combine them as custom operators (:mod:`tdbn.functional.units`)."""

from . import surrogate
from .fold import bn_scale_shift, fold_into
from .lif import lif, lif_naive
from .params import DEFAULT_LIF, LIFParameters
from .tdbn import td_batch_norm
from .units import NormArgs, spike_conv2d, td_bn_add_lif, td_bn_lif

__all__ = [
    "DEFAULT_LIF",
    "LIFParameters",
    "NormArgs",
    "bn_scale_shift",
    "fold_into",
    "lif",
    "lif_naive",
    "spike_conv2d",
    "surrogate",
    "td_batch_norm",
    "td_bn_add_lif",
    "td_bn_lif",
]
