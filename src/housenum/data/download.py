"""Download the official SVHN files once into a cache, resumably, and check them before use.

A transfer streams into `<name>.part`; only a file whose size and md5 match is renamed to its final
name, so a file under the final name is always complete. An interrupted transfer keeps the `.part`
and the next `fetch` resumes it with an HTTP Range request. A lock (`<name>.lock`, kept) lets one
process at a time fetch a name: two appending to one `.part` made a corrupt file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from filelock import FileLock, Timeout
from tqdm import tqdm

from housenum.errors import DownloadError

OFFICIAL_BASE_URL = "http://ufldl.stanford.edu/housenumbers/"
TIMEOUT_S = 60.0  # per socket operation (connect, each read), not for the whole transfer
CHUNK_BYTES = 1 << 20
USER_AGENT = "housenum/1.0 (+urllib)"


@dataclass(frozen=True)
class RemoteFile:
    """Where a file lives and what it must be; a size or md5 of None is not checked."""

    url: str
    size: int | None
    md5: str | None


def _official(name: str, size: int | None, md5: str | None) -> RemoteFile:
    return RemoteFile(OFFICIAL_BASE_URL + name, size, md5)


OFFICIAL_FILES: dict[str, RemoteFile] = {
    # Cropped digits ("format 2"); md5s as published by torchvision.datasets.SVHN.
    "train_32x32.mat": _official("train_32x32.mat", 182040794, "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test_32x32.mat": _official("test_32x32.mat", 64275384, "eb5a983be6a315427106f1b164d9cef3"),
    "extra_32x32.mat": _official("extra_32x32.mat", 1329278602, "a93ce644f1a588dc4d68dda5feec44a7"),
    # Full photos ("format 1"): no trusted size or md5 is published, so neither is checked; the
    # transfer is still checked against the server's Content-Length.
    "train.tar.gz": _official("train.tar.gz", None, None),
    "test.tar.gz": _official("test.tar.gz", None, None),
    "extra.tar.gz": _official("extra.tar.gz", None, None),
}


def cache_dir() -> Path:
    """`$HOUSENUM_DATA` if set, else the user cache folder's `housenum/data`."""
    env = os.environ.get("HOUSENUM_DATA")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("housenum")) / "data"


def fetch(
    name: str,
    *,
    base_url: str | None = None,
    directory: Path | None = None,
    progress: bool = True,
    expected: RemoteFile | None = None,
) -> Path:
    """Return the path of the cached file `name`, downloading and checking it on first use.

    `base_url` (else `$HOUSENUM_BASE_URL`) replaces the official server, e.g. for a mirror;
    `expected` replaces the table entry for `name`, so any file can be fetched and checked.
    """
    remote = expected if expected is not None else OFFICIAL_FILES.get(name)
    if remote is None:
        raise DownloadError(f"unknown file '{name}': known files are {', '.join(OFFICIAL_FILES)}")
    if not name or Path(name).name != name or name in (".", ".."):
        raise DownloadError(f"'{name}' is not a plain file name")
    base = base_url or os.environ.get("HOUSENUM_BASE_URL")
    url = f"{base.rstrip('/')}/{urllib.parse.quote(name)}" if base else remote.url

    folder = Path(directory) if directory is not None else cache_dir()
    final = folder / name
    if _complete(final, remote):
        return final
    _make_folder(folder, from_env=directory is None and bool(os.environ.get("HOUSENUM_DATA")))
    with one_at_a_time(folder / f"{name}.lock", name, progress):
        if _complete(final, remote):   # fetched by the process this one waited for
            return final
        _fetch_locked(name, url, final, remote, progress)
    return final


def _complete(final: Path, remote: RemoteFile) -> bool:
    """Whether the file under its final name is there and the size the table says (else it goes)."""
    if not final.is_file():
        return False
    if remote.size is None or final.stat().st_size == remote.size:
        return True
    final.unlink()  # not what the table says: fetch it again
    return False


def _make_folder(folder: Path, from_env: bool) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        source = f"$HOUSENUM_DATA ({folder})" if from_env else str(folder)
        raise DownloadError(f"{source} must be a folder for downloads, but it or a folder above it is a "
                            "file") from None


