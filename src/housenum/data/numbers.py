"""Whole house-number photos ("format 1"): one entry point, `load_numbers(spec)`.

Specs: a folder with `labels.json` (as `../shared/data/svhn/numbers/`), a folder with the official
`digitStruct.mat` (or the file itself), `svhn-full[:train|test|extra]` (the official tar.gz,
downloaded once into the cache and extracted), or `synthetic[:N]` (built in, offline).

The official `digitStruct.mat` is MATLAB v7.3 (HDF5) and holds every value of every box in its own
tiny dataset behind an object reference; opening 600,000 of them through h5py takes minutes. Here
the object headers are read straight from the file's bytes (a few seconds for the 33,402 train
photos), checked against h5py on a sample, and the parsed table is cached beside the file.
"""

from __future__ import annotations

import fnmatch
import json
import math
import mmap
import os
import re
import shutil
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from housenum.errors import DataFormatError, HousenumError
from housenum.io import atomic_path
from housenum.preprocess import MAX_IMAGE_SIDE, open_image

BOX_FIELDS = ("left", "top", "width", "height", "label")  # column order of a box row; label 0..9
FULL_SPLITS = ("train", "test", "extra")
SYNTHETIC_DEFAULT = 2000
SYNTHETIC_MAX = 50_000   # photos: several GB in memory and 7 minutes to draw on a 2-core CPU
CACHE_VERSION = 3   # bump when parsing checks change, so older caches are parsed again


# --- The in-memory form ---------------------------------------------------------------------------


# A dataset's own photos are trusted further than uploads (10 MB): a 12-Mpixel phone PNG is 12-25 MB.
# The pixel limit, which guards memory, still holds.
DATASET_IMAGE_BYTES = 256 * 2**20


@dataclass
class NumberSet:
    """Photos with their numbers: the label string and the digit boxes, in reading order.

    Photos are read from `files` when needed (the official sets do not fit in memory) unless
    `images` holds them already (synthetic sets).
    """

    name: str
    files: list[Path]
    labels: list[str]
    boxes: list[np.ndarray]  # per photo, (k, 5) int32 rows: left, top, width, height, digit
    images: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.files] if self.files else [f"{i}" for i in range(len(self))]

    def image(self, i: int) -> np.ndarray:
        """Photo i as an (H, W, 3) uint8 array."""
        if self.images is not None:
            return self.images[i]
        return np.asarray(open_image(self.files[i], max_bytes=DATASET_IMAGE_BYTES))

    def subset(self, index) -> NumberSet:
        index = list(index)
        return NumberSet(
            self.name,
            [self.files[i] for i in index] if self.files else [],
            [self.labels[i] for i in index],
            [self.boxes[i] for i in index],
            None if self.images is None else [self.images[i] for i in index],
        )

    def matching(self, pattern: str) -> NumberSet:
        """The photos whose file name matches a glob such as `test_*`."""
        keep = [i for i, n in enumerate(self.names) if fnmatch.fnmatch(n, pattern)]
        if not keep:
            example = f" (names are file names such as {self.names[0]})" if self.names else ""
            raise DataFormatError(f"{self.name}: no photo name matches '{pattern}'{example}")
        out = self.subset(keep)
        out.name = f"{self.name} [{pattern}]"
        return out


def number_box(boxes: np.ndarray) -> tuple[float, float, float, float]:
    """The box around all digits, (left, top, right, bottom) in pixels."""
    b = np.asarray(boxes, np.float64)
    return (float(b[:, 0].min()), float(b[:, 1].min()),
            float((b[:, 0] + b[:, 2]).max()), float((b[:, 1] + b[:, 3]).max()))


def photo_size(photos: NumberSet, i: int) -> tuple[int, int]:
    """Photo i's (width, height), from the file's header: no decoding."""
    if photos.images is not None:
        h, w = photos.images[i].shape[:2]
        return w, h
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(photos.files[i]) as image:
            return image.size
    except (OSError, UnidentifiedImageError) as e:
        raise DataFormatError(f"{photos.files[i]}: not a readable image ({e})") from None


