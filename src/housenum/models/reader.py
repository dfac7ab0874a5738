"""Whole-number reader networks (a family of its own, outside the 32x32 digit registry).

Two small CNNs read a photo in two looks, after Goodfellow et al. 2013:
- `Localizer` sees the whole photo squeezed to 64x128 and regresses the box around the number;
- `Reader` sees a 64x64 crop of that box expanded by 30% and predicts the number's length
  (0 = no number, 1..5) with one 10-way head per digit position and each digit's box.

This module also holds the geometry both training and inference use to turn a photo into those
views (`localizer_view`, `context_crop`, `reader_crops`), so a photo is seen exactly as in training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from housenum.models.layers import PerImageStandardize

MAX_DIGITS = 5
LOC_SIZE = (64, 128)        # (H, W) of the localiser's view of a whole photo
CONTEXT = 1.8               # a context crop spans this many number-box widths (and heights)
CONTEXT_SIZE = 96           # context crops are stored at 96x96 so training can re-crop them
CROP_SIZE = 64              # the reader's input
EXPAND = 1.3                # the reader's crop: the number box expanded by 30% (Goodfellow)
READER_OUTPUTS = 1 + MAX_DIGITS + MAX_DIGITS * 10 + MAX_DIGITS * 4


@dataclass(frozen=True)
class ReaderArch:
    """Widths of the two networks (conv stages; the last is followed by a dense layer)."""

    loc_widths: tuple[int, ...] = (16, 32, 64, 96)
    loc_dense: int = 128            # the box localiser's dense layer; the heatmap localiser's pyramid width
    loc_head: str = "box"           # "box": regress one box; "heatmap": find the number's centre on a map
    read_widths: tuple[int, ...] = (32, 48, 96, 160)
    read_squeeze: int = 0           # >0: a 1x1 conv to this many channels before the dense layer
    read_dense: int = 384
    dropout: float = 0.3
    head: str = "multi"             # "multi": length + one head per position; "ctc": per-column CTC

    @classmethod
    def from_dict(cls, d: dict) -> ReaderArch:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def as_dict(self) -> dict:
        return asdict(self)


# Named sizes: "small" trains on a 2-core CPU in minutes per epoch; "wide" is for a GPU; "ctc"
# reads columns with one shared digit classifier (CTC), which learns from far fewer photos.
ARCHS = {
    "small": ReaderArch(),
    "wide": ReaderArch(loc_widths=(24, 48, 96, 128), loc_dense=192, read_widths=(48, 64, 128, 192), read_squeeze=96,
                       read_dense=512),
    "ctc": ReaderArch(read_widths=(32, 48, 96, 160), read_dense=256, head="ctc"),
    "heatmap": ReaderArch(loc_dense=64, loc_head="heatmap"),
    "heatmap-wide": ReaderArch(loc_widths=(24, 48, 96, 128), loc_dense=96, loc_head="heatmap"),
}
CTC_STEPS = 16       # columns the CTC reader emits across its 64-pixel crop
CTC_BLANK = 10       # class index of "no digit here"


def _conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _trunk(widths: tuple[int, ...]) -> nn.Sequential:
    """A stride-2 stem, then per stage two 3x3 convs (one for the first) and a 2x2 max-pool."""
    layers = [PerImageStandardize(), *_conv(3, widths[0], stride=2), *_conv(widths[0], widths[1]), nn.MaxPool2d(2)]
    for cin, cout in zip(widths[1:-1], widths[2:]):
        layers += [*_conv(cin, cout), *_conv(cout, cout), nn.MaxPool2d(2)]
    return nn.Sequential(*layers)


class Localizer(nn.Module):
    """(N, 3, 64, 128) photo in 0..1 -> (N, 4): centre x, centre y (0..1), log width, log height."""

    def __init__(self, arch: ReaderArch = ReaderArch()) -> None:
        super().__init__()
        self.trunk = _trunk(arch.loc_widths)
        cells = (LOC_SIZE[0] // 16) * (LOC_SIZE[1] // 16)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(arch.loc_widths[-1] * cells, arch.loc_dense),
                                  nn.ReLU(inplace=True), nn.Linear(arch.loc_dense, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class HeatmapLocalizer(nn.Module):
    """(N, 3, 64, 128) photo in 0..1 -> (N, 5, 16, 32) maps: where the number's centre may be.

    A small feature pyramid brings the stride-16 features back to stride 4; each cell gives the
    logit that the number's centre falls in it, where in the cell (x, y logits) and the box's log
    width and height (CenterNet, Zhou et al. 2019). A box regressed from the whole view is pulled
    toward the numbers the localiser saw most (big and central); a map finds a small number far
    from the centre as easily (`localizer_box` reads the box at the most likely cell).
    """

    def __init__(self, arch: ReaderArch = ReaderArch()) -> None:
        super().__init__()
        w, mid = arch.loc_widths, arch.loc_dense
        self.stride4 = nn.Sequential(PerImageStandardize(), *_conv(3, w[0], stride=2), *_conv(w[0], w[1]),
                                     nn.MaxPool2d(2))
        self.stride8 = nn.Sequential(*_conv(w[1], w[2]), *_conv(w[2], w[2]), nn.MaxPool2d(2))
        self.stride16 = nn.Sequential(*_conv(w[2], w[3]), *_conv(w[3], w[3]), nn.MaxPool2d(2),
                                      *_conv(w[3], w[3]))
        self.lateral = nn.ModuleList([nn.Conv2d(c, mid, 1) for c in (w[1], w[2], w[3])])
        self.smooth = nn.Sequential(*_conv(mid, mid))
        self.maps = nn.Sequential(*_conv(mid, mid), nn.Conv2d(mid, 5, 1))
        nn.init.constant_(self.maps[-1].bias[:1], -2.2)   # start near P(centre) = 0.1, as CenterNet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c4 = self.stride4(x)
        c8 = self.stride8(c4)
        c16 = self.stride16(c8)
        p = self.lateral[2](c16)
        p = F.interpolate(p, size=c8.shape[-2:], mode="nearest") + self.lateral[1](c8)
        p = F.interpolate(p, size=c4.shape[-2:], mode="nearest") + self.lateral[0](c4)
        return self.maps(self.smooth(p))


def localizer_box(out: np.ndarray) -> np.ndarray:
    """A localiser's output -> (N, 4) centre x, centre y (0..1), log width, log height: a box
    localiser's own, or a heatmap localiser's read at its most likely centre cell."""
    out = np.asarray(out, np.float32)
    if out.ndim == 2:
        return out
    n, _, rows, cols = out.shape
    best = out[:, 0].reshape(n, -1).argmax(1)
    at = out.reshape(n, 5, -1)[np.arange(n), :, best]                        # (N, 5)
    offset = 1 / (1 + np.exp(-at[:, 1:3]))
    return np.stack([(best % cols + offset[:, 0]) / cols, (best // cols + offset[:, 1]) / rows, at[:, 3], at[:, 4]],
                    axis=1).astype(np.float32)


def heatmap_loss(maps: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's loss for targets (N, 4: centre x, centre y, log width, log height, view fractions;
    NaN for a photo without a number): a focal loss on the centre map against a Gaussian about the
    true cell, whose spread follows the box size (zero everywhere without a number), plus L1 on the
    offset and size at the true cell."""
    n, _, rows, cols = maps.shape
    maps = maps.float()
    has = ~target[:, 0].isnan()
    target = torch.where(has[:, None], target, torch.tensor([0.5, 0.5, -1.0, -1.0], device=target.device))
    cx = target[:, 0].clamp(0, 1 - 1e-4) * cols
    cy = target[:, 1].clamp(0, 1 - 1e-4) * rows
    col, row = cx.floor(), cy.floor()
    sx = (target[:, 2].exp() * cols / 6).clamp_min(0.5)
    sy = (target[:, 3].exp() * rows / 6).clamp_min(0.5)
    xs = torch.arange(cols, device=maps.device, dtype=maps.dtype).view(1, 1, cols)
    ys = torch.arange(rows, device=maps.device, dtype=maps.dtype).view(1, rows, 1)
    gauss = torch.exp(-((xs - col.view(n, 1, 1)) ** 2) / (2 * sx.view(n, 1, 1) ** 2)
                      - ((ys - row.view(n, 1, 1)) ** 2) / (2 * sy.view(n, 1, 1) ** 2))   # 1 at the true cell
    gauss = gauss * has.view(n, 1, 1)
    p = torch.sigmoid(maps[:, 0]).clamp(1e-4, 1 - 1e-4)
    peak = gauss > 0.999
    focal = torch.where(peak, (1 - p) ** 2 * p.log(), (1 - gauss) ** 4 * p ** 2 * (1 - p).log())
    focal_loss = -focal.sum() / n
    at = maps.flatten(2).gather(2, (row * cols + col).long().view(n, 1, 1).expand(n, 5, 1)).squeeze(2)
    weight = has.float()[:, None] / has.sum().clamp_min(1) / 2
    offset = ((torch.sigmoid(at[:, 1:3]) - torch.stack([cx - col, cy - row], 1)).abs() * weight).sum()
    size = ((at[:, 3:5] - target[:, 2:4]).abs() * weight).sum()
    return focal_loss + offset + size


