"""Whole-number evaluation: sequence and per-digit accuracy, accuracy by length, coverage at a
precision (accepting only confident readings, as Goodfellow et al. report), and a failures gallery."""

from __future__ import annotations

import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from housenum import plots
from housenum.data.numbers import NumberSet, load_numbers, number_box
from housenum.errors import DataFormatError
from housenum.preprocess import open_image
from housenum.models.reader import CTC_BLANK
from housenum.read import NumberReader, RawOutputs, Reading

PRECISIONS = (0.95, 0.98)
GALLERY_PAGE, GALLERY_PAGES = 40, 25   # failures per gallery page; pages at most (1,000 failures)


@dataclass
class Scored:
    """Every photo's truth, reading, localisation IoU and -log P(true number)."""

    truth: list[str]
    readings: list[Reading]
    iou: np.ndarray
    nll: np.ndarray
    seconds: float = 0.0

    @property
    def correct(self) -> np.ndarray:
        return np.array([r.number == t for r, t in zip(self.readings, self.truth)], bool)

    def summary(self) -> dict:
        return {"accuracy": whole_number_accuracy(self.truth, [r.number for r in self.readings]),
                "mean_iou": float(self.iou.mean()) if len(self.iou) else 0.0,
                "reader_loss": float(self.nll.mean()) if len(self.nll) else 0.0}


def score(reader: NumberReader, photos: NumberSet, batch_size: int = 64, progress: bool = False) -> Scored:
    """Read every photo of `photos` and compare with its label; `progress` shows a bar on a terminal's
    stderr (the official test split is 13,068 photos: a minute and more)."""
    from tqdm.auto import tqdm

    readings, ious, nlls = [], [], []
    t0 = time.perf_counter()
    bar = tqdm(total=len(photos), desc="reading", unit="photo", disable=not (progress and sys.stderr.isatty()),
               leave=False)
    for start in range(0, len(photos), batch_size):
        index = range(start, min(start + batch_size, len(photos)))
        images = [open_image(photos.image(i)) for i in index]
        raw, batch = reader.read_photos(images)
        readings += batch
        for j, i in enumerate(index):
            truth = photos.boxes[i]
            left, top, w, h = batch[j].number_box
            ious.append(box_iou((left, top, left + w, top + h), number_box(truth)))
            nlls.append(true_nll(raw, j, photos.labels[i]))
        bar.update(len(index))
    bar.close()
    return Scored(list(photos.labels), readings, np.array(ious), np.array(nlls), time.perf_counter() - t0)


def true_nll(raw: RawOutputs, i: int, label: str) -> float:
    """-log P(true number) under the reader, given the crop its localiser chose."""
    if raw.column_probs is not None:
        log_probs = torch.from_numpy(np.log(np.maximum(raw.column_probs[i:i + 1], 1e-12))).transpose(0, 1)
        target = torch.tensor([[int(d) for d in label]])
        return float(F.ctc_loss(log_probs, target, torch.tensor([log_probs.shape[0]]), torch.tensor([len(label)]),
                                blank=CTC_BLANK, reduction="sum", zero_infinity=True))
    n = min(len(label), raw.length_probs.shape[1] - 1)
    p = np.log(max(raw.length_probs[i, n], 1e-12))
    p += sum(np.log(max(raw.digit_probs[i, k, int(d)], 1e-12)) for k, d in enumerate(label[:n]))
    return float(-p)


