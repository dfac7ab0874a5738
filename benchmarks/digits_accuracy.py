"""Held-out digit accuracy of training recipes, over several seeds and validation folds.

Each run trains on crops.npz's training photos (validation: one of 5 source-photo folds, chosen by
seed) and is scored on the test split (20% of the source photos, never seen in training), with
and without test-time augmentation. Prints one JSON line per run, then a table per config: mean ±
sd of the test accuracy (plain, with TTA, on the exact official test pixels), mean ECE, accuracy at
95% coverage, training seconds and seconds to validation accuracy 0.886 (the Keras cnn2 figure;
`seconds_to_val_0.886` in the JSON lines). `--rescore` prints the same table, less the times, for the runs it scores.

The shipped digit model's recipe (`mid_mixup_bf16_135`, the default: `resnet_mid`, the `strong`
recipe with mixup 0.2, bf16, 135 epochs of 8,605 digits; README, "Shipped digit model"), kept, then
scored on its last epochs as the README reports it:

    python benchmarks/digits_accuracy.py --configs mid_mixup_bf16_135 --seeds 3 --jobs 2 --threads 1 \\
        --device cpu --keep runs/mid
    python benchmarks/digits_accuracy.py --last --rescore runs/mid/mid_mixup_bf16_135_seed*
    python benchmarks/digits_accuracy.py --configs all --seeds 3 --jobs 8    # every lever (GPU)

A few configs start from other runs kept in runs/: fast_distill (teachers runs/levers/fast_seed0-2:
`--configs fast --seeds 3 --keep runs/levers`), fast_synth_init (runs/levers/synth_pretrain:
`housenum train --model resnet_fast --data synthetic:20000 --epochs 3 --out runs/levers/synth_pretrain`),
tiny_distill and tiny_distill_online (teacher runs/tradeoff/fast_mixup_seed0: `--configs fast_mixup
--seeds 1 --keep runs/tradeoff`). `--configs all` skips those whose runs are missing, with a line
saying so; naming one of them stops with that line instead.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "svhn" / "crops.npz"
KERAS_CNN2 = 0.886  # the notebook's cnn2 in TF/Keras on real SVHN test digits (issue 3)

# The first levers are the "strong" recipe on resnet (RGB, augmentation, label smoothing 0.1, OneCycle,
# AdamW 5e-4, EMA 0.999, 30 epochs) with one change; the later ones build on resnet_fast, resnet_tiny
# and resnet_mid with mixup. The shipped digit model's recipe is mid_mixup_bf16_135.
CONFIGS: dict[str, dict] = {
    "cnn2_notebook": {"model": "cnn2"},
    "resnet_plain": {"model": "resnet", "recipe": "notebook"},
    "strong": {"model": "resnet"},
    "no_augment": {"model": "resnet", "augment": False},
    "no_label_smoothing": {"model": "resnet", "label_smoothing": 0.0},
    "no_ema": {"model": "resnet", "ema": 0.0},
    "constant_lr": {"model": "resnet", "schedule": "constant", "lr": 1e-3},
    "grey": {"model": "resnet", "channels": 1},
    "channel_norm": {"model": "resnet_chnorm"},
    "cutout": {"model": "resnet", "cutout": 8},
    "synthetic_20k": {"model": "resnet", "synthetic": 20000},
    "wide": {"model": "resnet_wide"},
    "fast": {"model": "resnet_fast"},
    "fast_svhn_aug": {"model": "resnet_fast", "shear": 15.0, "invert": 0.5, "shuffle_channels": True},
    # distillation: the three `fast` runs (kept with --keep runs/levers) as teachers of a fourth
    "fast_distill": {"model": "resnet_fast",
                     "teachers": [str(ROOT / "runs" / "levers" / f"fast_seed{s}") for s in range(3)]},
    # synthetic pretraining (`housenum train --model resnet_fast --data synthetic:20000 --epochs 3
    # --out runs/levers/synth_pretrain`), then the fast recipe on the real digits from its weights
    "fast_synth_init": {"model": "resnet_fast", "init": str(ROOT / "runs" / "levers" / "synth_pretrain")},
    "fast_swap_sides": {"model": "resnet_fast", "swap_sides": 0.5},   # new neighbours at the sides
    "fast_mixup": {"model": "resnet_fast", "mixup": 0.2},
    "fast_mixup_0.1": {"model": "resnet_fast", "mixup": 0.1},   # the shipped 0.2 against half and double
    "fast_mixup_0.4": {"model": "resnet_fast", "mixup": 0.4},
    # the speed/accuracy trade-off: the shipped recipe on a quarter / a seventh of the network
    "small_mixup": {"model": "resnet_small", "mixup": 0.2},
    "tiny_mixup": {"model": "resnet_tiny", "mixup": 0.2},
    "tiny_mixup_60": {"model": "resnet_tiny", "mixup": 0.2, "epochs": 60},   # the time it saves, spent on epochs
    "tiny_mixup_90": {"model": "resnet_tiny", "mixup": 0.2, "epochs": 90},   # ... and more of it
    # decoupled weight decay: the recipe's 5e-4 times a 2e-3 peak learning rate barely shrinks a weight
    "tiny_mixup_wd0.05": {"model": "resnet_tiny", "mixup": 0.2, "weight_decay": 0.05},
    "tiny_mixup_wd0.5": {"model": "resnet_tiny", "mixup": 0.2, "weight_decay": 0.5},
    # SGD with Nesterov momentum and coupled weight decay, the usual optimiser for ResNets on SVHN/CIFAR
    "tiny_mixup_sgd": {"model": "resnet_tiny", "mixup": 0.2, "optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4},
    # the learning rate's schedule: cosine after a short warm-up (3% of the steps) instead of OneCycle
    "tiny_mixup_cosine": {"model": "resnet_tiny", "mixup": 0.2, "schedule": "cosine"},
    # CutMix (alpha 1, as its paper's CIFAR runs) in mixup's place: a rectangle of another digit pasted in
    "tiny_cutmix": {"model": "resnet_tiny", "cutmix": 1.0},
    "tiny_cutmix_0.2": {"model": "resnet_tiny", "cutmix": 0.2},   # mixup's alpha: mostly slivers or whole swaps
    # sharpness-aware minimisation: two passes a step (1.4-1.5x a plain step's time on the 2-core CPU)
    "tiny_mixup_sam": {"model": "resnet_tiny", "mixup": 0.2, "sam": 0.05},
    "tiny_mixup_60_sam": {"model": "resnet_tiny", "mixup": 0.2, "sam": 0.05, "epochs": 60},   # ... and at 60 epochs
    # an ensemble inside the default's budget: the default's network for 20 epochs plus the fast one for
    # 35 (about 480 + 210 s against 720 s for the default's 30 epochs), their probabilities averaged
    "fast_mixup_20": {"model": "resnet_fast", "mixup": 0.2, "epochs": 20},
    "tiny_mixup_35": {"model": "resnet_tiny", "mixup": 0.2, "epochs": 35},
    "fast_mixup_sgd": {"model": "resnet_fast", "mixup": 0.2, "optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4},
    # the fast model taught by the default's recipe (`--configs fast_mixup --seeds 1 --keep runs/tradeoff`
    # makes the teacher): on the plain digits once, or on every augmented batch
    "tiny_distill": {"model": "resnet_tiny", "mixup": 0.2,
                     "teachers": [str(ROOT / "runs" / "tradeoff" / "fast_mixup_seed0")]},
    "tiny_distill_online": {"model": "resnet_tiny", "mixup": 0.2, "distill_online": True,
                            "teachers": [str(ROOT / "runs" / "tradeoff" / "fast_mixup_seed0")]},
    # bf16 autocast on a CPU with bf16 units (AVX512-BF16/AMX; 1.7-2x the default's training speed), and
    # the time it saves spent on epochs
    "fast_mixup_bf16": {"model": "resnet_fast", "mixup": 0.2, "precision": "bf16"},
    "fast_mixup_bf16_60": {"model": "resnet_fast", "mixup": 0.2, "precision": "bf16", "epochs": 60},
    # the default at 3/4 width: int8 inference about 1.3x faster on a Zen 5 (docs/experiments.md)
    "mid_mixup_bf16_60": {"model": "resnet_mid", "mixup": 0.2, "precision": "bf16", "epochs": 60},
    "mid_mixup_bf16_90": {"model": "resnet_mid", "mixup": 0.2, "precision": "bf16", "epochs": 90},
    # the steps of 90 epochs of all the shared digits (12,722), on the 8,605 of a held-out run
    "mid_mixup_bf16_135": {"model": "resnet_mid", "mixup": 0.2, "precision": "bf16", "epochs": 135},
    "fast_val5": {"model": "resnet_fast", "n_folds": 20},   # validation 5% of training photos, not 20%
    # the learning curve: the fast recipe on a stable half / quarter of the training photos
    "fast_half": {"model": "resnet_fast", "train_photos": 0.5},
    "fast_quarter": {"model": "resnet_fast", "train_photos": 0.25},
    "lr_4e-3": {"model": "resnet", "lr": 4e-3},
    "epochs_15": {"model": "resnet", "epochs": 15},
    "epochs_45": {"model": "resnet", "epochs": 45},
}


# configs that start from other kept runs, and how to make those runs
NEEDS_RUNS = {
    "fast_distill": "python benchmarks/digits_accuracy.py --configs fast --seeds 3 --keep runs/levers",
    "fast_synth_init": "housenum train --model resnet_fast --data synthetic:20000 --epochs 3 "
                       "--out runs/levers/synth_pretrain",
    "tiny_distill": "python benchmarks/digits_accuracy.py --configs fast_mixup --seeds 1 --keep runs/tradeoff",
    "tiny_distill_online": "python benchmarks/digits_accuracy.py --configs fast_mixup --seeds 1 --keep runs/tradeoff",
}


def missing_runs(name: str) -> list[str]:
    """The runs a config starts from (teachers, initial weights) that are not there."""
    settings = CONFIGS[name]
    needed = [*settings.get("teachers", []), *([settings["init"]] if settings.get("init") else [])]
    return [p for p in needed if not Path(p).exists()]


def summarise(groups: dict[str, list[dict]]) -> None:
    """Mean ± sd per group of rows: a config's runs, or rescored run folders (a folder without its _seedN)."""
    groups = {k: rs for k, rs in groups.items() if rs}
    rows = [r for rs in groups.values() for r in rs]
    width = max([20, *(len(g) + 2 for g in groups)])
    timed = all("train_seconds" in r for r in rows)
    official = all("test_acc_official" in r for r in rows)
    print(f"\n{'config' if timed else 'runs':<{width}}{'runs':>5}{'test acc':>18}{'with TTA':>18}"
          + (f"{'official':>18}" if official else "") + f"{'ECE':>8}{'acc@95%cov':>12}"
          + (f"{'train s':>9}{'s to val 0.886':>20}" if timed else ""))
    for name, rs in groups.items():
        def ms(k: str, rs=rs) -> str:
            v = [r[k] for r in rs]
            return f"{statistics.mean(v):.4f} ± {statistics.stdev(v) if len(v) > 1 else 0:.4f}"

        line = f"{name:<{width}}{len(rs):>5}{ms('test_acc'):>18}{ms('test_acc_tta'):>18}"
        if official:
            line += f"{ms('test_acc_official'):>18}"
        line += (f"{statistics.mean(r['ece'] for r in rs):>8.4f}"
                 f"{statistics.mean(r['acc_at_95_coverage'] for r in rs):>12.4f}")
        if timed:
            reached = [r["seconds_to_val_0.886"] for r in rs if r.get("seconds_to_val_0.886") is not None]
            to_bar = "never" if not reached else (
                f"{statistics.mean(reached):.0f} ({min(reached):.0f}-{max(reached):.0f})"
                + ("" if len(reached) == len(rs) else f", {len(reached)} of {len(rs)}"))
            line += f"{statistics.mean(r['train_seconds'] for r in rs):>9.0f}{to_bar:>20}"
        print(line)


