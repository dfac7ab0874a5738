"""The `housenum` command: parses arguments, calls the library, prints. Nothing else lives here."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand, TyperGroup

from housenum.errors import HousenumError, ModelError


def _quiet_help(option):
    """typer prints `<bool>` beside --help as beside any flag, as if it took a value (`_flag` below
    hides it for ours)."""
    if option is not None:
        option.metavar = ""
    return option


class _Command(TyperCommand):
    def get_help_option(self, ctx):
        return _quiet_help(super().get_help_option(ctx))


class _Group(TyperGroup):
    def get_help_option(self, ctx):
        return _quiet_help(super().get_help_option(ctx))


app = typer.Typer(
    help="Read house numbers from street photos: SVHN data, models, training, evaluation, serving.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False, cls=_Group,
)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True, cls=_Group)
app.add_typer(data_app, name="data")

DataOpt = Annotated[str, typer.Option(
    "--data", help="Dataset: a course .h5, an official *_32x32.mat, an .npz (X, y[, source_image]), "
    "'svhn', 'svhn:extra' (downloaded once into $HOUSENUM_DATA) or 'synthetic[:N]' (built in).")]
MODEL_HELP = "Run folder or .pt, or 'fast' (the shipped small model); default: the shipped model."


def _flag(decl: str, **kwargs):
    """An on/off option, named (without its name typer adds a `--no-` twin) and without the `<bool>`
    typer would print beside it in --help, as if it took a value."""
    return typer.Option(decl, metavar="", **kwargs)


def _within(low: float, high: float) -> dict:
    """typer.Option settings for a float from `low` to `high`: typer's own range check lets nan through
    as 'Input should be less than or equal to ...', as if nan were merely too large."""
    def parse(value) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise typer.BadParameter(f"{value!r} is not a number") from None
        if not math.isfinite(number):
            raise typer.BadParameter(f"must be a finite number, got {value}")
        if not low <= number <= high:
            raise typer.BadParameter(f"must be from {low:g} to {high:g}, got {value}")
        return number

    return {"parser": parse, "metavar": f"<float {low:g}..{high:g}>"}


JsonOpt = Annotated[bool, _flag("--json", help="Print machine-readable JSON only on stdout.")]
DigitModelOpt = Annotated[Path | None, typer.Option(
    help="Digit model (run folder or .pt, or 'fast') that re-reads each digit the reader finds; default: the "
         "shipped one.")]
ReaderOnlyOpt = Annotated[bool, _flag(
    "--reader-only", help="Trust the reader's own digit heads alone (no second opinion from the digit model).")]
NoSearchOpt = Annotated[bool, _flag("--no-search", help="Do not read unsure photos again in windows "
                                                        "(faster; misses more small numbers).")]


def _version(show: bool) -> None:
    if show:
        from housenum import __version__

        typer.echo(f"housenum {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, _flag("--version", callback=_version, is_eager=True,
                                         help="Print the version and exit.")] = False) -> None:
    pass   # the app's help is the Typer's own; this callback only carries --version


def _err(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


def _per_file(paths: list[Path], answer: Callable[[Path], object], line: Callable[[Path, object], str]) -> None:
    """Answer each file in turn; a bad file gets one error line and the rest go on (exit 1 at the end)."""
    failed = False
    for path in paths:
        try:
            result = answer(path)
        except HousenumError as e:
            failed = True
            _err(str(e))
            continue
        typer.echo(line(path, result))
    if failed:
        raise typer.Exit(1)


STDIN = Path("-")


def _image_source(path: Path):
    """A path as given, or standard input's bytes for `-` (`cat photo.png | housenum read -`)."""
    if path != STDIN:
        if path.is_dir():   # left in by _image_paths because it holds no images
            raise HousenumError(f"{path}: a folder with no images in it (.png, .jpg, ...)")
        return path
    if sys.stdin is None or sys.stdin.isatty():
        raise HousenumError("-: reads an image from standard input; pipe one in (cat photo.png | housenum read -)")
    return sys.stdin.buffer


def _image_paths(paths: list[Path]) -> list[Path]:
    """The paths given, each folder replaced by the images in it; `-` (standard input) at most once.
    A folder with no images is kept, so that it gets its error line while the other paths are read."""
    from housenum.preprocess import images_in

    if paths.count(STDIN) > 1:
        raise HousenumError("-: standard input holds one image; give - once")
    expanded = []
    for path in paths:
        if path != STDIN and path.is_dir():
            expanded.extend(images_in(path) or [path])   # an empty folder stays, to be reported in its turn
        else:
            expanded.append(path)
    if expanded and all(path != STDIN and path.is_dir() for path in expanded):   # nothing at all to read
        raise HousenumError(f"{expanded[0]}: a folder with no images in it (.png, .jpg, ...)")
    return expanded


def _folder_out(out: Path | None) -> Path | None:
    """Check an --out folder before the work, not after it."""
    if out is not None and out.exists() and not out.is_dir():
        raise HousenumError(f"--out {out}: exists and is not a folder")
    if out is not None:
        _check_writable(out, out)
    return out


def _file_out(out: Path | None, option: str = "--out") -> Path | None:
    """Check an output file (given as `option`) before the work, not after it."""
    if out is not None and out.is_dir():
        raise HousenumError(f"{option} {out}: is a folder; give a file name")
    if out is not None:
        _check_writable(out, out.parent)
    return out


