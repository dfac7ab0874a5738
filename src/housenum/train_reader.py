"""Train the whole-number reader: localiser and reader, in one explicit loop over uint8 tensors.

Every photo (real or synthetic) is turned once into two uint8 views: the whole photo at 64x128
with its number box (for the localiser) and a 96x96 context crop around the number (for the
reader). Each step draws a batch of each and augments it on tensors: the localiser's view is
zoomed, shifted and mirrored; the reader's crop is re-cut from the context with a random
expansion and offset (so it learns to read from an imperfect localiser) and colour-jittered.
Validation reads whole held-out photos through `housenum.read.NumberReader`, the inference path.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
import os
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from housenum import plots
from housenum.checkpoint import clear_old_run, save_checkpoint
from housenum.data.numbers import NumberSet, load_numbers, number_box
from housenum.data.splits import source_fold
from housenum.errors import DataFormatError, ModelError
from housenum.io import atomic_open, atomic_path, write_text
from housenum.models.reader import (
    ARCHS, CTC_BLANK, MAX_DIGITS, ReaderArch, context_crop, context_region, create_localizer,
    create_reader, crop_theta, ctc_greedy, heatmap_loss, localizer_view, reader_crops, split_reader_output,
)

READER_FORMAT = "housenum-reader/1"
# Parts of real photos away from the labelled number that the networks read this sure are mostly
# unlabelled real digits (a gallery of the 48 surest: about half), so they are not taught as "no number".
HARD_NEGATIVE_SKIP = 0.9
LOC_BACKDROPS = ("border", "scenery")


@dataclass
class ReaderTrainConfig:
    """Every setting of a reader run; `config.json` in the run folder is this."""

    data: str = "synthetic:2000"     # real photos: a labels.json folder, digitStruct.mat, svhn-full:train
    holdout: str | None = "test_*"   # photos whose name matches are never used (the test set)
    val_fraction: float = 0.1        # of the remaining photos, by a hash of the name, for validation
    fold: int | None = None          # cross-validation: fold K of n_folds is validation instead
    n_folds: int = 5
    synthetic: int = 12000           # synthetic number photos mixed into training (0: none)
    synthetic_empty: int = 3000      # synthetic photos without a number ("no number" examples)
    synthetic_seed: int = 1
    real_fraction: float = 0.5       # share of each batch drawn from real photos
    epochs: int = 30                 # an epoch: enough steps to see each real photo once
    minutes: float | None = None     # wall-clock budget: the LR schedule follows the clock, epochs cap it
    batch_size: int = 64
    lr: float = 2e-3                 # peak of the one-cycle schedule (AdamW)
    weight_decay: float = 5e-4
    ema: float = 0.998               # evaluate and ship an exponential moving average of weights
    label_smoothing: float = 0.05
    box_weight: float = 2.0          # digit-box L1 loss weight in the reader's loss
    expand: tuple[float, float] = (1.1, 1.6)   # reader crop size / number box size, per axis
    shift: float = 0.12              # reader crop centre offset, up to this many box sizes
    loc_zoom: tuple[float, float] = (0.85, 1.25)   # log-uniform; below 1 zooms out (numbers smaller)
    loc_shift: float = 0.1           # localiser view shift, fraction of the photo
    loc_backdrop: str = "border"     # beyond a zoomed-out photo's edge: "border" (smeared) or "scenery"
    jitter: float = 0.35             # brightness/contrast jitter, both views
    p_invert: float = 0.2            # light-on-dark <-> dark-on-light
    arch: dict = field(default_factory=lambda: ARCHS["small"].as_dict())  # widths; see models.reader.ARCHS
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"          # auto (bf16 on a GPU or a CPU with bf16 units, else fp32) | fp32 | bf16
    threads: int | None = 1          # CPU threads (the shared 2-core machine: 1)
    workers: int = 1                 # processes drawing synthetic photos (same data for any number)
    eval_every: int = 1              # epochs between validation rounds and checkpoints
    init: str | None = None          # start from this reader run folder or .pt instead of random weights
    localizer_only: bool = False     # train only the localiser (the reader of `init` is kept)
    new_localizer: bool = False      # with `init`: start a new localiser as `arch` says (loc_*), keep the reader
    reader_only: bool = False        # train only the reader (the localiser of `init` is kept)
    hard_negatives: int = 0          # with `init`: mine "no number" crops where its localiser looks (`hard_negatives`)
    negative_fraction: float = 0.125  # share of each batch drawn from the mined crops

    def check(self) -> None:
        """Settings out of range or that contradict each other, refused before anything is written:
        they would otherwise train nonsense quietly or fail deep inside PyTorch."""
        from housenum.errors import is_whole
        from housenum.train import refuse_non_finite

        refuse_non_finite(self)
        for name in ("epochs", "batch_size", "eval_every", "workers", "synthetic", "synthetic_empty", "hard_negatives"):
            if not is_whole(getattr(self, name)):
                raise ModelError(f"{name.replace('_', '-')} must be a whole number, got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "eval_every", "workers"):
            if getattr(self, name) < 1:
                raise ModelError(f"{name.replace('_', '-')} must be 1 or more, got {getattr(self, name)}")
        for name in ("synthetic", "synthetic_empty", "hard_negatives"):
            if getattr(self, name) < 0:
                raise ModelError(f"{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")
        if self.minutes is not None and not self.minutes > 0:
            raise ModelError(f"minutes must be above 0, got {self.minutes}")
        if not 0 <= self.val_fraction < 1:
            raise ModelError(f"val-fraction must be 0 or more and below 1, got {self.val_fraction}")
        if not 0 <= self.real_fraction <= 1:
            raise ModelError(f"real-fraction is a share of each batch: 0 to 1, got {self.real_fraction}")
        low, high = self.loc_zoom
        if not 0 < low <= high:
            raise ModelError(f"loc-zoom takes two zooms, the smaller first, both above 0; got {low} {high}")
        if not 0 <= self.loc_shift < 1:
            raise ModelError(f"loc-shift is a share of the photo: 0 or more and below 1, got {self.loc_shift}")
        from housenum.train import PRECISIONS, check_shared_ranges

        check_shared_ranges(self.lr, self.fold, self.n_folds, self.threads)
        if self.reader_only and self.localizer_only:
            raise ModelError("--reader-only and --localizer-only together leave nothing to train")
        if self.loc_backdrop not in LOC_BACKDROPS:
            raise ModelError(f"unknown localiser backdrop {self.loc_backdrop!r}: choose {' or '.join(LOC_BACKDROPS)}")
        if self.precision not in PRECISIONS:
            raise ModelError(f"unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}")
        for flag, given in (("--reader-only", self.reader_only), ("--localizer-only", self.localizer_only),
                            ("--hard-negatives", self.hard_negatives), ("--new-localizer", self.new_localizer)):
            if given and not self.init:
                raise ModelError(f"{flag} works on the networks of --init: give --init RUN")
        for flag, given in (("--reader-only", self.reader_only), ("--hard-negatives", self.hard_negatives)):
            if given and self.new_localizer:
                raise ModelError(f"{flag} needs the localiser of --init, which --new-localizer replaces")

    @classmethod
    def from_dict(cls, d: dict) -> ReaderTrainConfig:
        names = {f.name for f in fields(cls)}
        d = {k: tuple(v) if k in ("expand", "loc_zoom") else v for k, v in d.items() if k in names}
        return cls(**d)


# --- Photos as tensors ----------------------------------------------------------------------------


@dataclass
class PhotoTensors:
    """Both views of N photos, as uint8, with their targets.

    `loc_box` is the number box (left, top, right, bottom) as fractions of the photo (NaN for
    photos without a number); `digit_boxes` (N, 5, 4) are centre x, centre y, width, height in the
    context crop's [-1, 1] frame.
    """

    loc: torch.Tensor          # (N, 3, 64, 128) uint8
    loc_box: torch.Tensor      # (N, 4) float32
    context: torch.Tensor      # (N, 3, 96, 96) uint8
    length: torch.Tensor       # (N,) int64, 0..5
    digits: torch.Tensor       # (N, 5) int64, -100 past the length
    digit_boxes: torch.Tensor  # (N, 5, 4) float32

    def __len__(self) -> int:
        return len(self.length)

    @staticmethod
    def cat(parts: list[PhotoTensors]) -> PhotoTensors:
        return PhotoTensors(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(PhotoTensors)))

    def save(self, path: Path) -> None:
        """Uncompressed: photos barely compress, and a cache of 50k photos must load in seconds."""
        with atomic_open(path, "wb") as fh:
            np.savez(fh, **{f.name: getattr(self, f.name).numpy() for f in fields(self)})

    @staticmethod
    def load(path: Path) -> PhotoTensors:
        with np.load(path) as f:
            return PhotoTensors(*(torch.from_numpy(f[k.name]) for k in fields(PhotoTensors)))


def photo_tensors(images, boxes: list[np.ndarray | None], rng: np.random.Generator) -> PhotoTensors:
    """Both views of each photo; a photo without boxes gets a random number-sized context crop."""
    n = len(boxes)
    loc = np.empty((n, 64, 128, 3), np.uint8)
    context = np.empty((n, 96, 96, 3), np.uint8)
    loc_box = np.full((n, 4), np.nan, np.float32)
    length = np.zeros(n, np.int64)
    digits = np.full((n, MAX_DIGITS), -100, np.int64)
    digit_boxes = np.zeros((n, MAX_DIGITS, 4), np.float32)
    for i, (image, rows) in enumerate(zip(images, boxes)):
        img = Image.fromarray(image) if isinstance(image, np.ndarray) else image
        width, height = img.size
        loc[i] = localizer_view(img)
        if rows is None or len(rows) == 0:
            w = rng.uniform(0.15, 0.6) * width
            h = rng.uniform(0.3, 0.8) * height
            left, top = rng.uniform(0, width - w), rng.uniform(0, height - h)
            context[i] = context_crop(img, (left, top, left + w, top + h))
            continue
        rows = np.asarray(rows)[:MAX_DIGITS]
        box = number_box(rows)
        loc_box[i] = (box[0] / width, box[1] / height, box[2] / width, box[3] / height)
        context[i] = context_crop(img, box)
        length[i] = len(rows)
        digits[i, :len(rows)] = rows[:, 4]
        digit_boxes[i, :len(rows)] = _context_frame(rows, box)
    return PhotoTensors(_nchw(loc), torch.from_numpy(loc_box), _nchw(context), torch.from_numpy(length),
                        torch.from_numpy(digits), torch.from_numpy(digit_boxes))


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def _context_frame(rows: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Digit boxes (k, 5) in pixels -> (k, 4) centre x, centre y, width, height in the context
    crop's [-1, 1] frame (the crop `context_crop` cuts, with its rounding)."""
    rl, rt, rr, rb = context_region(box)
    r = rows.astype(np.float64)
    out = np.stack([2 * (r[:, 0] + r[:, 2] / 2 - rl) / (rr - rl) - 1,
                    2 * (r[:, 1] + r[:, 3] / 2 - rt) / (rb - rt) - 1,
                    2 * r[:, 2] / (rr - rl), 2 * r[:, 3] / (rb - rt)], axis=1)
    return out.astype(np.float32)


