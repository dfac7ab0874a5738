"""Bounded load test of `housenum serve` on loopback: throughput, latency percentiles, errors, memory.

Starts its own server on a free 127.0.0.1 port (never anything else), warms it up, then runs
`--clients` concurrent clients for `--seconds`, each posting real SVHN images one after another.
It also times the digit model alone at batch sizes 1, 8 and 32, which is what decides whether
batching concurrent requests would pay.

    python benchmarks/serve_load.py --endpoint digits --seconds 30 --clients 16
    python benchmarks/serve_load.py --endpoint numbers --seconds 30 --clients 16   # needs housenum.read

The load generator runs on the same cores as the server, so figures are a floor, not a ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np

SVHN = Path(__file__).resolve().parents[2] / "shared" / "data" / "svhn"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", choices=["digits", "numbers"], default="digits")
    p.add_argument("--images", choices=["crops", "photos"], default=None,
                   help="32x32 digit crops or whole photos (default: crops for digits, photos for numbers).")
    p.add_argument("--seconds", type=float, default=30.0, help="Length of the measured run.")
    p.add_argument("--clients", type=int, default=16, help="Concurrent clients (8-32 is sensible here).")
    p.add_argument("--warmup", type=float, default=3.0, help="Seconds of load before measuring.")
    p.add_argument("--digit-model", default=None, help="Run folder or .pt; default: the shipped model.")
    p.add_argument("--number-model", default=None, help="Reader run folder or .pt; default: the shipped reader.")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="Inference threads per server worker.")
    p.add_argument("--max-merge", type=int, default=32, help="Server's request batching (1: off).")
    p.add_argument("--svhn", type=Path, default=SVHN, help="The shared SVHN folder (crops.npz, numbers/).")
    p.add_argument("--json", action="store_true", help="Print one JSON line instead of the table.")
    return p.parse_args()


def load_payloads(svhn: Path, kind: str, n: int = 256) -> list[bytes]:
    """PNG bytes of real images: digit crops from crops.npz or whole photos from numbers/images."""
    import io

    from PIL import Image

    if kind == "photos":
        paths = sorted((svhn / "numbers" / "images").glob("test_*.png"))[:n]
        return [p.read_bytes() for p in paths]
    with np.load(svhn / "crops.npz") as f:
        crops = f["X"][:n]
    payloads = []
    for crop in crops:
        buf = io.BytesIO()
        Image.fromarray(crop).save(buf, "PNG")
        payloads.append(buf.getvalue())
    return payloads


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def server_rss_mb(pid: int) -> float:
    """RSS of the server and its worker processes (uvicorn forks workers when --workers > 1)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(c) for c in children.read_text().split()] if children.exists() else []
    return rss_mb(pid) + sum(rss_mb(k) for k in kids)


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "housenum.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(args.workers), "--threads", str(args.threads), "--max-merge", str(args.max_merge)]
    if args.digit_model:
        cmd += ["--digit-model", args.digit_model]
    if args.number_model:
        cmd += ["--number-model", args.number_model]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start (try: housenum serve, to see why)")


BOUNDARY = "housenumloadtest"