def _check_writable(out: Path, folder: Path) -> None:
    """The nearest existing folder at or above `folder` must take new files (output is written as a
    temporary file beside its target, then renamed)."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():   # a file where a folder of the path would go
        raise HousenumError(f"--out {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise HousenumError(f"--out {out}: {existing} is not writable")


@data_app.command("info", cls=_Command)
def data_info(
    spec: Annotated[str, typer.Argument(help="Dataset spec, as for --data.")] = "synthetic",
    out: Annotated[Path | None, typer.Option(help="Write a sample grid PNG here.")] = None,
    balance: Annotated[Path | None, typer.Option(
        help="Write a bar chart PNG here: images per digit in each split (whole photos: numbers per "
             "length and digits per value).")] = None,
    channels: Annotated[int | None, typer.Option(help="1 greyscale, 3 RGB.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Counts per split and class, image shape and type, and optionally a sample grid and a
    class-balance chart.

    For whole photos (a folder with labels.json or digitStruct.mat, a digitStruct.mat, svhn-full):
    counts by number length and digit, photo sizes, how much of the photo the number fills.

    \b
    Examples:
      housenum data info ../shared/data/svhn/crops.npz --out samples.png --balance balance.png
      housenum data info ../shared/data/svhn/numbers --out photos.png --json
    """
    import numpy as np

    from housenum import plots
    from housenum.data import load_digits
    from housenum.data.numbers import is_photo_spec

    _file_out(out)
    _file_out(balance, "--balance")
    if out is not None and balance is not None and out.resolve() == balance.resolve():
        raise HousenumError(f"--out and --balance are both {out}: the second chart would replace the first")
    if is_photo_spec(spec) or Path(spec).is_dir():   # digit crops come in files: a folder is photos, or says why not
        if channels is not None:
            raise HousenumError("--channels applies to digit crops; whole photos are described as stored")
        _photo_info(spec, out, balance, as_json)
        return
    data = load_digits(spec, channels)
    splits = {"train": data.train, "test": data.test, **data.extra}
    info = {
        "name": data.name,
        "image_shape": list(data.train.images.shape[1:]),
        "dtype": str(data.train.images.dtype),
        "sources_known": data.train.sources is not None,
        "splits": {k: {"n": len(v), "per_class": np.bincount(v.labels, minlength=10).tolist()}
                   for k, v in splits.items()},
    }
    if out is not None:
        n = min(50, len(data.train))
        plots.save(plots.image_grid(data.train.images[:n], [str(y) for y in data.train.labels[:n]],
                                    title=f"{data.name}: the first {n} training images, with their labels"), out)
        info["sample_grid"] = str(out)
    if balance is not None:
        counts = {k: np.array(v["per_class"]) for k, v in info["splits"].items()}
        plots.save(plots.class_balance(counts, title=f"{data.name}: images per digit"), balance)
        info["balance_chart"] = str(balance)
    if as_json:
        typer.echo(json.dumps(info))
        return
    typer.echo(f"{info['name']}: images {tuple(info['image_shape'])} {info['dtype']}, "
               f"source photos {'known' if info['sources_known'] else 'unknown'}")
    typer.echo(f"{'split':<8}{'n':>8}  " + " ".join(f"{d:>6}" for d in range(10)))
    for k, v in info["splits"].items():
        typer.echo(f"{k:<8}{v['n']:>8}  " + " ".join(f"{c:>6}" for c in v["per_class"]))
    _echo_figures(out, balance)


def _echo_figures(out: Path | None, balance: Path | None) -> None:
    if out is not None:
        typer.echo(f"sample grid: {out}")
    if balance is not None:
        typer.echo(f"balance chart: {balance}")


def _photo_info(spec: str, out: Path | None, balance: Path | None, as_json: bool) -> None:
    import numpy as np

    from housenum import plots
    from housenum.data.numbers import describe_numbers, load_numbers

    photos = load_numbers(spec)
    info = describe_numbers(photos)
    if out is not None:
        picked = np.unique(np.linspace(0, len(photos) - 1, min(36, len(photos))).round().astype(int))
        outlines = [[(*box[:4], plots.TRUTH_COLOUR) for box in photos.boxes[i]] for i in picked]
        plots.save(plots.photo_grid([photos.image(i) for i in picked], outlines,
                                    [f"{photos.names[i]}: {photos.labels[i]}" for i in picked],
                                    title=f"{photos.name}: {len(picked)} of {len(photos)} photos, labelled digit "
                                          "boxes in green"), out)
        info["sample_grid"] = str(out)
    if balance is not None:
        plots.save(plots.number_balance(info["by_length"], info["per_digit"], title=photos.name), balance)
        info["balance_chart"] = str(balance)
    if as_json:
        typer.echo(json.dumps(info))
        return
    width, height = info["width"], info["height"]
    typer.echo(f"{info['name']}: {info['photos']} photos with their numbers")
    typer.echo("number length  " + "  ".join(f"{k}: {n}" for k, n in info["by_length"].items()))
    typer.echo("digits         " + "  ".join(f"{d}: {n}" for d, n in enumerate(info["per_digit"])))
    typer.echo(f"photo width    median {width['median']:.0f} px ({width['min']}-{width['max']}), "
               f"height median {height['median']:.0f} px ({height['min']}-{height['max']})")
    fill_w, fill_h = info["number_width_share"], info["number_height_share"]
    if fill_w:
        typer.echo(f"the number     spans a median {fill_w['median']:.0%} of the photo's width "
                   f"({fill_w['p5']:.0%}-{fill_w['p95']:.0%} for 90% of photos) and {fill_h['median']:.0%} "
                   f"of its height")
    _echo_figures(out, balance)


