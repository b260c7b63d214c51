"""Throughput of the event-to-frame conversion (events/s) on the real 128x128 DVS clips.

    python bench/events.py [--data ../shared/data/dvs128-clips] [--repeat 20]

Prints one row per setting: the paper's DVS128 Gesture and CIFAR10-DVS settings, the whole-recording variant,
full resolution, and the file reader itself. Times are for converting all clips, median and best of the repeats
(on a shared, loaded machine the best is the closer estimate of the uncontended throughput).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from tdbn.data import read_bin_events, to_frames

SETTINGS = {
    "DVS Gesture (paper): 30 ms x 40, 128->32": dict(window_ms=30.0, n_frames=40, downsample_to=(32, 32)),
    "CIFAR10-DVS (paper): 5 ms x 10, 128->42": dict(window_ms=5.0, n_frames=10, downsample_to=(42, 42)),
    "whole recording / 10, 128->42": dict(n_frames=10, downsample_to=(42, 42)),
    "whole recording / 10, equal counts, 128": dict(n_frames=10, split_by="events"),
    "30 ms x 40, 128x128, binary": dict(window_ms=30.0, n_frames=40, mode="binary"),
}


def main() -> None:
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dvs128-clips"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default, help="folder of 5-byte-event clips (*.bs2)")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    paths = sorted(args.data.glob("*.bs2"))
    if not paths:
        raise SystemExit(f"no *.bs2 clips in {args.data}")

    def timed(fn) -> tuple[float, float]:
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times), min(times)

    def row(name: str, seconds: tuple[float, float]) -> None:
        median, best = seconds
        print(f"| {name:<42} | {median * 1e3:>9.1f} | {best * 1e3:>9.1f} | {total / median / 1e6:>13.1f} | "
              f"{total / best / 1e6:>14.1f} |")

    clips = [read_bin_events(p, sensor_size=(128, 128)) for p in paths]
    total = sum(c.num_events for c in clips)
    print(f"{len(clips)} clips, {total:,} events, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print(f"| {'setting':<42} | {'median ms':>9} | {'best ms':>9} | {'Mevents/s med':>13} | {'Mevents/s best':>14} |")
    print(f"|{'-' * 44}|{'-' * 11}|{'-' * 11}|{'-' * 15}|{'-' * 16}|")
    read_all = timed(lambda: [read_bin_events(p, sensor_size=(128, 128)) for p in paths])
    row("read 5-byte files (read_bin_events)", read_all)
    for name, kwargs in SETTINGS.items():
        row(name, timed(lambda: [to_frames(*c, sensor_size=(128, 128), **kwargs) for c in clips]))


if __name__ == "__main__":
    main()
