"""How every operator of the package is defined: one implementation, its inputs grouped in small named
structures, the schema written out from them once.

An implementation is a plain function whose last parameter is ``k``, the kernels of the device it runs on
(:mod:`tdbn.operators.kernels`); the other parameters are values (``Tensor``, ``float``, ...) or the structures
below, annotated with their types. :class:`Operator` flattens the structures into the operator's schema
(``bn: TdBN`` becomes ``Tensor? bn_weight, Tensor? bn_bias, float bn_scale``), registers the implementation per
device (:func:`tdbn.operators.kernels.on_each_device`; the reference for every other device), and hands the fake
and autograd registrations the same structures, so that an operator's signature is spelled once.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import NamedTuple

import torch

from . import kernels

Tensor = torch.Tensor


class LIFArgs(NamedTuple):
    """A LIF as the operators take it: decay ``tau`` and threshold ``v_th`` (Eq. 1-3), the surrogate's width and
    name (Eq. 16)."""

    tau: float
    v_th: float
    width: float
    surrogate: str

    @classmethod
    def of(cls, p) -> "LIFArgs":
        """From :class:`tdbn.functional.params.LIFParameters`."""
        return cls(p.tau, p.v_th, p.surrogate_width, p.surrogate)


class TdBN(NamedTuple):
    """One tdBN in training mode as the operators take it (Eq. 5-8): ``lambda`` and ``beta`` (None where absent)
    and the scale ``alpha * v_th``."""

    weight: Tensor | None
    bias: Tensor | None
    scale: float


class TdBNBatch(NamedTuple):
    """A tdBN as it normalized one batch, what its backward pass reads: ``lambda``, ``beta``, the batch's mean and
    ``1/sqrt(var + eps)`` per channel, and ``alpha * v_th``."""

    weight: Tensor | None
    bias: Tensor | None
    mean: Tensor
    invstd: Tensor
    scale: float


class ConvArgs(NamedTuple):
    """A 2d convolution's geometry, in the order ``F.conv2d`` takes it."""

    stride: list[int]
    padding: list[int]
    dilation: list[int]
    groups: int


_STRUCTURES = {cls.__name__: cls for cls in (LIFArgs, TdBN, TdBNBatch, ConvArgs)}
_SCHEMA_TYPES = {"Tensor": "Tensor", "Tensor | None": "Tensor?", "float": "float", "int": "int", "bool": "bool",
                 "str": "str", "torch.dtype": "ScalarType", "list[int]": "int[]", "list[bool]": "bool[]"}


class Operator:
    """``tdbn::{name}`` with ``impl(*inputs, k)`` as its implementation on every device: the reference's kernels
    by default, the CPU's and CUDA's on theirs (:func:`tdbn.operators.kernels.on_each_device`). Calling it with the structured inputs calls the operator; :meth:`register_fake` and
    :meth:`register_autograd` take functions of the structured inputs too.

    Example:
        >>> from tdbn.operators.unit_ops import lif_forward
        >>> z = torch.randn(4, 2, 3)
        >>> spikes, u = lif_forward(z, None, LIFArgs(0.25, 0.5, 1.0, "rectangle"), True)  # tdbn::lif_forward
        >>> bool(((spikes == 0) | (spikes == 1)).all()), u.shape == z.shape
        (True, True)
    """

    def __init__(self, name: str, impl: Callable, returns: str):
        self.name = f"tdbn::{name}"
        params = list(inspect.signature(impl).parameters.values())[:-1]  # the last one is k
        self.groups = [_STRUCTURES.get(p.annotation) for p in params]
        fields = []
        for p, group in zip(params, self.groups):
            types = group.__annotations__ if group is not None else {p.name: p.annotation}
            fields += [(f"{p.name}_{f}" if group is not None else f, t) for f, t in types.items()]
        schema = ", ".join(f"{_SCHEMA_TYPES[getattr(t, '__forward_arg__', t)]} {n}" for n, t in fields)
        torch.library.define(self.name, f"({schema}) -> {returns}")
        self.op = getattr(torch.ops.tdbn, name)
        kernels.on_each_device(self.name, lambda *flat_and_k: impl(*self.structured(flat_and_k[:-1]), flat_and_k[-1]))

    def flat(self, inputs) -> list:
        """The operator's arguments: ``inputs`` with each structure spread into its fields."""
        out = []
        for value, group in zip(inputs, self.groups, strict=True):
            if group is None:
                out.append(value)
            else:
                out.extend(value)
        return out

    def structured(self, flat) -> list:
        """The inverse of :meth:`flat`."""
        values = iter(flat)
        return [next(values) if group is None else group(*(next(values) for _ in group._fields))
                for group in self.groups]

    def __call__(self, *inputs):
        return self.op(*self.flat(inputs))

    def register_fake(self, fake: Callable) -> Callable:
        torch.library.register_fake(self.name, lambda *flat: fake(*self.structured(flat)))
        return fake

    def register_autograd(self, grad: Callable, *, setup_context: Callable) -> None:
        """``setup_context(ctx, inputs, output)`` with the structured inputs; ``grad(ctx, *grad_outputs)`` returns
        one gradient per structured input (for a structure: one per field, or None for none)."""

        def flat_grad(ctx, *grad_outputs):
            out = []
            for g, group in zip(grad(ctx, *grad_outputs), self.groups, strict=True):
                if group is None:
                    out.append(g)
                else:
                    out.extend([None] * len(group._fields) if g is None else g)
            return tuple(out)

        torch.library.register_autograd(
            self.name, flat_grad,
            setup_context=lambda ctx, inputs, output: setup_context(ctx, self.structured(inputs), output))
