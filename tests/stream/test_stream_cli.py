"""``tdbn stream`` and ``tdbn analyze latency`` on a tiny network trained on real N-MNIST recordings."""

from __future__ import annotations

import json
import re

import pytest
import torch

from cli_run import tdbn as run_tdbn
from tdbn.cli import main
from tdbn.data import read_bin_events, to_frames
from tdbn.stream import load_run
from tdbn.stream.run_dir import eval_batches
from tdbn.train import evaluate_checkpoint, load_config, train


@pytest.fixture(scope="module")
def nmnist_run(tmp_path_factory, shared_nmnist):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("stream") / "run"
    cfg = load_config("nmnist", [
        f"data.root={shared_nmnist / 'nmnist-small'}", "model.width=0.0625", "model.timesteps=4",
        "data.train_limit=40", "data.test_limit=12", "optim.batch_size=8", "optim.epochs=1", "progress=false",
        f"run_dir={run_dir}",
    ])
    train(cfg, log=lambda s: None)
    yield run_dir
    torch.set_num_threads(threads)


def test_stream_cli_prints_each_step_and_the_eval_prediction(nmnist_run, shared_nmnist, tmp_path, capsys):
    path = shared_nmnist / "nmnist-small" / "60003.bs2"
    out = tmp_path / "stream.json"
    assert main(["stream", str(nmnist_run), "--events", str(path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("\nstep ") == 4 and "real-time factor" in text and "events/s" in text
    result = json.loads(out.read_text())
    run = load_run(nmnist_run)
    ev = read_bin_events(path)
    with torch.no_grad():
        ref = run.model(to_frames(*ev, sensor_size=(34, 34), n_frames=4).unsqueeze(1))
    assert result["summary"]["prediction"] == int(ref.topk(5).indices[0, 0])
    assert result["steps"][-1]["score"] == float(ref.max())
    assert result["summary"]["events"] == ev.num_events and len(result["steps"]) == 4
    assert main(["stream", str(nmnist_run), "--events", str(path), "--fuse", "--quiet"]) == 0
    assert "\nstep " not in capsys.readouterr().out


def test_stream_summary_heads_with_the_steady_state(nmnist_run, shared_nmnist, tmp_path):
    """The first step (one-time allocations: often 100x a later one) is reported apart; the steady-state
    ms/step and real-time factor are the headline. The printed figures are the JSON summary's, rounded; the
    real-time factor is computed from the unrounded figures (never recomputed here from rounded ones)."""
    out = tmp_path / "stream.json"
    proc = run_tdbn("stream", nmnist_run, "--events", shared_nmnist / "nmnist-small" / "60001.bs2", "--quiet",
                    "--out", out)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    first = re.search(r"4 steps, \d+ events in [\d.]+ s; first step ([\d.]+) ms \(warm-up", lines[1])
    steady = re.fullmatch(r"steady state: ([\d.]+) ms/step \(([\d.]+) ms network\), [\d,]+ events/s, "
                          r"real-time factor ([\d.]+) for ([\d.]+) ms frames", lines[2])
    assert first and steady, proc.stdout
    s = json.loads(out.read_text())["summary"]
    assert s["realtime_factor"] == pytest.approx(s["window_ms"] / s["ms_per_step"], rel=1e-12)
    assert steady.groups() == (f"{s['ms_per_step']:.2f}", f"{s['model_ms_per_step']:.2f}",
                               f"{s['realtime_factor']:.1f}", f"{s['window_ms']:.3g}")
    assert first[1] == f"{s['warmup_ms']:.1f}"
    assert lines[3].startswith("prediction: ")


def test_stream_cli_clear_errors(nmnist_run, tmp_path, capsys):
    assert main(["stream", str(nmnist_run), "--events", str(tmp_path / "none.bs2")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["stream", str(tmp_path / "norun"), "--events", str(tmp_path / "none.bs2")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_latency_streamed_equals_batched_and_eval(nmnist_run, tmp_path, capsys):
    prefix = tmp_path / "latency"
    assert main(["analyze", "latency", "--checkpoint", str(nmnist_run), "--stream", "--out", str(prefix)]) == 0
    result = json.loads(prefix.with_suffix(".json").read_text())
    assert result["k"] == [1, 2, 3, 4] and result["samples"] == 12 and result["stream_equals_batched"]
    assert prefix.with_suffix(".png").stat().st_size > 0
    ev = evaluate_checkpoint(nmnist_run)
    assert result["top1"][-1] == ev["top1"] and result["stream"]["top1"][-1] == ev["top1"]
    assert "| 4 |" in capsys.readouterr().out
    n = sum(int(y.shape[0]) for _, y in eval_batches(load_run(nmnist_run)))
    assert n == 12  # the subset tdbn eval uses
