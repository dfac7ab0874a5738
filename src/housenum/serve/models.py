"""The models the service holds: the digit recognizer (ONNX Runtime when exported, else PyTorch) and
the house-number reader when `housenum.read` is installed, with the cards that /v1/models shows."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from housenum.checkpoint import read_checkpoint
from housenum.errors import HousenumError
from housenum.export import load_digit_recognizer, runtime_of
from housenum.predict import DigitRecognizer

log = logging.getLogger(__name__)

# Checkpoint entries worth showing as the model's figures (the rest are weights and optimiser state).
CHECKPOINT_FIGURES = ("best_val_acc", "epoch", "train_seconds")


@dataclass
class ServedModels:
    digits: DigitRecognizer
    digits_card: dict
    reader: object | None = None  # housenum.read.NumberReader, when available
    reader_card: dict = field(default_factory=dict)
    reader_unavailable: str | None = None  # why there is no reader

    @property
    def digits_name(self) -> str:
        return self.digits_card["name"]

    @property
    def reader_name(self) -> str:
        return str(self.reader_card.get("name") or self.reader_card.get("model") or "reader")


def load_served_models(digit_model: str | Path | None, number_model: str | Path | None,
                       threads: int | None = None, int8: bool = False) -> ServedModels:
    digits = load_digit_recognizer(digit_model, threads, int8=int8)
    # one call ahead of the first request: allocators and kernels warm up here, not on a user's time
    digits.predict_arrays(np.zeros((1, 32, 32, digits.loaded.channels), np.uint8))
    models = ServedModels(digits, digit_card(digits))
    try:
        from housenum.read import NumberReader
    except ImportError as e:
        models.reader_unavailable = f"housenum.read is not installed ({e})"
        return models
    try:
        models.reader = NumberReader(number_model, threads=threads, digits=digits)
        models.reader_card = dict(models.reader.info())
    except HousenumError as e:
        models.reader_unavailable = f"its model cannot be loaded: {e} (serve one with --number-model RUN_DIR)"
        log.warning(models.reader_unavailable)
    return models


def digit_card(recognizer: DigitRecognizer) -> dict:
    """Name, runtime, file, training config and figures; plus a model card JSON (`digits.json`
    beside `digits.pt`) when one ships with the weights."""
    loaded = recognizer.loaded
    state = read_checkpoint(loaded.path)
    card = {"name": loaded.name, "task": "digit", "runtime": runtime_of(recognizer), "channels": loaded.channels,
            "input": "32x32 crop around one digit", "checkpoint": loaded.path.name,
            "figures": {k: state[k] for k in CHECKPOINT_FIGURES if k in state},
            "config": loaded.config}
    card_file = loaded.path.with_suffix(".json")
    if card_file.exists():
        try:
            card["card"] = json.loads(card_file.read_text())
        except (OSError, ValueError) as e:
            log.warning("%s: unreadable model card (%s)", card_file, e)
    return card
