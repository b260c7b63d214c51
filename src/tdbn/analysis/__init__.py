"""Analyses of the paper (Fig. 2-4, 6, Table 6) on any model: probes, operation counts, studies and figures.

Each analysis is a typed function returning plain results; :mod:`tdbn.analysis.figures` turns them into JSON and
PNG files (matplotlib is optional and imported only there), and ``tdbn analyze WHAT`` runs them from the shell.
"""

from .calibrate import calibrate_norm_stats
from .depth import DepthRun, DepthStudy, depth_run, depth_study
from .grad_norms import GradNormCurve, GradNormStudy, grad_norm_study, hidden_weight_layers, mean_grad_norms
from .neuron_stats import FiringRateStats, MembraneStats, firing_rate_stats, membrane_stats
from .ops import (
    E_AC_PJ, E_MAC_PJ, ENERGY_SOURCE, LayerOps, OpCounts, ann_macs, ann_macs_per_layer, count_ops, energy_pj,
    snn_ops, synaptic_events,
)
from .probes import forward_hooks, inference, io_layers, lif_layers, synaptic_layers
from .spikes import LayerSpikes, spikes_per_neuron

__all__ = [
    "E_AC_PJ", "E_MAC_PJ", "ENERGY_SOURCE",
    "DepthRun", "DepthStudy", "FiringRateStats", "GradNormCurve", "GradNormStudy", "LayerOps", "LayerSpikes",
    "MembraneStats", "OpCounts",
    "ann_macs", "ann_macs_per_layer", "calibrate_norm_stats", "count_ops", "depth_run", "depth_study", "energy_pj",
    "firing_rate_stats", "forward_hooks", "grad_norm_study", "hidden_weight_layers", "inference", "io_layers",
    "lif_layers", "mean_grad_norms", "membrane_stats", "snn_ops", "spikes_per_neuron", "synaptic_events",
    "synaptic_layers",
]
