"""BN-scale fusion (Eq. 9-10): the fused network spikes exactly like the original in eval mode."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

import tdbn
from tdbn import LIF, TdBatchNorm1d, TdBatchNorm2d, TimeDistributed
from tdbn.fusion import count_norm_layers
from tdbn.functional import bn_scale_shift, fold_into
from tdbn.layers.affine import ChannelAffine2d

from fusion_checks import assert_fused_equal, randomize_bn


def test_fold_formula_by_hand():
    # Eq. 9-10 written out for one channel
    rm, rv = torch.tensor([0.3]), torch.tensor([4.0])
    lam, beta = torch.tensor([2.0]), torch.tensor([0.1])
    scale, shift = bn_scale_shift(rm, rv, lam, beta, alpha=0.5, v_th=0.5, eps=0.0)
    w, b = fold_into(torch.tensor([[1.0, -2.0]]), torch.tensor([1.0]), scale, shift)
    s = 2.0 * 0.5 * 0.5 / 2.0
    torch.testing.assert_close(w, torch.tensor([[s, -2 * s]]))
    torch.testing.assert_close(b, torch.tensor([s * (1.0 - 0.3) + 0.1]))


def test_conv_bn_lif_sequence():
    net = nn.Sequential(
        OrderedDict(
            conv=TimeDistributed(nn.Conv2d(3, 8, 3, padding=1)),
            bn=TdBatchNorm2d(8, alpha=0.8),
            lif=LIF(),
            pool=TimeDistributed(nn.AvgPool2d(2)),
            flat=TimeDistributed(nn.Flatten()),
            fc=TimeDistributed(nn.Linear(8 * 4 * 4, 5, bias=False)),
            bn1=TdBatchNorm1d(5),
            lif1=LIF(),
        )
    )
    randomize_bn(net, 3, lambda: torch.randn(4, 6, 3, 8, 8))
    assert_fused_equal(net, torch.randn(4, 6, 3, 8, 8))
    fused = tdbn.fuse(net)
    assert isinstance(fused.bn, nn.Identity) and isinstance(fused.bn1, nn.Identity)
    assert fused.fc.module.bias is not None


def test_lone_tdbn_becomes_depthwise_conv():
    net = nn.Sequential(TdBatchNorm2d(4, alpha=0.7), LIF())
    randomize_bn(net, 2, lambda: torch.randn(3, 5, 4, 6, 6))
    assert_fused_equal(net, torch.randn(3, 5, 4, 6, 6))
    conv = tdbn.fuse(net)[0].module
    # a depthwise 1x1 conv to exporters, computed as a multiply-add (fast on the CPU)
    assert isinstance(conv, ChannelAffine2d)
    assert isinstance(conv, nn.Conv2d) and conv.groups == 4 and conv.kernel_size == (1, 1)
    x = torch.randn(7, 4, 6, 6)
    torch.testing.assert_close(conv(x), nn.functional.conv2d(x, conv.weight, conv.bias, groups=4))


def test_lone_tdbn1d_becomes_diagonal_linear():
    net = nn.Sequential(TdBatchNorm1d(4), LIF())
    randomize_bn(net, 2, lambda: torch.randn(3, 5, 4))
    assert_fused_equal(net, torch.randn(3, 5, 4))


def test_refuses_training_mode_and_leaves_original_untouched():
    net = nn.Sequential(TimeDistributed(nn.Conv2d(2, 2, 1)), TdBatchNorm2d(2), LIF())
    with pytest.raises(ValueError, match="eval"):
        tdbn.fuse(net)
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    tdbn.fuse(net)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert count_norm_layers(net) == 1
