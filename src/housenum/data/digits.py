"""The in-memory form every digit source is loaded into."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from housenum.errors import DataFormatError


@dataclass
class DigitSet:
    """Images (N, 32, 32, C) as uint8 (or float32 0..255 for the course file) with labels 0..9.

    `sources` names the photo each digit was cut from, when known, so validation can split
    by photo instead of leaking neighbouring digits across the split.
    """

    images: np.ndarray
    labels: np.ndarray
    sources: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.ndim == 3:
            self.images = self.images[..., None]
        if self.images.ndim != 4 or self.images.shape[1:3] != (32, 32):
            raise DataFormatError(
                f"images must have shape (N, 32, 32) or (N, 32, 32, C), got {self.images.shape}"
            )
        if self.images.shape[3] not in (1, 3):
            raise DataFormatError(f"images must have 1 or 3 channels, got {self.images.shape[3]}")
        labels = np.asarray(self.labels).reshape(-1)
        if len(labels) != len(self.images):
            raise DataFormatError(f"{len(self.images)} images but {len(labels)} labels")
        if labels.size and labels.dtype.kind not in "iuf":   # complex or bool labels are no digits either
            raise DataFormatError(f"labels must be numbers, got dtype {labels.dtype}")
        bad = ~np.isin(labels, np.arange(10)) if labels.size else np.zeros(0, bool)   # 3.5 and nan too
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DataFormatError(f"labels must be whole numbers 0..9: {int(bad.sum()):,} are not; the first is "
                                  f"{labels[first].item()!r}, at index {first:,}")
        self.labels = labels.astype(np.int64)
        if self.sources is not None:
            self.sources = np.asarray(self.sources).astype(str)
            if len(self.sources) != len(self.labels):
                raise DataFormatError(f"{len(self.labels)} labels but {len(self.sources)} sources")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def channels(self) -> int:
        return self.images.shape[3]

    def subset(self, index: np.ndarray) -> DigitSet:
        sources = None if self.sources is None else self.sources[index]
        return DigitSet(self.images[index], self.labels[index], sources)

    def joined(self, other: DigitSet) -> DigitSet:
        """Both sets in one (sources kept only where both have them)."""
        sources = None if self.sources is None or other.sources is None \
            else np.concatenate([self.sources, other.sources])
        return DigitSet(np.concatenate([self.images, other.images.astype(self.images.dtype)]),
                        np.concatenate([self.labels, other.labels]), sources)

    def with_channels(self, channels: int) -> DigitSet:
        """Convert to greyscale (ITU-R 601 luma, as the course file) or check RGB is available."""
        if channels == self.channels:
            return self
        if channels == 1:
            grey = self.images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            if self.images.dtype == np.uint8:
                grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
            return DigitSet(grey[..., None], self.labels, self.sources)
        if channels == 3:
            raise DataFormatError("this data is greyscale only; use --channels 1")
        raise DataFormatError(f"channels must be 1 or 3, got {channels!r}")


@dataclass
class DigitData:
    """A named dataset: train and test splits plus any extra splits a file carries."""

    name: str
    train: DigitSet
    test: DigitSet
    extra: dict[str, DigitSet] = field(default_factory=dict)
    spec: str | None = None   # what `load_digits` loaded it from; `train` checks it against its config

    def with_channels(self, channels: int) -> DigitData:
        return DigitData(
            self.name,
            self.train.with_channels(channels),
            self.test.with_channels(channels),
            {k: v.with_channels(channels) for k, v in self.extra.items()},
            self.spec,
        )
