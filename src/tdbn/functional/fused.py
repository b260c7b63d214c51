"""The lean training path: tdBN kernels for the CPU, recomputation instead of storage, spikes stored as bits.

The plain training graph of a ``conv -> tdBN -> LIF`` unit keeps three float tensors per neuron for the
backward pass: the conv's input spikes, the tdBN input ``z`` and the membrane potentials ``u``. The paper's
equations need less, and this module gives autograd less to keep, in training mode under eager execution:

1. :class:`TdBatchNormFunction` is tdBN in training mode (Eq. 5-8) with its backward pass written out: the same
   mathematics as ``F.batch_norm`` (equal up to float rounding, tested in float64), several times faster on
   the CPU than ATen's NCHW batch-norm kernels (compiled kernels of :mod:`tdbn.functional.native` where they
   apply), and able to recompute its output bit-exactly from what it stores anyway (``z`` and per-channel
   statistics). A LIF reading a tdBN output fuses that recomputation into its backward pass, which also sums
   what the tdBN backward pass needs (:func:`lif_backward_through_td_batch_norm`).
2. :func:`tdbn.functional.lif` asks :func:`recompute_source` whether its input can be rebuilt that way (a tdBN
   output, or the sum of two in a residual block, Fig. 5b); if so it stores no ``u`` and its backward
   recomputes ``u`` (Eq. 1-3) from the source: the same floating-point operations, so the same ``u``.
3. Spikes are 0/1: a layer that saves a LIF's spikes for its backward pass (the next conv, for its weight
   gradient; the tdBN on an identity shortcut) stores them as a ``bool`` mask, one byte instead of four
   (:func:`spike_mask`, :func:`saving_spikes_as_mask`).

Items 2 and 3 change no value: the gradients are those of the very forward computation that ran. They are
storage decisions, on by default, and :func:`lean_training` turns them (and item 1) off for comparisons.
Autograd nodes advertise what they can give through attributes of their context:

- ``tdbn_recompute(node) -> Tensor`` recomputes the node's output (``tdbn_shape``, ``tdbn_dtype``);
- ``tdbn_spikes`` says the node's output holds only 0/1, ``tdbn_spike_mask`` is that output as bool (made when
  a layer first asks for it);
- ``tdbn_version`` is the output's version counter at creation: an in-place change of the output disables both.

Off while ``torch.compile`` traces (the compiler plans its own storage and recomputation; graph introspection
would break its trace) and while saved-tensor hooks such as activation checkpointing manage the storage.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch.autograd.function import once_differentiable

from . import native as _native

Tensor = torch.Tensor
Node = object  # an autograd node (``tensor.grad_fn``)


_LEAN: ContextVar[bool] = ContextVar("tdbn_lean_training", default=True)


_TOP_HOOKS = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)


def _saved_tensor_hooks_active() -> bool:
    """Whether saved-tensor hooks (``torch.autograd.graph.saved_tensors_hooks``: activation checkpointing, CPU
    offloading, ...) manage what autograd stores right now."""
    return _TOP_HOOKS is not None and _TOP_HOOKS(False) is not None


def lean_enabled() -> bool:
    """True unless turned off by :func:`lean_training`, while ``torch.compile`` traces (the compiler plans its own
    storage), or while saved-tensor hooks such as activation checkpointing manage the storage (they must see
    the same saved tensors when they re-run a forward pass, which this module's choices would change)."""
    return not torch.compiler.is_compiling() and _LEAN.get() and not _saved_tensor_hooks_active()


@contextmanager
def lean_training(enabled: bool) -> Iterator[None]:
    """Turn the lean training path on or off inside the block (on by default). Off, tdBN runs ``F.batch_norm``
    and autograd stores what the plain formulation stores; values and gradients are the same either way (up
    to float rounding in tdBN). For comparisons and benchmarks.

    Example:
        >>> bn = tdbn.TdBatchNorm1d(3)
        >>> x = torch.randn(4, 2, 3, requires_grad=True)
        >>> tdbn.functional.lif(bn(x)).grad_fn.saved_tensors  # no u: recomputed from the tdBN in backward
        (None,)
        >>> with lean_training(False):
        ...     s = tdbn.functional.lif(bn(x))
        >>> s.grad_fn.saved_tensors[0].shape  # the membrane potentials u
        torch.Size([4, 2, 3])
    """
    token = _LEAN.set(bool(enabled))
    try:
        yield
    finally:
        _LEAN.reset(token)


# ---------------------------------------------------------------------------------------------------------
# spike masks


def spike_mask(x: Tensor) -> Tensor | None:
    """The bool mask ``m`` with ``x == m.to(x.dtype)`` if ``x`` is the unmodified spike output of a LIF node of
    the autograd graph being recorded; ``None`` otherwise (then ``x`` is treated as any other tensor)."""
    if not lean_enabled():
        return None
    fn = x.grad_fn
    if fn is None or not getattr(fn, "tdbn_spikes", False):
        return None
    if x.output_nr != 0 or x._version != fn.tdbn_version or tuple(x.shape) != fn.tdbn_shape:
        return None
    if fn.tdbn_spike_mask is None:  # made on first request, then shared by every layer reading these spikes
        fn.tdbn_spike_mask = x.detach().to(torch.bool)
        fn.tdbn_recompute = _spikes_from_mask
    return fn.tdbn_spike_mask


def unpack_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``mask`` (bool) as 0/1 values of ``dtype``; read as uint8, which the CPU converts several times faster."""
    return mask.view(torch.uint8).to(dtype)


class _PackedSpikes:
    """What autograd keeps in place of a saved spike tensor: its bool mask (viewed like the tensor)."""

    __slots__ = ("mask", "dtype")

    def __init__(self, mask: Tensor, dtype: torch.dtype):
        self.mask, self.dtype = mask, dtype


@contextmanager
def saving_spikes_as_mask(x: Tensor, mask: Tensor | None) -> Iterator[None]:
    """Inside the block, any layer that saves ``x`` (exactly this tensor: same storage, offset, shape and
    strides) for its backward pass saves ``mask`` (bool, same shape) instead; ``x`` must equal
    ``mask.to(x.dtype)``. Every other saved tensor is kept as usual. A no-op when ``mask`` is None.

    Used by :class:`tdbn.layers.TimeDistributed` around the wrapped layer, so that e.g. a conv over spikes
    keeps 1 byte per input value for its weight gradient instead of 4. The wrapped module is called as usual
    (its hooks run; its gradients come from its own autograd formula, bit-identical).
    """
    if mask is None:
        yield
        return
    key = (x.data_ptr(), x.storage_offset(), tuple(x.shape), tuple(x.stride()), x.dtype)

    def pack(t: Tensor):
        if (t.data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype) == key:
            return _PackedSpikes(mask, t.dtype)
        return t

    def unpack(p):
        return unpack_mask(p.mask, p.dtype) if isinstance(p, _PackedSpikes) else p

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        yield


# ---------------------------------------------------------------------------------------------------------
# recomputable sources


def _recomputable(fn: Node | None, output_nr: int) -> bool:
    return fn is not None and output_nr == 0 and getattr(fn, "tdbn_recompute", None) is not None


def recompute_source(x: Tensor) -> tuple[Node, ...] | None:
    """Autograd nodes from which ``x`` can be recomputed bit-exactly, or None.

    Recognised: ``x`` is the unmodified output of a tdBN (:class:`TdBatchNormFunction`) or of a LIF (spikes),
    or ``x = a + b`` with ``a``, ``b`` such outputs of ``x``'s shape and dtype (the residual block's sum).
    """
    if not lean_enabled():
        return None
    fn = x.grad_fn
    if fn is None:
        return None
    if _recomputable(fn, x.output_nr):
        if x._version != fn.tdbn_version or tuple(x.shape) != fn.tdbn_shape:
            return None
        return (fn,)
    if type(fn).__name__ == "AddBackward0" and getattr(fn, "_saved_alpha", None) == 1:
        parts = fn.next_functions
        if len(parts) == 2 and all(_recomputable(n, i) for n, i in parts):
            nodes = (parts[0][0], parts[1][0])
            if all(n.tdbn_shape == tuple(x.shape) and n.tdbn_dtype == x.dtype for n in nodes):
                return nodes
    return None


def recompute(nodes: tuple[Node, ...]) -> Tensor:
    """Recompute the tensor that :func:`recompute_source` described (a fresh tensor, free to modify)."""
    out = nodes[0].tdbn_recompute(nodes[0])
    if len(nodes) == 2:
        out.add_(nodes[1].tdbn_recompute(nodes[1]))  # the forward sum's kernel and operand order, in place
    return out


def _mark(ctx, out: Tensor, recompute_fn) -> None:
    ctx.tdbn_recompute = recompute_fn
    ctx.tdbn_shape = tuple(out.shape)
    ctx.tdbn_dtype = out.dtype
    ctx.tdbn_version = out._version


def mark_spikes(ctx, spikes: Tensor) -> None:
    """Declare on a LIF node that its output ``spikes`` holds only 0 and 1. A layer that saves these spikes asks
    :func:`spike_mask` for their bool mask (made once, kept on the node); from then on the spikes also count as
    recomputable from the mask."""
    _mark(ctx, spikes, None)
    ctx.tdbn_spikes = True
    ctx.tdbn_spike_mask = None


def _spikes_from_mask(node: Node) -> Tensor:
    return unpack_mask(node.tdbn_spike_mask, node.tdbn_dtype)


# ---------------------------------------------------------------------------------------------------------
# tdBN in training mode


def _channel_view(x: Tensor) -> tuple[list[int], list[int], int]:
    """Reduction dims, broadcast shape of a per-channel vector, and the count per channel, for ``[T, N, C, ...]``."""
    dims = [0, 1, *range(3, x.dim())]
    shape = [1, 1, x.shape[2]] + [1] * (x.dim() - 3)
    return dims, shape, x.numel() // x.shape[2]


def _affine_(centred: Tensor, scale: Tensor, bias: Tensor | None, shape: list[int]) -> Tensor:
    """``centred * scale + bias`` per channel (Eq. 5, 8), in place. Forward pass and recomputation both compute
    ``(x - mean)`` then call this, so the recomputed output is bit-identical. In-place binary ops: ATen
    vectorizes a broadcast per-channel operand there, not in a three-operand ``addcmul``."""
    y = centred.mul_(scale.view(shape))
    return y if bias is None else y.add_(bias.view(shape))


class TdBatchNormFunction(torch.autograd.Function):
    """tdBN in training mode (Eq. 5-8) on ``[T, N, C, ...]``: batch statistics per channel over T, N and space,
    ``y = lambda * alpha * v_th * (x - mean) / sqrt(var + eps) + beta``, running statistics updated in place
    (unbiased variance, like ``torch.nn.BatchNorm``), and the batch-norm backward pass written out.

    The same mathematics as the plain formulation (``F.batch_norm`` on ``[T*N, C, ...]`` with weight
    ``lambda * alpha * v_th``), equal up to float rounding, with cheaper kernels on the CPU: per-channel sums
    instead of ATen's NCHW batch-norm kernels (several times slower there). Storage for backward: the input
    (a bool mask when it is a spike tensor, as on an identity shortcut; unexpanded when it is expanded over T,
    as for static images) and three per-channel vectors. The output can be recomputed bit-exactly on demand
    (``tdbn_recompute``) by the LIF that reads it, which therefore stores no membrane potentials.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, scale: float, momentum: float, eps: float):  # type: ignore[override]
        dims, shape, n = _channel_view(x)
        ctx.scale = scale
        ctx.native = _native.bn_layout(x)  # compiled kernels (same mathematics, fewer passes), or ATen
        if ctx.native is not None:
            mean, var = _native.bn_stats(x, ctx.native)
        else:
            mean = x.sum(dims) / n
            centred = torch.sub(x, mean.view(shape))
            var = torch.mul(centred, centred).sum(dims) / n  # biased (Eq. 8)
        invstd = torch.rsqrt(var + eps)
        w = _bn_weight(ctx, weight, invstd)  # lambda * alpha * v_th / sigma
        if ctx.native is not None:
            y = _native.bn_affine(x, mean, w, bias, ctx.native)
        else:
            y = _affine_(centred, w, bias, shape)
        if running_mean is not None and running_var is not None:
            running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
            running_var.mul_(1 - momentum).add_(var * (n / max(n - 1, 1)), alpha=momentum)
        mask = spike_mask(x)
        ctx.x_is_mask = mask is not None
        ctx.x_dtype = x.dtype
        ctx.save_for_backward(mask if mask is not None else x, weight, bias, mean, invstd)
        if lean_enabled():
            _mark(ctx, y, _recompute_td_batch_norm)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):  # type: ignore[override]
        x, weight, bias, mean, invstd = _saved_tensors(ctx, keep=False)
        dims, shape, n = _channel_view(grad_y)
        lam = invstd.new_ones(()) if weight is None else weight
        k = invstd * (lam * ctx.scale)  # dy/dx_hat-scaled: lambda * alpha * v_th / sigma
        native = ctx.native if ctx.native is not None and grad_y.stride() == x.stride() else None
        stash, ctx.tdbn_grad_sums = getattr(ctx, "tdbn_grad_sums", None), None
        if native is not None and stash is not None and stash[0] is grad_y and stash[1] == grad_y._version:
            sum_g, sum_gx = stash[2], stash[3]  # summed by the LIF's backward pass (unchanged gradient)
        elif native is not None:
            sum_g, sum_gx = _native.bn_grad_sums(grad_y, x, mean, native)
        else:
            sum_g = grad_y.sum(dims)  # dL/dbeta
            xc = torch.sub(x, mean.view(shape))  # x - mean
            prod = torch.mul(grad_y, xc)
            sum_gx = prod.sum(dims)  # sum(dy * (x - mean)) = sigma * sum(dy * x_hat)
        grad_x = None
        if ctx.needs_input_grad[0]:
            # dL/dx = k * (dy - mean(dy) - x_hat * mean(dy * x_hat)),  x_hat = (x - mean) * invstd
            c_x = -k * invstd * invstd * sum_gx / n
            c_0 = -k * sum_g / n
            if native is not None:
                grad_x = _native.bn_grad_input(grad_y, x, mean, k, c_0, c_x, native)
            else:
                grad_x = torch.mul(grad_y, k.view(shape), out=prod).add_(c_0.view(shape))
                grad_x.add_(xc.mul_(c_x.view(shape)))
        grad_w = sum_gx * invstd * ctx.scale if weight is not None and ctx.needs_input_grad[1] else None
        grad_b = sum_g if bias is not None and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None, None, None, None


