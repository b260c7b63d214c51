"""tdBN (Eq. 5-8): statistics over T, N, H, W; alpha * v_th applied in the forward pass."""

from __future__ import annotations

import pytest
import torch

from tdbn import TdBatchNorm1d, TdBatchNorm2d


@pytest.mark.parametrize("alpha, v_th", [(1.0, 0.5), (2 ** -0.5, 0.5), (1.0, 1.0)])
def test_init_output_statistics_2d(alpha, v_th):
    bn = TdBatchNorm2d(6, alpha=alpha, v_th=v_th)
    x = torch.randn(4, 8, 6, 5, 5) * 3 + 2
    y = bn(x)
    mean = y.mean(dim=(0, 1, 3, 4))
    var = y.var(dim=(0, 1, 3, 4), unbiased=False)
    torch.testing.assert_close(mean, torch.zeros(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(var, torch.full((6,), (alpha * v_th) ** 2), atol=1e-4, rtol=1e-4)


def test_init_output_statistics_1d():
    bn = TdBatchNorm1d(7, alpha=1.0, v_th=0.5)
    y = bn(torch.randn(3, 16, 7) * 5 - 1)
    torch.testing.assert_close(y.mean(dim=(0, 1)), torch.zeros(7), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=(0, 1), unbiased=False), torch.full((7,), 0.25), atol=1e-4, rtol=1e-4)


def test_matches_equation_by_hand():
    bn = TdBatchNorm2d(3, alpha=0.7, v_th=0.5, eps=1e-5)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, -0.5, 2.0]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
    x = torch.randn(2, 4, 3, 3, 3, dtype=torch.float64)
    bn = bn.double()
    y = bn(x)
    m = x.mean(dim=(0, 1, 3, 4), keepdim=True)
    v = ((x - m) ** 2).mean(dim=(0, 1, 3, 4), keepdim=True)  # biased, Eq. 8
    ref = bn.weight.view(1, 1, 3, 1, 1) * 0.7 * 0.5 * (x - m) / torch.sqrt(v + 1e-5) + bn.bias.view(1, 1, 3, 1, 1)
    torch.testing.assert_close(y, ref)


def test_gradcheck():
    bn = TdBatchNorm2d(2, alpha=0.8, v_th=0.5).double()
    x = torch.randn(2, 3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z, w, b: _bn_with(bn, z, w, b), (x, bn.weight, bn.bias))


def _bn_with(bn, x, w, b):
    from tdbn.functional import td_batch_norm

    return td_batch_norm(x, None, None, w, b, alpha=bn.alpha, v_th=bn.v_th, training=True, momentum=0.1, eps=bn.eps)


def test_eval_uses_running_statistics():
    bn = TdBatchNorm2d(3, momentum=1.0)  # running stats = last batch's
    x = torch.randn(2, 5, 3, 4, 4) * 2 + 1
    bn(x)
    bn.eval()
    x2 = torch.randn(2, 5, 3, 4, 4)
    y = bn(x2)
    n = x.numel() / 3
    m = x.mean(dim=(0, 1, 3, 4))
    v = x.var(dim=(0, 1, 3, 4), unbiased=False) * n / (n - 1)  # running var is unbiased, like torch BN
    torch.testing.assert_close(bn.running_mean, m)
    torch.testing.assert_close(bn.running_var, v)
    ref = 0.5 * (x2 - m.view(1, 1, 3, 1, 1)) / torch.sqrt(v.view(1, 1, 3, 1, 1) + bn.eps)
    torch.testing.assert_close(y, ref)


def test_state_dict_round_trip():
    a = TdBatchNorm2d(4, alpha=0.5)
    a(torch.randn(2, 3, 4, 2, 2))
    with torch.no_grad():
        a.weight.uniform_()
    b = TdBatchNorm2d(4, alpha=0.5)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    x = torch.randn(2, 3, 4, 2, 2)
    assert torch.equal(a(x), b(x))
    assert set(a.state_dict()) == {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}


def test_bad_layout_and_channels():
    with pytest.raises(ValueError, match=r"\[T, N, C, H, W\]"):
        TdBatchNorm2d(3)(torch.randn(4, 3, 8, 8))  # [N, C, H, W] without T
    with pytest.raises(ValueError, match="expects 3 channels"):
        TdBatchNorm2d(3)(torch.randn(2, 4, 5, 8, 8))
    with pytest.raises(ValueError, match=r"\[T, N, F\]"):
        TdBatchNorm1d(3)(torch.randn(4, 3))
    with pytest.raises(ValueError, match="v_th"):
        TdBatchNorm2d(3, v_th=0.0)
