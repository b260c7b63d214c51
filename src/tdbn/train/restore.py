"""The one way back from a checkpoint to a model: ``tdbn.load``, ``tdbn eval``, ``tdbn export``, ``tdbn analyze``.

A checkpoint names its model (``model_name``) and holds the constructor arguments (``model_kwargs``) and the
input it was trained on (``input``), so :func:`restore` calls ``tdbn.models.create(model_name, **model_kwargs)``
and loads the weights; nothing is guessed. Checkpoints of format ``/1``, written before these fields existed,
get them from their configuration and the shapes of their weights (:func:`model_spec`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import models
from ..fusion import fuse as fuse_model
from .build import create_model, model_kwargs
from .checkpoint import FORMAT, find_checkpoint, load_checkpoint, missing_checkpoint
from .config import TrainConfig, config_from_dict
from .errors import CheckpointError

__all__ = ["Restored", "check_input", "checkpoint_file", "model_spec", "restore"]

EVENT_DATASETS = ("nmnist", "dvs_gesture", "cifar10_dvs")
# the input size each data set's reader produces by default (format /1 checkpoints do not record it)
_DEFAULT_SIZE = {"digits": 8, "mnist": 28, "cifar10": 32, "nmnist": 34, "dvs_gesture": 32, "cifar10_dvs": 42,
                 "imagenet": 224}


@dataclass
class Restored:
    """A model rebuilt from a checkpoint, with what it was trained on."""

    model: nn.Module  # eval mode, weights loaded (fused if asked)
    config: TrainConfig  # the run's resolved configuration
    path: Path  # the checkpoint file
    epoch: int  # completed training epochs
    events: bool  # inputs are event frames [T, N, C, H, W] (else static images [N, C, H, W])
    input_shape: tuple[int, int, int]  # (C, H, W) of one input
    checkpoint: dict[str, Any]  # the raw checkpoint (neuron parameters, metrics, version, ...)
    model_name: str = ""  # registry name
    model_kwargs: dict[str, Any] | None = None  # constructor arguments

    @property
    def sized(self) -> bool:
        """The network depends on the input size (ResNet-17/19: their fc layer), so it takes only that size."""
        return "input_size" in (self.model_kwargs or {})


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _fits(name: str, kwargs: dict[str, Any], state: dict[str, torch.Tensor]) -> bool:
    try:
        with torch.device("meta"):
            model = models.create(name, **kwargs)
    except (ValueError, RuntimeError):
        return False
    return _shapes(model) == {k: tuple(v.shape) for k, v in state.items()}


def _legacy_spec(ckpt: dict[str, Any], cfg: TrainConfig, path: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    state = ckpt["model"]
    try:
        in_channels = int(state["encoder.conv.module.weight"].shape[1])
        num_classes = int(state["decoder.module.weight"].shape[0])
    except KeyError as err:
        raise CheckpointError(f"{path}: the saved model has no {err} weight (not a tdbn.models network)") from None
    events = cfg.data.name in EVENT_DATASETS
    size = cfg.model.options.get("input_size") or cfg.data.options.get("crop_size") or \
        _DEFAULT_SIZE.get(cfg.data.name, 32)
    if cfg.data.options.get("size"):
        size = int(cfg.data.options["size"][0] if isinstance(cfg.data.options["size"], list)
                   else cfg.data.options["size"])
    kwargs = model_kwargs(cfg.model, num_classes=num_classes, in_channels=in_channels, input_size=int(size))
    if "input_size" in kwargs and not _fits(cfg.model.name, kwargs, state):
        for candidate in range(4, 513):  # the fc-256 of ResNet-17/19 depends on the input size
            if _fits(cfg.model.name, kwargs | {"input_size": candidate}, state):
                kwargs["input_size"] = size = candidate
                break
    return cfg.model.name, kwargs, {"events": events, "shape": [in_channels, int(size), int(size)]}


def model_spec(checkpoint: dict[str, Any], path: str | Path = "checkpoint") -> tuple[str, dict, dict]:
    """``(model_name, model_kwargs, input)`` of a checkpoint of either format (see :mod:`.checkpoint`)."""
    if checkpoint["format"] == FORMAT:
        return checkpoint["model_name"], dict(checkpoint["model_kwargs"]), dict(checkpoint["input"])
    return _legacy_spec(checkpoint, config_from_dict(checkpoint["config"]), Path(path))


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint file of ``path`` (the file itself or ``<run folder>/checkpoint.pt``), which must exist.

    :class:`~tdbn.train.CheckpointError` otherwise, saying what ``path`` is instead (no such file or folder, a folder
    of run folders, a run folder without a checkpoint yet) and listing the checkpoints (``*.pt``) that its folder
    does hold, so a typo or a wrong folder shows at once (:func:`~tdbn.train.checkpoint.missing_checkpoint`).
    """
    file = find_checkpoint(path)
    if file.is_file():
        return file
    raise missing_checkpoint(path)