def create_localizer(arch: ReaderArch) -> nn.Module:
    return HeatmapLocalizer(arch) if arch.loc_head == "heatmap" else Localizer(arch)


class CTCReader(nn.Module):
    """(N, 3, 64, 64) crop in 0..1 -> (N, 16, 11): per column, logits of digits 0..9 and blank.

    Pools height only after 16x16, so 16 columns survive; one classifier reads every column, so
    a digit learnt at one position is known at all of them.
    """

    def __init__(self, arch: ReaderArch) -> None:
        super().__init__()
        w = arch.read_widths
        layers = [PerImageStandardize(), *_conv(3, w[0], stride=2), *_conv(w[0], w[1]), nn.MaxPool2d(2)]
        for cin, cout in zip(w[1:-1], w[2:]):
            layers += [*_conv(cin, cout), *_conv(cout, cout), nn.MaxPool2d((2, 1))]
        self.trunk = nn.Sequential(*layers)
        rows = CROP_SIZE // 4 // 2 ** (len(w) - 2)
        self.collapse = nn.Sequential(nn.Conv2d(w[-1], arch.read_dense, (rows, 1), bias=False),
                                      nn.BatchNorm2d(arch.read_dense), nn.ReLU(inplace=True), nn.Dropout(arch.dropout))
        self.columns = nn.Sequential(nn.Conv1d(arch.read_dense, arch.read_dense, 3, padding=1), nn.ReLU(inplace=True),
                                     nn.Conv1d(arch.read_dense, 11, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.collapse(self.trunk(x)).squeeze(2)      # (N, C, 16)
        return self.columns(features).transpose(1, 2)             # (N, 16, 11)


def ctc_greedy(best) -> list[list[int]]:
    """Best path per row of column argmaxes (N, T) -> digits: repeats collapsed, blanks dropped."""
    out = []
    for row in np.asarray(best).tolist():
        digits, previous = [], CTC_BLANK
        for c in row:
            if c != previous and c != CTC_BLANK:
                digits.append(c)
            previous = c
        out.append(digits)
    return out


def create_reader(arch: ReaderArch) -> nn.Module:
    return CTCReader(arch) if arch.head == "ctc" else Reader(arch)


class Reader(nn.Module):
    """(N, 3, 64, 64) crop in 0..1 -> (N, READER_OUTPUTS): length logits (6), digit logits (5x10),
    digit boxes (5x4: centre x, centre y, width, height as fractions of the crop)."""

    def __init__(self, arch: ReaderArch = ReaderArch()) -> None:
        super().__init__()
        self.trunk = _trunk(arch.read_widths)
        channels = arch.read_widths[-1]
        if arch.read_squeeze:
            self.trunk.extend([nn.Conv2d(channels, arch.read_squeeze, 1, bias=False),
                               nn.BatchNorm2d(arch.read_squeeze), nn.ReLU(inplace=True)])
            channels = arch.read_squeeze
        cells = (CROP_SIZE // 16) ** 2
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(arch.dropout),
                                  nn.Linear(channels * cells, arch.read_dense),
                                  nn.ReLU(inplace=True), nn.Dropout(arch.dropout),
                                  nn.Linear(arch.read_dense, READER_OUTPUTS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def split_reader_output(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(length logits (N, 6), digit logits (N, 5, 10), digit boxes (N, 5, 4) in 0..1)."""
    n = out.shape[0]
    length = out[:, : MAX_DIGITS + 1]
    digits = out[:, MAX_DIGITS + 1: MAX_DIGITS + 1 + 10 * MAX_DIGITS].reshape(n, MAX_DIGITS, 10)
    boxes = torch.sigmoid(out[:, MAX_DIGITS + 1 + 10 * MAX_DIGITS:].reshape(n, MAX_DIGITS, 4))
    return length, digits, boxes


# --- The views a photo is turned into -------------------------------------------------------------


def localizer_view(img: Image.Image) -> np.ndarray:
    """The whole photo squeezed to (64, 128, 3) uint8 (aspect not kept; boxes are fractions)."""
    return np.asarray(img.resize((LOC_SIZE[1], LOC_SIZE[0]), Image.BILINEAR), np.uint8)


def decode_box(pred: np.ndarray, width: int, height: int) -> np.ndarray:
    """Localiser outputs (N, 4) -> number boxes (N, 4) left, top, right, bottom in photo pixels.
    The centre is kept inside the photo: a badly trained or fooled localiser can point outside."""
    pred = np.asarray(pred, np.float64)
    cx, cy = np.clip(pred[:, 0], 0, 1) * width, np.clip(pred[:, 1], 0, 1) * height
    w = np.exp(np.clip(pred[:, 2], -6, 0.5)) * width
    h = np.exp(np.clip(pred[:, 3], -6, 0.5)) * height
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def context_region(box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """The pixels a context crop covers: the number box (left, top, right, bottom) grown to
    CONTEXT times its size about its centre, rounded."""
    left, top, right, bottom = box
    cx, cy = (left + right) / 2, (top + bottom) / 2
    hw, hh = max(right - left, 2.0) * CONTEXT / 2, max(bottom - top, 2.0) * CONTEXT / 2
    return tuple(int(round(v)) for v in (cx - hw, cy - hh, cx + hw, cy + hh))


def context_crop(img: Image.Image, box: tuple[float, float, float, float]) -> np.ndarray:
    """(96, 96, 3) uint8 of `context_region(box)`; outside the photo reads black."""
    region = context_region(box)
    return np.asarray(img.crop(region).resize((CONTEXT_SIZE, CONTEXT_SIZE), Image.BILINEAR), np.uint8)


def crop_theta(expand: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Affine maps (N, 2, 3) from the reader's crop to its context crop.

    `expand` (N, 2): crop size / number-box size per axis; `shift` (N, 2): crop centre offset in
    number-box sizes. In the context crop's [-1, 1] frame the number box spans +-1/CONTEXT.
    """
    n = expand.shape[0]
    theta = torch.zeros(n, 2, 3, dtype=expand.dtype)
    theta[:, 0, 0] = expand[:, 0] / CONTEXT
    theta[:, 1, 1] = expand[:, 1] / CONTEXT
    theta[:, :, 2] = shift * 2 / CONTEXT
    return theta


def reader_crops(context: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
    """Context crops, float (N, 3, 96, 96) in 0..1 -> reader input (N, 3, 64, 64).

    Without `theta`, the inference crop: the number box expanded by EXPAND, centred.
    """
    n = context.shape[0]
    if theta is None:
        grid = inference_grid().to(context).expand(n, -1, -1, -1)
    else:
        grid = F.affine_grid(theta.to(context.dtype), [n, 3, CROP_SIZE, CROP_SIZE], align_corners=False)
    return F.grid_sample(context, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def inference_grid() -> torch.Tensor:
    """(1, 64, 64, 2) sampling grid of the inference crop (a constant, so it exports to ONNX)."""
    theta = crop_theta(torch.full((1, 2), EXPAND), torch.zeros(1, 2))
    return F.affine_grid(theta, [1, 3, CROP_SIZE, CROP_SIZE], align_corners=False)


class ReaderFromContext(nn.Module):
    """Context crops (N, 3, 96, 96) in 0..1 -> reader outputs: the inference crop and the reader in
    one graph, for export."""

    def __init__(self, reader: nn.Module) -> None:
        super().__init__()
        self.reader = reader
        self.register_buffer("grid", inference_grid(), persistent=False)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        grid = self.grid.expand(context.shape[0], -1, -1, -1)
        crops = F.grid_sample(context, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return self.reader(crops)


__all__ = ["ARCHS", "CONTEXT", "CONTEXT_SIZE", "CROP_SIZE", "CTCReader", "CTC_BLANK", "CTC_STEPS", "EXPAND",
           "HeatmapLocalizer", "LOC_SIZE", "Localizer", "MAX_DIGITS", "Reader", "ReaderArch", "ReaderFromContext",
           "context_crop", "context_region", "create_localizer", "create_reader", "crop_theta", "ctc_greedy",
           "decode_box", "heatmap_loss", "inference_grid", "localizer_box", "localizer_view", "reader_crops",
           "split_reader_output"]
