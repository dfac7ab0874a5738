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
    swap_sides: float = 0.0  # probability of showing another crop's left and right strips (new neighbours)


def augment_batch(x: torch.Tensor, aug: Augment, gen: torch.Generator) -> torch.Tensor:
    """x: float (N, C, H, W) in 0..1 -> augmented copy, reflecting at the borders."""
    n = x.shape[0]
    if aug.swap_sides:
        x = swap_sides(x, aug.swap_sides, gen)

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


def swap_sides(x: torch.Tensor, p: float, gen: torch.Generator, widths: tuple[int, int] = (3, 7)) -> torch.Tensor:
    """With probability `p` per image, its left and right strips (`widths` px each, drawn per image)
    become another image's of the batch, brought to its brightness and contrast.

    An SVHN crop is a square around one digit, so its sides show parts of the neighbouring digits;
    the label is the centre digit only. New neighbours teach the network to look at the centre:
    a share of its errors name a neighbour. Measured: no gain, nor fewer such errors (docs/experiments.md)."""
    n, _, _, w = x.shape
    chosen = (torch.rand(n, generator=gen) < p).to(x.device)
    donor = torch.randperm(n, generator=gen).to(x.device)
    side = torch.randint(widths[0], widths[1] + 1, (n,), generator=gen).to(x.device).view(n, 1, 1, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
    strip = ((cols < side) | (cols >= w - side)) & chosen.view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True) + 1e-3
    matched = ((x[donor] - mean[donor]) / std[donor] * std + mean).clamp(0, 1)
    return torch.where(strip, matched, x)


def mixup(x: torch.Tensor, alpha: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mixup (Zhang et al. 2018): the batch blended with a shuffled copy of itself by one weight
    lam ~ Beta(alpha, alpha); the loss is lam * loss(y) + (1 - lam) * loss(y[perm]).
    Returns (blended, perm, lam). lam is drawn from `gen` (inverse CDF), so runs replay exactly."""
    lam, perm = _weight_and_partners(x, alpha, gen)
    return lam * x + (1 - lam) * x[perm], perm, lam


def _weight_and_partners(x: torch.Tensor, alpha: float, gen: torch.Generator) -> tuple[float, torch.Tensor]:
    """lam ~ Beta(alpha, alpha) by the inverse CDF of one draw from `gen` (so runs replay), and a
    shuffle of the batch pairing each image with a partner."""
    from scipy.special import betaincinv

    lam = float(betaincinv(alpha, alpha, float(torch.rand(1, generator=gen))))
    return lam, torch.randperm(x.shape[0], generator=gen).to(x.device)


def cutmix(x: torch.Tensor, alpha: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix (Yun et al. 2019): one rectangle of every image replaced by the same rectangle of a
    shuffled copy of the batch, its area share 1 - lam with lam ~ Beta(alpha, alpha) (clipped at the
    border, lam is then the share actually kept); the loss is mixup's. Returns (mixed, perm, lam)."""
    lam, perm = _weight_and_partners(x, alpha, gen)
    h, w = x.shape[2:]
    cut_h, cut_w = round(h * (1 - lam) ** 0.5), round(w * (1 - lam) ** 0.5)
    cy, cx = (int(v) for v in torch.randint(0, 1 << 30, (2,), generator=gen))
    cy, cx = cy % h, cx % w
    top, bottom = max(cy - cut_h // 2, 0), min(cy - cut_h // 2 + cut_h, h)
    left, right = max(cx - cut_w // 2, 0), min(cx - cut_w // 2 + cut_w, w)
    mixed = x.clone()
    mixed[:, :, top:bottom, left:right] = x[perm, :, top:bottom, left:right]
    return mixed, perm, 1 - (bottom - top) * (right - left) / (h * w)
