"""The paper's figures and Table 6 as files: each ``make_*`` runs a study and writes ``<out>.json`` with the numbers
and, with ``plot=True``, ``<out>.png``. Each ``plot_*`` draws from the JSON-ready result alone, so a figure can be
redrawn from its JSON file (``plot_grad_norms(json.load(open(path)), "fig.png")``). matplotlib is imported only
when plotting. The CLI (``tdbn analyze ...``) and the benchmark scripts call these."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .depth import DepthStudy
from .grad_norms import GradNormStudy
from .neuron_stats import firing_rate_stats, membrane_stats
from .ops import E_AC_PJ, E_MAC_PJ, ENERGY_SOURCE, ann_macs_per_layer, energy_pj, neurobench_ops, snn_ops
from .report import output_paths, write_json
from .spikes import spikes_per_neuron, spikes_to_dict

#: Table 6 of the paper (one inference; T = 6 in the paper's ImageNet setting).
PAPER_TABLE6 = {
    "resnet19": {"ann_macs": 2.2e9, "snn_additions": 1.8e9, "snn_multiplications": 3.4e7},
    "resnet34_large": {"ann_macs": 1.4e10, "snn_additions": 1.2e10, "snn_multiplications": 1.2e9},
}


def _write(out: str | Path, result: dict, plot: Callable[[dict, Path], object] | None) -> dict:
    js, png = output_paths(out)
    write_json(js, result)
    if plot is not None:
        plot(result, png)
    return result


def make_membrane(
    out: str | Path, *, variances: Sequence[float] = (0.25, 0.5, 1.0), tau: float = 0.25, v_th: float = 1.0,
    timesteps: int = 8, neurons: int = 10_000, seed: int = 0, plot: bool = True,
) -> dict:
    """Fig. 3: distributions of pre-activations ``x`` and membrane potentials ``u`` for each variance."""
    stats = [membrane_stats(variance=v, tau=tau, v_th=v_th, timesteps=timesteps, neurons=neurons, seed=seed)
             for v in variances]
    result = {"figure": "Fig. 3", "panels": [asdict(s) | {"var_ratio_u_over_x": s.ratio} for s in stats]}
    return _write(out, result, plot_membrane if plot else None)


def plot_membrane(result: dict, png: str | Path) -> Path:
    from .plots import histogram_panels

    return histogram_panels(
        [{"title": f"x ~ N(0, {p['variance']:g}), V_th = {p['v_th']:g}, tau = {p['tau']:g}", "edges": p["edges"],
          "bars": {"x (pre-activation)": p["density_x"], "u (membrane)": p["density_u"]}} for p in result["panels"]],
        png, xlabel="value", ylabel="density",
    )


def make_firing_rates(
    out: str | Path, *, variances: Sequence[float] = (1 / 16, 1.0, 16.0), tau: float = 0.25, v_th: float = 1.0,
    timesteps: int = 20, neurons: int = 10_000, seed: int = 0, plot: bool = True,
) -> dict:
    """Fig. 4: per-neuron firing-rate histograms for each input variance; top row inputs drawn afresh at each
    step (Theorem 2), bottom row one input per neuron held over the steps (static image, direct encoding)."""
    stats = [firing_rate_stats(variance=v, constant_input=c, tau=tau, v_th=v_th, timesteps=timesteps,
                               neurons=neurons, seed=seed) for c in (False, True) for v in variances]
    result = {"figure": "Fig. 4", "panels": [asdict(s) for s in stats]}
    return _write(out, result, plot_firing_rates if plot else None)


def plot_firing_rates(result: dict, png: str | Path) -> Path:
    from .plots import histogram_panels

    return histogram_panels(
        [{"title": f"x ~ N(0, {p['variance']:g}) {'held' if p['constant_input'] else 'i.i.d.'}: "
                   f"mean {p['mean_rate']:.2f}, silent {100 * p['silent_fraction']:.0f}%",
          "edges": p["edges"], "bars": {"neurons": p["counts"]}} for p in result["panels"]],
        png, xlabel="firing rate (spikes / T)", ylabel="number of neurons", rows=2,
    )


def make_grad_norms(out: str | Path, study: GradNormStudy, *, plot: bool = True) -> dict:
    """Fig. 2: one curve per ``(norm, tau)``, one panel per norm, log scale."""
    return _write(out, {"figure": "Fig. 2"} | study.to_dict(), plot_grad_norms if plot else None)


def plot_grad_norms(result: dict, png: str | Path) -> Path:
    from .plots import line_plot

    series, panels = {}, {}
    for c in result["curves"]:
        zeros = sum(v == 0 for v in c["mean_norms"])  # no input spikes reach the layer: log scale cannot show it
        label = c["label"] + (f" ({zeros} layers at 0, not shown)" if zeros else "")
        series[label] = (list(range(1, len(c["mean_norms"]) + 1)), c["mean_norms"])
        panels.setdefault(f"norm = {c['norm']}", []).append(label)
    return line_plot(series, png, xlabel="hidden layer", ylabel="mean ||dL/dW||", logy=True, panels=panels)


def make_depth(out: str | Path, study: DepthStudy, *, plot: bool = True) -> dict:
    """Accuracy against depth: one panel per architecture and evaluation, one curve per normalization."""
    result = study.to_dict() | {
        "progress": study.progress(),
        "table_markdown_recalibrated": study.markdown_table(recalibrated=True),
        "table_markdown_running_stats": study.markdown_table(recalibrated=False),
    }
    if any(r.best_test_accuracy is not None for r in study.runs):
        result["table_markdown_best_recalibrated"] = study.markdown_table(recalibrated=True, best=True)
        result["table_markdown_best_running_stats"] = study.markdown_table(recalibrated=False, best=True)
    return _write(out, result, plot_depth if plot else None)


def plot_depth(result: dict, png: str | Path) -> Path:
    from .plots import line_plot

    study = DepthStudy(result["config"])
    study.runs.extend(_depth_runs(result["runs"]))
    series, panels = {}, {}
    for arch in study.config["archs"]:
        for recal in (False, True):
            panel = f"{arch}, tested with {'recomputed' if recal else 'running'} BN statistics"
            for norm in study.config["norms"]:
                ds = sorted({r.depth for r in study.runs if (r.arch, r.norm) == (arch, norm)})
                if ds:
                    label = f"{arch} {norm}" + (" (recomputed)" if recal else "")
                    series[label] = (ds, [100 * study.accuracy(arch, norm, d, recalibrated=recal)[0] for d in ds])
                    panels.setdefault(panel, []).append(label)
    return line_plot(series, png, xlabel="depth (weight layers)", ylabel="test accuracy (%)", panels=panels,
                     rows=len(study.config["archs"]))


def make_depth_grad_norms(out: str | Path, study: DepthStudy, *, plot: bool = True) -> dict:
    """Fig. 2 for the depth study's nets with recorded gradient norms: mean ``||dL/dW||_2`` of every hidden weight
    layer over the first iterations, averaged over the seeds done; writes ``out.json``, ``out.csv`` (one row per
    net, seed and layer) and ``out.png`` (one panel per architecture and depth, one curve per normalization)."""
    curves = {}
    for r in study.runs:
        if r.grad_norms is None:
            continue
        c = curves.setdefault((r.arch, r.depth, r.norm), {
            "arch": r.arch, "depth": r.depth, "norm": r.norm, "layers": r.grad_norms["layers"],
            "iterations": r.grad_norms["iterations"], "seeds": [], "per_seed": []})
        c["seeds"].append(r.seed)
        c["per_seed"].append(r.grad_norms["mean_norms"])
    for c in curves.values():
        c["mean_norms"] = [sum(v) / len(v) for v in zip(*c["per_seed"])]
        finite = [v for v in c["mean_norms"] if v > 0]
        c["ratio_max_min"] = max(finite) / min(finite) if len(finite) == len(c["mean_norms"]) else math.inf
    result = {"figure": "Fig. 2 (depth study nets)", "config": study.config, "curves": list(curves.values())}
    js, _ = output_paths(out)
    _write(out, result, plot_depth_grad_norms if plot else None)
    lines = ["arch,depth,norm,seed,layer_index,layer,mean_grad_norm"]
    for c in curves.values():
        for seed, norms in zip(c["seeds"], c["per_seed"]):
            lines += [f"{c['arch']},{c['depth']},{c['norm']},{seed},{i},{name},{v:.6g}"
                      for i, (name, v) in enumerate(zip(c["layers"], norms), 1)]
    js.with_suffix(".csv").write_text("\n".join(lines) + "\n")
    return result


def plot_depth_grad_norms(result: dict, png: str | Path) -> Path:
    """Residual-branch and plain conv layers in order (shortcut projections left out), log scale."""
    from .plots import line_plot

    series, panels = {}, {}
    for c in result["curves"]:
        keep = [(i, v) for i, (name, v) in enumerate(zip(c["layers"], c["mean_norms"])) if "shortcut" not in name]
        label = f"{c['arch']}-{c['depth']} {c['norm']}"
        series[label] = ([k + 2 for k in range(len(keep))], [v for _, v in keep])  # layer 1 = encoding conv
        panels.setdefault(f"{c['arch']}-{c['depth']}, first {c['iterations']} iterations", []).append(label)
    return line_plot(series, png, xlabel="layer", ylabel="mean ||dL/dW||_2", panels=panels, logy=True)


def _depth_runs(rows: list[dict]):
    from .depth import run_from_dict

    return [run_from_dict(row) for row in rows]


def make_spikes(out: str | Path, model: nn.Module, x: torch.Tensor, *, meta: dict, plot: bool = True) -> dict:
    """Fig. 6: average number of spikes per neuron in each LIF layer over one inference of ``x``."""
    result = {"figure": "Fig. 6"} | meta | {"layers": spikes_to_dict(spikes_per_neuron(model, x))}
    return _write(out, result, plot_spikes if plot else None)


def _measured_on(result: dict) -> str:
    """The inputs a result was measured on: ``16 cifar10 test images`` (``recordings`` for event data)."""
    return f"{result['images']} {result.get('dataset', '')} test {'recordings' if result.get('events') else 'images'}"


def _weights(result: dict) -> str:
    """Which weights, and how the network was prepared: ``initialization (untrained), calibrated tdBN, fused``."""
    return ", ".join([str(result.get("weights", "weights not recorded"))]
                     + ["tdBN statistics calibrated on these inputs"] * bool(result.get("calibrated_norm"))
                     + ["fused (Eq. 9-10)"] * bool(result.get("fused")))


def spikes_title(result: dict) -> str:
    """What a spikes figure shows: the model, T, and the images it was measured on."""
    T = result.get("options", {}).get("timesteps", "?")
    return f"{result.get('model', '')} (T={T}): average spikes per neuron in each layer over {_measured_on(result)}"


def plot_spikes(result: dict, png: str | Path) -> Path:
    from .plots import bar_plot

    return bar_plot({spikes_title(result): [s["spikes_per_neuron"] for s in result["layers"]]},
                    png, xlabel="spiking layer", ylabel="average spikes per neuron", note=_weights(result))


def make_ops(
    out: str | Path, model: nn.Module, x: torch.Tensor, *, meta: dict, plot: bool = True,
    log: Callable[[str], None] = lambda s: None,
) -> dict:
    """Table 6: ANN MACs for one image vs measured SNN additions / multiplications on ``x``, and energies."""
    static = x.dim() == 4
    one = x[:1].unsqueeze(0) if static else x[:1, :1]  # one image, one step: [1, 1, C, H, W]
    ann_layers = ann_macs_per_layer(model, one)
    ann = sum(m for _, m in ann_layers)
    ops = snn_ops(model, x)
    bench = neurobench_ops(model, x)
    result = {"table": "Table 6"} | meta | {
        "ann": {"macs": ann, "energy_pj": energy_pj(additions=0, multiplications=ann),
                "layers": dict(ann_layers)},
        "snn": ops.to_dict() | {"convention": "the paper's (appendix D): encoder and decoder as dense MACs at "
                                               "every step, padding taps included; hidden spikes x fan-out"},
        "neurobench": bench.to_dict(),
        "energy_model": {"ac_pj": E_AC_PJ, "mac_pj": E_MAC_PJ, "source": ENERGY_SOURCE},
        "ann_energy_over_snn_energy": energy_pj(additions=0, multiplications=ann) / ops.energy_pj(),
    }
    paper = PAPER_TABLE6.get(str(meta.get("model")))
    if paper is not None:
        result["paper_table6"] = paper | {"ann_macs_relative_difference": ann / paper["ann_macs"] - 1}
    log(f"ANN MACs {ann:.3g}; SNN additions {ops.additions:.3g}, multiplications {ops.multiplications:.3g} per "
        f"image (T={ops.timesteps}); energy ANN {result['ann']['energy_pj'] / 1e6:.3g} uJ, SNN "
        f"{ops.energy_pj() / 1e6:.3g} uJ (paper's convention)")
    log(f"NeuroBench convention (what is computed): {bench.acs:.3g} ACs, {bench.macs:.3g} MACs per image; "
        f"activation sparsity {bench.activation_sparsity:.4f}")
    return _write(out, result, plot_ops if plot else None)


def _encoding_note(layers: list[dict], T: int) -> str:
    """Why the encoding layer dominates the multiplications: it gets real values, not spikes, at every step."""
    first = [i for i, layer in enumerate(layers, 1) if layer.get("role") == "encoding"]
    which = f"layer {first[0]} (encoding)" if first else "the encoding layer"
    return f"{which} takes real values, not spikes: its MACs count at each of the T={T} steps (appendix D)"


def plot_ops(result: dict, png: str | Path) -> Path:
    from .plots import bar_plot

    snn = result["snn"]
    layers, n = snn["layers"], snn["images"]
    ann = result["ann"]["layers"]
    T = snn["timesteps"]
    return bar_plot({
        "ANN MACs per layer (one image)": [ann.get(layer["name"], 0) for layer in layers],
        f"SNN additions per layer (per image, T={T})": [layer["additions"] / n for layer in layers],
        f"SNN multiplications per layer (per image, T={T})\n{_encoding_note(layers, T)}":
            [layer["multiplications"] / n for layer in layers],
    }, png, xlabel=f"synaptic layer (1 = {layers[0]['name']}, {len(layers)} = {layers[-1]['name']})",
        ylabel="operations", title=ops_title(result), note=_weights(result))


def ops_title(result: dict) -> str:
    """What an ops figure shows: the table, the model, T and the inputs the spikes were counted on."""
    return (f"Table 6, {result.get('model', '')} (T={result['snn']['timesteps']}): operations per image, spikes "
            f"counted over {_measured_on(result)}")
