"""Learning-rate schedules (``optim.schedule``): each defined once by ``lr_factor`` and followed per iteration."""

from __future__ import annotations

import json
import re

import pytest
import torch

from tdbn.train import config_from_dict, config_to_dict, load_config
from tdbn.train.config import SCHEDULES, OptimConfig
from tdbn.train.optim import build_optimizer, build_scheduler, lr_factor


def _per_step(cfg: OptimConfig, steps_per_epoch: int) -> list[float]:
    """The learning rate of every iteration of a run of ``cfg``, as the engine steps its ``LambdaLR``."""
    opt = build_optimizer(torch.nn.Linear(2, 2), cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch)
    out = []
    for _ in range(cfg.epochs * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_every_schedule_has_a_factor():
    for name in SCHEDULES:
        assert lr_factor(OptimConfig(schedule=name), 0) == 1.0
    with pytest.raises(ValueError, match="unknown schedule 'linear'; valid: step, cosine, multistep, constant"):
        lr_factor(OptimConfig(schedule="linear"), 0)


def test_step_and_cosine_keep_their_meaning():
    """The paper presets' step decay (x lr_gamma every lr_step epochs) and the default cosine, unchanged."""
    cfg = load_config("cifar10_resnet19_t2").optim
    assert (cfg.schedule, cfg.lr_step, cfg.lr_gamma) == ("step", 35, 0.1)
    assert [lr_factor(cfg, e) for e in (0, 34.5, 35, 69.9, 70, 105)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.001])
    cosine = OptimConfig(epochs=4)
    assert cosine.schedule == "cosine" and [lr_factor(cosine, e) for e in (0, 2, 4)] == pytest.approx([1, 0.5, 0])


def test_multistep_decays_at_the_start_of_whole_epochs_at_fractions_of_the_budget():
    cfg = load_config(None, ["optim.schedule=multistep", "optim.epochs=10", "optim.lr=1.0"]).optim
    assert cfg.lr_milestones == [0.5, 0.75] and cfg.lr_gamma == 0.1  # the defaults: x0.1 at 1/2 and 3/4
    lrs = _per_step(cfg, steps_per_epoch=3)  # milestones: epochs floor(5.0) = 5 and floor(7.5) = 7
    assert lrs == pytest.approx([1.0] * 15 + [0.1] * 6 + [0.01] * 9)
    # the same as torch's MultiStepLR stepped once per epoch with those milestones
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    ref = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[5, 7], gamma=0.1)
    per_epoch = []
    for _ in range(10):
        per_epoch.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    assert lrs[::3] == pytest.approx(per_epoch)
    # one step per epoch: lr / 10 from step N // 2, lr / 100 from step (3 x N) // 4, for odd N too
    for n in (1, 2, 3, 7, 9, 30):
        steps = _per_step(OptimConfig(schedule="multistep", epochs=n, lr=0.1), steps_per_epoch=1)
        assert steps == [0.1 * 0.1 ** ((s >= n // 2) + (s >= (3 * n) // 4)) for s in range(n)]


def test_multistep_milestones_from_overrides_and_warm_up():
    cfg = load_config(None, ["optim.schedule=multistep", "optim.epochs=20", "optim.lr_milestones=[0.3, 0.6, 0.9]",
                             "optim.lr_gamma=0.5", "optim.warmup_epochs=2"]).optim
    assert cfg.lr_milestones == [0.3, 0.6, 0.9] and all(isinstance(m, float) for m in cfg.lr_milestones)
    assert [lr_factor(cfg, e) for e in (1, 5.9, 6, 12, 18)] == pytest.approx([0.55, 1, 0.5, 0.25, 0.125])
    assert lr_factor(OptimConfig(schedule="multistep", lr_milestones=[]), 100) == 1.0  # no milestone: constant
    again = config_from_dict(json.loads(json.dumps(config_to_dict(load_config(None, ["optim.lr_milestones=[0.4]"])))))
    assert again.optim.lr_milestones == [0.4]


def test_constant_schedule_and_its_warm_up():
    cfg = OptimConfig(schedule="constant", epochs=3)
    assert _per_step(cfg, steps_per_epoch=2) == [0.1] * 6
    warm = OptimConfig(schedule="constant", epochs=3, warmup_epochs=1)
    assert [lr_factor(warm, e) for e in (0, 0.5, 1, 3)] == pytest.approx([0.1, 0.55, 1, 1])


@pytest.mark.parametrize("value,message", [
    ("[0.75, 0.5]", "'optim.lr_milestones' must be ascending fractions of optim.epochs in (0, 1)"),
    ("[0.5, 1.0]", "'optim.lr_milestones' must be ascending fractions"),
    ("[0, 0.5]", "'optim.lr_milestones' must be ascending fractions"),
    ("[.nan]", "'optim.lr_milestones' must be ascending fractions"),
    ("0.5", "'optim.lr_milestones' expects list"),
    ("[half]", "'optim.lr_milestones[0]' expects float"),
])
def test_bad_milestones_are_refused_naming_the_key(value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(None, ["optim.schedule=multistep", f"optim.lr_milestones={value}"])
