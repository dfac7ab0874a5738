"""Shared test fixtures."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from housenum.checkpoint import DEFAULT_DIGIT_MODEL

SHARED_SVHN = Path(__file__).resolve().parents[2] / "shared" / "data" / "svhn"


@pytest.fixture(scope="session")
def svhn_dir() -> Path:
    """The real SVHN samples in ../shared/data/svhn (present here and in CI; never copied in)."""
    assert SHARED_SVHN.is_dir(), f"missing shared SVHN data at {SHARED_SVHN}"
    return SHARED_SVHN


@pytest.fixture(scope="session")
def crops(svhn_dir: Path):
    """The real digit crops as arrays: X (N, 32, 32, 3) uint8, y (N,), source_image (N,)."""
    import numpy as np

    with np.load(svhn_dir / "crops.npz") as f:
        return {k: f[k] for k in f.files}


def subset_by_source(crops: dict, n_sources: int, skip: int = 0) -> dict:
    """The digits of `n_sources` whole photos, so source-photo splits stay meaningful."""
    import numpy as np

    unique = np.unique(crops["source_image"])[skip:skip + n_sources]
    keep = np.isin(crops["source_image"], unique)
    return {k: v[keep] for k, v in crops.items()}


@pytest.fixture(scope="session")
def small_npz(tmp_path_factory, crops) -> Path:
    """About 3,000 real digits from 1,500 photos in the project's .npz layout."""
    import numpy as np

    sub = subset_by_source(crops, 1500)
    path = tmp_path_factory.mktemp("data") / "small.npz"
    np.savez(path, X=sub["X"], y=sub["y"], source_image=sub["source_image"])
    return path


# Serving fixtures (shared by test_serve.py and test_browser.py)

@pytest.fixture(scope="session")
def digit_checkpoint(tmp_path_factory) -> Path:
    """The shipped digit model (or $HOUSENUM_TEST_DIGIT_MODEL, a run folder or .pt) copied to a temp
    folder with its ONNX export beside it, so the server runs it on ONNX Runtime."""
    from housenum.checkpoint import checkpoint_path
    from housenum.export import export_onnx

    source = checkpoint_path(os.environ.get("HOUSENUM_TEST_DIGIT_MODEL") or DEFAULT_DIGIT_MODEL)
    path = tmp_path_factory.mktemp("model") / "digits.pt"
    shutil.copyfile(source, path)
    export_onnx(path, parity_data="synthetic:200", n_parity=8)
    return path


@pytest.fixture(scope="session")
def reader_model() -> str | None:
    """$HOUSENUM_TEST_READER_MODEL (a reader run folder or .pt), else the shipped reader (None)."""
    return os.environ.get("HOUSENUM_TEST_READER_MODEL")


@pytest.fixture(scope="session")
def number_reader(reader_model):
    """The reader the server loads, in process. It ships, so failing to load it fails the tests that
    use it (test_serve tests the 503 a server without a reader gives, apart)."""
    from housenum.read import NumberReader

    return NumberReader(reader_model)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(args: list[str], log_path: Path, env: dict[str, str] | None = None, uvicorn: bool = False):
    """`housenum serve ARGS` (or, `uvicorn`, the app factory as a deployment runs it, set by `env`) in
    a subprocess on a free loopback port; yields its base URL once healthy."""
    port = free_port()
    cmd = ([sys.executable, "-m", "uvicorn", "--factory", "housenum.serve.app:app_from_env"] if uvicorn
           else [sys.executable, "-m", "housenum.cli", "serve"]) + ["--port", str(port), *args]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server did not start; log:\n{log_path.read_text()}")
        time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def readerless_server(digit_checkpoint, tmp_path_factory):
    """A server whose reader failed to load (here: a digit model given as the reader, which the app
    factory, unlike `housenum serve`, does not check first): /v1/numbers answers 503."""
    env = {"HOUSENUM_SERVE_DIGIT_MODEL": str(digit_checkpoint), "HOUSENUM_SERVE_NUMBER_MODEL": str(digit_checkpoint),
           "HOUSENUM_SERVE_THREADS": "1"}
    with serving([], tmp_path_factory.mktemp("readerless") / "server.log", env, uvicorn=True) as url:
        yield url


@pytest.fixture(scope="session")
def server_log(tmp_path_factory) -> Path:
    """Where the `server` fixture's process writes its log."""
    return tmp_path_factory.mktemp("server") / "server.log"


@pytest.fixture(scope="session")
def server(digit_checkpoint, reader_model, svhn_dir, server_log):
    """Base URL of `housenum serve` running in a subprocess on a free loopback port."""
    args = ["--threads", "1", "--digit-model", str(digit_checkpoint),
            "--examples", str(svhn_dir / "numbers" / "images")]
    if reader_model:
        args += ["--number-model", reader_model]
    with serving(args, server_log) as url:
        yield url
