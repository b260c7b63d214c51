"""The paper's ResNet-19 (Table 4) in each benchmarked implementation, with one training step for each.

- ``tdbn``: ``tdbn.models.create("resnet19", ...)`` as a user gets it (eager), or wrapped in ``torch.compile``.
- ``floor``: the same network as an ANN: ReLU in place of LIF, standard BN in place of tdBN, batch ``T*N`` (the
  static image repeated T times). What an SNN step costs on dense hardware if neurons and normalization were free.
- ``spikingjelly`` (2.0, multi-step mode): its ``LIFNode`` and ``ThresholdDependentBatchNorm2d``. Neuron matched to
  ours: ``decay_input=False, v_reset=0`` gives ``v = (1 - 1/tau_sj) v + x``, so ``tau_sj = 1 / (1 - 0.25) = 4/3``
  reproduces the decay 0.25; threshold 0.5; rectangular surrogate ``Rect(alpha=1)`` (= width 1, Eq. 16).
- ``snntorch`` (1.0): ``snn.Leaky(beta=0.25, threshold=0.5, reset_mechanism="zero")`` stepped over T in Python,
  convs and ``nn.BatchNorm2d`` over the merged ``[T*N]`` batch (snnTorch has no tdBN), its default ATan surrogate.

Every network: encoding conv 3x3-128, stages [128]x3, [256]x3 (stride 2), [512]x2 (stride 2) of basic blocks
with a normalized shortcut (projection where the shape changes), avg pool /2, fc-256, fc-10; widths times
``width``; output averaged over T; cross-entropy; SGD (lr 0.1, momentum 0.9).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

STAGES = ((128, 3, 1), (256, 3, 2), (512, 2, 2))  # (channels, blocks, first stride)
IMPLS = ("tdbn", "tdbn-compiled", "floor", "floor-compiled", "spikingjelly", "snntorch", "tdbn-bn", "tdbn-tebn",
         "tdbn-bntt", "tdbn-tab", "tdbn-mpbn", "tdbn-membrane")


def _w(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


# ------------------------------------------------------------------------------------------------ generic body


def _resnet19(width: float, conv: Callable, norm: Callable, act: Callable, norm1d: Callable, pool, flat, linear):
    """Build ResNet-19 from layer factories (the factories decide the layout: ``[T*N, ...]`` or ``[T, N, ...]``)."""

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.residual = nn.Sequential(
                conv(cin, cout, 3, stride), norm(cout, 1.0), act(), conv(cout, cout, 3, 1), norm(cout, 2 ** -0.5)
            )
            proj = stride != 1 or cin != cout
            self.shortcut = nn.Sequential(conv(cin, cout, 1, stride), norm(cout, 2 ** -0.5)) if proj else norm(
                cout, 2 ** -0.5
            )
            self.act = act()

        def forward(self, x):
            return self.act(self.residual(x) + self.shortcut(x))

    c1 = _w(128, width)
    layers: list[nn.Module] = [conv(3, c1, 3, 1), norm(c1, 1.0), act()]
    ch = c1
    for c, n, s in STAGES:
        for j in range(n):
            layers.append(Block(ch, _w(c, width), s if j == 0 else 1))
            ch = _w(c, width)
    fc = _w(256, width)
    layers += [pool(), flat(), linear(ch * 4 * 4, fc), norm1d(fc), act(), linear(fc, 10)]
    return nn.Sequential(*layers)


# ------------------------------------------------------------------------------------------------ builders


def build_tdbn(width: float, T: int, norm: str = "tdbn", residual: str = "spike") -> tuple[nn.Module, Callable]:
    import tdbn

    model = tdbn.models.create("resnet19", num_classes=10, width=width, timesteps=T, norm=norm, residual=residual)
    return model, lambda m, x: m(x)  # static images [N, 3, 32, 32]


def _merged_batch(width: float, T: int, act: Callable[[], nn.Module]) -> tuple[nn.Module, Callable]:
    """ResNet-19 with ``nn.BatchNorm`` on the merged ``[T*N]`` batch (the static image repeated T times), the
    output averaged over T; ``act`` is the activation (ReLU for the floor, a stepped neuron for snnTorch)."""
    model = _resnet19(
        width,
        conv=lambda i, o, k, s: nn.Conv2d(i, o, k, s, k // 2, bias=False),
        norm=lambda c, _a: nn.BatchNorm2d(c),
        act=act,
        norm1d=nn.BatchNorm1d,
        pool=lambda: nn.AvgPool2d(2),
        flat=nn.Flatten,
        linear=nn.Linear,
    )

    def forward(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        N = x.shape[0]
        y = m(x.unsqueeze(0).expand(T, *x.shape).flatten(0, 1))  # batch T*N
        return y.view(T, N, -1).mean(0)

    return model, forward


def build_floor(width: float, T: int) -> tuple[nn.Module, Callable]:
    return _merged_batch(width, T, lambda: nn.ReLU(inplace=False))


def build_spikingjelly(width: float, T: int) -> tuple[nn.Module, Callable]:
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    v_th = 0.5
    model = _resnet19(
        width,
        conv=lambda i, o, k, s: layer.Conv2d(i, o, k, s, k // 2, bias=False, step_mode="m"),
        norm=lambda c, a: layer.ThresholdDependentBatchNorm2d(a, v_th, c),
        act=lambda: neuron.LIFNode(
            tau=4.0 / 3.0, decay_input=False, v_threshold=v_th, v_reset=0.0,
            surrogate_function=surrogate.Rect(alpha=1.0), step_mode="m",
        ),
        norm1d=lambda c: layer.ThresholdDependentBatchNorm1d(1.0, v_th, c),
        pool=lambda: layer.AvgPool2d(2, step_mode="m"),
        flat=lambda: layer.Flatten(start_dim=1, step_mode="m"),
        linear=lambda i, o: layer.Linear(i, o, step_mode="m"),
    )

    def forward(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        functional.reset_net(m)
        return m(x.unsqueeze(0).repeat(T, 1, 1, 1, 1)).mean(0)  # [T, N, ...] multi-step

    return model, forward


class _SnnTorchLeaky(nn.Module):
    """snnTorch's ``Leaky`` neuron stepped over T: ``[T*N, ...] -> [T*N, ...]``."""

    def __init__(self, T: int):
        super().__init__()
        import snntorch as snn

        self.T = T
        self.lif = snn.Leaky(beta=0.25, threshold=0.5, reset_mechanism="zero")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = x.view(self.T, -1, *x.shape[1:])
        mem = self.lif.init_leaky()
        out = []
        for t in range(self.T):
            spk, mem = self.lif(xs[t], mem)
            out.append(spk)
        return torch.stack(out).flatten(0, 1)


