"""Held-out accuracy of the shipped recipe against the number of training digits.

Reads the rows `digits_accuracy.py` wrote for the `fast` recipe on a quarter, a half and all of
the training photos (and with 5% validation, `fast_val5`), fits a power law to the error rate
(error = a * digits^-b), and prints what it predicts for a model trained on all the shared digits
(`--all-data`) and how many digits it says 0.975 would need. The fit is an extrapolation, printed
as one; the rows are measurements. Rows of `--rescore RUN... --last` (each run's last epoch, no
choice of epoch on validation) name their run folder, CONFIG_seedN, instead of config and seed.

    python benchmarks/digits_accuracy.py --configs fast_quarter,fast_half,fast,fast_val5 --seeds 2 \\
        --jobs 2 --threads 1 --device cpu --keep runs/levers
    python benchmarks/digits_accuracy.py --rescore runs/levers/fast_* --last > rows.jsonl
    python benchmarks/learning_curve.py rows.jsonl --plot docs/results/learning_curve.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
CURVE = ("fast_quarter", "fast_half", "fast", "fast_val5")   # fast_val5: 5% validation, more training digits
TARGET = 0.975   # issue 3's bar


def training_digits(digits, config: str, seed: int) -> int:
    """How many digits a digits_accuracy.py run of `config` and `seed` trained on."""
    from digits_accuracy import CONFIGS, keep_training_photos

    from housenum.train import TrainConfig, split_for_training

    settings = dict(CONFIGS[config])
    fraction = settings.pop("train_photos", None)
    data = keep_training_photos(digits, fraction) if fraction is not None else digits
    cfg = TrainConfig(model=settings["model"], fold=seed % 5, n_folds=settings.get("n_folds", 5)).resolved()
    return len(split_for_training(data, cfg)[0])


def named(row: dict) -> dict:
    """A rescore row ({"run": ".../fast_half_seed1", ...}) with the config and seed of its folder."""
    if "config" not in row and "run" in row:
        config, _, seed = Path(row["run"]).name.rpartition("_seed")
        row = {**row, "config": config, "seed": int(seed)}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="+", help="JSON lines of digits_accuracy.py (--out, or what --rescore prints)")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "svhn" / "crops.npz"))
    parser.add_argument("--plot", default=None, help="also draw the curve into this PNG")
    args = parser.parse_args()

    from housenum.data import load_digits
    from housenum.train import TrainConfig, split_for_training

    digits = load_digits(args.data)
    runs = [named(json.loads(line)) for f in args.rows for line in Path(f).read_text().splitlines() if line.strip()]
    runs = [r for r in runs if r.get("config") in CURVE]
    if {r["config"] for r in runs} != set(CURVE):
        sys.exit(f"need rows of all of {', '.join(CURVE)}; found {sorted({r['config'] for r in runs})}")
    points = [(training_digits(digits, r["config"], r["seed"]), r["test_acc"], r.get("test_acc_official"))
              for r in runs]

    print(f"{'config':<14}{'runs':>5}{'train digits':>14}{'held-out acc':>18}")
    for name in CURVE:
        rows = [p for p, r in zip(points, runs) if r["config"] == name]
        accs = [a for _, a, _ in rows]
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"{name:<14}{len(rows):>5}{statistics.mean(n for n, _, _ in rows):>14.0f}"
              f"{statistics.mean(accs):>11.4f} ± {spread:.4f}")

    n = np.array([p[0] for p in points], float)
    err = 1 - np.array([p[1] for p in points])
    slope, intercept = np.polyfit(np.log(n), np.log(err), 1)

    def predict(digits_n: float) -> float:
        return 1 - float(np.exp(intercept + slope * np.log(digits_n)))

    everything = TrainConfig(model="resnet_fast", all_data=True, val_fraction=0.05).resolved()
    n_all = len(split_for_training(digits, everything)[0])
    needed = float(np.exp((np.log(1 - TARGET) - intercept) / slope))
    print(f"\nfit: error = {np.exp(intercept):.3g} * digits^{slope:.3f} "
          f"(each doubling of the training digits multiplies the error by {2 ** slope:.3f})")
    print(f"extrapolated: {predict(n_all):.4f} for {n_all:,} training digits (--all-data --val-fraction 0.05, "
          f"of the {len(digits.train) + len(digits.test):,} shared)")
    print(f"extrapolated: {TARGET} needs about {needed:,.0f} training digits")
    if args.plot:
        draw(n, 1 - err, predict, needed, n_all, args.plot)
        print(f"plot: {args.plot}")


def draw(n: np.ndarray, acc: np.ndarray, predict, needed: float, n_all: int, path: str) -> None:
    from housenum import plots

    fig = plots.plt.figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    ax.scatter(n, acc, color="C0", zorder=3, label="held-out accuracy, one run each")
    grid = np.geomspace(n.min() * 0.9, max(needed, n_all) * 1.1, 100)
    ax.plot(grid, [predict(g) for g in grid], "--", color="C1", label="power-law fit (extrapolated right)")
    ax.axhline(TARGET, color="C3", lw=1, label=f"issue 3's bar, {TARGET}")
    ax.axvline(n_all, color="C2", lw=1, label=f"all shared digits (--all-data): {n_all:,}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training digits")
    ax.set_ylabel("held-out accuracy (2,693 test digits)")
    ax.set_title("The shipped recipe (resnet_fast, 30 epochs) against its data")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    plots.save(fig, Path(path))


if __name__ == "__main__":
    main()
