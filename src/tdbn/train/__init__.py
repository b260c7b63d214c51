"""Training and evaluation: configuration, data feeding, the epoch loop, checkpoints, multi-process training.

Entry points: :func:`train` (what ``tdbn train`` runs), :func:`evaluate_checkpoint` (``tdbn eval``),
:func:`load_config` (defaults < preset < ``key=value`` overrides), :func:`restore` (a checkpoint back to its model:
``tdbn.load``, ``tdbn eval``, ``tdbn export`` and ``tdbn analyze`` all use it). Quantization-aware fine-tuning
(``tdbn finetune``) builds on these from :mod:`tdbn.export.finetune`.

Example:
    >>> cfg = load_config("mnist", ["optim.epochs=1"])
    >>> cfg.model.timesteps, cfg.data.name
    (4, 'mnist')
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import (
    DataConfig, ModelConfig, OptimConfig, TrainConfig, config_from_dict, config_to_dict, load_config, override,
    preset_names, preset_path,
)
from .errors import CheckpointError, CheckpointWriteError, NonFiniteError, NonFiniteLossError, TrainingError
from .evaluate import evaluate_checkpoint
from .engine import FiringRate, evaluate, train_one_epoch  # after the submodule evaluate, which has the same name
from .metrics_log import read_metrics
from .restore import Restored, restore
from .run import saved_config, train

__all__ = [
    "CheckpointError", "CheckpointWriteError", "config_from_dict", "config_to_dict", "DataConfig", "evaluate",
    "evaluate_checkpoint", "FiringRate", "load_checkpoint", "load_config", "ModelConfig", "NonFiniteError",
    "NonFiniteLossError", "OptimConfig", "override", "preset_names", "preset_path", "read_metrics", "restore",
    "Restored", "save_checkpoint", "saved_config", "train", "train_one_epoch", "TrainConfig", "TrainingError",
]