def describe_numbers(photos: NumberSet) -> dict:
    """Counts by number length and by digit, photo sizes, and how much of each photo its number fills
    (the reader's localiser is there because the number is a small part of many photos)."""
    sizes = np.array([photo_size(photos, i) for i in range(len(photos))], np.float64).reshape(-1, 2)
    lengths = np.bincount([len(label) for label in photos.labels], minlength=6)
    digits = sum((np.bincount(b[:, 4], minlength=10) for b in photos.boxes), np.zeros(10, np.int64))
    fills = []
    for (w, h), rows in zip(sizes, photos.boxes):
        if len(rows):
            left, top, right, bottom = number_box(rows)
            if right > left and bottom > top:   # box sizes go unchecked (see _parse_digit_struct): no -8% shares
                fills.append(((right - left) / w, (bottom - top) / h))
    fill = np.array(fills, np.float64).reshape(-1, 2)

    def spread(values: np.ndarray) -> dict:
        if not len(values):
            return {}
        low, median, high = np.percentile(values, [5, 50, 95])
        return {"median": round(float(median), 3), "p5": round(float(low), 3), "p95": round(float(high), 3)}

    return {"name": photos.name, "photos": len(photos),
            "by_length": {str(k): int(n) for k, n in enumerate(lengths) if n},
            "per_digit": digits.tolist(),
            "width": {**spread(sizes[:, 0]), "min": int(sizes[:, 0].min()), "max": int(sizes[:, 0].max())},
            "height": {**spread(sizes[:, 1]), "min": int(sizes[:, 1].min()), "max": int(sizes[:, 1].max())},
            "number_width_share": spread(fill[:, 0]), "number_height_share": spread(fill[:, 1])}


def is_photo_spec(spec: str) -> bool:
    """Whether `spec` names whole photos for `load_numbers` rather than digit crops (`synthetic` is
    both, and means digits where either would do)."""
    path = Path(spec)
    labelled = path.is_dir() and any((path / name).is_file() for name in ("labels.json", "digitStruct.mat"))
    return labelled or path.name == "digitStruct.mat" or path.suffix == ".json" or spec.partition(":")[0] == "svhn-full"


def load_numbers(spec: str | Path, default_split: str = "test") -> NumberSet:
    """Load photos by spec (see the module docstring); bare `svhn-full` means `default_split`."""
    spec = str(spec)
    if not spec.strip():   # Path("") is the current folder: say what was meant instead
        raise DataFormatError("no photos given: give a folder with labels.json or digitStruct.mat, "
                              "'svhn-full[:train|test|extra]' or 'synthetic[:N]'")
    name, _, arg = spec.partition(":")
    path = Path(spec)
    if name == "svhn-full" and not path.exists():
        return load_svhn_full(arg or default_split)
    if name == "synthetic" and not path.exists():
        return _synthetic(arg)
    if path.is_dir():
        if (path / "labels.json").is_file():
            return load_labels_json(path / "labels.json")
        if (path / "digitStruct.mat").is_file():
            return load_digit_struct(path / "digitStruct.mat")
        raise DataFormatError(f"{path}: folder has neither labels.json nor digitStruct.mat")
    if path.name.endswith(".json") and path.is_file():
        return load_labels_json(path)
    if path.suffix == ".mat" and path.is_file():
        return load_digit_struct(path)
    raise DataFormatError(
        f"unknown photo data '{spec}': give a folder with labels.json or digitStruct.mat, "
        "a digitStruct.mat, 'svhn-full[:train|test|extra]' or 'synthetic[:N]'"
    )


def _synthetic(arg: str) -> NumberSet:
    from housenum.data.synthetic import synthetic_numbers

    try:
        n = int(arg) if arg else SYNTHETIC_DEFAULT
    except ValueError:
        raise DataFormatError(f"synthetic:N needs a whole number, got '{arg}'") from None
    if not 1 <= n <= SYNTHETIC_MAX:   # drawn at about 125 a second, every photo held in memory
        raise DataFormatError(f"synthetic:N needs 1 <= N <= {SYNTHETIC_MAX:,} photos, got {n:,}")
    photos = synthetic_numbers(n, seed=7)
    return NumberSet(f"synthetic:{n}", [], [label for _, label, _ in photos],
                     [np.asarray(b, np.int32).reshape(-1, 5) for _, _, b in photos],
                     [image for image, _, _ in photos])


