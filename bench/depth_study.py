"""Depth study: test accuracy of plain and residual spiking nets of depth 8-50 with tdBN, standard BN and no
normalization, after the same small training budget on MNIST (14x14). Prints the tables and writes
``docs/figures/depth_study.json`` / ``.png``. About 20 minutes of one CPU core with the defaults.

    python bench/depth_study.py                # = tdbn analyze depth --threads 1 --out docs/figures/depth_study --force
    python bench/depth_study.py --iterations 100 --depths 8 20 --seeds 0 --out depth_quick
    python bench/depth_study.py --jobs 2 --epochs 6 --schedule cosine --eval-every 625 --out depth_long
                                               # a longer, resumable study in 2 processes
    bash bench/depth_converged.sh              # the converged study of docs/analysis.md (exact options)

Any option of ``tdbn analyze depth --help`` is accepted.
"""

from __future__ import annotations

import sys

from tdbn.analysis.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--out" not in args:  # this script refreshes the shipped figure
        args += ["--out", "docs/figures/depth_study", "--force"]
    raise SystemExit(main(["depth", "--threads", "1", *args]))
