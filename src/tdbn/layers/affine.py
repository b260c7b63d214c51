"""A per-channel synaptic layer: the depthwise 1x1 convolution, computed as a per-channel scale and shift."""

from __future__ import annotations

import torch
from torch import nn

from ..operators.batch_norm import channel_affine


class ChannelAffine2d(nn.Conv2d):
    """Depthwise 1x1 convolution ``y[:, k] = w[k] * x[:, k] + b[k]`` on ``[N, C, H, W]``.

    The same layer as ``nn.Conv2d(C, C, 1, groups=C, bias=True)`` (it is one: same parameters, state dict and
    ``isinstance``), computed as a broadcast multiply-add instead of a grouped convolution, which oneDNN runs
    one to two orders of magnitude slower on the CPU for large feature maps. BN-scale fusion (Eq. 9-10) leaves
    one such layer where a tdBN has no conv to fold into (the identity shortcut of a residual block).
    Equal to the convolution up to float rounding. Without gradients it runs as the operator
    ``tdbn::channel_affine``: one pass of the device's kernels (the compiled kernels on the CPU), with the same two
    roundings as the multiply-add; a tracer records that operator (``tdbn.export.to_onnx`` gives ONNX its
    multiply-add).

    Example:
        >>> layer = ChannelAffine2d(3)
        >>> x = torch.randn(2, 3, 4, 4)
        >>> torch.allclose(layer(x), nn.functional.conv2d(x, layer.weight, layer.bias, groups=3), atol=1e-6)
        True
    """

    def __init__(self, channels: int, *, bias: bool = True, device=None, dtype=None):
        super().__init__(channels, channels, 1, groups=channels, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.out_channels:
            raise ValueError(
                f"ChannelAffine2d({self.out_channels}) expects [N, {self.out_channels}, H, W], got shape {tuple(x.shape)}"
            )
        if not torch.is_grad_enabled() or not (x.requires_grad or self.weight.requires_grad):
            return channel_affine(x, self.weight.detach(), None if self.bias is None else self.bias.detach())
        y = x * self.weight.view(1, -1, 1, 1)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)
