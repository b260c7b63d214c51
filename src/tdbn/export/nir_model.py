"""Read a NIR graph back into a runnable network of tdbn layers: ``from_nir(path)``.

The graph becomes a :class:`NIRNet`, a small executor over time-first tensors ``[T, N, ...]``: each NIR node is a
tdbn layer (``TimeDistributed(Conv2d / Linear / AvgPool2d / Flatten)``, ``LIF``), the nodes run in topological
order, and a node with several incoming edges receives their sum (a residual addition). The same code path as
the exported model runs at every node, so a round trip reproduces every layer's spikes exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..layers.neuron import LIF
from ..layers.time import TimeDistributed
from .neuron_map import NIRLIFParams, nir_to_scaled_lif
from .nir import INPUT, OUTPUT, import_nir

SUPPORTED_NODES = ("Input", "Output", "Conv2d", "Affine", "Linear", "AvgPool2d", "Flatten", "LIF")


class NIRNet(nn.Module):
    """A NIR graph as a tdbn network over ``[T, N, ...]``.

    ``forward_nodes(x)`` returns every node's output (spikes of every LIF node), ``forward_steps(x)`` the output
    node at every step ``[T, N, K]``, ``forward(x)`` its mean over time (Eq. 11), like ``SpikingNet``.

    Input: frames ``[T, N, *input_shape]``, or static samples ``[N, *input_shape]``, which are repeated over
    ``timesteps`` steps. As in ``SpikingNet``, a stateless layer that sees a static tensor runs once and the result
    is repeated when it reaches a neuron: identical values, T times fewer operations.
    """

    def __init__(
        self,
        layers: dict[str, nn.Module],
        inputs: dict[str, list[str]],
        *,
        input_shape: tuple[int, ...],
        output: str,
        timesteps: int | None,
    ):
        super().__init__()
        self.names = list(layers)  # topological order
        self.layers = nn.ModuleList(layers.values())
        self.inputs = {name: list(srcs) for name, srcs in inputs.items()}
        self.input_shape = tuple(input_shape)
        self.output = output
        self.timesteps = timesteps

    def _check(self, x: torch.Tensor) -> bool:
        """True for static samples ``[N, ...]``, False for frames ``[T, N, ...]``."""
        nd = len(self.input_shape)
        if x.dim() == nd + 2 and tuple(x.shape[2:]) == self.input_shape:
            return False
        if x.dim() == nd + 1 and tuple(x.shape[1:]) == self.input_shape:
            if self.timesteps is None:
                raise ValueError(
                    "static input needs the number of time steps: the graph records none; pass timesteps= to "
                    "from_nir, or feed frames [T, N, ...]"
                )
            return True
        raise ValueError(
            f"expected frames [T, N, {', '.join(map(str, self.input_shape))}] or static samples "
            f"[N, {', '.join(map(str, self.input_shape))}], got shape {tuple(x.shape)}"
        )

    def forward_nodes(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every node's output ``[T, N, ...]``, keyed by node name (the input node included)."""
        static = {INPUT: self._check(x)}
        values: dict[str, torch.Tensor] = {INPUT: x}
        T = self.timesteps
        for name, layer in zip(self.names, self.layers):
            srcs = self.inputs[name]
            is_static = all(static[s] for s in srcs)
            parts = [values[s] if is_static or not static[s] else _repeat(values[s], T) for s in srcs]
            total = parts[0]
            for p in parts[1:]:
                total = total + p  # NIR sums the inputs of a node
            if isinstance(layer, LIF) and is_static:
                total, is_static = _repeat(total, T), False
            if is_static and isinstance(layer, TimeDistributed):
                values[name] = layer.module(total)  # the stateless layer once, on [N, ...]
            else:
                values[name] = layer(total)
            static[name] = is_static
        return {n: _repeat(v, T) if static[n] else v for n, v in values.items()}

    def forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        """The output node at every step, ``[T, N, K]``."""
        return self.forward_nodes(x)[self.output]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_steps(x).mean(0)  # Eq. 11: Q = (1/T) sum_t M o[t]


