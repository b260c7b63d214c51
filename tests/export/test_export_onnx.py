"""ONNX export of the fused network, run by onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import tdbn
from tdbn import LIF
from tdbn.export.onnx import UnrolledLIF, to_onnx, unroll_lifs


def _model(name: str) -> torch.nn.Module:
    options = {"num_classes": 4, "in_channels": 2, "width": 1 / 16, "timesteps": 3}
    if "input_size" in tdbn.models.options_of(name):
        options["input_size"] = 16
    model = tdbn.models.create(name, **options)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(8, 2, 16, 16))
    return model.eval()


def test_unrolled_lif_equals_lif():
    x = torch.randn(7, 5, 9)
    for tau, v_th in [(0.25, 0.5), (0.0, 0.3), (0.3, 1.0)]:
        assert torch.equal(UnrolledLIF(tau=tau, v_th=v_th)(x), LIF(tau=tau, v_th=v_th)(x))
    model = _model("resnet19")
    assert not any(isinstance(m, LIF) for m in unroll_lifs(model).modules())


@pytest.mark.parametrize("name,static", [("resnet19", True), ("resnet34", False)])
def test_onnxruntime_matches_the_fused_model(name: str, static: bool, tmp_path: Path):
    model = _model(name)
    if static:
        example, x = torch.rand(2, 2, 16, 16), torch.rand(9, 2, 16, 16)
    else:  # event frames [T, N, C, H, W]; T is fixed by the example, N is free
        example, x = torch.rand(3, 2, 2, 16, 16), (torch.rand(3, 9, 2, 16, 16) > 0.8).float()
    path = to_onnx(model, tmp_path / f"{name}.onnx", example)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        ref = tdbn.fuse(model)(x).numpy()
    assert scores.shape == ref.shape == (9, 4)
    np.testing.assert_allclose(scores, ref, atol=1e-5)
    assert np.array_equal(scores.argmax(1), ref.argmax(1))


def test_training_mode_is_refused(tmp_path: Path):
    model = tdbn.models.create("plain", num_classes=3, depth=5, width=1 / 16)
    with pytest.raises(ValueError, match=r"eval mode.*model\.eval\(\)"):
        to_onnx(model, tmp_path / "m.onnx", torch.rand(1, 3, 8, 8))
