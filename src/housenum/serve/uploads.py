"""Getting image bytes out of a request safely: size limits before reading, content types, form fields.

Every refusal is an `ApiError` (status, code, message), which the app turns into
`{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Part and body types accepted as an image; the bytes themselves decide whether it really is one.
RAW_IMAGE_TYPES = ("application/octet-stream",)
MULTIPART = "multipart/form-data"
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers on top of the image bytes
TEXT_PART_LIMIT = 1024 * 1024  # a form part without filename= is text, held in memory: Starlette's default cap


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


@dataclass
class Upload:
    name: str
    data: bytes
    error: ApiError | None = None   # refused before decoding (its part's type): a batch answers it in its place


class BodyLimitMiddleware:
    """Refuses request bodies over the limit with 413: from Content-Length before reading anything,
    or as soon as a streamed (chunked) body passes the limit."""

    def __init__(self, app: ASGIApp, limit_for_path) -> None:
        self.app = app
        self.limit_for_path = limit_for_path   # path -> (bytes, what they are made of, for the message)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit, why = self.limit_for_path(scope["path"])
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            error = (ApiError(413, "too_large", f"request body is {size_text(int(declared))}; the limit is "
                                                f"{size_text(limit)}: {why}")
                     if declared.isdigit() else ApiError(400, "bad_request", "invalid Content-Length header"))
            await send_error(scope, send, error)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise ApiError(413, "too_large", f"request body is over the limit of {size_text(limit)}: {why}")
            return message

        await self.app(scope, limited_receive, send)


def megabytes(n: int) -> str:
    """Bytes for people, in the binary megabytes `--max-mb` counts: '13.9 MiB' (KiB under 0.1 MiB)."""
    return f"{n / 1024 / 1024:.1f} MiB" if n >= 0.1 * 1024 * 1024 else f"{n / 1024:.1f} KiB"


def size_text(n: int) -> str:
    """'13.9 MiB (14,575,000 bytes)': exact too, so a size just over a limit never reads as equal to it."""
    return f"{megabytes(n)} ({n:,} bytes)"


async def send_error(scope: Scope, send: Send, error: ApiError) -> None:
    """Answer an ASGI request with the JSON error body, without going through the app."""
    scope.setdefault("state", {})["error_code"] = error.code
    body = json.dumps(error.body()).encode()
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def _check_image_type(media: str, what: str) -> None:
    if media and not media.startswith("image/") and media not in RAW_IMAGE_TYPES:
        raise ApiError(415, "unsupported_media_type",
                       f"{what} has content type '{media}'; send an image (image/png, image/jpeg, ...)")


async def read_uploads(request: Request, field: str, max_files: int, batch_route: str | None = None) -> list[Upload]:
    """The images in a request: the `field` parts of a multipart form, or the whole body when the
    request's own content type is an image. At most `max_files`, at least one; `batch_route` names
    where several go instead, for an endpoint that takes one (`max_files` 1).

    A part that is not an image by its type comes back with its `error` set rather than failing the
    request: in a batch, the other files are still read."""
    header = request.headers.get("content-type")
    media = _media_type(header)
    if media.startswith("image/") or media in RAW_IMAGE_TYPES:
        return [Upload("request body", await request.body())]
    if media != MULTIPART:
        shown = media or (header or "").strip() or "none"   # a header with no media type in it (';;;'): as sent
        raise ApiError(415, "unsupported_media_type",
                       f"content type '{shown}' is not accepted; send multipart/form-data with the "
                       f"image in the field '{field}', or the image itself as the body (image/png, image/jpeg)")
    try:
        form = await request.form(max_files=max_files, max_fields=max_files + 16, max_part_size=TEXT_PART_LIMIT)
    except HTTPException as e:
        if "Part exceeded maximum size" in str(e.detail):   # only text parts have this cap; files are spooled
            raise ApiError(413, "too_large", f"a text part of the form is over {megabytes(TEXT_PART_LIMIT)}; send "
                                             f"the image in form field '{field}' as a file part (with a filename)") \
                from None
        if "Too many files" in str(e.detail) and batch_route:
            raise ApiError(422, "one_file_only", f"this endpoint takes one image; send several to {batch_route}") \
                from None
        if "Too many files" in str(e.detail):
            raise ApiError(413, "too_many_files", f"at most {max_files} files per request") from None
        raise ApiError(400, "bad_multipart", f"the multipart body cannot be parsed ({e.detail})") from None
    if not form:  # python-multipart drops a part whose closing boundary never came
        raise ApiError(400, "bad_multipart", "the multipart body holds no complete part: it is empty, cut short, "
                                             "or its closing boundary is missing")
    parts = form.getlist(field)
    if not parts:
        present = ", ".join(sorted(set(form.keys()))) or "none"
        raise ApiError(422, "missing_file", f"no form field '{field}' (fields sent: {present})")
    uploads = []
    for part in parts:
        if not isinstance(part, UploadFile):   # in a batch, its own entry: the files beside it are read
            # Starlette makes a file only of a part with filename=; filename*= alone (RFC 7578 forbids it) is text
            uploads.append(Upload(field, b"", ApiError(422, "not_a_file", (
                f"form field '{field}' must be a file upload, not text: its Content-Disposition has no filename= "
                "(a part named only by filename*= is read as text)"))))
            continue
        try:
            _check_image_type(_media_type(part.content_type), f"file '{part.filename}'")
            uploads.append(Upload(part.filename or field, await part.read()))
        except ApiError as e:
            uploads.append(Upload(part.filename or field, b"", e))
    await form.close()
    return uploads
