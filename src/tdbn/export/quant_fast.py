"""The integer network (:mod:`tdbn.export.quant`) computed on float32 kernels wherever that is provably exact.

Every value the integer network computes is an integer (a synaptic layer's output, a LIF's input current) or, inside
a LIF, a fixed-point number with ``F = q (T - 1)`` fraction bits (the membrane, decay ``tau = m / 2^q``). float32
holds every integer below ``2^24`` in magnitude exactly, and a sum or product of two exactly held numbers is exact
whenever the exact result is held exactly too. So a convolution or matrix product on integer-valued float32 tensors
gives the int64 result bit for bit as long as **every partial sum** of every output stays below ``2^24``, in
whatever order the kernel sums (threads, vector widths, blocking): each partial sum is a sum of a subset of the
products plus possibly the bias, bounded by the sum of their magnitudes. The bounds, as exact Python integers, node
by node in topological order from the input's range ``R`` (real-valued input: ``2^(input_bits-1) - 1`` after
quantization; integer event frames: the largest count of the batch):

- **synaptic layer** (conv / fc) fed by nodes of ranges ``R_s``: input ``X = sum_s x_s`` with ``|X| <= R_x = sum_s
  R_s``; output ``k``: ``|partial sum| <= sum_j |W_kj| R_x + |b_k|``. The layer's bound ``B`` is the largest over
  ``k``; it runs in float32 when ``R_x < 2^24`` and ``B < 2^24``, and ``B`` is its output's range.
- **LIF**: the current ``I = sum_s x_s`` has range ``R_I = sum_s R_s``; the membrane ``|U_t| <= R_I sum_{k<=t}
  tau^k`` (a reset only lowers it) is a multiple of ``2^-(q t)``; its numerator over ``2^-F`` is at most
  ``M = R_I sum_{k<T} m^k 2^(q (T-1-k))``, and the decay's product ``tau U`` has numerator at most ``m M / 2^q``.
  The LIF runs in float32 (``U = I + tau U (1 - o)``, spike ``U > Theta``: every step exact) when ``R_I``, ``M``,
  ``m M / 2^q``, ``m`` and ``Theta`` are below ``2^24``. Its output range is 1 (spikes).
- flatten and output pass their input's range on.

A layer whose float32 bound fails runs in float64 where the same bounds hold below ``2^53`` (many fraction bits: a
LIF over T = 10 steps of tau = 1/4 has ``F = 18``), else on the int64 path of the simulation
(:meth:`IntegerNet.forward_nodes`'s code); a warning names each such layer once per network.
``IntegerNet.kernel_counts`` counts, per layer, the calls that ran on each path (the sentinel the tests read).

The argument needs kernels that compute sums of products (a direct convolution, a GEMM), which PyTorch's CPU
kernels do (oneDNN's direct convolution, BLAS); the integer network's tensors live on the CPU; autocast is switched
off inside. A setting that lets float32 kernels round through a narrower type
(``torch.set_float32_matmul_precision("medium")`` or oneDNN's ``fp32_precision = "bf16"``/``"tf32"``) breaks the
float32 argument: the float32 layers then run in float64, with a warning saying why.
Speed: convolutions run on channels-last tensors (several times faster than NCHW for the narrow layers of these
networks), a diagonal 1x1 conv (a fused identity-shortcut tdBN) as a per-channel multiply-add, a diagonal pooling
window as a depthwise convolution.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..functional.lif import lif
from ..messages import warn
from .nir import INPUT
from .int_ops import int_conv2d, node_input  # IntegerNet, IntNode (tdbn.export.quant): annotations only

EXACT = 1 << 24  # float32 holds every integer of magnitude < 2^24 exactly
EXACT64 = 1 << 53  # float64: < 2^53
FLOAT32, FLOAT64, INT64 = "float32", "float64", "int64"
DTYPES = {FLOAT32: torch.float32, FLOAT64: torch.float64, INT64: torch.int64}
_SMALLEST_EXPONENT = {FLOAT32: 149, FLOAT64: 1074}  # n * 2^-e is held exactly for |n| < 2^24 / 2^53 (subnormals)


@dataclass(frozen=True)
class LayerPlan:
    """How one layer runs: ``kernel`` (``"float32"``, ``"float64"`` or ``"int64"``), the bound that decided it (the
    largest |partial sum| of a synaptic layer; the largest membrane numerator ``M`` of a LIF, module docstring) and,
    off float32, why."""

    kernel: str
    bound: int
    reason: str = ""


def reduced_float32_precision() -> str | None:
    """The setting that lets float32 kernels compute through a narrower type, or None (module docstring)."""
    if torch.get_float32_matmul_precision() != "highest":
        return f"torch.get_float32_matmul_precision() is {torch.get_float32_matmul_precision()!r}"
    mkldnn = torch.backends.mkldnn
    for where, obj in (("", mkldnn), (".conv", getattr(mkldnn, "conv", None)),
                       (".matmul", getattr(mkldnn, "matmul", None))):
        value = getattr(obj, "fp32_precision", None) if obj is not None else None
        if value not in (None, "none", "ieee"):
            return f"torch.backends.mkldnn{where}.fp32_precision is {value!r}"
    return None


def plan(net: IntegerNet, *, input_range: int, timesteps: int) -> dict[str, LayerPlan]:
    """Every conv / fc / LIF layer's :class:`LayerPlan` for inputs of magnitude <= ``input_range`` over
    ``timesteps`` steps (module docstring)."""
    reduced = reduced_float32_precision()
    reach: dict[str, int] = {INPUT: int(input_range)}
    plans: dict[str, LayerPlan] = {}
    T = int(timesteps)
    for name, node in net.nodes.items():
        if node.kind == "input":
            continue
        total = sum(reach[s] for s in node.sources)
        if node.kind in ("conv", "fc"):
            rows = node.weight.abs().flatten(1).sum(1).tolist()
            bound = max(r * total + abs(b) for r, b in zip(rows, node.bias.tolist()))
            reach[name] = bound
            plans[name] = _choose(max(total, bound), 0, bound,
                                  f"partial sums up to {bound} (input range {total}) reach 2^24")
        elif node.kind == "lif":
            m, q = node.decay
            frac = q * (T - 1)
            numer = total * sum(m ** k << (q * (T - 1 - k)) for k in range(T))
            product = -(-m * numer >> q)  # ceil(m M / 2^q)
            theta = int(node.theta.abs().max())
            reach[name] = 1
            worst = max(total, numer, product, theta, m)
            plans[name] = _choose(worst, frac, numer, f"membrane numerators up to {worst} (units of 2^-{frac}, {T} "
                                                      f"steps, current range {total}) reach 2^24")
        else:  # flatten, output
            reach[name] = total
    if reduced:  # float32 may round: its layers on float64, which the setting does not touch
        plans = {n: LayerPlan(FLOAT64, p.bound, reduced) if p.kernel == FLOAT32 else p for n, p in plans.items()}
    return plans


def _choose(worst: int, frac: int, bound: int, why: str) -> LayerPlan:
    """float32 where every value is below 2^24 (in units of ``2^-frac``), else float64 below 2^53, else int64."""
    if worst < EXACT and frac <= _SMALLEST_EXPONENT[FLOAT32]:
        return LayerPlan(FLOAT32, bound)
    if worst < EXACT64 and frac <= _SMALLEST_EXPONENT[FLOAT64]:
        return LayerPlan(FLOAT64, bound, why)
    return LayerPlan(INT64, bound, why + " and 2^53")


def input_range(net: IntegerNet, X: torch.Tensor) -> int:
    """The range the plan assumes for the quantized input ``X``: ``2^(input_bits-1) - 1`` for quantized real
    values (the same plan for every batch), else the batch's largest magnitude (integer event counts)."""
    if net.input_scale != 1.0:
        return 2 ** (net.input_bits - 1) - 1
    return int(X.abs().max()) if X.numel() else 0


