"""Train the digit model that scores the reader honestly: one that never saw the evaluation photos.

The reader asks the digit model for a second opinion on every digit. The shipped digit model was
trained on crops cut from most of ../shared/data/svhn/numbers' photos (crops.npz holds digits of
2,500 of them), so scoring the reader with it on those photos would flatter it. This trains a
digit model on crops.npz without the digits of the reader's validation and held-out photos
(`test_*`).

The stand-in of the shipped digit model (`resnet_mid`, mixup 0.2, 90 epochs, all data but 5% of the
photos, last epoch), behind the README's and READER_CARD.md's 0.884 whole-number figure
(docs/results/reader_mid90_standin.txt):

    python benchmarks/reader_digit_model.py --model resnet_mid --all-data --epochs 90 --mixup 0.2 \\
        --out runs/digits_noreader_mid90
    python benchmarks/reader_accuracy.py --digit-model runs/digits_noreader_mid90

(training in bf16 where the CPU has bf16 units, as `housenum train` does by default.) The options'
defaults are not that recipe: they reproduce the older stand-in, `resnet` without mixup, its best
epoch on a 20% validation split, into runs/digits_noreader, behind the first table of READER_CARD.md
and the `--digit-model runs/digits_noreader` figures of docs/reader.md:

    python benchmarks/reader_digit_model.py                   # ~20 min on the 2-core CPU
    python benchmarks/reader_accuracy.py --digit-model runs/digits_noreader

With --fold K it leaves out the digits of the reader's cross-validation fold K (and of `test_*`)
instead, for `benchmarks/reader_cv.py RUN:K:DIGIT_RUN`:

    python benchmarks/reader_digit_model.py --fold 0 --model resnet_fast --threads 1 --out runs/digits_nofold0

Stand-ins of the digit models shipped before: `--model resnet_mid --all-data --epochs 60 --mixup 0.2
--out runs/digits_noreader_mid` (60 epochs), `--model resnet_fast --all-data --epochs 40 --mixup 0.2
--out runs/digits_noreader_all_bf16` (`resnet_fast`; READER_CARD.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SHARED = ROOT.parent / "shared" / "data" / "svhn"


def reader_eval_sources(numbers: Path, fold: int | None = None) -> set[str]:
    """Official names (e.g. `test/12.png`) of the reader's validation (or fold) and held-out photos."""
    from housenum.data.numbers import load_numbers
    from housenum.train_reader import ReaderTrainConfig, split_photos

    _, val, test = split_photos(load_numbers(str(numbers)), ReaderTrainConfig(fold=fold))
    labels = json.loads((numbers / "labels.json").read_text())
    return {labels[name]["official_name"] for name in [*val.names, *test.names]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", default=str(SHARED / "crops.npz"))
    parser.add_argument("--numbers", default=str(SHARED / "numbers"))
    parser.add_argument("--model", default="resnet",
                        help="architecture (default resnet: the older stand-in; the shipped digit model's "
                             "stand-in: resnet_mid, with --all-data --epochs 90 --mixup 0.2)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "digits_noreader"))
    parser.add_argument("--fold", type=int, help="leave out this reader cross-validation fold (of 5) instead")
    parser.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    parser.add_argument("--all-data", action="store_true",
                        help="also train on crops.npz's test split; 5%% of the photos for validation; last epoch")
    parser.add_argument("--epochs", type=int, help="default: the model's")
    parser.add_argument("--mixup", type=float, default=0.0,
                        help="mixup's alpha (default 0: the older stand-in; the shipped digit model: 0.2)")
    args = parser.parse_args()

    import numpy as np

    from housenum.train import TrainConfig, train

    excluded = reader_eval_sources(Path(args.numbers), args.fold)
    with np.load(args.crops) as f:
        keep = ~np.isin(f["source_image"], list(excluded))
        arrays = {k: f[k][keep] for k in ("X", "y", "source_image")}
    print(f"{keep.sum()} of {len(keep)} digits kept ({len(excluded)} reader photos excluded)")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "crops_noreader.npz"
        np.savez(data, **arrays)
        cfg = TrainConfig(model=args.model, data=str(data), threads=args.threads, epochs=args.epochs,
                          all_data=args.all_data, val_fraction=0.05 if args.all_data else 0.2,
                          checkpoint="last" if args.all_data else "best", mixup=args.mixup)
        result = train(cfg, args.out)
    print(f"{args.out}: best validation accuracy {result.best_val_acc:.4f} in {result.train_seconds:.0f} s")


if __name__ == "__main__":
    main()
