"""Run an exported ``.nir`` file in a third-party simulator (snnTorch's NIR importer) and measure agreement.

snnTorch (``snntorch.import_nir.import_from_nir``, built on ``nirtorch``) turns the graph into a
``torch.fx.GraphModule`` that computes one time step for one sample; its ``snn.Leaky`` neurons keep their membrane
between calls. Its reading of our nodes:

- ``nir.LIF`` -> ``snn.Leaky(beta=1 - dt/tau, threshold=v_threshold, reset_mechanism="zero", reset_delay=False)``
  with a fixed ``dt = 1e-4`` (the reason for tdbn's default ``dt``); the input gain ``r * dt / tau`` is 1, so no
  rescaling happens. Per step: ``mem = beta * mem + I``, spike if ``mem - threshold > 0``, and the membrane is set
  to 0 in the same step: Eq. 1-3.
- ``nir.Flatten(start_dim=0)`` -> ``torch.nn.Flatten(0, -1)``, which would also flatten a batch axis, so samples
  are fed one at a time without a batch axis, as NIR shapes are written.
- several edges into one node are summed (the residual addition).

Needs the test-only packages ``snntorch`` and ``nirtorch``.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import torch

from tdbn.export.nir_model import NIRNet, from_nir, read_nir_file


@dataclass(frozen=True)
class Agreement:
    """How closely a consumer's run matches ours on the same inputs."""

    samples: int
    timesteps: int
    same_predictions: int  # samples whose arg-max class (mean output over time) is the same
    spikes_compared: int  # spike values compared, over every LIF layer, step, sample and neuron
    spikes_equal: int
    max_output_diff: float  # largest |difference| of the time-averaged outputs
    layers_identical: int  # LIF layers whose spikes agree everywhere
    layers: int

    @property
    def spike_agreement(self) -> float:
        return self.spikes_equal / max(self.spikes_compared, 1)

    def summary(self) -> str:
        return (
            f"{self.same_predictions}/{self.samples} identical predictions, spike agreement "
            f"{self.spike_agreement:.6%} ({self.spikes_compared - self.spikes_equal} of {self.spikes_compared} differ), "
            f"{self.layers_identical}/{self.layers} LIF layers identical, max |output diff| {self.max_output_diff:.3g}"
        )


def _sanitized(name: str) -> str:
    return name.replace(".", "_")  # how nirtorch names a node's module


@torch.no_grad()
def run_snntorch(path: str | Path, frames: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Outputs ``[T, N, K]`` and each LIF module's spikes ``[T, N, ...]`` of snnTorch running ``path``.

    ``frames`` is ``[T, N, *input_shape]``: the input at every step (a static image repeated T times).
    """
    import snntorch as snn
    from snntorch.import_nir import import_from_nir

    graph = read_nir_file(path)
    with contextlib.redirect_stdout(io.StringIO()):  # the importer prints progress notes
        module = import_from_nir(graph)
    neurons = {name: m for name, m in module.named_modules() if isinstance(m, snn.Leaky)}
    record: dict[str, list[torch.Tensor]] = {name: [] for name in neurons}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=name: record[n].append(o)) for name, m in neurons.items()]
    outputs = []
    try:
        for n in range(frames.shape[1]):
            for m in neurons.values():
                m.reset_mem()  # a fresh membrane for every sample
            for t in range(frames.shape[0]):
                out, _state = module(frames[t, n])
                outputs.append(out)
    finally:
        for h in hooks:
            h.remove()
    T, N = frames.shape[:2]
    out = torch.stack(outputs).view(N, T, -1).transpose(0, 1)
    spikes = {name: torch.stack(v).view(N, T, *v[0].shape).transpose(0, 1) for name, v in record.items()}
    return out, spikes


@torch.no_grad()
def compare_with_snntorch(path: str | Path, frames: torch.Tensor, *, reference: NIRNet | None = None) -> Agreement:
    """Run ``path`` in snnTorch and in ``reference`` (default: ``from_nir(path)``) on ``frames [T, N, ...]``."""
    ours = reference if reference is not None else from_nir(path)
    nodes = ours.forward_nodes(frames)
    theirs_out, theirs_spikes = run_snntorch(path, frames)
    lif_names = [n for n, layer in zip(ours.names, ours.layers) if type(layer).__name__ == "LIF"]
    missing = [n for n in lif_names if _sanitized(n) not in theirs_spikes]
    if missing or len(theirs_spikes) != len(lif_names):
        raise RuntimeError(f"snnTorch's graph has LIF modules {sorted(theirs_spikes)}; ours {lif_names}")
    compared = equal = identical = 0
    for name in lif_names:
        a, b = nodes[name], theirs_spikes[_sanitized(name)].to(nodes[name].dtype)
        same = int((a == b).sum())
        compared += a.numel()
        equal += same
        identical += same == a.numel()
    q_ours, q_theirs = nodes[ours.output].mean(0), theirs_out.mean(0)
    return Agreement(
        samples=frames.shape[1],
        timesteps=frames.shape[0],
        same_predictions=int((q_ours.argmax(1) == q_theirs.argmax(1)).sum()),
        spikes_compared=compared,
        spikes_equal=equal,
        max_output_diff=float((q_ours - q_theirs).abs().max()),
        layers_identical=identical,
        layers=len(lif_names),
    )
