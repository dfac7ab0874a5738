"""Train several reader runs side by side on one GPU, sharing one set of synthetic photos.

The reader's networks are small, so one run leaves a GPU mostly idle; this draws the synthetic
photos once (with many processes, into the cache every run reads), then starts each run as its
own `housenum train-reader` process on the same wall-clock budget, and prints each run's log and
its best validation accuracy. A run is NAME:ARCH[:FOLD]: no fold means the held-out split
(`test_*` never used, 10% validation); a fold K means photo fold K of 5 is the validation.

    python benchmarks/reader_gpu.py --data ../shared/data/svhn/numbers --minutes 6.5 \\
        --runs main-wide:wide cv0-wide:wide:0 cv1-wide:wide:1 --out runs/reader_gpu

Then, on the CPU, score a run on the held-out photos with the second look and the digit model:

    python benchmarks/reader_accuracy.py --model runs/reader_gpu/main-wide --digit-model runs/digits_noreader
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "svhn" / "numbers"

# the recipe every run shares (the GPU recipe of READER_CARD.md)
RECIPE = ["--batch-size", "128", "--lr", "2e-3",
          "--loc-zoom", "0.5", "1.25", "--loc-shift", "0.15", "--epochs", "100000", "--eval-every", "40"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--runs", nargs="+", default=["main-wide:wide"], help="'NAME:ARCH[:FOLD] [OPTIONS]' ...")
    parser.add_argument("--minutes", type=float, default=6.5, help="wall-clock budget of each run")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--synthetic", type=int, default=40000, help="synthetic number photos")
    parser.add_argument("--synthetic-empty", type=int, default=8000, help="synthetic photos without a number")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes drawing photos")
    parser.add_argument("--out", default=str(ROOT / "runs" / "reader_gpu"))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)  # this process only draws photos; the runs are their own processes
    from housenum.data.download import cache_dir
    from housenum.train_reader import synthetic_tensors

    n, n_empty = args.synthetic, args.synthetic_empty
    started = time.perf_counter()
    synthetic_tensors(n, n_empty, seed=1, cache=cache_dir() / "reader", workers=args.workers)
    print(f"synthetic photos ready ({n} + {n_empty} empty) in {time.perf_counter() - started:.0f} s", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    procs = {}
    for run in args.runs:
        spec, *more = shlex.split(run)
        name, arch, *fold = spec.split(":")
        cmd = [sys.executable, "-m", "housenum.cli", "train-reader", "--data", args.data, "--arch", arch,
               "--minutes", str(args.minutes), "--device", args.device, "--out", str(out / name),
               "--synthetic", str(n), "--synthetic-empty", str(n_empty), *RECIPE]
        if fold:
            cmd += ["--fold", fold[0]]
        cmd += more   # later options win
        log = open(out / f"{name}.log", "w")  # noqa: SIM115 (closed below, after the run ends)
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log, " ".join(cmd[2:]))
    deadline = time.monotonic() + 60 * args.minutes + 120
    for name, (proc, log, cmd) in procs.items():
        try:
            proc.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        print(f"\n=== {name}: exit {proc.returncode}: python -m {cmd}")
        print((out / f"{name}.log").read_text())

    import math

    from housenum.read import read_reader_checkpoint

    print(f"\n{'run':<14} {'best val acc':>12} {'epoch':>6} {'steps':>7} {'train s':>8}")
    for name in procs:
        path = out / name / "best.pt"
        if not path.is_file():
            print(f"{name:<14} {'(no checkpoint)':>12}")
            continue
        state = read_reader_checkpoint(path)
        rows = state.get("history", [])
        step = rows[-1].get("step", math.nan) if rows else math.nan
        print(f"{name:<14} {state.get('best_val_acc', math.nan):>12.4f} {state.get('epoch', 0):>6} {step:>7} "
              f"{state.get('train_seconds', math.nan):>8.0f}")


if __name__ == "__main__":
    main()
