"""The paper's equations as user-facing tensor functions: LIF (Eq. 1-3, 14-18), tdBN (Eq. 5-8), surrogate
gradients (Eq. 16) and BN-scale folding (Eq. 9-10); the TET training loss (a successor's objective). They run on the operators of :mod:`tdbn.operators`."""

from . import surrogate
from .fold import bn_scale_shift, fold_into
from .lif import lif, lif_naive
from .losses import tet_loss
from .params import DEFAULT_LIF, LIFParameters
from .tdbn import td_batch_norm

__all__ = ["DEFAULT_LIF", "LIFParameters", "bn_scale_shift", "fold_into", "lif", "lif_naive", "surrogate",
           "td_batch_norm", "tet_loss"]