def _plan_for(net: IntegerNet, r: int, T: int) -> dict[str, LayerPlan]:
    key = (r, T, reduced_float32_precision(), tuple((id(n.weight), n.weight._version, id(n.bias), n.bias._version)
                                                     for n in net.nodes.values() if n.weight is not None))
    cache = net._fast_plans
    if key not in cache:
        cache.clear()  # one network, usually one key; a changed weight or setting makes a new one
        cache[key] = plan(net, input_range=r, timesteps=T)
        slow = [(n, p) for n, p in cache[key].items() if p.kernel != FLOAT32 and n not in net._fast_warned]
        net._fast_warned.update(n for n, _ in slow)
        if slow and key[2]:
            warn(f"integer network: {key[2]}, so float32 kernels may round: every layer on an exact slower path "
                 "(float64, or int64 beyond 2^53)")
        elif slow:
            warn("integer network: layers off float32 (it could round), on an exact slower path: "
                 + "; ".join(f"{n} on {p.kernel}: {p.reason}" for n, p in slow))
    return cache[key]


@dataclass(frozen=True)
class _FloatLayer:
    """A synaptic layer's float parameters: ``weight`` (conv: channels-last), ``bias``, and the shortcut forms."""

    weight: torch.Tensor
    bias: torch.Tensor
    scale: torch.Tensor | None = None  # diagonal 1x1 conv: y = x * scale + bias, per channel [1, C, 1, 1]
    depthwise: torch.Tensor | None = None  # diagonal k x k conv: [C, 1, kh, kw], groups = C


