"""The one place that turns pixels into model input, for training and for any photo at inference.

Training data (uint8 or course float 0..255, (N, 32, 32, C)) and user images (any size or mode)
both end as float tensors (N, C, 32, 32) scaled to 0..1; models normalise further themselves.
"""

from __future__ import annotations

import io
import re
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from housenum.errors import ImageError, ImageTooLargeError

MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
# Longest side allowed: a 1x39,000,000 strip passes the pixel limit but cost 1.9 GB and seconds to
# decode (Pillow keeps a pointer per row); a 40-Mpixel panorama of 16,000x2,500 is well inside.
MAX_IMAGE_SIDE = 30_000
# Pillow refuses a header over twice its MAX_IMAGE_PIXELS itself, whatever limit is asked here
PILLOW_PIXEL_LIMIT = 2 * Image.MAX_IMAGE_PIXELS
GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)
# what a folder of photos is searched for: each format open_image reads that a camera or scanner writes
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm")
# The only decoders an image may reach: Pillow would otherwise hand an EPS file to Ghostscript, where
# one is installed. (The JPEG decoder also opens phone cameras' multi-picture JPEGs, MPO.)
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM")
# What Pillow raises for a file whose header or data is cut short or garbled (fuzzing found each)
CORRUPT = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)


def pixels_to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, 32, 32, C) or (N, C, 32, 32) pixels 0..255 -> float (N, C, 32, 32) in 0..1."""
    x = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images)
    if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)
    return x.float().div_(255.0)


# First bytes that name a format (those too short to tell an image from text, like BMP's "BM", left out)
IMAGE_MAGIC = ((b"\x89PNG", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"II*\x00", "TIFF"),
               (b"MM\x00*", "TIFF"))


def images_in(folder: Path) -> list[Path]:
    """The image files directly in `folder` (by suffix), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def open_image(source, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS,
               name: str | None = None) -> Image.Image:
    """Open and fully decode an image as RGB, refusing non-images, empty, truncated or huge files.

    `source`: a path, bytes, an open binary file, a PIL image or an array (see `_as_uint8`); `name`,
    what errors call bytes or a file without a name (an upload's file name, say).

    The pixel count is checked from the header before decoding, so a decompression bomb is
    refused without allocating it.
    """
    if isinstance(source, Image.Image):
        if 0 in source.size:
            raise ImageError(f"{name or 'image'}: empty ({source.width}x{source.height} pixels)")
        try:
            return _to_rgb(_upright(source))
        except CORRUPT as e:
            raise ImageError(f"image: cannot be read as RGB: corrupt, truncated, or its mode {source.mode} has "
                             f"no conversion ({e})") from None
    if isinstance(source, np.ndarray):
        return _array_to_image(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"{path}: no such file")
        if path.is_dir():
            raise ImageError(f"{path}: is a folder, not an image")
        name = str(path)
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise ImageTooLargeError(f"{name}: file is too large ({size} bytes; limit {max_bytes})")
            with open(path, "rb") as fh:   # a pipe or device has no size: read one byte past the limit at most
                data = fh.read(max_bytes + 1)
        except OSError as e:
            raise ImageError(f"{name}: cannot be read ({e.strerror or e})") from None
    elif isinstance(source, (bytes, bytearray, memoryview)) or hasattr(source, "read"):
        # an open file is read one byte past the limit at most, enough to tell it is over
        is_file = hasattr(source, "read")
        name = name or (str(getattr(source, "name", "image file")) if is_file else "image bytes")  # or <stdin>
        try:
            data = source.read(max_bytes + 1) if is_file else source
        except UnicodeDecodeError:   # a text-mode file of image bytes
            data = ""
        if isinstance(data, str):
            raise ImageError(f"{name}: opened in text mode; open an image in binary mode, open(path, 'rb')")
        data = bytes(data)
    else:
        raise ImageError(f"cannot read an image from a {type(source).__name__}: give a path, bytes, an open "
                         "file, a PIL image or an array")
    if len(data) > max_bytes:   # bytes, or what a file, pipe or device gave when read one byte past the limit
        raise ImageTooLargeError(f"{name}: image is too large (over {max_bytes} bytes; limit {max_bytes})")
    if not data:
        raise ImageError(f"{name}: file is empty")
    try:
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        kind = next((k for magic, k in IMAGE_MAGIC if data.startswith(magic)), None)
        if kind:   # Pillow cannot identify a file whose header was cut short
            raise ImageError(f"{name}: a {kind} file, corrupt or truncated in its header") from None
        raise ImageError(f"{name}: not an image (expected PNG, JPEG, WebP, GIF, BMP, TIFF or PPM)") from None
    except Image.DecompressionBombError as e:  # PIL refuses > 2x its own limit while reading the header
        declared = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{declared.group(1)} pixels" if declared else f"more than {PILLOW_PIXEL_LIMIT} pixels"
        raise ImageTooLargeError(f"{name}: image is too large (its header declares {size}; limit {max_pixels})") \
            from None
    except CORRUPT as e:  # a header cut short or garbled: Pillow raises any of these
        raise ImageError(f"{name}: corrupt or truncated image ({e})") from None
    w, h = img.size
    if w * h > max_pixels:
        raise ImageTooLargeError(f"{name}: image is too large ({w}x{h} = {w * h} pixels; limit {max_pixels})")
    if max(w, h) > MAX_IMAGE_SIDE:
        raise ImageTooLargeError(f"{name}: image is too long ({w}x{h} pixels; no side may pass {MAX_IMAGE_SIDE})")
    try:
        img.load()
        return _to_rgb(_upright(img))
    except CORRUPT as e:
        raise ImageError(f"{name}: corrupt or truncated image ({e})") from None
    except ImageError as e:   # a float TIFF's pixels out of range, checked as an array's are
        kind = "32-bit float" if img.mode == "F" else img.mode
        raise ImageError(f"{name}: its {kind} pixels: {str(e).removeprefix('image array ')}") from None


