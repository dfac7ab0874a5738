"""fetch() against a real HTTP server on loopback serving a real official-layout .mat file."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from housenum.data import download
from housenum.data.download import OFFICIAL_FILES, RemoteFile, cache_dir, fetch
from housenum.data.formats import read_official_mat
from housenum.errors import DownloadError

NAME = "train_32x32.mat"


class _Handler(BaseHTTPRequestHandler):
    """Serves `server.files`; honours `Range: bytes=N-` unless `server.ignore_range` is set.

    `server.cut_next` makes the next response stop after half its body and close the connection;
    `server.stall_next` sends half, then waits without closing; `server.slow` sends in timed pieces.
    """

    def do_GET(self) -> None:
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        if self.path == "/loop":   # redirects to itself, forever
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = server.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        start = 0
        range_header = self.headers.get("Range")
        if range_header and not server.ignore_range:
            start = int(range_header.removeprefix("bytes=").removesuffix("-"))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        if server.no_length:   # streamed until the connection closes, as a misbehaving mirror might
            self.end_headers()
            self.wfile.write(payload)
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if server.slow:   # in pieces, so that another fetch can start while this one runs
            for i in range(4):
                self.wfile.write(payload[i * len(payload) // 4:(i + 1) * len(payload) // 4])
                self.wfile.flush()
                time.sleep(0.15)
            return
        if server.cut_next or server.stall_next:
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            if server.stall_next:
                time.sleep(1.0)
            server.cut_next = server.stall_next = False
            self.close_connection = True
            return
        self.wfile.write(payload)

    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture(scope="module")
def mat_file(svhn_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, np.ndarray]:
    """200 real digits (20 of each) as an official-layout .mat: its bytes and the labels 0..9."""
    with np.load(svhn_dir / "crops.npz") as f:
        x, y = f["X"], f["y"]
    idx = np.concatenate([np.flatnonzero(y == d)[:20] for d in range(10)])
    labels = y[idx].astype(np.int64)
    path = tmp_path_factory.mktemp("mat") / NAME
    scipy.io.savemat(
        path,
        {
            "X": np.ascontiguousarray(np.transpose(x[idx], (1, 2, 3, 0)), dtype=np.uint8),
            "y": np.where(labels == 0, 10, labels).reshape(-1, 1).astype(np.uint8),
        },
    )
    return path.read_bytes(), labels


@pytest.fixture
def server(mat_file):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files = {NAME: mat_file[0]}
    httpd.requests = []
    httpd.ignore_range = httpd.cut_next = httpd.stall_next = httpd.no_length = httpd.slow = False
    httpd.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def remote(server, mat_file) -> RemoteFile:
    data = mat_file[0]
    return RemoteFile(f"{server.base_url}/{NAME}", len(data), hashlib.md5(data).hexdigest())


def files_in(folder: Path) -> list[str]:
    """What a fetch left in `folder`, but for its lock file (kept, as lock files are)."""
    return sorted(p.name for p in folder.iterdir() if p.suffix != ".lock")


def test_fresh_download_reads_as_official_mat(server, remote, mat_file, tmp_path, capsys):
    path = fetch(NAME, directory=tmp_path, expected=remote)
    assert path == tmp_path / NAME
    assert path.read_bytes() == mat_file[0]
    assert not (tmp_path / f"{NAME}.part").exists()
    digits = read_official_mat(path)
    assert len(digits.labels) == 200
    np.testing.assert_array_equal(digits.labels, mat_file[1])
    assert (digits.labels == 0).sum() == 20  # 10 in the file reads as digit 0
    out, err = capsys.readouterr()
    assert out == "" and NAME in err  # the progress bar goes to stderr only


def test_base_url_env_overrides_table_url(server, remote, tmp_path, monkeypatch):
    monkeypatch.setenv("HOUSENUM_BASE_URL", server.base_url + "/")
    unreachable = RemoteFile("http://127.0.0.1:9/nowhere", remote.size, remote.md5)
    fetch(NAME, directory=tmp_path, progress=False, expected=unreachable)
    assert server.requests == [(f"/{NAME}", None)]


def test_second_fetch_makes_no_request(server, remote, tmp_path):
    first = fetch(NAME, directory=tmp_path, progress=False, expected=remote)
    second = fetch(NAME, directory=tmp_path, progress=False, expected=remote)
    assert first == second
    assert len(server.requests) == 1


def test_interrupted_transfer_resumes_with_range(server, remote, mat_file, tmp_path):
    data = mat_file[0]
    server.cut_next = True
    with pytest.raises(DownloadError, match="closed after") as info:
        fetch(NAME, directory=tmp_path, progress=False, expected=remote)
    assert "\n" not in str(info.value)
    assert not (tmp_path / NAME).exists()
    part = tmp_path / f"{NAME}.part"
    half = len(data) // 2
    assert part.read_bytes() == data[:half]

    path = fetch(NAME, directory=tmp_path, progress=False, expected=remote)
    assert server.requests[-1] == (f"/{NAME}", f"bytes={half}-")
    assert path.read_bytes() == data
    assert not part.exists()


def test_stalled_transfer_times_out_and_keeps_partial(
    server, remote, mat_file, tmp_path, monkeypatch
):
    monkeypatch.setattr(download, "TIMEOUT_S", 0.2)
    server.stall_next = True
    with pytest.raises(DownloadError, match="timed out.*resumes"):
        fetch(NAME, directory=tmp_path, progress=False, expected=remote)
    assert not (tmp_path / NAME).exists()
    assert (tmp_path / f"{NAME}.part").stat().st_size == len(mat_file[0]) // 2


@pytest.mark.parametrize("wrong", ["md5", "size"])
def test_checksum_mismatch_leaves_no_file(server, remote, mat_file, tmp_path, wrong):
    size = len(mat_file[0])
    if wrong == "md5":
        bad = RemoteFile(remote.url, size, "0" * 32)
        pattern = f"{NAME}: expected md5 0{{32}}, got {remote.md5}"
    else:   # refused from Content-Length, before a byte of it is written
        bad = RemoteFile(remote.url, size + 1, None)
        pattern = f"{NAME}: .* would send {size} bytes, not the {size + 1} expected"
    with pytest.raises(DownloadError, match=pattern):
        fetch(NAME, directory=tmp_path, progress=False, expected=bad)
    assert files_in(tmp_path) == []


def test_server_ignoring_range_restarts(server, remote, mat_file, tmp_path):
    server.ignore_range = True
    (tmp_path / f"{NAME}.part").write_bytes(b"not a prefix of the file" * 100)
    path = fetch(
        NAME, base_url=server.base_url, directory=tmp_path, progress=False, expected=remote
    )
    assert server.requests == [(f"/{NAME}", "bytes=2400-")]  # asked to resume, got 200
    assert path.read_bytes() == mat_file[0]
    assert not (tmp_path / f"{NAME}.part").exists()


def test_complete_partial_is_checked_without_request(server, remote, mat_file, tmp_path):
    (tmp_path / f"{NAME}.part").write_bytes(mat_file[0])
    path = fetch(NAME, directory=tmp_path, progress=False, expected=remote)
    assert path.read_bytes() == mat_file[0]
    assert server.requests == []


@pytest.mark.parametrize("length_sent", [True, False])
def test_a_file_longer_than_expected_is_stopped_not_written_out(server, remote, mat_file, tmp_path, length_sent):
    server.no_length = not length_sent
    short = RemoteFile(remote.url, 1000, None)
    said = "would send" if length_sent else "sent more than the 1000 bytes expected"
    with pytest.raises(DownloadError, match=said):
        fetch(NAME, directory=tmp_path, progress=False, expected=short)
    assert files_in(tmp_path) == []   # neither the file nor a .part of it


def test_a_redirect_loop_is_one_line(server, tmp_path):
    loop = RemoteFile(f"{server.base_url}/loop", None, None)
    with pytest.raises(DownloadError, match="answered HTTP 302") as caught:
        fetch("loop.mat", directory=tmp_path, progress=False, expected=loop)
    assert "\n" not in str(caught.value)


def test_not_found_is_download_error(server, tmp_path):
    missing = RemoteFile(f"{server.base_url}/missing.mat", None, None)
    with pytest.raises(DownloadError, match="missing.mat: .* answered HTTP 404"):
        fetch("missing.mat", directory=tmp_path, progress=False, expected=missing)
    assert files_in(tmp_path) == []


def test_unreachable_server_is_one_line_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once this block ends: connections are refused
    with pytest.raises(DownloadError, match=f"{NAME}: download from .*:{port}/.* failed") as info:
        fetch(NAME, base_url=f"http://127.0.0.1:{port}", directory=tmp_path, progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / NAME).exists()


def test_base_url_that_is_no_url_is_one_line_error(tmp_path):
    with pytest.raises(DownloadError, match=f"{NAME}: notaurl/{NAME} is not an http\\(s\\) URL"):
        fetch(NAME, base_url="notaurl", directory=tmp_path, progress=False)


def test_unknown_name_lists_known_files(tmp_path):
    with pytest.raises(DownloadError, match="train_32x32.mat, test_32x32.mat"):
        fetch("train_64x64.mat", directory=tmp_path)


def test_official_table():
    assert OFFICIAL_FILES["train_32x32.mat"].size == 182040794
    assert OFFICIAL_FILES["test_32x32.mat"].md5 == "eb5a983be6a315427106f1b164d9cef3"
    assert OFFICIAL_FILES["extra_32x32.mat"].url == (
        "http://ufldl.stanford.edu/housenumbers/extra_32x32.mat"
    )
    for tar in ("train.tar.gz", "test.tar.gz", "extra.tar.gz"):
        assert OFFICIAL_FILES[tar].size is None and OFFICIAL_FILES[tar].md5 is None


def test_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HOUSENUM_DATA", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("HOUSENUM_DATA")
    assert cache_dir().name == "data" and "housenum" in str(cache_dir())


def test_fetch_uses_cache_dir_by_default(server, remote, tmp_path, monkeypatch):
    monkeypatch.setenv("HOUSENUM_DATA", str(tmp_path / "cache"))
    path = fetch(NAME, progress=False, expected=remote)
    assert path == tmp_path / "cache" / NAME


def test_ctrl_c_during_a_transfer_says_the_partial_file_is_kept(server, remote, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(download, "CHUNK_BYTES", 1024)

    class StoppedBar(download.tqdm):
        def update(self, n=1):
            super().update(n)
            raise KeyboardInterrupt   # Ctrl-C after the first chunk

    monkeypatch.setattr(download, "tqdm", StoppedBar)
    with pytest.raises(KeyboardInterrupt):
        fetch(NAME, directory=tmp_path, progress=False, expected=remote)
    assert (tmp_path / f"{NAME}.part").stat().st_size == 1024
    assert f"{NAME}: download stopped; {NAME}.part is kept and the next fetch resumes it" in capsys.readouterr().err


def test_two_fetches_at_once_download_once_and_both_get_the_whole_file(server, remote, mat_file, tmp_path, capsys):
    """Two processes resuming one .part together once left a file 32 KiB too long: one waits for the other."""
    server.slow = True
    results = []
    threads = [threading.Thread(target=lambda: results.append(fetch(NAME, directory=tmp_path, expected=remote)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)   # the first is sending when the second starts
    for thread in threads:
        thread.join(30)
    assert results == [tmp_path / NAME] * 2 and (tmp_path / NAME).read_bytes() == mat_file[0]
    assert server.requests == [(f"/{NAME}", None)]   # fetched once, with no Range of a shared .part
    assert "another process is at it" in capsys.readouterr().err
    assert files_in(tmp_path) == [NAME]


def test_a_cache_folder_that_is_a_file_is_named(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("HOUSENUM_DATA", str(tmp_path / "afile"))
    with pytest.raises(DownloadError, match=r"^\$HOUSENUM_DATA \(.*afile\) must be a folder for downloads"):
        fetch(NAME, progress=False)
    with pytest.raises(DownloadError, match=r"afile/sub must be a folder for downloads, but it or a folder above"):
        fetch(NAME, directory=tmp_path / "afile" / "sub", progress=False)