def batch_shares(batch_size: int, real_fraction: float, n_negatives: int, synthetic: bool) -> list[int]:
    """Photos per batch from each pool: real (at least one), synthetic (if any; what the real and the
    negatives leave), mined negatives (if any; at most all but one). No share is below 0."""
    n_neg = min(n_negatives, batch_size - 1)
    if not synthetic:
        return [batch_size - n_neg] + ([n_neg] if n_negatives else [])
    n_real = min(max(1, round(batch_size * real_fraction)), batch_size - n_neg)
    return [n_real, batch_size - n_real - n_neg] + ([n_neg] if n_negatives else [])


def real_tensors(photos: NumberSet) -> PhotoTensors:
    return photo_tensors((_checked_image(photos, i) for i in range(len(photos))), photos.boxes,
                         np.random.default_rng(0))


def _checked_image(photos: NumberSet, i: int):
    """Photo i, refused when its number lies wholly outside it: a label for another photo (or
    another size of it) would otherwise train on a crop of the edge. Official boxes may stick out
    a little (15 of the shared photos' do), so only a box wholly outside is refused."""
    image = photos.image(i)
    rows = photos.boxes[i]
    if rows is not None and len(rows):
        height, width = np.asarray(image).shape[:2]
        left, top, right, bottom = number_box(np.asarray(rows))
        if right <= 0 or bottom <= 0 or left >= width or top >= height:
            raise DataFormatError(f"{photos.names[i]}: its digit boxes ({left:g}, {top:g}) to ({right:g}, {bottom:g}) "
                                  f"lie outside the photo ({width}x{height}): are the labels for this photo?")
    return image


