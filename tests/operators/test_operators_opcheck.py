"""``torch.library.opcheck`` over every operator of the package on the CPU: schema (declared mutation and
aliasing), fake-tensor registration, autograd registration, and AOT dispatch with dynamic shapes."""

from __future__ import annotations

import pytest
import torch

import tdbn.operators  # noqa: F401 (registers the operators)
from tdbn.operators.spike_ops import pack_spikes

T, N, C, H, W = 3, 2, 4, 3, 3


def _z(requires_grad: bool = True, dtype=torch.float64):
    g = torch.Generator().manual_seed(3)
    return (torch.randn(T, N, C, H, W, generator=g, dtype=dtype) * 1.2 + 0.2).requires_grad_(requires_grad)


def _vec(value: float, requires_grad: bool = True):
    return torch.full((C,), value, dtype=torch.float64).requires_grad_(requires_grad)


def _cases():
    z, spikes = _z(), (_z(False) > 0.3).double()
    mean, invstd = torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64)
    g = torch.randn(T, N, C, H, W, dtype=torch.float64)
    bits = pack_spikes(spikes)
    weight = torch.randn(5, C, 3, 3, dtype=torch.float64, requires_grad=True)
    lif = (0.25, 0.5, 1.0, "rectangle")
    yield "lif_forward", torch.ops.tdbn.lif_forward, (z, None, *lif, True)
    yield "lif_forward_from_state", torch.ops.tdbn.lif_forward, (z, _z()[0], *lif, True)
    yield "lif_backward", torch.ops.tdbn.lif_backward, (g, _z(False), *lif)
    one_step = _z()[:1]
    yield "lif_window_forward", torch.ops.tdbn.lif_window_forward, (one_step, *lif)
    yield "lif_window_backward", torch.ops.tdbn.lif_window_backward, (
        g[:1], pack_spikes(one_step.detach() > 0.5), list(one_step.shape), torch.float64, *lif)
    per_step = torch.rand(T, 1, C, 1, 1, dtype=torch.float64) + 0.5
    yield "affine_lif_backward", torch.ops.tdbn.affine_lif_backward, (g, _z(False), per_step, per_step - 1, None,
                                                                      None, None, *lif)
    yield "affine_add_lif_backward", torch.ops.tdbn.affine_lif_backward, (
        g, _z(False), per_step, per_step - 1, _z(False) * 0.5, per_step * 0.5, per_step, *lif)
    yield "affine_add_identity_lif_backward", torch.ops.tdbn.affine_lif_backward, (
        g, _z(False), per_step, per_step - 1, spikes.detach(), None, None, *lif)
    yield "td_bn_lif_forward", torch.ops.tdbn.td_bn_lif_forward, (z, _vec(1.1), _vec(0.1), 0.5, 1e-5, *lif, "")
    yield "td_bn_lif_backward", torch.ops.tdbn.td_bn_lif_backward, (g, _z(False), _vec(1.1, False),
                                                                    _vec(0.1, False), mean, invstd, 0.5, *lif, "")
    yield "td_bn_add_lif_forward", torch.ops.tdbn.td_bn_add_lif_forward, (
        z, _vec(1.1), _vec(0.1), 0.5, _z() * 0.5, None, True, _vec(0.9), _vec(0.0), 0.5, 1e-5, *lif, "")
    yield "td_bn_add_lif_forward_identity", torch.ops.tdbn.td_bn_add_lif_forward, (
        z, _vec(1.1), _vec(0.1), 0.5, spikes.requires_grad_(True), bits, False, None, None, 1.0, 1e-5, *lif, "")
    yield "td_bn_add_lif_backward", torch.ops.tdbn.td_bn_add_lif_backward, (
        g, _z(False), _vec(1.1, False), _vec(0.1, False), mean, invstd, 0.5, bits, torch.float64, False, None,
        None, mean[:0], invstd[:0], 1.0, *lif, "")
    yield "pack_spikes", torch.ops.tdbn.pack_spikes, (spikes.detach(),)
    yield "unpack_spikes", torch.ops.tdbn.unpack_spikes, (bits, [T, N, C, H, W], torch.float64)
    yield "td_batch_norm_forward", torch.ops.tdbn.td_batch_norm_forward, (
        _z(False), _vec(1.1, False), _vec(0.1, False), 0.5, 1e-5, "")
    yield "td_batch_norm_backward", torch.ops.tdbn.td_batch_norm_backward, (
        g, _z(False), _vec(1.1, False), None, mean, invstd, 0.5, "")
    frame = _z(False)[0]
    yield "channel_affine", torch.ops.tdbn.channel_affine, (frame, _vec(1.3, False).view(C, 1, 1, 1),
                                                            _vec(0.2, False))
    yield "channel_affine_no_bias", torch.ops.tdbn.channel_affine, (frame.float(), _vec(1.3, False).float(), None)
    yield "step_sums", torch.ops.tdbn.step_sums, (_z(False),)
    yield "step_sums_bf16", torch.ops.tdbn.step_sums, (_z(False).bfloat16(),)
    yield "step_grad_sums", torch.ops.tdbn.step_grad_sums, (g, _z(False))
    yield "step_grad_sums_bf16", torch.ops.tdbn.step_grad_sums, (g.float(), _z(False).bfloat16())
    x = spikes.detach().flatten(0, 1).requires_grad_(True)
    yield "spike_conv2d", torch.ops.tdbn.spike_conv2d, (x, bits, weight, None, [1, 1], [1, 1], [1, 1], 1)
    yield "spike_conv2d_backward", torch.ops.tdbn.spike_conv2d_backward, (
        torch.randn(T * N, 5, H, W, dtype=torch.float64), bits, [T * N, C, H, W], weight.detach(), False, [1, 1],
        [1, 1], [1, 1], 1, [True, True, False])


CASES = list(_cases())


@pytest.mark.parametrize("op,args", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_opcheck(op, args):
    torch.library.opcheck(op, args)


def test_every_operator_is_checked():
    """Every ``tdbn::`` operator defined in the package appears above."""
    ops = {name for name in dir(torch.ops.tdbn)
           if isinstance(getattr(torch.ops.tdbn, name, None), torch._ops.OpOverloadPacket)}
    assert "td_bn_lif_forward" in ops
    checked = {c[0].removesuffix("_identity").removesuffix("_from_state").removesuffix("_no_bias").removesuffix("_bf16")
               for c in CASES}
    assert ops <= checked, ops - checked
