"""``tdbn stream RUN_DIR --events FILE``: a trained network on an event recording replayed as a live stream.

The events are binned on the fly with the run's frame settings (window, downsampling, mode) and the network
steps once per frame, carrying its neuron state (:mod:`tdbn.stream`). Each step prints the running prediction
(scores averaged over the sequence so far, Eq. 11); the summary gives the first step's time apart (warm-up:
one-time allocations) and then the steady state: milliseconds per step, events/s and the real-time factor (frame
duration / compute time per step).

Fixed windows (DVS128 Gesture: 30 ms, CIFAR10-DVS: 5 ms) are binned over the whole recording, as from a live
camera, and the network state restarts every ``--window`` steps (default: the training T), so each sequence of
T frames gives one prediction like a training sample. A recording sliced into T parts (the N-MNIST default) is
binned into exactly those T frames; its final scores equal ``tdbn eval``'s for that sample.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``tdbn stream``."""
    p.add_argument("run_dir", metavar="RUN_DIR", help="a tdbn train run folder (or its checkpoint file)")
    p.add_argument("--events", required=True, metavar="FILE",
                   help="event file: N-MNIST .bin/.bs2, AEDAT 3.1 (DVS128 Gesture), AEDAT 2.0 (CIFAR10-DVS) or "
                        ".npz with arrays t, x, y, p")
    p.add_argument("--data", metavar="ROOT", help="the run's data folder (default: the one recorded in the run); "
                                                  "read for the frame settings and classes only")
    p.add_argument("--fuse", action="store_true", help="stream tdbn.fuse(model), the normalization-free network")
    p.add_argument("--window", type=int, default=None, metavar="STEPS",
                   help="restart the network state every STEPS steps (default: the training T; 0 = never)")
    p.add_argument("--start-us", type=int, default=None, help="time origin in us (default: the first event)")
    p.add_argument("--chunk-us", type=int, default=1000,
                   help="replay the events in packets of this many us of recording time (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="print the summary only")
    p.add_argument("--out", metavar="FILE.json", help="also write every step and the summary as JSON")


def run(args: argparse.Namespace) -> int:
    import torch

    from .binning import read_events
    from .run_dir import load_run
    from .runner import run_events

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1 (torch CPU threads; omit it for torch's choice), got {args.threads}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.chunk_us < 1:
        raise ValueError(f"--chunk-us must be >= 1, got {args.chunk_us}")
    if args.window is not None and args.window < 0:
        raise ValueError(f"--window must be >= 0 (0 = never restart), got {args.window}")
    run_ = load_run(args.run_dir, fuse=args.fuse, data_root=args.data)
    path = Path(args.events)
    if not path.is_file():
        raise FileNotFoundError(f"event file {path} does not exist")
    events = read_events(path, sensor_size=run_.sensor_size, orientation=getattr(run_.dataset, "orientation", "upright"))
    f = run_.frames
    T = run_.config.model.timesteps
    window = T if args.window is None else (args.window or None)
    classes = run_.classes
    print(f"{run_.checkpoint} epoch {run_.epoch}{' (fused)' if args.fuse else ''}: {run_.config.model.name}, T={T}, "
          f"{run_.config.data.name} frames ({'%g ms windows' % f.window_ms if f.window_ms else f'{T} slices'}, "
          f"{'x'.join(map(str, f.size or run_.sensor_size))}, {f.mode}); {events.num_events} events from {path}",
          flush=True)

    def show(r: dict) -> None:
        if args.quiet:
            return
        when = f"{r['end_ms']:9.1f} ms" if r["end_ms"] is not None else " " * 12
        seq = "" if window is None else f" seq {(r['step'] - 1) // window + 1}"
        print(f"step {r['step']:4d}{seq} {when}  {r['events'] if r['events'] is not None else '-':>6} events  -> "
              f"{_name(r['prediction'])} ({r['score']:.3f})  {r['model_ms']:.2f} ms", flush=True)

    def _name(k: int) -> str:
        return str(k) if classes[k] == str(k) else f"{k} {classes[k]}"

    report = run_events(
        run_.model, events, sensor_size=run_.sensor_size, n_frames=None if f.window_ms else T,
        window_ms=f.window_ms, downsample_to=f.size, mode=f.mode, split_by=f.split_by, start_us=args.start_us,
        window=window, chunk_us=args.chunk_us, on_step=show,
    )
    s = report.summary()
    if not report.steps:
        raise ValueError(f"{path}: no frame was completed (no events after the start time?)")
    rtf = s["realtime_factor"]
    print(f"{s['steps']} steps, {s['events']} events in {s['wall_s']:.3f} s; "
          + (f"first step {s['warmup_ms']:.1f} ms (warm-up: one-time allocations, not counted below)"
             if s["steps"] > 1 else "one step: no steady state, its own timings below"))
    print(f"steady state: {s['ms_per_step']:.2f} ms/step ({s['model_ms_per_step']:.2f} ms network), "
          f"{s['events_per_s']:,.0f} events/s"
          + (f", real-time factor {rtf:.1f} for {s['window_ms']:.3g} ms frames" if rtf is not None else "")
          + (f"; {s['late_events']} late events dropped" if s["late_events"] else ""))
    print(f"prediction: {_name(s['prediction'])}")
    if args.out:
        out = Path(args.out)
        out.write_text(json.dumps({"run": str(run_.checkpoint), "events_file": str(path), "fused": args.fuse,
                                   "window": window, "summary": s, "steps": report.steps}, indent=2) + "\n")
        print(f"wrote {out}")
    return 0