def _say_on_stderr(line: str) -> None:   # train_reader(progress=True), as a notebook user would try
    print(line, file=sys.stderr, flush=True)


GIVEN_PHOTOS = "photos given in Python"   # config.json's data when train_reader(photos=...) had them

SYNTHETIC_CHUNK = 500  # photos per generation chunk; chunk k is drawn from seed (seed, k)


def synthetic_tensors(n: int, n_empty: int, seed: int, cache: Path | None = None, workers: int = 1) -> PhotoTensors:
    """Synthetic photos with numbers and without, built once and cached (they take minutes).

    Built in chunks of SYNTHETIC_CHUNK, each from its own seed, so `workers` processes give
    byte-identical data to one.
    """
    path = cache / f"reader-synthetic-v2-{n}-{n_empty}-{seed}.npz" if cache is not None else None
    if path is not None and path.is_file():
        try:
            return PhotoTensors.load(path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass   # damaged: only a cache, built again below and written over
    jobs = [(seed, k, min(SYNTHETIC_CHUNK, n - start), False) for k, start in enumerate(range(0, n, SYNTHETIC_CHUNK))]
    jobs += [(seed, len(jobs) + k, min(SYNTHETIC_CHUNK, n_empty - start), True)
             for k, start in enumerate(range(0, n_empty, SYNTHETIC_CHUNK))]
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_synthetic_chunk, jobs))
    else:
        parts = [_synthetic_chunk(job) for job in jobs]
    out = PhotoTensors.cat(parts)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            out.save(path)
        except OSError:   # a read-only or full cache costs the next run the minutes, not this one its photos
            pass
    return out


def _synthetic_chunk(job: tuple[int, int, int, bool]) -> PhotoTensors:
    from housenum.data.synthetic import synthetic_empty, synthetic_numbers

    seed, chunk, n, empty = job
    torch.set_num_threads(1)
    chunk_seed = int(np.random.SeedSequence([seed, chunk]).generate_state(1)[0])
    rng = np.random.default_rng(chunk_seed + 1)
    if empty:
        return photo_tensors(synthetic_empty(n, seed=chunk_seed), [None] * n, rng)
    photos = synthetic_numbers(n, seed=chunk_seed)
    return photo_tensors([p[0] for p in photos], [np.asarray(p[2]).reshape(-1, 5) for p in photos], rng)


def number_free_regions(photos: NumberSet, margin: float = 0.1) -> list[Image.Image]:
    """Parts of each photo that hold no part of its number: the window-search windows
    (`read.SEARCH_WINDOWS`) clear of it, and the strips left, right, above and below it (kept
    `margin` of the number's size away): what the reader is shown when it searches an unsure
    photo in the wrong place."""
    from housenum.read import MIN_SIDE, SEARCH_SIZE, SEARCH_WINDOWS

    out = []
    for i, rows in enumerate(photos.boxes):
        if rows is None or len(rows) == 0:
            continue
        image = photos.image(i)
        image = Image.fromarray(image) if isinstance(image, np.ndarray) else image
        width, height = image.size
        left, top, right, bottom = number_box(np.asarray(rows))
        mx, my = margin * (right - left), margin * (bottom - top)
        regions = [(int(fx * width), int(fy * height), int((fx + SEARCH_SIZE) * width),
                    int((fy + SEARCH_SIZE) * height)) for fx, fy in SEARCH_WINDOWS]
        regions += [(0, 0, int(left - mx), height), (int(right + mx) + 1, 0, width, height),
                    (0, 0, width, int(top - my)), (0, int(bottom + my) + 1, width, height)]
        for wl, wt, wr, wb in regions:
            clear = wr <= left - mx or wl >= right + mx or wb <= top - my or wt >= bottom + my
            if clear and min(wr - wl, wb - wt) >= 2 * MIN_SIDE:
                out.append(image.crop((wl, wt, wr, wb)))
    return out


