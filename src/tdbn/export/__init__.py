"""From a trained network to deployable forms: BN-scale fusion (Eq. 9-10), graph export (NIR, ONNX) and the integer
network (``quantize``).

The ``nir``, ``onnx`` and ``onnxruntime`` packages are optional (extras ``export`` and ``onnx``); they are imported
only when an export function runs.
"""

from ..fusion import count_norm_layers, fuse  # BN-scale fusion lives in tdbn.fusion; re-exported for export users
from .neuron_map import DEFAULT_DT, euler_lif, lif_to_nir, nir_to_lif
from .nir import NIRExportError, to_nir, write_nir
from .nir_model import NIRNet, from_nir, read_nir_file
from .nirtorch_map import nirtorch_node_map
from .quant import IntegerNet, image_input_scale, quantize

__all__ = [
    "DEFAULT_DT", "IntegerNet", "NIRExportError", "NIRNet", "count_norm_layers", "euler_lif", "from_nir", "fuse",
    "image_input_scale", "lif_to_nir", "nir_to_lif", "nirtorch_node_map", "quantize", "read_nir_file", "to_nir",
    "write_nir",
]
