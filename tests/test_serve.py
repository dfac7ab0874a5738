"""The HTTP service, end to end: a real `housenum serve` on a loopback port, real SVHN photos and crops."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from PIL import Image

from housenum.checkpoint import DEFAULT_DIGIT_MODEL
from housenum.read import DEFAULT_READER
from housenum.serve.app import Settings
from tests.conftest import serving



def png_bytes(pixels: np.ndarray | Image.Image) -> bytes:
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def example_photos(svhn_dir: Path, n: int) -> list[tuple[Path, str]]:
    """The first n test photos with their true numbers."""
    labels = json.loads((svhn_dir / "numbers" / "labels.json").read_text())
    names = [f"test_{i}.png" for i in range(1, n + 1)]
    return [(svhn_dir / "numbers" / "images" / name, labels[name]["label"]) for name in names]


# ---------------------------------------------------------------- happy paths

def test_a_server_whose_reader_failed_to_load_says_503_and_still_reads_digits(readerless_server, crops):
    health = httpx.get(f"{readerless_server}/healthz").json()
    assert health["status"] == "ok" and health["digits"] and health["numbers"] is None
    numbers = httpx.get(f"{readerless_server}/v1/models").json()["numbers"]
    assert not numbers["available"] and "not a whole-number reader checkpoint" in numbers["reason"]
    photo = png_bytes(crops["X"][0])
    for path in ("/v1/numbers", "/v1/numbers/batch"):
        field = "files" if path.endswith("batch") else "file"
        r = httpx.post(f"{readerless_server}{path}", files={field: ("a.png", photo, "image/png")})
        assert r.status_code == 503 and r.json()["error"]["code"] == "reader_unavailable", r.text
        assert "not a whole-number reader checkpoint" in r.json()["error"]["message"]
    r = httpx.post(f"{readerless_server}/v1/digits", files={"file": ("a.png", photo, "image/png")})
    assert r.status_code == 200 and 0 <= r.json()["digit"] <= 9


def test_health_models_and_metrics(server, number_reader):
    health = httpx.get(f"{server}/healthz").json()
    assert health["status"] == "ok" and health["digits"]
    assert health["numbers"] == number_reader.info()["name"]
    models = httpx.get(f"{server}/v1/models").json()
    assert models["digits"]["runtime"] == "onnxruntime"
    assert models["digits"]["channels"] in (1, 3)
    assert models["numbers"]["available"] and models["numbers"]["name"] == number_reader.info()["name"]
    assert models["limits"] == {"max_bytes": 10 * 1024 * 1024, "max_pixels": 40_000_000, "max_batch": 32}

    httpx.post(f"{server}/v1/digits", content=b"not an image", headers={"content-type": "image/png"})
    for path in ("/openapi.json", "/static/app.js", "/no/such/page"):
        httpx.get(f"{server}{path}")
    httpx.delete(f"{server}/v1/digits")
    metrics = httpx.get(f"{server}/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'housenum_http_requests_total{method="POST",route="/v1/digits",status="400"}' in text
    assert 'housenum_http_errors_total{code="not_an_image",route="/v1/digits"}' in text
    assert "housenum_http_request_seconds_bucket" in text
    for route, status in (("/openapi.json", 200), ("/static", 200), ("unmatched", 404)):  # Starlette's own routes
        assert f'housenum_http_requests_total{{method="GET",route="{route}",status="{status}"}}' in text
    assert 'housenum_http_requests_total{method="DELETE",route="/v1/digits",status="405"}' in text


def test_digits_agree_with_the_library_and_are_right(server, crops, digit_checkpoint):
    from housenum.predict import DigitRecognizer

    idx = np.random.default_rng(0).choice(len(crops["y"]), 48, replace=False)
    images, labels = crops["X"][idx], crops["y"][idx]
    expected = DigitRecognizer(digit_checkpoint).predict(list(images), top_k=3)  # PyTorch, in process
    got = []
    with httpx.Client(base_url=server) as client:
        for image in images:
            r = client.post("/v1/digits", files={"file": ("crop.png", png_bytes(image), "image/png")})
            assert r.status_code == 200, r.text
            got.append(r.json())
    assert set(got[0]) == {"digit", "confidence", "top_k", "model", "ms"}
    assert len(got[0]["top_k"]) == 3 and got[0]["ms"] > 0
    assert [g["digit"] for g in got] == [e.digit for e in expected]
    assert np.allclose([g["confidence"] for g in got], [e.confidence for e in expected], atol=1e-4)
    assert np.mean([g["digit"] for g in got] == labels) >= 0.6


def test_digits_raw_body_top_k_and_batch(server, crops):
    one = png_bytes(crops["X"][0])
    raw = httpx.post(f"{server}/v1/digits?top_k=5", content=one, headers={"content-type": "image/png"})
    assert raw.status_code == 200 and len(raw.json()["top_k"]) == 5

    files = [("files", (f"d{i}.png", png_bytes(crops["X"][i]), "image/png")) for i in range(6)]
    files.insert(2, ("files", ("broken.png", b"\x89PNG\r\n\x1a\n nope", "image/png")))
    batch = httpx.post(f"{server}/v1/digits/batch", files=files)
    assert batch.status_code == 200
    results = batch.json()["results"]
    assert [r["file"] for r in results] == ["d0.png", "d1.png", "broken.png", "d2.png", "d3.png", "d4.png", "d5.png"]
    assert results[2]["error"]["code"] == "not_an_image"
    assert results[0]["digit"] == raw.json()["digit"]


def test_concurrent_requests_are_merged_and_answered_alike(server, crops):
    """Requests that queue while the model runs share one model call; each keeps its own top_k."""
    import asyncio

    images = [png_bytes(x) for x in crops["X"][100:124]]
    with httpx.Client(base_url=server) as client:
        alone = [client.post("/v1/digits", content=im, headers={"content-type": "image/png"}).json()
                 for im in images]

    async def together() -> list[dict]:
        async with httpx.AsyncClient(base_url=server, timeout=30) as client:
            replies = await asyncio.gather(*(client.post("/v1/digits", params={"top_k": 1 + i % 4}, content=im,
                                                         headers={"content-type": "image/png"})
                                             for i, im in enumerate(images)))
        return [r.json() for r in replies]

    def model_calls_and_images() -> tuple[float, float]:
        lines = httpx.get(f"{server}/metrics").text.splitlines()   # e.g. housenum_batch_size_count{model="x"} 3.0

        def total(name: str) -> float:
            return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name + "{"))
        return total("housenum_batch_size_count"), total("housenum_batch_size_sum")

    calls, digits = model_calls_and_images()
    merged = asyncio.run(together())
    assert [m["digit"] for m in merged] == [a["digit"] for a in alone]
    assert [len(m["top_k"]) for m in merged] == [1 + i % 4 for i in range(len(images))]
    more_calls, more_digits = model_calls_and_images()
    assert more_digits - digits == len(images)
    assert more_calls - calls < len(images)   # 24 at once on one thread: some shared a model call


def test_numbers_reads_real_photos(server, svhn_dir, number_reader):
    photos = example_photos(svhn_dir, 12)
    first = photos[0][0]
    r = httpx.post(f"{server}/v1/numbers", files={"file": (first.name, first.read_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    right = 0
    with httpx.Client(base_url=server) as client:
        for path, label in photos:
            r = client.post("/v1/numbers", content=path.read_bytes(), headers={"content-type": "image/png"})
            assert r.status_code == 200, r.text
            body = r.json()
            assert set(body) >= {"number", "confidence", "boxes", "model", "ms"}
            assert body["number"] == number_reader.read(path).number
            assert all(len(box) == 5 and all(type(v) is int for v in box) for box in body["boxes"])
            assert body["boxes"] == number_reader.read(path).boxes    # the same ints as the batch and the CLI
            right += body["number"] == label
    assert right >= len(photos) // 2
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p, _ in photos[:4]]
    files.append(("files", ("broken.png", b"nope", "image/png")))
    batch = httpx.post(f"{server}/v1/numbers/batch", files=files).json()
    assert [r["file"] for r in batch["results"]] == [p.name for p, _ in photos[:4]] + ["broken.png"]
    assert batch["results"][-1]["error"]["code"] == "not_an_image"
    with_text = httpx.post(f"{server}/v1/numbers/batch", files=files[:1], data={"files": "a text part"}).json()
    codes = [r["error"]["code"] if "error" in r else r["number"] for r in with_text["results"]]
    assert sorted(codes, key=str) == sorted(["not_a_file", batch["results"][0]["number"]], key=str)   # own entry
    # min_confidence withholds the readings under it, per request, single and batch alike
    for p, found in zip(photos[:4], batch["results"]):
        for threshold in (0.0, found["confidence"] + 1e-3):
            sure = httpx.post(f"{server}/v1/numbers", params={"min_confidence": threshold},
                              content=p[0].read_bytes(), headers={"content-type": "image/png"}).json()
            assert sure["confidence"] == found["confidence"]
            if threshold and found["number"] is not None:
                assert sure["number"] is None and sure["guess"] == found["number"]
            else:
                assert sure["number"] == found["number"] and sure["guess"] is None
    unsure = httpx.post(f"{server}/v1/numbers/batch", params={"min_confidence": 1.0}, files=files).json()
    assert all(r["number"] is None for r in unsure["results"][:4]) and "error" in unsure["results"][-1]
    assert [r["guess"] for r in unsure["results"][:4]] == [r["number"] for r in batch["results"][:4]]
    assert all(r["guess"] is None for r in batch["results"][:4])   # the key is there, as on /v1/numbers
    bad = httpx.post(f"{server}/v1/numbers", params={"min_confidence": 1.5}, content=first.read_bytes(),
                     headers={"content-type": "image/png"})
    assert bad.status_code == 422
    nan = httpx.post(f"{server}/v1/numbers", params={"min_confidence": "nan"}, content=first.read_bytes(),
                     headers={"content-type": "image/png"})   # not "less than or equal to 1", as if just too large
    assert nan.status_code == 422 and "finite number" in nan.json()["error"]["message"], nan.text


# ---------------------------------------------------------------- every error is a JSON 4xx and the server stays up

def _huge_pixels_png() -> bytes:
    """48 megapixels of black: a 46 KB file that would take 48 MB to decode."""
    return png_bytes(Image.new("L", (8000, 6000)))


ERROR_CASES = {
    "not an image": (400, "not_an_image", dict(content=b"hello", headers={"content-type": "image/png"})),
    "empty file": (400, "empty", dict(files={"file": ("e.png", b"", "image/png")})),
    "truncated png": (400, "not_an_image", "truncated"),
    "png header cut short": (400, "not_an_image", "header"),
    "a few pixels": (400, "not_an_image", dict(files={"file": ("dot.png", png_bytes(Image.new("RGB", (1, 1))),
                                                                 "image/png")})),
    "postscript": (400, "not_an_image", dict(files={"file": ("x.eps", b"%!PS-Adobe-3.0 EPSF-3.0\nshowpage\n",
                                                             "image/png")})),
    "too many bytes": (413, "too_large", dict(content=b"\0" * (10 * 1024 * 1024 + 70_000),
                                               headers={"content-type": "image/png"})),
    "too many bytes, streamed": (413, "too_large", "streamed"),
    "too many pixels": (413, "too_large", "pixels"),
    "wrong body type": (415, "unsupported_media_type",
                        dict(content=b"{}", headers={"content-type": "application/json"})),
    "no content type": (415, "unsupported_media_type", dict(content=b"x")),
    "wrong part type": (415, "unsupported_media_type", dict(files={"file": ("a.txt", b"hello", "text/plain")})),
    "missing file field": (422, "missing_file", dict(files={"image": ("a.png", b"x", "image/png")})),
    "text instead of file": (422, "not_a_file", dict(data={"file": "hello"}, files={"other": ("a", b"x")})),
    "two files": (422, "one_file_only", 2),
    "three files": (422, "one_file_only", 3),   # not "too many files": one is the limit here
    "top_k too large": (422, "invalid_parameter", dict(params={"top_k": 11}, files={"file": ("a.png", b"x")})),
    "top_k not a number": (422, "invalid_parameter", dict(params={"top_k": "x"}, files={"file": ("a.png", b"x")})),
    "broken multipart": (400, "bad_multipart", dict(content=b"--zz\r\nContent-Disposition: form-data\r\n\r\nx",
                                                    headers={"content-type": "multipart/form-data; boundary=zz"})),
    "multipart never closed": (400, "bad_multipart", dict(
        content=b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\nxyz\r\n',
        headers={"content-type": "multipart/form-data; boundary=zz"})),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_input_is_a_json_4xx(server, crops, case):
    status, code, request = ERROR_CASES[case]
    good = png_bytes(crops["X"][0])
    if request == "truncated":
        request = dict(files={"file": ("t.png", good[: len(good) // 2], "image/png")})
    elif request == "header":
        request = dict(files={"file": ("t.png", good[:16], "image/png")})
    elif request == "streamed":
        chunks = (b"\0" * (1024 * 1024) for _ in range(12))  # no Content-Length: chunked transfer
        request = dict(content=chunks, headers={"content-type": "image/png"})
    elif request == "pixels":
        request = dict(files={"file": ("huge.png", _huge_pixels_png(), "image/png")})
    elif isinstance(request, int):
        request = dict(files=[("file", (f"{i}.png", good, "image/png")) for i in range(request)])
    r = httpx.post(f"{server}/v1/digits", timeout=30, **request)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]


def test_a_body_over_the_limit_says_what_the_limit_is_made_of(server):
    """The request limit is not --max-mb itself (a form wraps the image, a batch holds many): the 413 says so."""
    r = httpx.post(f"{server}/v1/digits", content=b"\0" * (10 * 1024 * 1024 + 64 * 1024 + 1),
                   headers={"content-type": "image/png"}, timeout=30)
    assert r.status_code == 413, r.text
    message = r.json()["error"]["message"]
    assert "limit is 10.1 MiB (10,551,296 bytes): one image of at most 10.0 MiB (--max-mb), plus 64 KiB for the " \
           "form" in message, message
    limit, why = Settings(max_bytes=1024 * 1024, max_batch=4).body_limit("/v1/numbers/batch")
    assert limit == 4 * 1024 * 1024 + 64 * 1024 and why.startswith("4 images of at most 1.0 MiB each (--max-mb)")
    assert Settings(max_bytes=10_485).body_limit("/v1/digits")[1].startswith("one image of at most 10.2 KiB")


def test_a_text_part_over_1_mb_is_413_and_says_to_send_a_file(server, crops):
    big_text = "a" * (1024 * 1024 + 1)
    good = ("a.png", png_bytes(crops["X"][0]), "image/png")
    for request in (dict(data={"file": big_text}, files={"other": good}),    # the image sent as text (curl -F 'file=<')
                    dict(data={"note": big_text}, files={"file": good})):    # a big text field beside the file
        r = httpx.post(f"{server}/v1/numbers", **request)
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "too_large"
        assert "form field 'file'" in r.json()["error"]["message"] and "file part" in r.json()["error"]["message"]


def test_a_part_named_only_by_filename_star_is_said_to_lack_filename(server, crops):
    body = (b"--zz\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''%E2%82%AC.png\r\n"
            b"Content-Type: image/png\r\n\r\n" + png_bytes(crops["X"][0]) + b"\r\n--zz--\r\n")
    r = httpx.post(f"{server}/v1/digits", content=body, headers={"content-type": "multipart/form-data; boundary=zz"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "not_a_file", r.text
    assert "no filename=" in r.json()["error"]["message"]


def test_a_content_type_with_no_media_type_is_quoted_as_sent(server, crops):
    r = httpx.post(f"{server}/v1/digits", content=png_bytes(crops["X"][0]), headers={"content-type": ";;;"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    assert "content type ';;;'" in r.json()["error"]["message"], r.text


def test_batch_limits_and_unknown_routes(server, crops):
    good = png_bytes(crops["X"][0])
    too_many = httpx.post(f"{server}/v1/digits/batch", files=[("files", (f"{i}.png", good, "image/png"))
                                                              for i in range(33)])
    assert too_many.status_code == 413 and too_many.json()["error"]["code"] == "too_many_files"
    missing = httpx.get(f"{server}/v1/nothing").json()["error"]
    assert missing["code"] == "not_found" and "/v1/nothing" in missing["message"]
    wrong_method = httpx.get(f"{server}/v1/digits")
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert "GET" in wrong_method.json()["error"]["message"] and "POST" in wrong_method.json()["error"]["message"]
    assert wrong_method.headers["allow"] == "POST"


def test_a_batch_answers_a_part_of_the_wrong_type_in_its_place(server, crops):
    good = png_bytes(crops["X"][0])
    files = [("files", ("a.png", good, "image/png")), ("files", ("notes.txt", b"hello", "text/plain")),
             ("files", ("b.png", good, "image/png"))]
    r = httpx.post(f"{server}/v1/digits/batch", files=files)
    assert r.status_code == 200, r.text
    a, notes, b = r.json()["results"]
    assert a["digit"] == b["digit"] and notes["file"] == "notes.txt"
    assert notes["error"]["code"] == "unsupported_media_type" and "text/plain" in notes["error"]["message"]


def _images_counted(server: str) -> float:
    return sum(float(line.split()[-1]) for line in httpx.get(f"{server}/metrics").text.splitlines()
               if line.startswith("housenum_images_total"))


def test_metrics_count_only_the_images_a_model_ran_on(server, crops):
    good = png_bytes(crops["X"][0])
    bad = [("files", ("empty.png", b"", "image/png")), ("files", ("cut.png", good[:20], "image/png")),
           ("files", ("text.png", b"hello", "image/png"))]
    before = _images_counted(server)
    assert httpx.post(f"{server}/v1/digits/batch", files=bad).status_code == 200
    assert _images_counted(server) == before
    one_good = [*bad, ("files", ("ok.png", good, "image/png"))]
    assert httpx.post(f"{server}/v1/digits/batch", files=one_good).status_code == 200
    assert _images_counted(server) == before + 1


def test_a_client_that_hangs_up_mid_upload_is_no_server_error(server, server_log):
    import socket
    import time

    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /v1/digits HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
                  + b"\x89PNG" * 100)
    deadline = time.monotonic() + 10
    while 'route="/v1/digits",status="499"' not in (text := httpx.get(f"{server}/metrics").text):
        assert time.monotonic() < deadline, "the hang-up was never counted"
        time.sleep(0.1)
    assert 'route="/v1/digits",status="500"' not in text
    assert "Traceback" not in server_log.read_text()


def test_server_survives_a_burst_of_bad_input(server, crops):
    with httpx.Client(base_url=server, timeout=30) as client:
        for i in range(30):
            client.post("/v1/digits", content=os.urandom(64 + i), headers={"content-type": "image/jpeg"})
        assert client.get("/healthz").status_code == 200
        assert client.head("/healthz").status_code == 200
        good = png_bytes(crops["X"][1])
        ok = client.post("/v1/digits", content=good, headers={"content-type": "image/png"})
        assert ok.status_code == 200
        mixed = client.post("/v1/digits/batch", files=[("files", ("a.png", good, "image/png")),
                                                       ("files", ("b.png", good[:16], "image/png"))])
        assert mixed.status_code == 200, mixed.text
        first, second = mixed.json()["results"]
        assert "digit" in first and second["error"]["code"] == "not_an_image"


# ---------------------------------------------------------------- docs and page, offline

def test_openapi_docs_and_page_need_no_network(server):
    spec = httpx.get(f"{server}/openapi.json").json()
    for path in ("/v1/numbers", "/v1/digits", "/v1/numbers/batch", "/v1/digits/batch", "/healthz", "/v1/models"):
        assert path in spec["paths"]
    assert "multipart/form-data" in spec["paths"]["/v1/digits"]["post"]["requestBody"]["content"]
    assert list(spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]   # not JSON
    for page, assets in (("/", ("app.js", "style.css")), ("/docs", ("docs.js", "docs.css", "style.css"))):
        html = httpx.get(f"{server}{page}")
        assert html.status_code == 200 and "text/html" in html.headers["content-type"]
        texts = [html.text] + [httpx.get(f"{server}/static/{a}").text for a in assets]
        assert not any("http://" in t or "https://" in t or "//cdn" in t for t in texts)
    examples = httpx.get(f"{server}/v1/examples").json()["examples"]
    assert examples and httpx.get(f"{server}{examples[0]['url']}").content[:4] == b"\x89PNG"
    assert httpx.get(f"{server}/examples/..%2Fpasswd").status_code == 404
    for path in ("/", "/docs", "/healthz", "/v1/models", "/metrics", "/v1/examples", examples[0]["url"]):
        head = httpx.head(f"{server}{path}")                  # curl -I and uptime probes
        assert head.status_code == 200 and not head.content, path
    assert all(list(ops) == ["get"] for path, ops in spec["paths"].items() if path in ("/healthz", "/v1/models"))


ODD_EXAMPLE_NAMES = ("a#1.png", "x?y.png", "two words.png", "café №5.png")


@pytest.fixture(scope="module")
def odd_examples_server(digit_checkpoint, svhn_dir, tmp_path_factory):
    """A server whose examples have names a URL must encode, and one (gone.png) that a test removes."""
    folder = tmp_path_factory.mktemp("examples")
    photo = svhn_dir / "numbers" / "images" / "test_1.png"
    for name in (*ODD_EXAMPLE_NAMES, "gone.png"):
        shutil.copyfile(photo, folder / name)
    args = ["--threads", "1", "--digit-model", str(digit_checkpoint), "--examples", str(folder)]
    with serving(args, folder.parent / "server.log") as url:
        yield url, folder


def test_example_urls_are_percent_encoded_and_each_loads(odd_examples_server):
    url, _ = odd_examples_server
    listed = {e["name"]: e["url"] for e in httpx.get(f"{url}/v1/examples").json()["examples"]}
    for name in ODD_EXAMPLE_NAMES:
        assert listed[name] == "/examples/" + quote(name, safe="")
        r = httpx.get(f"{url}{listed[name]}")
        assert r.status_code == 200 and r.content[:4] == b"\x89PNG", name


def test_an_example_removed_after_start_is_a_404_not_a_500(odd_examples_server):
    url, folder = odd_examples_server
    (folder / "gone.png").unlink()
    for method in ("GET", "HEAD"):
        r = httpx.request(method, f"{url}/examples/gone.png")
        assert r.status_code == 404, (method, r.text)
    error = httpx.get(f"{url}/examples/gone.png").json()["error"]
    assert error["code"] == "not_found" and error["message"] == "example 'gone.png' is no longer there"


# ---------------------------------------------------------------- the 8-bit runtime

def test_serve_int8_runs_the_fast_models_8_bit_export(crops, tmp_path):
    idx = np.random.default_rng(1).choice(len(crops["y"]), 24, replace=False)
    with serving(["--threads", "1", "--digit-model", "fast", "--int8"], tmp_path / "server.log") as url:
        models = httpx.get(f"{url}/v1/models").json()
        assert models["digits"]["runtime"] == "onnxruntime-int8"
        assert models["digits"]["name"] == "resnet_tiny" and models["digits"]["card"]["card"] == "DIGITS_FAST_CARD.md"
        got = [httpx.post(f"{url}/v1/digits", files={"file": ("d.png", png_bytes(crops["X"][i]), "image/png")}).json()
               for i in idx]
    assert np.mean([g["digit"] for g in got] == crops["y"][idx]) >= 0.8


@pytest.mark.parametrize("flag, env", [(["--int8"], {}), ([], {"HOUSENUM_SERVE_INT8": "1"})])
def test_serve_int8_without_an_export_is_one_line(tmp_path, flag, env):
    shutil.copyfile(DEFAULT_DIGIT_MODEL, tmp_path / "digits.pt")   # no exports beside the copy
    done = subprocess.run([sys.executable, "-m", "housenum.cli", "serve", "--digit-model", str(tmp_path / "digits.pt"),
                           *flag], capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert done.returncode == 2
    assert done.stderr.startswith("error: no int8 export beside") and "Traceback" not in done.stderr


def test_serve_on_a_port_in_use_is_one_line_and_never_says_serving():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "housenum.cli", "serve", "--port", str(port)],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "serving on" not in done.stderr
    assert done.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: in use by another program; " \
                                  "pick another with --port"


@pytest.mark.parametrize("args, message", [
    (["--number-model", "nowhere"], "no such run folder or checkpoint"),
    (["--digit-model", str(DEFAULT_READER)], "a whole-number reader, not a digit model"),
    (["--number-model", str(DEFAULT_DIGIT_MODEL)], "not a whole-number reader checkpoint"),
    (["--examples", "nowhere"], "--examples nowhere: no such folder"),
    (["--port", "99999"], "Invalid value"),
    (["--max-mb", "-1"], "Invalid value"),
])
def test_serve_refuses_bad_settings_before_it_starts(args, message):
    done = subprocess.run([sys.executable, "-m", "housenum.cli", "serve", *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr and "serving on" not in done.stderr
