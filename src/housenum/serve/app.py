"""The HTTP service: house numbers and digits from uploaded photos, a web page, health, models, metrics.

`create_app(Settings(...))` builds the app; `serve()` runs it with uvicorn (several worker processes
read their settings from HOUSENUM_SERVE_* environment variables, see `Settings.from_env`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from housenum.errors import HousenumError, ImageError, ImageTooLargeError
from housenum.preprocess import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, images_in, open_image
from housenum.serve.batching import MicroBatcher
from housenum.serve.metrics import Metrics, MetricsMiddleware
from housenum.serve.models import ServedModels, load_served_models
from housenum.serve.uploads import (MULTIPART_OVERHEAD, ApiError, BodyLimitMiddleware, Upload, megabytes,
                                    read_uploads, size_text)

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
ENV_PREFIX = "HOUSENUM_SERVE_"


@dataclass
class Settings:
    digit_model: str | None = None  # run folder or .pt; None: the shipped digits.pt
    number_model: str | None = None  # passed to NumberReader; None: its shipped model
    max_bytes: int = MAX_IMAGE_BYTES  # per image
    max_pixels: int = MAX_IMAGE_PIXELS  # per image, read from the header before decoding
    max_batch: int = 32  # images per batch request
    max_merge: int = 32  # single-image requests run together when they queue (1: never)
    threads: int | None = None  # intra-op threads for PyTorch / ONNX Runtime; None: their default
    examples: str | None = None  # folder of example photos shown on the page
    int8: bool = False  # digits on the checkpoint's 8-bit export (`housenum export --int8`)

    @classmethod
    def from_env(cls) -> Settings:
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = os.environ.get(ENV_PREFIX + f.name.upper())
            if not raw:
                continue
            if isinstance(f.default, bool):
                values[f.name] = raw.lower() in ("1", "true", "yes")
            else:
                values[f.name] = int(raw) if f.name.startswith(("max_", "threads")) else raw
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        return {ENV_PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)
                if getattr(self, f.name) is not None}

    def body_limit(self, path: str) -> tuple[int, str]:
        """The largest request body for `path`, and what it is made of (the 413 message says it, since
        the figure is not `--max-mb` itself)."""
        images = self.max_batch if path.endswith("/batch") else 1
        why = (f"{images} images of at most {megabytes(self.max_bytes)} each" if images > 1
               else f"one image of at most {megabytes(self.max_bytes)}")
        return (images * self.max_bytes + MULTIPART_OVERHEAD,
                f"{why} (--max-mb), plus {MULTIPART_OVERHEAD // 1024} KiB for the form")


# ---------------------------------------------------------------- response shapes (for /docs)

class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class Candidate(BaseModel):
    digit: int
    probability: float


class DigitOut(BaseModel):
    digit: int
    confidence: float
    top_k: list[Candidate]
    model: str
    ms: float


class NumberOut(BaseModel):
    number: str | None
    confidence: float
    boxes: list[list[int]]  # [left, top, width, height, digit] in the photo's pixels
    guess: str | None = None  # the number withheld by min_confidence
    model: str
    ms: float


class BatchOut(BaseModel):
    results: list[dict]  # one per file, in order: {"file", ...result} or {"file", "error": {...}}
    model: str
    ms: float


ERROR_RESPONSES = {status: {"model": ErrorBody, "description": why} for status, why in [
    (400, "not an image, or corrupt"), (413, "over the size limit (bytes, pixels or files)"),
    (415, "wrong content type"), (422, "bad parameters or missing file")]}
TopK = Annotated[int, Query(ge=1, le=10, description="How many candidate digits to list.")]
MinConfidence = Annotated[float, Query(ge=0, le=1, allow_inf_nan=False, description=(
    "Withhold readings less sure than this: `number` null, the reading as `guess`. On held-out photos "
    "0.9 kept 72%, 98% of them right."))]
READER_RESPONSES = {**ERROR_RESPONSES, 503: {"model": ErrorBody, "description": "no house-number reader installed"}}


def image_body(field: str, many: bool) -> dict:
    """OpenAPI for a body that is either a multipart form or the raw image."""
    item = {"type": "string", "format": "binary"}
    schema = {"type": "array", "items": item} if many else item
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": [field], "properties": {field: schema}}},
        "image/*": {"schema": item}}}}


# ---------------------------------------------------------------- the app

def create_app(settings: Settings | None = None, models: ServedModels | None = None) -> FastAPI:
    settings = settings or Settings()
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    models = models or load_served_models(settings.digit_model, settings.number_model, settings.threads,
                                           int8=settings.int8)
    metrics = Metrics()
    app = FastAPI(title="housenum", version="1", docs_url=None, redoc_url=None,
                  description="Read house numbers and digits from photos. Send an image as multipart "
                              "form field `file` (batch: `files`) or as the raw request body.")
    app.add_middleware(BodyLimitMiddleware, limit_for_path=settings.body_limit)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=app.router.routes)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _add_error_handlers(app)
    examples = _example_photos(settings.examples)

    def get_and_head(path: str, **kwargs):
        """A GET route that answers HEAD too (curl -I, uptime probes); only the GET is in the API schema."""
        def register(endpoint):
            route = app.get(path, **kwargs)(endpoint)   # first: a wrong method's 405 names GET as allowed
            app.head(path, include_in_schema=False)(endpoint)
            return route
        return register

    def decode(upload: Upload):
        if upload.error is not None:
            raise upload.error
        if not upload.data:
            raise ApiError(400, "empty", f"{upload.name}: the file is empty")
        if len(upload.data) > settings.max_bytes:
            raise ApiError(413, "too_large", f"{upload.name}: {size_text(len(upload.data))}; the limit is "
                                             f"{size_text(settings.max_bytes)}")
        try:
            return open_image(upload.data, settings.max_bytes, settings.max_pixels, name=upload.name)
        except ImageError as e:
            raise image_error(e, upload.name) from None

    def read_images(uploads: list[Upload], prepare, infer) -> list:
        """Decode each upload and `prepare` it at once (the model's input size: a batch of big photos
        never sits in memory decoded), then run `infer(prepared) -> [result]` on those that decoded;
        a file that cannot be decoded gets its ApiError in its place."""
        def prepare_one(upload: Upload):
            image = decode(upload)
            try:
                return prepare(image)
            except ImageError as e:   # `prepare`'s own: a digit image of a few pixels
                raise ApiError(400, "not_an_image", f"{upload.name}: {str(e).removeprefix('image: ')}") from None

        out: list = []
        where, prepared = [], []
        for i, upload in enumerate(uploads):
            try:
                prepared.append(prepare_one(upload))
                where.append(i)
                out.append({})
            except ApiError as e:
                out.append(e)
        if prepared:
            for i, result in zip(where, infer(prepared)):
                out[i] = result
        return out

    def digit_results(uploads: list[Upload], top_k: int) -> list:
        def infer(crops: list) -> list[dict]:
            return [p.as_json() for p in models.digits.predict_arrays(np.stack(crops), top_k)]

        return read_images(uploads, models.digits.prepare, infer)

    def number_results(uploads: list[Upload]) -> list:
        # Readings, not JSON: each request applies its own min_confidence
        return read_images(uploads, models.reader.prepare, models.reader.read_many)

    def withheld(results: list, min_confidence: float) -> list[dict | ApiError]:
        return [r if isinstance(r, ApiError) else r.sure_or_none(min_confidence).as_json() for r in results]

    def digit_batch(items: list[tuple[Upload, int]]) -> list[dict | ApiError]:
        """Requests batched together may ask for different top_k: run the largest, cut each."""
        results = digit_results([upload for upload, _ in items], max(top_k for _, top_k in items))
        return [r if isinstance(r, ApiError) else {**r, "top_k": r["top_k"][:top_k]}
                for r, (_, top_k) in zip(results, items)]

    def observe_batch(model: str):
        return lambda n: metrics.batch_size.labels(model).observe(n)

    digit_batcher = MicroBatcher(digit_batch, settings.max_merge, observe_batch(models.digits_name))
    number_batcher = MicroBatcher(number_results, settings.max_merge, observe_batch(models.reader_name))

    def timed(model: str, n_images: int, start: float) -> float:
        """The request's milliseconds; counted as model time when `n_images` (those that decoded) ran."""
        seconds = time.perf_counter() - start
        if n_images:
            metrics.images.labels(model).inc(n_images)
            metrics.inference.labels(model).observe(seconds)
        return round(seconds * 1000, 2)

    def one_result(result: dict | ApiError, model: str, start: float) -> dict:
        if isinstance(result, ApiError):
            raise result
        return {**result, "model": model, "ms": timed(model, 1, start)}

    def batch_result(uploads: list[Upload], results: list[dict | ApiError], model: str, start: float) -> dict:
        return {"results": [{"file": u.name, **(r.body() if isinstance(r, ApiError) else r)}
                            for u, r in zip(uploads, results)],
                "model": model, "ms": timed(model, sum(not isinstance(r, ApiError) for r in results), start)}

    def require_reader() -> None:
        if models.reader is None:
            raise ApiError(503, "reader_unavailable",
                           f"the house-number reader is unavailable: {models.reader_unavailable}")

    @app.post("/v1/digits", response_model=DigitOut, responses=ERROR_RESPONSES,
              openapi_extra=image_body("file", many=False), summary="Recognise the digit in one crop")
    async def digits(request: Request, top_k: TopK = 3) -> dict:
        start = time.perf_counter()
        (upload,) = await read_uploads(request, "file", 1, batch_route="/v1/digits/batch")
        return one_result(await digit_batcher.submit((upload, top_k)), models.digits_name, start)

    @app.post("/v1/digits/batch", response_model=BatchOut, responses=ERROR_RESPONSES,
              openapi_extra=image_body("files", many=True), summary="Recognise the digit in each of several crops")
    async def digits_batch(request: Request, top_k: TopK = 3) -> dict:
        start = time.perf_counter()
        uploads = await read_uploads(request, "files", settings.max_batch)
        results = await run_in_threadpool(digit_results, uploads, top_k)
        return batch_result(uploads, results, models.digits_name, start)

    @app.post("/v1/numbers", response_model=NumberOut, responses=READER_RESPONSES,
              openapi_extra=image_body("file", many=False), summary="Read the house number in a photo")
    async def numbers(request: Request, min_confidence: MinConfidence = 0.0) -> dict:
        start = time.perf_counter()
        require_reader()
        (upload,) = await read_uploads(request, "file", 1, batch_route="/v1/numbers/batch")
        (result,) = withheld([await number_batcher.submit(upload)], min_confidence)
        return one_result(result, models.reader_name, start)

    @app.post("/v1/numbers/batch", response_model=BatchOut, responses=READER_RESPONSES,
              openapi_extra=image_body("files", many=True), summary="Read the house number in each of several photos")
    async def numbers_batch(request: Request, min_confidence: MinConfidence = 0.0) -> dict:
        start = time.perf_counter()
        require_reader()
        uploads = await read_uploads(request, "files", settings.max_batch)
        results = await run_in_threadpool(number_results, uploads)
        return batch_result(uploads, withheld(results, min_confidence), models.reader_name, start)

    @get_and_head("/healthz", summary="Liveness and which models are loaded")
    async def healthz() -> dict:
        return {"status": "ok", "digits": models.digits_name,
                "numbers": models.reader_name if models.reader is not None else None}

    @get_and_head("/v1/models", summary="Loaded models, their cards and figures, and the limits")
    async def list_models() -> dict:
        numbers = ({"available": True, **models.reader_card} if models.reader is not None
                   else {"available": False, "reason": models.reader_unavailable})
        return {"digits": models.digits_card, "numbers": numbers,
                "limits": {"max_bytes": settings.max_bytes, "max_pixels": settings.max_pixels,
                           "max_batch": settings.max_batch}}

    @get_and_head("/metrics", response_class=PlainTextResponse,   # documented as text, not as JSON
                  summary="Prometheus text: requests, latency, errors, model time")
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @get_and_head("/v1/examples", summary="Example photos for the page")
    async def list_examples() -> dict:
        # percent-encoded: a name with '#', '?', spaces or non-ASCII is still one path segment
        return {"examples": [{"name": name, "url": f"/examples/{quote(name, safe='')}"} for name in examples]}

    @get_and_head("/examples/{name}", include_in_schema=False)
    async def example(name: str) -> FileResponse:
        if name not in examples:
            raise ApiError(404, "not_found", f"no example '{name}'")
        if not examples[name].is_file():   # listed at start-up, removed since: FileResponse would fail (500)
            raise ApiError(404, "not_found", f"example '{name}' is no longer there")
        return FileResponse(examples[name])

    @get_and_head("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @get_and_head("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(STATIC_DIR / "docs.html")

    return app


def image_error(e: ImageError, name: str = "upload") -> ApiError:
    """Over a byte or pixel limit is 413; any other unreadable image is 400."""
    status, code = (413, "too_large") if isinstance(e, ImageTooLargeError) else (400, "not_an_image")
    return ApiError(status, code, str(e).replace("image bytes:", f"{name}:", 1))


def _example_photos(folder: str | None, limit: int = 8) -> dict[str, Path]:
    """A few photos from `folder` (sorted by name), served read-only under /examples/NAME."""
    if not folder or not Path(folder).is_dir():
        return {}
    return {p.name: p for p in images_in(Path(folder))[:limit]}


# ---------------------------------------------------------------- errors as JSON, always

STATUS_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
                415: "unsupported_media_type", 422: "invalid_parameter"}