def _repeat(x: torch.Tensor, T: int | None) -> torch.Tensor:
    return x.unsqueeze(0).expand(T, *x.shape)


def read_nir_file(path: str | Path) -> Any:
    """``nir.read(path)`` with errors that name the file."""
    nir = import_nir()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NIR file {path} does not exist")
    try:
        return nir.read(str(path))
    except Exception as e:  # h5py raises OSError, nir raises KeyError/ValueError/AssertionError on bad content
        raise ValueError(
            f"cannot read a NIR graph from {path}: {type(e).__name__}: {e}. Expected an HDF5 file written by "
            "nir.write (e.g. by `tdbn export CHECKPOINT --format nir OUT.nir`)"
        ) from e


def from_nir(source: Any, *, dt: float | None = None, timesteps: int | None = None) -> NIRNet:
    """Build a runnable :class:`NIRNet` from a NIR file (or a ``nir.NIRGraph``).

    Args:
        source: path of a ``.nir`` file, or a ``nir.NIRGraph``.
        dt: the simulation time step in seconds; by default the ``dt`` recorded in the graph's metadata (a graph
            from another tool that records none needs it here). Each LIF node becomes ``LIF(tau=1 - dt/tau_m)``.
        timesteps: steps over which a static input is repeated; by default the graph's ``timesteps`` metadata.

    Raises:
        FileNotFoundError / ValueError naming the file when it is missing or not a NIR graph; ValueError naming
        the node for a node type or parameter tdbn's layers cannot express.
    """
    nir = import_nir()
    graph = read_nir_file(source) if isinstance(source, (str, Path)) else source
    if not isinstance(graph, nir.NIRGraph):
        raise ValueError(f"from_nir expects a .nir path or a nir.NIRGraph, got {type(source).__name__}")
    meta = {k: _meta_value(v) for k, v in (graph.metadata or {}).items()}
    dt = float(meta["dt"]) if dt is None and "dt" in meta else dt
    if timesteps is None and "timesteps" in meta:
        timesteps = int(meta["timesteps"])
    nodes = graph.nodes
    inputs_, outputs = _single(graph, nir.Input, "Input"), _single(graph, nir.Output, "Output")
    order = _topological_order(nodes, graph.edges)
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    for src, dst in graph.edges:
        preds[dst].append(src)
    rename = {inputs_: INPUT, outputs: OUTPUT}  # the executor calls them "input" / "output"
    clash = sorted(n for n in nodes if n in (INPUT, OUTPUT) and n not in (inputs_, outputs))
    if clash:
        raise ValueError(f"node(s) {clash} are named like the graph's Input/Output but are not; rename them")
    layers: dict[str, nn.Module] = {}
    srcs: dict[str, list[str]] = {}
    for name in order:
        node = nodes[name]
        if name == inputs_:
            continue
        if not preds[name]:
            raise ValueError(f"node {name!r} has no incoming edge; every node except the Input needs one")
        key = rename.get(name, name)
        srcs[key] = [rename.get(s, s) for s in preds[name]]
        layers[key] = nn.Identity() if name == outputs else _layer(nir, name, node, dt)
    input_shape = tuple(int(s) for s in np.asarray(nodes[inputs_].input_type["input"]).reshape(-1))
    return NIRNet(layers, srcs, input_shape=input_shape, output=OUTPUT, timesteps=timesteps).eval()


