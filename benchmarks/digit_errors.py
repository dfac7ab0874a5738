"""What the digit model gets wrong on the held-out test split: how many of its errors name another
digit of the same house number (a neighbour at the crop's side), against what chance gives.

An SVHN crop is a square around one digit, so its sides show parts of the neighbours. Where the
crop's source photo is one of `numbers/` its whole number is known; an error "names a neighbour"
when the predicted digit is another digit of that number. Chance: the share of the 9 wrong digits
that are other digits of the number, summed over the errors. Several runs are averaged (their mean
probabilities), as an ensemble.

    python benchmarks/digit_errors.py runs/levers/fast_seed0 runs/levers/fast_seed1 runs/levers/fast_seed2
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SHARED = ROOT.parent / "shared" / "data" / "svhn"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders trained without the test split")
    parser.add_argument("--data", default=str(SHARED / "crops.npz"))
    parser.add_argument("--numbers", default=str(SHARED / "numbers" / "labels.json"))
    args = parser.parse_args()

    import numpy as np

    from housenum.checkpoint import load_model
    from housenum.data import load_digits
    from housenum.evaluate import predict_probs

    test = load_digits(args.data).test
    probs = np.mean([predict_probs(load_model(run), test) for run in args.runs], axis=0)
    pred = probs.argmax(1)
    wrong = np.nonzero(pred != test.labels)[0]
    number_of = {v["official_name"]: v["label"] for v in json.loads(Path(args.numbers).read_text()).values()}

    def neighbours(i: int) -> set[int]:
        digits = list(number_of[test.sources[i]])
        if str(test.labels[i]) in digits:
            digits.remove(str(test.labels[i]))
        return {int(d) for d in digits} - {int(test.labels[i])}

    known = [i for i in wrong if test.sources[i] in number_of]
    named = sum(int(pred[i]) in neighbours(i) for i in known)
    chance = sum(len(neighbours(i)) / 9 for i in known)
    print(f"{len(args.runs)} run(s); test digits {len(test.labels)}, accuracy {1 - len(wrong) / len(test.labels):.4f}, "
          f"errors {len(wrong)}")
    print(f"errors whose photo's number is known: {len(known)}; they name another digit of the number: {named} "
          f"(chance {chance:.1f})")
    print(f"confidence of the errors: median {np.median(probs.max(1)[wrong]):.2f}, "
          f"share above 0.9 {np.mean(probs.max(1)[wrong] > 0.9):.2f}")
    pairs = Counter((int(test.labels[i]), int(pred[i])) for i in wrong).most_common(8)
    print("most common (true -> read):", ", ".join(f"{t}->{p} x{n}" for (t, p), n in pairs))


if __name__ == "__main__":
    main()
