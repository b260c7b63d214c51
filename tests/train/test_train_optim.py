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


@pytest.mark.parametrize("norm", ["tdbn", "bn", "tebn", "bntt", "tab", "mpbn"])
def test_norm_weight_decay_splits_norms_and_biases_from_weights(norm):
    """``optim.norm_weight_decay``: the normalizations' parameters (1-D or per step) and every bias in one group,
    the conv and fc weights in the other; every parameter in exactly one."""
    from tdbn.models.registry import create

    net = create("resnet19", num_classes=10, width=0.125, timesteps=2, norm=norm)
    opt = build_optimizer(net, OptimConfig(weight_decay=5e-4, norm_weight_decay=0.0))
    weights, norms = opt.param_groups
    assert (weights["weight_decay"], norms["weight_decay"]) == (5e-4, 0.0)
    names = {id(p): n for n, p in net.named_parameters()}
    assert sorted(names[id(p)] for g in opt.param_groups for p in g["params"]) == sorted(names.values())
    for p in weights["params"]:  # conv and fc weights: 4-D and 2-D, inside a conv or a linear
        assert names[id(p)].endswith("weight") and p.dim() in (2, 4) and ".bn." not in names[id(p)]
    assert any(names[id(p)].endswith(".bn.weight") for p in norms["params"])
    assert all(names[id(p)].endswith(("bias", ".weight", ".p")) for p in norms["params"])


def test_norm_weight_decay_none_is_one_group_as_before_and_decay_applies_per_group():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    same = build_optimizer(net, OptimConfig(weight_decay=1e-2))
    assert len(same.param_groups) == 1 and same.param_groups[0]["weight_decay"] == 1e-2
    split = build_optimizer(net, OptimConfig(lr=1.0, momentum=0.0, weight_decay=0.5, norm_weight_decay=0.0))
    before = [p.detach().clone() for p in net.parameters()]
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    split.step()  # zero gradients: only decay moves a parameter, and only the linear weight decays
    moved = [not torch.equal(a, p) for a, p in zip(before, net.parameters())]
    assert moved == [True, False, False, False]  # linear weight, linear bias, bn weight, bn bias
    torch.testing.assert_close(net[0].weight, before[0] * 0.5)


def test_nesterov_and_bad_decays_are_refused_naming_the_key():
    assert build_optimizer(torch.nn.Linear(2, 2), OptimConfig(nesterov=True)).param_groups[0]["nesterov"]
    for overrides, message in [({"norm_weight_decay": -1.0}, "optim.norm_weight_decay"),
                               ({"weight_decay": -1e-4}, "optim.weight_decay"),
                               ({"nesterov": True, "momentum": 0.0}, "optim.nesterov")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            config_from_dict({"optim": overrides})


def test_adamw_keeps_the_groups_and_decouples_decay():
    """``optim.optimizer=adamw``: AdamW with betas (momentum, 0.999), the same two decay groups as SGD, and decay
    that scales a weight by ``1 - lr * weight_decay`` whatever its gradient (decoupled)."""
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    cfg = config_from_dict({"optim": {"optimizer": "adamw", "lr": 0.1, "weight_decay": 0.5,
                                      "norm_weight_decay": 0.0, "momentum": 0.8}}).optim
    opt = build_optimizer(net, cfg)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.8, 0.999)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]
    before = net[0].weight.detach().clone()
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(net[0].weight, before * (1 - 0.1 * 0.5))
    with pytest.raises(ValueError, match=re.escape("optim.optimizer")):
        config_from_dict({"optim": {"optimizer": "adam"}})
    with pytest.raises(ValueError, match=re.escape("optim.nesterov")):
        config_from_dict({"optim": {"optimizer": "adamw", "nesterov": True}})
