"""The main job: train several models on one dataset, evaluate each, and write a leaderboard
and a self-contained HTML report. The best model is chosen by validation accuracy, never test."""

from __future__ import annotations

import base64
import csv
import html
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from housenum import plots
from housenum.checkpoint import load_model
from housenum.data import DEFAULT_SPEC, DigitData, DigitSet, load_digits
from housenum.errors import ModelError
from housenum.evaluate import (
    Evaluation,
    inference_ms_per_image,
    mistakes_figure,
    predict_probs,
    require_test_digits,
    score,
    write_evaluation,
)
from housenum.io import atomic_open, write_text
from housenum.models import count_parameters, model_spec
from housenum.train import TrainConfig, kept_epoch, train

NOTEBOOK_MODELS = ["ann1", "ann2", "cnn1", "cnn2"]
NEAR_CHANCE = 0.2   # validation accuracy a report flags: guessing among ten digits gives 0.1
DEFAULT_MODELS = [*NOTEBOOK_MODELS, "resnet"]
QUICK_EPOCHS = 2
# train_seconds: the epochs' own time (training and validation); wall_seconds: the whole `train` call,
# with the per-epoch curves, checkpoints and the temperature fit
COLUMNS = ["model", "params", "epochs", "train_seconds", "wall_seconds", "val_acc", "test_acc", "macro_f1",
           "inference_ms_per_image"]


@dataclass
class Entry:
    row: dict
    history: list[dict]
    evaluation: Evaluation
    test: DigitSet     # the digits it was scored on, for its mistakes
    kept_epoch: int    # the epoch of best.pt, marked on its curves


def compare(models: list[str] | None = None, data: str = DEFAULT_SPEC, out_dir: str | Path = "compare",
            *, quick: bool = False, epochs: int | None = None, seed: int = 42, channels: int | None = None,
            progress: bool = True, on_model: Callable[[str, int, int], None] | None = None,
            on_note: Callable[[str], None] | None = None) -> list[dict]:
    """Train and evaluate each model; returns the leaderboard rows (best first by validation)."""
    models = models or DEFAULT_MODELS
    for name in models:
        model_spec(name)
    if len(set(models)) < len(models):
        raise ModelError(f"a model named twice would train twice into one folder: {', '.join(models)}")
    if epochs is not None and epochs < 1:
        raise ModelError(f"epochs must be 1 or more, got {epochs}")
    if quick and epochs is not None:
        raise ModelError(f"--quick and --epochs cannot be given together: --quick caps each model at "
                         f"{QUICK_EPOCHS} epochs, --epochs {epochs} sets every model's")
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _train_and_report(models, data, out_dir, quick, epochs, seed, channels, progress, on_model, on_note)
    except BaseException:
        if created and not any(out_dir.iterdir()):   # refused before any model trained: leave no empty folder
            out_dir.rmdir()
        raise


def _train_and_report(models: list[str], data: str, out_dir: Path, quick: bool, epochs: int | None, seed: int,
                      channels: int | None, progress: bool,
                      on_model: Callable[[str, int, int], None] | None,
                      on_note: Callable[[str], None] | None) -> list[dict]:
    # Every model's data is ready before the first trains: a bad spec or a refused channel count
    # is then the only line, not a failure after hours of training.
    raw = load_digits(data)
    require_test_digits(raw.test, data)
    plan = [(name, model_spec(name), _channels_for(name, channels, raw, on_note)) for name in models]
    loaded_data: dict[int, DigitData] = {ch: raw.with_channels(ch) for ch in dict.fromkeys(ch for *_, ch in plan)}
    entries: list[Entry] = []
    try:
        for i, (name, spec, ch) in enumerate(plan):
            if on_model is not None:
                on_model(name, i, len(models))
            entries.append(_train_one(name, spec, ch, data, loaded_data[ch], out_dir, quick, epochs, seed, progress))
    except KeyboardInterrupt:   # Ctrl-C: the models that finished still get their leaderboard and report
        if entries:
            _write_outputs(entries, loaded_data, data, out_dir, quick, unfinished=models[len(entries):])
        raise CompareInterrupted([e.row["model"] for e in entries]) from None
    _write_outputs(entries, loaded_data, data, out_dir, quick)
    return [e.row for e in entries]


class CompareInterrupted(KeyboardInterrupt):
    """Ctrl-C during `compare`: which models finished, whose leaderboard and report were written."""

    def __init__(self, finished: list[str]) -> None:
        super().__init__(finished)
        self.finished = finished


def _train_one(name: str, spec, ch: int, data: str, digits: DigitData, out_dir: Path, quick: bool,
               epochs: int | None, seed: int, progress: bool) -> Entry:
    n_epochs = epochs or (min(spec.epochs, QUICK_EPOCHS) if quick else None)
    cfg = TrainConfig(model=name, data=data, epochs=n_epochs, seed=seed, channels=ch)
    t0 = time.perf_counter()
    result = train(cfg, out_dir / name, data=digits, progress=progress)
    seconds = time.perf_counter() - t0
    loaded = load_model(out_dir / name)
    test = digits.test
    evaluation = score(predict_probs(loaded, test), test.labels)
    write_evaluation(evaluation, test, out_dir / name / "eval", f"{name} on {data}")
    return Entry({
        "model": name,
        "params": count_parameters(loaded.model),
        "epochs": result.config.epochs,
        "train_seconds": round(result.train_seconds, 2),
        "wall_seconds": round(seconds, 2),
        "val_acc": round(result.best_val_acc, 4),
        "test_acc": round(evaluation.accuracy, 4),
        "macro_f1": round(evaluation.macro_f1, 4),
        "inference_ms_per_image": round(inference_ms_per_image(loaded, test), 4),
    }, result.history, evaluation, test, kept_epoch(result.history, result.config.checkpoint))


