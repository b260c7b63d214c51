"""Pure tensor maths of the paper's equations: LIF (Eq. 1-3, 14-18), tdBN (Eq. 5-8), fusion (Eq. 9-10)."""

from . import surrogate
from .fold import bn_scale_shift, fold_into
from .lif import LIFFunction, lif, lif_naive
from .tdbn import sync_td_batch_norm, td_batch_norm

__all__ = [
    "LIFFunction",
    "bn_scale_shift",
    "fold_into",
    "lif",
    "lif_naive",
    "surrogate",
    "sync_td_batch_norm",
    "td_batch_norm",
]
