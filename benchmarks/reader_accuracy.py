"""Held-out whole-number accuracy of a reader on real photos it never saw, and shipping it.

Scores the reader on the held-out photos (`test_*` of ../shared/data/svhn/numbers: 500 photos,
never used for training or model selection) with a 95% interval, per-digit accuracy, accuracy by
length and coverage at 95%/98% precision, and how often it invents a number: on 200 synthetic walls
and on the parts of the held-out photos away from their number (real clutter). With --ship RUN_DIR
it first writes that run's best.pt as the shipped reader (src/housenum/weights/reader.pt + ONNX),
with these figures in its card.

    python benchmarks/reader_accuracy.py                          # the shipped reader
    python benchmarks/reader_accuracy.py --model runs/reader      # a run folder
    python benchmarks/reader_accuracy.py --ship runs/reader       # measure, then ship it

The reader takes a second opinion on each digit from a digit model (`--digit-model`; default the
shipped one, which saw digits of most of these photos in training, so its figures flatter the
reader). The honest figures use a digit model that never saw them:

    python benchmarks/reader_digit_model.py                        # writes runs/digits_noreader
    python benchmarks/reader_accuracy.py --digit-model runs/digits_noreader
    python benchmarks/reader_accuracy.py --reader-only             # no second opinion
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "svhn" / "numbers"
TARGET = 0.93


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of an accuracy p measured on n photos."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def confident_numbers(reader, images) -> int:
    """How many of `images` (all without the number sought) are read as a number with confidence >= 0.5."""
    return sum(r.number is not None and r.confidence >= 0.5 for r in reader.read_many(images))


def number_free_parts(data: str, files: str) -> list:
    """The parts of the held-out photos away from their labelled number: real clutter, though some
    hold real digits the label leaves out (a neighbour's number), which count as false here too."""
    from housenum.data.numbers import load_numbers
    from housenum.train_reader import number_free_regions

    return number_free_regions(load_numbers(data).matching(files))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--files", default="test_*", help="held-out photos (glob on the file name)")
    parser.add_argument("--model", default=None, help="run folder or .pt (default: the shipped reader)")
    parser.add_argument("--ship", default=None, help="run folder to measure and ship as the default reader")
    parser.add_argument("--update-card", action="store_true",
                        help="write these figures into the shipped reader's card (weights untouched)")
    parser.add_argument("--digit-model", default=None, help="run folder or .pt (default: the shipped one)")
    parser.add_argument("--reader-only", action="store_true", help="no second opinion from a digit model")
    parser.add_argument("--no-search", action="store_true", help="no window search for unsure photos")
    parser.add_argument("--int8", action="store_true",
                        help="the digit model's 8-bit export (`housenum export DIGIT_MODEL --int8`), as "
                             "`housenum serve --int8` runs it")
    parser.add_argument("--out", default=str(ROOT / "runs" / "reader_accuracy"),
                        help="the failures gallery (failures.png, failures-2.png, ...) here; the committed one "
                             "is docs/results/reader")
    parser.add_argument("--walls", type=int, default=200, help="synthetic photos without a number to read")
    parser.add_argument("--no-clutter", dest="clutter", action="store_false",
                        help="skip reading the held-out photos' number-free parts")
    args = parser.parse_args()

    from housenum.evaluate_numbers import evaluate_numbers

    if args.update_card and (args.ship or args.model):
        parser.error("--update-card is for the shipped reader: give neither --ship nor --model")
    model = args.ship or args.model
    digits = False if args.reader_only else (args.digit_model or True)
    if args.int8 and digits:
        from housenum.export import load_digit_recognizer

        digits = load_digit_recognizer(args.digit_model, threads=1, spin=False, int8=True)
    result = evaluate_numbers(args.data, model, Path(args.out), args.files, backend="torch", digits=digits,
                              search=not args.no_search)
    low, high = wilson(result.accuracy, result.n)
    print(result.report())
    print(f"95% interval of whole-number accuracy: {low:.4f}..{high:.4f}; target {TARGET} "
          f"{'met' if result.accuracy >= TARGET else 'not met'}")
    if digits and not args.digit_model:
        print("note: the shipped digit model trained on digits of most of these photos, so this figure flatters "
              "the reader; for the held-out one, `python benchmarks/reader_digit_model.py` then --digit-model "
              "runs/digits_noreader")
    figures = {"heldout_photos": result.n, "whole_number_accuracy": round(result.accuracy, 4),
               "accuracy_95ci": [round(low, 4), round(high, 4)], "digit_accuracy": round(result.digit_accuracy, 4),
               "coverage_at_precision": result.coverage, "mean_localisation_iou": round(result.mean_iou, 3),
               "by_length": result.by_length, "data": f"{Path(args.data).name}/{args.files}",
               "digit_model": "none" if args.reader_only else (args.digit_model or "shipped"),
               "digit_runtime": "int8" if args.int8 and not args.reader_only else "float32",
               "window_search": not args.no_search}
    if args.walls or args.clutter:
        from housenum.data.synthetic import synthetic_empty
        from housenum.read import NumberReader

        reader = NumberReader(model, backend="torch", digits=digits, search=not args.no_search)
    if args.walls:
        figures["false_numbers_on_walls"] = confident_numbers(reader, synthetic_empty(args.walls, seed=777))
        print(f"confident (>= 0.5) readings of {args.walls} synthetic walls without a number: "
              f"{figures['false_numbers_on_walls']}")
    if args.clutter:
        parts = number_free_parts(args.data, args.files)
        figures["false_numbers_on_heldout_clutter"] = [confident_numbers(reader, parts), len(parts)]
        print(f"confident (>= 0.5) readings of {len(parts)} number-free parts of the held-out photos: "
              f"{figures['false_numbers_on_heldout_clutter'][0]}")
    print(json.dumps(figures))
    if args.update_card:
        from housenum.checkpoint import save_checkpoint
        from housenum.read import DEFAULT_READER, read_reader_checkpoint

        state = read_reader_checkpoint(DEFAULT_READER)
        state["card"]["figures"] = {**state["card"].get("figures", {}), **figures}
        save_checkpoint(DEFAULT_READER, {k: v for k, v in state.items() if k != "format"})
        DEFAULT_READER.chmod(0o644)
        print(f"updated the card of {DEFAULT_READER}")
    if args.ship:
        from housenum.read import DEFAULT_READER, reader_checkpoint_path, read_reader_checkpoint
        from housenum.train_reader import ship_reader

        state = read_reader_checkpoint(reader_checkpoint_path(args.ship))
        val = max((r["val_acc"] for r in state["history"] if r["val_acc"] == r["val_acc"]), default=None)
        name = "reader-ctc" if state["arch"].get("head") == "ctc" else "reader-multihead"
        card = {"name": name + ("-heatmap" if state["arch"].get("loc_head") == "heatmap" else ""),
                "summary": "Localiser + reader CNNs trained on 1,823 real SVHN photos and synthetic photos; "
                           "reads 1-5 digit house numbers, None when it sees no number. See READER_CARD.md.",
                "figures": {**figures, "validation_accuracy": val, "epochs": state.get("epoch")}}
        for path in ship_reader(reader_checkpoint_path(args.ship), DEFAULT_READER, card):
            print(f"shipped {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
