"""Inference speed of the shipped digit model on this CPU: ONNX Runtime (float32 and the 8-bit
export, `housenum export --int8`) and PyTorch eager.

Throughput at batch 256 (digits/s) and latency at batch 1 (ms per digit, median of many calls),
on real digits from crops.npz, preprocessed as in serving. Targets: >= 10,000 digits/s at batch 256
and < 1 ms per digit at batch 1.

    python benchmarks/infer_speed.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "svhn" / "crops.npz"


def measure(run, x, batch: int, seconds: float = 3.0) -> tuple[float, float]:
    """(digits per second, median ms per call) over repeated calls for about `seconds`."""
    for _ in range(3):
        run(x[:batch])
    times, done, t_end = [], 0, time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < t_end:
        chunk = x[(i * batch) % (len(x) - batch):][:batch]
        t0 = time.perf_counter()
        run(chunk)
        times.append(time.perf_counter() - t0)
        done += batch
        i += 1
    return done / sum(times), 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--model", default=None, help="run folder or checkpoint; default: the shipped model")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import torch

    from housenum.checkpoint import load_model
    from housenum.export import OnnxModel, onnx_path_for
    from housenum.preprocess import pixels_to_tensor

    torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    with np.load(args.data) as f:
        images = f["X"][:4096]
    x = pixels_to_tensor(images).numpy()
    runners = {}
    for name, int8 in (("onnxruntime", False), ("onnxruntime int8", True)):
        onnx_file = onnx_path_for(loaded.path, int8)
        if onnx_file.exists():
            runners[name] = OnnxModel(onnx_file, threads=args.threads).run
    model = loaded.model.eval()

    def torch_run(batch):
        with torch.inference_mode():
            return model(torch.from_numpy(batch).contiguous(memory_format=torch.channels_last))

    runners["pytorch eager"] = torch_run
    print(f"model {loaded.name} ({loaded.path}), {args.threads} threads")
    print(f"{'runtime':<18}{'batch 256 digits/s':>20}{'batch 1 ms/digit':>18}")
    for name, run in runners.items():
        rate, _ = measure(run, x, 256)
        _, latency = measure(run, x, 1)
        print(f"{name:<18}{rate:>20.0f}{latency:>18.3f}", flush=True)


if __name__ == "__main__":
    main()
