"""A small pre-activation-free ResNet for 32x32 crops: the stronger family beyond the notebook.

Per-image standardisation is the first layer, so the model sees the same input whatever the
photo's brightness, and export/inference need no separate normalisation step.
"""

from __future__ import annotations

import torch
from torch import nn

from housenum.models import register
from housenum.models.layers import ChannelStandardize, PerImageStandardize


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.skip = (
            nn.Identity() if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class ResNet(nn.Module):
    """Stem, then one stage per width, each after the first halving the resolution; the first
    stage runs at full resolution, or at half with `first_stride=2` (a third of the work gone)."""

    def __init__(self, channels: int, widths: tuple[int, ...], blocks: int = 1, classes: int = 10,
                 per_image: bool = True, stem: int | None = None, first_stride: int = 1) -> None:
        super().__init__()
        stem = stem or widths[0]
        layers: list[nn.Module] = [
            PerImageStandardize() if per_image else ChannelStandardize(channels),
            nn.Conv2d(channels, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True),
        ]
        cin = stem
        for i, w in enumerate(widths):
            for b in range(blocks):
                stride = 1 if b > 0 else (2 if i > 0 else first_stride)
                layers.append(BasicBlock(cin, w, stride=stride))
                cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register("resnet", channels=3, epochs=30, batch_size=128, lr=2e-3, recipe="strong",
          description="small ResNet, widths 32-64-128-256, one block each, per-image standardised RGB")
def resnet(channels: int) -> nn.Module:
    return ResNet(channels, (32, 64, 128, 256))


@register("resnet_fast", channels=3, epochs=30, batch_size=128, lr=2e-3, recipe="strong",
          description="the resnet's widths 64-128-256 after a 32-wide stem, first block at 16x16: "
                      "1.6x its training throughput")
def resnet_fast(channels: int) -> nn.Module:
    return ResNet(channels, (64, 128, 256), stem=32, first_stride=2)


@register("resnet_mid", channels=3, epochs=30, batch_size=128, lr=2e-3, recipe="strong",
          description="resnet_fast at 3/4 width (48-96-192, the same 32-wide stem): 0.6x its work, "
                      "for the speed/accuracy trade-off")
def resnet_mid(channels: int) -> nn.Module:
    return ResNet(channels, (48, 96, 192), stem=32, first_stride=2)


@register("resnet_small", channels=3, epochs=30, batch_size=128, lr=2e-3, recipe="strong",
          description="resnet_fast at half width (32-64-128, 16-wide stem): a quarter of its work, "
                      "for the speed/accuracy trade-off")
def resnet_small(channels: int) -> nn.Module:
    return ResNet(channels, (32, 64, 128), stem=16, first_stride=2)


@register("resnet_tiny", channels=3, epochs=30, batch_size=128, lr=2e-3, recipe="strong",
          description="resnet_fast at 3/8 width (24-48-96, 16-wide stem): a seventh of its work, "
                      "for the speed/accuracy trade-off")
def resnet_tiny(channels: int) -> nn.Module:
    return ResNet(channels, (24, 48, 96), stem=16, first_stride=2)


@register("resnet_wide", channels=3, epochs=30, batch_size=128, lr=2e-3, recipe="strong",
          description="wider ResNet, widths 48-96-192-384, one block each")
def resnet_wide(channels: int) -> nn.Module:
    return ResNet(channels, (48, 96, 192, 384))


@register("resnet_chnorm", channels=3, epochs=30, batch_size=128, lr=2e-3, recipe="strong",
          description="the resnet with fixed per-channel normalisation instead of per-image (an experiment)")
def resnet_chnorm(channels: int) -> nn.Module:
    return ResNet(channels, (32, 64, 128, 256), per_image=False)
