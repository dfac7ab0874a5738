"""Readers for the real SVHN digit formats: the course .h5, the official _32x32.mat, and .npz."""

from __future__ import annotations

import zipfile
from pathlib import Path

import h5py
import numpy as np
import scipy.io

from housenum.data.digits import DigitData, DigitSet
from housenum.data.splits import TEST_FRACTION, TEST_SALT, holdout_by_source
from housenum.errors import DataFormatError

COURSE_KEYS = ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test")


def _require_file(path: Path) -> None:
    if not path.exists():
        raise DataFormatError(f"{path}: no such file")
    if not path.is_file():
        raise DataFormatError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path}: file is empty")


def load_course_h5(path: str | Path) -> DigitData:
    """The course file `SVHN_single_grey1.h5`: greyscale float pixels 0..255, labels 0..9."""
    path = Path(path)
    _require_file(path)
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in COURSE_KEYS if k not in f]
            if missing:
                raise DataFormatError(
                    f"{path}: missing dataset(s) {', '.join(missing)}; "
                    f"the course file has {', '.join(COURSE_KEYS)}"
                )
            not_arrays = [k for k in COURSE_KEYS if not isinstance(f[k], h5py.Dataset)]
            if not_arrays:
                raise DataFormatError(f"{path}: {', '.join(not_arrays)} must be datasets (arrays), not groups")
            arrays = {k: np.asarray(f[k][()]) for k in COURSE_KEYS}
    except OSError as e:
        raise DataFormatError(f"{path}: not a readable HDF5 file ({e})") from None
    splits = {}
    for name in ("train", "val", "test"):
        x, y = arrays[f"X_{name}"], arrays[f"y_{name}"]
        if x.ndim != 3 or x.shape[1:] != (32, 32):
            raise DataFormatError(f"{path}: X_{name} must be (N, 32, 32), got {x.shape}")
        x = checked_pixels(x, f"{path}: X_{name}").astype(np.float32)
        try:
            splits[name] = DigitSet(x, y)
        except DataFormatError as e:
            raise DataFormatError(f"{path}: {name} split: {e}") from None
    return DigitData(path.name, splits["train"], splits["test"], {"val": splits["val"]})


def _read_mat_v73(path: Path) -> dict:
    """X and y of a .mat saved as v7.3 (`save -v7.3`, an HDF5 file), shaped as scipy gives v5 arrays:
    HDF5 stores MATLAB's column-major (32, 32, 3, N) as (N, 3, 32, 32)."""
    try:
        with h5py.File(path, "r") as f:
            return {k: np.asarray(f[k]).T for k in ("X", "y") if isinstance(f.get(k), h5py.Dataset)}
    except (OSError, ValueError) as e:   # h5py's words for a damaged file
        raise DataFormatError(f"{path}: a MATLAB v7.3 (HDF5) .mat file that cannot be read ({e})") from None


def read_official_mat(path: str | Path) -> DigitSet:
    """One official `*_32x32.mat` (MATLAB v5, or the same saved as v7.3): X (32, 32, 3, N) uint8,
    y (N, 1) with 10 for 0."""
    path = Path(path)
    _require_file(path)
    if h5py.is_hdf5(path):
        mat = _read_mat_v73(path)
    else:
        try:
            mat = scipy.io.loadmat(path, variable_names=["X", "y"])
        except Exception as e:  # scipy raises many types for corrupt or truncated files
            raise DataFormatError(f"{path}: not a readable MATLAB .mat file ({e})") from None
    for key in ("X", "y"):
        if key not in mat:
            raise DataFormatError(f"{path}: missing variable '{key}' (official files have X and y)")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataFormatError(f"{path}: X must be (32, 32, 3, N), got {x.shape}")
    if x.shape[3] != len(y):
        raise DataFormatError(f"{path}: X has {x.shape[3]} images but y has {len(y)} labels")
    if y.size and (y.dtype.kind not in "iuf" or np.isnan(y).any() or y.min() < 1 or y.max() > 10
                   or np.any(y % 1 != 0)):
        found = f"{y.min()}..{y.max()}" if y.dtype.kind in "iuf" else f"dtype {y.dtype}"
        raise DataFormatError(f"{path}: labels y must be whole numbers 1..10 (10 means digit 0), found {found}")
    pixels = checked_pixels(x, f"{path}: X")
    images = np.ascontiguousarray(np.transpose(pixels, (3, 0, 1, 2)).round(), dtype=np.uint8)
    return DigitSet(images, np.where(y == 10, 0, y))


