"""BN-scale fusion for inference (paper Eq. 9-10).

Given a conv or linear layer ``W, B`` followed by a trained tdBN::

    W'[k] = lambda_k * alpha * v_th * W[k] / sqrt(sigma2_k + eps)                     (Eq. 9)
    B'[k] = lambda_k * alpha * v_th * (B[k] - mu_k) / sqrt(sigma2_k + eps) + beta_k   (Eq. 10)
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def bn_scale_shift(
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    *,
    alpha: float,
    v_th: float,
    eps: float,
) -> tuple[Tensor, Tensor]:
    """Per-channel ``(scale, shift)`` such that tdBN in eval mode is ``scale * x + shift``."""
    lam = torch.ones_like(running_mean) if weight is None else weight
    beta = torch.zeros_like(running_mean) if bias is None else bias
    scale = lam * (alpha * v_th) / torch.sqrt(running_var + eps)
    return scale, beta - running_mean * scale


def fold_into(
    weight: Tensor,
    bias: Tensor | None,
    scale: Tensor,
    shift: Tensor,
) -> tuple[Tensor, Tensor]:
    """Fold a per-output-channel affine map into a conv/linear ``(weight, bias)`` (Eq. 9-10).

    ``weight`` has output channels first (``[K, ...]``), as in ``nn.Conv*d`` and ``nn.Linear``.
    """
    w = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
    b = shift if bias is None else bias * scale + shift
    return w, b
