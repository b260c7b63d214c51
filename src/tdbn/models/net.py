"""The container shared by every model: encoding layer, spiking body, head, decoding layer (paper Alg. 2)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..layers import Flatten, TdBNLIF, TimeDistributed
from .options import SpikingOptions, linear_bn, unit


class SpikingNet(nn.Module):
    """``encoder -> body -> head -> decoder``, averaged over time (Eq. 11).

    - ``encoder``: the encoding layer ``conv -> tdBN -> LIF`` receiving real values (Alg. 2, section 4).
    - ``body``: spiking blocks (residual or plain).
    - ``head``: pooling, flatten and optional spiking fc layers (``[T, N, F]`` out).
    - ``decoder``: the decoding fc; the class scores are its output averaged over the T steps.

    ``forward`` accepts event frames ``[T, N, C, H, W]`` or static images ``[N, C, H, W]``. Static images use
    direct encoding: the same image enters the encoding conv at each of ``timesteps`` steps. Since that conv is
    the same at every step, it runs once and its output is repeated over time (identical result, T times fewer
    operations in the first layer).
    """

    def __init__(
        self,
        *,
        encoder: TdBNLIF,
        body: nn.Sequential,
        head: nn.Sequential,
        decoder: nn.Module,
        in_channels: int,
        timesteps: int,
        options: SpikingOptions,
    ):
        super().__init__()
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        self.encoder = encoder
        self.body = body
        self.head = head
        self.decoder = decoder
        self.in_channels = in_channels
        self.timesteps = timesteps
        self.options = options

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Output spikes of the encoding layer, ``[T, N, C, H, W]``."""
        if not x.is_floating_point():
            raise ValueError(
                f"expected floating-point input, got {x.dtype}: convert images first, e.g. x.float() / 255 and "
                "normalize them as in training (the data sets of tdbn.data do this)"
            )
        if x.dim() == 4:
            if x.shape[1] != self.in_channels:
                raise ValueError(
                    f"expected static images [N, {self.in_channels}, H, W] or frames [T, N, {self.in_channels}, H, W], "
                    f"got shape {tuple(x.shape)}"
                )
            y = self.encoder.conv.module(x)  # the encoding conv, once: [N, C, H, W]
            return self.encoder(y.unsqueeze(0).expand(self.timesteps, *y.shape), synapse_done=True)
        if x.dim() == 5:
            if x.shape[2] != self.in_channels:
                raise ValueError(
                    f"expected event frames [T, N, {self.in_channels}, H, W], got shape {tuple(x.shape)}"
                )
            return self.encoder(x)
        raise ValueError(
            f"expected static images [N, C, H, W] or time-first frames [T, N, C, H, W], got shape {tuple(x.shape)}"
        )

    def forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        """Decoding-layer output at every step, ``[T, N, num_classes]``."""
        return self.decoder(self.head(self.body(self.encode(x))))

    def forward(self, x: torch.Tensor, per_step: bool = False) -> torch.Tensor:
        """Class scores ``[N, num_classes]`` averaged over the T steps (Eq. 11); with ``per_step=True`` every step's
        scores ``[T, N, num_classes]`` (what a per-step loss such as TET needs; through ``forward`` so that
        DistributedDataParallel and ``torch.compile`` see the call)."""
        steps = self.forward_steps(x)
        return steps if per_step else steps.mean(0)  # Eq. 11: Q = (1/T) sum_t M o[t]


def encoder(opts: SpikingOptions, in_ch: int, out_ch: int, kernel_size: int, stride: int) -> TdBNLIF:
    """The encoding layer: ``conv -> tdBN -> LIF`` on real-valued input."""
    return unit(opts, in_ch, out_ch, kernel_size, stride=stride, spikes_in=False)


def spiking_fc(opts: SpikingOptions, in_f: int, out_f: int) -> TdBNLIF:
    """A spiking fully-connected layer ``fc -> tdBN -> LIF`` (the fc-256 of ResNet-17/19; its input is pooled
    spikes, not 0/1)."""
    return TdBNLIF(*linear_bn(opts, in_f, out_f).children(), opts.lif(out_f))


def pool_head(pool: nn.Module) -> "OrderedDict[str, nn.Module]":
    return OrderedDict(pool=TimeDistributed(pool), flatten=Flatten())
