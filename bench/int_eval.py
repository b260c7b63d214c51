"""``tdbn eval RUN --bits K`` against the float ``tdbn eval RUN``: time and memory, at 1 and 2 threads.

Each cell runs in a fresh process with ``torch.set_num_threads(k)`` and calls what the command calls
(``tdbn.train.evaluate_checkpoint``: the float network; ``tdbn.export.quant_eval.evaluate_integer``: the integer
network, whose scores come from ``IntegerNet.scores`` on float32 kernels where provably exact, beside the fused float
model on the same samples), from the checkpoint to the accuracy: restore, data, evaluation, with OpenMP's passive
waiting as the ``tdbn`` command sets it. The table gives the wall
time, the whole-process peak RSS (``ru_maxrss``: imports, model, data and evaluation, as a user sees it) and the
live-tensor memory (a second run with glibc's mmap threshold at 1 MiB, where RSS follows the live tensors: the peak
above the RSS before the evaluation). A second table runs the int64 simulation (``IntegerNet.forward_nodes``, the
reference) and the fast path on the same ``--reference-limit`` samples: seconds per 1,000 samples, and whether every
score is the same.

    python bench/int_eval.py runs/mnist-...                       # all test samples, 1 and 2 threads
    python bench/int_eval.py runs/mnist-... --limit 2000 --threads 1 --reference-limit 200
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, peak_mb, release_memory, reset_peak, rss_mb, run_worker, table  # noqa: E402


# ------------------------------------------------------------------------------------------------ worker


def _ru_maxrss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.mode == "reference":
        emit(_reference(args))
        return
    from tdbn.export.quant_eval import evaluate_integer
    from tdbn.train import evaluate_checkpoint

    release_memory()
    base = rss_mb()
    reset_peak()
    t0 = time.perf_counter()
    if args.mode == "float":
        res = evaluate_checkpoint(args.run, data_root=args.data, test_limit=args.limit)
        top1 = res["top1"]
    else:
        res = evaluate_integer(args.run, bits=args.bits, data_root=args.data, test_limit=args.limit)
        top1 = res["top1_integer"]
    seconds = time.perf_counter() - t0
    emit({"seconds": seconds, "top1": top1, "samples": res["samples"], "live_mb": peak_mb() - base,
          "ru_maxrss_mb": _ru_maxrss_mb(), "seconds_integer": res.get("seconds_integer"),
          "seconds_float": res.get("seconds_float"), "off_float32": res.get("integer_layers_off_float32"),
          "same_predictions": res.get("same_predictions")})


def _reference(args) -> dict:
    """The int64 simulation and the fast path on the same samples: time and equality of every score."""
    import torch

    from tdbn.export.nir import OUTPUT
    from tdbn.export.quant_eval import integer_from_checkpoint
    from tdbn.train.data import build_data

    net, run = integer_from_checkpoint(args.run, bits=args.bits)
    cfg = run.config
    if args.data:
        cfg.data.root = args.data
    cfg.data.test_limit = args.reference_limit
    data = build_data(cfg.data, batch_size=100, timesteps=cfg.model.timesteps, seed=cfg.seed, train=False)
    scale = net.nodes[net.nodes[OUTPUT].sources[0]].scale
    net.scores(next(iter(data.test))[0][:2].float())  # warm-up: the first call of tdbn's operators imports more
    slow = fast = 0.0
    same = n = 0
    for x, _ in data.test:
        x = x.float()
        t0 = time.perf_counter()
        out = net.forward_nodes(x)[OUTPUT]
        ref = out.sum(0).to(torch.float64) * (scale / out.shape[0])
        t1 = time.perf_counter()
        got = net.scores(x)
        t2 = time.perf_counter()
        slow, fast = slow + t1 - t0, fast + t2 - t1
        same += int((ref == got).all(1).sum())
        n += x.shape[0] if x.dim() == 4 else x.shape[1]
    return {"samples": n, "same_scores": same, "int64_s_per_1000": 1000 * slow / n,
            "fast_s_per_1000": 1000 * fast / n}


# ------------------------------------------------------------------------------------------------ driver


def _cell(args, mode: str, threads: int, *, live: bool = False) -> dict:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the tdbn command runs (tdbn.cli): no spinning threads
    cli = [str(args.run), "--mode", mode, "--threads", str(threads), "--bits", str(args.bits),
           "--reference-limit", str(args.reference_limit)]
    if args.limit is not None:
        cli += ["--limit", str(args.limit)]
    if args.data:
        cli += ["--data", args.data]
    env_before = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    if live:  # glibc returns blocks above the mmap threshold to the OS when freed: RSS tracks the live tensors
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(1024 * 1024)
    try:
        res = run_worker(sys.executable, Path(__file__), cli, timeout=7200)
    finally:
        if env_before is None:
            os.environ.pop("MALLOC_MMAP_THRESHOLD_", None)
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = env_before
    if "error" in res:
        raise SystemExit(f"{mode} at {threads} thread(s) failed: {res['error']}")
    return res


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="?", help="run folder (or checkpoint) of tdbn train")
    p.add_argument("--bits", type=int, default=8)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--limit", type=int, help="test samples (default: the whole test split)")
    p.add_argument("--reference-limit", type=int, default=500,
                   help="samples for the int64 simulation vs fast path table (0: skip it)")
    p.add_argument("--data", help="data folder (default: the run's)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=("float", "integer", "reference"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.threads = args.threads[0]
        return worker(args)
    if args.run is None:
        p.error("give the run folder to evaluate")
    rows, ref_rows = [], []
    for k in args.threads:
        f, i = _cell(args, "float", k), _cell(args, "integer", k)
        f_live, i_live = _cell(args, "float", k, live=True), _cell(args, "integer", k, live=True)
        rows.append([k, f"{f['seconds']:.1f}", f"{i['seconds']:.1f}", f"{i['seconds'] / f['seconds']:.2f}x",
                     f"{i['seconds_integer']:.1f} / {i['seconds_float']:.1f}",
                     f"{f['ru_maxrss_mb']:.0f} / {i['ru_maxrss_mb']:.0f}",
                     f"{f_live['live_mb']:.0f} / {i_live['live_mb']:.0f}",
                     f"{100 * f['top1']:.2f} / {100 * i['top1']:.2f}",
                     ", ".join(f"{n} ({k})" for n, k in i["off_float32"].items()) or "none"])
        print(f"{k} thread(s): float {f['seconds']:.1f} s, integer {i['seconds']:.1f} s", file=sys.stderr)
        if args.reference_limit > 0:
            r = _cell(args, "reference", k)
            ref_rows.append([k, r["samples"], f"{r['int64_s_per_1000']:.1f}", f"{r['fast_s_per_1000']:.1f}",
                             f"{r['int64_s_per_1000'] / r['fast_s_per_1000']:.1f}x",
                             f"{r['same_scores']}/{r['samples']}"])
    samples = f"{i['samples']} test samples"
    print(f"`tdbn eval RUN` vs `tdbn eval RUN --bits {args.bits}` on {samples} of {args.run}; {machine()}\n")
    print(table(["threads", "float eval (s)", f"int{args.bits} eval (s)", "ratio",
                 "int: integer net / fused float net (s)", "whole-process peak RSS float / int (MB)",
                 "live tensors float / int (MB)", "top-1 float / int (%)", "layers off float32"], rows))
    if ref_rows:
        print()
        print(table(["threads", "samples", "int64 simulation (s / 1000)", "fast path (s / 1000)", "speed-up",
                     "identical scores"], ref_rows))


if __name__ == "__main__":
    main()
