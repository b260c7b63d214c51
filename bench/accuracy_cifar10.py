"""Accuracy on real CIFAR-10 within a wall-clock budget: ResNet-19 at reduced width, T = 2, on a CPU.

    .venv/bin/python bench/accuracy_cifar10.py [--budget-minutes 60] [--epochs N] [--threads N] [key=value ...]
    .venv/bin/python bench/accuracy_cifar10.py --preset cifar10_resnet19_hour --probe-only   # minutes per epoch here

Runs the ``cifar10_resnet19_cpu`` preset (the paper's ResNet-19 at width 1/4, T = 2; evaluated on a fixed 2,000
of the 10,000 test images) on ``../shared/data/cifar10-jpeg``. Without ``--epochs`` a few timed training steps
first size the run (epochs, and so the cosine schedule) to the budget on this machine, as loaded now; ``budget_minutes`` also stops
training after the first epoch that ends past the budget. Prints test accuracy against wall-clock time and
writes ``curve.csv`` and ``curve.png`` into the run folder ``runs/bench-cifar10_resnet19_cpu-<time>``.
Reference point: a plain PyTorch prototype reached 64.8 % on 2,000 test images after 20 minutes.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _accuracy  # noqa: E402  (sets OMP_WAIT_POLICY before torch loads)

if __name__ == "__main__":
    sys.exit(_accuracy.main("cifar10_resnet19_cpu", 60.0, __doc__))
