"""The op layer: the package's PyTorch custom operators (``torch.ops.tdbn.*``), their kernels per device, and the
one tdBN training maths.

Where to look:

- :mod:`~tdbn.operators.unit_ops`: the operator definitions of the LIF and the training units (``conv -> tdBN ->
  LIF`` and the residual junction), each with its fake-tensor and autograd registrations, and a kernel registered
  per dispatch key (``"cpu"``, ``"cuda"``, and the reference as the default for every other device): the
  dispatcher chooses, no argument does. :mod:`~tdbn.operators.spike_ops`: spikes as bits, a conv over spikes.
- :mod:`~tdbn.operators.batch_norm`: tdBN in training mode, once (statistics local or synchronized across
  processes, output, running statistics, backward), used by the units and by the standalone tdBN.
- :mod:`~tdbn.operators.registration`: :class:`~tdbn.operators.registration.Operator`, the one way an operator
  is defined, and the named structures its inputs are grouped in (``LIFArgs``, ``TdBN``, ``TdBNBatch``,
  ``ConvArgs``).
- :mod:`~tdbn.operators.kernels`: which kernels each dispatch key's registration runs
  (:func:`~tdbn.operators.kernels.on_each_device`).
- The kernels, one module per implementation with the same entry points and arguments:
  :mod:`~tdbn.operators.reference` (plain PyTorch; the LIF recursions of :mod:`~tdbn.operators.recursions`),
  :mod:`~tdbn.operators.cpu` (with ``cpu_kernels.c``, compiled on first use in about a second) and
  :mod:`~tdbn.operators.cuda_units` (Triton, with the LIF kernels of :mod:`~tdbn.operators.cuda_lif`).
- :mod:`~tdbn.operators.switches`: :func:`lean_training` (the lean path off, for comparisons) and
  :func:`use_reference` (the reference kernels on purpose).
- :mod:`~tdbn.operators.compile_cache`: the op layer's fingerprint in torch.compile's cache keys, so that a graph
  compiled against other operator code is never taken from the on-disk cache.

Users call these through the layers (:class:`tdbn.TdBNLIF`, the models' residual blocks) or directly:
:func:`td_bn_lif`, :func:`td_bn_add_lif`, :func:`spike_conv2d`.
"""

from . import compile_cache, step_stats  # noqa: F401 (step_stats registers tdbn::step_sums, step_grad_sums)
from .batch_norm import NormArgs, TdBatchNormFunction, td_batch_norm_train
from .spike_ops import pack_spikes, spike_conv2d, unpack_spikes
from .switches import lean_enabled, lean_training, use_reference
from .unit_ops import lif_op, td_bn_add_lif, td_bn_lif

compile_cache.install()

__all__ = ["NormArgs", "TdBatchNormFunction", "lean_enabled", "lean_training", "lif_op", "pack_spikes",
           "spike_conv2d", "td_batch_norm_train", "td_bn_add_lif", "td_bn_lif", "unpack_spikes", "use_reference"]