def scenery(regions: list[Image.Image]) -> list[Image.Image]:
    """The number-free regions no taller than wide (squeezed into the localiser's 1:2 view, taller
    ones would be smeared flat): what lies beyond the edge of a loosely framed photo."""
    return [r for r in regions if r.width >= r.height]


def hard_negatives(localizer: torch.nn.Module, reader: torch.nn.Module, images: list,
                   device: torch.device | str = "cpu", skip_above: float | None = None,
                   batch_size: int = 256) -> PhotoTensors:
    """"No number" examples where a localiser looks: in images without a number, the context crops
    at the boxes of its first and second look (the two crops `NumberReader` reads). Random crops
    of walls teach the reader little about the most number-like clutter, which is what a good
    localiser points at in a photo without a number.

    `skip_above`: leave out images the networks read as a number this sure; in parts of real photos
    away from the labelled number these are mostly real digits the label leaves out (a neighbour's
    number), not clutter."""
    from housenum.read import NumberReader, decode

    nets = NumberReader.from_modules(localizer.eval(), reader.eval(), device=device)
    parts = []
    for start in range(0, len(images), batch_size):
        chunk = [Image.fromarray(x) if isinstance(x, np.ndarray) else x for x in images[start:start + batch_size]]
        first, second = nets.locate(chunk)
        if skip_above is not None:
            readings = decode(nets.read_at(chunk, second, first), [c.size for c in chunk])
            keep = [i for i, r in enumerate(readings) if r.number is None or r.confidence < skip_above]
            chunk, first, second = [chunk[i] for i in keep], first[keep], second[keep]
        if not chunk:
            continue
        views = photo_tensors(chunk, [None] * len(chunk), np.random.default_rng(start))
        for boxes in (first, second):
            context = _nchw(np.stack([context_crop(img, tuple(b)) for img, b in zip(chunk, boxes)]))
            parts.append(dataclasses.replace(views, context=context))
    return PhotoTensors.cat(parts) if parts else photo_tensors([], [], np.random.default_rng(0))


def split_photos(photos: NumberSet, cfg: ReaderTrainConfig) -> tuple[NumberSet, NumberSet, NumberSet | None]:
    """(train, validation, held-out test): test by name pattern, validation by a hash of the name."""
    import fnmatch

    names = photos.names
    held = np.array([cfg.holdout is not None and fnmatch.fnmatch(n, cfg.holdout) for n in names])
    if cfg.fold is None:
        is_val = source_fold(np.array(names), 1000, salt="reader-val") < round(cfg.val_fraction * 1000)
    else:
        is_val = source_fold(np.array(names), cfg.n_folds, salt="reader-cv") == cfg.fold
    is_val &= ~held
    train = photos.subset(np.flatnonzero(~held & ~is_val))
    val = photos.subset(np.flatnonzero(is_val))
    test = photos.subset(np.flatnonzero(held)) if held.any() else None
    return train, val, test