# --- labels.json folders --------------------------------------------------------------------------


def load_labels_json(path: str | Path) -> NumberSet:
    """`{"file.png": {"label": "123", "boxes": [[l, t, w, h, digit], ...]}, ...}`; images beside
    the file or in `images/` beside it."""
    path = Path(path)
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataFormatError(f"{path}: not a readable labels.json ({e})") from None
    if not isinstance(table, dict) or not table:
        raise DataFormatError(f"{path}: expected a non-empty object mapping file names to labels")
    folder = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    files, labels, boxes = [], [], []
    for file, entry in sorted(table.items(), key=lambda kv: _natural_key(kv[0])):
        try:
            label = str(entry["label"])
            rows = np.asarray(entry["boxes"], np.float64).reshape(-1, 5)
        except (KeyError, TypeError, ValueError):
            raise DataFormatError(
                f"{path}: entry '{file}' needs \"label\" and \"boxes\" [[left, top, width, height, digit], ...]"
            ) from None
        if not len(rows):
            raise DataFormatError(f"{path}: entry '{file}' has no digit boxes; every photo needs its number's")
        problem = box_rows_problem(rows, digits_up_to=9)
        if problem:
            raise DataFormatError(f"{path}: entry '{file}': {problem}")
        if not label.isdigit() or label != "".join(str(int(d)) for d in rows[:, 4]):
            raise DataFormatError(f"{path}: entry '{file}': label '{label}' does not match its boxes")
        image = folder / file
        if not image.is_file():
            raise DataFormatError(f"{path}: image '{file}' not found in {folder}")
        files.append(image)
        labels.append(label)
        boxes.append(np.rint(rows).astype(np.int32))
    return NumberSet(str(path.parent), files, labels, boxes)


def box_rows_problem(rows: np.ndarray, digits_up_to: int, sizes: bool = True) -> str | None:
    """What is wrong with (M, 5) [left, top, width, height, digit] rows, or None: every value finite,
    each digit a whole number 0..`digits_up_to`, and (`sizes`) each box wider and higher than 0."""
    if not np.isfinite(rows).all():
        return "box values must be finite numbers"
    if np.any(np.abs(rows[:, :4]) > 2 * MAX_IMAGE_SIDE):   # no photo read here is larger; int32 would wrap
        return f"box values must lie within ±{2 * MAX_IMAGE_SIDE:,} pixels, found {np.abs(rows[:, :4]).max():g}"
    if sizes and np.any(rows[:, 2:4] <= 0):
        return "every box needs a width and height above 0"
    digits = rows[:, 4]
    bad = np.flatnonzero((digits % 1 != 0) | (digits < 0) | (digits > digits_up_to))
    if bad.size:   # name a few: an official table has hundreds of thousands of boxes
        found = ", ".join(f"{digits[i]:g} (box {i + 1})" for i in bad[:3]) + (", ..." if bad.size > 3 else "")
        return f"box digits must be whole numbers 0..{digits_up_to}, found {found}"
    return None


def _natural_key(name: str) -> tuple:
    """`train_2.png` before `train_10.png`."""
    match = re.match(r"(\D*)(\d*)", name)
    return match[1], int(match[2] or 0), name


# --- digitStruct.mat (MATLAB v7.3) ---------------------------------------------------------------


def load_digit_struct(path: str | Path, image_dir: str | Path | None = None) -> NumberSet:
    """The official format 1 table; the images are beside it unless `image_dir` says otherwise."""
    path = Path(path)
    names, counts, rows = read_digit_struct(path)
    folder = Path(image_dir) if image_dir is not None else path.parent
    starts = np.concatenate([[0], np.cumsum(counts)])
    boxes = [rows[a:b] for a, b in zip(starts[:-1], starts[1:])]
    labels = ["".join(str(d) for d in b[:, 4]) for b in boxes]
    return NumberSet(str(folder), [folder / n for n in names], labels, boxes)


