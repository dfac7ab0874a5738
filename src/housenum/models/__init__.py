"""Model registry: every family registers its models by name; the rest of housenum only says
`create_model(name)` and `model_spec(name)`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from housenum.errors import ModelError


@dataclass(frozen=True)
class ModelSpec:
    """A model's builder plus the training defaults that reproduce its reference figures."""

    name: str
    build: Callable[[int], nn.Module]
    channels: int
    epochs: int
    batch_size: int
    lr: float
    description: str
    recipe: str = "notebook"


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, *, channels: int, epochs: int, batch_size: int, lr: float,
             description: str, recipe: str = "notebook"):
    """Decorator for a builder `fn(channels) -> nn.Module`."""

    def wrap(build: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
        _REGISTRY[name] = ModelSpec(name, build, channels, epochs, batch_size, lr, description, recipe)
        return build

    return wrap


def model_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown model '{name}'; choose from {', '.join(list_models())}") from None


def create_model(name: str, channels: int | None = None) -> nn.Module:
    spec = model_spec(name)
    return spec.build(spec.channels if channels is None else channels)


def list_models() -> list[str]:
    return list(_REGISTRY)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Like Keras' count: trainable weights plus BatchNorm's moving mean and variance."""
    n = sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
    if not trainable_only:
        n += sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    return n


from housenum.models import cnn, dense, resnet  # noqa: E402, F401  (registers the families)

__all__ = ["ModelSpec", "count_parameters", "create_model", "list_models", "model_spec", "register"]
