"""Average number of spikes per neuron in each layer over one inference (paper Fig. 6)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .probes import forward_hooks, inference, lif_layers


@dataclass(frozen=True)
class LayerSpikes:
    """Spiking activity of one LIF layer: ``neurons`` per image, ``spikes_per_neuron`` over the T steps of one
    inference (averaged over neurons and images), and ``firing_rate`` = spikes per neuron per step."""

    name: str
    neurons: int
    spikes_per_neuron: float
    firing_rate: float


def spikes_per_neuron(model: nn.Module, x: torch.Tensor) -> list[LayerSpikes]:
    """Run ``model(x)`` once (eval mode, no gradients) and report every LIF layer's activity (Fig. 6).

    Each LIF output ``[T, N, ...]`` is summed over time and averaged over images and neurons. Layers are listed
    in registration order, which is the forward order for the networks of :mod:`tdbn.models`.

    Example:
        >>> from tdbn.layers import LIF
        >>> net = nn.Sequential(LIF(tau=0.0, v_th=0.5))
        >>> x = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])   # [T=2, N=1, 2 neurons]: 3 spikes
        >>> spikes_per_neuron(net, x)[0].spikes_per_neuron
        1.5
    """
    layers = lif_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no tdbn.layers.LIF module: nothing spikes")
    sums = {name: 0.0 for name, _ in layers}
    shapes: dict[str, tuple[int, int, int]] = {}  # name -> (T, N, neurons per image)

    def hook(name: str, m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:  # out: [T, N, ...] spikes
        T, N = out.shape[:2]
        sums[name] += float(out.sum(dtype=torch.float64))
        shapes[name] = (T, N, math.prod(out.shape[2:]))

    with inference(model), forward_hooks(layers, hook):
        model(x)
    result = []
    for name, _ in layers:
        if name not in shapes:
            raise RuntimeError(f"LIF layer {name!r} was not called in the forward pass")
        T, N, neurons = shapes[name]
        per_neuron = sums[name] / (N * neurons)
        result.append(LayerSpikes(name, neurons, per_neuron, per_neuron / T))
    return result


def spikes_to_dict(layers: list[LayerSpikes]) -> list[dict]:
    """JSON-ready list of the per-layer records."""
    return [asdict(layer) for layer in layers]
