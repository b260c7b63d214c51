"""Training objectives on the decoding layer's outputs ``O [T, N, K]`` (one row of class scores per step).

- The paper's (Eq. 11-12): cross-entropy of the time-averaged scores ``Q = (1/T) sum_t O_t``:
  ``F.cross_entropy(O.mean(0), y)``, what :class:`tdbn.models.SpikingNet` returns by default.
- TET, temporal efficient training (Deng et al., ICLR 2022): the cross-entropy of *every* step's scores, averaged
  over the steps, plus a small pull of every score towards a constant ``phi``::

      L = (1 - lambda) * (1/T) sum_t CE(O_t, y) + lambda * (1/T) sum_t MSE(O_t, phi)

  Each step must classify on its own, which the authors show flattens the loss landscape and lets a network
  trained at one T be run at fewer steps; the MSE term keeps the per-step scores from growing without bound.
  Defaults ``lambda = 1e-3``, ``phi = 1.0``: the values of the authors' published training code (the paper
  writes the regularizer with ``phi = V_th`` and a small lambda). Inference is unchanged: the prediction is still
  the arg-max of the time-averaged scores (Eq. 11).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

__all__ = ["TET_LAMBDA", "TET_PHI", "tet_loss"]

TET_LAMBDA = 1e-3  # the authors' code default
TET_PHI = 1.0  # the authors' code default ("means")


def tet_loss(outputs: Tensor, target: Tensor, *, lam: float = TET_LAMBDA, phi: float = TET_PHI,
             label_smoothing: float = 0.0) -> Tensor:
    """The TET loss of ``outputs [T, N, K]`` (every step's class scores) for labels ``target [N]`` (module docstring).

    ``label_smoothing`` smooths the targets of every step's cross-entropy as :func:`torch.nn.functional.cross_entropy`
    does (0: the published loss).

    Example:
        >>> O = torch.tensor([[[2.0, 0.0]], [[0.0, 2.0]]])  # [T=2, N=1, K=2]: right at step 0, wrong at step 1
        >>> y = torch.tensor([0])
        >>> ce = (F.cross_entropy(O[0], y) + F.cross_entropy(O[1], y)) / 2
        >>> mse = ((O - 1.0) ** 2).mean()
        >>> torch.allclose(tet_loss(O, y, lam=0.1), 0.9 * ce + 0.1 * mse)
        True
    """
    if outputs.dim() != 3:
        raise ValueError(f"tet_loss expects every step's class scores [T, N, K], got shape {tuple(outputs.shape)}: "
                         "call the model with per_step=True")
    if target.shape != outputs.shape[1:2]:
        raise ValueError(f"tet_loss: {target.shape[0] if target.dim() == 1 else tuple(target.shape)} labels for "
                         f"a batch of {outputs.shape[1]} (outputs {tuple(outputs.shape)})")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"tet_loss: lam must be in [0, 1], got {lam}")
    T, N, K = outputs.shape
    # every step has the same N samples, so the mean over T*N rows is the mean over t of each step's mean
    ce = F.cross_entropy(outputs.reshape(T * N, K), target.repeat(T), label_smoothing=label_smoothing)
    if lam == 0.0:
        return ce
    mse = F.mse_loss(outputs, torch.full_like(outputs, phi))
    return (1.0 - lam) * ce + lam * mse
