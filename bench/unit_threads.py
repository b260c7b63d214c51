"""Thread scaling of the training units against the convolutions they follow.

For one layer of the paper's ResNet-19 (default: width 1/4, N 32, T 4, the first stage: ``[4, 32, 32, 32, 32]``)
times forward + backward of

- the 3x3 convolution (``F.conv2d`` on the merged ``T*N`` batch, ATen/oneDNN),
- the ``conv -> tdBN -> LIF`` unit's own part (``td_bn_lif`` on the conv output),
- the residual junction ``LIF(tdBN(a) + b)`` with an identity shortcut of spikes (``td_bn_add_lif``),
- ATen's own ``a + b`` of the same size: a memory-bound reference (what the memory system gives two threads),

at 1 thread and at the machine's default thread count, in float32 and in bfloat16 (what autocast hands the
units), medians over ``--reps`` interleaved repetitions in one process. The last column is the speed-up from 1
thread to the default count: a unit that scales as well as the convolution shows the same ratio.

The second table times each compiled kernel alone on tensors of 64K to 1M elements at 1 and 2 threads: where
2 threads stop losing is the threshold the kernels use (``tdbn.operators.cpu.MIN_PARALLEL_WORK``; it is
lifted for this table). Run once as is (``OMP_WAIT_POLICY=PASSIVE``, what the ``tdbn`` command sets) and once
with ``OMP_WAIT_POLICY=ACTIVE`` (spinning threads): the policy is read when torch loads OpenMP.

    python bench/unit_threads.py [--shape 4,32,32,32,32] [--reps 15]
    OMP_WAIT_POLICY=ACTIVE python bench/unit_threads.py
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import datetime  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from _common import machine, median, table  # noqa: E402

import tdbn  # noqa: E402
from tdbn.operators import cpu as native  # noqa: E402
from tdbn.operators import td_bn_add_lif, td_bn_lif  # noqa: E402
from tdbn.operators.spike_ops import pack_spikes  # noqa: E402


def cases(shape: tuple[int, ...], dtype: torch.dtype):
    """name -> a function running forward + backward once."""
    T, N, C, H, W = shape
    torch.manual_seed(0)
    x = (torch.rand(T * N, C, H, W) > 0.8).to(dtype)
    weight = (torch.randn(C, C, 3, 3) * 0.1).to(dtype).requires_grad_()
    z = torch.randn(shape).to(dtype).requires_grad_()
    spikes = (torch.rand(shape) > 0.8).to(dtype).requires_grad_()
    bits = pack_spikes(spikes)
    bn_a, bn_b = tdbn.TdBatchNorm2d(C), tdbn.TdBatchNorm2d(C, alpha=2 ** -0.5)
    p = tdbn.LIFParameters()
    g = torch.randn(shape).to(dtype)

    def conv():
        y = F.conv2d(x, weight, padding=1)
        y.backward(g.view(T * N, C, H, W))

    def unit():
        td_bn_lif(z, bn_a.unit_args(z), p).backward(g)

    def junction():
        td_bn_add_lif(z, bn_b.unit_args(z), spikes, None, p, zb_mask=bits).backward(g)

    def add():
        return z.detach() + g

    return {"3x3 conv (fwd+bwd)": conv, "conv -> tdBN -> LIF unit": unit, "junction LIF(tdBN(a) + b)": junction,
            "ATen a + b (memory-bound reference)": add}


def kernel_sizes(reps: int) -> list[list[str]]:
    """Each compiled kernel alone at 64K-1M elements, 1 vs 2 threads, with every size allowed 2 threads."""
    lib = native.library()
    lib.tdbn_set_min_parallel_work(1)
    rows = []
    try:
        for numel in (65536, 131072, 262144, 524288, 1048576):
            T, C = 4, 32
            z = torch.randn(T, numel // (T * C * 16), C, 16)
            mean, var = native.bn_stats(z)
            aff = (mean, torch.rsqrt(var.float() + 1e-5), None)
            gs = torch.randn(z.shape)
            gy, _ = native.unit_backward(gs, z, aff, None, None, 0.25, 0.5, 1.0, "rectangle", sums=True)
            vec = [torch.randn(C) for _ in range(4)]
            ops = {
                "bn_stats": lambda: native.bn_stats(z),
                "unit_forward": lambda: native.unit_forward(z, aff, None, None, 0.25, 0.5),
                "unit_backward": lambda: native.unit_backward(gs, z, aff, None, None, 0.25, 0.5, 1.0, "rectangle",
                                                              sums=True),
                "bn_grad_input": lambda: native.bn_grad_input(gy, z, *vec),
                "pack_bits": lambda: native.pack_bits(z),
            }
            for name, fn in ops.items():
                us = {}
                for n in (1, 2):
                    torch.set_num_threads(n)
                    for _ in range(5):
                        fn()
                    ts = []
                    for _ in range(reps * 10):
                        start = time.perf_counter()
                        fn()
                        ts.append(time.perf_counter() - start)
                    us[n] = 1e6 * median(ts)
                rows.append([f"{numel:,}", name, f"{us[1]:.0f} us", f"{us[2]:.0f} us", f"{us[1] / us[2]:.2f}x"])
    finally:
        lib.tdbn_set_min_parallel_work(native.min_parallel_work())
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="4,32,32,32,32", help="T,N,C,H,W (default: %(default)s)")
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    default_threads = torch.get_num_threads()
    counts = sorted({1, default_threads})
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        fns = cases(shape, dtype)
        times = {(name, n): [] for name in fns for n in counts}
        for rep in range(args.reps + 2):  # two warm-up repetitions
            for n in counts:
                torch.set_num_threads(n)
                for name, fn in fns.items():
                    start = time.perf_counter()
                    fn()
                    if rep >= 2:
                        times[name, n].append(time.perf_counter() - start)
        torch.set_num_threads(default_threads)
        for name in fns:
            ms = {n: 1000 * median(times[name, n]) for n in counts}
            rows.append([str(dtype).replace("torch.", ""), name, *(f"{ms[n]:.1f} ms" for n in counts),
                         f"{ms[counts[0]] / ms[counts[-1]]:.2f}x"])
    head = ["dtype", "operation", *(f"{n} thread{'s' if n > 1 else ''}" for n in counts), "speed-up"]
    policy = os.environ.get("OMP_WAIT_POLICY", "(unset: spin, then sleep)")
    print(f"shape {list(shape)}, OMP_WAIT_POLICY={policy}, compiled kernels: {native.status()}\n")
    print(table(head, rows))
    if default_threads >= 2 and native.available():
        print("\neach kernel alone, float32 [4, *, 32, 16], every size allowed 2 threads:\n")
        print(table(["elements", "kernel", "1 thread", "2 threads", "speed-up"], kernel_sizes(args.reps)))
        torch.set_num_threads(default_threads)
    print(f"\nmedian of {args.reps} interleaved repetitions; {machine()}; {datetime.date.today()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
