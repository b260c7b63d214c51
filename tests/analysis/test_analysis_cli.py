"""``tdbn analyze ...`` writes JSON (and PNG) files; depth study table; clear errors."""

from __future__ import annotations

import argparse
import json
import os
import stat

import pytest
import torch

import tdbn
from cli_run import tdbn as run_tdbn
from tdbn.analysis import depth_study
from tdbn.analysis.cli import add_subparser, main
from tdbn.analysis.figures import make_depth


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tdbn")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_registers_analyze_with_callables():
    args = _parser().parse_args(["analyze", "membrane", "--no-plot"])
    assert callable(args.func) and args.what == "membrane"


def test_membrane_and_firing_rates_write_json_and_png(tmp_path):
    assert main(["membrane", "--neurons", "500", "--out", str(tmp_path / "m")]) == 0
    assert main(["firing-rates", "--neurons", "500", "--out", str(tmp_path / "f")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert [p["variance"] for p in m["panels"]] == [0.25, 0.5, 1.0]
    f = json.loads((tmp_path / "f.json").read_text())
    assert len(f["panels"]) == 6
    assert (tmp_path / "m.png").stat().st_size > 1000 and (tmp_path / "f.png").stat().st_size > 1000


def test_ops_and_spikes_on_real_mnist(tmp_path, shared_mnist):
    common = ["--dataset", "mnist", "--data-root", str(shared_mnist / "mnist" / "mnist.npz"), "--size", "14",
              "--model", "resnet", "--option", "depth=8", "--option", "width=0.0625", "--option", "timesteps=2",
              "--num-images", "4", "--calibrate-norm"]
    assert main(["ops", *common, "--out", str(tmp_path / "ops")]) == 0
    assert main(["spikes", *common, "--fuse", "--no-plot", "--out", str(tmp_path / "spikes")]) == 0
    ops = json.loads((tmp_path / "ops.json").read_text())
    assert ops["images"] == 4 and ops["options"]["in_channels"] == 1
    assert ops["snn"]["additions_per_image"] > 0 and ops["ann"]["macs"] > 0
    assert ops["energy_model"]["ac_pj"] == 0.9
    spikes = json.loads((tmp_path / "spikes.json").read_text())
    assert len(spikes["layers"]) == 7  # encoding layer + 3 basic blocks x 2 LIF
    assert (tmp_path / "ops.png").stat().st_size > 1000 and not (tmp_path / "spikes.png").exists()


def test_grad_norms_command_on_real_mnist(tmp_path, shared_mnist):
    rc = main(["grad-norms", "--dataset", "mnist", "--data-root", str(shared_mnist / "mnist" / "mnist.npz"),
               "--size", "8", "--per-class", "2", "--depth", "6", "--width", "0.0625", "--timesteps", "2",
               "--batch-size", "4", "--iterations", "2", "--taus", "0.25", "--norms", "tdbn", "none",
               "--out", str(tmp_path / "g")])
    assert rc == 0
    curves = json.loads((tmp_path / "g.json").read_text())["curves"]
    assert [c["label"] for c in curves] == ["tdbn, tau=0.25", "none, tau=0.25"]
    assert all(len(c["mean_norms"]) == 4 for c in curves)
    assert (tmp_path / "g.png").is_file()


def test_bad_model_option_is_a_clear_error(shared_mnist):
    with pytest.raises(ValueError, match="unknown option"):
        main(["ops", "--dataset", "mnist", "--data-root", str(shared_mnist / "mnist" / "mnist.npz"),
              "--model", "plain", "--option", "widht=0.5", "--num-images", "2", "--no-plot"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        main(["ops", "--model", "plain", "--option", "width", "--no-plot"])


def test_depth_study_table_figure_and_odd_resnet_depth(tmp_path):
    x, y = torch.randn(16, 1, 8, 8), torch.arange(16) % 4
    study = depth_study((x, y), (x, y), depths=[8], norms=["tdbn", "none"], width=0.0625, batch_size=8,
                        iterations=2)
    assert len(study.runs) == 4 and all(0 <= r.test_accuracy <= 1 for r in study.runs)
    table = study.markdown_table()
    assert "| plain | tdbn |" in table and "| resnet | none |" in table and "depth 8" in table
    make_depth(tmp_path / "d", study)
    saved = json.loads((tmp_path / "d.json").read_text())
    assert len(saved["runs"]) == 4 and saved["table_markdown_recalibrated"] == table
    assert (tmp_path / "d.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="even"):
        depth_study((x, y), (x, y), depths=[9], iterations=1)


@pytest.fixture
def digits_checkpoint(tmp_path):
    """A run folder holding an untrained narrow ResNet-19 checkpoint of the embedded digits demo (epoch 3)."""
    from tdbn.train import config_to_dict, load_config, save_checkpoint
    from tdbn.train.build import create_model, model_kwargs
    from tdbn.train.checkpoint import FORMAT

    cfg = load_config(None, ["model.width=0.0625", "model.timesteps=2"])  # the embedded digits demo
    kwargs = model_kwargs(cfg.model, num_classes=10, in_channels=1, input_size=8)
    model = create_model(cfg.model.name, kwargs)
    save_checkpoint(tmp_path / "checkpoint.pt", {
        "format": FORMAT, "epoch": 3, "model": model.state_dict(), "model_name": cfg.model.name,
        "model_kwargs": kwargs, "input": {"events": False, "shape": [1, 8, 8]},
        "optimizer": {}, "scheduler": {}, "scaler": {},
        "rng": {}, "config": config_to_dict(cfg), "metrics": [], "version": {},
    })
    return tmp_path


def test_spikes_from_a_training_checkpoint(digits_checkpoint):
    tmp_path = digits_checkpoint
    assert main(["spikes", "--checkpoint", str(tmp_path), "--num-images", "5", "--no-plot",
                 "--out", str(tmp_path / "s")]) == 0
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["model"] == "resnet19" and result["images"] == 5 and "epoch 3" in result["weights"]
    assert len(result["layers"]) == 18  # ResNet-19: encoding layer, 16 block LIFs, fc-256
    with pytest.raises(ValueError, match="--model only"):
        main(["ops", "--checkpoint", str(tmp_path), "--option", "width=1", "--no-plot"])
    assert main(["spikes", "--checkpoint", str(tmp_path), "--num-images", "5", "--no-plot"]) == 0
    assert (tmp_path / "analysis" / "spikes_resnet19.json").is_file()  # next to the checkpoint by default


def test_default_output_is_under_runs_and_never_replaced_without_force(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs" / "figures").mkdir(parents=True)
    shipped = tmp_path / "docs" / "figures" / "membrane.json"
    shipped.write_text("{}")
    assert main(["membrane", "--neurons", "200", "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "wrote runs/analysis/membrane.json" in out and (tmp_path / "runs" / "analysis" / "membrane.json").is_file()
    assert shipped.read_text() == "{}"  # the repository's figure is untouched
    with pytest.raises(ValueError, match=r"membrane.json already exists; pass --force"):
        main(["membrane", "--neurons", "200", "--no-plot", "--out", "docs/figures/membrane"])
    assert shipped.read_text() == "{}"
    assert main(["membrane", "--neurons", "200", "--no-plot", "--out", "docs/figures/membrane", "--force"]) == 0
    assert json.loads(shipped.read_text())["figure"] == "Fig. 3"


def test_spikes_output_names_the_data_and_the_number_of_images(digits_checkpoint):
    proc = run_tdbn("analyze", "spikes", "--checkpoint", digits_checkpoint, "--num-images", "5", "--no-plot")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == ("resnet19 (T=2): average spikes per neuron in each layer over 5 digits "
                                           f"test images (checkpoint {digits_checkpoint / 'checkpoint.pt'} "
                                           "(epoch 3)):")


def test_figure_titles_say_what_was_measured(tmp_path, monkeypatch):
    from tdbn.analysis import plots
    from tdbn.analysis.figures import make_ops, make_spikes

    titles: list[str] = []
    monkeypatch.setattr(plots, "bar_plot", lambda groups, png, **kw: titles.extend(groups))
    model = tdbn.models.create("resnet", num_classes=10, in_channels=1, depth=8, width=0.0625, timesteps=3).eval()
    x = torch.rand(4, 1, 8, 8)
    meta = {"model": "resnet", "options": {"timesteps": 3}, "dataset": "mnist", "images": 4}
    make_spikes(tmp_path / "s", model, x, meta=meta)
    assert titles == ["resnet (T=3): average spikes per neuron in each layer over 4 mnist test images"]
    titles.clear()
    make_ops(tmp_path / "o", model, x, meta=meta)
    first = json.loads((tmp_path / "o.json").read_text())["snn"]["layers"][0]
    assert first["role"] == "encoding" and first["multiplications"] == 3 * first["ann_macs"]  # T times
    assert titles[1] == "SNN additions per layer (per image, T=3)"
    assert titles[2] == ("SNN multiplications per layer (per image, T=3)\nlayer 1 (encoding) takes real values, not "
                         "spikes: its MACs count at each of the T=3 steps (appendix D)")


def test_analysis_files_are_readable_like_the_plots(tmp_path):
    old = os.umask(0o022)
    try:
        assert main(["membrane", "--neurons", "200", "--out", str(tmp_path / "m")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "m.png").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_existing_output_is_one_error_line_and_exit_2_before_any_work(tmp_path):
    """The data root given does not exist: the refusal comes before the data would be read."""
    out = tmp_path / "ops"
    for suffix in (".json", ".png"):
        out.with_suffix(suffix).write_text("kept")
    for what in ("ops", "spikes"):
        proc = run_tdbn("analyze", what, "--model", "resnet", "--option", "depth=8", "--dataset", "mnist",
                        "--data-root", tmp_path / "none", "--out", out)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr == (f"tdbn analyze: error: {out}.json, {out}.png already exist; pass --force to replace, "
                               "or choose another --out\n")
    assert {p.read_text() for p in tmp_path.iterdir()} == {"kept"}


def test_latency_without_plot_minds_only_the_json(digits_checkpoint, capsys):
    out = digits_checkpoint / "lat"
    out.with_suffix(".png").write_text("an older figure")
    assert main(["latency", "--checkpoint", str(digits_checkpoint), "--no-plot", "--out", str(out)]) == 0
    assert f"wrote {out}.json\n" in capsys.readouterr().out
    assert json.loads(out.with_suffix(".json").read_text())["samples"] == 360
    assert out.with_suffix(".png").read_text() == "an older figure"
    with pytest.raises(ValueError, match=r"lat.json, .*lat.png already exist"):  # a plot would replace both
        main(["latency", "--checkpoint", str(digits_checkpoint), "--out", str(out)])


def _drawn(monkeypatch) -> list:
    """The figures the plots draw, kept open after they are saved."""
    from tdbn.analysis import plots

    figures, save = [], plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (figures.append(fig), save(fig, path))[1])
    return figures


def _inside(fig) -> bool:
    """Whether everything a saved (closed) figure draws lies inside its image, drawn again at the same dpi."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    drawn = fig.get_tightbbox(canvas.get_renderer())  # inches, every artist drawn (titles, labels, ticks)
    width, height = fig.get_size_inches()
    return drawn.x0 >= -0.01 and drawn.y0 >= -0.01 and drawn.x1 <= width + 0.01 and drawn.y1 <= height + 0.01


def _texts(fig) -> list[str]:
    from matplotlib.text import Text

    return [" ".join(t.get_text().split()) for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def test_figures_name_their_data_and_nothing_is_cut_off(tmp_path, monkeypatch):
    """Every text of the ops, spikes and latency figures lies inside the image, even with long names; the titles
    name the model, the data set and the number of test inputs, and the weights are given."""
    from tdbn.analysis.figures import plot_ops, plot_spikes
    from tdbn.analysis.latency import make_latency

    figures = _drawn(monkeypatch)
    meta = {"model": "resnet34_large", "options": {"timesteps": 10}, "dataset": "cifar10_dvs", "images": 500,
            "events": True, "calibrated_norm": False, "fused": True,
            "weights": "checkpoint runs/cifar10_dvs_resnet19-20261207-120000/checkpoint.pt (epoch 120)"}
    layers = [{"name": f"layer{i}.conv", "role": "encoding" if i == 1 else "hidden", "additions": 1e6 * i,
               "multiplications": 1e5, "ann_macs": 1e5} for i in range(1, 30)]
    ops = meta | {"ann": {"layers": {f"layer{i}.conv": 1e6 for i in range(1, 30)}},
                  "snn": {"layers": layers, "images": 500, "timesteps": 10}}
    plot_ops(ops, tmp_path / "ops.png")
    plot_spikes(meta | {"layers": [{"spikes_per_neuron": 0.1 * i} for i in range(18)]}, tmp_path / "spikes.png")
    make_latency(tmp_path / "latency", {"model": "resnet34_large", "dataset": "cifar10_dvs", "epoch": 120,
                                        "fused": True, "k": [1, 2, 3], "top1": [0.5, 0.6, 0.7], "samples": 1000})
    assert len(figures) == 3 and all(_inside(fig) for fig in figures)
    said = [text for fig in figures for text in _texts(fig)]
    assert "Table 6, resnet34_large (T=10): operations per image, spikes counted over 500 cifar10_dvs test " \
           "recordings" in said
    assert "resnet34_large (T=10): average spikes per neuron in each layer over 500 cifar10_dvs test recordings" \
           in said
    assert "resnet34_large (epoch 120, fused): anytime prediction on 1000 cifar10_dvs test samples" in said
    assert sum(text.startswith(meta["weights"]) for text in said) == 2  # ops and spikes