def build_snntorch(width: float, T: int) -> tuple[nn.Module, Callable]:
    return _merged_batch(width, T, lambda: _SnnTorchLeaky(T))


def build(impl: str, width: float, T: int) -> tuple[nn.Module, Callable]:
    """``(model, forward(model, images) -> logits [N, 10])`` for ``impl`` in :data:`IMPLS`."""
    base = impl.removesuffix("-compiled")
    if base == "tdbn-membrane":  # the paper's tdBN with membrane residuals (model.options.residual=membrane)
        return build_tdbn(width, T, residual="membrane")
    if base.startswith("tdbn-"):  # tdbn with another normalization: tdbn-tebn, tdbn-bntt, tdbn-tab, tdbn-mpbn, ...
        return build_tdbn(width, T, norm=base.removeprefix("tdbn-"))
    builders = {"tdbn": build_tdbn, "floor": build_floor, "spikingjelly": build_spikingjelly,
                "snntorch": build_snntorch}
    if base not in builders:
        raise ValueError(f"unknown implementation {impl!r}; valid: {list(IMPLS)}")
    return builders[base](width, T)


def peer_available(impl: str) -> str | None:
    """None if ``impl`` can be imported here, else the reason."""
    mod = {"spikingjelly": "spikingjelly.activation_based.neuron", "snntorch": "snntorch"}.get(impl)
    if mod is None:
        return None
    try:
        __import__(mod)
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        return f"{type(e).__name__}: {e}"
    return None
