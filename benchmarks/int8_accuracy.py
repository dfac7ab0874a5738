"""Does the 8-bit export (`housenum export --int8`) read digits as well as the float one?

The shipped model saw every shared digit, so this scores a stand-in trained by the same recipe
without the digits of the reader's validation and held-out photos (benchmarks/reader_digit_model.py
makes it: `--model resnet_fast --all-data --epochs 40 --mixup 0.2 --out runs/digits_noreader_all_bf16`)
on exactly those digits: float32 and int8 exports of the same checkpoint, the same digits, paired.
`--split test` scores a run of benchmarks/digits_accuracy.py on crops.npz's test split instead.

    python benchmarks/int8_accuracy.py --model runs/digits_noreader_all_bf16/last.pt
    python benchmarks/int8_accuracy.py --model runs/tradeoff/tiny_mixup_seed0 --split test
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
SHARED = ROOT.parent / "shared" / "data" / "svhn"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "runs" / "digits_noreader_all_bf16" / "last.pt"),
                        help="a checkpoint that never saw the reader's validation and held-out photos")
    parser.add_argument("--data", default=str(SHARED / "crops.npz"))
    parser.add_argument("--numbers", default=str(SHARED / "numbers"))
    parser.add_argument("--split", choices=("reader", "test"), default="reader",
                        help="reader: the digits of the reader's validation and held-out photos; "
                             "test: the test split of --data")
    args = parser.parse_args()

    import numpy as np

    from housenum.data import load_digits
    from housenum.export import OnnxModel, export_onnx
    from housenum.preprocess import pixels_to_tensor
    from reader_digit_model import reader_eval_sources

    if args.split == "test":
        test = load_digits(args.data).test
        unseen, images, y = set(test.sources), test.images, test.labels
    else:
        unseen = reader_eval_sources(Path(args.numbers))
        with np.load(args.data) as f:
            held = np.array([str(s) in unseen for s in f["source_image"]])
            images, y = f["X"][held], f["y"][held]
    x = pixels_to_tensor(images).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        predicted = {}
        for precision in ("float32", "int8"):
            out = Path(tmp) / f"{precision}.onnx"
            export_onnx(args.model, out=out, parity_data=args.data, n_parity=16, int8=precision == "int8")
            model = OnnxModel(out)
            predicted[precision] = np.concatenate([model.run(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)])
    right = {k: v == y for k, v in predicted.items()}
    print(f"{args.model}: {len(y)} digits of {len(unseen)} photos it never saw")
    for precision, ok in right.items():
        print(f"  {precision:<8} accuracy {ok.mean():.4f}")
    print(f"  same top digit {np.mean(predicted['float32'] == predicted['int8']):.4f}; "
          f"right only with float32 {int(np.sum(right['float32'] & ~right['int8']))}, "
          f"only with int8 {int(np.sum(right['int8'] & ~right['float32']))}")


if __name__ == "__main__":
    main()
