"""Recognise single digits in image files of any size or mode, with the same preprocessing as training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from housenum.checkpoint import LoadedModel, load_model
from housenum.errors import ArgumentError, ImageError, is_whole
from housenum.preprocess import image_batch, image_to_digit, open_each, open_image, pixels_to_tensor

MIN_DIGIT_SIDE = 8   # pixels: SVHN's shortest digit boxes are 11 high (and a "1" as little as 3 wide)


@dataclass
class DigitPrediction:
    digit: int
    confidence: float
    top_k: list[tuple[int, float]]

    def as_json(self) -> dict:
        return {"digit": self.digit, "confidence": self.confidence,
                "top_k": [{"digit": d, "probability": p} for d, p in self.top_k]}


class DigitRecognizer:
    """A loaded digit model; reuse one instance for many images."""

    def __init__(self, model: str | Path | None = None) -> None:
        self.loaded: LoadedModel = load_model(model)

    def prepare(self, image) -> np.ndarray:
        img = open_image(image)
        if min(img.size) < 2 or max(img.size) < MIN_DIGIT_SIDE:   # blown up to 32x32, a few pixels read as
            name = str(image) if isinstance(image, (str, Path)) else "image"   # a confident "digit"
            raise ImageError(f"{name}: {img.width}x{img.height} pixels is too small to hold a digit (it needs a "
                             f"side of {MIN_DIGIT_SIDE} pixels or more, and none under 2)")
        return image_to_digit(img, self.loaded.channels)

    @torch.no_grad()
    def predict_arrays(self, digits: np.ndarray, top_k: int = 3) -> list[DigitPrediction]:
        """digits: (N, 32, 32, C) uint8 as made by `prepare` (C the model's channels)."""
        check_top_k(top_k)
        digits = np.asarray(digits)
        channels = self.loaded.channels
        if digits.ndim != 4 or digits.shape[1:] != (32, 32, channels):
            raise ImageError(f"digit arrays must be (N, 32, 32, {channels}) for this {channels}-channel model, "
                             f"got {digits.shape}; `predict` takes images of any size")
        if digits.dtype != np.uint8:
            raise ImageError(f"digit arrays must be uint8 0..255, got {digits.dtype}; `predict` converts other images")
        probs = torch.softmax(self.loaded.model(pixels_to_tensor(digits)), 1)
        values, indices = probs.topk(top_k, dim=1)
        return [
            DigitPrediction(int(ix[0]), float(v[0]), [(int(i), float(p)) for i, p in zip(ix, v)])
            for v, ix in zip(values, indices)
        ]

    def predict(self, images, top_k: int = 3) -> list[DigitPrediction]:
        """A list of images (paths, bytes, PIL images, arrays) or one (N, H, W[, C]) array of them."""
        check_top_k(top_k)
        images = image_batch(images, "predict")
        if len(images) == 0:
            return []
        return self.predict_arrays(np.stack(open_each(images, self.prepare)), top_k)


def check_top_k(top_k: int) -> None:
    if not is_whole(top_k) or not 1 <= top_k <= 10:
        raise ArgumentError(f"top_k must be an integer 1..10 (there are 10 digits), got {top_k!r}")


def predict_digits(images: list, model: str | Path | None = None, top_k: int = 3) -> list[DigitPrediction]:
    """Paths, bytes, PIL images or arrays -> one prediction each (None: the shipped model)."""
    return DigitRecognizer(model).predict(images, top_k)
