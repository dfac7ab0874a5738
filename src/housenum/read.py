"""Read the whole house number in a street photo: `read_number(image)` and `NumberReader`.

A photo is read in two looks (see `housenum.models.reader`): the localiser finds the number's box
in the whole photo, then the reader transcribes a crop around that box. The networks run in ONNX
Runtime when the exported `.onnx` files sit beside the checkpoint (faster on a CPU), else in PyTorch.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from housenum.errors import ModelError
from housenum.models.reader import (
    CONTEXT, CTC_BLANK, EXPAND, MAX_DIGITS, Localizer, ReaderArch, ReaderFromContext, context_crop, context_region,
    create_reader, decode_box, localizer_view, split_reader_output,
)
from housenum.preprocess import open_image

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_READER = WEIGHTS_DIR / "reader.pt"
READER_FORMAT = "housenum-reader/1"
ONNX_SUFFIXES = (".loc.onnx", ".read.onnx")  # beside reader.pt: reader.loc.onnx, reader.read.onnx


@dataclass
class Reading:
    """The number read from one photo and the probability of that reading. When the reader sees
    no number, `number` is None and `confidence` is 1 - P(no number): low when it is sure."""

    number: str | None
    confidence: float
    boxes: list[list[int]] = field(default_factory=list)  # [left, top, width, height, digit], photo pixels
    number_box: list[int] | None = None                    # [left, top, width, height] the localiser found

    def as_json(self) -> dict:
        return {"number": self.number, "confidence": round(self.confidence, 6), "boxes": self.boxes}


@dataclass
class RawOutputs:
    """What the networks said about a batch, before decoding: boxes in photo pixels and probabilities.

    A multi-head reader gives length, digit and digit-box outputs; a CTC reader gives columns.
    """

    number_boxes: np.ndarray                  # (N, 4) left, top, right, bottom
    length_probs: np.ndarray | None = None    # (N, 6)
    digit_probs: np.ndarray | None = None     # (N, 5, 10)
    digit_boxes: np.ndarray | None = None     # (N, 5, 4) centre x, centre y, width, height, crop fractions
    column_probs: np.ndarray | None = None    # (N, 16, 11): digits 0..9 and blank per column


class _TorchNets:
    def __init__(self, localizer: Localizer, reader: torch.nn.Module, device: torch.device | str = "cpu") -> None:
        self.localizer = localizer.eval()
        self.reader = ReaderFromContext(reader).eval()
        self.device = torch.device(device)
        self.name = "pytorch"

    def locate(self, views: np.ndarray) -> np.ndarray:
        return self._run(self.localizer, views)

    def read(self, contexts: np.ndarray) -> np.ndarray:
        return self._run(self.reader, contexts)

    @torch.no_grad()
    def _run(self, net: torch.nn.Module, x: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(x).to(self.device).permute(0, 3, 1, 2).float().div_(255)
        return net(x).float().cpu().numpy()


class _OnnxNets:
    def __init__(self, loc_path: Path, read_path: Path, threads: int | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # one thread unless asked: 5.5 ms per photo against 15.6 ms with two on the shared
        # 2-core machine (benchmarks/reader_speed.py)
        options.intra_op_num_threads = threads or 1
        try:
            self.loc = ort.InferenceSession(str(loc_path), options, providers=["CPUExecutionProvider"])
            self.read_session = ort.InferenceSession(str(read_path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for unreadable models
            raise ModelError(f"{loc_path.parent}: cannot load the ONNX reader ({e})") from None
        self.name = "onnxruntime"

    def locate(self, views: np.ndarray) -> np.ndarray:
        return self._run(self.loc, views)

    def read(self, contexts: np.ndarray) -> np.ndarray:
        return self._run(self.read_session, contexts)

    @staticmethod
    def _run(session, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float32) / np.float32(255)
        return session.run(None, {session.get_inputs()[0].name: x})[0]


def read_reader_checkpoint(path: Path) -> dict:
    from housenum.checkpoint import read_checkpoint

    state = read_checkpoint(path)
    if state.get("kind") != READER_FORMAT:
        raise ModelError(f"{path}: not a whole-number reader checkpoint (a digit model? use `housenum predict`)")
    return state


def build_nets(state: dict, path: Path) -> tuple[Localizer, torch.nn.Module]:
    arch = ReaderArch.from_dict(state["arch"])
    localizer, reader = Localizer(arch), create_reader(arch)
    try:
        localizer.load_state_dict({k: v.float() for k, v in state["localizer_state"].items()})
        reader.load_state_dict({k: v.float() for k, v in state["reader_state"].items()})
    except (RuntimeError, KeyError) as e:
        raise ModelError(f"{path}: weights do not fit the reader networks ({e})") from None
    return localizer.eval(), reader.eval()


def reader_checkpoint_path(model: str | Path | None) -> Path:
    """None: the shipped reader; a run folder: its best.pt (else last.pt); or a .pt file."""
    from housenum.checkpoint import checkpoint_path

    return checkpoint_path(model, default=DEFAULT_READER, what="reader")


class NumberReader:
    """Reads house numbers from photos with a trained localiser + reader.

    `model`: None for the shipped reader, a run folder of `housenum train-reader`, or a .pt.
    `backend`: "auto" (ONNX Runtime when the exported files are beside the checkpoint), "onnx"
    or "torch".
    """

    def __init__(self, model: str | Path | None = None, backend: str = "auto", threads: int | None = None,
                 device: str = "cpu") -> None:
        if backend not in ("auto", "onnx", "torch"):
            raise ModelError(f"unknown backend '{backend}': use auto, onnx or torch")
        path = reader_checkpoint_path(model)
        state = read_reader_checkpoint(path)
        onnx = [path.with_name(path.stem + s) for s in ONNX_SUFFIXES]
        if backend == "onnx" and not all(p.exists() for p in onnx):
            raise ModelError(f"{path}: no exported {onnx[0].name} and {onnx[1].name} beside it")
        if backend != "torch" and all(p.exists() for p in onnx):
            self._nets = _OnnxNets(*onnx, threads)
        else:
            if threads:
                torch.set_num_threads(threads)
            self._nets = _TorchNets(*build_nets(state, path), device)
        self.path = path
        self.card = state.get("card", {})
        self.config = state.get("config", {})

    @classmethod
    def from_modules(cls, localizer: Localizer, reader: torch.nn.Module,
                     device: torch.device | str = "cpu") -> NumberReader:
        """A reader over networks in memory (training uses this to validate through this path)."""
        reader_ = cls.__new__(cls)
        reader_._nets = _TorchNets(localizer, reader, device)
        reader_.path, reader_.card, reader_.config = None, {}, {}
        return reader_

    @property
    def backend(self) -> str:
        return self._nets.name

    def read(self, image) -> Reading:
        """One photo: a path, bytes, PIL image or (H, W, 3) uint8 array."""
        return self.read_many([image])[0]

    def read_many(self, images, batch_size: int = 64) -> list[Reading]:
        """Photos in batches; each is opened with `open_image` (clear `ImageError`s for bad input)."""
        out: list[Reading] = []
        images = list(images)
        for start in range(0, len(images), batch_size):
            photos = [open_image(x) for x in images[start:start + batch_size]]
            out += decode(self.raw(photos), [p.size for p in photos])
        return out

    def raw(self, photos: list) -> RawOutputs:
        """The networks' outputs for opened photos (PIL RGB images)."""
        pred = self._nets.locate(np.stack([localizer_view(p) for p in photos]))
        boxes = np.concatenate([decode_box(pred[i:i + 1], *p.size) for i, p in enumerate(photos)])
        context = np.stack([context_crop(p, tuple(b)) for p, b in zip(photos, boxes)])
        out = torch.from_numpy(self._nets.read(context))
        if out.ndim == 3:
            return RawOutputs(boxes, column_probs=torch.softmax(out, 2).numpy())
        length, digits, digit_boxes = split_reader_output(out)
        return RawOutputs(boxes, torch.softmax(length, 1).numpy(), torch.softmax(digits, 2).numpy(),
                          digit_boxes.numpy())

    def info(self) -> dict:
        """Model name, card summary and figures (for GET /v1/models)."""
        return {"name": self.card.get("name", self.path.stem if self.path else "in-memory"),
                "task": "whole house number from a street photo",
                "backend": self.backend,
                "path": str(self.path) if self.path else None,
                "summary": self.card.get("summary", ""),
                "figures": self.card.get("figures", {}),
                "max_digits": MAX_DIGITS}

    def evaluate(self, photos, batch_size: int = 64) -> dict:
        """Quick validation figures (used by training): whole-number accuracy, mean box IoU, NLL."""
        from housenum.evaluate_numbers import score

        return score(self, photos, batch_size).summary()


