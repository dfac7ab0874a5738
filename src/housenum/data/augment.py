"""Batched augmentation on tensors: one affine warp and one colour jitter for the whole batch."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    translate: float = 0.1   # max shift, fraction of the image side
    scale: float = 0.1       # max zoom in or out, fraction
    rotate: float = 10.0     # max rotation, degrees
    jitter: float = 0.3      # max brightness/contrast change, fraction
    cutout: int = 0          # side of a square zeroed at a random place (0: off)
    shear: float = 0.0       # max horizontal shear, degrees (slanted fonts)
    invert: float = 0.0      # probability of inverting the colours (light on dark <-> dark on light)
    shuffle_channels: bool = False  # permute the colour channels (the digit's colour says nothing)


def augment_batch(x: torch.Tensor, aug: Augment, gen: torch.Generator) -> torch.Tensor:
    """x: float (N, C, H, W) in 0..1 -> augmented copy, reflecting at the borders."""
    n = x.shape[0]

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(n, generator=gen) * 2 - 1) * limit

    angle = uniform(math.radians(aug.rotate))
    zoom = 1 + uniform(aug.scale)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # random numbers are drawn for an option only when it is on, so older recipes replay exactly
    slant = torch.tan(uniform(math.radians(aug.shear))) if aug.shear else torch.zeros(n)
    theta = torch.stack([
        torch.stack([cos, cos * slant - sin, uniform(2 * aug.translate)], 1),
        torch.stack([sin, sin * slant + cos, uniform(2 * aug.translate)], 1),
    ], 1).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if aug.jitter:
        contrast = (1 + uniform(aug.jitter)).view(n, 1, 1, 1).to(x.device)
        brightness = uniform(aug.jitter / 2).view(n, 1, 1, 1).to(x.device)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = ((out - mean) * contrast + mean + brightness).clamp_(0, 1)
    if aug.invert:
        flip = (torch.rand(n, generator=gen) < aug.invert).view(n, 1, 1, 1).to(x.device)
        out = torch.where(flip, 1 - out, out)
    if aug.shuffle_channels and x.shape[1] > 1:
        order = torch.argsort(torch.rand(n, x.shape[1], generator=gen), dim=1).to(x.device)
        out = out.gather(1, order.view(n, -1, 1, 1).expand_as(out))
    if aug.cutout:
        h, w = x.shape[2:]
        cy = torch.randint(0, h, (n,), generator=gen).view(n, 1, 1).to(x.device)
        cx = torch.randint(0, w, (n,), generator=gen).view(n, 1, 1).to(x.device)
        ys = torch.arange(h, device=x.device).view(1, h, 1)
        xs = torch.arange(w, device=x.device).view(1, 1, w)
        half = aug.cutout // 2
        hole = ((ys - cy).abs() <= half) & ((xs - cx).abs() <= half)
        out = out.masked_fill(hole.unsqueeze(1), 0.5)
    return out