def restore(path: str | Path, *, fuse: bool = False, device: str | torch.device = "cpu") -> Restored:
    """Rebuild the model of a checkpoint (file or run folder), verified, in eval mode, on ``device``.

    ``fuse=True`` returns ``tdbn.fuse(model)`` (Eq. 9-10), the normalization-free network with the same
    spikes. A checkpoint marked ``"fused"`` (written by ``tdbn finetune``) holds that network itself: it is
    returned whatever ``fuse`` says. Raises :class:`~tdbn.train.CheckpointError` naming the file.
    """
    file = checkpoint_file(path)
    ckpt = load_checkpoint(file)
    try:
        cfg = config_from_dict(ckpt["config"])
    except ValueError as err:
        raise CheckpointError(f"{file}: its configuration is not one this version reads: {err}") from None
    name, kwargs, inp = model_spec(ckpt, file)
    dev = torch.device(device)
    model = create_model(name, kwargs).eval()
    fused = bool(ckpt.get("fused"))  # a fused network (tdbn finetune): built, fused, then its weights loaded
    if fused:
        model = fuse_model(model)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        what = f"fused {name}" if fused else name
        raise CheckpointError(f"{file}: the saved weights do not fit {what}({kwargs}): {err}") from None
    model.eval()
    if fuse and not fused:
        model = fuse_model(model)
    model.to(dev, getattr(torch, cfg.dtype))
    return Restored(model=model, config=cfg, path=file, epoch=int(ckpt["epoch"]), events=bool(inp["events"]),
                    input_shape=tuple(int(s) for s in inp["shape"]), checkpoint=ckpt, model_name=name,
                    model_kwargs=kwargs)


def check_input(x: torch.Tensor, *, events: bool, input_shape: tuple[int, int, int], sized: bool,
                where: str = "input") -> None:
    """``ValueError`` naming the problem and the fix for an input a restored model cannot take.

    Integer images (e.g. uint8 0..255) must first be converted and normalized as in training; ``sized``
    models (ResNet-17/19: their fc layer depends on the image size) need the size they were built for.
    """
    if not torch.is_tensor(x):
        raise ValueError(f"{where}: expected a tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{where}: {x.dtype} values; the model takes float inputs normalized as in training "
                         "(for uint8 images: x.float() / 255, then (x - mean) / std with the run's "
                         "data.options.mean and std)")
    c, h, w = input_shape
    if x.dim() not in (4, 5):
        raise ValueError(f"{where}: expected {'[T, N, C, H, W] event frames' if events else '[N, C, H, W] images'}"
                         f", got shape {tuple(x.shape)}")
    if sized and tuple(x.shape[-2:]) != (h, w):
        raise ValueError(f"{where}: {x.shape[-2]}x{x.shape[-1]} inputs, but this model was built for {h}x{w} "
                         "(its model input_size, set by the data set or model.options.input_size)")
