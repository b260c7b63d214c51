"""Shared helpers of the benchmark scripts: memory readings, timing, worker subprocesses, tables.

Memory is the resident set size (RSS) of a fresh process, read from ``/proc/self/status``: the peak
(``VmHWM``) is reset after warm-up by writing 5 to ``/proc/self/clear_refs`` (Linux >= 4.0), so that one-off
costs (first-call allocations, compilation) do not count. Elsewhere ``resource.getrusage`` gives a
whole-life peak instead, and the table says so.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _status_mb(field: str) -> float:
    """A memory field of ``/proc/self/status`` in MB; elsewhere the whole-life peak from ``getrusage``."""
    kb = _status_kb(field)
    if kb is None:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return kb / 1024.0


def rss_mb() -> float:
    """Current resident set size in MB."""
    return _status_mb("VmRSS")


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter of this process; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    """Peak resident set size (MB) since the last :func:`reset_peak` (or since the process started)."""
    return _status_mb("VmHWM")


def release_memory() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``), so that RSS readings start low."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def timed(fn: Callable[[], object], *, warmup: int, steps: int) -> dict:
    """Run ``fn`` ``warmup`` times, then ``steps`` times; wall-clock seconds of each measured call and the peak
    RSS (MB) over the measured calls, with the RSS before the first call (``base_mb``) as baseline."""
    release_memory()
    base = rss_mb()
    for _ in range(warmup):
        fn()
    release_memory()
    whole_peak_warmup = peak_mb()  # the process's peak so far (warm-up included), read before the reset
    exact_peak = reset_peak()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    peak = peak_mb()
    return {"times": times, "base_mb": base, "peak_mb": peak, "peak_since_warmup": exact_peak,
            "whole_peak_mb": max(peak, whole_peak_warmup)}


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def run_worker(python: str, script: Path, args: Sequence[str], *, timeout: float = 1800.0) -> dict:
    """Run ``python script --worker args...`` in a fresh process; its last stdout line is a JSON object."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO / "bench"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [python, str(script), "--worker", *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
        return {"error": " | ".join(tail) or f"exit code {proc.returncode}"}
    return json.loads(lines[-1])


def machine() -> str:
    """One line describing this machine: CPU, its vector capability and whether bf16 is native, cores, torch
    version, load."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import torch

    try:
        load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    try:
        from tdbn.train.amp import cpu_bf16_native
        bf16 = "native bf16" if cpu_bf16_native() else "no native bf16"
    except ImportError:  # a peer's environment without tdbn
        bf16 = "bf16 support not checked"
    isa = f"{torch.backends.cpu.get_cpu_capability()}, {bf16}"
    return (
        f"{cpu} ({isa}), {os.cpu_count()} cores, torch {torch.__version__} "
        f"(default {torch.get_num_threads()} threads), "
        f"Python {platform.python_version()}, load average (1/5/15 min) {load}"
    )


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, cells[1:])])


def emit(result: dict) -> None:
    """Print a worker's result as its last stdout line."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
