"""Anytime prediction: accuracy against the number of time steps k = 1..T (paper Eq. 11 after k steps).

After k steps a streaming network's scores are the decoding outputs averaged over those k steps
(:func:`tdbn.stream.step`); by causality they equal ``forward_steps(x)[:k].mean(0)`` of the multi-step forward,
which :func:`latency_curve` computes for a whole test set in batches. :func:`stream_latency_curve` replays each
test recording through :func:`tdbn.stream.run_events` instead (events binned on the fly, one step per frame),
the deployment path; both give the same predictions (tests/stream).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from ..stream.runner import run_events, top1

__all__ = ["latency_curve", "latency_title", "make_latency", "plot_latency", "stream_latency_curve"]


def anytime_predictions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Predicted classes after k = 1..T steps, ``[T, N]``, for inputs ``x`` (``[T, N, ...]`` or static)."""
    with torch.no_grad():
        out = model.forward_steps(x)  # [T, N, K]
        means = torch.stack([out[:k].mean(0) for k in range(1, out.shape[0] + 1)])  # as a stream does after k
    return top1(means)


def latency_curve(model: nn.Module, batches: Iterable) -> dict:
    """Top-1 accuracy after k = 1..T steps over ``batches`` of ``(x, labels)``: ``{"k", "top1", "samples"}``."""
    hits, n = None, 0
    dtype = next(model.parameters()).dtype
    for x, y in batches:
        pred = anytime_predictions(model, x.to(dtype))  # [T, N]
        h = (pred == y.to(pred.device)[None]).sum(1)
        hits = h if hits is None else hits + h
        n += int(y.shape[0])
    if hits is None:
        raise ValueError("no test samples")
    return {"k": list(range(1, len(hits) + 1)), "top1": [c / n for c in hits.tolist()], "samples": n}


def stream_latency_curve(run, *, limit: int | None = None, log: Callable[[str], None] = lambda s: None) -> dict:
    """The same curve by replaying every test recording of ``run`` (a :class:`tdbn.stream.LoadedRun`) as a live
    stream: each sample's events binned on the fly with the training settings, one network step per frame."""
    from ..train.loaders import fixed_subset

    ds = run.dataset
    if ds is None:
        raise ValueError(f"{run.checkpoint}: streaming replays event recordings; the run was trained on "
                         f"{run.config.data.name!r}")
    subset = fixed_subset(len(ds), limit if limit is not None else run.config.data.test_limit)
    indices = range(len(ds)) if subset is None else subset.tolist()
    T, f = run.config.model.timesteps, ds.frames
    hits = [0] * T
    ms, events, n = 0.0, 0, 0
    for i in indices:
        sample = ds.samples[i]
        report = run_events(run.model, ds.events(i), sensor_size=ds.sensor_size, n_frames=T, window_ms=f.window_ms,
                            downsample_to=f.size, mode=f.mode, split_by=f.split_by, start_us=sample.start_us)
        if len(report.steps) != T:
            raise RuntimeError(f"sample {i} gave {len(report.steps)} frames, expected T={T}")
        for k, rec in enumerate(report.steps):
            hits[k] += int(rec["prediction"] == sample.label)
        ms += report.wall_s * 1000.0
        events += report.events
        n += 1
        if n % 20 == 0:
            log(f"streamed {n}/{len(indices)} recordings")
    return {"k": list(range(1, T + 1)), "top1": [h / n for h in hits], "samples": n,
            "ms_per_step": ms / (n * T), "events": events}


def make_latency(out: str | Path, result: dict, *, plot: bool = True) -> dict:
    """Write ``out.json`` and (``plot``) ``out.png``: accuracy against the number of steps."""
    from .report import output_paths, write_json

    js, png = output_paths(out)
    write_json(js, result)
    if plot:
        plot_latency(result, png)
    return result


def plot_latency(result: dict, png: str | Path) -> Path:
    """The figure of a latency result (as ``make_latency`` writes it, or read back from its JSON file)."""
    from .plots import line_plot

    series = {"batched (forward_steps)": (result["k"], [100 * a for a in result["top1"]])}
    if "stream" in result:
        series["streamed (tdbn.stream)"] = (result["stream"]["k"], [100 * a for a in result["stream"]["top1"]])
    return line_plot(series, png, xlabel="time steps k", ylabel="top-1 accuracy (%)", title=latency_title(result))


def latency_title(result: dict) -> str:
    """What a latency figure shows: the model, the data set and the number of test samples."""
    fused = ", fused" if result.get("fused") else ""
    return (f"{result.get('model', '')} (epoch {result.get('epoch', '?')}{fused}): anytime prediction on "
            f"{result['samples']} {result.get('dataset', '')} test samples")


def markdown_table(result: dict) -> str:
    """``| k | top-1 |`` rows (with the streamed column when present)."""
    streamed = result.get("stream")
    head = "| k | top-1 (%) |" + (" streamed (%) |" if streamed else "")
    rows = [head, "|---:|---:|" + ("---:|" if streamed else "")]
    for i, k in enumerate(result["k"]):
        row = f"| {k} | {100 * result['top1'][i]:.2f} |"
        if streamed:
            row += f" {100 * streamed['top1'][i]:.2f} |"
        rows.append(row)
    return "\n".join(rows)