def _saved_tensors(node: Node, *, keep: bool) -> tuple:
    """``node.saved_tensors`` (a saved spike mask as floats), unpacked at most once: saved-tensor hooks such as
    activation checkpointing allow a single unpack, and a tdBN node is read twice (by the LIF recomputing its
    output, then by its own backward)."""
    saved = getattr(node, "tdbn_unpacked", None)
    if saved is None:
        x, *rest = node.saved_tensors
        saved = (unpack_mask(x, node.x_dtype) if node.x_is_mask else x, *rest)
    node.tdbn_unpacked = saved if keep else None
    return saved


def _bn_weight(node, weight: Tensor | None, invstd: Tensor) -> Tensor:
    """The per-channel factor of the affine map, ``lambda * alpha * v_th / sigma`` (the same operations in the
    forward pass and every recomputation)."""
    return invstd * node.scale if weight is None else invstd * (weight * node.scale)


def lif_backward_through_td_batch_norm(
    nodes: tuple[Node, ...], grad_spikes: Tensor, tau: float, v_th: float, width: float, surrogate: str
) -> Tensor | None:
    """The LIF backward pass fused with the recomputation of its tdBN input (compiled kernels): ``dL/dy`` for a
    LIF whose recompute source is one tdBN node run by the compiled kernels, or None if that does not apply.

    The same pass also sums what the tdBN backward needs per channel; they wait on the tdBN node, which uses
    them when the gradient it receives is this very tensor, unchanged (otherwise it sums again).
    """
    if len(nodes) != 1 or getattr(nodes[0], "native", None) is None or not hasattr(nodes[0], "x_is_mask"):
        return None
    node = nodes[0]
    x, weight, bias, mean, invstd = _saved_tensors(node, keep=True)
    if grad_spikes.stride() != x.stride() or grad_spikes.dtype != x.dtype or grad_spikes.shape != x.shape:
        return None
    w = _bn_weight(node, weight, invstd)
    grad_y, sum_g, sum_gx = _native.lif_backward_bn(
        grad_spikes, x, mean, w, bias, node.native, tau, v_th, width, surrogate
    )
    node.tdbn_grad_sums = (grad_y, grad_y._version, sum_g, sum_gx)
    return grad_y


