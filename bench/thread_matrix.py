"""Run the test suite at several thread counts (and with another CPU's kernels) and report every test whose outcome
depends on the setting.

    python bench/thread_matrix.py                       # 1, 2 and 4 threads, then the "other CPU" setting
    python bench/thread_matrix.py --threads 1 4 --no-isa -- tests/export   # a subset; pytest arguments after --
    make test-matrix                                    # the same, in the project's environment

A setting is a fresh ``pytest`` run, as ``make test`` runs it (one worker process per core, ``--serial`` for one),
with ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` = N: torch's intra-op threads in every worker and in every subprocess
a test starts. The "other CPU" setting runs at the machine's default thread count as on a CPU with 256-bit vectors (AVX2, the
most common x86 CPU besides AVX-512 ones): ATen's kernels at that width (``ATEN_CPU_CAPABILITY=avx2``) and oneDNN
limited to AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``), so reductions and convolutions sum in another order; a test that holds
on one machine's float order only shows up here. (``ATEN_CPU_CAPABILITY=default``, the scalar kernels of a CPU
without AVX2/FMA, is no usable setting: torch.compile's generated code does not build under it, and on such a CPU
ATen's addcmul rounds twice where tdbn's compiled LIF backward, like ATen on every FMA CPU, rounds once.)

Each setting writes ``thread-matrix/<setting>.xml`` (JUnit). The table gives each setting's counts and time; then
every test that failed anywhere, or whose outcome (passed / failed / skipped) differs between settings. Exit
status 0 only when every test passed (or skipped alike) in every setting.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARALLEL = ["-n", "auto", "--maxprocesses", "4", "--dist", "loadfile"]  # as make test: each process has N threads


def _settings(threads: list[int], isa: bool) -> list[tuple[str, dict[str, str]]]:
    out = [(f"threads-{n}", {"OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}) for n in threads]
    if isa:
        out.append(("other-cpu", {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}))
    return out


def _outcomes(xml: Path) -> dict[str, str]:
    """``{test id: passed | failed | skipped}`` from a JUnit file (errors count as failed)."""
    result: dict[str, str] = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        tags = {child.tag for child in case}
        result[name] = "failed" if tags & {"failure", "error"} else "skipped" if "skipped" in tags else "passed"
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4], metavar="N")
    p.add_argument("--no-isa", dest="isa", action="store_false", help="leave out the other-CPU setting")
    p.add_argument("--serial", action="store_true", help="one pytest process (default: as make test, one per core)")
    p.add_argument("--out", type=Path, default=ROOT / "thread-matrix", help="folder for the JUnit files")
    p.add_argument("pytest_args", nargs="*", help="after --: passed to pytest (default: the whole suite)")
    args = p.parse_args(argv)
    if any(n < 1 for n in args.threads):
        p.error(f"--threads takes positive integers, got {args.threads}")
    args.out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict[str, str]] = {}
    rows = []
    for name, env in _settings(args.threads, args.isa):
        xml = args.out / f"{name}.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
               *([] if args.serial else PARALLEL), *args.pytest_args]
        print(f"[{name}] {' '.join(f'{k}={v}' for k, v in env.items())} {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE", **env})
        try:
            proc.wait()
        finally:  # stopped (Ctrl-C, SIGTERM): stop this setting's pytest too, not leave it running
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
        seconds = time.perf_counter() - start
        if not xml.is_file():
            print(f"[{name}] pytest wrote no report (exit {proc.returncode})", file=sys.stderr)
            return 1
        runs[name] = _outcomes(xml)
        counts = {k: sum(v == k for v in runs[name].values()) for k in ("passed", "failed", "skipped")}
        rows.append((name, counts, seconds))

    print("\n| setting | passed | failed | skipped | time |\n|---|---|---|---|---|")
    for name, c, s in rows:
        print(f"| {name} | {c['passed']} | {c['failed']} | {c['skipped']} | {s / 60:.1f} min |")
    ids = sorted(set().union(*runs.values()))
    bad = [(t, [runs[n].get(t, "absent") for n in runs]) for t in ids]
    bad = [(t, o) for t, o in bad if len(set(o)) > 1 or "failed" in o]
    if not bad:
        print(f"\nall {len(ids)} tests: the same outcome in every setting, none failed")
        return 0
    print(f"\n{len(bad)} tests failed or depend on the setting ({', '.join(runs)}):")
    for t, o in bad:
        print(f"  {t}: {' / '.join(o)}")
    return 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the pytest of the current setting is stopped
    sys.exit(main())
