"""The LIF kernel choice (``model.lif_backend``) is not part of the trained network.

Without a GPU the Triton kernels run in Triton's interpreter (the root conftest sets ``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import json

import pytest
import torch

from tdbn.cli import main
from tdbn_train_helpers import metrics, one_thread, tiny  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_training_run_with_triton_kernels_evaluates_identically_with_torch_kernels(tmp_path):
    """A run trained with the Triton kernels records the same test accuracy that ``tdbn eval`` then measures on
    the CPU with the torch kernels."""
    run = tmp_path / "run"
    assert main(["train", *tiny(f"run_dir={run}", "model.lif_backend=triton"), "--device", DEVICE]) == 0
    assert main(["eval", str(run), "--device", "cpu", "--quiet"]) == 0
    assert torch.load(run / "checkpoint.pt", weights_only=True)["config"]["model"]["lif_backend"] == "triton"
    evaluated = json.loads((run / "eval.json").read_text())
    assert evaluated["top1"] == pytest.approx(metrics(run)[-1]["test_top1"])
    assert evaluated["loss"] == pytest.approx(metrics(run)[-1]["test_loss"], rel=1e-5)