def _meta_value(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf8")
    if isinstance(v, np.ndarray) and v.shape == ():
        return v.item()
    return v


def _single(graph: Any, cls: type, what: str) -> str:
    names = [n for n, node in graph.nodes.items() if isinstance(node, cls)]
    if len(names) != 1:
        raise ValueError(f"the graph has {len(names)} {what} nodes ({names}); tdbn runs graphs with exactly one")
    return names[0]


def _topological_order(nodes: dict[str, Any], edges: list[tuple[str, str]]) -> list[str]:
    indeg = {n: 0 for n in nodes}
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for src, dst in edges:
        if src not in nodes or dst not in nodes:
            raise ValueError(f"edge ({src!r}, {dst!r}) names a node that is not in the graph")
        indeg[dst] += 1
        succ[src].append(dst)
    ready = [n for n in nodes if indeg[n] == 0]
    order: list[str] = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for m in succ[n]:
            indeg[m] -= 1
            if indeg[m] == 0:
                ready.append(m)
    if len(order) != len(nodes):
        cyclic = sorted(n for n in nodes if indeg[n] > 0)
        raise ValueError(f"the graph has a cycle through {cyclic}; tdbn runs feed-forward graphs only (no recurrence)")
    return order


def _uniform(name: str, field: str, a: Any) -> float:
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0 or not np.all(a == a.reshape(-1)[0]):
        raise ValueError(f"LIF node {name!r}: {field} differs between neurons; tdbn's LIF has one value per layer")
    return float(a.reshape(-1)[0])


def _tensor(a: Any) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float32).copy())


def _layer(nir: Any, name: str, node: Any, dt: float | None) -> nn.Module:
    if isinstance(node, nir.Conv2d):
        if isinstance(node.padding, str):
            padding: Any = node.padding
        else:
            padding = tuple(int(p) for p in np.broadcast_to(np.asarray(node.padding), (2,)))
        w = _tensor(node.weight)
        conv = nn.Conv2d(
            w.shape[1] * int(node.groups), w.shape[0], tuple(w.shape[2:]),
            stride=tuple(int(s) for s in np.broadcast_to(np.asarray(node.stride), (2,))), padding=padding,
            dilation=tuple(int(d) for d in np.broadcast_to(np.asarray(node.dilation), (2,))), groups=int(node.groups),
            bias=True,
        )
        with torch.no_grad():
            conv.weight.copy_(w)
            conv.bias.copy_(_tensor(node.bias).reshape(-1))
        return TimeDistributed(conv)
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = _tensor(node.weight)
        if w.dim() != 2:
            raise ValueError(f"node {name!r}: {type(node).__name__} weight of shape {tuple(w.shape)}; expected 2-d")
        has_bias = isinstance(node, nir.Affine)
        fc = nn.Linear(w.shape[1], w.shape[0], bias=has_bias)
        with torch.no_grad():
            fc.weight.copy_(w)
            if has_bias:
                fc.bias.copy_(_tensor(node.bias).reshape(-1))
        return TimeDistributed(fc)
    if isinstance(node, nir.AvgPool2d):
        k, s, p = (tuple(int(v) for v in np.broadcast_to(np.asarray(a), (2,))) for a in
                   (node.kernel_size, node.stride, node.padding))
        return TimeDistributed(nn.AvgPool2d(k, stride=s, padding=p))
    if isinstance(node, nir.Flatten):
        start, end = int(node.start_dim), int(node.end_dim)
        # NIR dims count from the first per-sample axis; TimeDistributed puts one batch axis [T*N] in front
        return TimeDistributed(nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end))
    if isinstance(node, nir.LIF):
        if dt is None:
            raise ValueError(
                f"LIF node {name!r}: the graph records no time step dt; pass from_nir(..., dt=SECONDS), the step "
                "the graph was written for"
            )
        params = NIRLIFParams(
            tau=_uniform(name, "tau", node.tau), r=_uniform(name, "r", node.r),
            v_leak=_uniform(name, "v_leak", node.v_leak), v_threshold=_uniform(name, "v_threshold", node.v_threshold),
            v_reset=_uniform(name, "v_reset", node.v_reset),
        )
        tau, v_th, gain = nir_to_scaled_lif(params, dt=dt, where=f"LIF node {name!r}")
        return LIF(tau=tau, v_th=v_th if gain == 1.0 else v_th / gain)  # the portable form has gain 1 - tau
    raise ValueError(
        f"node {name!r} is a nir.{type(node).__name__}, which tdbn's layers cannot run; supported node types: "
        f"{', '.join(SUPPORTED_NODES)}"
    )

