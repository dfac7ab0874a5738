"""Recognise single digits in image files of any size or mode, with the same preprocessing as training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from housenum.checkpoint import LoadedModel, load_model
from housenum.preprocess import image_to_digit, open_image, pixels_to_tensor


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
        return image_to_digit(open_image(image), self.loaded.channels)

    @torch.no_grad()
    def predict_arrays(self, digits: np.ndarray, top_k: int = 3) -> list[DigitPrediction]:
        """digits: (N, 32, 32, C) uint8 as made by `prepare`."""
        probs = torch.softmax(self.loaded.model(pixels_to_tensor(digits)), 1)
        values, indices = probs.topk(min(max(top_k, 1), 10), dim=1)
        return [
            DigitPrediction(int(ix[0]), float(v[0]), [(int(i), float(p)) for i, p in zip(ix, v)])
            for v, ix in zip(values, indices)
        ]

    def predict(self, images: list, top_k: int = 3) -> list[DigitPrediction]:
        if not images:
            return []
        return self.predict_arrays(np.stack([self.prepare(i) for i in images]), top_k)


def predict_digits(images: list, model: str | Path | None = None, top_k: int = 3) -> list[DigitPrediction]:
    """Paths, bytes, PIL images or arrays -> one prediction each (None: the shipped model)."""
    return DigitRecognizer(model).predict(images, top_k)
