"""Spikes per neuron (Fig. 6), membrane and firing-rate statistics (Fig. 3, 4), gradient norms (Fig. 2)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tdbn.analysis import (
    GradNormCurve, firing_rate_stats, hidden_weight_layers, mean_grad_norms, membrane_stats, spikes_per_neuron,
)
from tdbn.analysis.datasets import batches
from tdbn.layers import LIF, TimeDistributed
from tdbn.models import create


def test_spikes_per_neuron_by_hand():
    fc = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    net = nn.Sequential(LIF(tau=0.0, v_th=0.5), TimeDistributed(fc), LIF(tau=0.0, v_th=1.5))
    x = torch.tensor([[[1.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [1.0, 0.0]]])  # [T=2, N=2, 2]
    first, second = spikes_per_neuron(net, x)
    assert first.neurons == 2 and first.spikes_per_neuron == pytest.approx(4 / (2 * 2))
    # second layer fires only where both inputs spiked (neuron 3, image 2, step 1): 1 spike / (2 images x 3)
    assert second.neurons == 3 and second.spikes_per_neuron == pytest.approx(1 / 6)
    assert second.firing_rate == pytest.approx(1 / 12)


def test_spikes_per_neuron_covers_every_lif_of_a_resnet():
    net = create("resnet19", num_classes=10, width=0.0625, timesteps=3, input_size=16)
    layers = spikes_per_neuron(net, torch.randn(2, 3, 16, 16))
    # encoding layer + 8 blocks x 2 + spiking fc-256 (the paper's Fig. 6(a) draws 17 of these 18)
    assert len(layers) == sum(isinstance(m, LIF) for m in net.modules()) == 18
    assert all(0 <= s.spikes_per_neuron <= 3 for s in layers)
    assert layers[0].name == "encoder.lif"


def test_membrane_variance_is_proportional_to_input_variance():
    stats = [membrane_stats(variance=v, neurons=4000) for v in (0.25, 0.5, 1.0)]
    ratios = [s.ratio for s in stats]
    assert all(1.0 < r < 1 / (1 - 0.25**2) + 0.02 for r in ratios)  # leak adds <= tau^2 / (1 - tau^2)
    assert max(ratios) / min(ratios) < 1.05  # Theorem 2: sigma_out^2 proportional to sigma_in^2
    s = stats[0]
    widths = [b - a for a, b in zip(s.edges, s.edges[1:])]
    assert sum(d * w for d, w in zip(s.density_x, widths)) == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("constant", [False, True])
def test_firing_rates_follow_input_variance(constant):
    stats = [firing_rate_stats(variance=v, constant_input=constant, neurons=3000, timesteps=10)
             for v in (1 / 16, 1.0, 16.0)]
    assert [sum(s.counts) for s in stats] == [3000] * 3
    assert stats[0].silent_fraction > 0.95  # Fig. 4(a): spikes vanish
    assert stats[0].mean_rate < stats[1].mean_rate < stats[2].mean_rate
    if constant:
        assert stats[2].saturated_fraction > 0.3  # Fig. 4(c): neurons fire at every step


def test_grad_norms_cover_hidden_layers_of_plain20():
    net = create("plain", num_classes=10, depth=20, width=0.0625, timesteps=2)
    layers = hidden_weight_layers(net)
    assert len(layers) == 18  # 20 minus the encoding and decoding layers (Fig. 2)
    assert all(not n.startswith(("encoder", "decoder")) for n, _ in layers)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    names, means, losses = mean_grad_norms(net, batches(x, y, batch_size=8), iterations=2)
    assert names == [n for n, _ in layers] and len(losses) == 2
    assert all(math.isfinite(v) and v > 0 for v in means)


def test_grad_norm_ratio():
    curve = GradNormCurve("tdbn", 0.25, ["a", "b"], [0.5, 2.0], 3, 2.3, 2.2)
    assert curve.ratio == 4.0 and curve.label == "tdbn, tau=0.25"
    assert GradNormCurve("none", 0.0, ["a", "b"], [0.0, 1.0], 3, 2.3, 2.3).ratio == math.inf
