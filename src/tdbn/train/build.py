"""The network of a :class:`~tdbn.train.config.ModelConfig`, shaped for the data set's inputs."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from torch import nn

from .. import models
from ..layers import set_lif_backend
from .config import ModelConfig

__all__ = ["build_model", "neuron_params"]


def build_model(cfg: ModelConfig, *, num_classes: int, in_channels: int, input_size: int) -> nn.Module:
    """``tdbn.models.create`` with the config's options; unknown options raise listing the valid ones."""
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
    if "input_size" in models.options_of(cfg.name) and "input_size" not in options:
        options["input_size"] = input_size  # ResNet-17/19 size their fc layer from it
    model = models.create(cfg.name, num_classes=num_classes, in_channels=in_channels, **options)
    return set_lif_backend(model, cfg.lif_backend)  # raises naming the fix if triton is missing


def neuron_params(model: nn.Module) -> dict[str, Any]:
    """The neuron and tdBN hyper-parameters a model was built with (recorded in checkpoints)."""
    opts = getattr(model, "options", None)
    if opts is None:
        return {}
    d = asdict(opts)
    return {**d.pop("neuron"), **d}  # one flat record: tau, v_th, surrogate, surrogate_width, norm, ...