def run_one(args: tuple[str, int, str, str, int | None, int, str | None]) -> dict:
    name, seed, data, device, epochs, threads, keep = args
    import torch

    from housenum.data import load_digits
    from housenum.train import TrainConfig, train

    torch.set_num_threads(threads)
    settings = dict(CONFIGS[name])
    if epochs:
        settings["epochs"] = epochs
    train_photos = settings.pop("train_photos", None)
    cfg = TrainConfig(data=data, seed=seed, fold=seed % 5, device=device, threads=threads, **settings)
    digits = load_digits(data)
    if train_photos is not None:
        digits = keep_training_photos(digits, train_photos)
    with tempfile.TemporaryDirectory() as tmp:
        if keep:
            tmp = str(Path(keep) / f"{name}_seed{seed}")
        t0 = time.perf_counter()
        result = train(cfg, tmp, data=digits, progress=False)
        seconds = time.perf_counter() - t0
        scores = score_run(tmp, digits, data)
    elapsed, reach = 0.0, None
    for h in result.history:
        elapsed += h["seconds"]
        if reach is None and h["val_acc"] >= KERAS_CNN2:
            reach = round(elapsed, 1)
    return {"config": name, "seed": seed, "fold": seed % 5, "epochs": result.config.epochs, **scores,
            "val_acc": result.best_val_acc, "train_seconds": round(seconds, 1), "seconds_to_val_0.886": reach,
            "device": device}


