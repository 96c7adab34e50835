"""``/api/v1/storage/{key}``: the local backend's signed URLs (S3-compatible behaviour).

Only mounted usefully when the local backend is in use (the embedded default); with S3 every
request here is a 404. The URLs come from :class:`app.storage.local.LocalStorage`
(``presign_put`` / ``presign_get``) and carry ``expires`` and ``sig``; no bearer token is needed.

* ``PUT``: the signature binds method, key, expiry, ``Content-Type``, the exact
  ``Content-Length`` and ``If-None-Match: *``. Another type or length is a **403**
  ``signature_mismatch`` (as S3 answers ``SignatureDoesNotMatch``); a second upload to the same
  URL is **412** ``object_exists`` (S3: ``PreconditionFailed``); a missing length (chunked
  upload) is **411**; a body longer or shorter than its own ``Content-Length`` is **400** and
  nothing is stored. The body is streamed to a temp file beside the object (never held in
  memory) and moved into place at the end without ever replacing an existing object.
* ``GET``: the signature binds method, key, expiry and the optional download ``filename``
  (``Content-Disposition: attachment``). A missing object is **404** (checked after the
  signature, so unsigned callers learn nothing).
* Expired URLs are **403** ``url_expired``; a key with ``..``, a backslash, NUL or an absolute
  path is **400** ``invalid_storage_key``; other methods are **405**.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse

from app.dependencies import SettingsDep, StorageDep
from app.errors import AppError, BadRequest, NotFound, PayloadTooLarge
from app.schemas.common import ErrorResponse
from app.storage import LocalStorage, ObjectExists, Storage
from app.storage.base import content_disposition
from app.storage.keys import guess_content_type

router = APIRouter(tags=["storage"])

_BUFFER = 1024 * 1024  # bytes gathered from the request before one write in a thread
_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (400, 403, 404, 405, 411, 412, 413)
}


class LengthRequired(AppError):
    status_code, code, message = 411, "length_required", "Content-Length is required"


def _local(storage: Storage) -> LocalStorage:
    if not isinstance(storage, LocalStorage):
        raise NotFound("Local storage is not in use on this server", code="not_found")
    return storage


SigQuery = Annotated[str | None, Query(description="expiry (Unix seconds) signed into the URL")]
SigParam = Annotated[str | None, Query(description="HMAC-SHA256 signature of the request")]


@router.put(
    "/storage/{key:path}",
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def put_object(
    key: str,
    request: Request,
    storage: StorageDep,
    settings: SettingsDep,
    expires: SigQuery = None,
    sig: SigParam = None,
) -> Response:
    """Upload to a URL from ``POST /images/upload`` with exactly the ``headers`` it returned."""
    local = _local(storage)
    raw_length = request.headers.get("content-length")
    if raw_length is None or "transfer-encoding" in request.headers:
        raise LengthRequired("Content-Length is required (chunked uploads are not accepted)")
    if not raw_length.isdigit():
        raise BadRequest("Content-Length must be a non-negative integer", code="bad_content_length")
    length = int(raw_length)
    content_type = request.headers.get("content-type", "")
    if_none_match = request.headers.get("if-none-match", "")
    local.verify(
        "PUT",
        key,
        expires,
        sig,
        content_type=content_type,
        length=length,
        if_none_match=if_none_match,
    )
    if length > settings.max_upload_bytes:  # never signed, but cheap to re-check
        raise PayloadTooLarge(f"At most {settings.max_upload_bytes} bytes")
    write_once = if_none_match.strip() == "*"
    if write_once and await to_thread.run_sync(local.exists, key):
        raise ObjectExists()

    writer = await to_thread.run_sync(local.writer, key)
    try:
        buffer = bytearray()
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > length:
                raise BadRequest(
                    f"The body is longer than its Content-Length ({length} bytes)",
                    code="body_length_mismatch",
                )
            buffer += chunk
            if len(buffer) >= _BUFFER:
                await to_thread.run_sync(writer.write, bytes(buffer))
                buffer.clear()
        if received != length:
            raise BadRequest(
                f"The body ended after {received} of {length} bytes",
                code="body_length_mismatch",
            )
        if buffer:
            await to_thread.run_sync(writer.write, bytes(buffer))
        await to_thread.run_sync(functools.partial(writer.commit, overwrite=not write_once))
    except BaseException:
        writer.abort()  # quick and synchronous: also runs when the request is cancelled
        raise
    return Response(status_code=200, headers={"ETag": writer.etag})


@router.get(
    "/storage/{key:path}",
    responses={**_ERRORS, 200: {"content": {"application/octet-stream": {}}}},
    response_class=StreamingResponse,
)
async def get_object(
    key: str,
    storage: StorageDep,
    expires: SigQuery = None,
    sig: SigParam = None,
    filename: Annotated[str | None, Query(description="download name (signed)")] = None,
) -> StreamingResponse:
    """Download through a URL from ``presign_get`` (image, thumbnail, result, .cube...)."""
    local = _local(storage)
    local.verify("GET", key, expires, sig, filename=filename or "")
    f = await to_thread.run_sync(local.open_stream, key)
    size = os.fstat(f.fileno()).st_size

    async def body() -> AsyncIterator[bytes]:
        try:
            while chunk := await to_thread.run_sync(f.read, _BUFFER):
                yield chunk
        finally:
            f.close()

    headers = {"Content-Length": str(size), "Cache-Control": "private, max-age=60"}
    if filename:
        headers["Content-Disposition"] = content_disposition(filename)
    return StreamingResponse(body(), media_type=guess_content_type(key), headers=headers)
