"""Configuration: defaults < preset < key=value overrides; unknown keys and bad values raise clearly."""

from __future__ import annotations

import json
import re
from dataclasses import asdict

import pytest
import yaml

from tdbn import models
from tdbn.data import DataNotFoundError
from tdbn.train import TrainConfig, config_from_dict, config_to_dict, load_config, preset_names, preset_path, train
from tdbn.train.config import _flatten

PAPER_PRESETS = [
    "cifar10_resnet19_t2", "cifar10_resnet19_t4", "cifar10_resnet19_t6", "imagenet_resnet34",
    "imagenet_resnet34_large", "imagenet_resnet50", "dvs_gesture_resnet17", "cifar10_dvs_resnet19",
]


def test_one_preset_per_paper_experiment_plus_cpu_ones():
    names = preset_names()
    for name in PAPER_PRESETS + ["mnist", "nmnist"]:
        assert name in names


@pytest.mark.parametrize("name", preset_names())
def test_presets_load_and_only_override_defaults(name):
    cfg = load_config(name)
    assert cfg.name == name
    raw = _flatten(yaml.safe_load(preset_path(name).read_text()))
    defaults = _flatten(config_to_dict(TrainConfig()))
    identity = {"model.name", "model.timesteps", "model.width"}  # what names the experiment may be stated even if default
    same = sorted(k for k, v in raw.items() if defaults[k] == v and k not in identity)
    assert not same, f"preset {name} repeats default values for {same}"
    valid = models.options_of(cfg.model.name)
    assert set(cfg.model.options) <= set(valid)


@pytest.mark.parametrize("name,timesteps,step,batch", [
    ("cifar10_resnet19_t2", 2, 35, 36), ("cifar10_resnet19_t6", 6, 35, 36), ("imagenet_resnet34", 6, 35, 24),
    ("imagenet_resnet34_large", 6, 35, 10), ("imagenet_resnet50", 6, 45, 10), ("dvs_gesture_resnet17", 40, 1000, 40),
    ("cifar10_dvs_resnet19", 10, 35, 36),
])
def test_paper_settings(name, timesteps, step, batch):
    cfg = load_config(name)
    assert (cfg.model.timesteps, cfg.optim.lr_step, cfg.optim.batch_size) == (timesteps, step, batch)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.lr_gamma, cfg.optim.schedule) == (0.1, 0.9, 0.1, "step")
    assert cfg.model.width == 1.0


def test_overrides_are_yaml_scalars_with_dotted_keys():
    cfg = load_config("mnist", ["optim.lr=1e-2", "model.options.depth=20", "amp=bf16", "data.test_limit=null",
                                "progress=false"])
    assert cfg.optim.lr == 0.01 and isinstance(cfg.optim.lr, float)
    assert cfg.model.options == {"depth": 20}
    assert cfg.amp == "bf16" and cfg.data.test_limit is None and cfg.progress is False


def test_unknown_key_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown config key 'optim.lrate'.*batch_size.*weight_decay"):
        load_config(None, ["optim.lrate=0.1"])
    with pytest.raises(ValueError, match=r"unknown config key 'epochs'.*valid keys at the top level: .*optim"):
        load_config(None, ["epochs=3"])


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model: {name: resnet19, widht: 0.5}\n")
    with pytest.raises(ValueError, match=r"mine.yaml.*'model.widht'.*width"):
        load_config(str(path))


def test_bad_values_name_the_key():
    with pytest.raises(ValueError, match=r"'optim.epochs' expects int"):
        load_config(None, ["optim.epochs=ten"])
    with pytest.raises(ValueError, match=r"'amp' must be one of"):
        load_config(None, ["amp=fp8"])
    with pytest.raises(ValueError, match=r"expected key=value"):
        load_config(None, ["optim.epochs"])
    with pytest.raises(ValueError, match=r"unknown preset 'nope'.*cifar10_resnet19_t4"):
        load_config("nope")


def test_round_trip_through_json():
    cfg = load_config("nmnist", ["seed=3"])
    again = config_from_dict(json.loads(json.dumps(config_to_dict(cfg))))
    assert asdict(again) == asdict(cfg)


@pytest.mark.parametrize("override,message", [
    ("optim.lr=inf", "'optim.lr' must be a finite number, got inf"),
    ("optim.lr=-.inf", "'optim.lr' must be a finite number, got -inf"),
    ("optim.lr=.nan", "'optim.lr' must be a finite number, got nan"),
    ("model.tau=inf", "'model.tau' must be a finite number, got inf"),
    ("threads=0", "'threads' must be >= 1 (torch CPU threads) or null"),
    ("threads=-1", "'threads' must be >= 1 (torch CPU threads) or null"),
])
def test_non_finite_numbers_and_thread_counts_are_refused(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config("mnist", [override])


@pytest.mark.parametrize("bad,message", [
    (["optim.lr=1.0"], None),  # control: the same run with a valid configuration reaches the (missing) data
    (["model.name=resnet999"], "unknown model 'resnet999'"),
    (["model.options.widht=0.5"], "unknown option(s) ['widht'] for model 'resnet17'"),
    (["model.name=resnet", "model.options.depth=9"], "resnet depth must be even"),
    (["data.name=mnst"], "unknown data set 'mnst' (data.name)"),
    (["data.root=null"], "data set 'mnist' needs data.root"),
])
def test_the_whole_configuration_is_checked_before_any_data_or_folder(bad, message, tmp_path):
    """A configuration the run cannot use is refused before the data is read (here: a data folder that does not
    exist, which would be reported first otherwise) and before any folder is made."""
    cfg = load_config("mnist", [f"data.root={tmp_path / 'no-data'}", f"out_dir={tmp_path / 'runs'}", "device=cpu",
                                *bad])
    with pytest.raises((ValueError, DataNotFoundError)) as err:
        train(cfg, log=lambda s: None)
    if message is None:
        assert isinstance(err.value, DataNotFoundError)
    else:
        assert not isinstance(err.value, DataNotFoundError) and message in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_a_config_built_in_python_is_checked_too(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path / "runs"), threads=0)  # not through load_config / override
    with pytest.raises(ValueError, match="'threads' must be >= 1"):
        train(cfg, log=lambda s: None)
    assert list(tmp_path.iterdir()) == []