def keep_training_photos(digits, fraction: float):
    """The same data with only about `fraction` of the training photos (a stable hash; the test
    split untouched), for a learning curve."""
    from dataclasses import replace

    from housenum.data.splits import held_out_by_source

    kept = held_out_by_source(digits.train.sources, fraction, salt="learning-curve")
    return replace(digits, train=digits.train.subset(kept.nonzero()[0]))


def last_epoch_weights(run: str, tmp: Path) -> Path:
    """The run's last epoch as a checkpoint, with the weight average where the recipe keeps one
    (what best.pt holds for its epoch): scoring it leaves out the choice of epoch on validation."""
    from housenum.checkpoint import read_checkpoint, save_checkpoint

    state = read_checkpoint(Path(run) / "last.pt")
    tmp.mkdir(parents=True, exist_ok=True)
    if state.get("ema_state"):
        state["model_state"] = state["ema_state"]
    save_checkpoint(tmp / "last.pt", state)
    return tmp / "last.pt"


def score_run(run: str | Path | list, digits, data: str) -> dict:
    """Test accuracy of a run folder (or of several, their probabilities averaged: an ensemble)
    with and without TTA, also on the test digits that are the exact official test pixels (the
    kind of digit the hidden test set holds), ECE, coverage."""
    import numpy as np

    from housenum.checkpoint import load_model
    from housenum.evaluate import predict_probs, score

    models, test = [load_model(r) for r in (run if isinstance(run, list) else [run])], digits.test
    plain_probs = np.mean([predict_probs(m, test) for m in models], 0)
    tta_probs = np.mean([predict_probs(m, test, tta=True) for m in models], 0)
    plain, tta = score(plain_probs, test.labels), score(tta_probs, test.labels)
    out = {"test_acc": plain.accuracy, "test_acc_tta": tta.accuracy}
    if str(data).endswith(".npz"):   # the shared crops.npz says which pixels are the official ones
        with np.load(data) as raw:
            if "exact_official_pixels" in raw:
                official = set(raw["source_image"][raw["exact_official_pixels"]])
                mask = np.array([s in official for s in test.sources])
                out["test_acc_official"] = float((plain_probs.argmax(1) == test.labels)[mask].mean())
                out["test_acc_official_tta"] = float((tta_probs.argmax(1) == test.labels)[mask].mean())
    return {**out, "ece": plain.ece, "acc_at_95_coverage": plain.accuracy_at_95_coverage}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="mid_mixup_bf16_135",
                        help="comma list or 'all' (the configs needing runs not in runs/ are skipped) of: "
                             f"{', '.join(CONFIGS)}; default: the shipped digit model's recipe, mid_mixup_bf16_135")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int, default=None, help="override every config's epochs")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (for a GPU)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per run")
    parser.add_argument("--out", default=None, help="also append each run as a JSON line here")
    parser.add_argument("--keep", default=None, help="keep each run folder here (CONFIG_seedN) instead of deleting it")
    parser.add_argument("--rescore", nargs="+", default=None, metavar="RUN",
                        help="only score these run folders on the test split (no training); RUN+RUN+... "
                             "scores the runs as one ensemble (their probabilities averaged)")
    parser.add_argument("--last", action="store_true",
                        help="with --rescore: score each run's last epoch (its weight average), not best.pt")
    args = parser.parse_args()
    if args.rescore:
        from housenum.data import load_digits

        digits = load_digits(args.data)
        scored = []
        for run in args.rescore:
            with tempfile.TemporaryDirectory() as tmp:
                members = run.split("+")
                weights = [last_epoch_weights(m, Path(tmp) / str(k)) if args.last else m for k, m in enumerate(members)]
                scored.append({"run": run, "weights": "last" if args.last else "best",
                               **score_run(weights, digits, args.data)})
                print(json.dumps(scored[-1]), flush=True)
        groups: dict[str, list[dict]] = {}
        for r in scored:   # an ensemble (RUN+RUN) is its own group; seeds of one config are one
            name = r["run"] if "+" in r["run"] else re.sub(r"_seed\d+$", "", r["run"].rstrip("/"))
            groups.setdefault(name, []).append(r)
        summarise(groups)
        return
    names = list(CONFIGS) if args.configs == "all" else args.configs.split(",")
    for n in names:
        if n not in CONFIGS:
            parser.error(f"unknown config {n}")
    for n in list(names):
        if missing_runs(n):
            message = f"{n} starts from {', '.join(missing_runs(n))}, not there: make it with `{NEEDS_RUNS[n]}`"
            if args.configs != "all":
                parser.error(message)
            print(f"skipping {message}", flush=True)
            names.remove(n)
    import os

    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    jobs = [(n, s, args.data, args.device, args.epochs, threads, args.keep) for n in names
            for s in range(args.first_seed, args.first_seed + args.seeds)]
    rows: list[dict] = []
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.jobs) if args.jobs > 1 else _Serial() as pool:
        for row in pool.imap_unordered(run_one, jobs):
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
    summarise({n: [r for r in rows if r["config"] == n] for n in names})


class _Serial:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def imap_unordered(self, fn, items):
        return map(fn, items)


if __name__ == "__main__":
    main()
