"""Whole-number reading speed on this CPU: latency per photo and photos per second, per backend.

Latency: one photo at a time (already decoded, as a server holds it), median, mean and p90 of
many reads, with 1 and 2 threads. Throughput: read_many in batches of 64. Real held-out photos.
Unsure photos are read again in windows (`read.search_windows`), so the mean and p90 are above
the median; --no-search times the reader without it.

    python benchmarks/reader_speed.py
    python benchmarks/reader_speed.py --model runs/reader --photos 200
    python benchmarks/reader_speed.py --digit-model fast     # the small digit model's second opinion
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "svhn" / "numbers" / "images"
TARGET_MS = 20.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--images", default=str(DEFAULT_IMAGES))
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--no-search", action="store_true", help="no window search for unsure photos")
    parser.add_argument("--digit-model", default=None,
                        help="the digit model giving the second opinion: a run folder, .pt or 'fast' "
                             "(default: the shipped one)")
    args = parser.parse_args()

    import torch

    from housenum.preprocess import open_image
    from housenum.read import SEARCH_BELOW, NumberReader

    digits = args.digit_model or True
    paths = sorted(Path(args.images).glob("test_*.png"))[: args.photos]
    photos = [open_image(p) for p in paths]
    print(f"{len(photos)} photos, median size {statistics.median(p.size[0] for p in photos)}x"
          f"{statistics.median(p.size[1] for p in photos)}; torch {torch.__version__}")
    if not args.no_search:
        first = NumberReader(args.model, search=False, digits=digits).read_many(photos)
        unsure = sum(r.number is None or r.confidence < SEARCH_BELOW for r in first)
        print(f"window search: {unsure} of {len(photos)} photos are unsure at the first try and searched")
    print(f"{'backend':<12}{'threads':>8}{'median ms/photo':>17}{'mean ms':>9}{'p90 ms':>9}"
          f"{'photos/s (batch 64)':>22}")
    for backend in ("onnx", "torch"):
        for threads in (1, 2):
            try:
                reader = NumberReader(args.model, backend=backend, threads=threads, search=not args.no_search,
                                      digits=digits)
            except Exception as e:  # no ONNX export beside the model
                print(f"{backend:<12}{threads:>8}  unavailable: {e}")
                break
            for p in photos[:10]:
                reader.read(p)
            times = []
            for p in photos:
                t0 = time.perf_counter()
                reader.read(p)
                times.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            reader.read_many(photos)
            rate = len(photos) / (time.perf_counter() - t0)
            times.sort()
            print(f"{reader.backend:<12}{threads:>8}{statistics.median(times):>17.2f}{statistics.mean(times):>9.2f}"
                  f"{times[int(0.9 * len(times))]:>9.2f}{rate:>22.0f}")
    print(f"target: under {TARGET_MS:.0f} ms per photo")


if __name__ == "__main__":
    main()