def box_iou(a, b) -> float:
    """IoU of two (left, top, right, bottom) boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def whole_number_accuracy(truth: list[str], read: list[str | None]) -> float:
    return float(np.mean([r == t for r, t in zip(read, truth)])) if truth else 0.0


def digit_accuracy(truth: list[str], read: list[str | None]) -> float:
    """Share of true digits read right at their position (a missing digit counts as wrong)."""
    right = total = 0
    for t, r in zip(truth, read):
        r = r or ""
        right += sum(a == b for a, b in zip(t, r))
        total += len(t)
    return right / total if total else 0.0


def accept_at_precision(confidence: np.ndarray, correct: np.ndarray, precision: float) -> tuple[float, float | None]:
    """(coverage, threshold): the largest share of photos that can be accepted, most confident
    first, keeping accuracy at least `precision` among them, and the lowest confidence accepted
    (what `housenum read --min-confidence` needs for that precision; None when no share reaches it)."""
    if len(correct) == 0:
        return 0.0, None
    order = np.argsort(-confidence, kind="stable")
    running = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(running >= precision)
    if not len(ok):
        return 0.0, None
    return float((ok[-1] + 1) / len(order)), float(confidence[order[ok[-1]]])


@dataclass
class NumberEvaluation:
    data: str
    model: str
    backend: str
    n: int
    accuracy: float
    digit_accuracy: float
    by_length: dict[int, dict]
    coverage: dict[str, float]
    thresholds: dict[str, float | None]   # the confidence from which the coverage is accepted
    mean_iou: float
    photos_per_second: float
    gallery: list[str] = field(default_factory=list)   # failures.png, failures-2.png, ...: the surest first
    failures: list[dict] = field(default_factory=list)
    trained_on: int = 0   # photos that were the reader's own training or validation photos
    held_out_files: str | None = None   # the glob of the photos its run held out, to name in a note

    def as_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}

    def report(self) -> str:
        lines = [f"{self.data}: {self.n} photos, model {self.model} ({self.backend})",
                 f"whole-number accuracy {self.accuracy:.4f}   per-digit accuracy {self.digit_accuracy:.4f}   "
                 f"mean localisation IoU {self.mean_iou:.3f}",
                 "coverage at " + "   ".join(f"{k} precision: {v:.3f}{_from(self.thresholds[k])}"
                                                for k, v in self.coverage.items()),
                 "by length: " + "   ".join(f"{k}: {v['accuracy']:.3f} (n={v['n']})"
                                            for k, v in self.by_length.items()),
                 f"speed {self.photos_per_second:.0f} photos/s (batches of 64)"]
        if self.gallery:
            shown = min(len(self.failures), len(self.gallery) * GALLERY_PAGE)
            pages = self.gallery[0] if len(self.gallery) == 1 else f"{self.gallery[0]} .. {Path(self.gallery[-1]).name}"
            lines.append(f"failures gallery ({shown} of {len(self.failures)}, the surest first): {pages}")
        return "\n".join(lines)


def _from(threshold: float | None) -> str:
    # rounded down: given back as --min-confidence, the printed figure accepts every reading counted
    return "" if threshold is None else f" (confidence >= {math.floor(threshold * 1000) / 1000:.3f})"


def reader_training_photos(config: dict, spec: str | Path, photos: NumberSet) -> tuple[int, str | None]:
    """How many of `photos` trained (or validated) the reader whose run config this is, and the glob
    of the photos its run held out: its data must be the same folder (a path that resolves alike)."""
    from housenum.train_reader import ReaderTrainConfig, split_photos

    trained_on = config.get("data")
    if not trained_on or not Path(str(trained_on)).exists() or not Path(str(spec)).exists():
        return 0, None
    if Path(str(trained_on)).resolve() != Path(str(spec)).resolve():
        return 0, None
    cfg = ReaderTrainConfig.from_dict(config)
    _, _, held = split_photos(photos, cfg)
    return len(photos) - (len(held) if held is not None else 0), cfg.holdout


def evaluate_numbers(spec: str | Path, model: str | Path | None = None, out: Path | None = None,
                     files: str | None = None, backend: str = "auto", digits=True,
                     search: bool = True, progress: bool = False) -> NumberEvaluation:
    """Evaluate a reader on the photos of `spec` (bare `svhn-full` is its test split); `files`
    keeps only photo names matching a glob; `out` receives failures.png; `digits` is the digit
    model that re-reads each digit and `search` the window search for unsure photos (see `NumberReader`)."""
    photos = load_numbers(spec, default_split="test")
    if files is not None:   # "" matches nothing, and says so, rather than meaning every photo
        photos = photos.matching(files)
    if len(photos) == 0:
        raise DataFormatError(f"{photos.name}: holds no photos")
    reader = NumberReader(model, backend=backend, digits=digits, search=search)
    trained_on, held_out_files = reader_training_photos(reader.config, spec, photos)
    scored = score(reader, photos, progress=progress)
    read = [r.number for r in scored.readings]
    confidence = np.array([r.confidence if r.number is not None else 0.0 for r in scored.readings])
    correct = scored.correct
    accepted = {p: accept_at_precision(confidence, correct, p) for p in PRECISIONS}
    lengths = np.array([len(t) for t in scored.truth])
    by_length = {int(n): {"n": int((lengths == n).sum()), "accuracy": float(correct[lengths == n].mean())}
                 for n in np.unique(lengths)}
    failures = [{"file": photos.names[i], "truth": scored.truth[i], "read": read[i],
                 "confidence": round(scored.readings[i].confidence, 4)} for i in np.flatnonzero(~correct)]
    gallery = []
    if out is not None:
        pages = failures_gallery(photos, scored, Path(out)) if failures else []
        for stale in set(Path(out).glob("failures*.png")) - set(pages):   # an earlier run's, with more pages
            if re.fullmatch(r"failures(-\d+)?\.png", stale.name):
                stale.unlink()
        gallery = [str(p) for p in pages]
    return NumberEvaluation(
        data=photos.name, model=str(reader.path), backend=reader.backend, n=len(photos),
        accuracy=whole_number_accuracy(scored.truth, read), digit_accuracy=digit_accuracy(scored.truth, read),
        by_length=by_length,
        coverage={f"{p:.0%}": accepted[p][0] for p in PRECISIONS},
        thresholds={f"{p:.0%}": accepted[p][1] for p in PRECISIONS},
        mean_iou=float(scored.iou.mean()), photos_per_second=len(photos) / max(scored.seconds, 1e-9),
        gallery=gallery, failures=failures, trained_on=trained_on, held_out_files=held_out_files)


def failures_gallery(photos: NumberSet, scored: Scored, out: Path) -> list[Path]:
    """Wrong readings, the most confident first, GALLERY_PAGE to a page (failures.png, failures-2.png,
    ... at most GALLERY_PAGES): each photo as it is shaped, its true number box in green and the
    one the reader found in red, drawn at the figure's resolution (on a large photo a box drawn in
    its pixels and then shrunk would fade away)."""
    wrong = np.flatnonzero(~scored.correct)
    wrong = wrong[np.argsort([-scored.readings[i].confidence for i in wrong], kind="stable")]
    paths = []
    for page, start in enumerate(range(0, min(len(wrong), GALLERY_PAGE * GALLERY_PAGES), GALLERY_PAGE)):
        shown, outlines, titles = [], [], []
        for i in wrong[start:start + GALLERY_PAGE]:
            r = scored.readings[i]
            left, top, right, bottom = number_box(photos.boxes[i])
            boxes = [(left, top, right - left, bottom - top, plots.TRUTH_COLOUR)]
            if r.number_box is not None:
                boxes.append((*r.number_box, plots.FOUND_COLOUR))
            shown.append(np.asarray(open_image(photos.image(i))))
            outlines.append(boxes)
            titles.append(f"{photos.names[i]}\n{scored.truth[i]} -> {r.number or '-'} ({r.confidence:.2f})")
        name = "failures.png" if page == 0 else f"failures-{page + 1}.png"
        title = (f"reader failures {start + 1}-{start + len(shown)} of {len(wrong)}: truth -> read (confidence); "
                 "green the true number box, red the one found")
        fig = plots.photo_grid(shown, outlines, titles, cols=5, title=title, cell=(2.4, 1.8))
        paths.append(plots.save(fig, out / name))
    return paths