# What `train --resume` and `train-reader --resume` take from the command line; everything else is
# the run's own (its config.json).
RESUME_OPTIONS = ("resume", "epochs", "device")
READER_RESUME_OPTIONS = ("resume", "device", "threads")


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option `name` was on the command line (by name: typer may bring its own copy of click
    and its ParameterSource)."""
    return getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"


def _refuse_with_resume(ctx: typer.Context, allowed: tuple[str, ...] = RESUME_OPTIONS) -> None:
    given = [p for p in ctx.command.params if p.name not in allowed and _given(ctx, p.name)]
    if given:
        flags = ", ".join(p.opts[0] for p in given)
        may = " and ".join(f"--{name}" for name in allowed if name != "resume")
        raise ModelError(f"--resume keeps the run's own settings (its config.json), so {flags} would be "
                         f"ignored; only {may} may change")


def _refuse_both(ctx: typer.Context, first: str, second: str, why: str) -> None:
    """Two options given on the command line where one would silently win over the other."""
    if _given(ctx, first) and _given(ctx, second):
        flags = [f"--{name.replace('_', '-')}" for name in (first, second)]
        raise ModelError(f"{flags[0]} and {flags[1]} cannot be given together: {why}")


@app.command("train", cls=_Command)
def train_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="Model name: ann1, ann2, cnn1, cnn2 (the notebook's), resnet_mid "
                                            "(the shipped digit model's), resnet_tiny (the `fast` one's), "
                                            "resnet_fast, resnet_small, resnet, resnet_wide, resnet_chnorm "
                                            "(resnet with fixed channel normalisation).")] = "cnn2",
    data: DataOpt = "synthetic",
    epochs: Annotated[int | None, typer.Option(help="Default: the model's (the notebook's).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Default: the model's.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate; default: the model's.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for weights, shuffling and augmentation.")] = 42,
    channels: Annotated[int | None, typer.Option(help="1 greyscale, 3 RGB; default: the model's.")] = None,
    recipe: Annotated[str | None, typer.Option(help="'notebook' (plain Adam) or 'strong' "
                                                  "(augmentation, label smoothing, OneCycle, EMA).")] = None,
    fold: Annotated[int | None, typer.Option(help="Use source fold K of 5 as validation.")] = None,
    val_fraction: Annotated[float, typer.Option(
        help="Share of the training photos held out for validation (checkpoint choice, calibration) "
             "when no --fold is given.")] = 0.2,
    all_data: Annotated[bool, _flag(
        "--all-data", help="Train on the data's test split too: a final model once the recipe's held-out "
                           "figures are known; its own test figures then mean nothing.")] = False,
    checkpoint: Annotated[str, typer.Option(
        help="What best.pt holds: 'best' (the epoch with the best validation accuracy) or 'last' (the final "
             "epoch: with a small --val-fraction, choosing an epoch by validation is mostly noise).")] = "best",
    mixup: Annotated[float, typer.Option(
        help="Blend each batch with a shuffled copy of itself by a Beta(a, a) weight, a = this "
             "(0: off; the shipped digit model used 0.2).")] = 0.0,
    schedule: Annotated[str | None, typer.Option(
        help="Learning-rate schedule: 'onecycle', 'cosine' (a 3% warm-up, then cosine to 0) or 'constant'; "
             "default: the recipe's (onecycle for the ResNets, constant for the notebook's).")] = None,
    cutmix: Annotated[float, typer.Option(
        help="CutMix instead: a rectangle of each digit replaced by another's, its area a Beta(a, a) "
             "share, a = this (0: off; below mixup on SVHN here: docs/experiments.md).")] = 0.0,
    optimizer: Annotated[str, typer.Option(
        help="'adam' (AdamW under the strong recipe) or 'sgd' (Nesterov momentum 0.9; give it a --lr "
             "near 0.1).")] = "adam",
    sam: Annotated[float, typer.Option(
        help="Sharpness-aware minimisation's radius rho, e.g. 0.05 (0: off); each step then takes two "
             "forward and backward passes (1.4-1.5x the time of a plain step on a 2-core CPU).")] = 0.0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[str, typer.Option(
        help="'auto' (bf16 autocast on a GPU or on a CPU with bf16 units, AVX512-BF16 or AMX: 1.7-2x faster "
             "for the ResNets; fp32 elsewhere), 'fp32' or 'bf16'.")] = "auto",
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/MODEL).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this folder.")] = None,
    init: Annotated[Path | None, typer.Option(help="Start from this run folder's (or .pt's) weights: fine-tune "
                                                   "a model of the same kind on new data.")] = None,
) -> None:
    """Train one model and write its run folder: best.pt, last.pt, config.json, history.csv,
    curves.png and summary.txt. Ctrl-C keeps the last finished epoch; --resume continues.

    \b
    Examples:
      housenum train --model cnn2 --data SVHN_single_grey1.h5        # the notebook's cnn2, its defaults
      housenum train --model resnet_mid --data ../shared/data/svhn/crops.npz --mixup 0.2 --epochs 90
      housenum train --resume runs/cnn2 --epochs 40                  # go on after Ctrl-C
      torchrun --nproc_per_node 2 -m housenum.cli train --model resnet --data svhn
    """
    from housenum.devices import pick_device
    from housenum.train import TrainConfig, initial_checkpoint, train

    if resume is not None:
        _refuse_with_resume(ctx)
    _refuse_both(ctx, "fold", "val_fraction", "--fold K holds out photo fold K of 5, not a share")
    run_dir = resume or out or Path("runs") / model
    if resume is None:
        _folder_out(run_dir)
    cfg = TrainConfig(model=model, data=data, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                      channels=channels, recipe=recipe, fold=fold, val_fraction=val_fraction,
                      all_data=all_data, checkpoint=checkpoint, mixup=mixup, cutmix=cutmix, optimizer=optimizer,
                      sam=sam, schedule=schedule, device=device, precision=precision,
                      init=str(init) if init else None)
    if resume is None:   # a bad setting is refused before anything is said about the run folder
        resolved = cfg.resolved()
        pick_device(resolved.device)
        if resolved.init:
            initial_checkpoint(resolved)
    main_rank = os.environ.get("RANK", "0") == "0"   # under torchrun, one line from rank 0, not one per rank
    with _ctrl_c_says_what_is_kept(run_dir, "train", resume is not None,
                                   first="the first epoch finished", last="the last finished epoch"):
        if resume is None and main_rank:   # said once Ctrl-C is handled: a Ctrl-C just after it gets its answer
            _say_replacing(run_dir, "digits")
        result = train(cfg, run_dir, resume=resume is not None)
    if main_rank:
        typer.echo(_trained_line(result, run_dir))


def _say_replacing(run_dir: Path, kind: str) -> None:
    """Warn that a new run will take the place of the one in its folder, once its first checkpoint is saved."""
    from housenum.checkpoint import run_kind

    old = run_kind(run_dir)
    if old is None:
        return
    if old == kind:
        what, hint = "run", f"--resume {run_dir} would continue it if it did not finish"
    else:
        what = "digit-model run" if old == "digits" else "reader run"
        hint = f"'housenum {'train' if kind == 'digits' else 'train-reader'}' cannot resume a {what}"
    typer.echo(f"replacing the {what} in {run_dir} once this run's first checkpoint is saved "
               f"(until then Ctrl-C keeps it; {hint})", err=True)


def _stamp(path: Path) -> tuple[int, int] | None:
    """What tells one write of a file from another: (inode, mtime), or None when it is absent."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


