"""Integer deployment: the fused network (Eq. 9-10) with K-bit integer weights, integer biases and thresholds.

``quantize(model, bits=K, input_shape=..., input_scale=...)`` walks the fused network as the NIR exporter does
(pooling as a 0/1 sum-pooling convolution, its ``1/k^2`` folded into the next weights) and turns every synaptic
layer into integers:

- **Scales.** The input of a LIF layer is ``u = sum_src W_src x_src + b``. Its sources (the two branches at a
  residual junction, otherwise the one conv / fc) share one scale ``s``, chosen so that the threshold is an
  integer: ``Theta = round(q_max * v_th / max|W|)`` (at least 1) and ``s = v_th / Theta``, ``q_max = 2^(K-1) - 1``;
  then ``W_int = clamp(round(W / s), -q_max, q_max)`` (rounding Theta up clips the largest weights by at most
  ``1 / (2 Theta)``; rounding it down would waste up to half the range when Theta is small),
  ``b_int = round(b / s)``, and ``u > v_th`` becomes ``U > Theta`` on the integer membrane ``U = u / s``.
  ``per_channel=True`` gives every output channel its own ``s`` and ``Theta`` (finer weights, but thresholds
  that differ between neurons, which snnTorch, SpikingJelly and ``from_nir`` refuse). The decoding layer (no
  neuron) gets ``s = max|W| / q_max``.
- **Input.** Spikes and sum-pooled spike counts are integers already. The real-valued input of the encoding layer
  is quantized to ``input_bits`` (default 8): ``X = clamp(round(x / input_scale), -q_in, q_in)``,
  ``q_in = 2^(input_bits-1) - 1``; event frames (integer counts) use ``input_scale = 1`` and must be integer-valued.
- **Decay.** ``tau`` must be a dyadic fraction ``m / 2^q`` (0, 0.25, 0.5, 0.75, 0.125, ...): the membrane is a
  fixed-point integer with ``F = q (T - 1)`` fraction bits, so ``U * m >> q`` is exact at every one of the ``T``
  steps (no truncation): the integer network computes exactly what the real-valued network with the rounded
  weights computes, and any exact consumer of the same graph (NIR, float arithmetic within its mantissa) gives
  bit-identical spikes. ``tau = 0.25`` is a shift by 2 bits per step. Other decays (0.3, ...) are refused: no shift
  is exact for them, and a truncating shift gives another network than the one written to NIR.
- **Reset.** Hard reset to 0, strict threshold, as Eq. 1-3.

:class:`IntegerNet` holds the network. :meth:`IntegerNet.forward_nodes` is the simulation (int64 tensors only, no
float arithmetic), the reference; :meth:`IntegerNet.forward_nodes_fast` and the scores (``net(x)``) compute the same
integers bit for bit on float32 kernels wherever a bound on the partial sums proves float32 exact, on the int64 path
elsewhere (:mod:`tdbn.export.quant_fast`). :meth:`IntegerNet.to_nir` writes the same network as a NIR graph with
integer-valued weights (portable form: ``r = 1``, so the consumer's membrane is ``(1 - tau) U``), its thresholds
offset by half a membrane quantum (``(1 - tau) (Theta + 2^-(F+1))``) so that simulators that fire at ``>=`` and at
``>`` decide alike.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import torch
from torch import nn

from .int_ops import int_conv2d, node_input
from .neuron_map import DEFAULT_DT, lif_to_nir
from .nir import INPUT, OUTPUT, NIRExportError, _build, import_nir

INPUT_BITS = 8  # default width of the quantized real-valued input
MAX_SHIFT = 16  # largest q of a dyadic decay m / 2^q


def dyadic(tau: float) -> tuple[int, int]:
    """``(m, q)`` with ``tau == m / 2^q`` exactly (``q`` smallest); ``ValueError`` if ``tau`` is not dyadic.

    Example:
        >>> dyadic(0.25), dyadic(0.75), dyadic(0.0)
        ((1, 2), (3, 2), (0, 0))
    """
    frac = Fraction(float(tau))
    q = frac.denominator.bit_length() - 1
    if frac.denominator != 1 << q or q > MAX_SHIFT:
        near = ", ".join(f"{k / 2 ** 3:g}" for k in range(8))
        raise ValueError(
            f"tau={tau} is not m / 2^q for q <= {MAX_SHIFT}: integer deployment needs an exact shift for the decay "
            f"(Eq. 1); train with a dyadic tau such as {near} (0.25 is the paper's)"
        )
    return frac.numerator, q


@dataclass
class IntNode:
    """One node of the integer network: ``kind`` in input / conv / fc / flatten / lif / output."""

    kind: str
    sources: list[str]
    weight: torch.Tensor | None = None  # int64 [K, C, kh, kw] or [K, F]
    bias: torch.Tensor | None = None  # int64 [K]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    theta: torch.Tensor | None = None  # int64 threshold, [] or [C] (per channel)
    decay: tuple[int, int] = (0, 0)  # (m, q): tau = m / 2^q
    tau: float = 0.0
    scale: float = 1.0  # real value of one integer unit at this node's output (fc / conv: of its output)
    nir: dict[str, Any] = field(default_factory=dict)  # what to_nir needs (conv parameters, shapes)
    # a synaptic layer of the model: its real weight is the module's (dense) weight x fold (a pooling's 1/k^2) x unit
    # (the real value of one integer unit of its input), in that order, in float64 (what tdbn.export.qat recomputes)
    fold: float = 1.0
    unit: float = 1.0


class IntegerNet:
    """The quantized network (module docstring). Time-first ``[T, N, ...]``.

    ``forward_nodes``: the int64 simulation; ``forward_nodes_fast`` and ``scores`` (``net(x)``): the same integers on
    float32 kernels where provably exact (``plan()`` says which layers; ``kernel_counts`` counts the calls per
    layer and kernel).
    """

    def __init__(self, nodes: dict[str, IntNode], *, input_shape: tuple[int, ...], input_scale: float,
                 timesteps: int | None, bits: int, per_channel: bool, input_bits: int = INPUT_BITS):
        self.nodes = nodes  # topological order
        self.input_shape = input_shape
        self.input_scale = float(input_scale)
        self.timesteps = timesteps
        self.bits = bits
        self.per_channel = per_channel
        self.input_bits = input_bits
        # the fast path (tdbn.export.quant_fast): calls per (layer, "float32" | "int64"), and its caches
        self.kernel_counts: Counter[tuple[str, str]] = Counter()
        self._fast_plans: dict[tuple, dict[str, Any]] = {}
        self._fast_layers: dict[str, tuple] = {}
        self._fast_warned: set[str] = set()

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Real input -> int64: ``clamp(round(x / input_scale), -q_in, q_in)``; event counts must be integers."""
        if not x.is_floating_point():
            return x.to(torch.int64)
        if self.input_scale == 1.0:
            if not torch.equal(x, x.round()):
                raise ValueError("this integer network takes integer-valued inputs (event counts, input_scale 1); "
                                 "quantize real-valued inputs with an input_scale (quantize(..., input_scale=...))")
            return x.to(torch.int64)
        q = 2 ** (self.input_bits - 1) - 1
        return torch.clamp(torch.round(x / self.input_scale), -q, q).to(torch.int64)

    @torch.no_grad()
    def forward_nodes(self, x: torch.Tensor, *, ties: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
        """Every node's int64 output ``[T, N, ...]`` (LIF: spikes 0/1), for frames ``[T, N, ...]`` or static
        samples ``[N, ...]`` (repeated over ``timesteps``; the stateless layers before the first LIF run once):
        the int64 simulation, the reference. ``ties``, if given, receives per LIF the number of neuron-steps whose
        membrane lands exactly on its threshold (``U = Theta``: where firing at ``>=`` would differ from ``>``)."""
        X = self.quantize_input(x)
        static = X.dim() == len(self.input_shape) + 1
        if static and self.timesteps is None:
            raise ValueError("static input needs timesteps; feed frames [T, N, ...]")
        T = self.timesteps if static else X.shape[0]
        values: dict[str, torch.Tensor] = {INPUT: X if static else X.flatten(0, 1)}
        is_static = {INPUT: static}
        N = X.shape[0] if static else X.shape[1]
        for name, node in self.nodes.items():
            if node.kind == "input":
                continue
            total, st = node_input(values, is_static, node.sources, T)
            if node.kind == "lif":
                if st:
                    total, st = total.repeat(T, *[1] * (total.dim() - 1)), False
                on = [] if ties is not None else None
                values[name] = self._lif(node, total.view(T, N, *total.shape[1:]), on_threshold=on).flatten(0, 1)
                if ties is not None:
                    ties[name] = sum(on)
            elif node.kind == "conv":
                values[name] = int_conv2d(total, node.weight, node.stride, node.padding) + node.bias.view(1, -1, 1, 1)
            elif node.kind == "fc":
                values[name] = total @ node.weight.T + node.bias
            elif node.kind == "flatten":
                values[name] = total.flatten(1)
            else:  # output
                values[name] = total
            is_static[name] = st
        return {n: (v.unsqueeze(0).expand(T, *v.shape) if is_static[n] else v.view(T, N, *v.shape[1:]))
                for n, v in values.items()}

    @staticmethod
    def _lif(node: IntNode, current: torch.Tensor, *, on_threshold: list[int] | None = None) -> torch.Tensor:
        """Eq. 1-3 on integers: ``U = (U * m >> q) + (I << F)``, spike ``U > Theta << F``, reset to 0;
        ``on_threshold`` receives, per step, the count of membranes equal to the threshold."""
        m, q = node.decay
        T = current.shape[0]
        frac = q * (T - 1)  # fraction bits that keep every shift exact over T steps
        theta = node.theta if node.theta.dim() == 0 else node.theta.view(-1, *[1] * (current.dim() - 3))
        peak = int(current.abs().max()) * (T if m else 1)
        if peak.bit_length() + frac > 62:
            raise ValueError(f"the integer membrane needs {peak.bit_length() + frac} bits for T={T} steps with "
                             f"decay {m}/2^{q} (> 62 of int64); use fewer steps or a decay with a smaller q")
        theta = theta << frac
        U = torch.zeros_like(current[0])
        out = []
        low = (1 << q) - 1
        for t in range(T):
            decayed = U * m
            if q and bool((decayed & low).any()):  # cannot happen with F = q (T - 1); guards the claim of exactness
                raise AssertionError(f"inexact decay shift at step {t}")
            U = (decayed >> q) + (current[t] << frac)
            spikes = U > theta
            if on_threshold is not None:
                on_threshold.append(int((U == theta).sum()))
            U = torch.where(spikes, torch.zeros_like(U), U)
            out.append(spikes.to(torch.int64))
        return torch.stack(out)

    def forward_nodes_fast(self, x: torch.Tensor, *, keep: Collection[str] | None = None) -> dict[str, torch.Tensor]:
        """:meth:`forward_nodes` bit for bit (int64 outputs of the nodes in ``keep``, default all), computed on
        float32 kernels in every layer where a bound on its partial sums proves float32 exact, and on the int64
        path elsewhere (said once in a warning naming the layer): :mod:`tdbn.export.quant_fast`."""
        from .quant_fast import forward_fast

        return forward_fast(self, x, keep=keep)

    def plan(self, *, input_range: int | None = None, timesteps: int | None = None) -> dict[str, Any]:
        """Which kernel each conv / fc / LIF layer runs on (``quant_fast.LayerPlan``: ``"float32"`` or ``"int64"``,
        and the bound that decided it) for inputs of magnitude <= ``input_range`` (default: the quantized real
        input's ``2^(input_bits-1) - 1``) over ``timesteps`` steps (default: the network's)."""
        from .quant_fast import plan

        r = 2 ** (self.input_bits - 1) - 1 if input_range is None else input_range
        T = self.timesteps if timesteps is None else timesteps
        if T is None:
            raise ValueError("this network records no timesteps: pass timesteps=T")
        return plan(self, input_range=r, timesteps=T)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``[N, K]`` in real units: the decoding layer's integer output x its scale, averaged over
        time (Eq. 11); the arg-max is that of the integer sum. Computed by :meth:`forward_nodes_fast` (bit for bit
        the int64 simulation's integers)."""
        out = self.forward_nodes_fast(x, keep=(OUTPUT,))[OUTPUT]
        (dec,) = self.nodes[OUTPUT].sources
        return out.sum(0).to(torch.float64) * (self.nodes[dec].scale / out.shape[0])

    __call__ = scores

    def to_nir(self, *, dt: float = DEFAULT_DT, portable: bool = True, timesteps: int | None = None) -> Any:
        """The same integer network as a NIR graph with integer-valued weights and biases (float32 arrays).

        ``portable``: LIF ``r = 1`` and ``v_threshold = (1 - tau) (Theta + 2^-(F+1))`` (the consumer's membrane is
        ``(1 - tau) U``); else ``r = 1 / (1 - tau)`` and ``v_threshold = Theta + 2^-(F+1)``. Over ``T`` steps the
        membrane ``U`` is a multiple of ``2^-F``, ``F = q (T - 1)``, so it never lies within ``2^-(F+1)`` of the
        written threshold: a simulator that fires at ``v >= v_threshold`` (SpikingJelly) decides exactly as one
        that fires at ``>`` (tdbn, snnTorch, Norse), which is ``U > Theta``. ``timesteps`` (default: the
        network's) is the ``T`` the offset holds for. The graph's input is the quantized input (metadata
        ``input_scale``: feed ``round(x / input_scale)``, clamped to +-(2^(input_bits-1) - 1)).
        """
        T = self.timesteps if timesteps is None else int(timesteps)
        if T is None or T < 1:
            raise NIRExportError("the NIR threshold offset depends on the number of steps run: pass timesteps=T")
        nir = import_nir()
        nodes: dict[str, Any] = {INPUT: nir.Input(input_type={"input": np.array(self.input_shape)})}
        edges: list[tuple[str, str]] = []
        f32 = lambda t: t.to(torch.float64).numpy().astype(np.float32)  # noqa: E731 - exact: |values| < 2^24
        for name, node in self.nodes.items():
            if node.kind == "input":
                continue
            edges.extend((s, name) for s in node.sources)
            if node.kind == "conv":
                nodes[name] = nir.Conv2d(input_shape=node.nir["input_hw"], weight=f32(node.weight),
                                         stride=node.stride, padding=node.padding, dilation=(1, 1), groups=1,
                                         bias=f32(node.bias))
            elif node.kind == "fc":
                nodes[name] = nir.Affine(weight=f32(node.weight), bias=f32(node.bias))
            elif node.kind == "flatten":
                nodes[name] = nir.Flatten(input_type={"input": np.array(node.nir["input_shape"])}, start_dim=0,
                                          end_dim=-1)
            elif node.kind == "lif":
                shape = node.nir["shape"]
                p = lif_to_nir(tau=node.tau, v_th=1.0, dt=dt)
                gain = 1.0 - node.tau if portable else 1.0
                theta = node.theta.to(torch.float64).numpy()
                theta = theta.reshape(-1, *[1] * (len(shape) - 1)) if theta.ndim else theta
                full = lambda v: np.broadcast_to(np.asarray(v, dtype=np.float64), shape).copy()  # noqa: E731
                nodes[name] = nir.LIF(tau=full(p.tau), r=full(1.0 if portable else p.r), v_leak=full(0.0),
                                      v_threshold=full(_tie_free_threshold(name, theta, gain, node.decay[1] * (T - 1))),
                                      v_reset=full(0.0))
            else:
                nodes[name] = nir.Output(output_type={"output": np.array(node.nir["shape"])})
        metadata = {"producer": "tdbn", "dt": float(dt), "portable": int(portable), "integer_bits": self.bits,
                    "input_scale": self.input_scale, "input_bits": self.input_bits,
                    "readout": "sum over time of the output (integer); "
                    f"x {self.nodes[self.nodes[OUTPUT].sources[0]].scale!r} / T gives Eq. 11's scores",
                    "threshold": "v_threshold = gain x (Theta + 2^-(F+1)), F = q (timesteps - 1), tau = m / 2^q: "
                    "membranes are multiples of gain x 2^-F, so firing at > and at >= decide alike",
                    "timesteps": T}
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def _tie_free_threshold(name: str, theta: np.ndarray, gain: float, frac: int) -> np.ndarray:
    """``gain (Theta + 2^-(frac+1))``, checked to lie strictly between the membranes ``gain Theta`` and
    ``gain (Theta + 2^-frac)`` in float32 too (the consumers' precision)."""
    value = gain * (theta + 2.0 ** -(frac + 1))
    lo, hi, v32 = (np.float32(gain * theta), np.float32(gain * (theta + 2.0 ** -frac)), np.float32(value))
    if not (np.all(lo < v32) and np.all(v32 < hi)):
        raise NIRExportError(f"{name}: the threshold {theta.max():g} with {frac} fraction bits of membrane has no "
                             "float32 value between two membrane levels; use fewer steps or fewer bits")
    return value


def _shape(nodes: dict[str, Any], name: str) -> tuple[int, ...]:
    node = nodes[name]
    types = node.input_type if name == INPUT else node.output_type
    return tuple(int(v) for v in np.asarray(next(iter(types.values()))).reshape(-1))


def _real(builder: Any, name: str, unit: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The float64 real weight (per unit of the layer's integer input) and bias of synaptic node ``name``."""
    w, b = builder.exact[name]
    return torch.from_numpy(w * unit), torch.from_numpy(b if b is not None else np.zeros(len(w)))


def lif_scale(weights: Sequence[np.ndarray], *, v_th: float, qmax: int, per_channel: bool
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(Theta, s)`` of a LIF fed by synaptic layers of real weights ``weights`` (each ``[K, ...]``, per unit of
    their integer input; the two branches of a residual junction share them): ``Theta = max(1, round(q_max v_th /
    max|W|))``, ``s = v_th / Theta``; per layer (scalars) or, with ``per_channel``, per output channel (``[K]``).

    Example:
        >>> theta, s = lif_scale([np.array([[0.2, -0.4]])], v_th=0.5, qmax=7, per_channel=False)
        >>> float(theta), float(s)   # round(7 * 0.5 / 0.4) = round(8.75)
        (9.0, 0.05555555555555555)
    """
    rows = [np.abs(w).reshape(len(w), -1) for w in weights]
    wmax = np.max(np.concatenate(rows, axis=1), axis=1) if per_channel else max(r.max() for r in rows)
    theta = np.maximum(np.rint(qmax * v_th / np.maximum(wmax, 1e-30)), 1.0)
    return theta, v_th / theta


def decoder_scale(weight: np.ndarray, *, qmax: int) -> float:
    """The decoding layer's scale (no neuron, so no threshold to make an integer): ``max|W| / q_max``."""
    return float(np.abs(weight).max()) / qmax or 1.0


def synapse_integers(weight: torch.Tensor, bias: torch.Tensor, scale: float | np.ndarray, *, qmax: int | None,
                     rounding: Any = torch.round) -> tuple[torch.Tensor, torch.Tensor]:
    """``(clamp(round(W / s), -q_max, q_max), round(b / s))`` in float64 (integer values), ``s`` a scalar or one
    value per output row; no clamp for ``qmax=None`` (the decoder, whose largest weight is ``q_max``).
    ``rounding``: ``torch.round`` (half to even, as ``np.rint``), or a straight-through rounding for training
    (:mod:`tdbn.export.qat`): the same values either way."""
    s = torch.as_tensor(np.asarray(scale, dtype=np.float64), device=weight.device)
    w = rounding(weight / (s.view(-1, *[1] * (weight.dim() - 1)) if s.dim() else s))
    if qmax is not None:
        w = torch.clamp(w, -qmax, qmax)
    return w, rounding(bias / s)


def quantize(
    model: nn.Module, *, bits: int, input_shape: Sequence[int], input_scale: float, per_channel: bool = False,
    input_bits: int = INPUT_BITS,
) -> IntegerNet:
    """The integer network of ``model`` (eval mode; fused here): module docstring.

    Args:
        bits: K, the signed width of every weight (2..16): ``|W_int| <= 2^(K-1) - 1``.
        input_shape: per-sample input shape ``(C, H, W)``.
        input_scale: real value of one unit of the quantized input (:func:`image_input_scale` for normalized
            images); 1 for integer-valued event frames.
        per_channel: one scale and threshold per output channel instead of per layer.
        input_bits: signed width of the quantized real-valued input (ignored for ``input_scale = 1``).
    """
    if not 2 <= int(bits) <= 16:
        raise ValueError(f"bits must be 2..16 (signed integer weights), got {bits}")
    if not input_scale > 0:
        raise ValueError(f"input_scale must be > 0, got {input_scale}")
    builder = _build(model, input_shape, 1.0, sum_pool=True, unit_r=False)
    qmax = 2 ** (int(bits) - 1) - 1
    g = builder.nodes
    preds: dict[str, list[str]] = {n: [] for n in g}
    succs: dict[str, list[str]] = {n: [] for n in g}
    for s, d in builder.edges:
        preds[d].append(s)
        succs[s].append(d)
    in_scale: dict[str, float] = {INPUT: float(input_scale)}  # real value of one integer unit of each node's output
    nodes: dict[str, IntNode] = {INPUT: IntNode("input", [])}
    nir = builder.nir
    for name in g:  # insertion order of the walk is topological
        if name == INPUT:
            continue
        node, srcs = g[name], preds[name]
        if isinstance(node, nir.LIF):
            tau, v_th = builder.lifs[name]
            syn = [s for s in srcs if s in builder.exact]
            if len(syn) != len(srcs):
                raise NIRExportError(f"{name}: a LIF fed by a non-synaptic node ({srcs}) cannot be quantized")
            real = {s: _real(builder, s, in_scale[preds[s][0]]) for s in syn}  # float64 (weight, bias)
            theta, scale = lif_scale([w.numpy() for w, _ in real.values()], v_th=v_th, qmax=qmax,
                                     per_channel=per_channel)  # scalars or [C]
            for s, (w, b) in real.items():
                w_int, b_int = synapse_integers(w, b, scale, qmax=qmax)
                nodes[s].weight, nodes[s].bias = w_int.to(torch.int64), b_int.to(torch.int64)
            nodes[name] = IntNode("lif", srcs, theta=torch.as_tensor(theta).to(torch.int64), decay=dyadic(tau),
                                  tau=tau, nir={"shape": _shape(g, name)})
            in_scale[name] = 1.0
        elif isinstance(node, (nir.Conv2d, nir.Affine, nir.Linear)):
            kind = "conv" if isinstance(node, nir.Conv2d) else "fc"
            extra = {}
            if kind == "conv":
                pad = node.padding
                if isinstance(pad, str):
                    raise NIRExportError(f"{name}: padding={pad!r}; integer export needs explicit padding")
                extra = dict(stride=tuple(int(v) for v in np.broadcast_to(node.stride, (2,))),
                             padding=tuple(int(v) for v in np.broadcast_to(pad, (2,))))
                if any(int(d) != 1 for d in np.broadcast_to(node.dilation, (2,))):
                    raise NIRExportError(f"{name}: dilated convolutions are not supported by the integer export")
            q = IntNode(kind, srcs, nir={"input_hw": _shape(g, srcs[0])[1:] if kind == "conv" else None}, **extra)
            nodes[name] = q
            if name not in builder.exact:  # a sum pooling: 0/1 weights, integer in, integer out
                q.weight = torch.from_numpy(np.asarray(node.weight)).to(torch.int64)
                q.bias = torch.zeros(q.weight.shape[0], dtype=torch.int64)
                in_scale[name] = in_scale[srcs[0]]
            elif not any(isinstance(g[d], nir.LIF) for d in succs[name]):  # the decoding layer: its own scale
                w, b = _real(builder, name, in_scale[srcs[0]])
                scale = decoder_scale(w.numpy(), qmax=qmax)
                w_int, b_int = synapse_integers(w, b, scale, qmax=None)
                q.weight, q.bias = w_int.to(torch.int64), b_int.to(torch.int64)
                q.scale = in_scale[name] = scale
            # else: weights set when the LIF it feeds is reached
            if name in builder.exact:
                q.fold, q.unit = builder.folds[name], in_scale[srcs[0]]
        elif isinstance(node, nir.Flatten):
            nodes[name] = IntNode("flatten", srcs, nir={"input_shape": _shape(g, srcs[0])})
            in_scale[name] = in_scale[srcs[0]]
        elif isinstance(node, nir.Output):
            nodes[name] = IntNode("output", srcs, nir={"shape": _shape(g, name)})
        else:
            raise NIRExportError(f"{name}: {type(node).__name__} has no integer form")
    for name, node in nodes.items():
        if node.kind in ("conv", "fc") and node.weight is None:
            raise NIRExportError(f"{name}: a synaptic layer that feeds neither a LIF nor the output")
    return IntegerNet(nodes, input_shape=tuple(int(s) for s in input_shape), input_scale=input_scale,
                      timesteps=getattr(model, "timesteps", None), bits=int(bits), per_channel=per_channel,
                      input_bits=int(input_bits))


def image_input_scale(mean: Sequence[float], std: Sequence[float], *, input_bits: int = INPUT_BITS) -> float:
    """``max|x| / (2^(input_bits-1) - 1)`` for images in [0, 1] normalized by ``(x - mean) / std``.

    Example:
        >>> round(image_input_scale([0.5], [0.25]) * 127, 6)   # x in [-2, 2], 8 bits
        2.0
    """
    reach = max(max(m, 1 - m) / s for m, s in zip(mean, std))
    return reach / (2 ** (input_bits - 1) - 1)


def max_membrane_bits(net: IntegerNet, x: torch.Tensor) -> int:
    """Bits a float consumer's mantissa needs for the integer membranes on ``x`` (float32 is exact up to 24)."""
    nodes = net.forward_nodes(x)
    T = next(iter(nodes.values())).shape[0]
    worst = 0
    for name, node in net.nodes.items():
        if node.kind != "lif":
            continue
        total = sum(nodes[s].to(torch.float64) for s in node.sources).abs().max().item()
        bound = total / (1 - node.tau) if node.tau < 1 else total * T  # geometric sum of the decayed inputs
        worst = max(worst, math.ceil(math.log2(max(bound, 1.0) + 1)) + node.decay[1] * (T - 1))
    return worst
