"""ONNX export of the fused network (Eq. 9-10) for CPU inference engines such as onnxruntime.

ONNX has no spiking neuron, so each LIF becomes its unrolled recurrence (Eq. 1-3) over the fixed number of time
steps: ``u = x[t] + tau * u * (u <= v_th)``, ``o = u > v_th``, i.e. Mul, LessOrEqual, Add and Greater nodes. The
time steps are fixed at export (those of the example input); the batch size stays free. A per-channel affine layer
left by fusion (:class:`~tdbn.layers.affine.ChannelAffine2d`, which runs as the operator ``tdbn::channel_affine``)
becomes its Mul and Add.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from ..layers.affine import ChannelAffine2d
from ..layers.neuron import LIF
from ..fusion import fuse


class UnrolledLIF(nn.Module):
    """Eq. 1-3 written with traceable tensor operations only (inference; no surrogate gradient).

    Same arithmetic as ``tdbn.functional.lif`` in the forward pass: ``u[t] = x[t] + tau * (u[t-1] * 1[u[t-1] <=
    v_th])``, spikes ``u[t] > v_th``.
    """

    def __init__(self, *, tau: float, v_th: float):
        super().__init__()
        self.tau = float(tau)
        self.v_th = float(v_th)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [T, N, ...]
        u = x[0]
        spikes = [(u > self.v_th).to(x.dtype)]
        for t in range(1, x.shape[0]):
            u = x[t] + self.tau * (u * (u <= self.v_th).to(x.dtype))
            spikes.append((u > self.v_th).to(x.dtype))
        return torch.stack(spikes)


class PlainAffine(nn.Module):
    """``w * x + b`` per channel on ``[N, C, H, W]`` in plain tensor operations: a :class:`ChannelAffine2d` as ONNX
    sees it (the same two roundings)."""

    def __init__(self, layer: ChannelAffine2d):
        super().__init__()
        self.weight = nn.Parameter(layer.weight.detach().reshape(1, -1, 1, 1).clone(), requires_grad=False)
        self.bias = None if layer.bias is None else nn.Parameter(
            layer.bias.detach().reshape(1, -1, 1, 1).clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.weight
        return y if self.bias is None else y + self.bias


def unroll_lifs(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``LIF`` replaced by :class:`UnrolledLIF` and every :class:`ChannelAffine2d` by
    :class:`PlainAffine` (same spikes, traceable into ONNX's operators)."""
    model = copy.deepcopy(model)
    for parent in model.modules():
        for name, child in list(parent._modules.items()):
            if isinstance(child, LIF):
                parent._modules[name] = UnrolledLIF(tau=child.tau, v_th=child.v_th)
            elif isinstance(child, ChannelAffine2d):
                parent._modules[name] = PlainAffine(child)
    return model


def to_onnx(model: nn.Module, path: str | Path, example_input: torch.Tensor, *, opset: int = 17) -> Path:
    """Fuse ``model`` and write it to ``path`` as an ONNX graph with input ``"input"`` and output ``"scores"``.

    Args:
        model: a network in eval mode (``SpikingNet`` or any module of tdbn layers).
        example_input: a real-shaped input, static ``[N, C, H, W]`` or frames ``[T, N, C, H, W]``; its number of
            time steps is fixed in the graph, its batch size is not.
        opset: ONNX opset version.

    Returns:
        the path written.
    """
    try:
        import onnx  # noqa: F401  (torch.onnx needs it)
    except ImportError as e:  # pragma: no cover - installed with the onnx extra
        raise ImportError("ONNX export needs the 'onnx' package: pip install 'tdbn[onnx]'") from e
    if model.training:
        raise ValueError(
            f"to_onnx needs a model in eval mode ({type(model).__name__} is in training mode): BN-scale fusion "
            "(Eq. 9-10) folds tdBN's running statistics; call model.eval() first"
        )
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    traceable = unroll_lifs(fuse(model))
    batch_axis = 0 if example_input.dim() == 4 else 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape checks, the legacy-exporter notice
        torch.onnx.export(
            traceable, (example_input,), str(path), input_names=["input"], output_names=["scores"],
            dynamic_axes={"input": {batch_axis: "batch"}, "scores": {0: "batch"}}, opset_version=opset,
            dynamo=False,
        )
    return path
