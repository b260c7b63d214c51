"""Streaming benchmark: milliseconds per time step of ``tdbn.stream`` at batch 1, fused and unfused, 1 and 2
threads, and the real-time factor for the paper's 30 ms frames (frame duration / compute time per step).

Networks at full width: ResNet-17 on 2x32x32 frames (the DVS128 Gesture net, T = 40) and ResNet-19 on 2x42x42
frames (the CIFAR10-DVS net, T = 10), random weights with tdBN statistics from one training-mode pass, random
event-count frames. Columns: ``first step`` = the first step of the process, which also measures the kernel
plans of the conv and fc layers (tdbn.stream.exact) and warms the kernels up; ``step`` = one ``tdbn.stream``
step (state in, state out); ``T=1 forward`` = the multi-step forward on a single frame (no state carried; what a
step costs without streaming); ``batched / T`` = the multi-step forward over all T frames at once divided by T
(offline throughput, not a live stream); ``peak RSS`` = the process's peak resident memory after the streamed
steps, before the multi-step forwards (nothing reset: the model, the kernel plans' probes and every step
included); ``state`` = the memory a stream carries between steps (every neuron's potential). Each
configuration runs in a fresh process; medians over the measured steps.

    python bench/stream.py
    python bench/stream.py --models resnet17 --threads 2 --steps 40
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _common import emit, machine, median, run_worker, table  # noqa: E402

NETS = {  # name: (channels, size, T, classes)
    "resnet17": (2, 32, 40, 11),
    "resnet19": (2, 42, 10, 10),
}
FRAME_MS = 30.0


def worker(args) -> None:
    import resource

    import torch

    import tdbn
    from tdbn.stream import Stream

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    c, size, T, classes = NETS[args.model]
    model = tdbn.models.create(args.model, num_classes=classes, in_channels=c, width=1.0, timesteps=T,
                               input_size=size)
    with torch.no_grad():
        model.train()(torch.poisson(torch.full((min(T, 4), 2, c, size, size), 0.3)))
    model.eval()
    if args.fused:
        model = tdbn.fuse(model)
    frames = torch.poisson(torch.full((T, 1, c, size, size), 0.3))  # [T, N=1, C, H, W]
    stream = Stream(model, window=T)
    t0 = time.perf_counter()
    stream.push(frames[0])
    first = time.perf_counter() - t0
    times = []
    for i in range(1, 1 + args.warmup + args.steps):
        t0 = time.perf_counter()
        stream.push(frames[i % T])
        if i > args.warmup:
            times.append(time.perf_counter() - t0)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    state_kb = sum(u.numel() * u.element_size() for u in stream.state.membranes.values()) / 1024
    one = []
    with torch.no_grad():
        for i in range(args.warmup + args.steps // 2):
            t0 = time.perf_counter()
            model.forward_steps(frames[i % T: i % T + 1])
            if i >= args.warmup:
                one.append(time.perf_counter() - t0)
        model(frames)
        batched = []
        for _ in range(3):
            t0 = time.perf_counter()
            model(frames)
            batched.append((time.perf_counter() - t0) / T)
    emit({"first_ms": 1000 * first, "step_ms": 1000 * median(times), "one_ms": 1000 * median(one),
          "batched_ms": 1000 * median(batched), "peak_rss_mb": peak_rss, "state_kb": state_kb})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default="resnet17", help=argparse.SUPPRESS)
    p.add_argument("--fused", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--models", default="resnet17,resnet19")
    p.add_argument("--threads", default="1,2", help="thread counts (comma-separated)")
    p.add_argument("--steps", type=int, default=40, help="measured steps per configuration")
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args()
    if args.worker:
        worker(argparse.Namespace(**{**vars(args), "threads": int(args.threads)}))
        return
    rows = []
    for name in args.models.split(","):
        c, size, T, _ = NETS[name]
        for fused in (0, 1):
            for threads in (int(t) for t in args.threads.split(",")):
                r = run_worker(sys.executable, Path(__file__), [
                    "--model", name, "--fused", str(fused), "--threads", str(threads), "--steps", str(args.steps),
                    "--warmup", str(args.warmup)])
                label = f"{name} {c}x{size}x{size}"
                if "error" in r:
                    rows.append([label, "fused" if fused else "unfused", threads, "error", r["error"][:60], "", "", "",
                                 "", ""])
                    continue
                rows.append([label, "fused" if fused else "unfused", threads, f"{r['first_ms']:.0f}",
                             f"{r['step_ms']:.2f}", f"{FRAME_MS / r['step_ms']:.1f}", f"{r['one_ms']:.2f}",
                             f"{r['batched_ms']:.2f}", f"{r['peak_rss_mb']:.0f}", f"{r['state_kb']:.0f}"])
                print(" | ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
    print(f"streaming, batch 1, {datetime.date.today().isoformat()}; {machine()}")
    print(table(["network", "", "threads", "first step (ms)", "step (ms)",
                 f"real-time factor ({FRAME_MS:g} ms frames)", "T=1 forward (ms)", "batched / T (ms)",
                 "peak RSS (MB)", "state (kB)"], rows))


if __name__ == "__main__":
    main()
