"""Checkpoints: written atomically, loaded from a run folder or a .pt file, shipped or trained."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from housenum.errors import ModelError, brief
from housenum.io import atomic_path
from housenum.models import create_model
from housenum.models.layers import TemperatureScaled

FORMAT = "housenum-checkpoint/1"
WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_DIGIT_MODEL = WEIGHTS_DIR / "digits.pt"
# Other shipped digit models, by the name `--model` accepts: `fast` trades 0.75 points of held-out
# accuracy for 1.3-2.7x the speed (DIGITS_FAST_CARD.md).
SHIPPED_DIGIT_MODELS = {"fast": WEIGHTS_DIR / "digits_fast.pt"}
# What a digit or reader run writes into its folder, and `housenum evaluate RUN` into its eval/
RUN_FILES = ("best.pt", "last.pt", "history.csv", "curves.png", "config.json", "summary.txt")
EVAL_FILES = ("report.txt", "metrics.json", "confusion.png", "mistakes.png")


@dataclass
class LoadedModel:
    model: nn.Module
    name: str
    channels: int
    config: dict
    path: Path


def save_checkpoint(path: Path, state: dict) -> None:
    """Save so that an interruption at any moment leaves the previous file intact."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise ModelError(f"{path}: not a readable housenum checkpoint ({brief(e)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ModelError(f"{path}: not a housenum checkpoint")
    return state


def read_digit_checkpoint(path: Path) -> dict:
    """A checkpoint that must hold a digit model (not, say, the whole-number reader)."""
    state = read_checkpoint(path)
    if state.get("kind") == "housenum-reader/1":
        raise ModelError(f"{path}: a whole-number reader, not a digit model (use it with `housenum read --model`)")
    if not {"model", "channels", "model_state"} <= state.keys():
        raise ModelError(f"{path}: not a digit-model checkpoint (no model, channels or weights in it)")
    return state


def checkpoint_path(source: str | Path | None, default: Path = DEFAULT_DIGIT_MODEL, what: str = "digit model",
                    shipped: dict[str, Path] | None = None, option: str | None = None) -> Path:
    """A run folder means its best checkpoint (else its last); None means the shipped model, and
    a name of `shipped` (default: the other shipped digit models) that is not a file here, that one.
    `option` (e.g. "--init") starts an error's message, to say which setting named the folder."""
    try:
        return _find_checkpoint(source, default, what, shipped)
    except ModelError as e:
        if option is None:
            raise
        raise ModelError(f"{option} {e}") from None


def _find_checkpoint(source, default: Path, what: str, shipped: dict[str, Path] | None) -> Path:
    shipped = SHIPPED_DIGIT_MODELS if shipped is None else shipped
    if source is not None and not isinstance(source, (str, os.PathLike)):
        raise ModelError(f"a {what} is given as a run folder, a .pt file or a shipped name, not a "
                         f"{type(source).__name__} ({source!r})")
    if source is None:
        if not default.exists():
            raise ModelError(f"no shipped {what} in this install; pass --model RUN_DIR")
        return default
    path = Path(source)
    if str(source) in shipped and not path.exists():
        if not shipped[str(source)].exists():
            raise ModelError(f"no shipped {what} '{source}' in this install; pass --model RUN_DIR")
        return shipped[str(source)]
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).exists():
                return path / name
        raise ModelError(f"{path}: run folder has no best.pt or last.pt")
    if not path.exists():
        raise ModelError(f"{path}: no such run folder or checkpoint")
    if ".onnx" in path.suffixes:   # an export runs only beside the checkpoint it records the hash of
        raise ModelError(f"{path}: an ONNX export, not a checkpoint; give the run folder or .pt it was exported "
                         "from (an export beside its checkpoint is used by 'housenum serve' and the reader)")
    return path


def fit_weights(model: nn.Module, weights: dict, path: Path, name: str) -> None:
    """Load a checkpoint's weights, saying in one line why they cannot be used."""
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as e:   # Type/AttributeError: not a state dict at all
        raise ModelError(f"{path}: weights do not fit model '{name}' ({brief(e)})") from None
    check_finite(model.state_dict(), path)


def check_finite(weights: dict, path: Path) -> None:
    """Weights holding nan or inf (saved by a run that diverged) would answer every input with garbage."""
    bad = [name for name, t in weights.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise ModelError(f"{path}: its weights hold nan or inf ({bad[0]}{more}); the run that saved them diverged")


def load_model(source: str | Path | None = None) -> LoadedModel:
    path = checkpoint_path(source)
    state = read_digit_checkpoint(path)
    try:
        model = create_model(state["model"], state["channels"])
    except (TypeError, ValueError) as e:   # a foreign or damaged file
        raise ModelError(f"{path}: cannot build model '{state['model']}' ({brief(e)})") from None
    fit_weights(model, state["model_state"], path, state["model"])
    if state.get("temperature"):
        model = TemperatureScaled(model, state["temperature"])
    model.eval()
    return LoadedModel(model, state["model"], state["channels"], state.get("config", {}), path)


def recorded_data(loaded: LoadedModel, fallback: str) -> str:
    """The data spec a model was trained on, for commands whose --data defaults to it. A file spec is
    relative to where training ran; for the shipped models that is the project's root, so it is
    looked for there too before giving up with a clear line."""
    spec = loaded.config.get("data")
    if not spec:
        return fallback
    path = Path(spec)
    if path.suffix.lower() not in (".npz", ".h5", ".hdf5", ".mat") or path.is_absolute() or path.exists():
        return spec
    beside_project = Path(__file__).resolve().parents[2] / path
    if beside_project.exists():
        return str(beside_project)
    raise ModelError(f"{loaded.path}: its training data '{spec}' (a path relative to where it was trained) "
                     "is not found from here; give --data SPEC")


def read_config(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def run_kind(run_dir: Path) -> str | None:
    """What trained the run in `run_dir`, by its config.json: "reader", "digits", or None (no run)."""
    if not any((Path(run_dir) / name).exists() for name in ("last.pt", "best.pt")):
        return None
    return "reader" if "arch" in read_config(run_dir) else "digits"


def clear_old_run(run_dir: Path) -> None:
    """Remove an earlier run's files, its evaluation and exports included. A new run calls it only when its own
    first checkpoint is ready, so that stopping before then leaves the earlier run whole."""
    run_dir = Path(run_dir)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for path in run_dir.glob("*.onnx*"):   # its exports (best.onnx, best.int8.onnx, best.loc.onnx, .onnx.data)
        if path.name.startswith(("best.", "last.")) and path.name.endswith((".onnx", ".onnx.data")):
            path.unlink(missing_ok=True)
    for name in EVAL_FILES:   # the old model's evaluation, which would read as the new one's
        (run_dir / "eval" / name).unlink(missing_ok=True)
        (run_dir / name).unlink(missing_ok=True)   # written there by `evaluate RUN --out RUN`
    if (run_dir / "eval").is_dir() and not any((run_dir / "eval").iterdir()):
        (run_dir / "eval").rmdir()