@contextmanager
def _ctrl_c_says_what_is_kept(run_dir: Path, command: str, resuming: bool, *, first: str, last: str):
    """On Ctrl-C during training, say what the run folder now holds and how to go on, then exit 130.

    A new run leaves an old run's last.pt as it was until its own first checkpoint, so an unchanged
    last.pt after Ctrl-C is the old run's, which this run must not offer to resume.
    """
    old_last = _stamp(run_dir / "last.pt")
    try:
        yield
    except KeyboardInterrupt:
        stamp = _stamp(run_dir / "last.pt")
        if stamp is not None and stamp == old_last and not resuming:
            _err(f"interrupted before {first}; the earlier run in {run_dir} is as it was")
        elif stamp is not None:
            _err(f"interrupted; {last} is in {run_dir}/last.pt (continue with: housenum {command} --resume {run_dir})")
        else:
            _err(f"interrupted before {first}: nothing to resume")
        raise SystemExit(130) from None   # said already: main() adds nothing


def _trained_line(result, run_dir: Path) -> str:
    history = result.history
    last = history[-1]["val_acc"] if history else 0.0
    best = max(history, key=lambda row: row["val_acc"]) if history else {"val_acc": 0.0, "epoch": 0}
    if result.config.checkpoint == "last":
        accuracy = (f"last val_acc {last:.4f} (kept: --checkpoint last), "
                    f"best {best['val_acc']:.4f} (epoch {best['epoch']})")
    else:
        accuracy = f"best val_acc {result.best_val_acc:.4f}, last val_acc {last:.4f}"
    return f"{result.config.model}: {accuracy}, {result.train_seconds:.1f} s; run folder {run_dir}"


