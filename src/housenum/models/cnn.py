"""The notebook's two small CNNs (Keras 'same' 3x3 convolutions, LeakyReLU 0.1)."""

from __future__ import annotations

from torch import nn

from housenum.models import register
from housenum.models.layers import keras_batchnorm, keras_init


def conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.1)]


@register("cnn1", channels=1, epochs=20, batch_size=32, lr=1e-3,
          description="notebook CNN: conv16-conv32-pool-dense32 (267,306 params on greyscale)")
def cnn1(channels: int) -> nn.Module:
    return keras_init(nn.Sequential(
        *conv(channels, 16), *conv(16, 32), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 16 * 16, 32), nn.LeakyReLU(0.1),
        nn.Linear(32, 10),
    ))


@register("cnn2", channels=1, epochs=30, batch_size=128, lr=1e-3,
          description="notebook CNN: two conv-conv-pool-BN blocks, dense32, dropout 0.5 (164,362 params)")
def cnn2(channels: int) -> nn.Module:
    return keras_init(nn.Sequential(
        *conv(channels, 16), *conv(16, 32), nn.MaxPool2d(2), keras_batchnorm(32, dims=2),
        *conv(32, 32), *conv(32, 64), nn.MaxPool2d(2), keras_batchnorm(64, dims=2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 32), nn.LeakyReLU(0.1),
        nn.Dropout(0.5), nn.Linear(32, 10),
    ))
