"""Every registered model: shapes, gradients, no NaN, fused == unfused; weight-layer counts of Table 4."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import tdbn
from tdbn import models
from tdbn.layers import TdBatchNorm2d

from fusion_checks import assert_fused_equal, randomize_bn

IMAGENET = {"resnet34", "resnet34_large", "resnet50"}


def _small(name: str):
    kw = {"width": 0.0625, "timesteps": 2}
    if name == "resnet17":
        return models.create(name, num_classes=11, **kw), lambda n=2: torch.randn(2, n, 2, 32, 32)  # frames
    if name in IMAGENET:
        return models.create(name, num_classes=7, **kw), lambda n=2: torch.randn(n, 3, 64, 64)
    return models.create(name, num_classes=10, **kw), lambda n=2: torch.randn(n, 3, 32, 32)


@pytest.mark.parametrize("name", models.names())
def test_model_forward_backward_fuse(name):
    model, make = _small(name)
    x = make()
    y = model(x)
    assert y.shape == (x.shape[-4], model.decoder.module.out_features)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    randomize_bn(model, 2, lambda: make(4))
    assert_fused_equal(model, make(3))


def _weight_layers(model: nn.Module) -> int:
    """Convs on the main path + fc layers (projection shortcuts excluded)."""
    count = 0
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and ".shortcut." not in f".{name}.":
            count += 1
    return count


@pytest.mark.parametrize(
    "name, kw, expected",
    [("resnet17", {}, 17), ("resnet19", {}, 19), ("resnet34", {}, 34), ("resnet34_large", {}, 34),
     ("resnet50", {}, 50), ("plain", {"depth": 20}, 20), ("plain", {"depth": 8}, 8), ("resnet", {"depth": 14}, 14)],
)
def test_weight_layer_counts(name, kw, expected):
    model = models.create(name, num_classes=10, width=0.0625, **kw)
    assert _weight_layers(model) == expected


def test_table4_resnet19_shapes():
    m = models.create("resnet19", num_classes=10)
    assert m.encoder.conv.module.kernel_size == (3, 3) and m.encoder.conv.module.stride == (1, 1)
    assert m.encoder.conv.module.out_channels == 128
    stages = list(m.body)
    assert [len(s) for s in stages] == [3, 3, 2]
    assert [s[0].residual.unit2.conv.module.out_channels for s in stages] == [128, 256, 512]
    assert [s[0].residual.unit1.conv.module.stride[0] for s in stages] == [1, 2, 2]
    assert m.head.fc.fc.module.out_features == 256 and m.head.fc.fc.module.in_features == 512 * 4 * 4
    assert m.decoder.module.in_features == 256


def test_table4_imagenet_no_maxpool_and_bottleneck():
    m = models.create("resnet50", num_classes=1000)
    assert not any(isinstance(x, nn.MaxPool2d) for x in m.modules())
    enc = m.encoder.conv.module
    assert enc.kernel_size == (7, 7) and enc.stride == (2, 2) and enc.out_channels == 64
    assert [s[0].residual.unit3.conv.module.out_channels for s in m.body] == [256, 512, 1024, 2048]
    assert all(s[0].residual.unit2.conv.module.stride == (2, 2) for s in m.body)
    large = models.create("resnet34_large", num_classes=1000)
    assert [s[0].residual.unit1.conv.module.out_channels for s in large.body] == [128, 256, 512, 1024]


def test_residual_alpha_and_shortcut_norm():
    m = models.create("resnet19", num_classes=10, width=0.125)
    block = m.body.stage1[0]  # identity shortcut
    assert block.residual.unit1.bn.alpha == 1.0
    assert math.isclose(block.residual.unit2.bn.alpha, 2 ** -0.5)
    assert isinstance(block.shortcut.bn, TdBatchNorm2d) and math.isclose(block.shortcut.bn.alpha, 2 ** -0.5)
    proj = models.create("resnet19", num_classes=10, width=0.125, shortcut_norm="projection")
    assert len(proj.body.stage1[0].shortcut) == 0  # identity without tdBN
    assert isinstance(proj.body.stage2[0].shortcut.bn, TdBatchNorm2d)


def test_options_reach_every_layer():
    m = models.create("resnet19", num_classes=10, width=0.125, tau=0.5, v_th=0.3, surrogate_width=0.5)
    lifs = [x for x in m.modules() if isinstance(x, tdbn.LIF)]
    assert lifs and all(x.tau == 0.5 and x.v_th == 0.3 and x.surrogate_width == 0.5 for x in lifs)
    assert all(x.v_th == 0.3 for x in m.modules() if isinstance(x, TdBatchNorm2d))
    none = models.create("plain", num_classes=10, width=0.125, norm="none")
    assert not any(isinstance(x, TdBatchNorm2d) for x in none.modules())


def test_static_input_equals_repeated_frames():
    m = models.create("resnet19", num_classes=10, width=0.0625, timesteps=3).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(m(x), m(x.unsqueeze(0).expand(3, -1, -1, -1, -1)), rtol=1e-5, atol=1e-5)


def test_unknown_name_and_option():
    with pytest.raises(ValueError, match="resnet19"):
        models.create("resnet18", num_classes=10)
    with pytest.raises(ValueError, match="timesteps"):
        models.create("resnet19", num_classes=10, time_steps=4)
    with pytest.raises(ValueError, match="norm"):
        models.create("resnet19", num_classes=10, norm="layer")


def test_bad_input_layout():
    m = models.create("resnet19", num_classes=10, width=0.0625)
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        m(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\[T, N, C, H, W\]"):
        m(torch.randn(32, 32))


def test_integer_images_and_zero_time_steps_are_clear_errors():
    m = models.create("resnet19", num_classes=10, width=0.0625, timesteps=2, input_size=8)
    with pytest.raises(ValueError, match="floating-point input.*x.float"):
        m(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="at least one time step"):
        tdbn.LIF()(torch.zeros(0, 2, 4))
