"""Digit data: one entry point, `load_digits(spec)`, for every source the tool accepts.

Specs: a path to a course `.h5`, an official `*_32x32.mat`, or an `.npz`; `svhn` or `svhn:extra`
(the official cropped files, downloaded once into the cache); `synthetic[:N]` (built in, offline).
"""

from __future__ import annotations

from pathlib import Path

from housenum.data.digits import DigitData, DigitSet
from housenum.errors import DataFormatError

DEFAULT_SPEC = "synthetic"
SYNTHETIC_TRAIN = 12000
SYNTHETIC_MAX = 1_000_000   # digits: about 4 GB and 5 minutes to draw on a 2-core CPU


def load_digits(spec: str | Path = DEFAULT_SPEC, channels: int | None = None) -> DigitData:
    """Load a dataset by spec (a file path or a name such as 'svhn'); `channels` 1 converts to
    greyscale, 3 requires colour."""
    spec = str(spec)
    data = _load(spec)
    data.spec = spec
    if len(data.train) + len(data.test) == 0:
        raise DataFormatError(f"{spec}: holds no images")
    return data if channels is None else data.with_channels(channels)


def _load(spec: str) -> DigitData:
    from housenum.data import formats

    if not spec.strip():
        raise DataFormatError("no data given: give a .h5, .mat or .npz file, 'svhn', 'svhn:extra' or 'synthetic'")
    name, _, arg = spec.partition(":")
    if name == "synthetic":
        return _synthetic(arg)
    if name == "svhn" and not Path(spec).exists():
        return _official(arg)
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return formats.load_course_h5(path)
    if suffix == ".mat":
        return formats.load_official_mat(path)
    if suffix == ".npz":
        return formats.load_npz(path)
    if not path.exists():
        raise DataFormatError(
            f"unknown data '{spec}': give a .h5, .mat or .npz file, 'svhn', 'svhn:extra' or 'synthetic'"
        )
    if path.is_dir():
        raise DataFormatError(f"{path}: is a folder; give a .h5, .mat or .npz file of digit crops "
                              "(a folder of whole photos with labels.json or digitStruct.mat is for `housenum "
                              "evaluate-numbers` and `train-reader`)")
    raise DataFormatError(f"{path}: unsupported file type '{suffix}' (expected .h5, .mat or .npz)")


def _synthetic(arg: str) -> DigitData:
    from housenum.data.synthetic import synthetic_digits

    try:
        n_train = int(arg) if arg else SYNTHETIC_TRAIN
    except ValueError:
        raise DataFormatError(f"synthetic:N needs a whole number, got '{arg}'") from None
    if not 10 <= n_train <= SYNTHETIC_MAX:   # drawn at about 3,000 a second, held in memory with a test quarter
        raise DataFormatError(f"synthetic:N needs 10 <= N <= {SYNTHETIC_MAX:,}, got {n_train:,}")
    return DigitData(
        f"synthetic:{n_train}",
        synthetic_digits(n_train, seed=1),
        synthetic_digits(max(n_train // 4, 10), seed=2),
    )


def _official(arg: str) -> DigitData:
    import numpy as np

    from housenum.data.download import fetch
    from housenum.data.formats import read_official_mat

    if arg not in ("", "extra"):
        raise DataFormatError(f"unknown svhn variant '{arg}': use 'svhn' or 'svhn:extra'")
    train = read_official_mat(fetch("train_32x32.mat"))
    if arg == "extra":
        extra = read_official_mat(fetch("extra_32x32.mat"))
        train = DigitSet(
            np.concatenate([train.images, extra.images]),
            np.concatenate([train.labels, extra.labels]),
        )
    test = read_official_mat(fetch("test_32x32.mat"))
    return DigitData(f"svhn{':' + arg if arg else ''}", train, test)


def data_files(spec: str, recorded: bool = False) -> tuple[frozenset[str], frozenset[str]]:
    """The names of the files a spec's digits come from, and of those its test split comes from
    (by name, so one file reached by two paths is one). Two specs share test digits when one's
    files hold the other's test split: a `train_32x32.mat` with its sibling and `test_32x32.mat`,
    `svhn` and `svhn:extra`, `synthetic` of any size (the same generator and seeds). A `recorded`
    spec (a run's, perhaps relative to another folder) counts its sibling whether it is found or not."""
    from housenum.data.formats import sibling_name, test_sibling

    name, _, arg = spec.partition(":")
    if name == "synthetic":
        return frozenset({"synthetic"}), frozenset({"synthetic"})
    if name == "svhn" and not Path(spec).exists():
        train = {"train_32x32.mat"} | ({"extra_32x32.mat"} if arg == "extra" else set())
        return frozenset(train | {"test_32x32.mat"}), frozenset({"test_32x32.mat"})
    path = Path(spec)
    if path.suffix.lower() == ".mat":
        sibling = sibling_name(path) if recorded else getattr(test_sibling(path), "name", None)
        if sibling is not None:
            return frozenset({path.name, sibling}), frozenset({sibling})
    return frozenset({path.name}), frozenset({path.name})


__all__ = ["DEFAULT_SPEC", "DigitData", "DigitSet", "data_files", "load_digits"]
