"""Depth study at a longer budget: schedules, periodic evaluation, gradient norms, resume and parallel workers."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from tdbn.analysis import cli
from tdbn.analysis import depth as depth_mod
from tdbn.analysis import training
from tdbn.analysis.cli import main
from tdbn.analysis.depth import depth_run, depth_study, run_name, study_order
from tdbn.train import config as train_config
from tdbn.train.optim import build_optimizer, build_scheduler


def _data():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 1, 8, 8, generator=g), torch.arange(24) % 3
    x[:, :, :4] += y.view(-1, 1, 1, 1).float()  # something to learn
    return (x, y), (x[:12], y[:12])


TINY = dict(archs=["resnet"], depths=[8], norms=["tdbn", "bn"], width=0.0625, batch_size=8, iterations=4,
            eval_every=2)


def _comparable(study) -> list[dict]:
    rows = study.to_dict()["runs"]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _lrs_of_sgd_steps(iterations: int, lr: float, schedule: str) -> list[float]:
    """The learning rate of every update ``sgd_steps`` makes (read by an optimizer step hook), on a linear model."""
    seen = []
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
    g = torch.Generator().manual_seed(0)
    data = iter([(torch.randn(4, 5, generator=g), torch.arange(4) % 3)] * iterations)
    try:
        training.sgd_steps(torch.nn.Linear(5, 3), data, iterations=iterations, lr=lr, schedule=schedule)
    finally:
        handle.remove()
    return seen


def _lambda_lr(iterations: int, lr: float, schedule: str) -> list[float]:
    """The training stack's learning rates (its ``LambdaLR``) for a run of ``iterations`` epochs of one step."""
    cfg = train_config.OptimConfig(epochs=iterations, lr=lr, weight_decay=0.0, schedule=schedule)
    opt = build_optimizer(torch.nn.Linear(5, 3), cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=1)
    out = []
    for _ in range(iterations):
        out.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("schedule", training.SCHEDULES)
@pytest.mark.parametrize("iterations", [1, 5, 8, 13])
def test_the_analysis_schedule_is_the_training_stacks_step_by_step(schedule, iterations):
    assert _lrs_of_sgd_steps(iterations, 0.3, schedule) == _lambda_lr(iterations, 0.3, schedule)