# --- Batched augmentation -------------------------------------------------------------------------


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _colour(x: torch.Tensor, cfg: ReaderTrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Contrast/brightness jitter, sometimes inverted or grey: per image, whole batch at once."""
    n, device = x.shape[0], x.device
    contrast = _uniform(n, 1 - cfg.jitter, 1 + cfg.jitter, gen).view(n, 1, 1, 1).to(device)
    brightness = _uniform(n, -cfg.jitter / 2, cfg.jitter / 2, gen).view(n, 1, 1, 1).to(device)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean + brightness
    invert = (torch.rand(n, generator=gen) < cfg.p_invert).view(n, 1, 1, 1).to(device)
    x = torch.where(invert, 1 - x, x)
    grey = (torch.rand(n, generator=gen) < 0.2).view(n, 1, 1, 1).to(device)
    x = torch.where(grey, x.mean(dim=1, keepdim=True).expand_as(x), x)
    return x.clamp_(0, 1)


def localizer_batch(data: PhotoTensors, idx: torch.Tensor, cfg: ReaderTrainConfig, gen: torch.Generator,
                    backdrop: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Zoomed, shifted, mirrored whole-photo views and their targets (cx, cy, log w, log h).

    Where a view reaches past the photo's edge it shows the edge smeared outwards, or, with
    `backdrop` (M, 3, 64, 128) uint8, a random one of those views: real scenery around the photo,
    as a loosely framed photo has, rather than a smear that tells where the photo (and so the
    number) is."""
    x = data.loc[idx.to(data.loc.device)].float().div_(255)
    box = data.loc_box[idx].clone()
    n = len(idx)
    zoom = _uniform(n, math.log(cfg.loc_zoom[0]), math.log(cfg.loc_zoom[1]), gen).exp()
    # keep the number inside the view: shift only as far as the zoom allows
    tx, ty = (_uniform(n, -cfg.loc_shift, cfg.loc_shift, gen) for _ in range(2))
    flip = torch.rand(n, generator=gen) < 0.5
    sign = torch.where(flip, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = sign / zoom
    theta[:, 1, 1] = 1 / zoom
    theta[:, 0, 2] = 2 * tx
    theta[:, 1, 2] = 2 * ty
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    if backdrop is None:
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    else:
        inside = F.grid_sample(torch.ones_like(x[:, :1]), grid, mode="bilinear", padding_mode="zeros",
                               align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        pick = torch.randint(len(backdrop), (n,), generator=gen).to(backdrop.device)
        x = x + (1 - inside) * backdrop[pick].float().div_(255)
    # a view point u maps to photo point theta @ u, so a photo point p is seen at (p - t) / scale
    u = box * 2 - 1                                   # (l, t, r, b) in [-1, 1]
    ux = (u[:, [0, 2]] - 2 * tx[:, None]) * zoom[:, None] * sign[:, None]
    uy = (u[:, [1, 3]] - 2 * ty[:, None]) * zoom[:, None]
    ux = ux.sort(dim=1).values
    left, right = ((ux + 1) / 2).unbind(1)
    top, bottom = ((uy + 1) / 2).unbind(1)
    target = torch.stack([(left + right) / 2, (top + bottom) / 2,
                          (right - left).clamp_min(1e-3).log(), (bottom - top).clamp_min(1e-3).log()], 1)
    return _colour(x, cfg, gen), target


def reader_batch(data: PhotoTensors, idx: torch.Tensor, cfg: ReaderTrainConfig, gen: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Crops re-cut from the context with random expansion and offset; targets follow the crop."""
    n = len(idx)
    context = data.context[idx.to(data.context.device)].float().div_(255)
    base = _uniform(n, *cfg.expand, gen)
    aspect = _uniform(n, -0.1, 0.1, gen)
    expand = torch.stack([base * (1 + aspect), base * (1 - aspect)], 1)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * cfg.shift
    theta = crop_theta(expand, shift)
    x = reader_crops(context, theta.to(context.device))
    boxes = data.digit_boxes[idx].clone()
    scale = theta[:, None, :, 0:2].diagonal(dim1=-2, dim2=-1)   # (n, 1, 2)
    offset = theta[:, None, :, 2]
    boxes[..., :2] = ((boxes[..., :2] - offset) / scale + 1) / 2
    boxes[..., 2:] = boxes[..., 2:] / scale / 2
    return _colour(x, cfg, gen), data.length[idx], data.digits[idx], boxes


def reader_loss(out: torch.Tensor, length: torch.Tensor, digits: torch.Tensor, boxes: torch.Tensor,
                cfg: ReaderTrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, whole-number correct per item) for one reader batch, for either head."""
    if out.ndim == 3:
        return _ctc_loss(out, length, digits)
    p_len, p_dig, p_box = split_reader_output(out)
    loss = F.cross_entropy(p_len, length, label_smoothing=cfg.label_smoothing)
    loss = loss + F.cross_entropy(p_dig.reshape(-1, 10), digits.reshape(-1), ignore_index=-100,
                                  label_smoothing=cfg.label_smoothing) * (digits >= 0).float().mean() * MAX_DIGITS
    valid = (digits >= 0).unsqueeze(-1).float()
    loss = loss + cfg.box_weight * ((p_box - boxes).abs() * valid).sum() / valid.sum().clamp_min(1) / 4
    digit_ok = (p_dig.argmax(-1) == digits) | (digits < 0)
    correct = (p_len.argmax(1) == length) & digit_ok.all(1)
    return loss, correct


def _ctc_loss(out: torch.Tensor, length: torch.Tensor, digits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n, steps, _ = out.shape
    log_probs = out.log_softmax(2)
    loss = F.ctc_loss(log_probs.transpose(0, 1), digits.clamp_min(0), torch.full((n,), steps, dtype=torch.long),
                      length, blank=CTC_BLANK, zero_infinity=True)
    decoded = ctc_greedy(log_probs.argmax(2))
    truth = [tuple(d[:k].tolist()) for d, k in zip(digits, length)]
    return loss, torch.tensor([tuple(a) == b for a, b in zip(decoded, truth)])


# --- The loop -------------------------------------------------------------------------------------


class _EMA:
    """An exponential moving average of the weights (and a copy of the buffers)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay, self.model = decay, copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.pairs = (list(self.model.parameters()), list(model.parameters()))
        self.buffers = (list(self.model.buffers()), list(model.buffers()))

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.pairs[0], self.pairs[1], 1 - d)
        for e, b in zip(*self.buffers):
            e.copy_(b)


@dataclass
class ReaderTrainResult:
    run_dir: Path
    history: list[dict]
    best_val_acc: float
    train_seconds: float
    config: ReaderTrainConfig


def train_reader(cfg: ReaderTrainConfig, run_dir: str | Path, *, photos: NumberSet | None = None,
                 real: PhotoTensors | None = None, synthetic: PhotoTensors | None = None,
                 cache: Path | None = None, progress: Callable[[str], None] | bool | None = None,
                 on_epoch: Callable[[dict], None] | None = None, resume: bool = False) -> ReaderTrainResult:
    """Train localiser and reader together and write the run folder: best.pt (best validation
    whole-number accuracy; the last epoch when there is no validation), last.pt, config.json,
    history.csv, curves.png.

    `photos` replaces loading `cfg.data`; `real` / `synthetic` give training tensors made already
    (`real` then means no validation photos are needed). `resume` continues the run in `run_dir`
    from its last.pt with the run's own config (only `cfg.device` and `cfg.threads` are taken), the
    same steps as a run straight through: it rebuilds the run's data as the run did, then restores
    the weights, the optimiser and the random generators.
    """
    from housenum.read import NumberReader
    from housenum.devices import pick_device
    from housenum.train import use_bf16

    run_dir = Path(run_dir)
    resumed = _resumable(run_dir) if resume else None
    if resumed is not None:
        cfg = dataclasses.replace(ReaderTrainConfig.from_dict(resumed["config"]), device=cfg.device,
                                  threads=cfg.threads)
    cfg.check()
    if resumed is None and (photos is not None or real is not None):   # config.json must not claim cfg.data
        cfg = dataclasses.replace(cfg, data=f"{GIVEN_PHOTOS}: {photos.name if photos is not None else 'tensors'}")
    elif resumed is not None and cfg.data.startswith(GIVEN_PHOTOS) and photos is None and real is None:
        raise ModelError(f"{run_dir}: this run trained on {cfg.data[len(GIVEN_PHOTOS) + 2:]} given in Python "
                         "(train_reader(photos=...)), which --resume cannot load: resume it from Python the same way")
    device = pick_device(cfg.device)
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    torch.manual_seed(cfg.seed)
    say = progress if callable(progress) else _say_on_stderr if progress else (lambda _: None)
    if cfg.init:   # read before the data, which can take minutes to build, so a wrong --init is refused at once
        from housenum.read import build_nets, read_reader_checkpoint, reader_checkpoint_path

        init_path = reader_checkpoint_path(cfg.init, option="--init")
        init_state = read_reader_checkpoint(init_path)
        init_localizer, init_reader = build_nets(init_state, init_path)

    val_set = train_set = None
    if real is None:
        photos = photos if photos is not None else load_numbers(cfg.data, default_split="train")
        train_set, val_set, _ = split_photos(photos, cfg)
        short = [i for i, rows in enumerate(train_set.boxes) if rows is None or len(rows) <= MAX_DIGITS]
        if len(short) < len(train_set):   # cut to 5 digits they would teach a box that leaves digits out
            say(f"{len(train_set) - len(short)} training photos hold more than {MAX_DIGITS} digits, more than "
                "the reader reads: left out")
            train_set = train_set.subset(short)
        if len(train_set) == 0:
            raise ModelError(f"{cfg.data}: no photos left for training after the held-out split")
        if len(val_set) == 0 and (cfg.val_fraction > 0 or cfg.fold is not None):   # best.pt would mean nothing
            asked = f"--fold {cfg.fold}" if cfg.fold is not None else f"--val-fraction {cfg.val_fraction}"
            raise ModelError(f"{asked} leaves no validation photos of the {len(train_set)}: give more photos, or "
                             "--val-fraction 0 to train on all and keep the last epoch")
        say(f"photos: {len(train_set)} train, {len(val_set)} validation")
        real = real_tensors(train_set)
    if synthetic is None and (cfg.synthetic or cfg.synthetic_empty):
        if cache is None:
            from housenum.data.download import cache_dir

            cache = cache_dir() / "reader"
        say(f"synthetic photos: {cfg.synthetic} with numbers, {cfg.synthetic_empty} without")
        synthetic = synthetic_tensors(cfg.synthetic, cfg.synthetic_empty, cfg.synthetic_seed, cache, cfg.workers)
    arch = ReaderArch.from_dict(cfg.arch)
    localizer, reader = create_localizer(arch), create_reader(arch)
    if cfg.init:
        reader = init_reader
        if cfg.new_localizer:
            loc_fields = {k: v for k, v in arch.as_dict().items() if k.startswith("loc_")}
            arch = ReaderArch.from_dict({**init_state["arch"], **loc_fields})
        else:
            arch, localizer = ReaderArch.from_dict(init_state["arch"]), init_localizer
        if arch.as_dict() != ReaderArch.from_dict(cfg.arch).as_dict():   # config.json states what trains
            say("architecture: the --init run's" + (" reader, with --arch's new localiser" if cfg.new_localizer
                                                    else " (--arch shapes only a --new-localizer)"))
            cfg = dataclasses.replace(cfg, arch=arch.as_dict())
    localizer = localizer.to(device, memory_format=torch.channels_last)
    reader = reader.to(device, memory_format=torch.channels_last)

    pools = [real] + ([synthetic] if synthetic is not None and len(synthetic) else [])
    n_neg = 0
    backdrop_wanted = cfg.loc_backdrop == "scenery" and not cfg.reader_only
    regions = number_free_regions(train_set) if train_set is not None and (cfg.hard_negatives or backdrop_wanted) \
        else []
    if cfg.hard_negatives:
        from housenum.data.synthetic import synthetic_empty

        # seeded apart from the synthetic pool and from the benchmark's walls (seed 777)
        walls = synthetic_empty(cfg.hard_negatives, seed=10_000 + cfg.synthetic_seed)
        mined = [hard_negatives(localizer, reader, walls, device)]
        if regions:
            mined.append(hard_negatives(localizer, reader, regions, device, skip_above=HARD_NEGATIVE_SKIP))
        negatives = PhotoTensors.cat(mined)
        say(f"hard negatives: {len(negatives)} crops from {len(walls)} synthetic walls and "
            f"{len(regions)} number-free parts of the training photos")
        if len(negatives):
            pools.append(negatives)
            n_neg = max(1, round(cfg.batch_size * cfg.negative_fraction))
    backdrop = None
    if backdrop_wanted:
        views = [localizer_view(r) for r in scenery(regions)]
        if not views:
            raise ModelError("--loc-backdrop scenery needs real training photos with number-free parts")
        backdrop = _nchw(np.stack(views)).to(device)
        say(f"localiser backdrops: {len(views)} number-free parts of the training photos")
    for pool in pools:  # the pixels live on the device; targets stay on the CPU with the sampler
        pool.loc, pool.context = pool.loc.to(device), pool.context.to(device)
    has_box = [torch.nonzero(~p.loc_box[:, 0].isnan()).flatten() for p in pools]
    # a box localiser learns only from photos with a number; a heatmap one also learns an empty map
    loc_rows = [torch.arange(len(p)) if arch.loc_head == "heatmap" else i for p, i in zip(pools, has_box)]
    params = ([] if cfg.reader_only else list(localizer.parameters())) + \
        ([] if cfg.localizer_only else list(reader.parameters()))
    optimizer = torch.optim.AdamW([{"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
                                   {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}], lr=cfg.lr)
    has_synthetic = synthetic is not None and len(synthetic) > 0
    counts = batch_shares(cfg.batch_size, cfg.real_fraction, n_neg, has_synthetic)
    n_real = counts[0]
    steps_per_epoch = math.ceil(len(real) / n_real)
    total_steps = cfg.epochs * steps_per_epoch
    ema_loc, ema_read = _EMA(localizer, cfg.ema), _EMA(reader, cfg.ema)
    gen = torch.Generator().manual_seed(cfg.seed)
    amp = use_bf16(device, cfg.precision)

    history: list[dict] = []
    best, elapsed, step, start_epoch, wall = -1.0, 0.0, 0, 0, 0.0
    if resumed is not None:
        training = resumed["training"]
        localizer.load_state_dict(training["localizer"])
        reader.load_state_dict(training["reader"])
        ema_loc.model.load_state_dict(resumed["localizer_state"])
        ema_read.model.load_state_dict(resumed["reader_state"])
        optimizer.load_state_dict(training["optimizer"])
        gen.set_state(training["generator"])
        torch.set_rng_state(training["torch_rng"])
        history, best, elapsed = resumed["history"], resumed["best_val_acc"], resumed["train_seconds"]
        step, start_epoch, wall = training["step"], resumed["epoch"], training["wall_seconds"]
        say(f"resuming after epoch {start_epoch} of {cfg.epochs} (step {step})")

    run_dir.mkdir(parents=True, exist_ok=True)
    if resumed is not None:
        write_text(run_dir / "config.json", json.dumps(asdict(cfg), indent=2) + "\n")
    sums = {k: torch.zeros((), device=device) for k in ("loss", "loc_loss", "acc")}
    start, out_of_time = time.perf_counter() - wall, False   # a budget in minutes counts the time before a resume
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        localizer.train(not cfg.reader_only)
        reader.train(not cfg.localizer_only)
        for _ in range(steps_per_epoch):
            progress = step / total_steps
            if cfg.minutes:
                progress = max(progress, (time.perf_counter() - start) / (60 * cfg.minutes))
            if progress >= 1:
                out_of_time = True
                break
            for group in optimizer.param_groups:
                group["lr"] = one_cycle_lr(progress, cfg.lr)
            parts = [(k, torch.randint(len(pools[k]), (n,), generator=gen)) for k, n in enumerate(counts) if n]
            loc_loss = torch.zeros((), device=device)
            # a box localiser has nothing to learn from a pool without numbers (walls, mined negatives);
            # none drawn at all under reader_only, so its random stream stays the recipe's
            loc_parts = [] if cfg.reader_only else [
                (k, loc_rows[k][torch.randint(len(loc_rows[k]), (len(i),), generator=gen)])
                for k, i in parts if len(loc_rows[k])]
            if loc_parts:
                loc_batches = [localizer_batch(pools[k], i, cfg, gen, backdrop) for k, i in loc_parts]
                lx = torch.cat([b[0] for b in loc_batches]).contiguous(memory_format=torch.channels_last)
                lt = torch.cat([b[1] for b in loc_batches]).to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    loc_out = localizer(lx)
                if loc_out.ndim == 4:   # a heatmap localiser's maps
                    loc_loss = heatmap_loss(loc_out, lt)
                else:
                    loc_loss = F.smooth_l1_loss(loc_out.float(), lt, beta=0.05)
            loss, correct = torch.zeros((), device=device), torch.zeros(n_real, dtype=torch.bool)
            if not cfg.localizer_only:
                batches = [reader_batch(pools[k], i, cfg, gen) for k, i in parts]
                x = torch.cat([b[0] for b in batches]).contiguous(memory_format=torch.channels_last)
                length, digits, boxes = (torch.cat([b[j] for b in batches]).to(device) for j in (1, 2, 3))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    out = reader(x)
                loss, correct = reader_loss(out.float(), length, digits, boxes, cfg)
            optimizer.zero_grad(set_to_none=True)
            (loss + loc_loss).backward()
            optimizer.step()
            step += 1
            ema_loc.update(step)
            ema_read.update(step)
            sums["loss"] += loss.detach()   # stays on the device: no sync per step
            sums["loc_loss"] += loc_loss.detach()
            sums["acc"] += correct[:n_real].float().mean().to(device)
        elapsed += time.perf_counter() - t0
        if (epoch + 1) % cfg.eval_every and epoch + 1 != cfg.epochs and not out_of_time:
            continue
        steps = max(1, step - (history[-1]["step"] if history else 0))
        mean = {k: v.item() / steps for k, v in sums.items()}
        for key in ("loss", "acc") if cfg.localizer_only else ("loc_loss",) if cfg.reader_only else ():
            mean[key] = float("nan")   # not trained in this run: no figure, rather than a 0.0 that reads as perfect
        row = {"epoch": epoch + 1, "step": step, **mean, "val_loss": float("nan"), "val_acc": float("nan"),
               "val_iou": float("nan"), "seconds": round(elapsed, 1), "lr": optimizer.param_groups[0]["lr"]}
        sums = {k: torch.zeros((), device=device) for k in sums}
        if val_set is not None and len(val_set):
            val = NumberReader.from_modules(ema_loc.model, ema_read.model, device=device).evaluate(val_set)
            row.update(val_loss=val["reader_loss"], val_acc=val["accuracy"], val_iou=val["mean_iou"])
        history.append(row)
        say(epoch_line(row, cfg.epochs))
        state = {"kind": READER_FORMAT, "config": asdict(cfg), "arch": arch.as_dict(),
                 "localizer_state": _cpu(ema_loc.model.state_dict()), "reader_state": _cpu(ema_read.model.state_dict()),
                 "epoch": epoch + 1, "history": history, "train_seconds": elapsed,
                 "photos": {"train": len(real), "validation": len(val_set) if val_set is not None else 0}}
        if resumed is None and len(history) == 1:   # only now does a new run replace the folder's old one
            clear_old_run(run_dir)
            write_text(run_dir / "config.json", json.dumps(asdict(cfg), indent=2) + "\n")
        score = row["val_acc"] if not math.isnan(row["val_acc"]) else epoch
        if score > best:
            best = score
            save_checkpoint(run_dir / "best.pt", {**state, "best_val_acc": row["val_acc"]})
        # last.pt alone also holds what resuming needs: the raw weights the EMA follows, the optimiser, the generators
        training = {"localizer": _cpu(localizer.state_dict()), "reader": _cpu(reader.state_dict()),
                    "optimizer": optimizer.state_dict(), "generator": gen.get_state(),
                    "torch_rng": torch.get_rng_state(), "step": step, "wall_seconds": time.perf_counter() - start,
                    "finished": out_of_time or epoch + 1 == cfg.epochs}
        save_checkpoint(run_dir / "last.pt", {**state, "best_val_acc": best, "training": training})
        _write_history(run_dir, history)
        if on_epoch is not None:
            on_epoch(row)
        if out_of_time:
            say(f"time budget of {cfg.minutes} min reached after {step} steps")
            break
    best_acc = max((r["val_acc"] for r in history if not math.isnan(r["val_acc"])), default=float("nan"))
    return ReaderTrainResult(run_dir, history, best_acc, elapsed, cfg)


def epoch_line(row: dict, epochs: int) -> str:
    """An epoch's figures in one line, leaving out those of parts the run does not train."""
    figures = [("loss", "loss", ".3f"), ("loc", "loc_loss", ".4f"), ("acc", "acc", ".3f"),
               ("val_acc", "val_acc", ".4f"), ("val_iou", "val_iou", ".3f")]
    shown = " ".join(f"{name} {row[key]:{form}}" for name, key, form in figures
                     if not (math.isnan(row[key]) and key in ("loss", "loc_loss", "acc")))
    return f"epoch {row['epoch']}/{epochs}: {shown} {row['seconds']:.0f}s"


def _resumable(run_dir: Path) -> dict:
    from housenum.read import read_reader_checkpoint

    last = run_dir / "last.pt"
    if not last.exists():
        raise ModelError(f"{run_dir}: no last.pt to resume (was the run stopped before its first checkpoint?)")
    state = read_reader_checkpoint(last)
    if "training" not in state:
        raise ModelError(f"{last}: saved before train-reader could resume (no optimiser state in it); "
                         f"start a new run from its weights with --init {run_dir}")
    if state["training"]["finished"]:
        raise ModelError(f"{run_dir}: the run finished (epoch {state['epoch']} of {state['config']['epochs']}, "
                         f"or its time budget); nothing to resume. A longer run can start from it with --init")
    return state


def one_cycle_lr(progress: float, peak: float, warmup: float = 0.2) -> float:
    """The learning rate at `progress` (0..1) of a one-cycle schedule: cosine from peak/25 up to
    the peak over `warmup`, then cosine down to peak/250000 (torch's OneCycleLR shape). Written
    here because OneCycleLR needs the step count up front, and a wall-clock budget does not know it."""
    low, final = peak / 25, peak / 25 / 1e4
    if progress < warmup:
        return low + (peak - low) * (1 - math.cos(math.pi * progress / warmup)) / 2
    return final + (peak - final) * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup))) / 2


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu() for k, v in state.items()}


def _write_history(run_dir: Path, history: list[dict]) -> None:
    with atomic_open(run_dir / "history.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    plots.save(plots.reader_curves(history, "reader: per epoch"), run_dir / "curves.png")


# --- Shipping -------------------------------------------------------------------------------------


def ship_reader(checkpoint: str | Path, dest: str | Path, card: dict, onnx: bool = True) -> list[Path]:
    """Write a trained reader for use: `dest` (.pt, weights stored as float16 to halve the size,
    with the model card's name, summary and figures) and, with `onnx`, `dest`'s `.loc.onnx` and
    `.read.onnx` beside it (float32, run by ONNX Runtime)."""
    from housenum.read import ONNX_SUFFIXES, build_nets, read_reader_checkpoint

    checkpoint, dest = Path(checkpoint), Path(dest)
    state = read_reader_checkpoint(checkpoint)
    half = {k: {n: t.half() if t.is_floating_point() else t for n, t in state[k].items()}
            for k in ("localizer_state", "reader_state")}
    shipped = {"kind": READER_FORMAT, "config": state["config"], "arch": state["arch"], **half,
               "card": card, "epoch": state.get("epoch"), "history": state.get("history", [])}
    save_checkpoint(dest, shipped)
    written = [dest]
    if onnx:
        from housenum.models.reader import CONTEXT_SIZE, LOC_SIZE, ReaderFromContext

        # export what will be run: the float16-rounded weights, back in float32
        localizer, reader = build_nets(read_reader_checkpoint(dest), dest)
        for net, shape, suffix in ((localizer, (1, 3, *LOC_SIZE), ONNX_SUFFIXES[0]),
                                   (ReaderFromContext(reader).eval(), (1, 3, CONTEXT_SIZE, CONTEXT_SIZE),
                                    ONNX_SUFFIXES[1])):
            path = dest.with_name(dest.stem + suffix)
            with atomic_path(path) as tmp:
                torch.onnx.export(net, (torch.rand(shape),), str(tmp), input_names=["x"], output_names=["y"],
                                  dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)
            written.append(path)
    for path in written:
        path.chmod(0o644)  # package data: atomic_path's temporary files are created 0600
    return written
