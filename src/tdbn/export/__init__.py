"""From a trained network to deployable forms: BN-scale fusion (Eq. 9-10) and graph export (NIR, ONNX).

The ``nir``, ``onnx`` and ``onnxruntime`` packages are optional (extras ``export`` and ``onnx``); they are imported
only when an export function runs.
"""

from .fuse import count_norm_layers, fuse  # tdbn.fusion, re-exported (the submodule first, then the function)
from .neuron_map import DEFAULT_DT, euler_lif, lif_to_nir, nir_to_lif
from .nir import NIRExportError, to_nir, write_nir
from .nir_model import NIRNet, from_nir, read_nir_file

__all__ = [
    "DEFAULT_DT", "NIRExportError", "NIRNet", "count_norm_layers", "euler_lif", "from_nir", "fuse", "lif_to_nir",
    "nir_to_lif", "read_nir_file", "to_nir", "write_nir",
]
