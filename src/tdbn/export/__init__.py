"""From a trained network to deployable forms: BN-scale fusion (Eq. 9-10) and graph export."""

from .fuse import count_norm_layers, fuse

__all__ = ["count_norm_layers", "fuse"]
