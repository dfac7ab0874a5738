"""Training throughput (images/s) of housenum vs the same model in TensorFlow/Keras 2.15, side by side.

Same data (crops.npz's training split, validation by source photo), same batch size, same threads.
Per-epoch time includes the validation pass for both. Keras runs in the interpreter given by
--keras-python (TF 2.15 needs numpy<2, so it lives in its own venv beside the repository:
`python -m venv ../tfenv && ../tfenv/bin/pip install tensorflow-cpu==2.15.1`).

    python benchmarks/train_speed.py --keras-python ../tfenv/bin/python

The `strong` case is the shipped digit model's recipe as `housenum train --mixup 0.2` runs it (the
`strong` recipe's augmentation, label smoothing and EMA, plus mixup 0.2), housenum only. Before
mixup was added to it, the case measured the `strong` recipe without mixup: the figures recorded
then (docs/results/train_speed_bf16.txt) are that.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "svhn" / "crops.npz"

# (label, housenum model, channels, recipe, batch size, other TrainConfig settings)
CASES = [
    ("cnn2 (notebook)", "cnn2", 1, "notebook", 128, {}),
    ("resnet, same work as Keras", "resnet", 3, "notebook", 128, {}),
    ("resnet_fast, same work as Keras", "resnet_fast", 3, "notebook", 128, {}),
    ("resnet_mid (shipped), same work as Keras", "resnet_mid", 3, "notebook", 128, {}),
    # the shipped digit model's recipe: strong + mixup 0.2 (DIGITS_CARD.md), as `housenum train --mixup 0.2`
    ("resnet_mid, shipped recipe (mixup 0.2)", "resnet_mid", 3, "strong", 128, {"mixup": 0.2}),
]
KEYS = ("cnn2", "resnet", "fast", "mid", "strong")


def housenum_speed(model: str, channels: int, recipe: str, batch: int, epochs: int, threads: int,
                   data, precision: str = "auto", extra: dict | None = None) -> float:
    from housenum.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(model=model, channels=channels, recipe=recipe, batch_size=batch, epochs=epochs,
                          threads=threads, device="cpu", precision=precision, **(extra or {}))
        result = train(cfg, tmp, data=data, progress=False)
    times = sorted(h["seconds"] for h in result.history[1:]) or [result.history[0]["seconds"]]
    return _n_train(data, result.config) / times[len(times) // 2]


def _n_train(data, cfg) -> int:
    from housenum.train import split_for_training

    return len(split_for_training(data.with_channels(cfg.channels), cfg)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--epochs", type=int, default=3, help="the first epoch is warm-up; the median of the rest")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", default=",".join(KEYS), help=f"which of: {', '.join(KEYS)}")
    parser.add_argument("--precision", default="auto",
                        help="housenum's: auto (bf16 where the CPU has bf16 units), fp32 or bf16; Keras runs fp32")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate housenum and Keras this many times; print the medians (this machine's "
                             "speed drifts by a quarter within minutes)")
    parser.add_argument("--keras-python", default=None, help="interpreter with tensorflow 2.15 (omit: skip Keras)")
    args = parser.parse_args()

    import torch

    from housenum.data import load_digits
    from housenum.train import use_bf16

    data = load_digits(args.data)
    print(f"housenum precision: {'bf16' if use_bf16(torch.device('cpu'), args.precision) else 'fp32'}")
    print(f"{'case':<30}{'housenum img/s':>16}{'keras img/s':>14}{'ratio':>8}")
    wanted = set(args.cases.split(","))
    for key, (label, model, channels, recipe, batch, extra) in zip(KEYS, CASES):
        if key not in wanted:
            continue
        ours, theirs = [], []
        for _ in range(args.rounds):  # alternated, so a slow spell of the machine falls on both
            ours.append(housenum_speed(model, channels, recipe, batch, args.epochs, args.threads, data,
                                       args.precision, extra))
            if args.keras_python and recipe != "strong":
                theirs.append(keras_speed(args, data, model, channels, batch))
        us, them = statistics.median(ours), statistics.median(theirs) if theirs else None
        ratio = f"{us / them:.2f}x" if them else "-"
        print(f"{label:<30}{us:>16.0f}{(f'{them:.0f}' if them else '-'):>14}{ratio:>8}", flush=True)
        if args.rounds > 1:
            print(f"{'  rounds':<30}{' '.join(f'{v:.0f}' for v in ours):>16}  {' '.join(f'{v:.0f}' for v in theirs)}")


def keras_speed(args, data, model: str, channels: int, batch: int) -> float:
    """Keras 2.15's images/s for the same model on the same training and validation digits."""
    import numpy as np

    from housenum.train import TrainConfig, split_for_training

    cfg = TrainConfig(model=model, channels=channels).resolved()
    train_set, val_set = split_for_training(data.with_channels(channels), cfg)
    with tempfile.NamedTemporaryFile(suffix=".npz") as tmp:
        np.savez(tmp.name, x=train_set.images, y=train_set.labels, xv=val_set.images, yv=val_set.labels)
        proc = subprocess.run([args.keras_python, str(ROOT / "benchmarks" / "keras_reference.py"), tmp.name,
                               model, str(args.epochs), str(batch), str(args.threads)],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"keras run failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["images_per_second"]

if __name__ == "__main__":
    main()
