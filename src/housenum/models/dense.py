"""The notebook's fully connected nets, on flattened 32x32 pixels scaled to 0..1."""

from __future__ import annotations

from torch import nn

from housenum.models import register
from housenum.models.layers import keras_batchnorm, keras_init


@register("ann1", channels=1, epochs=20, batch_size=128, lr=1e-3,
          description="notebook dense net: 64-32-10 (68,010 params on greyscale)")
def ann1(channels: int) -> nn.Module:
    return keras_init(nn.Sequential(
        nn.Flatten(),
        nn.Linear(32 * 32 * channels, 64), nn.ReLU(),
        nn.Linear(64, 32), nn.ReLU(),
        nn.Linear(32, 10),
    ))


@register("ann2", channels=1, epochs=30, batch_size=128, lr=5e-4,
          description="notebook dense net: 256-128-drop-64-64-32-BN-10 (310,250 params on greyscale)")
def ann2(channels: int) -> nn.Module:
    return keras_init(nn.Sequential(
        nn.Flatten(),
        nn.Linear(32 * 32 * channels, 256), nn.ReLU(),
        nn.Linear(256, 128), nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(128, 64), nn.ReLU(),
        nn.Linear(64, 64), nn.ReLU(),
        nn.Linear(64, 32), nn.ReLU(),
        keras_batchnorm(32),
        nn.Linear(32, 10),
    ))
