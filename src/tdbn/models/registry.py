"""A tiny model registry: ``create(name, **options)`` rejects unknown names and keyword arguments."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_SHARED: dict[str, tuple[str, ...]] = {}


def register(options: Sequence[str] = ()) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model builder under its function name. ``options``: the shared options (neuron and
    normalization, :data:`~tdbn.models.options.SPIKING_OPTIONS`) it takes through ``**options``, beside the
    keyword arguments that make the network itself (depth, width, input size)."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _MODELS[fn.__name__] = fn
        _SHARED[fn.__name__] = tuple(options)
        return fn

    return deco


def names() -> list[str]:
    """Names of every registered model."""
    return sorted(_MODELS)


def options_of(name: str) -> list[str]:
    """The keyword options that ``create(name, ...)`` accepts."""
    own = [p.name for p in inspect.signature(_builder(name)).parameters.values() if p.kind is p.KEYWORD_ONLY]
    return sorted(set(own) | set(_SHARED[name]))


def _builder(name: str) -> Callable[..., nn.Module]:
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid: {names()}") from None


def create(name: str, *, num_classes: int, **options) -> nn.Module:
    """Build the registered model ``name``.

    Every keyword must be one the builder knows (see :func:`options_of`); an unknown one raises ``ValueError``
    listing the valid ones, instead of being silently ignored.

    Example:
        >>> model = create("resnet19", num_classes=10, width=0.125, timesteps=2)
        >>> model(torch.randn(3, 3, 32, 32)).shape   # static images [N, C, H, W]
        torch.Size([3, 10])
    """
    fn = _builder(name)
    valid = set(options_of(name))
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for model {name!r}; valid: {sorted(valid - {'num_classes'})}")
    return fn(num_classes=num_classes, **options)