def sibling_name(path: Path) -> str | None:
    """The name a train or extra file's test file has (`train_32x32.mat` -> `test_32x32.mat`)."""
    name = path.name.replace("train", "test").replace("extra", "test")
    return name if name != path.name else None


def test_sibling(path: Path) -> Path | None:
    """The `test_32x32.mat` beside a train or extra file, which is then its test split."""
    name = sibling_name(path)
    return path.with_name(name) if name is not None and path.with_name(name).exists() else None


def load_official_mat(path: str | Path) -> DigitData:
    """A train file uses the `test_32x32.mat` beside it as its test split when there is one; a test
    file alone is all test split (evaluate scores every digit of it); other files hold out 20%."""
    path = Path(path)
    data = read_official_mat(path)
    sibling = test_sibling(path)
    if sibling is not None:
        return DigitData(path.name, data, read_official_mat(sibling))
    if path.name.lower().startswith("test"):   # the official test file alone is all test data
        return DigitData(path.name, DigitSet(data.images[:0], data.labels[:0]), data)
    train, test = _fixed_holdout(data)
    return DigitData(path.name, train, test)


def load_npz(path: str | Path) -> DigitData:
    """An .npz with X (N, 32, 32[, 3]) and y (N,), and optionally source_image (N,).

    The test split is 20% of the source photos (a stable hash), or a fixed 20% when sources
    are unknown.
    """
    path = Path(path)
    _require_file(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("X", "y") if k not in f.files]
            if missing:
                raise DataFormatError(
                    f"{path}: missing array(s) {', '.join(missing)}; found {', '.join(f.files) or 'none'}"
                )
            x, y = f["X"], f["y"]
            sources = f["source_image"] if "source_image" in f.files else None
            not_arrays = [k for k, v in (("X", x), ("y", y), ("source_image", sources))
                          if v is not None and not isinstance(v, np.ndarray)]
            if not_arrays:   # zip members not written by numpy.save come back as raw bytes
                raise DataFormatError(f"{path}: {', '.join(not_arrays)} not stored as numpy arrays (.npy "
                                      "members, as numpy.savez writes)")
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        with open(path, "rb") as f:
            zipped = f.read(2) == b"PK"      # a zip cut short or garbled is "not readable", below
        if not zipped:
            raise DataFormatError(f"{path}: not an .npz file (an .npz is a zip of arrays, as numpy.savez "
                                  "writes)") from None
        if "pickled" in str(e):
            raise DataFormatError(f"{path}: holds Python objects, which are never unpickled here (unsafe); "
                                  "save X, y and source_image as plain arrays (strings as fixed-width '<U')") from None
        raise DataFormatError(f"{path}: not a readable .npz file ({e})") from None
    if x.ndim not in (3, 4) or x.shape[1:3] != (32, 32):
        raise DataFormatError(f"{path}: X must be (N, 32, 32) or (N, 32, 32, 3), got {x.shape}")
    x = checked_pixels(x, f"{path}: X")
    try:
        data = DigitSet(x, y, sources)
    except DataFormatError as e:
        raise DataFormatError(f"{path}: {e}") from None
    if data.sources is not None:
        train, test = holdout_by_source(data, TEST_FRACTION, salt=TEST_SALT)
    else:
        train, test = _fixed_holdout(data)
    return DigitData(path.name, train, test)


def checked_pixels(x: np.ndarray, what: str) -> np.ndarray:
    """uint8 pixels as they are; other numbers checked to lie in 0..255 (NaN refused) and given as
    float32, floats in 0..1 scaled to 0..255 (as after the notebook's `/ 255`)."""
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind not in "iuf":
        raise DataFormatError(f"{what} must hold pixel numbers (uint8 0..255, or floats), got {x.dtype}")
    if x.size and (np.isnan(x).any() or x.min() < 0 or x.max() > 255):
        found = "NaN" if np.isnan(x).any() else f"{x.min()}..{x.max()}"
        raise DataFormatError(f"{what}: pixels must be 0..255, found {found}")
    floats = x.dtype.kind == "f"
    x = x.astype(np.float32)
    if x.size and floats and x.max() <= 1:
        x *= 255
    return x


def _fixed_holdout(data: DigitSet, fraction: float = 0.2) -> tuple[DigitSet, DigitSet]:
    order = np.random.default_rng(0).permutation(len(data))
    n_test = int(round(len(data) * fraction))
    return data.subset(np.sort(order[n_test:])), data.subset(np.sort(order[:n_test]))
