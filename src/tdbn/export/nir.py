"""Export a trained spiking network to NIR, the neuromorphic exchange format (after BN-scale fusion, Eq. 9-10).

``to_nir(model, input_shape=...)`` fuses the model (``tdbn.fuse``), then walks its modules and writes one NIR
node per layer:

=========================================  ==========================================================
tdbn module (after fusion)                 NIR node
=========================================  ==========================================================
``TimeDistributed(nn.Conv2d)``             ``nir.Conv2d`` with the folded weights and bias (Eq. 9-10);
                                           a grouped conv (a fused shortcut tdBN) as a dense one
``TimeDistributed(nn.Linear)``             ``nir.Affine`` (``nir.Linear`` when it has no bias)
``TimeDistributed(nn.AvgPool2d)``          portable: a sum pooling written as ``nir.Conv2d`` (weights 0/1),
                                           its ``1/k^2`` folded into the next synaptic layer;
                                           ``portable=False``: ``nir.AvgPool2d``
``TimeDistributed(nn.AdaptiveAvgPool2d)``  the same, with a window that tiles the input exactly
``LIF``                                    ``nir.LIF`` (Eq. 1-3; parameters: ``tdbn.export.neuron_map``);
                                           portable: ``r = 1``, the input gain folded into the weights
                                           and biases of the layers that feed it
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

The portable form (the default) depends on no optional parameter being honoured: every LIF has ``r = 1`` (a
consumer that ignores ``r`` reads it right), pooling is an ordinary convolution (every consumer has one), and the
thresholds are one value per layer. Its arithmetic differs from the fused model's by float rounding only (the
weights carry a factor ``1 / (1 - tau)``), so a spike can flip where a potential lies within rounding of the
threshold. ``portable=False`` writes the literal form (``r = 1 / (1 - tau)``, ``AvgPool2d``), which ``from_nir``
runs bit-identically to the fused model.
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
from ..models.resnet import AnalogEncoder, BasicBlock, Bottleneck, MembraneBlock
from ..fusion import fuse
from .neuron_map import DEFAULT_DT, NIRLIFParams, lif_to_nir

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
    """What flows along the graph: the sum of the outputs of ``sources``, of per-sample shape ``shape``.

    ``pending`` is a factor the next synaptic layer must apply to its weights (a sum pooling leaves ``1/k^2``).
    """

    sources: tuple[str, ...]
    shape: tuple[int, ...]
    pending: float = 1.0


class _Builder:
    """Walks a fused model and collects NIR nodes and edges.

    Synaptic weights and biases are kept in float64 (``self.exact``) until :meth:`finish`, so that the factors folded
    into them (pooling's ``1/k^2``, the portable LIF's input gain) are rounded to float32 once.
    """

    def __init__(self, nir: Any, dt: float, *, sum_pool: bool, unit_r: bool):
        self.nir = nir
        self.dt = dt
        self.sum_pool = sum_pool  # pooling as a 0/1 Conv2d, 1/k^2 folded into the next synaptic layer
        self.unit_r = unit_r  # LIF r = 1, the input gain folded into the layers that feed it
        self.nodes: dict[str, Any] = {}
        self.edges: list[tuple[str, str]] = []
        self.exact: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}  # synaptic node -> float64 weight, bias
        self.folds: dict[str, float] = {}  # synaptic node of a module -> the pooling factor folded into its weight
        self.lifs: dict[str, tuple[float, float]] = {}  # LIF node -> (tau, v_th) of the tdbn neuron
        self.gained: dict[str, float] = {}  # synaptic node -> the LIF input gain already folded into its weights

    def graph(self, *, timesteps: int | None, **extra: Any) -> Any:
        """The ``nir.NIRGraph`` with tdbn's metadata (``dt``, ``timesteps``, ``readout``) plus ``extra``."""
        metadata: dict[str, Any] = {"producer": "tdbn", "dt": self.dt, "readout": READOUT, **extra}
        if timesteps is not None:
            metadata["timesteps"] = int(timesteps)
        return self.nir.NIRGraph(nodes=self.nodes, edges=self.edges, metadata=metadata)

    def finish(self) -> None:
        """Write the float64 weights and biases into their nodes, rounded to float32 once."""
        for name, (w, b) in self.exact.items():
            self.nodes[name].weight = w.astype(np.float32)
            if b is not None:
                self.nodes[name].bias = b.astype(np.float32)

    def scale_synapse(self, name: str, factor: float) -> None:
        w, b = self.exact[name]
        self.exact[name] = (w * factor, None if b is None else b * factor)

    def add(self, name: str, node: Any, signal: _Signal, shape: Sequence[int], *, pending: float = 1.0) -> _Signal:
        if signal.pending != 1.0 and not isinstance(node, (self.nir.Conv2d, self.nir.Affine, self.nir.Linear,
                                                             self.nir.Flatten)):
            raise NIRExportError(
                f"{name}: a pooling's 1/k^2 must be folded into a synaptic layer, but {type(node).__name__} follows "
                "it; pass portable=False to write the pooling as AvgPool2d"
            )
        if name in self.nodes:
            raise NIRExportError(f"module path {name!r} appears twice; NIR node names must be unique")
        if len(set(signal.sources)) != len(signal.sources):
            raise NIRExportError(f"{name}: the same node feeds it twice ({signal.sources}); NIR edges are unique")
        self.nodes[name] = node
        self.edges.extend((src, name) for src in signal.sources)
        return _Signal((name,), tuple(int(s) for s in shape), pending)

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
            if res.pending != 1.0 or short.pending != 1.0:
                raise NIRExportError(f"{path}: a pooling ends a residual branch; NIR export needs a synaptic layer")
            return self.walk(module.lif, _join(path, "lif"), _Signal(res.sources + short.sources, res.shape))
        if type(module) is MembraneBlock:
            # forward: h + residual(lif(h)), or projection(lif(h)) + residual(lif(h)): the potential stream h is
            # the set of nodes whose outputs sum into the next LIF, and the block adds its branch's node(s) to it
            spikes = self.walk(module.lif, _join(path, "lif"), signal)
            res = self.walk(module.residual, _join(path, "residual"), spikes)
            short = self.walk(module.shortcut, _join(path, "shortcut"), spikes) if len(module.shortcut) else signal
            if res.shape != short.shape:
                raise NIRExportError(f"{path}: residual branch shape {res.shape} != shortcut shape {short.shape}")
            if res.pending != 1.0 or short.pending != 1.0:
                raise NIRExportError(f"{path}: a pooling ends a residual branch; NIR export needs a synaptic layer")
            return _Signal(res.sources + short.sources, res.shape)
        if type(module) in (nn.Sequential, TdBNLIF, AnalogEncoder):  # children in order (a unit: in eval mode)
            for name, child in module.named_children():
                signal = self.walk(child, _join(path, name), signal)
            return signal
        if isinstance(module, nn.Identity):
            return signal
        if isinstance(module, LIF):
            return self._lif(module, path, signal)
        if isinstance(module, Flatten):
            node = self.nir.Flatten(input_type={"input": np.array(signal.shape)}, start_dim=0, end_dim=-1)
            return self.add(path, node, signal, (math.prod(signal.shape),), pending=signal.pending)
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
        if self.unit_r and p.r != 1.0:  # r = 1; the gain 1 / (1 - tau) moves into the layers that feed the LIF
            signal = _Signal(tuple(self._gain_source(src, p.r, path) for src in signal.sources), signal.shape,
                             signal.pending)
            p = NIRLIFParams(tau=p.tau, r=1.0, v_leak=p.v_leak, v_threshold=p.v_threshold, v_reset=p.v_reset)
        full = lambda v: np.full(signal.shape, v, dtype=np.float64)  # noqa: E731 - NIR stores per-neuron arrays
        node = self.nir.LIF(
            tau=full(p.tau), r=full(p.r), v_leak=full(p.v_leak), v_threshold=full(p.v_threshold),
            v_reset=full(p.v_reset),
        )
        self.lifs[path] = (float(lif.tau), float(lif.v_th))
        return self.add(path, node, signal, signal.shape)

    def _gain_source(self, src: str, gain: float, lif_path: str) -> str:
        """Multiply the weights and bias of synaptic node ``src`` by ``gain``; returns the node now feeding the LIF.

        A source that is not a synaptic layer of its own (the block input on an identity shortcut without tdBN)
        gets a diagonal 1x1 ``Conv2d`` (``Affine``) of weight ``gain`` inserted, named ``<lif path>.gain.<src>``.
        A source that feeds several LIFs (a membrane residual stream) is scaled once, for the first; a later LIF
        of the same gain reads it as it is, one of another gain through a diagonal layer of the ratio.
        """
        if src in self.gained:
            if self.gained[src] == gain:
                return src
            gain = gain / self.gained[src]
        elif src in self.exact and not any(s == src for s, _ in self.edges):
            self.scale_synapse(src, gain)
            self.gained[src] = gain
            return src
        shape = self._shape_of(src)
        name = f"{lif_path}.gain.{src}"
        eye = np.eye(shape[0], dtype=np.float64) * gain
        if len(shape) == 3:
            node = self.nir.Conv2d(input_shape=shape[1:], weight=eye[:, :, None, None].astype(np.float32), stride=1,
                                   padding=0, dilation=1, groups=1, bias=np.zeros(shape[0], np.float32))
            self.exact[name] = (eye[:, :, None, None], np.zeros(shape[0]))
        else:
            node = self.nir.Affine(weight=eye.astype(np.float32), bias=np.zeros(shape[0], np.float32))
            self.exact[name] = (eye, np.zeros(shape[0]))
        self.add(name, node, _Signal((src,), shape), shape)
        return name

    def _shape_of(self, name: str) -> tuple[int, ...]:
        node = self.nodes[name]
        types = node.output_type if name != INPUT else node.input_type
        return tuple(int(v) for v in np.asarray(next(iter(types.values()))).reshape(-1))

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
            self.exact[path] = (_np64(_dense_weight(layer)) * signal.pending, _np64(bias))
            self.folds[path] = signal.pending
        elif isinstance(layer, nn.Linear):
            if layer.bias is None:
                node = self.nir.Linear(weight=_np(layer.weight))
            else:
                node = self.nir.Affine(weight=_np(layer.weight), bias=_np(layer.bias))
            self.exact[path] = (_np64(layer.weight) * signal.pending,
                                None if layer.bias is None else _np64(layer.bias))
            self.folds[path] = signal.pending
        elif self.sum_pool and isinstance(layer, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            if signal.pending != 1.0:
                raise NIRExportError(f"{path}: two poolings in a row; put a synaptic layer between them")
            kernel, stride, padding = self._pool_window(layer, path, signal.shape)
            node = _sum_pool(self.nir, signal.shape, kernel, stride, padding)
            return self.add(path, node, signal, out_shape, pending=1.0 / math.prod(kernel))
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

    def _pool_window(self, layer: nn.Module, path: str, shape: tuple[int, ...]) -> tuple[tuple, tuple, tuple]:
        """``(kernel, stride, padding)`` of an average pooling that a sum pooling + ``1/k^2`` reproduces."""
        if isinstance(layer, nn.AdaptiveAvgPool2d):
            node = self._adaptive_pool(layer, path, shape)
            return tuple(node.kernel_size), tuple(node.stride), (0, 0)
        kernel, stride, padding = (_pair(v) for v in (layer.kernel_size, layer.stride, layer.padding))
        if layer.ceil_mode or not layer.count_include_pad and any(padding) or layer.divisor_override:
            raise NIRExportError(
                f"{path}: AvgPool2d(ceil_mode={layer.ceil_mode}, count_include_pad={layer.count_include_pad}, "
                f"divisor_override={layer.divisor_override}) divides some windows by another count than k^2; "
                "only the plain average pooling can be exported"
            )
        return kernel, stride, padding

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


def _np64(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy().copy()


def _sum_pool(nir: Any, shape: tuple[int, ...], kernel: tuple, stride: tuple, padding: tuple) -> Any:
    """A sum pooling over ``kernel`` windows of each channel, as a ``nir.Conv2d`` with weights 0/1 and no bias.

    Every consumer runs ``Conv2d``; ``AvgPool2d`` and ``SumPool2d`` are each missing from some of them.
    """
    C = shape[0]
    weight = np.zeros((C, C, *kernel), dtype=np.float32)
    weight[np.arange(C), np.arange(C)] = 1.0
    return nir.Conv2d(input_shape=shape[1:], weight=weight, stride=tuple(stride), padding=tuple(padding),
                      dilation=(1, 1), groups=1, bias=np.zeros(C, dtype=np.float32))


@torch.no_grad()
def _shape_after(layer: nn.Module, shape: tuple[int, ...], path: str) -> tuple[int, ...]:
    """Per-sample output shape of a stateless layer, by running it on one zero sample."""
    p = next(layer.parameters(), None)
    x = torch.zeros(1, *shape, dtype=p.dtype if p is not None else torch.float32)
    try:
        return tuple(layer(x).shape[1:])
    except RuntimeError as e:
        raise NIRExportError(f"{path}: {type(layer).__name__} does not accept a sample of shape {shape}: {e}") from e


def to_nir(
    model: nn.Module, *, input_shape: Sequence[int], dt: float = DEFAULT_DT, portable: bool = True
) -> "nir_lib.NIRGraph":
    """Fuse ``model`` (Eq. 9-10) and describe one time step of it as a NIR graph.

    Args:
        model: a ``SpikingNet`` (any registered model) or a module built from the supported layers, in eval mode.
        input_shape: per-sample input shape without time and batch axes, ``(C, H, W)``.
        dt: the time step (seconds) a simulator must use; every LIF is mapped so that forward Euler with this
            step reproduces Eq. 1-3 exactly (``tdbn.export.neuron_map``).
        portable: write the form every consumer reads the same (module docstring): LIF ``r = 1`` with the gain
            folded into the weights, pooling as a sum-pooling ``Conv2d``. ``False``: ``r = 1 / (1 - tau)`` and
            ``AvgPool2d``, which ``from_nir`` runs bit-identically to the fused model.

    Returns:
        a ``nir.NIRGraph`` with ``"input"`` and ``"output"`` nodes and metadata ``dt``, ``timesteps`` (of a
        ``SpikingNet``), ``readout`` and ``portable``.

    Raises:
        NIRExportError (a ``ValueError``): model in training mode, or a module NIR cannot express (named by path).

    Example:
        >>> import tdbn
        >>> net = tdbn.models.create("resnet19", num_classes=10, width=1 / 16, timesteps=2, input_size=8).eval()
        >>> graph = to_nir(net, input_shape=(3, 8, 8))
        >>> [graph.nodes[n].__class__.__name__ for n in ("encoder.conv", "encoder.lif", "head.pool", "decoder")]
        ['Conv2d', 'LIF', 'Conv2d', 'Affine']
        >>> float(graph.nodes["encoder.lif"].r[0, 0, 0]), float(graph.nodes["encoder.lif"].v_threshold[0, 0, 0])
        (1.0, 0.5)
        >>> sorted(src for src, dst in graph.edges if dst == "body.stage1.0.lif")  # the residual sum: two edges
        ['body.stage1.0.residual.unit2.conv', 'body.stage1.0.shortcut.bn']
    """
    builder = _build(model, input_shape, dt, sum_pool=portable, unit_r=portable)
    builder.finish()
    return builder.graph(portable=int(portable), timesteps=getattr(model, "timesteps", None))


def _build(model: nn.Module, input_shape: Sequence[int], dt: float, *, sum_pool: bool, unit_r: bool) -> _Builder:
    """Check the arguments, fuse ``model`` and walk it; the weights are not yet written (``_Builder.finish``)."""
    nir = import_nir()
    if not dt > 0:
        raise NIRExportError(f"dt must be > 0 seconds, got {dt}")
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
    builder = _Builder(nir, float(dt), sum_pool=sum_pool, unit_r=unit_r)
    builder.nodes[INPUT] = nir.Input(input_type={"input": np.array(shape)})
    out = builder.walk(fused, "", _Signal((INPUT,), shape))
    builder.add(OUTPUT, nir.Output(output_type={"output": np.array(out.shape)}), out, out.shape)
    return builder


def write_nir(
    model: nn.Module, path: str | Path, *, input_shape: Sequence[int], dt: float = DEFAULT_DT, portable: bool = True
) -> "nir_lib.NIRGraph":
    """``to_nir`` then ``nir.write`` to ``path`` (an HDF5 file, by convention ``*.nir``); returns the graph."""
    graph = to_nir(model, input_shape=input_shape, dt=dt, portable=portable)
    return write_graph(graph, path)


def write_graph(graph: Any, path: str | Path) -> Any:
    """``nir.write(path, graph)`` after checking that the folder exists; returns ``graph``."""
    nir = import_nir()
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    nir.write(str(path), graph)
    return graph