def _float_layer(node: IntNode, dtype: torch.dtype) -> _FloatLayer:
    w, b = node.weight.to(dtype), node.bias.to(dtype)  # exact: |values| < 2^24 (float32) / 2^53 (bound)
    if node.kind == "fc":
        return _FloatLayer(w, b)
    K, C, kh, kw = w.shape
    diagonal = K == C and bool((node.weight[~torch.eye(K, dtype=torch.bool)] == 0).all())
    if diagonal and (kh, kw) == (1, 1) and node.stride == (1, 1) and node.padding == (0, 0):
        return _FloatLayer(w, b.view(1, K, 1, 1), scale=w[torch.arange(K), torch.arange(K), 0, 0].view(1, K, 1, 1))
    if diagonal:
        return _FloatLayer(w, b, depthwise=w[torch.arange(K), torch.arange(K)].unsqueeze(1).contiguous(
            memory_format=torch.channels_last))
    return _FloatLayer(w.contiguous(memory_format=torch.channels_last), b)


def _layer(net: IntegerNet, name: str, node: IntNode, dtype: torch.dtype) -> _FloatLayer:
    key = (id(node.weight), node.weight._version, id(node.bias), node.bias._version, dtype)
    held = net._fast_layers.get(name)
    if held is None or held[0] != key:
        held = net._fast_layers[name] = (key, _float_layer(node, dtype))
    return held[1]


def _synaptic_float(layer: _FloatLayer, node: IntNode, x: torch.Tensor) -> torch.Tensor:
    if node.kind == "fc":
        return F.linear(x, layer.weight, layer.bias)
    x = x.contiguous(memory_format=torch.channels_last)
    if layer.scale is not None:
        return torch.addcmul(layer.bias, x, layer.scale)
    if layer.depthwise is not None:
        return F.conv2d(x, layer.depthwise, layer.bias, node.stride, node.padding, groups=x.shape[1])
    return F.conv2d(x, layer.weight, layer.bias, node.stride, node.padding)


def _lif_float(node: IntNode, current: torch.Tensor, T: int, *, static: bool) -> torch.Tensor:
    """Spikes ``[T*N, C, ...]`` of Eq. 1-3 on float32 / float64 currents ``[T*N, C, ...]`` (``static``: ``[N, C,
    ...]``, the same at every step): ``U = tau U + I``, spike ``U > Theta``, reset to 0, every step exact by the
    plan's bound.
    One threshold per layer: tdbn's LIF operator (:func:`tdbn.functional.lif`, the same recursion; a static current
    is read T times, not copied) in the tensor's memory order; per-channel thresholds: a loop here, channels last,
    so that ``Theta`` broadcasts on the last axis."""
    m, q = node.decay
    tau = m / (1 << q)  # exact: m below the bound, a power-of-two denominator
    if node.theta.dim() == 0:
        if static and current.dim() == 4:
            current = current.contiguous(memory_format=torch.channels_last)  # as the next convolution reads it
        nhwc = current.dim() == 4 and current.is_contiguous(memory_format=torch.channels_last)
        z = current.permute(0, 2, 3, 1) if nhwc else current.contiguous()
        steps = z.reshape(1, -1).expand(T, -1) if static else z.reshape(T, -1)
        spikes = lif(steps, tau=tau, v_th=float(node.theta)).view(T * z.shape[0] if static else z.shape[0],
                                                                 *z.shape[1:])
        return spikes.permute(0, 3, 1, 2) if nhwc else spikes
    if static:
        current = current.repeat(T, *[1] * (current.dim() - 1))
    z = current.movedim(1, -1) if current.dim() > 2 else current  # [T*N, ..., C]
    shape = z.shape
    z = z.reshape(T, -1, shape[-1])
    theta = node.theta.to(current.dtype)  # [C]
    spikes = torch.empty_like(z)
    keep = torch.empty_like(z[0])  # 1 - o[t-1]
    U = z[0]
    for t in range(T):
        if t:
            U = torch.addcmul(z[t], U, keep, value=tau)  # x + tau u (1 - o): each product exact or 0
        torch.gt(U, theta, out=spikes[t])
        torch.le(U, theta, out=keep)
    spikes = spikes.view(shape)
    return spikes.movedim(-1, 1) if current.dim() > 2 else spikes


