"""Layers shared by the families: Keras-compatible defaults and input normalisation."""

from __future__ import annotations

import torch
from torch import nn


def keras_batchnorm(features: int, dims: int = 1) -> nn.Module:
    """BatchNorm with Keras' defaults (momentum 0.99 means PyTorch momentum 0.01, eps 1e-3)."""
    cls = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    return cls(features, eps=1e-3, momentum=0.01)


def keras_init(model: nn.Module) -> nn.Module:
    """Glorot-uniform weights and zero biases, as Keras' Dense and Conv2D start."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


class PerImageStandardize(nn.Module):
    """Subtract each image's mean and divide by its std: removes the photo's brightness and contrast."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        return (x - mean) / (std + 1e-3)


class ChannelStandardize(nn.Module):
    """Fixed mean/std per channel (SVHN's, about 0.45 and 0.2), the usual dataset normalisation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.full((1, channels, 1, 1), 0.45))
        self.register_buffer("std", torch.full((1, channels, 1, 1), 0.20))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class TemperatureScaled(nn.Module):
    """Divides a model's logits by a temperature fitted on validation data, so confidences are calibrated."""

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        self.model = model
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) / self.temperature


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature (0.5..5) minimising validation negative log-likelihood; a grid is enough."""
    grid = torch.linspace(0.5, 5.0, 91)
    losses = torch.stack([torch.nn.functional.cross_entropy(logits / t, labels) for t in grid])
    return float(grid[losses.argmin()])