@contextmanager
def one_at_a_time(lock_path: Path, what: str, progress: bool = True) -> Iterator[None]:
    """Hold the lock at `lock_path` (the file is kept) so that one process at a time does `what`
    (a fetch, an extraction) in the cache; say so when waiting for another."""
    lock = FileLock(lock_path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if progress:
            print(f"{what}: another process is at it in {lock_path.parent}; waiting for it", file=sys.stderr)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _fetch_locked(name: str, url: str, final: Path, remote: RemoteFile, progress: bool) -> None:
    part = final.with_name(final.name + ".part")

    offset = part.stat().st_size if part.is_file() else 0
    if remote.size is not None and offset > remote.size:
        part.unlink()
        offset = 0
    if remote.size is None or offset < remote.size:
        _download(name, url, part, offset, remote.size, progress)
    _verify(name, part, remote)
    os.replace(part, final)


def _download(
    name: str, url: str, part: Path, offset: int, size: int | None, progress: bool
) -> None:
    """Stream `url` into `part`, appending from `offset` when the server honours the Range."""
    try:
        try:
            response = _request(url, offset)
        except urllib.error.HTTPError as e:
            if e.code != 416 or not offset:  # 416: the partial is already as long as the file
                raise
            e.close()
            part.unlink()
            offset = 0
            response = _request(url, 0)
        with response:
            if offset and not _resumes_at(response, offset):
                offset = 0  # server sent the whole file (200) or another range: start over
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else size
            if size is not None and total is not None and total != size:   # an error page, another file
                raise DownloadError(f"{name}: {url} would send {total} bytes, not the {size} expected; "
                                    "check $HOUSENUM_BASE_URL")
            written, too_long = offset, False
            with (
                open(part, "ab" if offset else "wb") as out,
                tqdm(
                    total=total,
                    initial=offset,
                    desc=name,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    file=sys.stderr,
                    disable=not progress,
                ) as bar,
            ):
                # read1 returns what has arrived, so bytes received before a stall are kept
                while chunk := response.read1(CHUNK_BYTES):
                    out.write(chunk)
                    bar.update(len(chunk))
                    written += len(chunk)
                    if size is not None and written > size:   # a wrong mirror must not fill the disk
                        too_long = True
                        break
                out.flush()
                os.fsync(out.fileno())
    except KeyboardInterrupt:
        print(f"{name}: download stopped; {_kept(part)}", file=sys.stderr)
        raise
    except urllib.error.HTTPError as e:   # a redirect loop's reason runs to three lines
        raise DownloadError(f"{name}: {url} answered HTTP {e.code} {' '.join(str(e.reason).split())}") from None
    except (OSError, http.client.HTTPException) as e:
        raise DownloadError(
            f"{name}: download from {url} failed ({_describe(e)}); {_kept(part)}"
        ) from None
    except ValueError as e:   # urllib's word for a URL it cannot parse
        raise DownloadError(f"{name}: {url} is not an http(s) URL ({e}); check $HOUSENUM_BASE_URL") from None
    if too_long:
        part.unlink()
        raise DownloadError(f"{name}: {url} sent more than the {size} bytes expected; stopped and removed what "
                            "it sent (check $HOUSENUM_BASE_URL)")
    received = part.stat().st_size
    if total is not None and received < total:
        raise DownloadError(
            f"{name}: connection to {url} closed after {received} of {total} bytes; {_kept(part)}"
        )


def _request(url: str, offset: int) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)


def _resumes_at(response: http.client.HTTPResponse, offset: int) -> bool:
    """True when the response is a 206 whose body starts at byte `offset`."""
    if getattr(response, "status", None) != 206:
        return False
    content_range = response.headers.get("Content-Range", "")
    return content_range.startswith(f"bytes {offset}-")


def _verify(name: str, part: Path, remote: RemoteFile) -> None:
    """Check size, then md5; a file that fails is deleted, since resuming it cannot fix it."""
    actual_size = part.stat().st_size
    if remote.size is not None and actual_size != remote.size:
        part.unlink()
        raise DownloadError(
            f"{name}: expected {remote.size} bytes, got {actual_size}; "
            "the download was deleted, fetch again"
        )
    if remote.md5 is not None:
        actual_md5 = _md5(part)
        if actual_md5 != remote.md5.lower():
            part.unlink()
            raise DownloadError(
                f"{name}: expected md5 {remote.md5}, got {actual_md5}; "
                "the download was deleted, fetch again"
            )


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _describe(error: BaseException) -> str:
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    text = str(reason).strip() or type(reason).__name__
    return " ".join(text.split())


def _kept(part: Path) -> str:
    if part.is_file() and part.stat().st_size:
        return f"{part.name} is kept and the next fetch resumes it"
    return "nothing was saved"
