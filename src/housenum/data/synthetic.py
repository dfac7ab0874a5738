"""Synthetic SVHN-like data, built offline: 32x32 digit crops and whole house-number photos.

Digit crops are made in batches: every digit of every font is rasterised once into a glyph cache,
and each crop samples that cache through its own random warp, so a crop costs numpy work only.
Whole photos vary in size, so they are drawn one at a time with PIL. Everything draws from one
`numpy.random.Generator` seeded by the caller: the same seed gives byte-identical output on the
same machine (the fonts found there are part of the recipe).
"""

from __future__ import annotations

import functools
import glob
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from housenum.data.digits import DigitSet
from housenum.errors import DataFormatError

# --- Fonts ---------------------------------------------------------------------------------------

FONT_GLOBS = (
    "/usr/share/fonts/truetype/dejavu/*.ttf",
    "/usr/share/fonts/truetype/liberation/*.ttf",
    "/usr/share/fonts/truetype/liberation2/*.ttf",
    "/usr/share/fonts/truetype/freefont/*.ttf",
    "/usr/share/fonts/truetype/msttcorefonts/*.ttf",
)
SKIP_FONT_WORDS = ("math", "symbol", "emoji")  # fonts whose "digits" are not house-number shapes
LETTERS = "ACEFHKMNPRTUVWXYacdefhkmnprtuvwxy"  # clutter letters that do not look like digits

FontLike = ImageFont.FreeTypeFont | ImageFont.ImageFont


@functools.cache
def font_paths() -> tuple[str, ...]:
    """TrueType fonts found on this machine, sorted; empty on a bare machine (PIL's default is used)."""
    found = {p for pattern in FONT_GLOBS for p in glob.glob(pattern)}
    return tuple(sorted(p for p in found if not any(w in p.lower() for w in SKIP_FONT_WORDS)))


@functools.cache
def _font(path: str | None, size: int) -> FontLike:
    """A font at `size` px; `path` None is PIL's built-in font, so a bare machine still works."""
    if path is None:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(path, size)


def _font_choices() -> tuple[str | None, ...]:
    return font_paths() or (None,)


# --- Digit crops: settings -----------------------------------------------------------------------


@dataclass(frozen=True)
class CropStyle:
    """The ranges synthetic digit crops are drawn from (sizes in output pixels of a 32x32 crop)."""

    height: tuple[float, float] = (0.5, 0.92)  # digit height / crop height, skewed to the top
    centre_jitter: float = 2.0  # the digit's centre moves up to this far from the crop centre
    rotation_deg: float = 10.0  # uniform in +-rotation_deg
    shear: float = 0.25  # italic slant, x shift per unit of height, clipped to +-shear
    stretch: tuple[float, float] = (0.7, 1.3)  # width / natural width (narrow and wide lettering)
    warp: float = 1.2  # smooth elastic displacement, px: std up to warp / 2 (hand-painted look)
    p_neighbour: float = 0.7  # chance of a neighbouring digit at each side
    gap: tuple[float, float] = (0.05, 0.45)  # space to a neighbour, as a fraction of digit height
    p_low_contrast: float = 0.2  # chance that foreground and background differ only a little
    p_plate: float = 0.35  # chance the crop shows the plate's edge and the wall beyond it
    p_frame: float = 0.5  # chance a plate has a painted frame
    p_shadow: float = 0.15  # chance of a drop shadow under the digits
    p_stripes: float = 0.15  # chance of siding/brick-like stripes in the background
    blur: tuple[float, float] = (0.3, 0.45)  # luma blur sigma: min + exponential(mean)
    max_blur: float = 2.0
    p_lowres: float = 0.4  # chance the crop was upscaled from a lower resolution
    lowres: tuple[int, int] = (11, 28)  # that resolution, pixels across
    noise: float = 7.0  # luma noise sigma, uniform in 0..noise (0..255 scale)


CROP_STYLE = CropStyle()
CROP = 32
CHUNK = 1024  # crops rendered per numpy batch: bounds memory, not part of the randomness
GLYPH_SIZE = 40  # glyph-cache font size: ~29 px digits, at least the 16-29 px they are drawn at


# --- Digit crops: glyph cache --------------------------------------------------------------------


