"""CUDA benchmarks: the LIF kernels and the ResNet-19 training step on a GPU, in one table each.

1. LIF forward + backward for ``[T, N, C, H, W]``: ``lif_naive`` (autograd over the loop), ``lif`` on the
   plain-PyTorch reference kernels (``tdbn.operators.use_reference()``), ``lif`` on the device's kernels (Triton's
   on CUDA), each checked against the reference first (spikes equal, gradients close). Median time (CUDA-synchronized) and the peak memory above the input.
2. Training step of the paper's ResNet-19 (forward + loss + backward + SGD step) for width, N, T: tdbn eager
   (the operators' CUDA implementation: the one-pass Triton unit kernels of :mod:`tdbn.operators.cuda_units`),
   ``tdbn-units-triton`` (the same as ``tdbn`` on
   CUDA; on the CPU it runs the Triton kernels in the interpreter, for a smoke run, by putting them in place of
   :func:`tdbn.operators.kernels.for_cpu`), tdbn compiled, the ANN floor eager and compiled, and
   SpikingJelly 2.0 (its triton or cupy backend where it has one, else its torch backend) when it is importable.
   fp32, or fp16 / bf16 AMP (``--amp``). Peak memory is ``torch.cuda.max_memory_allocated`` above the model and batch.

    python bench/gpu.py                                 # both tables, the issue's four configurations
    python bench/gpu.py --configs 1,64,4 --amp fp16
    python bench/gpu.py --skip-lif --configs 1,32,4 --impls tdbn,tdbn-units-triton,floor --amp bf16
    python bench/gpu.py --device cpu --configs 0.0625,4,2 --lif-shapes 2,2,8,8,8 --reps 2   # smoke run

Writes the numbers as JSON too (``--json``). Every implementation runs in this process; the allocator's peak is
reset before each, so earlier cells do not count.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from _common import table  # noqa: E402

MB = 1024 * 1024
DEFAULT_CONFIGS = ("1,8,4", "1,8,6", "0.25,32,4", "0.25,32,6", "1,64,4")
DEFAULT_LIF_SHAPES = ("6,32,128,32,32", "4,64,128,32,32", "40,16,64,32,32")
STEP_IMPLS = ("tdbn", "tdbn-units-triton", "tdbn-compiled", "floor", "floor-compiled",
              "spikingjelly")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> float:
    if device.type != "cuda":
        return 0.0
    _sync(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device) / MB


def _peak(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / MB if device.type == "cuda" else None


def _timed(fn, device: torch.device, warmup: int, reps: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


# ------------------------------------------------------------------------------------------------ LIF table


def lif_rows(shapes, device: torch.device, reps: int) -> tuple[list[list[str]], list[dict]]:
    from tdbn.functional import lif, lif_naive
    from tdbn.operators import use_reference

    def reference(x):
        with use_reference():
            return lif(x)

    impls = {"naive": lif_naive, "reference": reference, "triton": lif}
    rows, data = [], []
    for shape in shapes:
        x = (torch.randn(shape, device=device) * 0.5 + 0.3).requires_grad_()
        g = torch.randn(shape, device=device)
        ref_s = reference(x)
        (ref_g,) = torch.autograd.grad(ref_s, x, g)
        cell: dict = {"shape": list(shape)}
        for name, fn in impls.items():
            try:
                s = fn(x)
                (gx,) = torch.autograd.grad(s, x, g)
                ok = torch.equal(s, ref_s) and torch.allclose(gx, ref_g, rtol=1e-4, atol=1e-5)
                del s, gx
                base = _reset_peak(device)

                def run(fn=fn):
                    x.grad = None
                    fn(x).backward(g)

                t = _timed(run, device, warmup=2, reps=reps)
                peak = _peak(device)
                cell[name] = {"ms": 1000 * statistics.median(t), "peak_mb": None if peak is None else peak - base,
                              "matches_reference": ok}
            except Exception as err:  # kernels that cannot run here
                cell[name] = {"error": f"{type(err).__name__}: {err}"}
        data.append(cell)
        row = ["[" + ", ".join(map(str, shape)) + "]"]
        for name in impls:
            c = cell[name]
            if "error" in c:
                row.append("n/a")
            else:
                mem = "" if c["peak_mb"] is None else f" / {c['peak_mb']:.0f} MB"
                row.append(f"{c['ms']:.2f} ms{mem}" + ("" if c["matches_reference"] else " (MISMATCH)"))
        t_torch, t_tri = cell["reference"].get("ms"), cell["triton"].get("ms")
        row.append(f"{t_torch / t_tri:.2f}x" if t_torch and t_tri else "n/a")
        rows.append(row)
    return rows, data


# ------------------------------------------------------------------------------------------------ training step


def _build(impl: str, width: float, T: int):
    from _nets import build


    base = {"tdbn-units-triton": "tdbn"}.get(impl, impl)
    if base == "spikingjelly":
        model, forward = build("spikingjelly", width, T)
        backend = "torch"
        for name in ("triton", "cupy"):  # the fastest backend this installation offers
            try:
                from spikingjelly.activation_based import functional

                functional.set_backend(model, name)
                backend = name
                break
            except Exception:
                continue
        return model, forward, f"spikingjelly ({backend})"
    model, forward = build(base, width, T)
    return model, forward, impl


def step_cell(impl: str, width: float, N: int, T: int, device: torch.device, amp: str | None, reps: int) -> dict:
    if impl == "tdbn-units-triton" and device.type == "cpu":  # the operators' CPU registrations on Triton's kernels
        from tdbn.operators import cuda_units, kernels

        for_cpu, kernels.for_cpu = kernels.for_cpu, lambda: cuda_units
        try:
            return _step_cell(impl, width, N, T, device, amp, reps)
        finally:
            kernels.for_cpu = for_cpu
    return _step_cell(impl, width, N, T, device, amp, reps)


def _step_cell(impl: str, width: float, N: int, T: int, device: torch.device, amp: str | None,
               reps: int) -> dict:
    torch.manual_seed(0)
    model, forward, label = _build(impl, width, T)
    model = model.to(device).train()
    run = torch.compile(model) if impl.endswith("-compiled") else model
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(N, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (N,), device=device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp or "")
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = nn.functional.cross_entropy(forward(run, x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    t0 = time.perf_counter()
    step()
    _sync(device)
    first = time.perf_counter() - t0
    step()
    base = _reset_peak(device)
    times = _timed(step, device, warmup=1, reps=reps)
    peak = _peak(device)
    ms = 1000 * statistics.median(times)
    return {"impl": label, "ms": ms, "img_s": N / (ms / 1000), "peak_mb": None if peak is None else peak - base,
            "first_step_s": first}


def step_rows(configs, impls, device, amp, reps) -> tuple[list[list[str]], list[dict]]:
    rows, data = [], []
    for width, N, T in configs:
        cells = {}
        for impl in impls:
            try:
                cells[impl] = step_cell(impl, width, N, T, device, amp, reps)
            except Exception as err:
                cells[impl] = {"impl": impl, "error": f"{type(err).__name__}: {err}"}
            if device.type == "cuda":
                torch.cuda.empty_cache()
        data.append({"width": width, "N": N, "T": T, "cells": cells})
        floor = cells.get("floor", {})
        for impl, c in cells.items():
            if "error" in c:
                rows.append([f"{width:g}, {N}, {T}", c["impl"], "error", "", "", "", c["error"][:80]])
                continue
            t_ratio = f"{c['ms'] / floor['ms']:.2f}x" if "ms" in floor else ""
            m_ratio = f"{c['peak_mb'] / floor['peak_mb']:.2f}x" if c["peak_mb"] and floor.get("peak_mb") else ""
            mem = "" if c["peak_mb"] is None else f"{c['peak_mb']:.0f}"
            rows.append([f"{width:g}, {N}, {T}", c["impl"], f"{c['ms']:.1f}", f"{c['img_s']:.0f}", mem, t_ratio,
                         m_ratio])
    return rows, data


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--configs", nargs="*", default=list(DEFAULT_CONFIGS), help="width,N,T triples")
    p.add_argument("--impls", default=",".join(STEP_IMPLS))
    p.add_argument("--lif-shapes", nargs="*", default=list(DEFAULT_LIF_SHAPES), help="T,N,C,H,W")
    p.add_argument("--amp", choices=["fp16", "bf16"], default=None, help="autocast the training steps")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--skip-lif", action="store_true")
    p.add_argument("--skip-step", action="store_true")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py: no CUDA device here (torch.cuda.is_available() is False); "
                         "use --device cpu for a smoke run")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    header = f"{name}; torch {torch.__version__}; {datetime.date.today().isoformat()}"
    out: dict = {"machine": header, "amp": args.amp}
    if not args.skip_lif:
        shapes = [tuple(int(v) for v in s.split(",")) for s in args.lif_shapes]
        rows, out["lif"] = lif_rows(shapes, device, args.reps)
        print("LIF forward + backward (median time / peak memory above the input)\n")
        print(table(["shape [T, N, C, H, W]", "naive", "lif reference", "lif (device's kernels)", "speed-up"], rows))
        print()
    if not args.skip_step:
        configs = [(float(a), int(b), int(c)) for a, b, c in (s.split(",") for s in args.configs)]
        impls = [i for i in args.impls.split(",") if i]
        rows, out["step"] = step_rows(configs, impls, device, args.amp, args.reps)
        print(f"ResNet-19 training step ({args.amp or 'fp32'}; median of {args.reps})\n")
        print(table(["width, N, T", "implementation", "ms", "img/s", "peak MB", "time / floor", "memory / floor"],
                    rows))
        print()
    print(header)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