@app.command("evaluate", cls=_Command)
def evaluate_cmd(
    run: Annotated[Path | None, typer.Argument(help=MODEL_HELP)] = None,
    data: Annotated[str | None, typer.Option("--data", help="Dataset spec; default: the run's.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for report, confusion and mistakes PNGs.")] = None,
    tta: Annotated[bool, _flag("--tta", help="Test-time augmentation: average each digit's probabilities with four "
                                    "2-pixel shifts of it (5x the work; +0.2 points for the shipped recipe).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Accuracy, macro F1, classification report, confusion-matrix heatmap and worst mistakes.

    \b
    Examples:
      housenum evaluate runs/cnn2                    # on the test split of the data it trained on
      housenum evaluate --data ../shared/data/svhn/crops.npz --json   # the shipped model
    """
    from housenum.evaluate import evaluate_run

    result = evaluate_run(run, data, _folder_out(out), tta=tta)
    if not result.held_out:
        typer.echo("note: this model trained on this data's test split too (--all-data): the figures below "
                   "are not held-out; its recipe's held-out figures are in its model card", err=True)
    if as_json:
        typer.echo(json.dumps(result.as_json()))
        return
    typer.echo(result.report)
    typer.echo(f"accuracy {result.accuracy:.4f}  macro F1 {result.macro_f1:.4f}  n {result.n}  "
               f"ECE {result.ece:.4f}  accuracy at 95% coverage {result.accuracy_at_95_coverage:.4f}")


@app.command("compare", cls=_Command)
def compare_cmd(
    models: Annotated[str, typer.Option(help="Comma-separated model names.")] = "ann1,ann2,cnn1,cnn2,resnet",
    data: DataOpt = "synthetic",
    out: Annotated[Path, typer.Option(
        help="Output folder: leaderboard.csv, report.html, one run each.")] = Path("compare"),
    quick: Annotated[bool, _flag("--quick", help="Cap every model at a few epochs for a fast look.")] = False,
    epochs: Annotated[int | None, typer.Option(help="Same epochs for every model.")] = None,
    seed: Annotated[int, typer.Option()] = 42,
    channels: Annotated[int | None, typer.Option(help="Force 1 or 3 channels for all models.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Train each model, evaluate it on the test split, and write leaderboard.csv and report.html.
    The selected model is the one with the best validation (not test) accuracy.

    \b
    Examples:
      housenum compare --quick                      # built-in synthetic digits, 2 epochs each
      housenum compare --data ../shared/data/svhn/crops.npz --models ann1,cnn2,resnet --out cmp
    """
    from housenum.compare import COLUMNS, CompareInterrupted, compare

    def announce(name: str, i: int, n: int) -> None:
        typer.echo(f"[{i + 1}/{n}] {name}", err=True)

    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names:
        raise ModelError(f"--models '{models}' names no model; e.g. --models ann1,cnn2")
    _folder_out(out)
    try:
        rows = compare(names, data, out, quick=quick,
                       epochs=epochs, seed=seed, channels=channels, on_model=announce,
                       on_note=lambda text: typer.echo(f"note: {text}", err=True))
    except CompareInterrupted as e:
        done = (f"{', '.join(e.finished)} finished: their leaderboard and report are in {out}" if e.finished
                else "no model finished")
        _err(f"interrupted; {done}")
        raise SystemExit(130) from None   # said already: main() adds nothing
    if as_json:
        typer.echo(json.dumps({"leaderboard": rows, "selected": rows[0]["model"], "out": str(out)}))
        return
    typer.echo(" ".join(f"{c:>14}" for c in COLUMNS))
    for r in rows:
        typer.echo(" ".join(f"{r[c]!s:>14}" for c in COLUMNS))
    typer.echo(f"selected (best validation accuracy): {rows[0]['model']}")
    typer.echo(f"report: {out / 'report.html'}")


@app.command("predict", cls=_Command)
def predict_cmd(
    images: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG, any size or mode) or folders of "
                                                      "them; - reads one from standard input.",
                                                 readable=False, metavar="IMAGE")],
    model: Annotated[Path | None, typer.Option(help=MODEL_HELP)] = None,
    top_k: Annotated[int, typer.Option(min=1, max=10, help="How many candidates to list.")] = 3,
    as_json: JsonOpt = False,
) -> None:
    """Recognise the digit in each image (a crop around one digit, as in SVHN format 2).

    \b
    Examples:
      housenum predict digit.png --top-k 3
      housenum predict crops/ --model runs/cnn2 --json | jq .digit
      cat digit.png | housenum predict -
    """
    from housenum.predict import DigitRecognizer

    recognizer = DigitRecognizer(model)

    def line(path: Path, pred) -> str:
        if as_json:
            return json.dumps({"file": str(path), **pred.as_json()})
        alts = ", ".join(f"{d} {p:.1%}" for d, p in pred.top_k)
        return f"{path}: {pred.digit} ({pred.confidence:.1%})  top-{top_k}: {alts}"

    _per_file(_image_paths(images), lambda path: recognizer.predict([_image_source(path)], top_k)[0], line)


# every serve option can come from the environment too, as HOUSENUM_SERVE_<OPTION> (a flag wins)
@app.command("serve", cls=_Command, context_settings={"auto_envvar_prefix": "HOUSENUM_SERVE"})
def serve_cmd(
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 exposes it to the network.")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes, each with its own models.")] = 1,
    digit_model: Annotated[Path | None, typer.Option(
        help="Run folder or .pt for /v1/digits, or 'fast' (the shipped small model); default: the shipped model. "
             "A .onnx beside it runs on ONNX Runtime.")
    ] = None,
    number_model: Annotated[Path | None, typer.Option(help="Model for the house-number reader; default: its own.")
                            ] = None,
    examples: Annotated[Path | None, typer.Option(help="Folder of example photos to offer on the page.")] = None,
    max_mb: Annotated[float, typer.Option(**_within(0.001, 4096),
                                          help="Largest image accepted, in MiB (1,048,576 bytes).")] = 10,
    max_megapixels: Annotated[float, typer.Option(
        **_within(0.001, 178), help="Largest image accepted, in megapixels (from its header; Pillow refuses "
                                 "more than 178 itself).")] = 40,
    max_batch: Annotated[int, typer.Option(min=1, help="Most images in one batch request.")] = 32,
    max_merge: Annotated[int, typer.Option(
        min=1, help="Most single-image requests run together in one model call when they queue (1: never).")] = 32,
    threads: Annotated[int | None, typer.Option(
        min=1, help="Inference threads per worker; default: all cores for the digit model, at most 2 for "
                    "each of the reader's networks (its default was timed on 2 cores only).")] = None,
    int8: Annotated[bool, _flag("--int8", help="Serve digits with the model's 8-bit export "
                                "(`housenum export --int8`; both shipped models have one): 1.5-3x float32, by CPU.")
                    ] = False,
) -> None:
    """Run the HTTP service: the web page at /, the API under /v1, API docs at /docs, /healthz, /metrics.

    Each option can also be set as HOUSENUM_SERVE_<OPTION>, e.g. HOUSENUM_SERVE_INT8=1 or HOUSENUM_SERVE_MAX_MB=5.

    \b
    Examples:
      housenum serve --port 8000 --examples ../shared/data/svhn/numbers/images
      curl -F file=@photo.png http://127.0.0.1:8000/v1/numbers
    """
    from housenum.checkpoint import checkpoint_path, read_digit_checkpoint
    from housenum.serve.app import Settings, check_can_listen, serve

    # a missing or wrong model is one clear line here, not a traceback in each worker
    read_digit_checkpoint(checkpoint_path(digit_model))
    if number_model is not None:   # named, so it must load; the default reader may be left out of an install
        from housenum.read import read_reader_checkpoint, reader_checkpoint_path

        read_reader_checkpoint(reader_checkpoint_path(number_model))
    if examples is not None and not examples.is_dir():
        raise HousenumError(f"--examples {examples}: no such folder")
    if int8:
        from housenum.export import load_digit_recognizer

        load_digit_recognizer(digit_model, int8=True)  # likewise a missing or stale int8 export
    settings = Settings(digit_model=str(digit_model) if digit_model else None,
                        number_model=str(number_model) if number_model else None,
                        max_bytes=int(max_mb * 1024 * 1024), max_pixels=int(max_megapixels * 1_000_000),
                        max_batch=max_batch, max_merge=max_merge, threads=threads,
                        examples=str(examples) if examples else None, int8=int8)
    check_can_listen(host, port)
    typer.echo(f"housenum: serving on http://{host}:{port}/ (API docs at /docs)", err=True)
    serve(settings, host, port, workers)