def image_batch(images, call: str) -> list:
    """The images a batch call (`predict`, `read_many`) was given, as a list: a list, tuple, generator
    or (N, H, W[, C]) array. A lone image is refused: iterated, it would be read as rows or characters."""
    lone = isinstance(images, (str, Path, bytes, bytearray, memoryview, Image.Image)) or hasattr(images, "read")
    if isinstance(images, np.ndarray):
        lone = images.ndim < 3 or (images.ndim == 3 and images.shape[-1] in (1, 3, 4))   # (H, W, C): one image
    if lone:
        raise ImageError(f"{call} takes a list of images (or an (N, H, W[, C]) array); wrap a single one in a "
                         f"list: {call}([image])")
    try:
        return list(images)
    except TypeError:
        raise ImageError(f"{call} takes a list of images, not a {type(images).__name__}") from None


def open_each(images: list, open_one, first: int = 0, total: int | None = None) -> list:
    """`open_one` of every image; an ImageError names which item of several it was (`images` may be
    a slice from item `first` of `total`)."""
    total = len(images) if total is None else total
    out = []
    for i, image in enumerate(images, first):
        try:
            out.append(open_one(image))
        except ImageError as e:
            if total == 1:
                raise
            raise type(e)(f"item {i} of {total}: {e}") from None
    return out


def _upright(img: Image.Image) -> Image.Image:
    """The image as it is meant to be seen: phone photos store their pixels sideways with an EXIF
    orientation tag. A garbled tag leaves the pixels as stored."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - any error in the tag itself: keep the pixels unrotated
        return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any mode to RGB; transparency is composited on white, as a photo of a plate would show."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    if img.mode == "F":   # 32-bit float pixels: 0..255 or, as after `/ 255`, 0..1, as for an array
        return _array_to_image(np.asarray(img))
    if img.mode.startswith("I;16") or img.mode == "I":
        # 16-bit (a PNG's I;16, or I holding 0..65535) is scaled by 65535/255, as an 8-bit copy of it
        arr = np.asarray(img, dtype=np.float64)
        scale = 257.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else 1.0
        return Image.fromarray(np.clip(np.rint(arr / scale), 0, 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def _array_to_image(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")
    if arr.size == 0:
        raise ImageError("image array is empty")
    return _to_rgb(Image.fromarray(_as_uint8(arr)))


def _as_uint8(arr: np.ndarray) -> np.ndarray:
    """Pixels as uint8: integers must be 0..255 (uint16: 0..65535); floats may be 0..255 or, as after
    the notebook's `/ 255`, 0..1 (a float image whose largest value is at most 1 is taken as 0..1)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind not in "iuf":
        raise ImageError(f"image array must hold numbers (uint8 0..255, or floats 0..1 or 0..255), got {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ImageError("image array holds NaN or infinite values")
    low, high = float(arr.min()), float(arr.max())
    if arr.dtype.kind == "f" and low >= 0 and high <= 1:
        return np.rint(arr * 255).astype(np.uint8)
    if arr.dtype == np.uint16:   # 16-bit pixels, as a 16-bit PNG opened with numpy holds
        return np.rint(arr / 257.0).astype(np.uint8)
    if low < 0 or high > 255:
        raise ImageError(f"image array values must be 0..255 (or floats 0..1), got {low:g}..{high:g}")
    return np.rint(arr).astype(np.uint8)


def image_to_digit(img: Image.Image, channels: int) -> np.ndarray:
    """An RGB image of any size -> (32, 32, channels) uint8, resized as the crops were (bicubic)."""
    small = np.asarray(img.resize((32, 32), Image.BICUBIC), dtype=np.uint8)
    if channels == 1:
        grey = np.clip(np.rint(small.astype(np.float32) @ GREY_WEIGHTS), 0, 255).astype(np.uint8)
        return grey[..., None]
    return small
