"""Threshold-dependent batch normalization, tdBN (paper Eq. 5-8, Alg. 1).

For each channel k the statistics are taken over time, batch and space together (the ``T*N*H*W`` values
of that channel; Eq. 6-7, biased variance as in Eq. 8)::

    x_hat = alpha * v_th * (x - mean_k) / sqrt(var_k + eps)      (Eq. 5)
    y     = lambda_k * x_hat + beta_k                            (Eq. 8)

Merging T into the batch dimension turns this into ordinary per-channel batch normalization of a
``[T*N, C, ...]`` tensor whose affine weight is ``lambda * alpha * v_th``: the scale is applied in the
forward pass, so ``lambda`` itself starts at 1 and its gradient is the paper's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..operators import switches as _switches
from ..operators.batch_norm import td_batch_norm_train

Tensor = torch.Tensor


def td_batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    *,
    alpha: float,
    v_th: float,
    training: bool,
    momentum: float,
    eps: float,
    group: str = "",
) -> Tensor:
    """tdBN of ``x`` shaped ``[T, N, C, ...]``; statistics per channel over all other dimensions.

    In training mode, for 32/64-bit floats, this runs :func:`tdbn.operators.batch_norm.td_batch_norm_train` (unless
    :func:`tdbn.operators.lean_training` turned it off; ``torch.compile`` traces its operators as nodes): the same
    mathematics as :func:`td_batch_norm_plain` (values, running statistics and gradients equal up to float
    rounding) with faster CPU kernels. A tdBN followed by a LIF is better run as one unit
    (:func:`tdbn.operators.unit_ops.td_bn_lif`), which the models do.

    ``group``: in training mode, the name of a process group whose batches the statistics span (sync tdBN,
    ``ProcessGroup.group_name``); always through :func:`~tdbn.operators.batch_norm.td_batch_norm_train`, which
    reduces the per-channel sums in one all-reduce inside its operator (the same mathematics as the units; traced
    by ``torch.compile`` without a graph break).
    """
    if training and group:
        return td_batch_norm_train(
            x, running_mean, running_var, weight, bias, alpha=alpha, v_th=v_th, momentum=momentum, eps=eps,
            group=group,
        )
    if training and x.dtype in (torch.float32, torch.float64) and _switches.lean_enabled():
        return td_batch_norm_train(
            x, running_mean, running_var, weight, bias, alpha=alpha, v_th=v_th, momentum=momentum, eps=eps
        )
    return td_batch_norm_plain(
        x, running_mean, running_var, weight, bias, alpha=alpha, v_th=v_th, training=training, momentum=momentum,
        eps=eps,
    )


def td_batch_norm_plain(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    *,
    alpha: float,
    v_th: float,
    training: bool,
    momentum: float,
    eps: float,
) -> Tensor:
    """tdBN as plain ``F.batch_norm`` over ``[T*N, C, ...]`` with weight ``lambda * alpha * v_th``: the reference
    formulation, differentiated by autograd (16-bit inputs, and with the lean path off)."""
    scale = alpha * v_th
    w = x.new_full((x.shape[2],), scale) if weight is None else weight * scale
    y = F.batch_norm(x.flatten(0, 1), running_mean, running_var, w, bias, training, momentum, eps)
    return y.view(x.shape)

