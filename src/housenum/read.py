"""Read the whole house number in a street photo: `read_number(image)` and `NumberReader`.

A photo is read in two looks (see `housenum.models.reader`): the localiser finds the number's box
in the whole photo, then the reader transcribes a crop around that box. The localiser looks twice:
the second time at a region cut around its first box so that the number fills it as much as in
the training photos (the official test photos show smaller, less centred numbers). Each digit the reader
places is then cut out as a 32x32 crop and classified by the digit model too (trained on five
times as many digits as the reader has photos); the reading uses the product of both opinions.
The networks run in ONNX Runtime when the exported `.onnx` files sit beside the checkpoint
(faster on a CPU), else in PyTorch.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from housenum.errors import ArgumentError, ModelError, brief, check_whole
from housenum.models.reader import (
    CONTEXT, CTC_BLANK, EXPAND, MAX_DIGITS, CTCReader, ReaderArch, ReaderFromContext,
    context_crop, context_region, create_localizer, create_reader, decode_box, localizer_box, localizer_view,
    split_reader_output,
)
from housenum.preprocess import image_batch, image_to_digit, open_each, open_image, pixels_to_tensor

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_READER = WEIGHTS_DIR / "reader.pt"
READER_FORMAT = "housenum-reader/1"
ONNX_SUFFIXES = (".loc.onnx", ".read.onnx")  # beside reader.pt: reader.loc.onnx, reader.read.onnx
# Median share of the photo's width and height the number box fills in the training photos (train_*
# of ../shared/data/svhn/numbers); the official test photos' numbers are smaller: 0.18 and 0.48.
TRAIN_BOX_SHARE = (0.29, 0.71)
# ONNX Runtime threads per session by default; the whole reading, median per photo on the 2-core
# machine (benchmarks/reader_speed.py, two runs each): 2 threads 14.7-15.9 ms, 1 thread 16.6-20.3 ms
ONNX_THREADS = min(2, os.cpu_count() or 1)
MIN_SIDE = 8             # pixels: a smaller photo holds no readable number (read as None, confidence 0)
DIGIT_MIN_P = 0.2        # positions the number reaches with less probability are not classified
# (0.01 read the same 500 held-out and 181 validation photos right, 3.7 ms per photo slower)
# A photo read with less confidence than SEARCH_BELOW is read again in SEARCH_WINDOWS (left, top as
# shares of the photo, each SEARCH_SIZE of its width and height): small numbers in wide photos are
# missed at the first look. A window's reading wins if it is the most confident and >= SEARCH_ACCEPT
# (0.7: of 200 synthetic walls 5 read as confident numbers, 3 without the search, about 17 at 0.5).
SEARCH_BELOW = 0.5
SEARCH_ACCEPT = 0.7
SEARCH_SIZE = 0.6
SEARCH_WINDOWS = ((0.0, 0.0), (0.4, 0.0), (0.0, 0.4), (0.4, 0.4), (0.2, 0.2))
# A photo still unsure after those is read once more in FINE_WINDOWS, a 3x3 grid of windows FINE_SIZE
# of its width and height: a number under a tenth of the photo's width is still smaller in a 60%
# window than any the localiser trained on. A fine window's reading needs FINE_ACCEPT, chosen on 400
# synthetic walls (seed 4242, not the benchmark's) as above every false number the grid found there
# (0.70-0.87); at 0.7 the grid read 4 more of the benchmark's 200 walls as numbers.
FINE_SIZE = 0.35
FINE_WINDOWS = tuple((x, y) for y in (0.0, 0.325, 0.65) for x in (0.0, 0.325, 0.65))
FINE_ACCEPT = 0.9
SEARCH_TIERS = ((SEARCH_WINDOWS, SEARCH_SIZE, SEARCH_ACCEPT), (FINE_WINDOWS, FINE_SIZE, FINE_ACCEPT))
# A photo longer than this on either side is shrunk to it before reading, the boxes scaled back: the
# networks see the whole photo at 64x128 and the number at 64x64, so a 40-Mpixel photo only costs
# memory (it took 3 GB and seconds) and gives them nothing a smaller one does not. SVHN photos are
# at most 876 pixels long; a number 4% of a phone photo's width still spans 64 pixels at 1,600.
MAX_SIDE = 1600


@dataclass
class Reading:
    """The number read from one photo and the probability of that reading. When the reader sees
    no number, `number` is None and `confidence` is 1 - P(no number): low when it is sure (when a
    number is withheld as unsure, `guess` holds it and `confidence` is still its probability)."""

    number: str | None
    confidence: float
    boxes: list[list[int]] = field(default_factory=list)  # [left, top, width, height, digit], photo pixels
    number_box: list[int] | None = None                    # [left, top, width, height] the localiser found
    guess: str | None = None                               # the number withheld as unsure (`sure_or_none`)

    def as_json(self) -> dict:
        """The same keys always (`guess` null unless a number was withheld): CLI --json and HTTP alike."""
        return {"number": self.number, "confidence": round(self.confidence, 6), "boxes": self.boxes,
                "guess": self.guess}

    def summary(self) -> str:
        """'123 (97.1%)', 'unsure, perhaps 123 (61.0%)' or 'no number (3.2%)': for people (CLI, drawings)."""
        said = f"unsure, perhaps {self.guess}" if self.guess is not None else self.number or "no number"
        return f"{said} ({self.confidence:.1%})"

    def sure_or_none(self, min_confidence: float) -> Reading:
        """This reading, or with its number withheld (None, kept as `guess`) when its confidence is
        under `min_confidence`: for callers who would rather have no answer than a wrong one. On the
        held-out photos 0.9 kept 72% of the readings, 98% of them right (READER_CARD.md)."""
        if not (isinstance(min_confidence, (int, float, np.number)) and 0 <= min_confidence <= 1):   # NaN too
            raise ArgumentError(f"min_confidence must be a number 0..1, got {min_confidence!r}")
        if self.number is None or self.confidence >= min_confidence:
            return self
        return replace(self, number=None, guess=self.number)


@dataclass
class Photo:
    """A photo as the reader reads it: `image` at most MAX_SIDE pixels on its long side (a larger one
    shrunk), `size` the original's, in whose pixels the readings' boxes are given."""

    image: Image.Image
    size: tuple[int, int]

    @classmethod
    def of(cls, image: Image.Image) -> Photo:
        if not isinstance(image, Image.Image) or image.mode != "RGB":   # RGB for the networks: open_image
            image = open_image(image)                                    # converts any mode, and arrays
        width, height = image.size
        if max(width, height) <= MAX_SIDE:
            return cls(image, image.size)
        shrink = max(width, height) / MAX_SIDE
        small = (max(1, round(width / shrink)), max(1, round(height / shrink)))
        return cls(image.resize(small, Image.Resampling.BOX, reducing_gap=2.0), image.size)

    @property
    def scale(self) -> tuple[float, float]:
        """Original pixels per pixel of `image`, across and down."""
        return self.size[0] / self.image.width, self.size[1] / self.image.height


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
    def __init__(self, localizer: torch.nn.Module, reader: torch.nn.Module, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.localizer = localizer.to(self.device).eval()
        self.reader = ReaderFromContext(reader).to(self.device).eval()   # its crop grid goes along
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
        options.intra_op_num_threads = threads or ONNX_THREADS
        # three sessions (localiser, reader, digit model) take turns on the same cores: threads
        # left spinning between runs starved the next one (2 threads: 51 ms per photo, 15 without)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
        what = "a digit model, which `housenum predict` reads" if "model" in state else "an unknown kind"
        raise ModelError(f"{path}: not a whole-number reader checkpoint (it holds {what})")
    return state


def build_nets(state: dict, path: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    from housenum.checkpoint import check_finite

    try:
        arch = ReaderArch.from_dict(state["arch"])
        localizer, reader = create_localizer(arch), create_reader(arch)
        localizer.load_state_dict({k: v.float() for k, v in state["localizer_state"].items()})
        reader.load_state_dict({k: v.float() for k, v in state["reader_state"].items()})
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as e:   # a foreign or damaged file
        raise ModelError(f"{path}: weights do not fit the reader networks ({brief(e)})") from None
    for net in (localizer, reader):
        check_finite(net.state_dict(), path)
    return localizer.eval(), reader.eval()


def reader_checkpoint_path(model: str | Path | None, option: str | None = None) -> Path:
    """None: the shipped reader; a run folder: its best.pt (else last.pt); or a .pt file."""
    from housenum.checkpoint import checkpoint_path

    return checkpoint_path(model, default=DEFAULT_READER, what="reader", shipped={}, option=option)


class NumberReader:
    """Reads house numbers from photos with a trained localiser + reader.

    `model`: None for the shipped reader, a run folder of `housenum train-reader`, or a .pt.
    `backend`: "auto" (ONNX Runtime when the exported files are beside the checkpoint), "onnx"
    or "torch". `digits`: the digit model that re-reads each digit: True for the shipped one, a
    run folder or .pt, a loaded `DigitRecognizer`, or False to trust the reader's own heads alone.
    `threads`: ONNX Runtime's per session; on the torch backend it is PyTorch's, which is set for
    the whole process (`torch.set_num_threads`), as `housenum.train.train` sets it too.
    `device`: "cpu", "cuda[:N]" or "auto"; a GPU runs the networks in PyTorch.
    """

    def __init__(self, model: str | Path | None = None, backend: str = "auto", threads: int | None = None,
                 device: str = "cpu", digits=True, search: bool = True) -> None:
        from housenum.devices import pick_device

        if backend not in ("auto", "onnx", "torch"):
            raise ModelError(f"unknown backend '{backend}': use auto, onnx or torch")
        if threads is not None:
            check_whole("threads", threads)
        device = pick_device(device)
        if device.type != "cpu" and backend == "onnx":
            raise ModelError(f"backend 'onnx' runs on the CPU here; use backend 'torch' for device '{device}'")
        path = reader_checkpoint_path(model)
        state = read_reader_checkpoint(path)
        onnx = [path.with_name(path.stem + s) for s in ONNX_SUFFIXES]
        if backend == "onnx" and not all(p.exists() for p in onnx):
            raise ModelError(f"{path}: no exported {onnx[0].name} and {onnx[1].name} beside it")
        if backend != "torch" and device.type == "cpu" and all(p.exists() for p in onnx):   # a GPU: PyTorch
            self._nets = _OnnxNets(*onnx, threads)
        else:
            if threads:
                torch.set_num_threads(threads)
            self._nets = _TorchNets(*build_nets(state, path), device)
        self.path = path
        self.card = state.get("card", {})
        self.config = state.get("config", {})
        self.head = ReaderArch.from_dict(state["arch"]).head
        self.digits = _digit_recognizer(digits, threads)
        self.search = search

    @classmethod
    def from_modules(cls, localizer: torch.nn.Module, reader: torch.nn.Module,
                     device: torch.device | str = "cpu") -> NumberReader:
        """A reader over networks in memory (training uses this to validate through this path)."""
        reader_ = cls.__new__(cls)
        reader_._nets = _TorchNets(localizer, reader, device)
        reader_.path, reader_.card, reader_.config, reader_.digits, reader_.search = None, {}, {}, None, False
        reader_.head = "ctc" if isinstance(reader, CTCReader) else "multi"
        return reader_

    @property
    def backend(self) -> str:
        return self._nets.name

    def read(self, image) -> Reading:
        """One photo: a path, bytes, PIL image or (H, W[, 3]) array (uint8, or floats 0..1 or 0..255)."""
        return self.read_many([image])[0]

    def read_many(self, images, batch_size: int = 64) -> list[Reading]:
        """Photos in batches; each is opened with `open_image` (clear `ImageError`s for bad input)
        and shrunk to `Photo`'s size at once, so a batch of huge photos never sits in memory whole."""
        check_whole("batch_size", batch_size)
        images = image_batch(images, "read_many")
        out: list[Reading] = []
        for start in range(0, len(images), batch_size):
            photos = open_each(images[start:start + batch_size], self.prepare, start, len(images))
            out += self.read_photos(photos)[1]
        return out

    @staticmethod
    def prepare(image) -> Photo:
        """Anything `read` takes, opened and shrunk as the reader reads it (a `Photo` as it is)."""
        return image if isinstance(image, Photo) else Photo.of(open_image(image))

    def read_photos(self, photos: list) -> tuple[RawOutputs, list[Reading]]:
        """Opened photos (PIL images or `Photo`s) -> the networks' outputs at the first try, and the
        readings (after the window search for unsure ones, when `search` is on); boxes in the
        photos' own pixels."""
        photos = [p if isinstance(p, Photo) else Photo.of(p) for p in photos]
        images = [p.image for p in photos]
        raw = self.raw(images)
        readings = decode(raw, [p.size for p in images])
        if self.search:
            readings = self.search_windows(images, readings)
        for i, p in enumerate(photos):
            if min(p.size) < MIN_SIDE:   # the networks would still find "digits" in a few pixels
                readings[i] = Reading(None, 0.0, [], [0, 0, *p.size])
            elif p.image.size != p.size:
                sx, sy = p.scale
                readings[i] = _scaled(readings[i], sx, sy)
                raw.number_boxes[i] = raw.number_boxes[i] * (sx, sy, sx, sy)
        return raw, readings

    def search_windows(self, photos: list, readings: list[Reading]) -> list[Reading]:
        """Read the photos read with less than SEARCH_BELOW confidence again in the windows of each
        of SEARCH_TIERS in turn (the coarse windows, then the fine grid for photos still unsure) and
        keep, per photo, the most confident reading that reaches the tier's acceptance (held-out
        photos 0.796 -> 0.868 with the coarse windows: their numbers are often small; validation
        0.845 either way)."""
        for windows, size, accept in SEARCH_TIERS:
            readings = self._search(photos, readings, windows, size, accept)
        return readings

    def _search(self, photos: list, readings: list[Reading], windows, size: float, accept: float) -> list[Reading]:
        unsure = [i for i, r in enumerate(readings)
                  if (r.number is None or r.confidence < SEARCH_BELOW) and min(photos[i].size) >= MIN_SIDE]
        if not unsure:
            return readings
        crops, offsets = [], []
        for i in unsure:
            width, height = photos[i].size
            for fx, fy in windows:
                left, top = int(fx * width), int(fy * height)
                right, bottom = int((fx + size) * width), int((fy + size) * height)
                crops.append(photos[i].crop((left, top, max(right, left + 1), max(bottom, top + 1))))
                offsets.append((left, top))
        found = decode(self.raw(crops), [c.size for c in crops])
        out = list(readings)
        for j, i in enumerate(unsure):
            best = readings[i] if readings[i].number else None
            for k in range(j * len(windows), (j + 1) * len(windows)):
                r = found[k]
                if r.number and r.confidence >= accept and (best is None or r.confidence > best.confidence):
                    best = _shifted(r, *offsets[k])
            if best is not None:
                out[i] = best
        return out

    def raw(self, photos: list) -> RawOutputs:
        """The networks' outputs for opened photos (PIL RGB images).

        The multi-head reader reads the crops of both looks in one batch and trusts the second,
        except that P(no number) is the larger of the two: zooming into a bare wall can make
        clutter look like digits (of 63 photos without a number, 43 read as none from the
        second look alone, 53 this way; held-out accuracy 0.634 -> 0.632)."""
        first, boxes = self.locate(photos)
        return self.read_at(photos, boxes, first)

    def read_at(self, photos: list, boxes: np.ndarray, first: np.ndarray) -> RawOutputs:
        """The reader's outputs for number boxes already found (`boxes`; `first` the first look's)."""
        context = np.stack([context_crop(p, tuple(b)) for p, b in zip(photos, boxes)])
        if self.head == "ctc":
            out = torch.from_numpy(self._nets.read(context))
            return RawOutputs(boxes, column_probs=torch.softmax(out, 2).numpy())
        first_context = np.stack([context_crop(p, tuple(b)) for p, b in zip(photos, first)])
        out = torch.from_numpy(self._nets.read(np.concatenate([context, first_context])))
        length, digits, digit_boxes = split_reader_output(out[:len(photos)])
        length = torch.softmax(length, 1).numpy()
        first_none = torch.softmax(split_reader_output(out[len(photos):])[0], 1).numpy()[:, 0]
        p_none = np.maximum(length[:, 0], first_none)
        length[:, 1:] *= ((1 - p_none) / np.maximum(1 - length[:, 0], 1e-12))[:, None]
        length[:, 0] = p_none
        raw = RawOutputs(boxes, length, torch.softmax(digits, 2).numpy(), digit_boxes.numpy())
        if self.digits is not None:
            raw.digit_probs = reread_digits(raw, photos, self.digits)
        return raw

    def locate(self, photos: list) -> tuple[np.ndarray, np.ndarray]:
        """Number boxes (N, 4: left, top, right, bottom) in photo pixels from the localiser's first
        look (the whole photo) and its second look (at `zoom_region` around the first box)."""
        pred = localizer_box(self._nets.locate(np.stack([localizer_view(p) for p in photos])))
        first = np.concatenate([decode_box(pred[i:i + 1], *p.size) for i, p in enumerate(photos)])
        regions = [zoom_region(b, p.size) for b, p in zip(first, photos)]
        crops = [p.crop(r) for p, r in zip(photos, regions)]
        pred = localizer_box(self._nets.locate(np.stack([localizer_view(c) for c in crops])))
        boxes = first.copy()
        for i, (crop, (left, top, right, bottom)) in enumerate(zip(crops, regions)):
            if right - left >= 4 and bottom - top >= 4:
                boxes[i] = decode_box(pred[i:i + 1], *crop.size)[0] + (left, top, left, top)
        return first, boxes

    def info(self) -> dict:
        """Model name, card summary and figures (for GET /v1/models)."""
        return {"name": self.card.get("name", self.path.stem if self.path else "in-memory"),
                "task": "whole house number from a street photo",
                "backend": self.backend,
                "path": str(self.path) if self.path else None,
                "summary": self.card.get("summary", ""),
                "digit_model": str(self.digits.loaded.path) if self.digits is not None else None,
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


def zoom_region(box, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The region about `box` (left, top, right, bottom) that it fills by TRAIN_BOX_SHARE, clipped
    to the photo (width, height)."""
    left, top, right, bottom = box
    cx, cy = (left + right) / 2, (top + bottom) / 2
    half_w = max(right - left, 4.0) / TRAIN_BOX_SHARE[0] / 2
    half_h = max(bottom - top, 4.0) / TRAIN_BOX_SHARE[1] / 2
    width, height = size
    return (int(round(max(cx - half_w, 0))), int(round(max(cy - half_h, 0))),
            int(round(min(cx + half_w, width))), int(round(min(cy + half_h, height))))


def digit_box_pixels(boxes: np.ndarray, number_box) -> tuple[np.ndarray, ...]:
    """Reader boxes (fractions of its crop: centre x, centre y, width, height) -> the same in photo
    pixels, for the context region cut around `number_box`."""
    rl, rt, rr, rb = context_region(number_box)
    span = EXPAND / CONTEXT                       # the crop's share of the context region
    cx = rl + (0.5 + (boxes[:, 0] - 0.5) * span) * (rr - rl)
    cy = rt + (0.5 + (boxes[:, 1] - 0.5) * span) * (rb - rt)
    return cx, cy, boxes[:, 2] * span * (rr - rl), boxes[:, 3] * span * (rb - rt)


def reread_digits(raw: RawOutputs, photos: list, recognizer) -> np.ndarray:
    """The reader's digit probabilities times the digit model's, renormalised (a product of
    experts), for each position the number reaches with probability >= DIGIT_MIN_P; the digit
    model sees a square 32x32 crop around the digit's box, as SVHN's cropped digits are cut."""
    reach = 1 - np.cumsum(raw.length_probs, 1)[:, :MAX_DIGITS]      # P(length > k)
    crops, where = [], []
    for i, photo in enumerate(photos):
        cx, cy, w, h = digit_box_pixels(raw.digit_boxes[i], raw.number_boxes[i])
        for k in np.flatnonzero(reach[i] >= DIGIT_MIN_P):
            half = max(w[k], h[k], 2.0) / 2          # a square on the longer side, as SVHN's crops
            region = tuple(int(round(v)) for v in (cx[k] - half, cy[k] - half, cx[k] + half, cy[k] + half))
            crops.append(image_to_digit(photo.crop(region), recognizer.loaded.channels))
            where.append((i, k))
    probs = raw.digit_probs.copy()
    if not crops:
        return probs
    with torch.no_grad():
        model_probs = torch.softmax(recognizer.loaded.model(pixels_to_tensor(np.stack(crops))), 1).numpy()
    rows, cols = np.array(where).T
    fused = probs[rows, cols] * model_probs
    probs[rows, cols] = fused / np.maximum(fused.sum(1, keepdims=True), 1e-12)
    return probs


def _digit_recognizer(digits, threads: int | None):
    """`digits` as NumberReader takes it -> a DigitRecognizer or None (already loaded ones pass)."""
    if digits is False or digits is None:
        return None
    if hasattr(digits, "loaded"):
        return digits
    from housenum.export import load_digit_recognizer

    return load_digit_recognizer(None if digits is True else digits, threads=threads or ONNX_THREADS, spin=False)


def _digit_boxes(boxes: np.ndarray, number_box, digits: np.ndarray, size: tuple[int, int]) -> list[list[int]]:
    """Reader boxes (fractions of its crop) -> [left, top, width, height, digit] in photo pixels."""
    cx, cy, w, h = digit_box_pixels(boxes, number_box)
    width, height = size
    out = []
    for x, y, bw, bh, d in zip(cx, cy, w, h, digits):
        left, top = int(np.clip(round(x - bw / 2), 0, width - 1)), int(np.clip(round(y - bh / 2), 0, height - 1))
        out.append([left, top, max(1, int(round(bw))), max(1, int(round(bh))), int(d)])
    return out


def _shifted(reading: Reading, dx: int, dy: int) -> Reading:
    """A reading of a window, in the coordinates of the photo the window was cut from."""
    boxes = [[left + dx, top + dy, w, h, d] for left, top, w, h, d in reading.boxes]
    box = reading.number_box
    return Reading(reading.number, reading.confidence, boxes,
                   [box[0] + dx, box[1] + dy, box[2], box[3]] if box is not None else None)


def _scaled(reading: Reading, sx: float, sy: float) -> Reading:
    """A reading of a shrunk photo, in the original photo's pixels."""
    def box(left, top, w, h):
        return [round(left * sx), round(top * sy), round(w * sx), round(h * sy)]

    return replace(reading, boxes=[[*box(*b[:4]), b[4]] for b in reading.boxes],
                   number_box=box(*reading.number_box) if reading.number_box is not None else None)


@functools.lru_cache(maxsize=4)
def _cached_reader(path: str, stamp: tuple[int, int]) -> NumberReader:
    return NumberReader(path)


def read_number(image, model: str | Path | None = None) -> Reading:
    """Read one photo with the shipped reader (or `model`); the reader is loaded once and cached
    until its checkpoint file changes (a run folder retrained in a notebook is read anew)."""
    path = reader_checkpoint_path(model)
    st = path.stat()
    return _cached_reader(str(path.resolve()), (st.st_ino, st.st_mtime_ns)).read(image)


__all__ = ["NumberReader", "Photo", "RawOutputs", "Reading", "decode", "read_number"]
