"""TET (temporal efficient training) as a training option: the loss against a transcription of its formula, the
training step against a hand-written one, and the configuration."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tdbn
from tdbn.functional import tet_loss
from tdbn.train import load_config, train
from tdbn.train.amp import Precision
from tdbn.train.distributed import Context
from tdbn.train.engine import Objective, train_one_epoch
from tdbn.train.loaders import Shard
from tdbn_train_helpers import metrics, one_thread, tiny  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64


def _formula(outputs: torch.Tensor, y: torch.Tensor, lam: float, phi: float) -> torch.Tensor:
    """The paper's formula read literally: (1 - lambda) * (1/T) sum_t CE(O_t, y) + lambda * (1/T) sum_t MSE(O_t, phi),
    MSE(O_t, phi) = mean over the batch and classes of (O_t - phi)^2."""
    T = outputs.shape[0]
    ce = sum(F.cross_entropy(outputs[t], y) for t in range(T)) / T
    mse = sum(((outputs[t] - phi) ** 2).mean() for t in range(T)) / T
    return (1 - lam) * ce + lam * mse


@pytest.mark.parametrize("lam,phi", [(1e-3, 1.0), (0.3, 0.5), (0.0, 1.0), (1.0, 2.0)])
def test_tet_loss_and_its_gradient_equal_the_formula(lam, phi):
    outputs = torch.randn(4, 6, 5, dtype=F64, requires_grad=True)
    y = torch.randint(0, 5, (6,))
    ours = tet_loss(outputs, y, lam=lam, phi=phi)
    ref = _formula(outputs, y, lam, phi)
    torch.testing.assert_close(ours, ref, rtol=1e-14, atol=1e-14)
    (g1,) = torch.autograd.grad(ours, outputs)
    (g2,) = torch.autograd.grad(ref, outputs)
    torch.testing.assert_close(g1, g2, rtol=1e-13, atol=1e-15)


def test_tet_with_one_step_and_no_regularizer_is_the_papers_loss():
    outputs, y = torch.randn(1, 8, 10, dtype=F64), torch.randint(0, 10, (8,))
    torch.testing.assert_close(tet_loss(outputs, y, lam=0.0), F.cross_entropy(outputs.mean(0), y))  # Eq. 12, T = 1


def test_tet_loss_refuses_time_averaged_scores_and_bad_arguments():
    with pytest.raises(ValueError, match=r"\[T, N, K\].*per_step=True"):
        tet_loss(torch.randn(8, 10), torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match="lam must be in"):
        tet_loss(torch.randn(2, 8, 10), torch.zeros(8, dtype=torch.long), lam=1.5)
    with pytest.raises(ValueError, match="labels for a batch of 8"):
        tet_loss(torch.randn(2, 8, 10), torch.zeros(7, dtype=torch.long))


def test_model_per_step_scores_average_to_its_output():
    model = tdbn.models.create("resnet19", num_classes=10, in_channels=1, width=1 / 16, timesteps=3,
                               input_size=8).double().eval()
    x = torch.randn(4, 1, 8, 8, dtype=F64)
    with torch.no_grad():
        steps = model(x, per_step=True)
        assert steps.shape == (3, 4, 10)
        assert torch.equal(steps.mean(0), model(x))


def test_a_tet_training_step_is_the_hand_written_one():
    """One SGD step of train_one_epoch with the TET objective == the same step written out with the formula."""
    torch.manual_seed(0)
    model = tdbn.models.create("resnet19", num_classes=10, in_channels=1, width=1 / 16, timesteps=2,
                               input_size=8).double()
    ref = tdbn.models.create("resnet19", num_classes=10, in_channels=1, width=1 / 16, timesteps=2,
                             input_size=8).double()
    ref.load_state_dict(model.state_dict())
    x, y = torch.randn(8, 1, 8, 8, dtype=F64), torch.randint(0, 10, (8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    ctx = Context(Shard(), torch.device("cpu"))
    out = train_one_epoch(model, [(x, y)], opt, sched, Precision.create("fp32", ctx.device), ctx, epoch=0, epochs=1,
                          objective=Objective("tet", 0.2, 0.5))
    ref.train()
    loss = _formula(ref(x, per_step=True), y, 0.2, 0.5)
    loss.backward()
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    ref_opt.step()
    assert out["loss"] == pytest.approx(float(loss.detach()), rel=1e-12)
    for (name, a), b in zip(model.state_dict().items(), ref.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14, msg=name)


def test_train_with_tet_records_the_objective(tmp_path):
    run = tmp_path / "run"
    train(load_config(None, tiny(f"run_dir={run}", "optim.loss=tet", "dtype=float64")), log=lambda s: None)
    cfg = tdbn.saved_config(run)
    assert cfg.optim.loss == "tet" and cfg.optim.tet_lambda == 1e-3 and cfg.optim.tet_phi == 1.0
    assert [r["epoch"] for r in metrics(run)] == [1, 2]


@pytest.mark.parametrize("override,message", [
    ("optim.loss=mse", r"config key 'optim.loss' must be one of \['ce', 'tet'\], got 'mse'"),
    ("optim.tet_lambda=1.5", r"config key 'optim.tet_lambda' must be in \[0, 1\], got 1.5"),
    ("optim.tet_phi=.inf", r"config key 'optim.tet_phi' must be a finite number"),
    ("optim.label_smoothing=1.0", r"config key 'optim.label_smoothing' must be in \[0, 1\), got 1.0"),
])
def test_bad_tet_settings_are_refused_naming_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_label_smoothing_smooths_the_cross_entropy_of_either_loss():
    torch.manual_seed(0)
    scores, y = torch.randn(3, 4, 5), torch.randint(0, 5, (4,))
    ce = Objective("ce", label_smoothing=0.1)(scores.mean(0), y)
    torch.testing.assert_close(ce, F.cross_entropy(scores.mean(0), y, label_smoothing=0.1))
    assert not torch.allclose(ce, F.cross_entropy(scores.mean(0), y))
    tet = Objective("tet", tet_lambda=0.0, label_smoothing=0.1)(scores, y)
    torch.testing.assert_close(tet, sum(F.cross_entropy(scores[t], y, label_smoothing=0.1) for t in range(3)) / 3)
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        Objective(label_smoothing=1.0)