@dataclass(frozen=True)
class _Glyphs:
    """Coverage of the digits 0..9 of every font variant in equal cells; index variant * 10 + digit.

    Each cell pixel holds its 2x2 neighbourhood (coverage 0..255, four uint8 packed in a uint32),
    so a bilinear lookup is a single gather. Cells have a zero border so sampling outside them
    reads zero.
    """

    quads: np.ndarray  # (K * H * W,) uint32
    cell: tuple[int, int]  # (H, W)
    centre_x: np.ndarray  # (K,) ink centre column
    centre_y: np.ndarray  # (K,) centre row of the variant's digit line (shared by its digits)
    width: np.ndarray  # (K,) ink width
    height: np.ndarray  # (K,) height of the variant's digit line (tallest digit)

    @property
    def n_variants(self) -> int:
        return len(self.width) // 10


def _render_digits(font: FontLike, stroke: int) -> list[np.ndarray]:
    size = 3 * GLYPH_SIZE
    out = []
    for digit in "0123456789":
        canvas = Image.new("L", (size, size), 0)
        ImageDraw.Draw(canvas).text(
            (GLYPH_SIZE, GLYPH_SIZE // 2),
            digit,
            fill=255,
            font=font,
            stroke_width=stroke,
            stroke_fill=255,
        )
        out.append(np.asarray(canvas, np.float32) / 255.0)
    return out


@functools.cache
def _glyph_cache() -> _Glyphs:
    """Render each font plain and faux-bold (stroked); skip fonts without real digit glyphs."""
    variants = []
    for path in _font_choices():
        font = _font(path, GLYPH_SIZE)
        for stroke in (0, 1):
            digits = _render_digits(font, stroke)
            if any(d.max() == 0 for d in digits) or np.array_equal(digits[0], digits[1]):
                break  # missing digits, or "tofu" boxes that are all the same
            variants.append(digits)
    rows, cols = [], []
    for digits in variants:
        line = np.flatnonzero(np.any(np.stack(digits) > 0, axis=(0, 2)))
        rows.append((line[0], line[-1] + 1))
        cols.append([np.flatnonzero(d.max(axis=0) > 0)[[0, -1]] + (0, 1) for d in digits])
    pad = 2
    cell_h = max(b - a for a, b in rows) + 2 * pad
    cell_w = max(b - a for c in cols for a, b in c) + 2 * pad
    n = 10 * len(variants)
    masks = np.zeros((n, cell_h, cell_w), np.float32)
    centre_x, centre_y, width, height = (np.zeros(n, np.float32) for _ in range(4))
    for v, (digits, (top, bottom), digit_cols) in enumerate(zip(variants, rows, cols, strict=True)):
        for d, (mask, (left, right)) in enumerate(zip(digits, digit_cols, strict=True)):
            k = 10 * v + d
            masks[k, pad : pad + bottom - top, pad : pad + right - left] = mask[
                top:bottom, left:right
            ]
            centre_x[k] = pad + (right - left) / 2
            centre_y[k] = pad + (bottom - top) / 2
            width[k] = right - left
            height[k] = bottom - top
    coverage = np.pad(np.rint(masks * 255).astype(np.uint8), ((0, 0), (0, 1), (0, 1)))
    quads = np.stack(
        [coverage[:, :-1, :-1], coverage[:, :-1, 1:], coverage[:, 1:, :-1], coverage[:, 1:, 1:]],
        axis=-1,
    )
    return _Glyphs(
        quads.reshape(-1, 4).view(np.uint32)[:, 0].copy(),
        (int(cell_h), int(cell_w)),
        centre_x,
        centre_y,
        width,
        height,
    )


def _sample(g: _Glyphs, k: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear coverage (0..1) of glyph k[i] at cell point (x[i, j], y[i, j]); outside reads 0."""
    h, w = g.cell
    x = np.clip(x, 0, w - 1.001)
    y = np.clip(y, 0, h - 1.001)
    x0 = x.astype(np.int32)
    y0 = y.astype(np.int32)
    fx = x - x0
    fy = y - y0
    quad = g.quads[(k * (h * w)).astype(np.int32)[:, None] + y0 * w + x0]
    q = quad.view(np.uint8).reshape(*quad.shape, 4).astype(np.float32) * np.float32(1 / 255)
    top = q[..., 0] + fx * (q[..., 1] - q[..., 0])
    bottom = q[..., 2] + fx * (q[..., 3] - q[..., 2])
    return top + fy * (bottom - top)


# --- Digit crops: colour and optics --------------------------------------------------------------

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# Tints: hue angles (0 red, 60 yellow, 120 green, 240 blue) weighted like painted walls and plates.
_HUES = np.array([20.0, 55.0, 120.0, 200.0, 235.0, 300.0])
_HUE_WEIGHTS = np.array([0.3, 0.15, 0.1, 0.15, 0.22, 0.08])
_RED_AXIS = np.array([1.0, -0.5, -0.5]) / np.sqrt(1.5)
_YELLOW_BLUE_AXIS = np.array([0.0, 1.0, -1.0]) / np.sqrt(2)
_V, _U = np.mgrid[0:CROP, 0:CROP].reshape(2, -1).astype(np.float32) + 0.5  # crop pixel centres


def _colours(
    rng: np.random.Generator, m: int, contrast_to: np.ndarray | None = None, p_low: float = 0.2
) -> np.ndarray:
    """m RGB colours (0..255): muted mostly, sometimes saturated.

    With `contrast_to` (m, 3) each colour's luma differs from that colour's by 45..190, or by only
    15..45 with probability `p_low`.
    """
    if contrast_to is None:
        luma = rng.uniform(20, 235, m)
    else:
        ref = contrast_to @ _LUMA
        gap = np.where(rng.random(m) < p_low, rng.uniform(15, 45, m), rng.uniform(45, 190, m))
        up = np.where(ref + gap > 250, False, np.where(ref - gap < 5, True, rng.random(m) < 0.5))
        luma = np.clip(np.where(up, ref + gap, ref - gap), 5, 250)
    hue = np.deg2rad(rng.choice(_HUES, m, p=_HUE_WEIGHTS) + rng.normal(0, 15, m))
    tint = np.cos(hue)[:, None] * _RED_AXIS + np.sin(hue)[:, None] * _YELLOW_BLUE_AXIS
    saturation = np.where(rng.random(m) < 0.12, rng.uniform(35, 90, m), rng.exponential(12, m))
    return np.clip(luma[:, None] + tint * saturation[:, None], 0, 255).astype(np.float32)


def _upsample_matrix(small: int, size: int) -> np.ndarray:
    """(size, small) bilinear interpolation matrix, pixel centres aligned."""
    pos = np.clip((np.arange(size) + 0.5) * small / size - 0.5, 0, small - 1)
    return np.clip(1 - np.abs(pos[:, None] - np.arange(small)[None, :]), 0, None).astype(np.float32)


def _smooth_field(
    rng: np.random.Generator, m: int, channels: int, scale: np.ndarray, grid: int = 4
) -> np.ndarray:
    """(m, CROP, CROP, channels) smooth random fields, std `scale` (m,), from a coarse grid."""
    up = _upsample_matrix(grid, CROP)
    coarse = rng.normal(size=(m, grid, grid, channels)).astype(np.float32)
    coarse *= scale.astype(np.float32)[:, None, None, None]
    rows = (up @ coarse.reshape(m, grid, grid * channels)).reshape(m, CROP, grid, channels)
    return np.tensordot(rows, up, axes=([2], [1])).transpose(0, 1, 3, 2)


def _resample_matrices(sigma: np.ndarray, resolution: np.ndarray) -> np.ndarray:
    """(m, CROP, CROP) linear maps: area-downsample to `resolution` px, upsample back, blur by sigma.

    Applied to rows and to columns, they imitate a crop cut from a small, soft photo.
    """
    px = np.arange(CROP, dtype=np.float32)
    d = px[None, :] - px[:, None]
    blur = np.exp(-0.5 * (d[None] / sigma[:, None, None]) ** 2).astype(np.float32)
    blur /= blur.sum(axis=2, keepdims=True)
    r = resolution.astype(np.float32)[:, None, None]
    low = px[None, :, None]  # low-resolution pixel index
    lo, hi = low * CROP / r, (low + 1) * CROP / r
    down = np.clip(
        np.minimum(hi, px[None, None, :] + 1) - np.maximum(lo, px[None, None, :]), 0, None
    )
    down *= (low < r) * r / CROP
    pos = np.clip((px[None, :, None] + 0.5) * r / CROP - 0.5, 0, r - 1)
    up = np.clip(1 - np.abs(pos - px[None, None, :]), 0, None) * (px[None, None, :] < r)
    return blur @ up.astype(np.float32) @ down.astype(np.float32)


SIGMA_STEP = 0.05  # blur sigmas are rounded to this so the optics maps can be tabulated
SIGMA_MAX = 4.0


@functools.cache
def _optics_table() -> np.ndarray:
    """(sigma bin, resolution 0..CROP) -> the map from `_resample_matrices`, built once."""
    sigma = np.arange(SIGMA_STEP, SIGMA_MAX + SIGMA_STEP / 2, SIGMA_STEP, dtype=np.float32)
    res = np.arange(1, CROP + 1)
    maps = _resample_matrices(np.repeat(sigma, len(res)), np.tile(res, len(sigma)))
    table = maps.reshape(len(sigma), len(res), CROP, CROP)
    return np.concatenate([table[:, :1], table], axis=1)  # resolution 0 is never used


def _optics(sigma: np.ndarray, resolution: np.ndarray) -> np.ndarray:
    i = np.clip(np.rint(sigma / SIGMA_STEP).astype(int) - 1, 0, round(SIGMA_MAX / SIGMA_STEP) - 1)
    return _optics_table()[i, resolution]


def _separable(maps: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Apply (m, S, S) maps to the rows and the columns of (m, S, S, C) images."""
    m, s, _, c = images.shape
    out = (maps @ images.reshape(m, s, s * c)).reshape(m, s, s, c).transpose(0, 2, 1, 3)
    out = (maps @ out.reshape(m, s, s * c)).reshape(m, s, s, c)
    return out.transpose(0, 2, 1, 3)


# --- Digit crops: rendering ----------------------------------------------------------------------


def _render_crops(labels: np.ndarray, rng: np.random.Generator, st: CropStyle) -> np.ndarray:
    g = _glyph_cache()
    m = len(labels)

    def uniform(lo: float, hi: float, shape: int | tuple[int, ...] = m) -> np.ndarray:
        return rng.uniform(lo, hi, shape).astype(np.float32)

    def chance(p: float) -> np.ndarray:
        return np.flatnonzero(rng.random(m) < p)

    # Geometry: output pixel -> text frame (output px, digit upright) -> glyph cell.
    variant = rng.integers(g.n_variants, size=m)
    centre_k = variant * 10 + labels
    digit_h = (st.height[0] + np.ptp(st.height) * rng.beta(2.2, 1.4, m)).astype(np.float32) * CROP
    per_px = g.height[centre_k] / digit_h  # glyph-cache pixels per output pixel
    theta = np.deg2rad(uniform(-st.rotation_deg, st.rotation_deg))
    shear = np.clip(rng.normal(0, st.shear / 2, m), -st.shear, st.shear).astype(np.float32)
    stretch = np.exp(uniform(*np.log(st.stretch)))
    centre = CROP / 2 + uniform(-st.centre_jitter, st.centre_jitter, (m, 2))
    warp = _smooth_field(rng, m, 2, uniform(0, st.warp / 2)).reshape(m, -1, 2)
    du = _U[None] - centre[:, :1] + warp[..., 0]
    dv = _V[None] - centre[:, 1:] + warp[..., 1]
    cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]
    tx, ty = cos * du + sin * dv, cos * dv - sin * du
    gx = (tx - shear[:, None] * ty) * (per_px / stretch)[:, None]
    gy = ty * per_px[:, None]
    mask = _sample(g, centre_k, gx + g.centre_x[centre_k, None], gy + g.centre_y[centre_k, None])
    gap = uniform(*st.gap) * g.height[centre_k]
    for sign in (-1, 1):
        has = chance(st.p_neighbour)
        k = variant[has] * 10 + rng.integers(10, size=len(has))
        offset = sign * ((g.width[centre_k[has]] + g.width[k]) / 2 + gap[has]) - g.centre_x[k]
        side = _sample(g, k, gx[has] - offset[:, None], gy[has] + g.centre_y[k, None])
        mask[has] = np.maximum(mask[has], side)
    mask = mask.reshape(m, CROP, CROP, 1)

    # Colours and surfaces.
    back = _colours(rng, m)
    fore = _colours(rng, m, back, st.p_low_contrast)[:, None, None, :]
    texture = _smooth_field(rng, m, 3, rng.exponential(6, m).astype(np.float32), grid=5)
    image = back[:, None, None, :] + texture
    striped = chance(st.p_stripes)
    phi = uniform(0, np.pi, len(striped))[:, None]
    wave = np.sin(
        uniform(0.3, 1.3, len(striped))[:, None] * (np.cos(phi) * _U + np.sin(phi) * _V)
        + uniform(0, 6.3, len(striped))[:, None]
    )
    image[striped] += (uniform(5, 25, len(striped))[:, None] * wave).reshape(-1, CROP, CROP, 1)
    shaded = chance(st.p_shadow)
    image[shaded] *= 1 - 0.65 * np.roll(mask[shaded], (1, 1), axis=(1, 2))
    image += (fore + 0.5 * texture - image) * mask

    # Plate edge: outside a rectangle around the digit line lies the wall; sometimes a frame.
    plate = chance(st.p_plate)
    half_h = (digit_h[plate] / 2 + uniform(1, 7, len(plate)))[:, None]
    half_w = (uniform(0.5, 1.8, len(plate)) * digit_h[plate])[:, None]
    frame_w = np.where(rng.random(len(plate)) < st.p_frame, uniform(1, 2.5, len(plate)), 0)[:, None]
    ax, ay = np.abs(tx[plate]), np.abs(ty[plate])
    inside = np.clip(half_w - ax + 0.5, 0, 1) * np.clip(half_h - ay + 0.5, 0, 1)
    inner = np.clip(half_w - frame_w - ax + 0.5, 0, 1) * np.clip(half_h - frame_w - ay + 0.5, 0, 1)
    wall = _colours(rng, len(plate), back[plate], 0.3)[:, None, None, :] + texture[plate]
    framed = image[plate] + (fore[plate] - image[plate]) * (inside - inner).reshape(
        -1, CROP, CROP, 1
    )
    image[plate] = wall + (framed - wall) * inside.reshape(-1, CROP, CROP, 1)

    # Light, optics, noise.
    slope, angle = uniform(-0.4, 0.4)[:, None], uniform(0, 2 * np.pi)[:, None]
    light = 1 + slope * (np.cos(angle) * (_U - CROP / 2) + np.sin(angle) * (_V - CROP / 2)) / CROP
    image *= light.reshape(m, CROP, CROP, 1)
    sigma = np.minimum(st.blur[0] + rng.exponential(st.blur[1], m), st.max_blur).astype(np.float32)
    res = np.where(
        rng.random(m) < st.p_lowres, rng.integers(*st.lowres, size=m, endpoint=True), CROP
    )
    luma = image @ _LUMA
    chroma = image - luma[..., None]
    image = _separable(_optics(sigma, res), luma[..., None])
    image = image + _separable(_optics(sigma + uniform(0.5, 1.5), res), chroma)
    image += (
        rng.standard_normal((m, CROP, CROP, 1), dtype=np.float32)
        * uniform(0, st.noise)[:, None, None, None]
    )
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def synthetic_digits(n: int, seed: int, style: CropStyle = CROP_STYLE) -> DigitSet:
    """n SVHN-like 32x32 RGB crops, labels 0..9 balanced; the same seed gives identical bytes."""
    if n < 0:
        raise DataFormatError(f"synthetic_digits needs n >= 0, got {n}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 10)
    images = np.empty((n, CROP, CROP, 3), np.uint8)
    for start in range(0, n, CHUNK):
        images[start : start + CHUNK] = _render_crops(labels[start : start + CHUNK], rng, style)
    return DigitSet(images, labels)


# --- Whole house-number photos -------------------------------------------------------------------

LENGTH_WEIGHTS = {1: 0.15, 2: 0.45, 3: 0.28, 4: 0.08, 5: 0.04}  # SVHN-like: mostly 2-3 digits
NumberBox = list[int]  # [left, top, width, height, digit], pixels, as in labels.json


def _scalar_colour(
    rng: np.random.Generator, contrast_to: np.ndarray | None = None, p_low: float = 0.15
) -> tuple[int, int, int]:
    ref = None if contrast_to is None else np.asarray(contrast_to, np.float32)[None]
    return tuple(int(c) for c in _colours(rng, 1, ref, p_low)[0])


def _image_size(rng: np.random.Generator, size_range: tuple[int, int]) -> tuple[int, int]:
    lo, hi = size_range
    if not 1 <= lo <= hi:
        raise DataFormatError(
            f"size_range must be (low, high) with 1 <= low <= high, got {size_range}"
        )
    aspect = np.clip(0.5 + 2.0 * rng.beta(2.5, 1.3), max(0.5, lo / hi), min(2.5, hi / lo))
    w_lo, w_hi = max(lo, lo * aspect), min(hi, hi * aspect)
    width = round(np.exp(rng.uniform(np.log(w_lo), np.log(w_hi))))
    height = int(np.clip(round(width / aspect), lo, hi))
    return width, height


def _wall(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A plain, brick, siding or tiled wall with stains and a light gradient."""
    base = np.array(_scalar_colour(rng), np.float32)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.broadcast_to(base, (height, width, 3)).copy()
    pattern = rng.choice(4, p=[0.4, 0.25, 0.2, 0.15])
    if pattern == 1:  # bricks: staggered rows, per-brick tone, mortar lines
        bh = rng.uniform(5, 18)
        bw = bh * rng.uniform(2, 3.5)
        row = np.floor(y / bh)
        col = np.floor((x + (row % 2) * bw / 2) / bw)
        tone = rng.normal(0, 12, 997)[((row * 131 + col) % 997).astype(int)]
        image += tone[..., None]
        mortar = ((y % bh) < 1.5) | (((x + (row % 2) * bw / 2) % bw) < 1.5)
        image[mortar] = np.array(_scalar_colour(rng, base, 0.5), np.float32)
    elif pattern == 2:  # siding: horizontal boards shaded across their width
        board = rng.uniform(4, 14)
        image += (((y % board) / board) * rng.uniform(10, 40) - 15)[..., None]
    elif pattern == 3:  # tiles or panels
        step = rng.uniform(8, 40)
        lines = ((x % step) < 1.2) | ((y % step) < 1.2)
        image[lines] *= rng.uniform(0.6, 0.9)
    amount = rng.exponential(8)  # stains and damp: mostly lightness, a little colour
    stain = rng.normal(0, amount, (4, 4, 1)) + rng.normal(0, 0.3 * amount, (4, 4, 3))
    stain = (stain + 128).clip(0, 255).astype(np.uint8)
    image += np.asarray(Image.fromarray(stain).resize((width, height), Image.BICUBIC), np.float32)
    image -= 128
    angle = rng.uniform(0, 2 * np.pi)
    slope = rng.uniform(-0.4, 0.4)
    image *= (1 + slope * (np.cos(angle) * (x / width - 0.5) + np.sin(angle) * (y / height - 0.5)))[
        ..., None
    ]
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def _clutter(rng: np.random.Generator, image: Image.Image) -> None:
    """Windows, frames, pipes, wires and blobs."""
    width, height = image.size
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(0, 7)):
        colour = _scalar_colour(rng)
        kind = rng.integers(4)
        x0, x1 = sorted(rng.uniform(-0.2, 1.2, 2) * width)
        y0, y1 = sorted(rng.uniform(-0.2, 1.2, 2) * height)
        line = int(rng.integers(1, max(2, min(width, height) // 15)))
        fill = colour if rng.random() < 0.5 else None
        if kind == 0:
            draw.rectangle((x0, y0, x1, y1), fill=fill, outline=colour, width=line)
        elif kind == 1:
            ends = (x0, y0, x1, y1) if rng.random() < 0.5 else (x0, y1, x1, y0)
            draw.line(ends, fill=colour, width=line)
        elif kind == 2:
            draw.ellipse((x0, y0, x1, y1), fill=fill, outline=colour, width=line)
        else:
            points = rng.uniform(-0.1, 1.1, (int(rng.integers(3, 6)), 2)) * (width, height)
            draw.polygon([tuple(p) for p in points], fill=colour)


def _letters(rng: np.random.Generator, image: Image.Image, avoid: tuple[float, ...] | None) -> None:
    """Sometimes a word of letters (a street name, a shop sign), kept clear of the number's box."""
    if rng.random() >= 0.3:
        return
    width, height = image.size
    text = "".join(rng.choice(list(LETTERS), int(rng.integers(1, 8))))
    font = _font(
        _font_choices()[rng.integers(len(_font_choices()))],
        int(rng.uniform(0.08, 0.3) * height) + 6,
    )
    position = (rng.uniform(-0.1, 0.9) * width, rng.uniform(-0.1, 0.9) * height)
    draw = ImageDraw.Draw(image)
    box = draw.textbbox(position, text, font=font)
    if (
        avoid is not None
        and max(box[0], avoid[0]) < min(box[2], avoid[2])
        and max(box[1], avoid[1]) < min(box[3], avoid[3])
    ):
        return
    draw.text(position, text, fill=_scalar_colour(rng), font=font)


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """3x3 matrix mapping the 4 points `src` to `dst`."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    return np.append(np.linalg.solve(np.array(rows), np.array(rhs)), 1).reshape(3, 3)


def _apply(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    p = np.c_[points, np.ones(len(points))] @ h.T
    return p[:, :2] / p[:, 2:]


def _number_masks(
    rng: np.random.Generator, digits: str, digit_h: float
) -> tuple[Image.Image, np.ndarray, bool]:
    """The number's shapes, colour-free: a 4-band layer (plate, frame, text with outline, text)
    and each digit's ink box in it. Colours are chosen once the layer's place is known."""
    path = _font_choices()[rng.integers(len(_font_choices()))]
    probe = _font(path, 64)
    probe_h = max(probe.getbbox(d)[3] - probe.getbbox(d)[1] for d in digits)
    size = max(6, round(64 * digit_h / max(probe_h, 1)))
    font = _font(path, size)
    bold = int(rng.random() < 0.25) * max(1, size // 25)
    outline = bold + int(rng.random() < 0.12) * max(1, size // 20)
    gap = rng.uniform(-0.02, 0.4) * digit_h
    ink = [font.getbbox(d, stroke_width=outline) for d in digits]
    widths = [b[2] - b[0] for b in ink]
    text_w = sum(widths) + gap * (len(digits) - 1)
    text_h = max(b[3] for b in ink) - min(b[1] for b in ink)
    jitter = rng.normal(0, 0.03 * digit_h, len(digits)) * (rng.random() < 0.3)
    on_plate = rng.random() < 0.6
    pad_x = rng.uniform(0.15, 0.7) * digit_h if on_plate else 2
    pad_y = rng.uniform(0.1, 0.45) * digit_h if on_plate else 2
    margin = 4
    layer_w = int(text_w + 2 * pad_x) + 2 * margin
    layer_h = int(text_h + 2 * pad_y + np.abs(jitter).max()) + 2 * margin
    bands = [Image.new("L", (layer_w, layer_h), 0) for _ in range(4)]
    if on_plate:
        box = (margin, margin, layer_w - margin - 1, layer_h - margin - 1)
        radius = int(rng.uniform(0, 0.4) * min(layer_w, layer_h) / 2)
        frame = int(rng.random() < 0.5) * max(1, int(rng.uniform(0.02, 0.08) * digit_h))
        ImageDraw.Draw(bands[0]).rounded_rectangle(box, radius, fill=255)
        if frame:
            ImageDraw.Draw(bands[1]).rounded_rectangle(box, radius, outline=255, width=frame)
    x = margin + pad_x
    top = margin + pad_y - min(b[1] for b in ink)
    boxes = []
    for digit, b, w, dy in zip(digits, ink, widths, jitter, strict=True):
        origin = (x - b[0], top + dy)
        ImageDraw.Draw(bands[2]).text(
            origin, digit, fill=255, font=font, stroke_width=outline, stroke_fill=255
        )
        ImageDraw.Draw(bands[3]).text(
            origin, digit, fill=255, font=font, stroke_width=bold, stroke_fill=255
        )
        boxes.append((origin[0] + b[0], origin[1] + b[1], origin[0] + b[2], origin[1] + b[3]))
        x += w + gap
    return Image.merge("CMYK", bands), np.array(boxes, np.float64), on_plate


def _place_number(
    rng: np.random.Generator, image: Image.Image, digits: str
) -> tuple[list[NumberBox], tuple[float, float, float, float]]:
    """Paint `digits` into `image` with a mild perspective warp.

    Returns the digit boxes and the number's bounding box (left, top, right, bottom).
    """
    width, height = image.size
    target_w = (0.1 + 0.5 * rng.beta(1.5, 2.5)) * width  # the number spans 10-60% of the width
    digit_h = min(target_w / (0.6 * len(digits) + 0.1 * (len(digits) - 1)), 0.6 * height)
    layer, ink, on_plate = _number_masks(rng, digits, max(digit_h, 7.0))
    lw, lh = layer.size
    src = np.array([[0, 0], [lw, 0], [lw, lh], [0, lh]], np.float64)
    theta = np.deg2rad(rng.uniform(-7, 7))
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    shear = np.array([[1, rng.normal(0, 0.08)], [rng.normal(0, 0.04), 1]])
    dst = (src - src.mean(0)) @ (rot @ shear).T
    dst += rng.uniform(-0.06, 0.06, (4, 2)) * (lw + lh) / 2  # perspective: corners move apart
    dst *= min(1.0, 0.98 * width / np.ptp(dst[:, 0]), 0.98 * height / np.ptp(dst[:, 1]))
    dst -= dst.min(0)
    dst += rng.uniform(0, 1, 2) * (width - dst[:, 0].max(), height - dst[:, 1].max())
    forward = _homography(src, dst)
    backward = (np.linalg.inv(forward) / np.linalg.inv(forward)[2, 2]).reshape(-1)[:8]
    warped = layer.transform(image.size, Image.PERSPECTIVE, tuple(backward), Image.BILINEAR)
    plate, frame, outlined, text = np.moveaxis(np.asarray(warped, np.float32) / 255, 2, 0)[
        ..., None
    ]

    pixels = np.asarray(image, np.float32)
    # Without a plate the ink must stand out from whatever wall or clutter lies behind it.
    under = (pixels * outlined).sum((0, 1)) / max(outlined.sum(), 1.0)
    plate_colour = np.array(_scalar_colour(rng), np.float32) if on_plate else under
    ink_colour = np.array(_scalar_colour(rng, plate_colour), np.float32)
    outline_colour = np.array(_scalar_colour(rng, ink_colour), np.float32)
    for mask, colour in (
        (plate, plate_colour),
        (frame, ink_colour),
        (outlined, outline_colour),
        (text, ink_colour),
    ):
        pixels += (colour - pixels) * mask
    image.paste(Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)))

    boxes = []
    for (x0, y0, x1, y1), digit in zip(ink, digits, strict=True):
        corners = _apply(forward, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
        left, top = np.floor(corners.min(0)).clip(0, (width - 1, height - 1)).astype(int)
        right, bottom = np.ceil(corners.max(0)).clip(0, (width, height)).astype(int)
        boxes.append(
            [int(left), int(top), int(max(right - left, 1)), int(max(bottom - top, 1)), int(digit)]
        )
    return boxes, (*map(float, dst.min(0)), *map(float, dst.max(0)))


def _camera(rng: np.random.Generator, image: Image.Image) -> np.ndarray:
    """Blur, lost resolution, sensor noise and JPEG compression."""
    width, height = image.size
    if rng.random() < 0.4:
        factor = rng.uniform(1.5, 3.5)
        small = (max(8, int(width / factor)), max(8, int(height / factor)))
        image = image.resize(small, Image.BILINEAR).resize((width, height), Image.BICUBIC)
    radius = rng.exponential(0.6)
    if radius > 0.2:
        image = image.filter(ImageFilter.GaussianBlur(radius))
    pixels = np.asarray(image, np.float32)
    pixels = pixels + rng.normal(0, rng.uniform(0, 6), pixels.shape[:2] + (1,)).astype(np.float32)
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    if rng.random() < 0.6:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(rng.integers(25, 90)))
        image = Image.open(buffer).convert("RGB")
    return np.asarray(image)


def _scene(
    rng: np.random.Generator, size_range: tuple[int, int], digits: str | None
) -> tuple[np.ndarray, list[NumberBox]]:
    width, height = _image_size(rng, size_range)
    image = _wall(rng, width, height)
    _clutter(rng, image)
    boxes, number_box = _place_number(rng, image, digits) if digits else ([], None)
    _letters(rng, image, number_box)
    return _camera(rng, image), boxes


def _random_number(rng: np.random.Generator) -> str:
    lengths, weights = zip(*LENGTH_WEIGHTS.items(), strict=True)
    length = rng.choice(lengths, p=np.array(weights) / sum(weights))
    first = str(rng.integers(1, 10)) if rng.random() < 0.97 else "0"
    return first + "".join(str(d) for d in rng.integers(0, 10, length - 1))


def synthetic_numbers(
    n: int, seed: int, size_range: tuple[int, int] = (64, 320)
) -> list[tuple[np.ndarray, str, list[NumberBox]]]:
    """n house-number photos: (RGB uint8 image, label string, digit boxes in reading order).

    Boxes are [left, top, width, height, digit] in pixels, as in SVHN's labels.json.
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        label = _random_number(rng)
        image, boxes = _scene(rng, size_range, label)
        out.append((image, label, boxes))
    return out


def synthetic_empty(n: int, seed: int, size_range: tuple[int, int] = (64, 320)) -> list[np.ndarray]:
    """n photos of walls and clutter with no digits, for teaching a reader "no number here"."""
    rng = np.random.default_rng(seed)
    return [_scene(rng, size_range, None)[0] for _ in range(n)]


__all__ = ["CropStyle", "font_paths", "synthetic_digits", "synthetic_empty", "synthetic_numbers"]
