"""The network of a :class:`~tdbn.train.config.ModelConfig`, shaped for the data set's inputs."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from .. import models
from .config import ModelConfig

__all__ = ["build_model", "check_model", "create_model", "model_kwargs", "neuron_params"]


def model_kwargs(cfg: ModelConfig, *, num_classes: int, in_channels: int, input_size: int) -> dict[str, Any]:
    """The keyword arguments of ``tdbn.models.create(cfg.name, **kwargs)``, as plain data (stored in checkpoints).

    Unknown options raise listing the valid ones.
    """
    options: dict[str, Any] = dict(
        width=cfg.width, timesteps=cfg.timesteps, tau=cfg.tau, v_th=cfg.v_th, surrogate_width=cfg.surrogate_width,
        surrogate=cfg.surrogate, norm=cfg.norm,
    )
    if cfg.residual_alpha is not None:
        options["residual_alpha"] = cfg.residual_alpha
    if cfg.shortcut_norm is not None:
        options["shortcut_norm"] = cfg.shortcut_norm
    overlap = sorted(set(cfg.options) & (set(options) | {"in_channels", "num_classes"}))
    if overlap:
        raise ValueError(f"model.options {overlap} duplicate dedicated keys: set model.<key> instead "
                         "(in_channels and num_classes come from the data set)")
    options.update(cfg.options)
    valid = models.options_of(cfg.name)  # raises for an unknown model name
    if "input_size" in valid and "input_size" not in options:
        options["input_size"] = input_size  # ResNet-17/19 size their fc layer from it
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for model {cfg.name!r}; valid: "
                         f"{sorted(set(valid) - {'num_classes', 'in_channels'})}")
    return {"num_classes": num_classes, "in_channels": in_channels, **options}


def check_model(cfg: ModelConfig) -> None:
    """Raise ``ValueError`` now for a model the configuration cannot build: an unknown name or option, or a value
    its builder refuses (e.g. an odd ResNet depth). Built on the meta device (no memory, no computation), for
    inputs of 224x224, so that no input size is too small: a size the data set makes too small is found later.
    """
    kwargs = model_kwargs(cfg, num_classes=10, in_channels=2, input_size=224)
    with torch.device("meta"):
        models.create(cfg.name, **kwargs)


def create_model(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """``tdbn.models.create(name, **kwargs)``: where a training run and a restored checkpoint build their model."""
    return models.create(name, **kwargs)


def build_model(cfg: ModelConfig, *, num_classes: int, in_channels: int, input_size: int) -> nn.Module:
    """``tdbn.models.create`` with the config's options; unknown options raise listing the valid ones."""
    kwargs = model_kwargs(cfg, num_classes=num_classes, in_channels=in_channels, input_size=input_size)
    return create_model(cfg.name, kwargs)


def neuron_params(model: nn.Module) -> dict[str, Any]:
    """The neuron and tdBN hyper-parameters a model was built with (recorded in checkpoints)."""
    opts = getattr(model, "options", None)
    if opts is None:
        return {}
    d = asdict(opts)
    return {**d.pop("neuron"), **d}  # one flat record: tau, v_th, surrogate, surrogate_width, norm, ...
