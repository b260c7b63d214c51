"""Streaming inference: run a trained network one time step at a time, state in and state out.

- :func:`init_state`, :func:`step`: the step API (explicit :class:`StreamState`, no hidden neuron state);
- :func:`lif_step`: one LIF step, the multi-step kernel's own recursion (Eq. 1-3);
- :func:`register_step`: declare a module type that computes each time step on its own (a step runs the model's
  own forward; :mod:`tdbn.stream.layer_steps` lists the types it knows);
- :class:`Stream`: a small runner holding a state, restarting it every ``window`` steps;
- :class:`FrameBinner`: events in, frames out as they complete (equal to :func:`tdbn.data.to_frames`);
- :func:`run_events`: an event recording replayed as a live stream, with timings;
- :func:`load_run`: a trained run folder as a model plus its frame settings.
"""

from .binning import FrameBinner, read_events
from .layer_steps import register_step
from .neuron import lif_step
from .run_dir import LoadedRun, load_run
from .runner import Stream, StreamReport, run_events
from .step import StreamState, init_state, lif_modules, step

__all__ = [
    "FrameBinner", "LoadedRun", "Stream", "StreamReport", "StreamState", "init_state", "lif_modules", "lif_step",
    "load_run", "read_events", "register_step", "run_events", "step",
]
