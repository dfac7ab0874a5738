"""Cross-validated whole-number accuracy: each fold's run scored on its own validation photos.

A fold run (`housenum train-reader --fold K`, or `reader_gpu.py --runs NAME:ARCH:K`) never trained
on photo fold K of 5 (by a hash of the name; the `test_*` photos are in no fold). Its best.pt was
chosen on that fold, so these figures lean optimistic (compare the last epoch's in the run's
history.csv). A run given as RUN:FOLD:DIGIT_RUN is also scored as `housenum read` reads (digit
model and window search) with that digit model, which must not have seen the fold's digits
(`benchmarks/reader_digit_model.py --fold K`); the one behind the held-out figures did see them.

    python benchmarks/reader_cv.py runs/reader_gpu/cv0-wide:0 runs/reader_gpu/cv1-wide:1
    python benchmarks/reader_cv.py runs/cv_gpu/hn0:0:runs/digits_nofold0 runs/cv_gpu/hn1:1:runs/digits_nofold1
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "svhn" / "numbers"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="RUN_DIR:FOLD[:DIGIT_RUN] ...")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    args = parser.parse_args()

    from housenum.errors import HousenumError

    try:
        cross_validate(args.runs, args.data)
    except HousenumError as e:   # a digit-model run, a missing checkpoint: its message says it all
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def cross_validate(runs: list[str], data: str) -> None:
    from housenum.data.numbers import load_numbers
    from housenum.evaluate_numbers import score
    from housenum.read import NumberReader
    from housenum.train_reader import ReaderTrainConfig, split_photos

    photos = load_numbers(data)
    specs = [spec.split(":", 2) for spec in runs]     # [run, fold] or [run, fold, digit run]
    columns = ["networks", "+ window search"] + (["+ digits + search"] if any(len(s) == 3 for s in specs) else [])
    table = {c: [] for c in columns}
    print(f"{'run':<32}{'fold':>5}{'photos':>8}" + "".join(f"{c:>19}" for c in columns))
    for run, fold, *digit_run in specs:
        digits = digit_run[0] if digit_run else None
        _, val, _ = split_photos(photos, ReaderTrainConfig(fold=int(fold)))
        settings = [(False, False), (False, True)] + ([(digits, True)] if digits else [])
        row = [score(NumberReader(run, backend="torch", digits=d, search=search), val).summary()["accuracy"]
               for d, search in settings]
        for c, v in zip(columns, row):
            table[c].append(v)
        print(f"{run:<32}{fold:>5}{len(val):>8}" + "".join(f"{v:>19.4f}" for v in row))
    if len(runs) > 1:
        print(f"{'mean ± sd (runs that have it)':<45}" + "".join(
            f"{statistics.mean(v):>12.4f} ± {statistics.stdev(v) if len(v) > 1 else float('nan'):.3f}"
            for v in table.values()))


if __name__ == "__main__":
    main()
