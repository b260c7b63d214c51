"""``tdbn.export.fuse`` is :func:`tdbn.fusion.fuse` (BN-scale fusion, Eq. 9-10), kept here for export users."""

from ..fusion import count_norm_layers, fuse

__all__ = ["count_norm_layers", "fuse"]
