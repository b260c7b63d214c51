"""Export a trained spiking network to NIR, the neuromorphic exchange format (after BN-scale fusion, Eq. 9-10).

``to_nir(model, input_shape=...)`` fuses the model (``tdbn.fuse``), then walks its modules and writes one NIR
node per layer:

=========================================  ==========================================================
tdbn module (after fusion)                 NIR node
=========================================  ==========================================================
``TimeDistributed(nn.Conv2d)``             ``nir.Conv2d`` with the folded weights and bias (Eq. 9-10);
                                           a grouped conv (a fused shortcut tdBN) as a dense one
``TimeDistributed(nn.Linear)``             ``nir.Affine`` (``nir.Linear`` when it has no bias)
``TimeDistributed(nn.AvgPool2d)``          ``nir.AvgPool2d``
``TimeDistributed(nn.AdaptiveAvgPool2d)``  ``nir.AvgPool2d`` whose window tiles the input exactly
``LIF``                                    ``nir.LIF`` (Eq. 1-3; parameters: ``tdbn.export.neuron_map``)
``Flatten``                                ``nir.Flatten(start_dim=0)`` (NIR shapes have no batch axis)
``nn.Identity`` (a folded tdBN)            nothing: the edge passes through
residual block (``BasicBlock``,            the residual branch and the shortcut end in two edges into
``Bottleneck``)                            the block's ``nir.LIF``; NIR sums the inputs of a node
=========================================  ==========================================================

Node names are the module paths (``"body.stage1.0.residual.unit1.conv"``), plus ``"input"`` and ``"output"``.
Every node carries its shape (NIR shapes are per sample, without time and batch axes). The graph computes one time
step: the consumer feeds the input at every step (a static image is fed unchanged at each of the ``timesteps``
steps, as the encoding layer of Alg. 2 receives it) and averages the output over the steps (Eq. 11). The graph's
metadata records ``dt``, ``timesteps`` and that readout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..layers.neuron import LIF
from ..layers.units import TdBNLIF
from ..layers.norm import _TdBatchNorm
from ..layers.time import Flatten, TimeDistributed
from ..models.net import SpikingNet
from ..models.resnet import BasicBlock, Bottleneck
from ..fusion import fuse
from .neuron_map import DEFAULT_DT, lif_to_nir

if TYPE_CHECKING:  # nir is an optional dependency (the ``export`` extra)
    import nir as nir_lib

INPUT, OUTPUT = "input", "output"
READOUT = "mean over time of the output (Eq. 11)"
SUPPORTED = (
    "TimeDistributed(Conv2d | Linear | AvgPool2d | AdaptiveAvgPool2d), LIF, Flatten, Identity, Sequential, TdBNLIF, "
    "BasicBlock, Bottleneck, SpikingNet"
)


class NIRExportError(ValueError):
    """A module that NIR cannot express, or a model that cannot be exported as it is."""


def import_nir() -> Any:
    """The ``nir`` package, or an ``ImportError`` that says how to install it."""
    try:
        import nir
    except ImportError as e:  # pragma: no cover - nir is installed with the export extra
        raise ImportError("NIR export needs the 'nir' package: pip install 'tdbn[export]'") from e
    return nir


@dataclass(frozen=True)
class _Signal:
    """What flows along the graph: the sum of the outputs of ``sources``, of per-sample shape ``shape``."""

    sources: tuple[str, ...]
    shape: tuple[int, ...]


class _Builder:
    def __init__(self, nir: Any, dt: float):
        self.nir = nir
        self.dt = dt
        self.nodes: dict[str, Any] = {}
        self.edges: list[tuple[str, str]] = []

    def add(self, name: str, node: Any, signal: _Signal, shape: Sequence[int]) -> _Signal:
        if name in self.nodes:
            raise NIRExportError(f"module path {name!r} appears twice; NIR node names must be unique")
        if len(set(signal.sources)) != len(signal.sources):
            raise NIRExportError(f"{name}: the same node feeds it twice ({signal.sources}); NIR edges are unique")
        self.nodes[name] = node
        self.edges.extend((src, name) for src in signal.sources)
        return _Signal((name,), tuple(int(s) for s in shape))

    # ---- the walk ----------------------------------------------------------------------------------------------
    def walk(self, module: nn.Module, path: str, signal: _Signal) -> _Signal:
        # containers are matched by exact type: a subclass may compute something else in its forward
        if type(module) is SpikingNet:
            for name in ("encoder", "body", "head", "decoder"):
                signal = self.walk(getattr(module, name), _join(path, name), signal)
            return signal
        if type(module) in (BasicBlock, Bottleneck):
            # forward: lif(residual(x) + shortcut(x)); the sum is two edges into the LIF node
            res = self.walk(module.residual, _join(path, "residual"), signal)
            short = self.walk(module.shortcut, _join(path, "shortcut"), signal)
            if res.shape != short.shape:
                raise NIRExportError(f"{path}: residual branch shape {res.shape} != shortcut shape {short.shape}")
            return self.walk(module.lif, _join(path, "lif"), _Signal(res.sources + short.sources, res.shape))
        if type(module) in (nn.Sequential, TdBNLIF):  # a unit's forward in eval mode runs its children in order
            for name, child in module.named_children():
                signal = self.walk(child, _join(path, name), signal)
            return signal
        if isinstance(module, nn.Identity):
            return signal
        if isinstance(module, LIF):
            return self._lif(module, path, signal)
        if isinstance(module, Flatten):
            node = self.nir.Flatten(input_type={"input": np.array(signal.shape)}, start_dim=0, end_dim=-1)
            return self.add(path, node, signal, (math.prod(signal.shape),))
        if isinstance(module, TimeDistributed):
            return self._stateless(module.module, path, signal)
        if isinstance(module, (_TdBatchNorm, nn.modules.batchnorm._BatchNorm)):
            raise NIRExportError(
                f"{path} ({type(module).__name__}) is a normalization layer left after fusion; NIR has no "
                "normalization node. tdbn.fuse folds tdBN only when it directly follows a conv/linear layer or "
                "replaces it by a synaptic layer; fold this one into the layer before it"
            )
        raise NIRExportError(
            f"{path or 'model'} ({type(module).__name__}) cannot be expressed in NIR by tdbn's exporter; "
            f"supported modules: {SUPPORTED}"
        )

    def _lif(self, lif: LIF, path: str, signal: _Signal) -> _Signal:
        p = lif_to_nir(tau=lif.tau, v_th=lif.v_th, dt=self.dt)
        full = lambda v: np.full(signal.shape, v, dtype=np.float64)  # noqa: E731 - NIR stores per-neuron arrays
        node = self.nir.LIF(
            tau=full(p.tau), r=full(p.r), v_leak=full(p.v_leak), v_threshold=full(p.v_threshold),
            v_reset=full(p.v_reset),
        )
        return self.add(path, node, signal, signal.shape)

    def _stateless(self, layer: nn.Module, path: str, signal: _Signal) -> _Signal:
        out_shape = _shape_after(layer, signal.shape, path)
        if isinstance(layer, nn.Conv2d):
            if layer.padding_mode != "zeros":
                raise NIRExportError(f"{path}: Conv2d padding_mode={layer.padding_mode!r}; NIR pads with zeros only")
            bias = layer.bias if layer.bias is not None else torch.zeros(layer.out_channels)
            node = self.nir.Conv2d(
                input_shape=signal.shape[1:], weight=_np(_dense_weight(layer)), stride=tuple(layer.stride),
                padding=layer.padding if isinstance(layer.padding, str) else tuple(layer.padding),
                dilation=tuple(layer.dilation), groups=1, bias=_np(bias),
            )
        elif isinstance(layer, nn.Linear):
            if layer.bias is None:
                node = self.nir.Linear(weight=_np(layer.weight))
            else:
                node = self.nir.Affine(weight=_np(layer.weight), bias=_np(layer.bias))
        elif isinstance(layer, nn.AvgPool2d):
            kernel, stride, padding = (_pair(v) for v in (layer.kernel_size, layer.stride, layer.padding))
            if layer.ceil_mode or (not layer.count_include_pad and any(padding)) or layer.divisor_override:
                raise NIRExportError(
                    f"{path}: AvgPool2d(ceil_mode={layer.ceil_mode}, count_include_pad={layer.count_include_pad}, "
                    f"divisor_override={layer.divisor_override}) has no NIR equivalent; NIR's AvgPool2d has only "
                    "kernel_size, stride and padding"
                )
            node = self.nir.AvgPool2d(kernel_size=np.array(kernel), stride=np.array(stride), padding=np.array(padding))
        elif isinstance(layer, nn.AdaptiveAvgPool2d):
            node = self._adaptive_pool(layer, path, signal.shape)
        else:
            raise NIRExportError(
                f"{path} (TimeDistributed({type(layer).__name__})) cannot be expressed in NIR by tdbn's exporter; "
                f"supported modules: {SUPPORTED}"
            )
        return self.add(path, node, signal, out_shape)

    def _adaptive_pool(self, layer: nn.AdaptiveAvgPool2d, path: str, shape: tuple[int, ...]) -> Any:
        size = _pair(layer.output_size)
        hw = shape[1:]
        if any(o is None for o in size) or any(i % o for i, o in zip(hw, size)):
            raise NIRExportError(
                f"{path}: AdaptiveAvgPool2d(output_size={layer.output_size}) on a {hw[0]}x{hw[1]} input has windows "
                "of unequal size, which NIR's AvgPool2d cannot express; choose an input size divisible by the output"
            )
        kernel = tuple(i // o for i, o in zip(hw, size))
        return self.nir.AvgPool2d(kernel_size=np.array(kernel), stride=np.array(kernel), padding=np.array((0, 0)))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _pair(v: Any) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _dense_weight(conv: nn.Conv2d) -> torch.Tensor:
    """The weight of a grouped conv as an ordinary conv's (block diagonal, zeros elsewhere): ``[K, C, kh, kw]``.

    A fused identity-shortcut tdBN is a depthwise conv. nir 1.0 infers a Conv2d's input channels as
    ``weight.shape[1]``, which is wrong for ``groups > 1``; the dense form has the same outputs (the added
    terms are exact zeros) and every consumer supports it.
    """
    if conv.groups == 1:
        return conv.weight
    K, Cg = conv.weight.shape[:2]
    Kg = K // conv.groups
    dense = conv.weight.new_zeros(K, Cg * conv.groups, *conv.weight.shape[2:])
    for g in range(conv.groups):
        dense[g * Kg:(g + 1) * Kg, g * Cg:(g + 1) * Cg] = conv.weight[g * Kg:(g + 1) * Kg]
    return dense


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy().copy()


@torch.no_grad()
def _shape_after(layer: nn.Module, shape: tuple[int, ...], path: str) -> tuple[int, ...]:
    """Per-sample output shape of a stateless layer, by running it on one zero sample."""
    p = next(layer.parameters(), None)
    x = torch.zeros(1, *shape, dtype=p.dtype if p is not None else torch.float32)
    try:
        return tuple(layer(x).shape[1:])
    except RuntimeError as e:
        raise NIRExportError(f"{path}: {type(layer).__name__} does not accept a sample of shape {shape}: {e}") from e


def to_nir(model: nn.Module, *, input_shape: Sequence[int], dt: float = DEFAULT_DT) -> "nir_lib.NIRGraph":
    """Fuse ``model`` (Eq. 9-10) and describe one time step of it as a NIR graph.

    Args:
        model: a ``SpikingNet`` (any registered model) or a module built from the supported layers, in eval mode.
        input_shape: per-sample input shape without time and batch axes, ``(C, H, W)``.
        dt: the time step (seconds) a simulator must use; every LIF is mapped so that forward Euler with this
            step reproduces Eq. 1-3 exactly (``tdbn.export.neuron_map``).

    Returns:
        a ``nir.NIRGraph`` with ``"input"`` and ``"output"`` nodes and metadata ``dt``, ``timesteps`` (of a
        ``SpikingNet``) and ``readout``.

    Raises:
        NIRExportError (a ``ValueError``): model in training mode, or a module NIR cannot express (named by path).

    Example:
        >>> import tdbn
        >>> net = tdbn.models.create("resnet19", num_classes=10, width=1 / 16, timesteps=2, input_size=8).eval()
        >>> graph = to_nir(net, input_shape=(3, 8, 8))
        >>> [graph.nodes[n].__class__.__name__ for n in ("encoder.conv", "encoder.lif", "head.pool", "decoder")]
        ['Conv2d', 'LIF', 'AvgPool2d', 'Affine']
        >>> sorted(src for src, dst in graph.edges if dst == "body.stage1.0.lif")  # the residual sum: two edges
        ['body.stage1.0.residual.unit2.conv', 'body.stage1.0.shortcut.bn']
    """
    nir = import_nir()
    if model.training:
        raise NIRExportError(
            f"to_nir needs a model in eval mode ({type(model).__name__} is in training mode): BN-scale fusion "
            "(Eq. 9-10) folds tdBN's running statistics, which only eval mode uses; call model.eval() first"
        )
    shape = tuple(int(s) for s in input_shape)
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise NIRExportError(f"input_shape must be the per-sample shape, e.g. (C, H, W), got {tuple(input_shape)}")
    if isinstance(model, SpikingNet) and shape[0] != model.in_channels:
        raise NIRExportError(
            f"input_shape {shape} has {shape[0]} input channels; the model takes {model.in_channels}: pass "
            f"input_shape=({model.in_channels}, H, W)"
        )
    fused = fuse(model)
    builder = _Builder(nir, float(dt))
    builder.nodes[INPUT] = nir.Input(input_type={"input": np.array(shape)})
    out = builder.walk(fused, "", _Signal((INPUT,), shape))
    builder.add(OUTPUT, nir.Output(output_type={"output": np.array(out.shape)}), out, out.shape)
    metadata: dict[str, Any] = {"producer": "tdbn", "dt": float(dt), "readout": READOUT}
    if isinstance(model, SpikingNet):
        metadata["timesteps"] = int(model.timesteps)
    return nir.NIRGraph(nodes=builder.nodes, edges=builder.edges, metadata=metadata)


def write_nir(
    model: nn.Module, path: str | Path, *, input_shape: Sequence[int], dt: float = DEFAULT_DT
) -> "nir_lib.NIRGraph":
    """``to_nir`` then ``nir.write`` to ``path`` (an HDF5 file, by convention ``*.nir``); returns the graph."""
    nir = import_nir()
    graph = to_nir(model, input_shape=input_shape, dt=dt)
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    nir.write(str(path), graph)
    return graph
