"""Metrics and reports for a trained digit model: plain functions over labels and probabilities."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from housenum import plots
from housenum.checkpoint import LoadedModel, load_model, recorded_data
from housenum.data import DEFAULT_SPEC, DigitSet, data_files, load_digits
from housenum.errors import DataFormatError
from housenum.io import write_text
from housenum.train import predict_logits

DIGITS = [str(d) for d in range(10)]


@dataclass
class Evaluation:
    accuracy: float
    macro_f1: float
    n: int
    per_class: dict[str, dict[str, float]]
    report: str
    confusion: np.ndarray
    ece: float
    accuracy_at_95_coverage: float
    probs: np.ndarray
    labels: np.ndarray
    held_out: bool = True   # False: the model trained on these test digits too (`--all-data`)
    tta: bool = False       # the probabilities average each digit with shifted copies of it

    def as_json(self) -> dict:
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "n": self.n,
                "per_class": self.per_class, "ece": self.ece,
                "accuracy_at_95_coverage": self.accuracy_at_95_coverage, "held_out": self.held_out,
                "tta": self.tta}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Mean |confidence - accuracy| over equal-width confidence bins, weighted by bin size."""
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            ece += mask.mean() * abs(conf[mask].mean() - (pred[mask] == labels[mask]).mean())
    return float(ece)


def accuracy_at_coverage(probs: np.ndarray, labels: np.ndarray, coverage: float) -> float:
    """Accuracy on the `coverage` fraction of samples the model is most confident about."""
    keep = max(1, int(round(len(labels) * coverage)))
    order = np.argsort(-probs.max(1), kind="stable")[:keep]
    return float((probs[order].argmax(1) == labels[order]).mean())


def score(probs: np.ndarray, labels: np.ndarray) -> Evaluation:
    pred = probs.argmax(1)
    # macro averages over the digits that occur (in truth or prediction): an absent one would count as 0
    occur = np.union1d(labels, pred)
    report = classification_report(labels, pred, labels=occur, target_names=[DIGITS[d] for d in occur], digits=4,
                                   zero_division=0)
    per = classification_report(labels, pred, labels=range(10), target_names=DIGITS,
                                output_dict=True, zero_division=0)
    return Evaluation(
        accuracy=float(accuracy_score(labels, pred)),
        macro_f1=float(f1_score(labels, pred, labels=occur, average="macro", zero_division=0)),
        n=len(labels),
        per_class={d: {"precision": per[d]["precision"], "recall": per[d]["recall"],
                       "f1": per[d]["f1-score"], "support": int(per[d]["support"])} for d in DIGITS},
        report=report,
        confusion=confusion_matrix(labels, pred, labels=range(10)),
        ece=expected_calibration_error(probs, labels),
        accuracy_at_95_coverage=accuracy_at_coverage(probs, labels, 0.95),
        probs=probs,
        labels=labels,
    )


def model_input(loaded: LoadedModel, digits: DigitSet) -> DigitSet:
    """The digits as the model takes them: grey for a greyscale model; refused, with the way out,
    when the model takes colour and the data has none."""
    if loaded.channels == 3 and digits.channels == 1:
        raise DataFormatError(f"{loaded.name} ({loaded.path}) takes RGB digits and this data is greyscale only: "
                              "evaluate a model trained on grey on it (housenum train --channels 1)")
    return digits.with_channels(loaded.channels)


def predict_probs(loaded: LoadedModel, digits: DigitSet, tta: bool = False) -> np.ndarray:
    logits = predict_logits(loaded.model, model_input(loaded, digits).images, tta=tta)
    return torch.softmax(logits, 1).numpy()


def inference_ms_per_image(loaded: LoadedModel, digits: DigitSet, n: int = 2048) -> float:
    """Wall time per image of batched inference (batch 256) on up to `n` images."""
    images = model_input(loaded, digits).images[:n]
    predict_logits(loaded.model, images[:256], batch_size=256)
    t0 = time.perf_counter()
    predict_logits(loaded.model, images, batch_size=256)
    return 1000 * (time.perf_counter() - t0) / max(len(images), 1)


def evaluate_run(model: str | Path | None, data: str | Path | None = None,
                 out_dir: str | Path | None = None, tta: bool = False) -> Evaluation:
    """Evaluate a run folder or checkpoint (None: the shipped model) on a dataset's test split.

    Writes `report.txt`, `metrics.json`, `confusion.png` and `mistakes.png` into `out_dir`
    (default: `<run>/eval`) when a folder is given or implied.
    """
    loaded = load_model(model)
    spec = str(data) if data is not None else recorded_data(loaded, DEFAULT_SPEC)   # "" is refused as no data
    test = load_digits(spec).test
    require_test_digits(test, spec)
    result = score(predict_probs(loaded, test, tta), test.labels)
    result.held_out = not trained_on_test_split(loaded.config, spec)
    result.tta = tta
    if out_dir is None and model is not None and Path(model).is_dir():
        out_dir = Path(model) / "eval"
    if out_dir is not None:
        seen = "" if result.held_out else " (not held-out: the model trained on this test split too)"
        write_evaluation(result, test, Path(out_dir), f"{loaded.name} on {spec}{' with TTA' if tta else ''}{seen}")
    return result


def require_test_digits(test: DigitSet, spec: str) -> None:
    if not len(test):
        raise DataFormatError(f"{spec}: its test split is empty (too few digits or source photos to hold "
                              "any out), so there is nothing to evaluate")


def trained_on_test_split(config: dict, spec: str) -> bool:
    """Whether a run trained with `--all-data` on data holding this spec's test split (files matched
    by name, `data_files`), which it then has seen."""
    trained_on = config.get("data")
    if not config.get("all_data") or trained_on is None:
        return False
    return bool(data_files(str(trained_on), recorded=True)[0] & data_files(spec)[1])


def write_evaluation(result: Evaluation, test: DigitSet, out_dir: Path, title: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "report.txt", f"{title}\n\n{result.report}")
    write_text(out_dir / "metrics.json", json.dumps(result.as_json(), indent=2) + "\n")
    plots.save(plots.confusion(result.confusion, f"Confusion matrix: {title}"), out_dir / "confusion.png")
    plots.save(mistakes_figure(result, test), out_dir / "mistakes.png")


def mistakes_figure(result: Evaluation, test: DigitSet, count: int = 30):
    """The most confident wrong answers: what the model gets wrong and how sure it was."""
    pred, conf = result.probs.argmax(1), result.probs.max(1)
    wrong = np.flatnonzero(pred != result.labels)
    worst = wrong[np.argsort(-conf[wrong])][:count]
    titles = [f"true {result.labels[i]} → {pred[i]}\n{conf[i]:.0%}" for i in worst]
    return plots.image_grid(test.images[worst], titles, cols=10,
                            title=f"Most confident mistakes ({len(wrong)} wrong of {result.n}): "
                                  "true → predicted, the model's confidence")