def decode(raw: RawOutputs, sizes: list[tuple[int, int]]) -> list[Reading]:
    """The most probable reading of each photo (see `Reading` for `confidence` when None)."""
    out = []
    for i, size in enumerate(sizes):
        left, top, right, bottom = raw.number_boxes[i]
        number_box = [int(round(left)), int(round(top)), int(round(right - left)), int(round(bottom - top))]
        if raw.column_probs is not None:
            digits, confidence, boxes = _decode_columns(raw.column_probs[i], raw.number_boxes[i], size)
        else:
            digits, confidence, boxes = _decode_heads(raw, i, size)
        number = "".join(str(d) for d in digits) or None
        out.append(Reading(number, confidence, boxes if number else [], number_box))
    return out


def _decode_heads(raw: RawOutputs, i: int, size: tuple[int, int]) -> tuple[list[int], float, list[list[int]]]:
    """Multi-head: the length and digits maximising P(length) * prod P(digit). "No number" is
    returned only when P(no number) >= 0.5, so a None reading never has confidence above 0.5;
    otherwise an uncertain photo gets its best number with that number's (low) probability."""
    p_none = float(raw.length_probs[i][0])
    length, score = best_length(raw.length_probs[i], raw.digit_probs[i], allow_empty=p_none >= 0.5)
    if length == 0:
        return [], 1 - p_none, []
    digits = raw.digit_probs[i].argmax(1)[:length]
    return list(digits), float(math.exp(score)), _digit_boxes(raw.digit_boxes[i, :length], raw.number_boxes[i],
                                                              digits, size)