def multipart_request(host: str, path: str, payload: bytes) -> bytes:
    """A complete HTTP/1.1 keep-alive request posting `payload` as the form field `file`."""
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"image.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + payload + f"\r\n--{BOUNDARY}--\r\n".encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def run_load(url: str, path: str, payloads: list[bytes], clients: int, seconds: float,
                   pid: int | None = None) -> dict:
    """`clients` keep-alive connections, each posting one image after another until `seconds` pass;
    samples the server's RSS every 5 s when `pid` is given (steady growth would be a leak).

    The requests are prebuilt bytes on raw asyncio streams: a general HTTP client costs more CPU
    per request than the server does here, and it shares the server's two cores."""
    latencies: list[float] = []
    rss: list[float] = []
    server_ms: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + seconds
    host, port = urlparse(url).hostname, urlparse(url).port
    requests = [multipart_request(f"{host}:{port}", path, p) for p in payloads]

    async def client(i: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        k = i
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                writer.write(requests[k % len(requests)])
                await writer.drain()
                status, body = await read_response(reader)
                key = str(status)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
                status, key = 0, type(e).__name__
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
            k += clients
            latencies.append(time.perf_counter() - t0)
            if status == 200:
                server_ms.append(json.loads(body)["ms"])
            else:
                errors[key] = errors.get(key, 0) + 1
        writer.close()

    async def sample_rss() -> None:
        while pid is not None and time.perf_counter() < deadline:
            rss.append(round(server_rss_mb(pid), 1))
            await asyncio.sleep(5)

    # the measured time is the clients' alone: the sampler may be asleep past the deadline (--seconds
    # not a multiple of 5), so it is stopped once they finish rather than waited for
    start = time.perf_counter()
    sampler = asyncio.create_task(sample_rss())
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - start
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    ms = np.array(latencies) * 1000
    return {"requests": len(latencies), "seconds": round(elapsed, 2), "rps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2),
            "server_p50_ms": round(float(np.median(server_ms)), 2) if server_ms else None,
            "errors": sum(errors.values()), "errors_by_kind": errors, "rss_samples_mb": rss}


def model_batch_times(digit_model: str | None, threads: int, repeats: int = 200) -> dict:
    """Model time per image at batch 1, 8 and 32, as the server runs it (ONNX when exported)."""
    import torch

    from housenum.export import load_digit_recognizer, runtime_of

    torch.set_num_threads(threads)
    recognizer = load_digit_recognizer(digit_model, threads)
    with np.load(SVHN / "crops.npz") as f:
        crops = np.stack([recognizer.prepare(x) for x in f["X"][:32]])
    out = {"runtime": runtime_of(recognizer)}
    for n in (1, 8, 32):
        recognizer.predict_arrays(crops[:n])
        t0 = time.perf_counter()
        for _ in range(repeats // n + 5):
            recognizer.predict_arrays(crops[:n])
        out[f"ms_per_image_batch{n}"] = round((time.perf_counter() - t0) * 1000 / ((repeats // n + 5) * n), 3)
    return out


def main() -> None:
    args = parse_args()
    kind = args.images or ("crops" if args.endpoint == "digits" else "photos")
    payloads = load_payloads(args.svhn, kind)
    proc, url = start_server(args)
    try:
        if args.endpoint == "numbers" and httpx.get(f"{url}/healthz").json()["numbers"] is None:
            raise SystemExit("the house-number reader is unavailable (see /v1/models); use --endpoint digits")
        path = f"/v1/{args.endpoint}"
        asyncio.run(run_load(url, path, payloads, args.clients, args.warmup))
        rss_before = server_rss_mb(proc.pid)
        result = asyncio.run(run_load(url, path, payloads, args.clients, args.seconds, proc.pid))
        rss_after = server_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    result.update(endpoint=path, images=kind, clients=args.clients, workers=args.workers, threads=args.threads,
                  max_merge=args.max_merge,
                  rss_before_mb=round(rss_before, 1), rss_after_mb=round(rss_after, 1),
                  cpus=os.cpu_count(), load_average=os.getloadavg()[0])
    if args.endpoint == "digits":
        result["model_alone"] = model_batch_times(args.digit_model, args.threads)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{path} with {kind}, {args.clients} clients, {args.workers} worker(s), {args.threads} thread(s), "
          f"max merge {args.max_merge}, "
          f"{result['seconds']} s on {result['cpus']} CPUs (load average {result['load_average']:.1f})")
    print(f"  requests {result['requests']}  {result['rps']} req/s  "
          f"errors {result['errors']} {result['errors_by_kind']}")
    print(f"  latency p50 {result['p50_ms']} ms  p95 {result['p95_ms']} ms  p99 {result['p99_ms']} ms  "
          f"max {result['max_ms']} ms  (server-side p50 {result['server_p50_ms']} ms)")
    print(f"  server RSS {result['rss_before_mb']} MB before, {result['rss_after_mb']} MB after "
          f"({result['rss_after_mb'] - result['rss_before_mb']:+.1f} MB); every 5 s: {result['rss_samples_mb']}")
    if "model_alone" in result:
        m = result["model_alone"]
        print(f"  model alone ({m['runtime']}): ms per image at batch 1 / 8 / 32: "
              f"{m['ms_per_image_batch1']} / {m['ms_per_image_batch8']} / {m['ms_per_image_batch32']}")


if __name__ == "__main__":
    main()
