"""ChannelAffine2d is the depthwise 1x1 convolution it claims to be."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tdbn.layers.affine import ChannelAffine2d


@pytest.mark.parametrize("bias", [True, False])
def test_equals_depthwise_conv(bias):
    layer = ChannelAffine2d(5, bias=bias).double()
    with torch.no_grad():
        layer.weight.normal_()
        if bias:
            layer.bias.normal_()
    x = torch.randn(3, 5, 4, 6, dtype=torch.float64, requires_grad=True)
    ref = nn.functional.conv2d(x, layer.weight, layer.bias, groups=5)
    y = layer(x)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, [x, *layer.parameters()], g)
    want = torch.autograd.grad(ref, [x, *layer.parameters()], g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_is_a_conv_with_the_conv_state_dict():
    layer = ChannelAffine2d(4)
    conv = nn.Conv2d(4, 4, 1, groups=4)
    assert isinstance(layer, nn.Conv2d)
    assert {k: v.shape for k, v in layer.state_dict().items()} == {k: v.shape for k, v in conv.state_dict().items()}
    conv.load_state_dict(layer.state_dict())


def test_bad_shape():
    with pytest.raises(ValueError, match=r"\[N, 4, H, W\]"):
        ChannelAffine2d(4)(torch.randn(2, 3, 5, 5))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_inference_pass_is_bit_identical_to_multiply_add(bias, channels_last):
    """Without gradients the layer runs one compiled pass (``tdbn::channel_affine`` on the CPU's kernels); same
    values bit for bit as the multiply-add."""
    from tdbn.operators import cpu as native

    layer = ChannelAffine2d(6, bias=bias)
    with torch.no_grad():
        layer.weight.normal_()
        if bias:
            layer.bias.normal_()
    x = (torch.rand(4, 6, 7, 5) > 0.6).float()
    x[0, 0, 0, 0] = -0.0
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    before = native.calls["bn_affine"]
    with torch.inference_mode():
        fast = layer(x)
        assert native.calls["bn_affine"] == before + (1 if native.available() else 0)
        with native.enabled(False):
            plain = layer(x)
    assert native.bn_layout(x.unsqueeze(0)) is not None
    assert torch.equal(fast, plain) and fast.stride() == plain.stride()


def test_traced_layer_records_the_operator():
    """Under torch.jit.trace the layer is one node, the operator ``tdbn::channel_affine``, not a foreign call a
    tracer cannot see."""
    layer = ChannelAffine2d(3)
    with torch.no_grad():
        layer.weight.normal_()
        layer.bias.normal_()
        traced = torch.jit.trace(layer, torch.randn(2, 3, 4, 4))
        assert "tdbn::channel_affine" in str(traced.graph)
        x = torch.randn(5, 3, 6, 6)
        torch.testing.assert_close(traced(x), layer(x))
