"""Cross-validated whole-number accuracy: each fold's run scored on its own validation photos.

A fold run (`housenum train-reader --fold K`, or `reader_gpu.py --runs NAME:ARCH:K`) never trained
on photo fold K of 5 (by a hash of the name; the `test_*` photos are in no fold). Its best.pt was
chosen on that fold, so these figures lean optimistic (compare the last epoch's in the run's
history.csv). No digit model here: the one that never saw the held-out photos did see these
folds' digits.

    python benchmarks/reader_cv.py runs/reader_gpu/cv0-wide:0 runs/reader_gpu/cv1-wide:1
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
    parser.add_argument("runs", nargs="+", help="RUN_DIR:FOLD ...")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    args = parser.parse_args()

    from housenum.data.numbers import load_numbers
    from housenum.evaluate_numbers import score
    from housenum.read import NumberReader
    from housenum.train_reader import ReaderTrainConfig, split_photos

    photos = load_numbers(args.data)
    columns = ("networks", "+ window search")
    table = {c: [] for c in columns}
    print(f"{'run':<32}{'fold':>5}{'photos':>8}" + "".join(f"{c:>18}" for c in columns))
    for spec in args.runs:
        run, fold = spec.rsplit(":", 1)
        _, val, _ = split_photos(photos, ReaderTrainConfig(fold=int(fold)))
        row = [score(NumberReader(run, backend="torch", digits=False, search=search), val).summary()["accuracy"]
               for search in (False, True)]
        for c, v in zip(columns, row):
            table[c].append(v)
        print(f"{run:<32}{fold:>5}{len(val):>8}" + "".join(f"{v:>18.4f}" for v in row))
    if len(args.runs) > 1:
        print(f"{'mean ± sd':<45}" + "".join(f"{statistics.mean(v):>11.4f} ± {statistics.stdev(v):.3f}"
                                            for v in table.values()))


if __name__ == "__main__":
    main()