def _write_outputs(entries: list[Entry], loaded_data: dict[int, DigitData], data: str, out_dir: Path, quick: bool,
                   unfinished: list[str] = ()) -> None:
    """leaderboard.csv and report.html, best first by validation (`entries` sorted in place)."""
    entries.sort(key=lambda e: -e.row["val_acc"])
    with atomic_open(out_dir / "leaderboard.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(e.row for e in entries)
    first = next(iter(loaded_data.values()))
    write_text(out_dir / "report.html", render_report(entries, first, data, quick, unfinished))


def _channels_for(name: str, forced: int | None, data: DigitData, on_note: Callable[[str], None] | None) -> int:
    """The model's own channel count, or --channels; an RGB model on greyscale-only data (the
    course file) trains on grey, as the notebook's models do, rather than being refused."""
    if forced is not None:
        return forced
    ch = model_spec(name).channels
    if ch == 3 and data.train.channels == 1:
        if on_note is not None:
            on_note(f"{name} takes RGB digits and {data.spec} is greyscale only: it trains on grey (--channels 1)")
        return 1
    return ch


def _img(fig, alt: str) -> str:
    data = base64.b64encode(plots.png_bytes(fig)).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def near_chance_note(rows: list[dict]) -> str:
    """An HTML warning naming the models whose validation accuracy is near guessing, or ''."""
    names = [r["model"] for r in rows if r["val_acc"] < NEAR_CHANCE]
    if not names:
        return ""
    return (f"<p class=\"warn\">Near chance (validation accuracy under {NEAR_CHANCE}; ten digits give 0.1 by "
            f"guessing): {html.escape(', '.join(names))}. Not trained enough, or the training diverged: look at "
            "the curves, and at the confusion matrix for what it answers.</p>")


def render_report(entries: list[Entry], data: DigitData, spec: str, quick: bool, unfinished=()) -> str:
    """One HTML file with every figure embedded, so it can be mailed or opened offline."""
    best = entries[0].row["model"]
    sample = data.train.images[:20]
    head = "".join(f"<th>{c}</th>" for c in COLUMNS)
    rows = "".join(
        f'<tr class="{"best" if e.row["model"] == best else ""}">'
        + "".join(f"<td>{html.escape(str(e.row[c]))}</td>" for c in COLUMNS) + "</tr>"
        for e in entries
    )
    counts = {"train + validation": np.bincount(data.train.labels, minlength=10),
              "test": np.bincount(data.test.labels, minlength=10)}
    comparison = _img(plots.model_comparison([e.row for e in entries]), "validation and test accuracy by model")
    sections = []
    for e in entries:
        name = e.row["model"]
        curves = _img(plots.curves(e.history, name, e.kept_epoch), f"{name}: accuracy and loss per epoch")
        confusion = _img(plots.confusion(e.evaluation.confusion, f"{name}: confusion matrix (test)"),
                         f"{name}: confusion matrix on the test split")
        mistakes = _img(mistakes_figure(e.evaluation, e.test), f"{name}: its most confident mistakes on the test split")
        sections.append(
            f"<section><h3>{html.escape(name)}{' — selected' if name == best else ''}</h3>"
            f"<p>{html.escape(model_spec(name).description)}</p>{curves}{confusion}"
            f"<pre>{html.escape(e.evaluation.report)}</pre>{mistakes}</section>"
        )
    note = " (--quick: epochs capped, figures are not final)" if quick else ""
    warning = near_chance_note([e.row for e in entries])
    if unfinished:
        warning += (f'<p class="warn">Interrupted: {html.escape(", ".join(unfinished))} did not finish; this '
                    "report holds the models that did.</p>")
    grid = _img(plots.image_grid(sample, [str(v) for v in data.train.labels[:20]], title="First training images"),
                "the first training images with their labels")
    balance = _img(plots.class_balance(counts), "images per digit in the train and test splits")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>housenum model comparison</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: .3em .6em; text-align: right; }}
tr.best {{ background: #e5f5e0; font-weight: bold; }} img {{ max-width: 100%; }}
.warn {{ background: #fff3cd; padding: .5em; }}
pre {{ background: #f6f6f6; padding: .6em; overflow-x: auto; }} .scroll {{ overflow-x: auto; }}
</style></head><body>
<h1>housenum model comparison</h1>
<p>Data: <code>{html.escape(spec)}</code> — {len(data.train)} train+validation, {len(data.test)} test images{note}.
Selected model (highest validation accuracy): <strong>{html.escape(best)}</strong>.</p>{warning}
<h2>Leaderboard</h2><div class="scroll"><table><tr>{head}</tr>{rows}</table></div>
{comparison}
<h2>Data</h2>{grid}
{balance}
<h2>Models</h2>{''.join(sections)}
</body></html>
"""