def _error_response(request: Request, error: ApiError, headers: dict | None = None) -> JSONResponse:
    request.state.error_code = error.code
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return _error_response(request, e)

    @app.exception_handler(ImageError)
    async def bad_image(request: Request, e: ImageError) -> JSONResponse:
        return _error_response(request, image_error(e))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        code = STATUS_CODES.get(e.status_code, "error")
        headers = getattr(e, "headers", None) or {}   # Starlette's 405 names the allowed methods in Allow: keep it
        message = str(e.detail)
        if e.status_code == 404 and message == "Not Found":
            message = f"no such path: {request.url.path} (the API is listed at /docs)"
        elif e.status_code == 405 and "allow" in {k.lower() for k in headers}:
            allowed = next(v for k, v in headers.items() if k.lower() == "allow")
            message = f"{request.method} is not allowed on {request.url.path}; use {allowed}"
        return _error_response(request, ApiError(e.status_code, code, message), headers or None)

    @app.exception_handler(ClientDisconnect)
    async def client_left(request: Request, e: ClientDisconnect) -> JSONResponse:
        # the client hung up mid-upload: nobody reads this answer, and it is no server error (nginx's 499)
        log.info("client went away during %s %s", request.method, request.url.path)
        return _error_response(request, ApiError(499, "client_disconnected", "the client closed the connection"))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'][1:]) or err['loc'][0]}: {err['msg']}"
                             f" (got {err.get('input')!r})" for err in e.errors())
        return _error_response(request, ApiError(422, "invalid_parameter", problems))

    @app.exception_handler(Exception)
    async def crashed(request: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error_response(request, ApiError(500, "internal_error", "internal error; see the server log"))


# ---------------------------------------------------------------- running it

def app_from_env() -> FastAPI:
    """The factory uvicorn calls in each worker process."""
    return create_app(Settings.from_env())


def check_can_listen(host: str, port: int) -> None:
    """Bind the address once, as uvicorn will, so a port in use is one line here rather than uvicorn's
    error after the service said it was serving."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise HousenumError(f"--host {host}: not an address here ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            why = "in use by another program; pick another with --port" if e.errno == errno.EADDRINUSE else e.strerror
            raise HousenumError(f"cannot listen on {host}:{port}: {why}") from None


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          log_level: str = "info") -> None:
    """Run the service until interrupted; worker processes get the settings through the environment."""
    import uvicorn

    os.environ.update(settings.to_env())
    uvicorn.run("housenum.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level)
