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


def augment_batch(x: torch.Tensor, aug: Augment, gen: torch.Generator) -> torch.Tensor:
    """x: float (N, C, H, W) in 0..1 -> augmented copy, reflecting at the borders."""
    n = x.shape[0]

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(n, generator=gen) * 2 - 1) * limit

    angle = uniform(math.radians(aug.rotate))
    zoom = 1 + uniform(aug.scale)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([
        torch.stack([cos, -sin, uniform(2 * aug.translate)], 1),
        torch.stack([sin, cos, uniform(2 * aug.translate)], 1),
    ], 1).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if aug.jitter:
        contrast = (1 + uniform(aug.jitter)).view(n, 1, 1, 1).to(x.device)
        brightness = uniform(aug.jitter / 2).view(n, 1, 1, 1).to(x.device)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = ((out - mean) * contrast + mean + brightness).clamp_(0, 1)
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