def _decode_columns(probs: np.ndarray, number_box, size: tuple[int, int]) -> tuple[list[int], float, list[list[int]]]:
    """CTC: the best path (argmax per column, repeats merged, blanks dropped); its probability is
    the confidence. A digit's box spans the columns that emitted it, at the number box's height."""
    best = probs.argmax(1)
    path_p = float(np.prod(probs.max(1)))
    digits, spans, previous = [], [], CTC_BLANK
    for t, c in enumerate(best):
        if c != CTC_BLANK and c == previous:
            spans[-1][1] = t
        elif c != CTC_BLANK:
            digits.append(int(c))
            spans.append([t, t])
        previous = c
    if not digits:
        return [], 1 - path_p, []
    steps = len(best)
    boxes = np.array([[((a + b + 1) / 2) / steps, 0.5, (b - a + 1) / steps, 1 / EXPAND] for a, b in spans])
    return digits, path_p, _digit_boxes(boxes, number_box, np.array(digits), size)


def best_length(length_probs: np.ndarray, digit_probs: np.ndarray, allow_empty: bool = True) -> tuple[int, float]:
    """(length, log probability of the best reading of that length), over lengths 0..5 (1..5
    without `allow_empty`)."""
    logs = np.concatenate([[0.0], np.cumsum(np.log(np.maximum(digit_probs.max(1), 1e-12)))])
    scores = np.log(np.maximum(length_probs, 1e-12)) + logs
    if not allow_empty:
        scores[0] = -np.inf
    n = int(scores.argmax())
    return n, float(scores[n])


def _digit_boxes(boxes: np.ndarray, number_box, digits: np.ndarray, size: tuple[int, int]) -> list[list[int]]:
    """Reader boxes (fractions of its crop) -> [left, top, width, height, digit] in photo pixels."""
    rl, rt, rr, rb = context_region(number_box)
    span = EXPAND / CONTEXT                       # the crop's share of the context region
    cx = rl + (0.5 + (boxes[:, 0] - 0.5) * span) * (rr - rl)
    cy = rt + (0.5 + (boxes[:, 1] - 0.5) * span) * (rb - rt)
    w, h = boxes[:, 2] * span * (rr - rl), boxes[:, 3] * span * (rb - rt)
    width, height = size
    out = []
    for x, y, bw, bh, d in zip(cx, cy, w, h, digits):
        left, top = int(np.clip(round(x - bw / 2), 0, width - 1)), int(np.clip(round(y - bh / 2), 0, height - 1))
        out.append([left, top, max(1, int(round(bw))), max(1, int(round(bh))), int(d)])
    return out


@functools.lru_cache(maxsize=4)
def _cached_reader(model: str | None) -> NumberReader:
    return NumberReader(model)


def read_number(image, model: str | Path | None = None) -> Reading:
    """Read one photo with the shipped reader (or `model`); the reader is loaded once and cached."""
    return _cached_reader(None if model is None else str(model)).read(image)


__all__ = ["NumberReader", "RawOutputs", "Reading", "decode", "read_number"]
