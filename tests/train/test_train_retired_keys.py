"""Configuration keys of earlier versions: refused where a user writes them, dropped where a saved run holds them.

``model.lif_backend`` chose the LIF kernels; the tensor's device chooses them now (the C kernels on the CPU,
Triton's on CUDA). It never changed a trained network, so a checkpoint that records it still loads.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tdbn
from tdbn.train import config_from_dict, config_to_dict, load_config
from tdbn.train.config import RETIRED

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoint_v1.pt"


def test_an_override_naming_a_retired_key_says_what_replaced_it():
    with pytest.raises(ValueError, match=r"config key 'model.lif_backend' was removed: the tensor's device chooses "
                                         r"the LIF kernels .*remove the key"):
        load_config(None, ["model.lif_backend=triton"])


def test_a_preset_file_naming_a_retired_key_is_refused_naming_the_file(tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("model:\n  lif_backend: torch\n  timesteps: 3\n")
    with pytest.raises(ValueError, match=r"mine\.yaml: config key 'model.lif_backend' was removed"):
        load_config(str(preset))


def test_a_saved_configuration_drops_retired_keys():
    saved = config_to_dict(load_config(None, ["model.timesteps=3"]))
    saved["model"]["lif_backend"] = "triton"
    cfg = config_from_dict(saved)
    assert cfg.model.timesteps == 3 and "lif_backend" not in config_to_dict(cfg)["model"]
    assert set(RETIRED) == {"model.lif_backend"}


def test_a_checkpoint_recording_the_lif_backend_still_loads():
    assert "lif_backend" in torch.load(LEGACY, weights_only=True)["config"]["model"]
    model = tdbn.load(LEGACY)
    assert not model.training and any(isinstance(m, tdbn.LIF) for m in model.modules())
