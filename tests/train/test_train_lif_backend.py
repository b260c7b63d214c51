"""The LIF kernel choice (``model.lif_backend``) is not part of the trained network.

Without a GPU the Triton kernels run in Triton's interpreter (the root conftest sets ``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import tdbn
from cli_run import cli_env
from tdbn.cli import main
from tdbn.layers import set_lif_backend
from tdbn_train_helpers import metrics, one_thread, tiny  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_training_run_with_triton_kernels_evaluates_identically_with_torch_kernels(tmp_path):
    """A run trained with the Triton kernels records the same test accuracy that ``tdbn eval`` then measures on
    the CPU with the torch kernels."""
    run = tmp_path / "run"
    # float64: the eval compares two implementations exactly (Triton kernels, units run module by module / the
    # compiled CPU units); in float32 their roundings differ, and a potential within them of the threshold (on
    # some CPU) would flip a spike and a prediction
    args = tiny(f"run_dir={run}", "model.lif_backend=triton", "dtype=float64")
    assert main(["train", *args, "--device", DEVICE]) == 0
    assert main(["eval", str(run), "--device", "cpu", "--quiet"]) == 0
    assert torch.load(run / "checkpoint.pt", weights_only=True)["config"]["model"]["lif_backend"] == "triton"
    evaluated = json.loads((run / "eval.json").read_text())
    assert evaluated["top1"] == pytest.approx(metrics(run)[-1]["test_top1"])
    assert evaluated["loss"] == pytest.approx(metrics(run)[-1]["test_loss"], rel=1e-5)


def test_triton_kernels_off_cuda_are_refused_before_any_work(tmp_path):
    """Without Triton's interpreter, ``model.lif_backend=triton`` on the CPU is one error line naming the fix,
    before any data is read or any folder made (not a warning, a fallback message and then an error)."""
    pytest.importorskip("triton")
    proc = subprocess.run([sys.executable, "-m", "tdbn.cli", "train", *tiny("model.lif_backend=triton"),
                           f"out_dir={tmp_path / 'runs'}", "--device", "cpu"], env=cli_env(TRITON_INTERPRET="0"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == ("tdbn train: error: model.lif_backend=triton runs the LIF kernels on CUDA only, and "
                                   "this run's device is cpu; use model.lif_backend=torch (the default) on the CPU")
    assert not (tmp_path / "runs").exists()


def test_the_triton_units_warning_points_at_the_callers_line():
    """Off CUDA (Triton's interpreter) the units run their modules, said once by a warning attributed to the line
    that called the model, not to a line inside torch or tdbn."""
    pytest.importorskip("triton")
    import tdbn.layers.units as layer_units

    model = set_lif_backend(tdbn.models.create("resnet", num_classes=3, in_channels=1, depth=8, width=0.0625,
                                               timesteps=2), "triton")
    layer_units._warned_backend = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(torch.randn(2, 1, 8, 8))  # the line the warning must name
    line = inspect.currentframe().f_lineno - 1
    said = [w for w in caught if "backend 'triton'" in str(w.message)]
    assert len(said) == 1 and (Path(said[0].filename), said[0].lineno) == (Path(__file__), line)
