"""Does the 8-bit export (`housenum export --int8`) read digits as well as the float one?

Float32 and int8 exports of the same checkpoint, on the same digits, paired. Which digits:

- `--split val` (the default without --model): the digits the model held out for validation, by its
  own recorded split (`val_fraction`, `fold`, `all_data`). The shipped model (the default,
  src/housenum/weights/digits.pt) saw every other shared digit, so its 731 validation digits are
  the only ones it never saw; this runs from a clean checkout.
- `--split reader` (the default with --model): the digits of the reader's validation and held-out
  photos. Meant for a stand-in trained by the same recipe without those photos
  (benchmarks/reader_digit_model.py makes one, e.g. `--model resnet_fast --all-data --epochs 40
  --mixup 0.2 --out runs/digits_noreader_all_bf16`); the shipped model trained on them.
- `--split test`: the test split of --data, for a run of benchmarks/digits_accuracy.py (the shipped
  model trained on it too).

    python benchmarks/int8_accuracy.py
    python benchmarks/int8_accuracy.py --model runs/digits_noreader_all_bf16/last.pt
    python benchmarks/int8_accuracy.py --model runs/tradeoff/tiny_mixup_seed0 --split test
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
SHARED = ROOT.parent / "shared" / "data" / "svhn"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help="run folder or checkpoint (default: the shipped model, src/housenum/weights/digits.pt); "
                             "with --split reader, one that never saw the reader's validation and held-out photos")
    parser.add_argument("--data", default=str(SHARED / "crops.npz"))
    parser.add_argument("--numbers", default=str(SHARED / "numbers"))
    parser.add_argument("--split", choices=("val", "reader", "test"), default=None,
                        help="val: the model's own validation digits (default without --model); "
                             "reader: the digits of the reader's validation and held-out photos "
                             "(default with --model); "
                             "test: the test split of --data")
    args = parser.parse_args()
    if args.split is None:
        args.split = "val" if args.model is None else "reader"

    import numpy as np

    from housenum.checkpoint import SHIPPED_DIGIT_MODELS, checkpoint_path, load_model
    from housenum.data import load_digits
    from housenum.export import OnnxModel, export_onnx
    from housenum.preprocess import pixels_to_tensor
    from housenum.train import TrainConfig, split_for_training
    from reader_digit_model import reader_eval_sources

    model_path = checkpoint_path(args.model)
    loaded = load_model(model_path)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in loaded.config.items() if k in known})
    # the shipped models trained on every shared digit but their validation ones; an --all-data run on the test split
    seen = (args.model is None or model_path in SHIPPED_DIGIT_MODELS.values()) and args.split != "val" \
        or cfg.all_data and args.split == "test"
    if args.split == "val":
        val = split_for_training(load_digits(args.data).with_channels(loaded.channels), cfg)[1]
        unseen, images, y = set(val.sources if val.sources is not None else ()), val.images, val.labels
    elif args.split == "test":
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
            export_onnx(model_path, out=out, parity_data=args.data, n_parity=16, int8=precision == "int8")
            model = OnnxModel(out)
            predicted[precision] = np.concatenate([model.run(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)])
    right = {k: v == y for k, v in predicted.items()}
    if seen:
        print(f"note: {model_path} trained on these digits: not a held-out figure")
        print(f"{model_path}: {len(y)} digits of {len(unseen)} photos ({args.split} split)")
    else:
        print(f"{model_path}: {len(y)} digits of {len(unseen)} photos it never saw ({args.split} split)")
    for precision, ok in right.items():
        print(f"  {precision:<8} accuracy {ok.mean():.4f}")
    print(f"  same top digit {np.mean(predicted['float32'] == predicted['int8']):.4f}; "
          f"right only with float32 {int(np.sum(right['float32'] & ~right['int8']))}, "
          f"only with int8 {int(np.sum(right['int8'] & ~right['float32']))}")


if __name__ == "__main__":
    main()
