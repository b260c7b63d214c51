"""Accuracy on real MNIST within a wall-clock budget: the ``mnist`` preset (narrow spiking ResNet, T = 4).

    .venv/bin/python bench/accuracy_mnist.py [--budget-minutes 30] [--epochs N] [--threads N] [key=value ...]

Reads ``../shared/data/mnist/mnist.npz``. Without ``--epochs`` a few timed training steps first size the run
(epochs, and so the cosine schedule) to the budget on this machine, as loaded now; ``budget_minutes`` also stops
training after the first epoch that ends past the budget. Prints test accuracy against wall-clock time and
writes ``curve.csv`` and ``curve.png`` into the run folder ``runs/bench-mnist-<time>``.
Target: at least 99.0 % test top-1 within 30 minutes on 2 CPU cores.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _accuracy  # noqa: E402  (sets OMP_WAIT_POLICY before torch loads)

if __name__ == "__main__":
    sys.exit(_accuracy.main("mnist", 30.0, __doc__))
