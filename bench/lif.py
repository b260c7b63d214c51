"""LIF benchmark: ``tdbn.functional.lif`` (hand-written BPTT) vs ``lif_naive`` (autograd over the loop).

For each shape ``[T, N, C, H, W]``: forward + backward time (median over ``--reps``, the two functions
interleaved in one process, so machine load hits both alike), the memory autograd retains for the backward pass
(RSS after the forward pass with the graph alive, minus before, minus the output) and the peak memory of
forward + backward above the start, both measured in fresh processes with glibc's mmap threshold at 1 MiB, so that
freed tensors leave the RSS at once and it tracks live tensors.

A second table does the same for a ``tdBN -> LIF`` unit: the plain storage (``lean_training(False)``), the lean
storage (the LIF recomputes its input from the tdBN's and stores no membrane potentials) with the ATen loops
(``native.enabled(False)``) and with the compiled CPU kernels (the default), and the ANN floor's
``BatchNorm2d -> ReLU`` on the merged ``T*N`` batch.

    python bench/lif.py                          # [6, 32, 128, 32, 32] and three more shapes
    python bench/lif.py --shapes 4,8,128,32,32 --reps 3
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _common import emit, machine, median, peak_mb, release_memory, reset_peak, rss_mb, run_worker, table  # noqa: E402

UNIT_LABELS = {
    "unit-plain": "plain storage, ATen",
    "unit-aten": "lean storage, ATen loops",
    "unit-lean": "lean, compiled kernels (default)",
    "unit-floor": "floor: BatchNorm2d + ReLU",
}
DEFAULT_SHAPES = ("6,32,128,32,32", "4,8,128,32,32", "6,32,256,16,16", "40,16,64,32,32")
MB = 1024 * 1024


def _case(name: str, shape: tuple[int, ...]):
    """``(make_input, run)``: ``run(x)`` is the forward pass, returning the output tensor."""
    import torch

    import tdbn
    from tdbn.functional import lif, lif_naive
    from tdbn.operators import switches

    if name in ("lif", "naive"):
        fn = lif if name == "lif" else lif_naive
        return (lambda: (torch.randn(shape) * 0.5 + 0.3).requires_grad_()), fn
    from tdbn.operators import cpu as native

    if name == "unit-floor":  # the ANN floor's unit: BatchNorm2d + ReLU on the merged T*N batch
        bn2 = torch.nn.BatchNorm2d(shape[2])
        return (lambda: torch.randn(shape).requires_grad_()), lambda x: torch.relu(bn2(x.flatten(0, 1)))
    unit = tdbn.TdBNLIF(tdbn.TdBatchNorm2d(shape[2]), tdbn.LIF())  # tdBN -> LIF as one unit
    lean = name in ("unit-lean", "unit-aten")
    compiled_kernels = name != "unit-aten"

    def run(x):
        with switches.lean_training(lean), native.enabled(compiled_kernels):
            return unit(x)

    return (lambda: torch.randn(shape).requires_grad_()), run


def memory_worker(name: str, shape: tuple[int, ...]) -> None:
    import torch

    make, run = _case(name, shape)
    x = make()
    y = run(x)
    g = torch.randn(y.shape)
    y.backward(g)
    del y  # not alive at the baseline below
    x.grad = None
    for _ in range(2):  # warm-up: allocator and kernels
        run(x).backward(g)
        x.grad = None
    release_memory()
    start = rss_mb()
    reset_peak()
    y = run(x)
    out_mb = y.numel() * y.element_size() / MB
    release_memory()
    retained = rss_mb() - start - out_mb
    y.backward(g)
    peak = peak_mb() - start
    emit({"retained_mb": retained, "peak_mb": peak})


def time_worker(names: list[str], shape: tuple[int, ...], reps: int) -> None:
    import time

    import torch

    cases = {n: _case(n, shape) for n in names}
    g = torch.randn(shape)  # reshaped per case (the floor's unit works on the merged batch)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps + 1):
        for n in names:  # interleaved
            make, run = cases[n]
            x = make()
            t0 = time.perf_counter()
            y = run(x)
            y.backward(g.view(y.shape))
            if r:  # first round: warm-up
                times[n].append(time.perf_counter() - t0)
    emit({n: median(t) for n, t in times.items()})


def measure(names: list[str], shape: tuple[int, ...], reps: int) -> dict:
    script = Path(__file__)
    spec = ",".join(map(str, shape))
    times = run_worker(sys.executable, script, ["--time", ",".join(names), "--shape", spec, "--reps", str(reps)])
    old = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(MB)
    try:
        mem = {n: run_worker(sys.executable, script, ["--memory", n, "--shape", spec]) for n in names}
    finally:
        if old is None:
            del os.environ["MALLOC_MMAP_THRESHOLD_"]
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = old
    return {"times": times, "mem": mem}


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def report(shapes, reps: int, unit: bool) -> str:
    rows, unit_rows = [], []
    for shape in shapes:
        r = measure(["lif", "naive"], shape, reps)
        t, m = r["times"], r["mem"]
        if "error" in t or any("error" in v for v in m.values()):
            rows.append([_fmt_shape(shape), f"error: {t.get('error') or m}"] + [""] * 6)
            continue
        rows.append([
            _fmt_shape(shape),
            f"{1000 * t['naive']:.0f}", f"{1000 * t['lif']:.0f}", f"{t['naive'] / t['lif']:.2f}x",
            f"{m['naive']['retained_mb']:.0f}", f"{m['lif']['retained_mb']:.0f}",
            f"{m['naive']['retained_mb'] / max(m['lif']['retained_mb'], 1e-9):.2f}x",
            f"{m['naive']['peak_mb']:.0f} / {m['lif']['peak_mb']:.0f}",
        ])
        if unit and shape == shapes[0]:
            kinds = ("unit-plain", "unit-aten", "unit-lean", "unit-floor")
            u = measure(list(kinds), shape, reps)
            ut, um = u["times"], u["mem"]
            if "error" not in ut and not any("error" in v for v in um.values()):
                for n in kinds:
                    unit_rows.append([_fmt_shape(shape), UNIT_LABELS[n], f"{1000 * ut[n]:.0f}",
                                      f"{um[n]['retained_mb']:.0f}", f"{um[n]['peak_mb']:.0f}"])
    out = [
        "LIF forward + backward: lif (hand-written BPTT) vs lif_naive (autograd over the loop)",
        "",
        table(["shape [T, N, C, H, W]", "naive ms", "lif ms", "speed-up", "naive retained MB", "lif retained MB",
               "memory ratio", "peak MB naive / lif"], rows),
    ]
    if unit_rows:
        out += ["", "tdBN -> LIF unit: plain storage, lean storage with the ATen loops, lean with the compiled "
                "kernels (default), and the ANN floor's BatchNorm2d -> ReLU", "",
                table(["shape", "variant", "fwd+bwd ms", "retained MB", "peak MB"], unit_rows)]
    out += ["", f"median of {reps} runs after one warm-up; retained = RSS after forward (graph alive) - before - "
            "output; mmap threshold 1 MiB for the memory runs",
            f"machine: {machine()}; {datetime.date.today().isoformat()}"]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="*", default=list(DEFAULT_SHAPES), help="T,N,C,H,W (first: the main shape)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--no-unit", action="store_true", help="skip the tdBN -> LIF table")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--time", default=None, help=argparse.SUPPRESS)
    p.add_argument("--memory", default=None, help=argparse.SUPPRESS)
    p.add_argument("--shape", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        shape = tuple(int(v) for v in args.shape.split(","))
        if args.time:
            time_worker(args.time.split(","), shape, args.reps)
        else:
            memory_worker(args.memory, shape)
        return 0
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes]
    print(report(shapes, args.reps, not args.no_unit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