def test_multistep_is_the_former_step_schedule_exactly():
    """``multistep`` (formerly ``step`` in the analysis): lr, lr/10 from iteration iterations // 2, lr/100 from
    (3 x iterations) // 4, the same floats as before."""
    for iterations in range(1, 41):
        former = [0.1 * 0.1 ** ((s >= iterations // 2) + (s >= (3 * iterations) // 4)) for s in range(iterations)]
        assert _lambda_lr(iterations, 0.1, "multistep") == former, iterations
    assert _lrs_of_sgd_steps(8, 1.0, "multistep") == pytest.approx([1.0] * 4 + [0.1] * 2 + [0.01] * 2)
    cosine = _lrs_of_sgd_steps(10, 0.1, "cosine")
    assert cosine[0] == 0.1 and cosine[5] == pytest.approx(0.05) and cosine[9] < 0.003


def test_schedule_names_are_the_training_stacks_and_the_former_step_is_refused(capsys):
    assert set(training.SCHEDULES) <= set(train_config.SCHEDULES) and cli.SCHEDULES == training.SCHEDULES
    with pytest.raises(ValueError, match="'step'.*is now called 'multistep'.*optim.lr_step"):
        training.sgd_steps(torch.nn.Linear(5, 3), iter([]), iterations=4, schedule="step")
    with pytest.raises(ValueError, match="unknown schedule 'linear'; valid: constant, cosine, multistep"):
        training.optim_config(iterations=4, schedule="linear")
    train, test = _data()
    with pytest.raises(ValueError, match="now called 'multistep'"):
        depth_study(train, test, **TINY, schedule="step")
    with pytest.raises(SystemExit) as exit_:
        main(["depth", "--schedule", "step", "--no-plot"])
    assert exit_.value.code == 2 and "now called 'multistep'" in capsys.readouterr().err


def test_order_puts_normalized_nets_first_and_seeds_last():
    order = study_order(["resnet", "plain"], [50, 8], ["none", "tdbn", "bn"], [0, 1])
    assert order[:4] == [("resnet", 8, "tdbn", 0), ("resnet", 8, "bn", 0), ("resnet", 50, "tdbn", 0),
                         ("resnet", 50, "bn", 0)]
    assert order[8] == ("resnet", 8, "none", 0) and order[12][3] == 1 and len(order) == 24


def test_periodic_evaluation_best_and_grad_norms():
    train, test = _data()
    run = depth_run("resnet", 8, "tdbn", train=train, test=test, width=0.0625, timesteps=2, batch_size=8,
                    iterations=5, lr=0.1, momentum=0.9, weight_decay=0.0, tau=0.25, seed=0, schedule="cosine",
                    eval_every=2, grad_norm_iterations=3)
    assert [e["iteration"] for e in run.evaluations] == [2, 4, 5]
    assert run.test_accuracy == run.evaluations[-1]["test_accuracy"]
    assert run.best_test_accuracy_recalibrated == max(e["test_accuracy_recalibrated"] for e in run.evaluations)
    assert run.best_test_accuracy_recalibrated >= run.test_accuracy_recalibrated
    gn = run.grad_norms
    assert gn["iterations"] == 3
    assert len(gn["layers"]) == len(gn["mean_norms"]) >= 6  # 3 blocks x 2 convs (+ projections)
    assert all(math.isfinite(v) and v > 0 for v in gn["mean_norms"])
    once = depth_run("resnet", 8, "tdbn", train=train, test=test, width=0.0625, timesteps=2, batch_size=8,
                     iterations=5, lr=0.1, momentum=0.9, weight_decay=0.0, tau=0.25, seed=0, schedule="cosine")
    # testing during training changes nothing in training (the recalibration runs on a copy)
    assert once.test_accuracy_recalibrated == run.test_accuracy_recalibrated and once.train_loss == run.train_loss
    assert once.best_test_accuracy is None and once.grad_norms is None


def test_resume_skips_finished_nets_and_gives_the_same_table(tmp_path, monkeypatch):
    train, test = _data()
    first = depth_study(train, test, **TINY, grad_norm_nets=[("resnet", 8, "bn")], grad_norm_iterations=2,
                        results_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.glob("*.json"))
    assert files == ["resnet-8-bn-seed0.json", "resnet-8-tdbn-seed0.json"]
    saved = json.loads((tmp_path / "resnet-8-bn-seed0.json").read_text())
    assert saved["settings"]["grad_norm_iterations"] == 2 and saved["run"]["grad_norms"]["iterations"] == 2
    assert not list(tmp_path.glob("*.tmp"))  # written atomically: no temporary file left

    trained = []
    real = depth_mod.depth_run
    monkeypatch.setattr(depth_mod, "depth_run", lambda *a, **k: trained.append(k["norm"]) or real(*a, **k))
    logs = []
    again = depth_study(train, test, **TINY, grad_norm_nets=[("resnet", 8, "bn")], grad_norm_iterations=2,
                        results_dir=tmp_path, log=logs.append)
    assert trained == [] and "2 of 2 nets already" in logs[0]
    assert again.markdown_table() == first.markdown_table()
    assert again.markdown_table(best=True) == first.markdown_table(best=True)
    assert [r.seconds for r in again.runs] == [r.seconds for r in first.runs]  # loaded, not rerun

    (tmp_path / "resnet-8-tdbn-seed0.json").unlink()  # an interrupted study: one net missing
    third = depth_study(train, test, **TINY, grad_norm_nets=[("resnet", 8, "bn")], grad_norm_iterations=2,
                        results_dir=tmp_path)
    assert trained == ["tdbn"] and _comparable(third) == _comparable(first)


def test_resume_with_other_settings_is_a_clear_error_and_keeps_the_file(tmp_path):
    train, test = _data()
    depth_study(train, test, **(TINY | {"norms": ["tdbn"]}), results_dir=tmp_path)
    path = tmp_path / f"{run_name('resnet', 8, 'tdbn', 0)}.json"
    before = path.read_text()
    with pytest.raises(ValueError, match=r"other settings \(iterations: 4 there, 6 now\).*--results-dir"):
        depth_study(train, test, **(TINY | {"norms": ["tdbn"], "iterations": 6}), results_dir=tmp_path)
    assert path.read_text() == before


def test_partial_study_table_marks_missing_nets_and_single_seed_cells():
    train, test = _data()
    done = depth_study(train, test, **(TINY | {"norms": ["tdbn"]}), seeds=[0])
    partial = depth_mod.DepthStudy(done.config | {"depths": [8, 10], "seeds": [0, 1]}, runs=done.runs, planned=4)
    table = partial.markdown_table()
    assert "| depth 8 | depth 10 |" in table and "(n=1) | - |" in table
    assert partial.progress() == "1 of 4 nets done"


def test_parallel_workers_give_the_serial_numbers(tmp_path):
    train, test = _data()
    serial = depth_study(train, test, **TINY, threads=1, jobs=1)
    parallel = depth_study(train, test, **TINY, threads=1, jobs=2, results_dir=tmp_path)
    assert _comparable(parallel) == _comparable(serial)
    assert [r.key for r in parallel.runs] == [("resnet", 8, "tdbn", 0), ("resnet", 8, "bn", 0)]
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_depth_command_budget_in_epochs_resume_and_grad_norms(tmp_path, shared_mnist):
    args = ["depth", "--data-root", str(shared_mnist / "mnist" / "mnist.npz"), "--size", "8", "--per-class", "4",
            "--test-per-class", "2", "--archs", "resnet", "--depths", "8", "--norms", "tdbn", "bn", "--seeds", "0",
            "--width", "0.0625", "--batch-size", "8", "--epochs", "2", "--schedule", "multistep",
            "--eval-every", "5", "--grad-norms", "resnet-8-tdbn", "--grad-norm-iterations", "3", "--no-plot", "--out",
            str(tmp_path / "d")]
    assert main(args) == 0
    result = json.loads((tmp_path / "d.json").read_text())
    assert result["config"]["iterations"] == 10 and result["config"]["schedule"] == "multistep"  # 2 x (40 // 8)
    assert result["done"] == result["planned"] == 2 and "table_markdown_best_recalibrated" in result
    runs = {r["norm"]: r for r in result["runs"]}
    assert runs["tdbn"]["grad_norms"]["iterations"] == 3 and runs["bn"]["grad_norms"] is None
    assert sorted(p.name for p in (tmp_path / "d_runs").iterdir()) == [
        "resnet-8-bn-seed0.json", "resnet-8-tdbn-seed0.json"]
    curves = json.loads((tmp_path / "d_grad_norms.json").read_text())["curves"]
    assert [(c["norm"], c["seeds"]) for c in curves] == [("tdbn", [0])]
    csv = (tmp_path / "d_grad_norms.csv").read_text().splitlines()
    assert csv[0].startswith("arch,depth,norm,seed") and len(csv) == 1 + len(curves[0]["layers"])
    (tmp_path / "d_runs" / "resnet-8-bn-seed0.json").unlink()
    assert main([*args, "--report-only"]) == 0  # trains nothing: reports the one net there
    report = json.loads((tmp_path / "d.json").read_text())
    assert report["done"] == 1 and report["runs"] == result["runs"][:1]
    assert main(args) == 0  # resumed: the missing net trained again, with the same numbers
    rerun = json.loads((tmp_path / "d.json").read_text())["runs"]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in rerun] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in result["runs"]]
    with pytest.raises(ValueError, match="ARCH-DEPTH-NORM"):
        main(["resnet50" if a == "resnet-8-tdbn" else a for a in args])


def test_grad_norm_figure_of_the_study_nets(tmp_path):
    from tdbn.analysis.figures import make_depth_grad_norms

    train, test = _data()
    study = depth_study(train, test, **TINY, grad_norm_nets=[("resnet", 8, "tdbn"), ("resnet", 8, "bn")],
                        grad_norm_iterations=2)
    result = make_depth_grad_norms(tmp_path / "g", study)
    assert [c["norm"] for c in result["curves"]] == ["tdbn", "bn"]
    assert all(c["ratio_max_min"] >= 1 for c in result["curves"])
    assert (tmp_path / "g.png").stat().st_size > 1000 and (tmp_path / "g.csv").is_file()
