"""Run an exported ``.nir`` file in third-party simulators and measure agreement with tdbn.

Each consumer turns the graph into a module that computes one time step for one sample (NIR shapes have no batch
axis; several importers map ``Flatten(start_dim=0)`` so that it would also flatten a batch axis), so samples are fed
one at a time, each from a fresh state, the input at every step:

- ``snntorch``: ``snntorch.import_nir.import_from_nir``. ``nir.LIF`` becomes ``snn.Leaky(beta=1 - dt/tau,
  reset_mechanism="zero")`` with a fixed ``dt = 1e-4``; an input gain ``r * dt / tau`` other than 1 (the portable
  form's ``1 - tau``) is moved into the threshold. Its neurons keep their membrane between calls (reset per sample).
- ``nirtorch``: nirtorch's generic interpreter ``nirtorch.nir_to_torch`` with ``tdbn.export.nirtorch_node_map``
  (``Affine`` with its bias, ``LIF`` as NIR's Euler step written literally).
- ``norse``: Norse's node map (``LIFBoxCell``: ``v += dt * tau_mem_inv * ((v_leak - v) + x)``, ``r`` ignored)
  run by nirtorch's interpreter. Norse's own ``norse.torch.from_nir`` goes through nirtorch's older
  ``GraphExecutor``, which orders nodes depth-first (a residual sum can run before its shortcut) and returns the
  second-to-last node in that order, not the ``Output`` node's source.
- ``spikingjelly``: ``spikingjelly.activation_based.nir_exchange.import_from_nir(graph, dt=...)`` (``LIFNode`` with
  ``decay_input=True`` for ``r = 1``; it fires at ``v >= v_threshold``).

Norse and SpikingJelly are not test dependencies of tdbn: ``python consumers.py CONSUMER GRAPH.nir FRAMES.pt OUT.pt``
runs this file in another environment that has them (it then imports neither tdbn nor pytest).
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

CONSUMERS = ("snntorch", "nirtorch", "norse", "spikingjelly")


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
            f"{self.spike_agreement:.6%} ({self.spikes_compared - self.spikes_equal} of {self.spikes_compared} "
            "differ), "
            f"{self.layers_identical}/{self.layers} LIF layers identical, max |output diff| {self.max_output_diff:.3g}"
        )


def _sanitized(name: str) -> str:
    return name.replace(".", "_")  # how nirtorch names a node's module


def _build(consumer: str, graph: Any) -> torch.nn.Module:
    import nir
    import nirtorch

    dt = float(graph.metadata.get("dt", 1e-4))
    if consumer == "snntorch":
        from snntorch.import_nir import import_from_nir

        with contextlib.redirect_stdout(io.StringIO()):  # the importer prints notes
            return import_from_nir(graph)
    if consumer == "nirtorch":
        from tdbn.export.nirtorch_map import nirtorch_node_map

        return nirtorch.nir_to_torch(graph, nirtorch_node_map(dt=dt))
    if consumer == "norse":
        import functools

        from norse.torch.utils.import_nir import _import_norse_module

        mapper = functools.partial(_import_norse_module, dt=dt)
        return nirtorch.nir_to_torch(graph, {c: mapper for c in (nir.Affine, nir.Conv2d, nir.Flatten, nir.LIF)})
    if consumer == "spikingjelly":
        from spikingjelly.activation_based.nir_exchange import import_from_nir

        return import_from_nir(graph, dt=dt)
    raise ValueError(f"unknown consumer {consumer!r}; choose from {CONSUMERS}")


@torch.no_grad()
def run_in_process(
    consumer: str, path: str | Path, frames: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Outputs ``[T, N, K]`` and each LIF node's spikes ``[T, N, ...]`` (keyed by node name) of ``consumer``.

    ``frames`` is ``[T, N, *input_shape]``: the input at every step (a static image repeated T times).
    """
    import nir

    graph = nir.read(str(path))
    module = _build(consumer, graph)
    lif_nodes = [n for n, node in graph.nodes.items() if isinstance(node, nir.LIF)]
    record: dict[str, list[torch.Tensor]] = {n: [] for n in lif_nodes}
    children = dict(module.named_children())

    def keep(name: str):
        return lambda _m, _i, o: record[name].append((o[0] if isinstance(o, tuple) else o).detach().clone())

    hooks = [children[_sanitized(n)].register_forward_hook(keep(n)) for n in lif_nodes]
    leaky = [m for m in module.modules() if hasattr(m, "reset_mem")]  # snnTorch: hidden membranes
    outputs = []
    batch_axis = consumer == "spikingjelly"  # its Flatten keeps a leading batch axis
    try:
        for n in range(frames.shape[1]):
            for m in leaky:
                m.reset_mem()
            state = None
            x = frames[:, n:n + 1] if batch_axis else frames[:, n]
            for t in range(frames.shape[0]):
                out, state = module(x[t]) if state is None or leaky else module(x[t], state)
                outputs.append(out.reshape(-1))
    finally:
        for h in hooks:
            h.remove()
    T, N = frames.shape[:2]
    out = torch.stack(outputs).view(N, T, -1).transpose(0, 1)
    spikes = {n: torch.stack(v).view(N, T, *v[0].shape[-len(graph.nodes[n].tau.shape):]).transpose(0, 1)
              for n, v in record.items()}
    return out, spikes


def run(consumer: str, path: str | Path, frames: torch.Tensor, *, python: str | None = None,
        workdir: Path | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``run_in_process``, or in the interpreter ``python`` (another environment) through files in ``workdir``."""
    if python is None:
        return run_in_process(consumer, path, frames)
    assert workdir is not None
    torch.save(frames, workdir / "frames.pt")
    subprocess.run([python, __file__, consumer, str(path), str(workdir / "frames.pt"), str(workdir / "out.pt")],
                   check=True, capture_output=True, timeout=600)
    result = torch.load(workdir / "out.pt")
    return result["out"], result["spikes"]


@torch.no_grad()
def agreement(ours_nodes: dict[str, torch.Tensor], ours_out: torch.Tensor, theirs_out: torch.Tensor,
              theirs_spikes: dict[str, torch.Tensor]) -> Agreement:
    """Compare tdbn's LIF spikes (by node name) and time-averaged outputs ``[N, K]`` with a consumer's run."""
    if set(theirs_spikes) - set(ours_nodes):
        raise RuntimeError(f"LIF nodes {sorted(set(theirs_spikes) - set(ours_nodes))} have no tdbn counterpart")
    compared = equal = identical = 0
    for name, b in theirs_spikes.items():
        a = ours_nodes[name]
        same = int((a == b.to(a.dtype).reshape(a.shape)).sum())
        compared += a.numel()
        equal += same
        identical += same == a.numel()
    q_theirs = theirs_out.mean(0)
    return Agreement(
        samples=ours_out.shape[0],
        timesteps=theirs_out.shape[0],
        same_predictions=int((ours_out.argmax(1) == q_theirs.argmax(1)).sum()),
        spikes_compared=compared,
        spikes_equal=equal,
        max_output_diff=float((ours_out - q_theirs).abs().max()),
        layers_identical=identical,
        layers=len(theirs_spikes),
    )


if __name__ == "__main__":  # python consumers.py CONSUMER GRAPH.nir FRAMES.pt OUT.pt
    name, graph_path, frames_path, out_path = sys.argv[1:5]
    out, spikes = run_in_process(name, graph_path, torch.load(frames_path))
    torch.save({"out": out, "spikes": spikes}, out_path)