def read_digit_struct(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, digits per photo, all box rows (M, 5) int32 with label 10 read as 0), cached."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    stat = path.stat()
    cache = path.with_name(f".{path.name}.parsed.npz")
    stamp = np.array([CACHE_VERSION, stat.st_size, stat.st_mtime_ns], np.int64)
    if cache.is_file():
        try:
            with np.load(cache) as f:
                if np.array_equal(f["stamp"], stamp):
                    return f["names"].tolist(), f["counts"], f["boxes"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # a damaged cache is rebuilt below
    names, counts, boxes = _parse_digit_struct(path)
    try:
        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, stamp=stamp, names=np.array(names), counts=counts, boxes=boxes)
    except OSError:
        pass  # a read-only folder: parse again next time
    return names, counts, boxes


def _parse_digit_struct(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataFormatError(f"{path}: not a MATLAB v7.3 (HDF5) file ({e})") from None
    with f:
        try:
            name_refs, bbox_refs = (_object_addresses(f[f"digitStruct/{k}"]) for k in ("name", "bbox"))
        except (KeyError, TypeError, ValueError):
            raise DataFormatError(
                f"{path}: expected the struct 'digitStruct' with fields 'name' and 'bbox' "
                "(object references), as in the official SVHN format 1 files"
            ) from None
        if len(name_refs) != len(bbox_refs):
            raise DataFormatError(f"{path}: {len(name_refs)} names but {len(bbox_refs)} bbox entries")
        slow = _H5pyEntries(f, path)
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            raw = _RawHDF5(buf, f.userblock_size)
            entries = []
            for i, (n, b) in enumerate(zip(name_refs, bbox_refs)):
                try:
                    entries.append(raw.entry(int(n), int(b)))
                except (_Unsupported, struct.error, IndexError, KeyError, ValueError, TypeError, OverflowError):
                    entries.append(slow.entry(i))
            # The byte reader covers only what MATLAB writes; a sample is checked against h5py,
            # and any disagreement means reading everything the slow, certain way.
            sample = sorted({0, len(entries) - 1, *np.linspace(0, len(entries) - 1, 9).astype(int)})
            if entries and any(not _same_entry(entries[i], slow.entry(i)) for i in sample):
                entries = [slow.entry(i) for i in range(len(entries))]
    names = [n for n, _ in entries]
    if not names:
        raise DataFormatError(f"{path}: holds no photos (digitStruct has no entries)")
    for i, name in enumerate(names):   # each a file beside the table, as in the official ones ("1.png")
        if not name or "\0" in name or Path(name).name != name or name in (".", ".."):
            raise DataFormatError(f"{path}: entry {i + 1}: the name {name!r} is not a plain file name")
    counts = np.array([len(b) for _, b in entries], np.int64)
    if np.any(counts == 0):
        i = int(np.flatnonzero(counts == 0)[0])
        raise DataFormatError(f"{path}: entry {i + 1} ({names[i]}) has no digit boxes; every SVHN photo has some")
    boxes = np.concatenate([b for _, b in entries]) if entries else np.zeros((0, 5))
    # sizes unchecked: one odd box of the official tables' hundreds of thousands should not refuse them all
    if box_rows_problem(boxes, digits_up_to=10, sizes=False):   # then name the first entry at fault
        for i, (name, rows) in enumerate(entries):
            problem = box_rows_problem(rows, digits_up_to=10, sizes=False)
            if problem:
                problem = problem.replace("0..10", "1..10 (10 means 0)")
                raise DataFormatError(f"{path}: entry {i + 1} ({name}): {problem}")
    boxes[:, 4] = boxes[:, 4] % 10
    return names, counts, np.rint(boxes).astype(np.int32)


def _same_entry(a: tuple[str, np.ndarray], b: tuple[str, np.ndarray]) -> bool:
    return a[0] == b[0] and a[1].shape == b[1].shape and np.array_equal(a[1], b[1])


def _object_addresses(dataset: h5py.Dataset) -> np.ndarray:
    """An array of object references, as the header addresses they are (one read, no objects)."""
    if not _is_ref(dataset.dtype):
        raise TypeError("not object references")
    out = np.empty(dataset.shape, np.uint64)
    dataset.id.read(h5py.h5s.ALL, h5py.h5s.ALL, out, mtype=h5py.h5t.STD_REF_OBJ)
    return out.reshape(-1)


class _H5pyEntries:
    """The certain way to read one entry, through h5py objects (about 1 ms per entry)."""

    def __init__(self, f: h5py.File, path: Path) -> None:
        self.f, self.path = f, path
        self.names = f["digitStruct/name"][()].reshape(-1)
        self.bbox = f["digitStruct/bbox"][()].reshape(-1)

    def entry(self, i: int) -> tuple[str, np.ndarray]:
        try:
            name = _chars(self.f[self.names[i]][()])
            group = self.f[self.bbox[i]]
            cols = []
            for field in BOX_FIELDS:
                dataset = group[field]
                if _is_ref(dataset.dtype):   # several digits: a reference to each one's value
                    cols.append(np.array([_numbers(self.f[r], field)[0] for r in dataset[()].reshape(-1)]))
                else:
                    cols.append(_numbers(dataset, field))
            return name, np.stack(cols, axis=1)
        except (KeyError, ValueError, TypeError, OSError, AttributeError, OverflowError) as e:
            raise DataFormatError(f"{self.path}: entry {i + 1} is not a name and bbox struct ({e})") from None


def _is_ref(dtype: np.dtype) -> bool:
    """Object references, told apart from variable-length strings: both are numpy's object dtype,
    which `==` compares without the metadata that differs."""
    return h5py.check_dtype(ref=dtype) is not None


def _numbers(dataset: h5py.Dataset, field: str) -> np.ndarray:
    """A bbox field's values as floats; a string or struct there is no box."""
    if dataset.dtype.kind not in "iuf":
        held = "text" if dataset.dtype.kind in "SU" or h5py.check_string_dtype(dataset.dtype) else dataset.dtype
        raise ValueError(f"its bbox field '{field}' holds {held}, not numbers")
    return dataset[()].reshape(-1).astype(np.float64)


def _chars(codes) -> str:
    """A MATLAB char array (integer character codes) as text."""
    codes = np.asarray(codes).reshape(-1)   # an HDF5 string arrives as bytes, a 0-d array of them
    if codes.dtype.kind not in "iu":
        raise ValueError(f"a name must be MATLAB character codes, got {codes.dtype} values")
    if codes.size and (codes.min() < 0 or codes.max() > 0x10FFFF):
        raise ValueError(f"a name's character codes must be 0..0x10FFFF, got {codes.min()}..{codes.max()}")
    return "".join(map(chr, codes.tolist()))


class _Unsupported(Exception):
    """Something the byte reader does not handle; that entry is read through h5py instead."""


_U16, _U32, _U64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")
# (class, size, signed) -> struct code; class 0 integer, 1 float, 7 object reference (an address)
_CODES = {(0, 1, False): "B", (0, 2, False): "H", (0, 4, False): "I", (0, 8, False): "Q",
          (0, 1, True): "b", (0, 2, True): "h", (0, 4, True): "i", (0, 8, True): "q",
          (1, 4, False): "f", (1, 8, False): "d", (7, 8, False): "Q"}


class _RawHDF5:
    """Just enough of the HDF5 format to read MATLAB's small datasets and struct groups.

    Version-1 object headers, compact or contiguous little-endian data, and groups stored as
    symbol tables or link messages, which is what MATLAB writes. Addresses are relative to the
    base (after the 512-byte MATLAB user block).
    """

    def __init__(self, buf, base: int) -> None:
        self.buf, self.base = buf, base

    def entry(self, name_addr: int, bbox_addr: int) -> tuple[str, np.ndarray]:
        chars, _ = self.dataset(name_addr)
        members = self.group(bbox_addr)
        cols = []
        for field in BOX_FIELDS:
            values, is_ref = self.dataset(members[field])
            if is_ref:
                values = [self.dataset(a)[0][0] for a in values]
            cols.append(values)
        if len({len(c) for c in cols}) != 1:
            raise _Unsupported
        return _chars(chars), np.array(cols, np.float64).T.reshape(-1, 5)

    def _messages(self, addr: int) -> list[tuple[int, int, int]]:
        """(type, data offset, size) of each message in the object header at `addr`."""
        buf, p = self.buf, self.base + addr
        if buf[p] != 1:
            raise _Unsupported
        count = _U16.unpack_from(buf, p + 2)[0]
        blocks = [(p + 16, _U32.unpack_from(buf, p + 8)[0])]
        out: list[tuple[int, int, int]] = []
        while blocks and len(out) < count:
            start, size = blocks.pop(0)
            q, end = start, start + size
            while q + 8 <= end and len(out) < count:
                kind, length = struct.unpack_from("<HH", buf, q)
                if kind == 0x10:  # continuation: more messages elsewhere
                    offset, more = struct.unpack_from("<QQ", buf, q + 8)
                    blocks.append((self.base + offset, more))
                out.append((kind, q + 8, length))
                q += 8 + length
        return out

    def dataset(self, addr: int) -> tuple[tuple, bool]:
        """The values of a small dataset, flattened, and whether they are object references."""
        buf = self.buf
        count = code = data = None
        for kind, d, _ in self._messages(addr):
            if kind == 0x01:  # dataspace
                version, rank = buf[d], buf[d + 1]
                first = d + (8 if version == 1 else 4)
                count = math.prod(struct.unpack_from(f"<{rank}Q", buf, first))
            elif kind == 0x03:  # datatype
                cls, size = buf[d] & 0x0F, _U32.unpack_from(buf, d + 4)[0]
                if buf[d + 1] & 1:
                    raise _Unsupported  # big-endian
                code = _CODES.get((cls, size, cls == 0 and bool(buf[d + 1] & 8)))
                if code is None:
                    raise _Unsupported
                itemsize = size
                is_ref = cls == 7
            elif kind == 0x08:  # data layout
                data = self._layout(d)
            elif kind == 0x0B:  # filter pipeline (compression)
                raise _Unsupported
        if count is None or code is None or data is None:
            raise _Unsupported
        start, size = data
        if size < count * itemsize:
            raise _Unsupported
        return struct.unpack_from(f"<{count}{code}", buf, start), is_ref

    def _layout(self, d: int) -> tuple[int, int]:
        buf = self.buf
        version = buf[d]
        if version == 3:
            cls = buf[d + 1]
            if cls == 0:
                return d + 4, _U16.unpack_from(buf, d + 2)[0]
            if cls == 1:
                address, size = struct.unpack_from("<QQ", buf, d + 2)
                if address == 2**64 - 1:
                    raise _Unsupported  # never written: only a fill value
                return self.base + address, size
            raise _Unsupported
        if version in (1, 2):
            rank, cls = buf[d + 1], buf[d + 2]
            p = d + 8
            if cls != 0:
                address = _U64.unpack_from(buf, p)[0]
                p += 8
            dims = struct.unpack_from(f"<{rank}I", buf, p)
            p += 4 * rank
            if cls == 0:
                return p + 4, _U32.unpack_from(buf, p)[0]
            if cls == 1:
                return self.base + address, math.prod(dims)
        raise _Unsupported

    def group(self, addr: int) -> dict[str, int]:
        """Member name -> object header address."""
        buf, members = self.buf, {}
        for kind, d, _ in self._messages(addr):
            if kind == 0x11:  # symbol table: a v1 B-tree of symbol nodes, names in a local heap
                tree, heap = struct.unpack_from("<QQ", buf, d)
                h = self.base + heap
                if buf[h:h + 4] != b"HEAP":
                    raise _Unsupported
                names = self.base + _U64.unpack_from(buf, h + 24)[0]
                self._walk(tree, names, members)
            elif kind == 0x06:  # link message (compact new-style group)
                name, target = self._link(d)
                members[name] = target
        return members

    def _walk(self, node: int, names: int, members: dict[str, int]) -> None:
        buf, p = self.buf, self.base + node
        if buf[p:p + 4] != b"TREE" or buf[p + 4] != 0:
            raise _Unsupported
        level, used = buf[p + 5], _U16.unpack_from(buf, p + 6)[0]
        for i in range(used):
            child = _U64.unpack_from(buf, p + 24 + 8 + 16 * i)[0]
            if level:
                self._walk(child, names, members)
                continue
            s = self.base + child
            if buf[s:s + 4] != b"SNOD":
                raise _Unsupported
            for j in range(_U16.unpack_from(buf, s + 6)[0]):
                e = s + 8 + 40 * j
                offset, target = struct.unpack_from("<QQ", buf, e)
                start = names + offset
                members[bytes(buf[start:buf.find(b"\0", start)]).decode()] = target

    def _link(self, d: int) -> tuple[str, int]:
        buf = self.buf
        flags, q = buf[d + 1], d + 2
        if flags & 0x08:
            if buf[q] != 0:
                raise _Unsupported  # soft or external link
            q += 1
        if flags & 0x04:
            q += 8
        if flags & 0x10:
            q += 1
        width = 1 << (flags & 3)
        length = int.from_bytes(buf[q:q + width], "little")
        q += width
        name = bytes(buf[q:q + length]).decode()
        return name, _U64.unpack_from(buf, q + length)[0]


# --- svhn-full: the official tar.gz files ---------------------------------------------------------


def load_svhn_full(split: str = "test") -> NumberSet:
    """Official format 1 photos of one split, downloaded and extracted once into the cache."""
    if split not in FULL_SPLITS:
        raise DataFormatError(f"unknown svhn-full split '{split}': use train, test or extra")
    from housenum.data.download import cache_dir, fetch, one_at_a_time

    folder = cache_dir() / "svhn-full" / split
    if not (folder / "digitStruct.mat").is_file():
        archive = fetch(f"{split}.tar.gz")
        folder.parent.mkdir(parents=True, exist_ok=True)
        with one_at_a_time(folder.with_name(f".{split}.extract.lock"), f"extracting {archive.name}"):
            if not (folder / "digitStruct.mat").is_file():   # else extracted by the process waited for
                try:
                    extract_split(archive, split, folder)
                except DataFormatError as e:
                    # no size or md5 is published for these, so a damaged download is known only now
                    archive.unlink(missing_ok=True)
                    raise DataFormatError(f"{e}".replace("delete it and fetch again",
                                                         "deleted it, so the next run downloads it again")) from None
    return load_digit_struct(folder / "digitStruct.mat")


def extract_split(archive: Path, split: str, folder: Path) -> None:
    """Extract `split/*.png` and `split/digitStruct.mat` from an official tar.gz into `folder`.

    Only plain files directly under `split/` are written, by name, so a hostile archive cannot
    place anything elsewhere; the folder appears only once complete.
    """
    tmp = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                parts = member.name.replace("\\", "/").lstrip("./").split("/")
                if not member.isfile() or len(parts) != 2 or parts[0] != split:
                    continue
                name = parts[1]
                if not (name.endswith(".png") or name == "digitStruct.mat") or name.startswith("."):
                    continue
                with tar.extractfile(member) as src, open(tmp / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno is None:   # gzip's BadGzipFile: the archive, not the disk
            raise DataFormatError(f"{archive}: not a readable tar.gz ({e}); delete it and fetch again") from None
        # a full disk or a read-only cache says nothing about the archive, which is kept
        raise HousenumError(f"could not extract {archive} into {folder.parent}: {e}") from None
    except (tarfile.TarError, EOFError, zlib.error) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataFormatError(f"{archive}: not a readable tar.gz ({e}); delete it and fetch again") from None
    if not (tmp / "digitStruct.mat").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataFormatError(f"{archive}: no {split}/digitStruct.mat inside; is it an SVHN format 1 archive?")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


__all__ = ["NumberSet", "extract_split", "load_digit_struct", "load_labels_json", "load_numbers",
           "load_svhn_full", "number_box", "read_digit_struct"]
