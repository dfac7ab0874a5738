"""Leak-free splits: by source photo when known, else the notebook's fraction split."""

from __future__ import annotations

import zlib

import numpy as np

from housenum.data.digits import DigitSet


def source_fold(sources: np.ndarray, n_folds: int, salt: str = "") -> np.ndarray:
    """Assign each source photo a stable fold 0..n_folds-1 (a hash, so it does not move with seed)."""
    unique, inverse = np.unique(sources, return_inverse=True)
    folds = np.array([zlib.crc32(f"{salt}{s}".encode()) % n_folds for s in unique])
    return folds[inverse]


TEST_FRACTION, TEST_SALT = 0.2, "test"   # the test split of files with source photos (formats.py)


def held_out_by_source(sources: np.ndarray, fraction: float, salt: str) -> np.ndarray:
    """Mask of the items whose source photo is among about `fraction` of them (a stable hash)."""
    buckets = 1000
    return source_fold(sources, buckets, salt) < round(fraction * buckets)


def holdout_by_source(data: DigitSet, fraction: float, salt: str) -> tuple[DigitSet, DigitSet]:
    """Split into (rest, held-out) with about `fraction` of the source photos held out."""
    held = held_out_by_source(data.sources, fraction, salt)
    return data.subset(np.flatnonzero(~held)), data.subset(np.flatnonzero(held))


def validation_split(
    data: DigitSet, fraction: float = 0.2, fold: int | None = None, n_folds: int = 5
) -> tuple[DigitSet, DigitSet]:
    """Return (train, validation).

    With sources, whole photos go to one side; `fold` picks which of `n_folds` source folds is
    validation (for cross-validation). Without sources this is Keras' `validation_split`: the
    last `fraction` of the samples, unshuffled, as the notebook did.
    """
    if data.sources is not None:
        if fold is None:
            return holdout_by_source(data, fraction, salt="validation")
        is_val = source_fold(data.sources, n_folds, salt="cv") == fold
        return data.subset(np.flatnonzero(~is_val)), data.subset(np.flatnonzero(is_val))
    if fold is not None:
        is_val = np.arange(len(data)) % n_folds == fold
        return data.subset(np.flatnonzero(~is_val)), data.subset(np.flatnonzero(is_val))
    n_val = int(round(len(data) * fraction))
    cut = len(data) - n_val
    return data.subset(np.arange(cut)), data.subset(np.arange(cut, len(data)))