def _recompute_td_batch_norm(node: Node) -> Tensor:
    """The tdBN output again, bit for bit (same kernels on the same input and statistics)."""
    x, weight, bias, mean, invstd = _saved_tensors(node, keep=True)
    _, shape, _ = _channel_view(x)
    w = _bn_weight(node, weight, invstd)
    if node.native is not None:  # the forward pass's kernel, whatever native.enabled() says now
        return _native.bn_affine(x, mean, w, bias, node.native)
    return _affine_(torch.sub(x, mean.view(shape)), w, bias, shape)


def td_batch_norm_train(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    *,
    alpha: float,
    v_th: float,
    momentum: float,
    eps: float,
) -> Tensor:
    """tdBN of ``x`` ``[T, N, C, ...]`` in training mode (Eq. 5-8) through :class:`TdBatchNormFunction`.

    The same values, running-statistics update and gradients as the plain formulation
    ``F.batch_norm(x.flatten(0, 1), ..., weight * alpha * v_th, ...)`` up to float rounding. Floating-point
    inputs of 32 or 64 bits (others take the plain formulation in :func:`tdbn.functional.td_batch_norm`).
    """
    if x.numel() == x.shape[2]:  # the check F.batch_norm makes in training mode
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
    return TdBatchNormFunction.apply(x, weight, bias, running_mean, running_var, float(alpha * v_th), momentum, eps)