def _last_use(net: IntegerNet) -> dict[str, str]:
    """For every node, the last node (in order) that reads it."""
    last: dict[str, str] = {}
    for name, node in net.nodes.items():
        for s in node.sources:
            last[s] = name
    return last


@torch.no_grad()
def forward_fast(net: IntegerNet, x: torch.Tensor, *, keep: Collection[str] | None = None
                 ) -> dict[str, torch.Tensor]:
    """The int64 outputs ``[T, N, ...]`` of the nodes in ``keep`` (default: all), equal bit for bit to
    :meth:`IntegerNet.forward_nodes`, computed on float32 kernels where the plan proves them exact (module
    docstring). Nodes not kept are freed as soon as their last reader has run."""
    X = net.quantize_input(x)
    static = X.dim() == len(net.input_shape) + 1
    if static and net.timesteps is None:
        raise ValueError("static input needs timesteps; feed frames [T, N, ...]")
    T = net.timesteps if static else X.shape[0]
    N = X.shape[0] if static else X.shape[1]
    plans = _plan_for(net, input_range(net, X), T)
    with torch.autocast("cpu", enabled=False):  # autocast would run the convolutions in bfloat16
        return _run(net, X, static, T, N, plans, set(net.nodes) if keep is None else set(keep))


def _run(net: IntegerNet, X: torch.Tensor, static: bool, T: int, N: int, plans: dict[str, LayerPlan],
         wanted: set[str]) -> dict[str, torch.Tensor]:
    last = _last_use(net)
    values: dict[str, torch.Tensor] = {INPUT: X if static else X.flatten(0, 1)}
    is_static = {INPUT: static}

    for name, node in net.nodes.items():
        if node.kind == "input":
            continue
        kernel = plans[name].kernel if name in plans else None
        if kernel is None:  # flatten, output: the dtype the sources carry (int64 where they disagree)
            kinds = {values[s].dtype for s in node.sources}
            dtype = kinds.pop() if len(kinds) == 1 else torch.int64
        else:
            dtype = DTYPES[kernel]
        # exact: integers below 2^24 (2^53) where a float32 (float64) layer reads them
        total, st = node_input(values, is_static, node.sources, T, dtype)
        if node.kind == "lif":
            if kernel != INT64:
                out = _lif_float(node, total, T, static=st)
            else:
                if st:
                    total = total.repeat(T, *[1] * (total.dim() - 1))
                out = net._lif(node, total.contiguous().view(T, N, *total.shape[1:])).flatten(0, 1)
            st = False
        elif node.kind in ("conv", "fc"):
            if kernel != INT64:
                out = _synaptic_float(_layer(net, name, node, dtype), node, total)
            elif node.kind == "conv":
                out = int_conv2d(total.contiguous(), node.weight, node.stride, node.padding)
                out = out + node.bias.view(1, -1, 1, 1)
            else:
                out = total @ node.weight.T + node.bias
        elif node.kind == "flatten":
            out = total.flatten(1)
        else:  # output
            out = total
        if kernel is not None:
            net.kernel_counts[name, kernel] += 1
        values[name], is_static[name] = out, st
        for s in node.sources:  # free what no later node reads
            if last[s] == name and s not in wanted:
                del values[s]
    return {n: (v.to(torch.int64).unsqueeze(0).expand(T, *v.shape) if is_static[n]
                else v.to(torch.int64).reshape(T, N, *v.shape[1:]))
            for n, v in values.items() if n in wanted}
