"""The one place where training defaults live: :class:`TrainConfig`, with the paper's values cited.

A run is configured in three layers, each overriding the one before:

1. the defaults below: the embedded demo (a narrow spiking ResNet-19 on scikit-learn's 8x8 digits) with the
   paper's SGD (appendix C: lr 0.1, momentum 0.9) and a cosine schedule; the paper presets set its step decay;
2. a YAML preset (``src/tdbn/configs/<name>.yaml``, or any YAML file) holding only what differs;
3. ``key=value`` overrides from the command line; dotted keys reach nested fields (``optim.lr=0.05``,
   ``model.options.depth=20``) and values are parsed as YAML scalars.

An unknown key raises ``ValueError`` listing the valid ones; a value of the wrong type raises naming the key.
The resolved configuration is saved with every run (``config.yaml``, ``config.json``) and in every checkpoint.

Example:
    >>> cfg = load_config(None, ["optim.lr=0.05", "model.timesteps=4"])
    >>> cfg.optim.lr, cfg.model.timesteps, cfg.data.name
    (0.05, 4, 'digits')
    >>> load_config(None, ["optim.lr_decay=0.1"])
    Traceback (most recent call last):
    ...
    ValueError: unknown config key 'optim.lr_decay'; valid keys of 'optim': batch_size, epochs, label_smoothing, loss, lr, lr_gamma, lr_milestones, lr_step, momentum, nesterov, norm_weight_decay, optimizer, schedule, tet_lambda, tet_phi, warmup_epochs, weight_decay
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..functional.losses import TET_LAMBDA, TET_PHI
from ..functional.params import DEFAULT_LIF

__all__ = [
    "AMP_CHOICES", "RESUMABLE_KEYS", "DataConfig", "ModelConfig", "OptimConfig", "SCHEDULES", "TrainConfig",
    "config_from_dict", "config_to_dict", "diff_configs", "load_config", "override", "parse_overrides", "preset_names",
    "preset_path", "save_config",
]

AMP_CHOICES = ("fp32", "bf16", "fp16", "auto")
SCHEDULES = ("step", "cosine", "multistep", "constant")  # tdbn.train.optim.lr_factor defines each
OPTIMIZERS = ("sgd", "adamw")  # tdbn.train.optim.build_optimizer
LOSSES = ("ce", "tet")  # the training objective (tdbn.functional.losses)
DTYPES = ("float32", "float64")


@dataclass
class ModelConfig:
    """The network (paper Table 4) and its neuron and tdBN hyper-parameters (docs/method.md sections 1-2).

    Input channels, input size and the number of classes come from the data set.
    """

    name: str = "resnet19"  # registry name: resnet17 / resnet19 (Table 4), resnet34, resnet34_large, resnet50, ...
    width: float = 0.25  # channel multiplier; 1.0 = the paper's widths (Table 4)
    timesteps: int = 2  # T; static images are repeated T times (paper: 2/4/6 on CIFAR-10, 6 on ImageNet)
    # the neuron (tdbn.LIFParameters; defaults defined once there): decay (Eq. 1), threshold (Eq. 2), surrogate (Eq. 16)
    tau: float = DEFAULT_LIF.tau
    v_th: float = DEFAULT_LIF.v_th
    surrogate_width: float = DEFAULT_LIF.surrogate_width
    surrogate: str = DEFAULT_LIF.surrogate
    norm: str = "tdbn"  # "tdbn" (Eq. 5-8), "bn" (standard BN), "tebn", "bntt", "tab", "mpbn" (docs/method.md 8), "none"
    residual_alpha: float | None = None  # alpha of summed tdBNs (Eq. 5; None = the model's 1/sqrt(2))
    shortcut_norm: str | None = None  # "all" / "projection" (docs/method.md section 5; None = the model's "all")
    options: dict[str, Any] = field(default_factory=dict)  # further builder options, e.g. {depth: 20} for plain


@dataclass
class DataConfig:
    """Which data set, where, and how it is fed."""

    name: str = "digits"  # digits (embedded) | mnist | nmnist | cifar10 | cifar10_dvs | dvs_gesture | imagenet
    root: str | None = None  # data folder or file; relative paths are relative to the working directory
    options: dict[str, Any] = field(default_factory=dict)  # reader options (e.g. n_frames, window_ms for events)
    augment: bool = True  # training augmentation (CIFAR-10: random crop, pad 4, and flip; appendix C)
    train_limit: int | None = None  # train on a fixed random subset of this many samples (quick runs, tests)
    test_limit: int | None = None  # evaluate on a fixed random subset of this many test samples
    preload: bool = False  # convert every sample once and keep all in memory (small event data sets)
    cache_dir: str | None = None  # on-disk cache of converted event frames
    workers: int = 0  # loader processes for file-backed data sets (ImageNet, event data)


@dataclass
class OptimConfig:
    """Optimizer and schedule (paper appendix C). Weight decay and epochs are not given by the paper: ours."""

    epochs: int = 20  # ours (the demo)
    batch_size: int = 32  # per process (paper Table 5: 40 ResNet-17, 36 ResNet-19, 24 / 10 / 10 x 8 GPUs ImageNet)
    lr: float = 0.1  # paper: SGD, initial learning rate 0.1
    momentum: float = 0.9  # paper: 0.9
    weight_decay: float = 5e-4  # ours: not stated in the paper; 5e-4 is the usual CIFAR value, 1e-4 ImageNet
    # ours: weight decay of the normalizations' scales and shifts and of every bias (null = weight_decay, as all
    # runs before it had); 0 keeps decay from shrinking the scales that set how often the neurons fire
    norm_weight_decay: float | None = None
    nesterov: bool = False  # ours: Nesterov momentum (the paper: plain momentum)
    # "sgd": the paper's SGD with momentum; "adamw" (ours): AdamW with betas (momentum, 0.999) and decoupled weight
    # decay (weight_decay then means AdamW's: typically 1e-2 to 5e-2, with lr about 1e-3)
    optimizer: str = "sgd"
    # "step": the paper's decay by lr_gamma every lr_step epochs (paper presets); "cosine": ours; "multistep": by
    # lr_gamma at each of lr_milestones; "constant": lr throughout (tdbn.train.optim.lr_factor)
    schedule: str = "cosine"
    lr_step: int = 35  # step schedule; paper: 35 epochs (ResNet-19, ResNet-34), 45 (ResNet-50), 1000 (ResNet-17)
    lr_gamma: float = 0.1  # paper: decay to 0.1 r (step and multistep schedules)
    # multistep: ascending fractions of `epochs`; each decays from epoch floor(fraction x epochs). The default is
    # the common ResNet recipe (x0.1 at 1/2 and 3/4 of the budget), the analysis studies' decayed schedule
    lr_milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    warmup_epochs: float = 0.0  # ours: linear warm-up from lr/10 over this many epochs (0 = the paper: none)
    loss: str = "ce"  # "ce": cross-entropy of the time-averaged output (Eq. 12, the paper); "tet": TET (Deng et al.)
    tet_lambda: float = TET_LAMBDA  # TET: weight of the MSE term (the authors' code default 1e-3)
    tet_phi: float = TET_PHI  # TET: the constant every step's scores are pulled towards (authors' default 1.0)
    label_smoothing: float = 0.0  # ours (0 = the paper): smoothed targets in the cross-entropy of either loss


@dataclass
class TrainConfig:
    """Everything a training run depends on. Defaults: the embedded ``tdbn train`` demo."""

    name: str = "digits"  # run name; the run folder is <out_dir>/<name>-<timestamp>
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0  # seeds the initialization, the data order and augmentation (per epoch: seed, epoch)
    dtype: str = "float32"  # parameter dtype; "float64" only for exactness checks (no spike flips from rounding)
    amp: str | None = None  # None: fp16 + grad scaler on CUDA (paper: mixed precision), fp32 on CPU; fp32|bf16|fp16;
    # or auto: bf16 where the device computes it natively, else fp32 on a CPU and fp16 on CUDA
    device: str | None = None  # None: CUDA when present, else CPU
    sync_bn: bool = True  # synchronize tdBN statistics across processes (paper: sync-BN on 8 GPUs)
    eval_interval: int = 1  # evaluate every this many epochs (and after the last)
    checkpoint_interval: int = 1  # write the checkpoint every this many epochs (and after the last)
    checkpoint_every_steps: int | None = None  # also write it mid-epoch every this many training steps (global count)
    checkpoint_every_minutes: float | None = None  # also write it mid-epoch once this many minutes have passed
    out_dir: str = "runs"  # parent of run folders
    run_dir: str | None = None  # explicit run folder (must not exist, or be empty); None: <out_dir>/<name>-<time>
    threads: int | None = None  # torch.set_num_threads for this process; None keeps torch's default
    budget_minutes: float | None = None  # stop after the first epoch that ends past this wall-clock budget
    progress: bool = True  # a progress bar per epoch (tqdm)
    tensorboard: bool = False  # also log to TensorBoard (needs the tensorboard extra)


# Keys that may differ between a run and its resumption (they do not change what is computed).
RESUMABLE_KEYS = frozenset(
    {"name", "device", "threads", "progress", "tensorboard", "budget_minutes", "optim.epochs", "eval_interval",
     "checkpoint_interval", "checkpoint_every_steps", "checkpoint_every_minutes", "data.workers", "data.root",
     "data.cache_dir", "out_dir", "run_dir"}
)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _check_value(key: str, value: Any, hint: Any) -> Any:
    """``value`` converted to the type ``hint`` of field ``key``, or ``ValueError`` naming the key."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin is dict or hint is dict:
        if isinstance(value, dict):
            return dict(value)
    elif origin is list:
        if isinstance(value, (list, tuple)):
            item = typing.get_args(hint)[0]
            return [_check_value(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    name = getattr(hint, "__name__", str(hint))
    raise ValueError(f"config key {key!r} expects {name}, got {value!r} ({type(value).__name__})")


RETIRED = {
    "model.lif_backend": "the tensor's device chooses the LIF kernels (the C kernels on the CPU, Triton's on CUDA); "
                         "remove the key",
}
"""Keys of earlier versions that no longer exist, with what replaced them. A preset or override naming one is refused
with that text; a saved configuration (a checkpoint's, a run's) drops them, since none changed a trained network."""


def _apply(obj: Any, updates: dict[str, Any], prefix: str = "") -> None:
    """Set the fields of dataclass ``obj`` from a nested mapping, recursing into nested dataclasses."""
    hints = _hints(type(obj))
    valid = _fields(type(obj))
    for key, value in updates.items():
        path = f"{prefix}{key}"
        if path in RETIRED:
            raise ValueError(f"config key {path!r} was removed: {RETIRED[path]}")
        if key not in valid:
            where = f"of {prefix[:-1]!r}" if prefix else "at the top level"
            raise ValueError(f"unknown config key {path!r}; valid keys {where}: {', '.join(sorted(valid))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"config key {path!r} is a section; give a mapping or dotted keys ({path}.KEY=...)")
            _apply(current, value, f"{path}.")
        elif isinstance(current, dict) and isinstance(value, dict):
            setattr(obj, key, {**current, **value})
        else:
            setattr(obj, key, _check_value(path, value, hints[key]))


def _nest(dotted: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"config key {key!r} conflicts with another override of {p!r}")
        node[parts[-1]] = value
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["optim.lr=0.05", "amp=bf16"]`` -> ``{"optim.lr": 0.05, "amp": "bf16"}``; values are YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value (e.g. optim.lr=0.05), got {item!r}")
        out[key.strip()] = yaml.safe_load(text) if text.strip() else None
    return out


def preset_path(name: str) -> Path:
    """The file of preset ``name`` shipped in ``tdbn/configs``; ``ValueError`` lists the presets if unknown."""
    path = Path(str(resources.files("tdbn") / "configs" / f"{name}.yaml"))
    if not path.is_file():
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(preset_names())} "
                         "(or give the path of a .yaml file)")
    return path


def preset_names() -> list[str]:
    """Names of the shipped presets."""
    folder = resources.files("tdbn") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} not found") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must hold a mapping of keys, got {type(data).__name__}")
    return data