@app.command("export", cls=_Command)
def export_cmd(
    run: Annotated[Path | None, typer.Argument(help=MODEL_HELP)] = None,
    fmt: Annotated[str, typer.Option("--format", help="Export format; only 'onnx'.")] = "onnx",
    out: Annotated[Path | None, typer.Option(help="Output file; default: beside the checkpoint (best.onnx), "
                                                  "or for a shipped model by name, the current folder.")] = None,
    data: Annotated[str | None, typer.Option("--data", help="Digits for the parity check; default: the run's.")
                    ] = None,
    n: Annotated[int, typer.Option(min=1, help="How many test digits the parity check runs.")] = 512,
    int8: Annotated[bool, _flag("--int8", help="Quantize to 8 bits, scaled on the data's training digits "
                                "(best.int8.onnx; 1.5-3x float32 on a 2-core CPU, `housenum serve --int8`).")
                    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Export a digit model to ONNX (dynamic batch) and check it against PyTorch on real digits.
    `housenum serve` uses the export when it sits beside the checkpoint.

    \b
    Examples:
      housenum export runs/cnn2                     # runs/cnn2/best.onnx
      housenum export fast --int8 --out fast.int8.onnx
    """
    from housenum.export import export_onnx

    if fmt != "onnx":
        _err(f"unknown format '{fmt}'; only 'onnx' is supported")
        raise typer.Exit(2)
    report = export_onnx(run, _file_out(out), data, n, int8=int8)
    if as_json:
        typer.echo(json.dumps(report.as_json()))
        return
    typer.echo(f"{report.model}: wrote {report.path} ({report.precision}, "
               f"{report.path.stat().st_size / 1e6:.2f} MB) from {report.checkpoint}")
    typer.echo(f"parity on {report.n_parity} digits of {report.parity_data}: max abs diff of logits "
               f"{report.max_abs_diff:.2e}, same top digit {report.argmax_agreement:.2%}")


def _digits_arg(digit_model: Path | None, reader_only: bool):
    if reader_only and digit_model is not None:
        raise HousenumError("--digit-model and --reader-only cannot be given together")
    return False if reader_only else (digit_model or True)


@app.command("read", cls=_Command)
def read_cmd(
    images: Annotated[list[Path], typer.Argument(help="Street photos (PNG, JPEG, any size) or folders of them; "
                                                      "- reads one from standard input.",
                                                 readable=False, metavar="PHOTO")],
    model: Annotated[Path | None, typer.Option(help="Reader run folder or .pt; default: the shipped reader.")] = None,
    digit_model: DigitModelOpt = None,
    reader_only: ReaderOnlyOpt = False,
    no_search: NoSearchOpt = False,
    as_json: Annotated[bool, _flag("--json", help="One JSON object per photo per line.")] = False,
    out: Annotated[Path | None, typer.Option(
        help="Also draw each reading (number box, digit boxes, number and confidence) on its photo, "
             "enlarged, into this folder as NAME.read.png.")] = None,
    min_confidence: Annotated[float, typer.Option(
        **_within(0, 1), help="Withhold readings less sure than this: printed as 'unsure', with number null "
                               "and the reading as 'guess' in --json. On held-out photos 0.9 kept 72%, 98% of them "
                               "right; 0.8 kept 84%, 96% right (READER_CARD.md).")] = 0.0,
) -> None:
    """Read the whole house number in each photo, with a confidence and the digit boxes.

    The confidence is the probability of the reading; --min-confidence turns it into a yes/no for
    applications that would rather have no answer than a wrong one.

    \b
    Examples:
      housenum read photo.jpg
      housenum read photos/ --json --min-confidence 0.9 | jq -r .number
      housenum read photo.jpg --out drawn/            # the boxes drawn on the photo
    """
    from housenum import plots
    from housenum.preprocess import open_image
    from housenum.read import NumberReader

    _folder_out(out)
    images = _image_paths(images)
    reader = NumberReader(model, digits=_digits_arg(digit_model, reader_only), search=not no_search)
    drawn: set[str] = set()

    def answer(path: Path):
        photo = open_image(_image_source(path))
        reading = reader.read(photo).sure_or_none(min_confidence)
        if out is not None:
            stem = "stdin" if path == STDIN else path.stem
            name, k = f"{stem}.read.png", 1
            while name in drawn:     # photos of one name from different folders
                k += 1
                name = f"{stem}-{k}.read.png"
            plots.save_image(plots.reading_overlay(photo, reading), out / name)
            drawn.add(name)
        return reading

    def line(path: Path, reading) -> str:
        if as_json:
            return json.dumps({"file": str(path), **reading.as_json()})
        return f"{path}: {reading.summary()}"

    try:
        _per_file(images, answer, line)
    finally:
        if drawn:
            typer.echo(f"{len(drawn)} reading(s) drawn in {out}/", err=True)


@app.command("evaluate-numbers", cls=_Command)
def evaluate_numbers_cmd(
    data: Annotated[str, typer.Argument(help="Photos: a folder with labels.json or digitStruct.mat, "
                                             "'svhn-full[:test|train|extra]' or 'synthetic[:N]'.")],
    model: Annotated[Path | None, typer.Option(help="Reader run folder or .pt; default: the shipped reader.")] = None,
    files: Annotated[str | None, typer.Option(help="Only photos whose name matches this glob, e.g. 'test_*'.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for the failures gallery: failures.png, failures-2.png, "
                                                  "... (40 to a page, the surest mistakes first).")] = None,
    digit_model: DigitModelOpt = None,
    reader_only: ReaderOnlyOpt = False,
    no_search: NoSearchOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Whole-number and per-digit accuracy, accuracy by length, coverage at 95%/98% precision.

    \b
    Examples:
      housenum evaluate-numbers ../shared/data/svhn/numbers --files 'test_*' --out report/
      housenum evaluate-numbers svhn-full:test --json
    """
    from housenum.checkpoint import DEFAULT_DIGIT_MODEL, SHIPPED_DIGIT_MODELS, checkpoint_path
    from housenum.evaluate_numbers import evaluate_numbers

    digits = _digits_arg(digit_model, reader_only)
    shipped = digits is True or (digits is not False and checkpoint_path(digits).resolve() in
                                 {p.resolve() for p in (DEFAULT_DIGIT_MODEL, *SHIPPED_DIGIT_MODELS.values())})
    result = evaluate_numbers(data, model, _folder_out(out), files, digits=digits, search=not no_search,
                              progress=True)
    if shipped and not data.startswith("synthetic"):   # `fast` trained on the same crops as the default
        typer.echo("note: the shipped digit model, the reader's second opinion, trained on digits cut from SVHN "
                   "photos, the official test photos' included: on SVHN photos this figure is not held-out "
                   "(--digit-model RUN with one trained without them: READER_CARD.md)", err=True)
    if result.trained_on:
        hint = f": --files '{result.held_out_files}' scores the photos it held out" if result.held_out_files else ""
        typer.echo(f"note: {result.trained_on} of these {result.n} photos trained the reader (its training or "
                   f"validation photos): this figure is not held-out{hint}", err=True)
    if out is not None and not result.failures:
        typer.echo(f"no failures: no gallery to write in {out}", err=True)
    if as_json:
        typer.echo(json.dumps(result.as_json()))
        return
    typer.echo(result.report())


@app.command("train-reader", cls=_Command)
def train_reader_cmd(
    ctx: typer.Context,
    data: Annotated[str, typer.Option(help="Labelled photos: a folder with labels.json or digitStruct.mat, "
                                           "'svhn-full:train' or 'synthetic[:N]'.")] = "synthetic:2000",
    holdout: Annotated[str, typer.Option(help="Never train or validate on photos matching this glob "
                                              "('' for none).")] = "test_*",
    val_fraction: Annotated[float, typer.Option(help="Share of the other photos kept for validation "
                                                     "(0: train on all, keep the last epoch).")] = 0.1,
    fold: Annotated[int | None, typer.Option(help="Use photo fold K of 5 as validation instead of "
                                                  "--val-fraction.")] = None,
    epochs: Annotated[int, typer.Option(help="Passes over the real training photos.")] = 30,
    minutes: Annotated[float | None, typer.Option(help="Stop after this many minutes; the learning-rate "
                                                       "schedule follows the clock (--epochs caps it).")] = None,
    batch_size: Annotated[int, typer.Option(help="Crops per step (and as many localiser views).")] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate (one-cycle, AdamW).")] = 2e-3,
    real_fraction: Annotated[float, typer.Option(help="Share of each batch from real photos.")] = 0.5,
    synthetic: Annotated[int, typer.Option(help="Synthetic number photos mixed in.")] = 12000,
    synthetic_empty: Annotated[int, typer.Option(help="Synthetic photos without a number.")] = 3000,
    arch: Annotated[str, typer.Option(help="Network sizes: 'small' (CPU), 'wide' (GPU), 'heatmap' (small, "
                                           "with a localiser that finds the centre on a map), "
                                           "'heatmap-wide' (its localiser wider, for a GPU), 'ctc' (a CTC "
                                           "reader over columns; measured only briefly, docs/reader.md).")
                ] = "small",
    loc_zoom: Annotated[tuple[float, float], typer.Option(help="Localiser zoom range (log-uniform; below 1 "
                                                               "shows the number smaller, as in looser photos).")
                        ] = (0.85, 1.25),
    loc_shift: Annotated[float, typer.Option(help="Localiser view shift, up to this share of the photo.")] = 0.1,
    loc_backdrop: Annotated[str, typer.Option(help="What a zoomed-out or shifted localiser view shows past the "
                                                   "photo's edge: 'border' (the edge smeared) or 'scenery' "
                                                   "(number-free parts of other training photos).")] = "border",
    workers: Annotated[int, typer.Option(help="Processes drawing synthetic photos.")] = 1,
    eval_every: Annotated[int, typer.Option(help="Epochs between validations and checkpoints.")] = 1,
    init: Annotated[Path | None, typer.Option(help="Start from this reader run folder or .pt.")] = None,
    localizer_only: Annotated[bool, _flag("--localizer-only",
                                          help="Train only the localiser (keep --init's reader).")] = False,
    new_localizer: Annotated[bool, _flag("--new-localizer", help="With --init: a new localiser as --arch says "
                                                                 "(e.g. 'heatmap'), the reader of --init kept.")
                             ] = False,
    reader_only: Annotated[bool, _flag("--reader-only",
                                       help="Train only the reader (keep --init's localiser).")] = False,
    hard_negatives: Annotated[int, typer.Option(help="With --init: teach 'no number' where its localiser looks, "
                                                     "in N synthetic walls and in the parts of the "
                                                     "training photos away from their number.")] = 0,
    seed: Annotated[int, typer.Option()] = 0,
    threads: Annotated[int, typer.Option(help="CPU threads.")] = 1,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[str, typer.Option(help="'auto' (bf16 autocast on a GPU or a CPU with bf16 units), "
                                                "'fp32' or 'bf16'.")] = "auto",
    out: Annotated[Path, typer.Option(help="Run folder.")] = Path("runs/reader"),
    resume: Annotated[Path | None, typer.Option(
        help="Continue the run in this folder from its last.pt, with its own settings (only --device and "
             "--threads may be given): the same steps as a run straight through.")] = None,
) -> None:
    """Train the whole-number reader (localiser + reader) and write its run folder: best.pt,
    last.pt, config.json, history.csv and curves.png. Ctrl-C keeps the last checkpoint; --resume continues.

    \b
    Examples:
      housenum train-reader --data ../shared/data/svhn/numbers --epochs 20 --out runs/reader
      housenum train-reader --resume runs/reader
    """
    from housenum.models.reader import ARCHS
    from housenum.train_reader import ReaderTrainConfig, train_reader

    if resume is not None:
        _refuse_with_resume(ctx, READER_RESUME_OPTIONS)
        out = resume
    else:
        _folder_out(out)
    _refuse_both(ctx, "fold", "val_fraction", "--fold K holds out photo fold K of 5, not a share")
    if arch not in ARCHS:
        raise typer.BadParameter(f"choose from {', '.join(ARCHS)}", param_hint="--arch")
    def lasting(path) -> str | None:   # config.json's paths must hold for a --resume from another folder
        if path is None or not str(path).strip():   # "" would resolve to this folder; left as given, it is refused
            return path
        return str(Path(path).resolve()) if Path(path).exists() else str(path)

    cfg = ReaderTrainConfig(data=lasting(data), holdout=holdout or None, val_fraction=val_fraction, fold=fold,
                            epochs=epochs, minutes=minutes, loc_zoom=loc_zoom, loc_shift=loc_shift,
                            loc_backdrop=loc_backdrop,
                            batch_size=batch_size, lr=lr, real_fraction=real_fraction,
                            synthetic=synthetic, synthetic_empty=synthetic_empty, arch=ARCHS[arch].as_dict(),
                            workers=workers, eval_every=eval_every, init=lasting(init),
                            localizer_only=localizer_only, new_localizer=new_localizer, reader_only=reader_only,
                            hard_negatives=hard_negatives, seed=seed, threads=threads,
                            device=device, precision=precision)
    if resume is None:
        cfg.check()     # before saying an old run is replaced
    with _ctrl_c_says_what_is_kept(out, "train-reader", resume is not None,
                                   first="the first checkpoint", last="the last checkpoint"):
        if resume is None:   # said once Ctrl-C is handled: a Ctrl-C just after it gets its answer
            _say_replacing(out, "reader")
        result = train_reader(cfg, out, progress=lambda line: typer.echo(line, err=True), resume=resume is not None)
    scored = (f"best validation whole-number accuracy {result.best_val_acc:.4f}" if math.isfinite(result.best_val_acc)
              else "no validation photos: kept the last epoch")
    typer.echo(f"reader: {scored}, {result.train_seconds:.0f} s; run folder {out}")


def main() -> None:
    """Entry point: user mistakes end in one clear line and a non-zero exit, never a traceback."""
    _exit(_run_app())


def _stop_on_sigterm() -> None:
    """Make SIGTERM (`kill`, `timeout`, a job scheduler) stop a command as Ctrl-C does: Python's default
    ends at once, leaving a half-written temporary file beside each output and no word of what was kept.
    (`housenum serve` hands SIGTERM to uvicorn, which shuts down gracefully.)"""
    def as_ctrl_c(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():   # the only thread that may set handlers
        signal.signal(signal.SIGTERM, as_ctrl_c)


def _names_print_as_given() -> None:
    """A file name that is not valid UTF-8 (its bytes kept as surrogates) prints as its bytes, as `ls`
    does, rather than ending the command in a UnicodeEncodeError under a strict UTF-8 locale."""
    if getattr(sys.stdout, "errors", None) == "strict" and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")


def _run_app() -> int:
    """Run the command; return its exit status, having said in one line what went wrong."""
    _stop_on_sigterm()
    _names_print_as_given()
    # Pillow warns of corrupt EXIF and the like before the error that says so once
    warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
    try:
        code = app(standalone_mode=False)   # so that a usage error is ours to print, as one line too
    except typer.Abort:                       # Ctrl-C outside a command's own handling
        _err("interrupted")
        return 130
    except typer.TyperException as e:         # a bad option or argument: its message, without the box
        message = " ".join((e.format_message() if hasattr(e, "format_message") else str(e)).split())
        ctx = getattr(e, "ctx", None)
        if message:   # empty when a bare group printed its help
            _err(f"{message} (see '{ctx.command_path} --help')" if ctx is not None else message)
        return getattr(e, "exit_code", 2)
    except HousenumError as e:
        _err(str(e))
        return 2
    except OSError as e:  # an output path that cannot be written: a folder in the way, no permission
        _err(f"{e.filename}: {e.strerror or e}" if e.filename else str(e))
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except SystemExit as e:   # a command's own exit, e.g. 130 after its Ctrl-C message
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if code == 130:   # typer's word for a Ctrl-C that no command caught
        _err("interrupted")
    return code if isinstance(code, int) else 0


def _exit(code: int) -> None:
    """Exit with `code`. Under torchrun, skip the interpreter's teardown once output is flushed: now and
    then a rank that had finished training aborted on its way out ("terminate called without an active
    exception", SIGABRT from gloo's C++ threads), and torchrun then failed the whole run. A single
    process exits as usual."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