def load_config(preset: str | None, overrides: list[str] | dict[str, Any] | None = None) -> TrainConfig:
    """Defaults, then the preset (a shipped name or a ``.yaml`` path), then ``key=value`` overrides.

    The run name defaults to the preset's name (the file stem for a path).
    """
    cfg = TrainConfig()
    if preset is not None:
        is_file = preset.endswith((".yaml", ".yml")) or "/" in preset or "\\" in preset
        path = Path(preset) if is_file else preset_path(preset)
        cfg.name = path.stem
        try:
            _apply(cfg, _read_yaml(path))
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    return override(cfg, overrides or {})


def override(cfg: TrainConfig, overrides: list[str] | dict[str, Any]) -> TrainConfig:
    """A copy of ``cfg`` with ``key=value`` overrides applied (same rules as :func:`load_config`)."""
    out = copy.deepcopy(cfg)
    dotted = parse_overrides(overrides) if isinstance(overrides, list) else overrides
    _apply(out, _nest(dotted))
    validate(out)
    return out


def validate(cfg: TrainConfig) -> None:
    """Range checks that types cannot express; ``ValueError`` naming the key.

    Every number must be finite (``optim.lr=inf`` is refused like ``nan``), before any range is checked.
    """
    for key, value in _flatten(config_to_dict(cfg)).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"config key {key!r} must be a finite number, got {value!r}")
    checks = [
        ("amp", cfg.amp is None or cfg.amp in AMP_CHOICES, f"one of {list(AMP_CHOICES)} or null"),
        ("dtype", cfg.dtype in DTYPES, f"one of {list(DTYPES)}"),
        ("optim.schedule", cfg.optim.schedule in SCHEDULES, f"one of {list(SCHEDULES)}"),
        ("optim.epochs", cfg.optim.epochs >= 1, ">= 1"),
        ("optim.batch_size", cfg.optim.batch_size >= 1, ">= 1"),
        ("optim.lr", cfg.optim.lr > 0, "> 0"),
        ("optim.weight_decay", cfg.optim.weight_decay >= 0, ">= 0"),
        ("optim.norm_weight_decay", cfg.optim.norm_weight_decay is None or cfg.optim.norm_weight_decay >= 0,
         ">= 0 or null (= optim.weight_decay)"),
        ("optim.optimizer", cfg.optim.optimizer in OPTIMIZERS, f"one of {list(OPTIMIZERS)}"),
        ("optim.nesterov", not cfg.optim.nesterov or (cfg.optim.momentum > 0 and cfg.optim.optimizer == "sgd"),
         "false unless optim.optimizer is sgd with optim.momentum > 0"),
        ("optim.momentum", 0 <= cfg.optim.momentum < 1, "in [0, 1) (AdamW: its beta1)"),
        ("optim.lr_step", cfg.optim.lr_step >= 1, ">= 1"),
        ("optim.lr_milestones", all(0 < m < 1 for m in cfg.optim.lr_milestones)
         and all(a < b for a, b in zip(cfg.optim.lr_milestones, cfg.optim.lr_milestones[1:])),
         "ascending fractions of optim.epochs in (0, 1), e.g. [0.5, 0.75]"),
        ("optim.warmup_epochs", cfg.optim.warmup_epochs >= 0, ">= 0"),
        ("optim.loss", cfg.optim.loss in LOSSES, f"one of {list(LOSSES)}"),
        ("optim.tet_lambda", 0 <= cfg.optim.tet_lambda <= 1, "in [0, 1]"),
        ("optim.label_smoothing", 0 <= cfg.optim.label_smoothing < 1, "in [0, 1)"),
        ("model.timesteps", cfg.model.timesteps >= 1, ">= 1"),
        ("model.width", 0 < cfg.model.width <= 64, "in (0, 64] (a channel multiplier: 1.0 = the paper's widths)"),
        ("eval_interval", cfg.eval_interval >= 1, ">= 1"),
        ("checkpoint_interval", cfg.checkpoint_interval >= 1, ">= 1"),
        ("checkpoint_every_steps", cfg.checkpoint_every_steps is None or cfg.checkpoint_every_steps >= 1,
         ">= 1 or null"),
        ("checkpoint_every_minutes", cfg.checkpoint_every_minutes is None or cfg.checkpoint_every_minutes > 0,
         "> 0 or null"),
        ("data.train_limit", cfg.data.train_limit is None or cfg.data.train_limit >= 1, ">= 1 or null"),
        ("data.test_limit", cfg.data.test_limit is None or cfg.data.test_limit >= 1, ">= 1 or null"),
        ("data.workers", cfg.data.workers >= 0, ">= 0"),
        ("threads", cfg.threads is None or cfg.threads >= 1, ">= 1 (torch CPU threads) or null (torch's default)"),
    ]
    for key, ok, want in checks:
        if not ok:
            value = cfg
            for part in key.split("."):
                value = getattr(value, part)
            raise ValueError(f"config key {key!r} must be {want}, got {value!r}")


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain nested dict (JSON/YAML-serialisable), as saved in runs and checkpoints."""
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Inverse of :func:`config_to_dict`; unknown keys raise (a checkpoint from another version says so), the
    :data:`RETIRED` ones are dropped."""
    cfg = TrainConfig()
    _apply(cfg, _without_retired(data))
    validate(cfg)
    return cfg


def _without_retired(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    return {k: _without_retired(v, f"{prefix}{k}.") if isinstance(v, dict) and k != "options" else v
            for k, v in data.items() if f"{prefix}{k}" not in RETIRED}


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "options":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def diff_configs(a: TrainConfig, b: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (value in a, value in b)}`` for every field that differs."""
    fa, fb = _flatten(config_to_dict(a)), _flatten(config_to_dict(b))
    return {k: (fa[k], fb[k]) for k in fa if fa[k] != fb[k]}


def save_config(cfg: TrainConfig, folder: Path) -> None:
    """Write the resolved configuration as ``config.yaml`` and ``config.json`` into ``folder``."""
    data = config_to_dict(cfg)
    (folder / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (folder / "config.json").write_text(json.dumps(data, indent=2) + "\n")
